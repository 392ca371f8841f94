"""Remote-sensing datasets of the LDM-RSIC evaluation (issue #18): the paper's test sets and an offline stand-in.

- ``dota``: DOTA-v1.5 images (a folder or zip of the PNGs), described by ``datasets/dota.toml``. The paper tests
  on 100 test images cropped to 256 x 256: a suite asks for that with ``preprocessing = "center_crop(size=256)"``
  and ``limit_images = 100`` (a seeded subset; the paper's own 100 are not published).
- ``ucmerced``: UC Merced Land Use (21 classes x 100 TIFFs, 256 x 256; a few are not exactly 256 x 256),
  ``datasets/ucmerced.toml``. ``split = "test"`` is 20 % of every class (420 images, as in the paper) chosen by a
  seeded hash of each file's path, ``"train"`` the other 80 %; the paper's exact split is not published.
- ``standin_overhead``: an offline STAND-IN for overhead imagery, procedurally generated (fields with crop rows,
  forest, water, roads, buildings with shadows; seeded, numpy only). Never report its numbers as DOTA / UC-M /
  EuroSAT results. Seeds ``TEST_SEEDS`` form the dataset; the LDM-RSIC-tiny recipe trains on other seeds only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.datasets.base import DatasetError, ImageEntry
from harness.datasets.loaders import StoredDataset
from harness.datasets.standins import StandIn
from harness.hashing import key_of

#: Seeds of the stand-in's images (held out from LDM-RSIC-tiny's training, which uses ``TRAIN_SEEDS``).
TEST_SEEDS = tuple(range(1000, 1008))
TRAIN_SEEDS = tuple(range(0, 48))
SCENE_SIZE = 256


class DOTA(StoredDataset):
    """DOTA-v1.5 images (``images/*.png``, any folder layout, or the zip): unlabelled for compression."""

    card_name = "dota"


class UCMerced(StoredDataset):
    """UC Merced Land Use: ``UCMerced_LandUse/Images/<class>/*.tif`` (folder or the zip), 21 classes.

    ``split``: ``all`` (2100), ``test`` (20 % per class, 420), ``train`` (80 %, 1680): a seeded per-class split
    (hash of ``seed`` and the path relative to the class folder), stable when the folder is moved or renamed."""

    card_name = "ucmerced"
    labelled = True
    split_seed = 0
    test_fraction = 0.2

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        split: str | None = None,
        hub_id: str | None = None,
        max_pixels: int | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
    ) -> None:
        if split not in (None, "all", "train", "test"):
            raise DatasetError(f'ucmerced: split must be "all", "train" or "test", got {split!r}')
        self.wanted_split = split or "all"
        # the tree itself has no split folders: read all of it, then split per class here
        super().__init__(path, None if hub_id is None else split, hub_id, max_pixels, image_column, label_column)

    def index(self) -> list[ImageEntry]:
        entries = super().index()
        if self.wanted_split == "all" or self.store.kind == "hub":
            return entries
        by_class: dict[str, list[ImageEntry]] = {}
        for e in entries:
            by_class.setdefault(str(e.label), []).append(e)
        chosen = []
        for members in by_class.values():
            ranked = sorted(members, key=lambda e: key_of({"seed": self.split_seed, "file": Path(e.id).name}))
            n_test = round(self.test_fraction * len(members))
            part = ranked[:n_test] if self.wanted_split == "test" else ranked[n_test:]
            chosen += [ImageEntry(**{**e.__dict__, "split": self.wanted_split}) for e in part]
        return sorted(chosen, key=lambda e: e.id)


# -- the procedural overhead stand-in ----------------------------------------------------------------------------
def _noise(rng: np.random.Generator, size: int, octaves: tuple[int, ...], weights: tuple[float, ...]) -> np.ndarray:
    """Fractal value noise in about [-1, 1]: random grids of ``octaves`` cells, bicubically enlarged, summed."""
    from PIL import Image

    out = np.zeros((size, size), np.float64)
    for cells, w in zip(octaves, weights, strict=True):
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
        out += w * np.asarray(img, np.float64)
    return out / max(1e-9, np.abs(out).max())


_CROPS = np.array(
    [[88, 120, 52], [118, 142, 70], [150, 150, 92], [172, 160, 110], [132, 108, 76], [98, 132, 60], [190, 176, 128]],
    np.float64,
)
_ROOFS = np.array([[150, 150, 152], [176, 92, 74], [206, 204, 196], [110, 112, 118], [160, 120, 96]], np.float64)


def overhead_scene(seed: int, size: int = SCENE_SIZE) -> np.ndarray:
    """A deterministic overhead-like RGB scene (uint8 ``size`` x ``size`` x 3) from ``seed``: rotated field
    parcels with crop-row stripes, forest and water from fractal noise, straight roads, and (on some seeds) a
    built-up block of roofs with cast shadows. A stand-in with the statistics of aerial crops (sharp parcel
    edges, periodic textures, small high-contrast objects), not a model of any sensor."""
    rng = np.random.default_rng([seed, 0x1D5])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    pa, pb = rng.uniform(24, 70), rng.uniform(30, 90)
    parcel = (np.floor(u / pa) * 7919 + np.floor(v / pb) * 104729 + seed * 31).astype(np.int64)
    ids, inv = np.unique(parcel, return_inverse=True)
    colours = _CROPS[rng.integers(0, len(_CROPS), len(ids))] + rng.normal(0, 10, (len(ids), 3))
    img = colours[inv.reshape(size, size)]
    period = rng.uniform(3.0, 7.0, len(ids))[inv.reshape(size, size)]
    stripe_dir = rng.integers(0, 2, len(ids))[inv.reshape(size, size)]
    rows = np.sin(2 * np.pi * np.where(stripe_dir == 1, u, v) / period)
    img += (rows * rng.uniform(4, 14))[..., None]
    img += 8 * _noise(rng, size, (8, 32), (1.0, 0.5))[..., None]
    forest = _noise(rng, size, (3, 9, 27), (1.0, 0.5, 0.25)) > rng.uniform(0.25, 0.55)
    canopy = 30 * _noise(rng, size, (48, 96), (1.0, 1.0))
    img = np.where(forest[..., None], np.array([44, 72, 40]) + canopy[..., None] * np.array([0.6, 1.0, 0.5]), img)
    water = _noise(rng, size, (2, 5), (1.0, 0.4)) < -rng.uniform(0.45, 0.75)
    ripple = 6 * _noise(rng, size, (40,), (1.0,))
    img = np.where(water[..., None], np.array([40, 66, 92]) + ripple[..., None], img)
    for _ in range(int(rng.integers(1, 4))):  # straight roads
        a = rng.uniform(0, np.pi)
        off = rng.uniform(-size / 3, size / 3) + (xx.mean() * np.cos(a) + yy.mean() * np.sin(a))
        dist = np.abs(xx * np.cos(a) + yy * np.sin(a) - off)
        width = rng.uniform(1.5, 4.0)
        img = np.where((dist < width)[..., None], np.array([126, 124, 120]) + rng.normal(0, 3), img)
        img = np.where(((dist >= width) & (dist < width + 1.2))[..., None], img * 0.8, img)
    if rng.random() < 0.6:  # a built-up block: roofs with shadows towards the lower right
        cx, cy = rng.uniform(0.2, 0.8, 2) * size
        extent = rng.uniform(0.15, 0.35) * size
        for _ in range(int(rng.integers(15, 60))):
            bx = int(np.clip(cx + rng.uniform(-extent, extent), 0, size - 4))
            by = int(np.clip(cy + rng.uniform(-extent, extent), 0, size - 4))
            bw, bh = (int(s) for s in rng.integers(4, 14, 2))
            sh = int(rng.integers(1, 4))
            img[by + sh : by + bh + sh, bx + sh : bx + bw + sh] *= 0.55
            img[by : by + bh, bx : bx + bw] = _ROOFS[rng.integers(0, len(_ROOFS))] + rng.normal(0, 6)
    img += rng.normal(0, 2.0, img.shape)  # sensor noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


class StandInOverhead(StandIn):
    """STAND-IN for overhead imagery (not DOTA / UC-M / EuroSAT): 8 procedurally generated 256 x 256 scenes
    (seeds ``TEST_SEEDS``, never used to train LDM-RSIC-tiny)."""

    name = "standin_overhead"

    def _build(self) -> list[tuple[str, str | None, np.ndarray]]:
        return [(f"overhead_{s}.png", None, overhead_scene(s)) for s in TEST_SEEDS]
