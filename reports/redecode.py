"""Re-decode a few stored cells for the visual grid, exactly as the run decoded them.

The store keeps no decoded images. A cell's corrupted bytes are reproducible from what the run left:
``cache/<encode key>/stream.bin`` plus the corruption and its recorded parameters, drawn with the cell's
RNG (a ``SeedSequence`` of the cell key, :meth:`harness.cells.Cell.rng`). Every re-decode is checked
against the run's records: the corrupted stream's sha256 and the decoded pixels' sha256 must match the
store, otherwise the tile is not shown. Parsing runs in an isolated worker, as in the run.

Cells with a FEC layer are not re-decoded here (their bytes pass through the FEC encoder/decoder), nor cells whose
side view was degraded (the degradation's context is the run's plan); a codec with decoder-side information is
given the true side views again from the dataset, checked against the hashes the cell recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.cache import ArtifactCache
from harness.cells import encode_key
from harness.codecs.base import InvalidOutput, create_codec
from harness.hashing import key_of, pixels_sha256, sha256_bytes
from harness.registry import CORRUPTIONS
from harness.status import Status
from harness.workers import IsolatedWorker, Limits


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
        self.dataset_options = dataset_options(store)

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> Redecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def codec(self, row: dict[str, Any]) -> Any:
        """The codec the run used, rebuilt from the registry name and options the suite gave (a preset stays a
        preset, weight paths included); None when that no longer gives the stored fingerprint."""
        fp = row["codec_fingerprint"]
        if fp not in self._codecs:
            self._codecs[fp] = rebuild_codec(row)
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
        side = json.loads(row["side"]) if isinstance(row.get("side"), str) else None
        side_info = None
        if side is not None:
            if corruption.acts_on == "side_info" or side.get("degradation") is not None:
                return Redecoded(None, "side-information level: not re-decoded")
            side_info = load_side_views(row, side, self.dataset_options.get(row["dataset"]))
            if side_info is None:
                return Redecoded(None, "side view not loadable")
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
        size = (int(row["height"]), int(row["width"]))
        pixels = int(np.prod(codec.decoded_shape(*size)[:2]))
        outcome = self.worker.parse(codec.spec(), data, size, Limits.for_image(self.timeout_s, pixels))
        if outcome.status is not Status.OK:
            return Redecoded(None, f"{outcome.status.value}: {outcome.error_type or ''}")
        try:
            image = codec.decode_state(
                outcome.state or {}, int(row["decode_seed"]), hook, size=size, side_info=side_info
            )
        except InvalidOutput as exc:
            return Redecoded(None, f"invalid_output: {exc}")
        except Exception as exc:
            return Redecoded(None, f"exception: {type(exc).__name__}")
        image = np.ascontiguousarray(image[: size[0], : size[1]])
        recorded = self.store.decode(row["decode_key"])
        if recorded is not None and recorded.output_sha256 and recorded.output_sha256 != pixels_sha256(image):
            return Redecoded(None, "decoded pixels differ from the run's (not reproducible)")
        return Redecoded(image, "ok")


def rebuild_codec(row: dict[str, Any]) -> Any:
    """The codec of a stored cell, from ``codec_name`` + ``codec_options`` (what the suite said); for a rate-matched
    config the stored fingerprint also covers its reference (``rate_of``). None if it no longer matches."""
    options = row.get("codec_options")
    options = json.loads(options) if isinstance(options, str) else (options or {})
    try:
        codec = create_codec(row.get("codec_name") or row["codec"], **options)
    except Exception:
        return None
    fp = codec.fingerprint()
    if row.get("rate_of"):
        fp = key_of({"codec": fp, "rate_of": row["rate_of"]})
    return codec if fp == row["codec_fingerprint"] else None


def dataset_options(store: Any) -> dict[str, dict[str, Any]]:
    """Loader options per dataset name, from the suite text the run recorded ({} when it cannot be read)."""
    try:
        from harness.config import parse_suite

        prov = store.provenance()
        suite = parse_suite(prov["suite_text"], prov.get("suite_path") or "suite.toml")
        return {d.name: d.loader_options() for d in suite.datasets}
    except Exception:
        return {}


def _entry(row: dict[str, Any], options: dict[str, Any] | None) -> tuple[Any, Any] | None:
    """(dataset, entry) of a cell's image, its dataset opened with the run's loader ``options``; None when the
    image was preprocessed (its pixels are not the file's)."""
    if row.get("preprocessing", "none") != "none":
        return None
    from harness.datasets import create_dataset

    ds = create_dataset(row["dataset"], **(options or {}))
    for entry in ds.index() if hasattr(ds, "index") else ds.entries():
        if getattr(entry, "sha256", None) == row["image_sha256"] or entry.id == row["image_id"]:
            return ds, entry if getattr(entry, "sha256", None) else ds.resolve(entry)
    return None


def load_original(row: dict[str, Any], options: dict[str, Any] | None = None) -> np.ndarray | None:
    """The original pixels of a cell's image (its dataset opened with the run's loader ``options``), when it has
    no preprocessing; verified by pixel hash."""
    try:
        found = _entry(row, options)
        if found is None:
            return None
        image = found[0].load(found[1])
        return image if pixels_sha256(image) == row["image_sha256"] else None
    except Exception:
        return None


def load_side_views(
    row: dict[str, Any], side: dict[str, Any], options: dict[str, Any] | None = None
) -> dict[str, np.ndarray | None] | None:
    """The true side views of a cell (by kind; a kind the run recorded as missing stays None), verified against
    the pixel hashes in the cell's ``side`` record; None when they cannot be loaded as the run had them."""
    try:
        found = _entry(row, options)
        if found is None:
            return None
        views: dict[str, np.ndarray | None] = {k: None for k in side.get("missing", [])}
        for kind, sha in side.get("sha256", {}).items():
            view = found[0].load_side(found[1], kind)
            if pixels_sha256(view) != sha:
                return None
            views[kind] = view
        return views
    except Exception:
        return None
