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

    def codec(self, row: dict[str, Any]) -> tuple[Any, bool]:
        """The codec the run used, rebuilt from the registry name and options the suite gave (a preset stays a
        preset, weight paths included), and whether it still has the stored fingerprint. None when it cannot be
        built at all. A fingerprint that differs does not hide a tile by itself: :meth:`decode` shows the decode
        when its pixels hash to what the run recorded (the fingerprint also covers library versions, thread
        counts and code versions that need not change a given decode)."""
        fp = row["codec_fingerprint"]
        if fp not in self._codecs:
            codec = build_codec(row)
            self._codecs[fp] = (codec, codec is not None and _fingerprint_of(codec, row) == fp)
        return self._codecs[fp]

    def clean(self, row: dict[str, Any]) -> np.ndarray | None:
        return self.cache.load_clean(_encode_key(row), int(row["decode_seed"]))

    def decode(self, row: dict[str, Any]) -> Redecoded:
        if _fec_of(row):
            return Redecoded(None, "FEC cell: not re-decoded")
        codec, exact = self.codec(row)
        if codec is None:
            return Redecoded(None, f"codec {row.get('codec_name') or row['codec']!r} cannot be built now")
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
        expected = recorded.output_sha256 if recorded is not None else None
        if expected and expected != pixels_sha256(image):
            changed = "" if exact else " (the codec's fingerprint changed since the run)"
            return Redecoded(None, f"decoded pixels differ from the run's{changed}: not shown")
        if not expected and not exact:
            return Redecoded(None, "codec fingerprint changed since the run and no output hash to check: not shown")
        return Redecoded(image, "ok")


def build_codec(row: dict[str, Any]) -> Any:
    """The codec of a stored cell, from ``codec_name`` + ``codec_options`` (what the suite said, runtime options
    included); None when that no longer builds."""
    options = row.get("codec_options")
    options = json.loads(options) if isinstance(options, str) else (options or {})
    try:
        return create_codec(row.get("codec_name") or row["codec"], **options)
    except Exception:
        return None


def _fingerprint_of(codec: Any, row: dict[str, Any]) -> str:
    """The fingerprint cells of ``codec`` are keyed by: for a rate-matched config it also covers its reference."""
    fp = codec.fingerprint()
    return key_of({"codec": fp, "rate_of": row["rate_of"]}) if row.get("rate_of") else fp


def rebuild_codec(row: dict[str, Any]) -> Any:
    """The codec of a stored cell (:func:`build_codec`) when it still has the stored fingerprint, else None."""
    codec = build_codec(row)
    return codec if codec is not None and _fingerprint_of(codec, row) == row["codec_fingerprint"] else None


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
    """(dataset, entry) of a cell's image, its dataset opened with the run's loader ``options`` and seen through
    the cell's preprocessing policy (``center_crop``, ``resize``...: the pixels the codec was given, so ``load``
    checks them against the prepared image's hash); None for a mosaic (its tiles are other images)."""
    from harness.datasets import create_dataset
    from harness.datasets.selection import Prepared, _prepared_entry
    from harness.preprocess import parse_policy

    ds = create_dataset(row["dataset"], **(options or {}))
    prep = str(row.get("preprocessing") or "none")
    policy = parse_policy(prep) if prep != "none" else None
    if policy is not None and policy.mosaic_k is not None:
        return None
    for entry in ds.index() if hasattr(ds, "index") else ds.entries():
        same_pixels = policy is None and getattr(entry, "sha256", None) == row["image_sha256"]
        if not same_pixels and entry.id != row["image_id"]:
            continue
        entry = entry if getattr(entry, "sha256", None) else ds.resolve(entry)
        if policy is None:
            return ds, entry
        prepared = Prepared(ds, policy)
        prepared.sources[entry.id] = [entry]
        return prepared, _prepared_entry(entry, policy.apply(ds.load(entry)), policy.canonical)
    return None


def load_original(row: dict[str, Any], options: dict[str, Any] | None = None) -> np.ndarray | None:
    """The original pixels of a cell's image as the codec was given them (its dataset opened with the run's loader
    ``options``, through the cell's preprocessing); verified by pixel hash. None for a mosaic or a changed file."""
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
