"""Content-addressed artifacts: encode once per (image, preprocessing, codec config).

Layout: ``<root>/<encode_key>/`` holds ``stream.bin`` (the file a user would store), ``segments.json``
and ``clean-<decode_seed>.npy`` (the clean decode). Entries are written to a temporary folder and renamed
into place, so a killed run never leaves a half-written artifact; a damaged one is detected by hash and
rebuilt.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.codecs.base import Bitstream, Codec
from harness.hashing import sha256_bytes


@dataclass(frozen=True)
class Encoded:
    bitstream: Bitstream
    stream_sha256: str
    encode_s: float  # seconds spent encoding when it was made (0.0 is never stored: it is measured)
    #: options resolved for this image at encode time (a rate-matched config's per-image ``target_bpp``)
    resolved: dict = field(default_factory=dict)


class ArtifactCache:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, key: str) -> Path:
        return self.root / key

    def load_encoded(self, key: str) -> Encoded | None:
        d = self._dir(key)
        try:
            meta = json.loads((d / "meta.json").read_text())
            data = (d / "stream.bin").read_bytes()
        except (OSError, ValueError):
            return None
        if sha256_bytes(data) != meta.get("stream_sha256"):
            shutil.rmtree(d, ignore_errors=True)
            return None
        return Encoded(
            Bitstream.from_json(data, meta["segments"]),
            meta["stream_sha256"],
            float(meta["encode_s"]),
            dict(meta.get("resolved", {})),
        )

    def store_encoded(
        self, key: str, bitstream: Bitstream, encode_s: float, codec: Codec, resolved: dict | None = None
    ) -> Encoded:
        meta = {
            "stream_sha256": sha256_bytes(bitstream.data),
            "segments": bitstream.segments_json(),
            "encode_s": encode_s,
            "codec": codec.name,
            "codec_config": codec.config(),
            "codec_fingerprint": codec.fingerprint(),
            "resolved": resolved or {},
        }
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        final = self._dir(key)
        try:
            (tmp / "stream.bin").write_bytes(bitstream.data)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(exc, final) from None
        try:
            os.rename(tmp, final)
        except OSError:  # another process made it first: theirs is identical by construction
            shutil.rmtree(tmp, ignore_errors=True)
        return Encoded(bitstream, meta["stream_sha256"], encode_s, dict(resolved or {}))

    def has_clean(self, key: str, decode_seed: int) -> bool:
        return (self._dir(key) / f"clean-{decode_seed}.npy").is_file()

    def load_clean(self, key: str, decode_seed: int) -> np.ndarray | None:
        path = self._dir(key) / f"clean-{decode_seed}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def store_clean(self, key: str, decode_seed: int, image: np.ndarray) -> None:
        final = self._dir(key) / f"clean-{decode_seed}.npy"
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=self._dir(key))
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, image, allow_pickle=False)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise write_error(exc, final) from None
        os.replace(tmp, final)


def write_error(exc: OSError, path: Path) -> OSError:
    """The OSError a failed cache write raises: its own errno and the final path, so the CLI can say it in one
    line. ``numpy.save`` reports a short write ("N requested and M written": the disk filled up) without an
    errno; it is reported as ENOSPC."""
    code = exc.errno if exc.errno is not None else errno.ENOSPC
    return OSError(code, os.strerror(code) if exc.errno is None else (exc.strerror or str(exc)), str(path))
