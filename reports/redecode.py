"""Re-decode a few stored cells for the visual grid, exactly as the run decoded them.

The store keeps no decoded images. A cell's corrupted bytes are reproducible from what the run left:
``cache/<encode key>/stream.bin`` plus the corruption and its recorded parameters, drawn with the cell's
RNG (a ``SeedSequence`` of the cell key, :meth:`harness.cells.Cell.rng`). Every re-decode is checked
against the run's records: the corrupted stream's sha256 and the decoded pixels' sha256 must match the
store, otherwise the tile is not shown. Parsing runs in an isolated worker, as in the run.

Cells with a FEC layer are not re-decoded here (their bytes pass through the FEC encoder/decoder).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import ArtifactCache
from harness.cells import encode_key
from harness.codecs.base import check_output, create_codec
from harness.hashing import pixels_sha256, sha256_bytes
from harness.registry import CORRUPTIONS
from harness.status import Status
from harness.workers import IsolatedWorker


@dataclass
class Redecoded:
    image: np.ndarray | None  # cropped uint8 output; None when the decode failed or could not be reproduced
    note: str  # status, or why it was not reproduced


def _fec_of(row: dict[str, Any]) -> Any:
    fec = row.get("fec")
    return json.loads(fec) if isinstance(fec, str) else fec


def _encode_key(row: dict[str, Any]) -> str:
    return encode_key(row["image_sha256"], row["height"], row["width"], row["preprocessing"], row["codec_fingerprint"])


class Redecoder:
    def __init__(self, run_dir: Path, store: Any, timeout_s: float = 30.0) -> None:
        self.cache = ArtifactCache(run_dir / "cache")
        self.store = store
        self.timeout_s = timeout_s
        self.worker = IsolatedWorker()
        self._codecs: dict[str, Any] = {}

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> Redecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def codec(self, row: dict[str, Any]) -> Any:
        fp = row["codec_fingerprint"]
        if fp not in self._codecs:
            codec = create_codec(row["codec"], **json.loads(row["codec_config"]))
            self._codecs[fp] = codec if codec.fingerprint() == fp else None
        return self._codecs[fp]

    def clean(self, row: dict[str, Any]) -> np.ndarray | None:
        return self.cache.load_clean(_encode_key(row), int(row["decode_seed"]))

    def decode(self, row: dict[str, Any]) -> Redecoded:
        if _fec_of(row):
            return Redecoded(None, "FEC cell: not re-decoded")
        codec = self.codec(row)
        if codec is None:
            return Redecoded(None, "codec code or libraries changed since the run")
        encoded = self.cache.load_encoded(_encode_key(row))
        if encoded is None:
            return Redecoded(None, "encoded stream not in the run's cache")
        corruption = CORRUPTIONS.get(row["corruption"])(**json.loads(row["params"]))
        rng_key = json.loads(row["channel"] or "{}").get("rng_key", row["key"])  # paired cells: their partner's
        rng = np.random.default_rng(np.random.SeedSequence(int(rng_key, 16)))  # == Cell.rng()
        data = encoded.bitstream.data
        hook = None
        if corruption.acts_on == "bitstream":
            data = corruption.apply(data, encoded.bitstream.ranges(row["scope"]), rng).data
        else:
            hook = corruption.hook_for(row["scope"], rng)
        if sha256_bytes(data) != row["stream_sha256"]:
            return Redecoded(None, "corrupted stream not reproduced (hash differs)")
        outcome = self.worker.parse(codec.spec(), data, self.timeout_s)
        if outcome.status is not Status.OK:
            return Redecoded(None, f"{outcome.status.value}: {outcome.error_type or ''}")
        try:
            image = codec.reconstruct(outcome.state or {}, int(row["decode_seed"]), hook)
        except Exception as exc:
            return Redecoded(None, f"exception: {type(exc).__name__}")
        problem = check_output(image, codec.decoded_shape(row["height"], row["width"]))
        if problem:
            return Redecoded(None, f"invalid_output: {problem}")
        image = np.ascontiguousarray(image[: row["height"], : row["width"]])
        recorded = self.store.decode(row["decode_key"])
        if recorded is not None and recorded.output_sha256 and recorded.output_sha256 != pixels_sha256(image):
            return Redecoded(None, "decoded pixels differ from the run's (not reproducible)")
        return Redecoded(image, "ok")


def load_original(row: dict[str, Any]) -> np.ndarray | None:
    """The original pixels of a cell's image, when its dataset loads without options and has no
    preprocessing; verified by pixel hash."""
    if row.get("preprocessing", "none") != "none":
        return None
    try:
        from harness.datasets import create_dataset

        ds = create_dataset(row["dataset"])
        for entry in ds.index() if hasattr(ds, "index") else ds.entries():
            if getattr(entry, "sha256", None) == row["image_sha256"] or entry.id == row["image_id"]:
                image = ds.load(entry if getattr(entry, "sha256", None) else ds.resolve(entry))
                return image if pixels_sha256(image) == row["image_sha256"] else None
    except Exception:
        return None
    return None
