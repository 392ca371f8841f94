"""Held-out evaluation of the shipped RDEIC-tiny weights (what the model card and tests/test_rdeic_tiny.py cite).

``python -m harness.train.evaluate --weights weights/rdeic-tiny`` writes

* ``<weights>/heldout/*.png``: 256 x 256 centre crops of the held-out bundled samples (never trained on),
  the images of the harness suite ``<weights>/eval_heldout.toml`` (RDEIC-tiny at 2 and 5 steps next to JPEG2000
  at a matched rate, bpp / PSNR / MS-SSIM);
* ``<weights>/reference.json``: per image, rate point and step count, the bpp and PSNR of a direct
  encode -> decode with decode seed 0 (the numbers the test reproduces within 0.5 dB).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CROP = 256
RATES = ("low", "high")
STEPS = (2, 5)


def center_crop(image: np.ndarray, size: int = CROP) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def heldout_crops() -> list[tuple[str, np.ndarray]]:
    from harness.train.data import held_out_images

    return [(im.name, center_crop(im.pixels)) for im in held_out_images()]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def measure(weights: Path, rate: str, steps: int, image: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Direct encode -> parse -> reconstruct (decode seed ``seed``): bpp on the image's pixels and PSNR."""
    from harness.codecs.base import create_codec

    codec = create_codec("rdeic", config="tiny", weights=str(weights / f"rdeic-tiny-{rate}.safetensors"), steps=steps)
    bits = codec.encode(image)
    out = codec.decode(bits.data, image.shape[:2], seed)[: image.shape[0], : image.shape[1]]
    return {"bpp": 8 * len(bits.data) / (image.shape[0] * image.shape[1]), "psnr": psnr(image, out)}


def main(argv: list[str] | None = None) -> int:
    import torch
    from PIL import Image

    ap = argparse.ArgumentParser(prog="python -m harness.train.evaluate")
    ap.add_argument("--weights", default="weights/rdeic-tiny")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    weights = Path(args.weights)
    crops = heldout_crops()
    folder = weights / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in crops:
        Image.fromarray(arr).save(folder / name, optimize=True)
    ref: dict = {"decode_seed": 0, "crop": CROP, "images": {}}
    for name, arr in crops:
        for rate in RATES:
            for steps in STEPS:
                m = measure(weights, rate, steps, arr)
                ref["images"].setdefault(name, {})[f"{rate}@{steps}"] = {k: round(v, 4) for k, v in m.items()}
                print(name, rate, steps, m, flush=True)
    (weights / "reference.json").write_text(json.dumps(ref, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
