"""DICM-tiny's acceptance measurement (what weights/dicm-tiny/MODEL_CARD.md cites):
``python -m harness.train.dicm_eval --weights weights/dicm-tiny``.

On held-out stand-in pairs (``standin_stereo`` seeds 0..N-1 at 64 x 128; training used seeds >= 1,000,000), per
image: encode once with DICM-tiny (the real file; bpp on its pixels, beside the likelihood estimate), decode the
same stream with the same decode seed under side-information conditions, and JPEG2000 (``j2k-plain``) at the same
file size, image by image (``encode_at_rate``)::

    true      the clean other view
    missing   w = 0 ("DICM without w": our interpretation, the official code has no path without a side view)
    wrong     the other view of another scene (scene i+1)

Quality: PSNR (RGB, peak 255) and MS-SSIM on RGB with 3 scales (pytorch_msssim's first three weights,
renormalised, 11 px window): the 5-scale MS-SSIM needs > 160 px a side and these views are 64 px high. Paired
differences (true - missing, true - wrong) get a Student-t 95 % interval and a Wilcoxon signed-rank p-value.
Writes ``eval_standin.json`` (summary + per image) and ``eval_standin.csv`` beside the weights.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

CONDITIONS = ("true", "missing", "wrong")
#: pytorch_msssim's 5-scale weights; the first three, renormalised, for 64 px images
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_3(a: np.ndarray, b: np.ndarray) -> float:
    """MS-SSIM on RGB (data range 255, Gaussian window 11 / sigma 1.5, 3 scales with pytorch_msssim's first three
    weights renormalised): pytorch_msssim's own loop, which asserts > 160 px for any number of scales."""
    import importlib

    import torch
    import torch.nn.functional as F

    ssim_mod = importlib.import_module("pytorch_msssim.ssim")
    weights = torch.tensor(MS_SSIM_WEIGHTS[:3], dtype=torch.float64)
    weights = weights / weights.sum()
    win = ssim_mod._fspecial_gauss_1d(11, 1.5).to(torch.float64).repeat([3, 1, 1, 1])
    x = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].double()
    y = torch.from_numpy(np.ascontiguousarray(b)).permute(2, 0, 1)[None].double()
    values = []
    for i in range(len(weights)):
        ssim_c, cs = ssim_mod._ssim(x, y, data_range=255.0, win=win, size_average=False)
        if i < len(weights) - 1:
            values.append(torch.relu(cs))
            pad = [s % 2 for s in x.shape[2:]]
            x, y = F.avg_pool2d(x, 2, padding=pad), F.avg_pool2d(y, 2, padding=pad)
    values.append(torch.relu(ssim_c))
    return float(torch.prod(torch.stack(values) ** weights.view(-1, 1, 1), dim=0).mean())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def paired(diffs: list[float]) -> dict[str, float]:
    """Mean of paired differences with a t interval (reports.stats) and the Wilcoxon signed-rank p-value."""
    from scipy.stats import wilcoxon

    from reports.stats import mean_interval

    mean, lo, hi = mean_interval(np.asarray(diffs))
    p = float(wilcoxon(diffs).pvalue) if len(diffs) > 1 and any(d != 0 for d in diffs) else math.nan
    return {"mean": mean, "ci95_low": lo, "ci95_high": hi, "wilcoxon_p": p, "n": len(diffs)}


def evaluate(weights: Path, n_images: int, decode_seed: int = 0, **options: Any) -> dict[str, Any]:
    from harness.codecs.base import create_codec
    from harness.datasets import create_dataset

    codec = create_codec("dicm@tiny", weights=str(weights / "dicm-tiny.safetensors"), **options)
    j2k = create_codec("j2k-plain")
    ds = create_dataset("standin_stereo", count=n_images)
    entries = ds.index()
    rows = []
    t0 = time.perf_counter()
    for i, entry in enumerate(entries):
        image = ds.load(entry)
        sides = {
            "true": ds.load_side(entry, "stereo"),
            "missing": None,
            "wrong": ds.load_side(entries[(i + 1) % len(entries)], "stereo"),
        }
        stream, report = codec.encode_with_report(image)
        size = image.shape[:2]
        row: dict[str, Any] = {"image": entry.id, "kind": entry.label, **{k: round(v, 6) for k, v in report.items()}}
        for name, side in sides.items():
            out = codec.decode(stream.data, size, decode_seed, side_info={"stereo": side})[: size[0], : size[1]]
            row[f"psnr_{name}"] = psnr(out, image)
            row[f"ms_ssim3_{name}"] = ms_ssim_3(out, image)
        ref = j2k.encode_at_rate(image, report["bpp"])
        out = j2k.decode(ref.data, size)[: size[0], : size[1]]
        row["j2k_bpp"] = 8 * len(ref.data) / (size[0] * size[1])
        row["psnr_j2k"] = psnr(out, image)
        row["ms_ssim3_j2k"] = ms_ssim_3(out, image)
        rows.append(row)
        print(f"{entry.id}: bpp {row['bpp']:.3f} (est {row['estimated_bpp']:.3f}) PSNR true "
              f"{row['psnr_true']:.2f} missing {row['psnr_missing']:.2f} wrong {row['psnr_wrong']:.2f} "
              f"j2k {row['psnr_j2k']:.2f}", flush=True)  # fmt: skip
    from reports.stats import mean_interval

    summary: dict[str, Any] = {
        "images": len(rows),
        "decode_seed": decode_seed,
        "codec": codec.config(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    for key in ("bpp", "estimated_bpp", "payload_over_estimate", "header_bpp", "j2k_bpp"):
        summary[key] = mean_interval(np.array([r[key] for r in rows]))
    for metric in ("psnr", "ms_ssim3"):
        for cond in (*CONDITIONS, "j2k"):
            summary[f"{metric}_{cond}"] = mean_interval(np.array([r[f"{metric}_{cond}"] for r in rows]))
        for other in ("missing", "wrong", "j2k"):
            summary[f"{metric}_true_minus_{other}"] = paired(
                [r[f"{metric}_true"] - r[f"{metric}_{other}"] for r in rows]
            )
    return {"summary": summary, "per_image": rows}


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m harness.train.dicm_eval")
    ap.add_argument("--weights", default="weights/dicm-tiny")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the preset's)")
    ap.add_argument("--time-input", default=None, choices=("index", "t"))
    ap.add_argument("--out", default=None, help="output stem (default <weights>/eval_standin)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    weights = Path(args.weights)
    options = {k: v for k, v in (("steps", args.steps), ("time_input", args.time_input)) if v is not None}
    result = evaluate(weights, args.images, **options)
    stem = Path(args.out) if args.out else weights / "eval_standin"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float))
    with open(stem.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(result["per_image"][0]))
        w.writeheader()
        w.writerows(result["per_image"])
    print(json.dumps(result["summary"], indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
