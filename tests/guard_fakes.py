"""Fakes for the tests/test_guards_*.py files (issue #23): each makes one methodology rule observable.

They live in a module of their own (not in a test file) because decode workers import a codec by its
``module:qualname`` target: importing a test module there would pull pytest in. Registered by :func:`register`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fake_codecs import HEADER, FakeCodec
from PIL import Image

from corruptions.base import LatentCorruption
from harness.codecs.base import Bitstream, DecodedState, LatentHook
from harness.datasets.loaders import FolderDataset
from harness.registry import CODECS, CORRUPTIONS, DATASETS

#: Quantisation step of :class:`QuantizingCodec` (pixels are coded as the centre of their 32-wide bin).
STEP = 32


def quantized(image: np.ndarray) -> np.ndarray:
    """What :class:`QuantizingCodec` decodes ``image`` to: every value replaced by the centre of its bin."""
    return (image // STEP * STEP + STEP // 2).astype(np.uint8)


class QuantizingCodec(FakeCodec):
    """A lossy fake: the stream holds the quantised pixels, so two images that differ only inside the bins
    share one stream (as two near-identical images share a low-rate stream), and the clean decode differs
    from the original (so "vs the clean decode" and "vs the original" are different numbers)."""

    name = "fake_quantizing"

    def encode(self, image: np.ndarray) -> Bitstream:
        return super().encode(quantized(np.asarray(image, dtype=np.uint8)))


class ReconstructRaisesCodec(FakeCodec):
    """The trusted half raises on a damaged state (as a reconstruct fed garbage latents may): the parse in the
    worker succeeds and only ``reconstruct`` fails."""

    name = "fake_reconstruct_raises"

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        state = super().parse(data, size)
        payload = data[HEADER.size :]
        state["intact"] = hashlib.sha256(payload).digest() == HEADER.unpack(data[: HEADER.size])[2]
        return state

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        if not state["intact"]:
            raise RuntimeError("reconstruct met a damaged state")
        return state["image"]


class LeakyLatentNoise(LatentCorruption):
    """A broken latent plugin: even its identity level (``amp = 0``) changes the hooked array (one value)."""

    name = "fake_leaky_latent"

    @dataclass(frozen=True)
    class Params:
        amp: int

    @classmethod
    def identity_params(cls) -> dict:
        return {"amp": 0}

    def corrupt(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = latent.copy()
        out[0, 0, 0] ^= np.uint8(1)
        return out


class VersionedFolder(FolderDataset):
    """A folder dataset whose version is :attr:`current_version` (a card's ``version`` in real datasets): a new
    release of the same files must be new work, never cells "already done"."""

    name = "fake_versioned_folder"
    current_version = "1"

    def __init__(self, path: str | None = None, split: str | None = None, max_pixels: int | None = None) -> None:
        super().__init__(path=path, split=split, max_pixels=max_pixels)
        self.version = type(self).current_version


def register() -> None:
    for cls in (QuantizingCodec, ReconstructRaisesCodec):
        if cls.name not in CODECS:
            CODECS.register(cls.name, cls)
    if LeakyLatentNoise.name not in CORRUPTIONS:
        CORRUPTIONS.register(LeakyLatentNoise.name, LeakyLatentNoise)
    if VersionedFolder.name not in DATASETS:
        DATASETS.register(VersionedFolder.name, VersionedFolder)


# -- helpers shared by the guard tests ---------------------------------------------------------------------------
def noise(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 HxWx3 image of seeded uniform noise."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def image_folder(root: Path, images: dict[str, np.ndarray]) -> Path:
    """A folder of lossless PNGs, one per ``{relative name: pixels}``."""
    for name, pixels in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / name)
    return root


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images, written out here (the oracle, not harness.metrics)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def suite_text(
    *, datasets: str, codecs: str, corruptions: str, metrics: tuple[str, ...] = ("psnr",), seeds: int = 1
) -> str:
    """A suite file's text (suite seed 11, 30 s CPU floor per parse)."""
    names = ", ".join(f'"{m}"' for m in metrics)
    return (
        f'name = "guard"\nseed = 11\nseeds = {seeds}\nmetrics = [{names}]\ntimeout_s = 30\n'
        f"{datasets}\n{codecs}\n{corruptions}"
    )


def dataset_entry(path: Path, name: str = "folder", extra: str = "") -> str:
    return f'[[datasets]]\nname = "{name}"\npath = "{path}"\n{extra}\n'


def codec_entry(name: str, options: str = "") -> str:
    return f'[[codecs]]\ncodec = "{name}"\nlabel = "{name}"\noptions = {{ {options} }}\n'


def bsc_entry(bers: str, scope: str = "payload") -> str:
    return f'[[corruptions]]\ncorruption = "bsc"\nscopes = ["{scope}"]\ngrid = {{ ber = [{bers}] }}\n'
