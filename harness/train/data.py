"""Training data for the project's own models: random patches from images that ship with the repo or inside
installed packages, with a fixed held-out set that is never sampled.

Sources (licences in ``SOURCES``): ``datasets/samples/`` minus ``HELD_OUT`` (scikit-image / scikit-learn sample
images, see ``datasets/samples/card.toml``) and matplotlib's ``sample_data/grace_hopper.jpg``. The hillshaded
matplotlib DEMs are deliberately *not* used: they are the ``standin_terrain`` OOD stand-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bundled samples never used for training (evaluation of the shipped model).
HELD_OUT = ("chelsea.png", "coffee.png", "rocket.png")

#: Extra images shipped inside installed packages: (package, relative path, licence).
EXTRA = (
    (
        "matplotlib",
        "sample_data/grace_hopper.jpg",
        "public domain (U.S. Navy official photograph of Rear Admiral Grace M. Hopper, 1984)",
    ),
)


@dataclass(frozen=True)
class TrainImage:
    name: str
    source: str
    licence: str
    pixels: np.ndarray  # H x W x 3 uint8


def _read_rgb(path: Path) -> np.ndarray:
    """The same conversion rules as every dataset loader (harness/datasets/decode.py)."""
    from harness.datasets.decode import decode

    return decode(path).pixels


def bundled_samples(include_held_out: bool = False) -> list[TrainImage]:
    import tomllib

    from harness.datasets.base import data_root

    root = data_root() / "samples"
    with open(root / "card.toml", "rb") as fh:
        card = tomllib.load(fh)
    out = []
    for row in sorted(card["images"], key=lambda r: r["file"]):
        if row["file"] in HELD_OUT and not include_held_out:
            continue
        out.append(
            TrainImage(row["file"], f"datasets/samples/{row['file']}", row["licence"], _read_rgb(root / row["file"]))
        )
    return out


def held_out_images() -> list[TrainImage]:
    return [im for im in bundled_samples(include_held_out=True) if im.name in HELD_OUT]


def package_images() -> list[TrainImage]:
    out = []
    for package, rel, licence in EXTRA:
        if package == "matplotlib":
            import matplotlib

            path = Path(matplotlib.get_data_path()) / rel
        else:  # pragma: no cover - only matplotlib today
            continue
        if path.is_file():
            out.append(TrainImage(Path(rel).name, f"{package}:{rel}", licence, _read_rgb(path)))
    return out


def training_images() -> list[TrainImage]:
    images = bundled_samples() + package_images()
    assert not {im.name for im in images} & set(HELD_OUT), "a held-out image leaked into the training set"
    return images


def _pyramid(pixels: np.ndarray, scales: tuple[float, ...], min_side: int) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for s in scales:
        if s == 1.0:
            arr = pixels
        else:
            h, w = pixels.shape[:2]
            size = (max(1, round(w * s)), max(1, round(h * s)))
            arr = np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))
        if min(arr.shape[:2]) >= min_side:
            out.append(np.ascontiguousarray(arr))
    return out


class PatchSampler:
    """Seeded random square patches (random image, scale, position, horizontal flip) as float tensors in [0, 1].

    ``state()`` / ``load_state()`` carry the generator so a resumed run draws the same patches as an unbroken one.
    """

    def __init__(
        self,
        images: list[TrainImage] | list[np.ndarray],
        patch: int,
        seed: int,
        scales: tuple[float, ...] = (1.0, 0.75, 0.5),
    ) -> None:
        arrays = [im.pixels if isinstance(im, TrainImage) else im for im in images]
        self.patch = patch
        self.levels: list[np.ndarray] = []
        for arr in arrays:
            self.levels += _pyramid(arr, scales, patch)
        if not self.levels:
            raise ValueError(f"no training image is at least {patch} px on each side")
        # weight each level by its area (more patches from larger images)
        area = np.array([a.shape[0] * a.shape[1] for a in self.levels], dtype=np.float64)
        self.weights = area / area.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int):
        import torch

        p = self.patch
        out = np.empty((size, p, p, 3), dtype=np.uint8)
        for i in range(size):
            arr = self.levels[int(self.rng.choice(len(self.levels), p=self.weights))]
            y = int(self.rng.integers(0, arr.shape[0] - p + 1))
            x = int(self.rng.integers(0, arr.shape[1] - p + 1))
            crop = arr[y : y + p, x : x + p]
            out[i] = crop[:, ::-1] if self.rng.random() < 0.5 else crop
        return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state
