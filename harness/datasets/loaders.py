"""Loaders for the real datasets, each described by its card ``datasets/<name>.toml``.

Where the images come from, first match wins::

    path = ... in the suite ─┬─ folder      <class>/*.png tree, split folders or *-split.txt lists
                             ├─ .zip        the same tree inside an archive (read member by member)
                             ├─ .parquet    one shard, or a folder of shards (hub snapshot layout)
                             └─ .h5         Galaxy10_DECals.h5 (images / ans), read row by row
    no path ─> $HARNESS_DATA_DIR/<name>/ or datasets/<name>/, then ~/.cache/codec-harness/datasets/<name>/
           ─> the card's hub id (or hub_id = ... in the suite) through `datasets`, cached copies only when
              offline, refused in one line when it would need a download that cannot happen
           ─> a one-line error saying where to put the files / how to fetch them

A ``path`` that does not exist is an error at once (never a silent fallback to the hub).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from harness.datasets.base import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    Dataset,
    DatasetError,
    ImageEntry,
    cache_root,
    data_root,
    read_card,
)
from harness.datasets.decode import Decoded
from harness.datasets.stores import FolderStore, HDF5Store, HubStore, ParquetStore, Store, ZipStore


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """``~`` and ``$VARS`` expanded; relative paths are relative to the current directory."""
    return Path(os.path.expandvars(os.path.expanduser(str(path)))).resolve()


class StoredDataset(Dataset):
    """A dataset read from a local store or a hub split, described by a card."""

    card_name: ClassVar[str | None] = None
    labelled: ClassVar[bool] = False
    class_names: ClassVar[tuple[str, ...]] = ()
    kinds: ClassVar[tuple[str, ...]] = ("folder", "zip", "parquet")

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        split: str | None = None,
        hub_id: str | None = None,
        max_pixels: int | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
    ) -> None:
        self.card = read_card(self.card_name) if self.card_name else {}
        self.name = str(self.card.get("name", getattr(self, "name", "folder")))
        self.version = str(self.card.get("version", "1"))
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        self.split = split
        self.columns = (image_column, label_column)
        self.store = self._open(path, hub_id)

    # -- where the images come from -----------------------------------------------------------------------
    def where_hint(self) -> str:
        return str(self.card.get("where", f"put it in {data_root() / self.name}/ or set path = ... in the suite"))

    def _open(self, path: str | os.PathLike[str] | None, hub_id: str | None) -> Store:
        if path is not None:
            p = resolve_path(path)
            if not p.exists():
                raise DatasetError(f"{self.name}: path {p} does not exist ({self.where_hint()})")
            return self._local(p)
        if hub_id is None:
            for candidate in (data_root() / self.name, cache_root() / self.name):
                if candidate.exists() and any(candidate.iterdir()):
                    return self._local(candidate)
        hub_id = hub_id or self.card.get("sources", {}).get("default_hub_id")
        if hub_id:
            split = self.split if self.split not in (None, "all") else self.card.get("default_hub_split", "train")
            return HubStore(self.name, hub_id, split, *self.columns, self.class_names, self.where_hint())
        raise DatasetError(f"{self.name}: no local copy found; {self.where_hint()}")

    def _local(self, p: Path) -> Store:
        suffix = p.suffix.lower()
        if p.is_file():
            kind = {".zip": "zip", ".parquet": "parquet", ".h5": "h5", ".hdf5": "h5"}.get(suffix)
            if kind is None or kind not in self.kinds:
                raise DatasetError(f"{self.name}: cannot read {p}: expected one of {', '.join(self.kinds)}")
        elif "h5" in self.kinds and (h5s := sorted(p.glob("*.h5"))):
            return self._local(h5s[0])
        elif "parquet" in self.kinds and any(p.rglob("*.parquet")):
            kind = "parquet"
        elif (zips := sorted(p.glob("*.zip"))) and not any(
            f.suffix.lower() in IMAGE_SUFFIXES for f in p.rglob("*") if f.is_file()
        ):
            return self._local(zips[0])  # the archive as downloaded, e.g. datasets/eurosat/EuroSAT.zip
        else:
            kind = "folder"
        if kind == "folder":
            return FolderStore(p, self.labelled, self.split)
        if kind == "zip":
            return ZipStore(p, self.labelled, self.split)
        if kind == "parquet":
            return ParquetStore(p, self.split, *self.columns, self.class_names)
        if self.split not in (None, "all"):
            raise DatasetError(f'{self.name}: {p} has no official split; use split = "all" and limit_images')
        return HDF5Store(p, class_names=self.class_names)

    # -- the Dataset contract -----------------------------------------------------------------------------
    def index(self) -> list[ImageEntry]:
        return sorted(
            (
                ImageEntry(
                    dataset=self.name,
                    split=split,
                    id=item_id,
                    sha256="",
                    width=0,
                    height=0,
                    path=self.store.location,
                    label=label,
                    index=index,
                )
                for item_id, label, index, split in self.store.items()
            ),
            key=lambda e: e.id,
        )

    def read(self, entry: ImageEntry) -> np.ndarray:
        return self.decode(entry).pixels

    def decode(self, entry: ImageEntry) -> Decoded:
        return self.store.read(entry.id, entry.index, self.max_pixels)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.store.location,
            "source_kind": self.store.kind,
            "split": self.split or "all",
            "card": f"datasets/{self.card_name}.toml" if self.card_name else None,
        }

    def expected_counts(self) -> dict[str, Any]:
        return dict(self.card.get("expected", {}))


class FolderDataset(StoredDataset):
    """Any folder (or zip, or parquet) of images, recursive and sorted; ``labels = "parent"`` takes the class
    from the first folder level (ImageFolder layout)."""

    name = "folder"

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        split: str | None = None,
        labels: str = "none",
        max_pixels: int | None = None,
    ) -> None:
        if path is None:
            raise DatasetError("dataset 'folder' needs path = ... in the suite")
        if labels not in ("none", "parent"):
            raise DatasetError(f"dataset 'folder': labels must be 'none' or 'parent', got {labels!r}")
        self.labelled = labels == "parent"  # type: ignore[misc]
        super().__init__(path=path, split=split, max_pixels=max_pixels)


class EuroSAT(StoredDataset):
    """EuroSAT RGB: ``2750/<class>/*.jpg`` (torchgeo zip) or ``EuroSAT_RGB/<class>/*.jpg`` (Zenodo zip), or
    the hub's ``timm/eurosat-rgb`` splits."""

    card_name = "eurosat"
    labelled = True


class TUBerlin(StoredDataset):
    """TU-Berlin sketches: ``<class>/*.png`` tree (grayscale, replicated to RGB) or the hub PNG sets."""

    card_name = "tu_berlin"
    labelled = True


GALAXY10_CLASSES = (
    "Disturbed",
    "Merging",
    "Round Smooth",
    "In-between Round Smooth",
    "Cigar Shaped Smooth",
    "Barred Spiral",
    "Unbarred Tight Spiral",
    "Unbarred Loose Spiral",
    "Edge-on without Bulge",
    "Edge-on with Bulge",
)


class Galaxy10(StoredDataset):
    """Galaxy10 DECaLS: ``Galaxy10_DECals.h5`` (images (N,256,256,3) uint8, labels ``ans``, sorted by class:
    subsets are stratified) or the hub parquet shards."""

    card_name = "galaxy10"
    labelled = True
    class_names = GALAXY10_CLASSES
    kinds = ("h5", "parquet", "folder", "zip")


class Kodak(StoredDataset):
    card_name = "kodak"


class CLIC(StoredDataset):
    card_name = "clic"


class Tecnick(StoredDataset):
    card_name = "tecnick"


class LSDIR(StoredDataset):
    card_name = "lsdir"
