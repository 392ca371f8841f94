"""From a suite's ``[[datasets]]`` entry to the exact images a run uses, and the record that says so.

::

    create_dataset(name, path/split/hub_id/...)   one-line error if the path does not exist
      └─ index()                                   cheap: ids, labels, splits
         └─ stratified_subset(limit, seed)         by label, seeded (Galaxy10's HDF5 is sorted by class)
            └─ per image: decode ─ policy ─ size checks     a bad image is recorded in `skipped`, the run goes on
               └─ [mosaic: k*k prepared tiles -> one image, tile map kept]
                  └─ prepared entries: sha256 of the PREPARED pixels (the cell key), original sha256 and size beside

Pinned datasets (the bundled samples: every hash in their card) are the exception: a bad file there means a
broken installation and stops the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.datasets.base import (
    Dataset,
    DatasetError,
    ImageEntry,
    class_counts,
    create_dataset,
    stratified_subset,
    with_decoded,
)
from harness.datasets.partition import Partition
from harness.hashing import pixels_sha256
from harness.preprocess import Policy, PolicyError, parse_policy


def default_policy(ds: Dataset) -> str:
    card = getattr(ds, "card", None) or {}
    return str(card.get("default_preprocessing", "none"))


class Prepared(Dataset):
    """A dataset seen through a preprocessing policy: ``load`` rebuilds the prepared pixels from the sources
    and checks them against the prepared entry's sha256."""

    def __init__(self, base: Dataset, policy: Policy) -> None:
        self.base = base
        self.policy = policy
        self.name = base.name
        self.version = base.version
        self.sources: dict[str, list[ImageEntry]] = {}

    def index(self) -> list[ImageEntry]:
        raise DatasetError("a prepared dataset has no index of its own; use its base")

    def read(self, entry: ImageEntry) -> np.ndarray:
        tiles = [self.policy.apply(self.base.load(src)) for src in self.sources[entry.id]]
        if self.policy.mosaic_k is None:
            return tiles[0]
        return self.policy.mosaic(tiles, [s.id for s in self.sources[entry.id]])[0]

    def _source(self, entry: ImageEntry, kind: str) -> ImageEntry:
        if self.policy.mosaic_k is not None:
            raise DatasetError(f"{self.name}: a mosaic has no decoder-side image {kind!r}; use another preprocessing")
        return self.sources[entry.id][0]

    def load_side(self, entry: ImageEntry, kind: str) -> np.ndarray:
        """The side image of ``kind``, through the same policy as the primary (so both keep one size)."""
        return self.policy.apply(self.base.load_side(self._source(entry, kind), kind))

    def has_neighbour(self, entry: ImageEntry, kind: str, offset: int) -> bool:
        has = getattr(self.base, "has_neighbour", None)
        return bool(has and has(self._source(entry, kind), kind, offset))

    def load_neighbour(self, entry: ImageEntry, kind: str, offset: int) -> np.ndarray | None:
        load = getattr(self.base, "load_neighbour", None)
        image = load(self._source(entry, kind), kind, offset) if load else None
        return None if image is None else self.policy.apply(image)

    def describe(self) -> dict[str, Any]:
        return self.base.describe()


@dataclass
class Selection:
    dataset: Dataset
    entries: list[ImageEntry]
    preprocessing: str
    record: dict[str, Any]
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _skip(entry: ImageEntry, stage: str, error: str) -> dict[str, Any]:
    return {"dataset": entry.dataset, "split": entry.split, "id": entry.id, "path": entry.path, "stage": stage,
            "error": error}  # fmt: skip


