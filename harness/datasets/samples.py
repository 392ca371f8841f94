"""The bundled samples (``datasets/samples/``): pinned by their card, so a changed file stops the run."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset, DatasetError, ImageEntry, data_root
from harness.datasets.decode import Decoded, decode


class BundledSamples(Dataset):
    """The small images shipped in ``datasets/samples/`` (sources and licences in its ``card.toml``)."""

    name = "samples"
    pinned = True

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else data_root() / "samples"
        card = self.root / "card.toml"
        if not card.is_file():
            raise DatasetError(f"bundled samples not found: {card} is missing (set HARNESS_DATA_DIR?)")
        with open(card, "rb") as fh:
            self.card = tomllib.load(fh)
        self.version = str(self.card.get("version", "0"))

    def index(self) -> list[ImageEntry]:
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

    def entries(self) -> list[ImageEntry]:
        return self.index()

    def read(self, entry: ImageEntry) -> np.ndarray:
        return self.decode(entry).pixels

    def decode(self, entry: ImageEntry) -> Decoded:
        return decode(entry.path, max_pixels=self.max_pixels)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "source": str(self.root), "source_kind": "bundled"}
