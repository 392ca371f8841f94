"""Dataset loaders (registry ``DATASETS``). The data itself lives in the top-level ``datasets/`` folder,
which is deliberately *not* a Python package: a package of that name would shadow Hugging Face ``datasets``.

Every image carries the sha256 of its decoded pixels; cells are keyed by that, never by file name.
"""

from __future__ import annotations

import os
import tomllib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.hashing import pixels_sha256


class DatasetError(ValueError):
    """A missing, changed or unreadable dataset (a user-facing error)."""


def data_root() -> Path:
    """The folder holding dataset cards and bundled samples (``$HARNESS_DATA_DIR`` overrides)."""
    env = os.environ.get("HARNESS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "datasets"


@dataclass(frozen=True)
class ImageEntry:
    dataset: str
    split: str
    id: str  # path relative to the dataset root, or an index
    sha256: str  # of the decoded uint8 RGB pixels (see harness.hashing.pixels_sha256)
    width: int
    height: int
    path: str
    label: str | None = None


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 HxWx3, with a clear error for a broken file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from None


class Dataset(ABC):
    name: str
    version: str

    @abstractmethod
    def entries(self) -> list[ImageEntry]: ...

    def load(self, entry: ImageEntry) -> np.ndarray:
        image = load_rgb(entry.path)
        if pixels_sha256(image) != entry.sha256:
            raise DatasetError(
                f"{self.name}/{entry.id}: pixels do not match the recorded sha256; the file changed on disk"
            )
        return image


class BundledSamples(Dataset):
    """The small images shipped in ``datasets/samples/`` (sources and licences in its ``card.toml``)."""

    name = "samples"

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else data_root() / "samples"
        card = self.root / "card.toml"
        if not card.is_file():
            raise DatasetError(f"bundled samples not found: {card} is missing (set HARNESS_DATA_DIR?)")
        with open(card, "rb") as fh:
            self.card = tomllib.load(fh)
        self.version = str(self.card.get("version", "0"))

    def entries(self) -> list[ImageEntry]:
        out = []
        for row in sorted(self.card["images"], key=lambda r: r["file"]):
            out.append(
                ImageEntry(
                    dataset=self.name,
                    split="all",
                    id=row["file"],
                    sha256=str(row["pixels_sha256"]),
                    width=int(row["width"]),
                    height=int(row["height"]),
                    path=str(self.root / row["file"]),
                )
            )
        return out


def create_dataset(name: str) -> Dataset:
    from harness.registry import DATASETS

    return DATASETS.get(name)()