def select_images(
    name: str,
    *,
    options: dict[str, Any] | None = None,
    preprocessing: str | dict[str, Any] | None = None,
    limit: int | None = None,
    seed: int = 0,
    min_side: int = 0,
    partition: Partition | None = None,
) -> Selection:
    """The images (prepared, hashed) a run of dataset ``name`` uses, plus what to record about them.
    ``partition`` first keeps one part of a seeded train/val/test partition of the index (then the subset)."""
    ds = create_dataset(name, **(options or {}))
    try:
        policy = parse_policy(preprocessing if preprocessing is not None else default_policy(ds))
    except PolicyError as exc:
        raise DatasetError(f"dataset {name!r}: {exc}") from None
    index = ds.index()
    if not index:
        raise DatasetError(f"dataset {name!r}: no images found in {ds.describe().get('source', '?')}")
    partition_record = None
    if partition is not None:
        parts = partition.split(index)
        partition_record = {**partition.describe(), "counts": {k: len(v) for k, v in parts.items()}}
        index = parts[partition.take]
        if not index:
            raise DatasetError(
                f"dataset {name!r}: part {partition.take!r} of the partition is empty "
                f"({partition_record['counts']}); the dataset is too small for these fractions"
            )
    chosen = stratified_subset(index, limit, seed)
    skipped: list[dict[str, Any]] = []
    prepared = Prepared(ds, policy) if policy.canonical != "none" else None
    entries: list[ImageEntry] = []
    tiles: list[tuple[ImageEntry, np.ndarray]] = []
    for ref in chosen:
        if prepared is None and ref.sha256:
            entry, image = ref, None  # pinned by its card: hashed already, verified when loaded
        else:
            try:
                decoded = ds.decode(ref)
            except DatasetError as exc:
                if ds.pinned:
                    raise
                skipped.append(_skip(ref, "decode", str(exc)))
                continue
            image = decoded.pixels
            entry = with_decoded(ref, decoded)
            if ref.sha256 and entry.sha256 != ref.sha256:
                raise DatasetError(f"{ds.name}/{ref.id}: pixels do not match the recorded sha256; the file changed")
        if prepared is not None:
            try:
                policy.check_size(entry.width, entry.height, getattr(ds, "max_pixels", None))
                out = policy.apply(image)
            except PolicyError as exc:
                skipped.append(_skip(entry, "preprocess", str(exc)))
                continue
            if policy.mosaic_k is not None:
                tiles.append((entry, out))
                continue
            prepared.sources[entry.id] = [entry]
            entry = _prepared_entry(entry, out, policy.canonical)
        if min(entry.width, entry.height) < min_side:
            skipped.append(_too_small(entry, min_side))
            continue
        entries.append(entry)
    mosaics: list[dict[str, Any]] = []
    if prepared is not None and policy.mosaic_k is not None:
        entries, mosaics = _mosaics(prepared, tiles, skipped, min_side)
    record = {
        **ds.describe(),
        "preprocessing": policy.canonical,
        "limit_images": limit,
        "seed": seed,
        "subset": "stratified by label, seeded" if limit is not None and limit < len(index) else "all",
        "index_count": len(index),
        "index_class_counts": class_counts(index),
        "chosen_count": len(chosen),
        "chosen_class_counts": class_counts(chosen),
        "used_count": len(entries),
        "images": [e.record() for e in entries],
        "skipped": skipped,
    }
    if partition_record is not None:
        record["partition"] = partition_record
    if mosaics:
        record["mosaics"] = mosaics
    return Selection(prepared or ds, entries, policy.canonical, record, skipped)


def _prepared_entry(entry: ImageEntry, image: np.ndarray, canonical: str) -> ImageEntry:
    return replace(
        entry,
        sha256=pixels_sha256(image),
        width=image.shape[1],
        height=image.shape[0],
        preprocessing=canonical,
        original_sha256=entry.sha256,
        original_width=entry.width,
        original_height=entry.height,
    )


def _too_small(entry: ImageEntry, min_side: int) -> dict[str, Any]:
    return _skip(
        entry,
        "size",
        f"{entry.width}x{entry.height} is below the minimum side of {min_side} px (codec or suite); "
        "use a pad64/upscale/resize policy to keep it",
    )


def _mosaics(
    prepared: Prepared, tiles: list[tuple[ImageEntry, np.ndarray]], skipped: list[dict[str, Any]], min_side: int
) -> tuple[list[ImageEntry], list[dict[str, Any]]]:
    policy = prepared.policy
    k2 = (policy.mosaic_k or 0) ** 2
    entries, mosaics = [], []
    full = len(tiles) - len(tiles) % k2
    for entry, _ in tiles[full:]:
        skipped.append(_skip(entry, "mosaic", f"left over: {len(tiles) - full} images do not fill a {k2}-tile mosaic"))
    for g in range(0, full, k2):
        group = tiles[g : g + k2]
        try:
            image, tile_map = policy.mosaic([t for _, t in group], [e.id for e, _ in group])
        except PolicyError as exc:
            skipped.extend(_skip(e, "mosaic", str(exc)) for e, _ in group)
            continue
        for t, (e, _) in zip(tile_map, group, strict=True):
            t.update({"sha256": e.sha256, "label": e.label})
        first = group[0][0]
        mosaic_id = f"mosaic_{g // k2:05d}"
        entry = ImageEntry(
            dataset=first.dataset,
            split=first.split,
            id=mosaic_id,
            sha256=pixels_sha256(image),
            width=image.shape[1],
            height=image.shape[0],
            path=first.path,
            label=None,
            preprocessing=policy.canonical,
        )
        if min(entry.width, entry.height) < min_side:
            skipped.append(_too_small(entry, min_side))
            continue
        prepared.sources[mosaic_id] = [e for e, _ in group]
        entries.append(entry)
        mosaics.append({"id": mosaic_id, "sha256": entry.sha256, "tiles": tile_map})
    return entries, mosaics
