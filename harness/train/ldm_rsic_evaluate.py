"""Held-out evaluation of the shipped LDM-RSIC-tiny weights (the numbers its model card cites).

``python -m harness.train.ldm_rsic_evaluate --weights weights/ldm-rsic-tiny`` decodes, per held-out image, one
ELIC-tiny stream four ways (enhanced with the generated prior, decode seeds 0-2; ELIC-tiny alone; the "w/o DFAM"
ablation prior = none) and JPEG2000 (9/7, one layer) at the same rate image by image, raw and through JPEG2000*'s
MEN (the same JPEG2000 bits). Held-out images: the ``standin_overhead`` scenes (seeds never trained on, 256 x 256)
and the ``topobathy`` crops of ``standin_terrain`` (a DEM never trained on, 128 x 128). Writes
``<weights>/heldout.json`` (per image and means, with paired differences and Student-t 95 % intervals).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see harness/train/ldm_rsic_tiny.py

import argparse
import json
from pathlib import Path

import numpy as np

SEEDS = (0, 1, 2)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def heldout_images() -> list[tuple[str, np.ndarray]]:
    from harness.datasets import create_dataset

    out = []
    for name in ("standin_overhead", "standin_terrain"):
        ds = create_dataset(name)
        for e in ds.index():
            if name == "standin_terrain" and e.label != "topobathy":
                continue  # jacksboro_fault_dem.npz was rendered (other light, colours) into the training set
            out.append((f"{name}/{e.id}", ds.read(e)))
    return out


def measure(weights: Path, image: np.ndarray) -> dict[str, float]:
    from harness.codecs.base import create_codec

    opts = {"weights": str(weights / "ldm-rsic-tiny.safetensors")}
    enhanced = create_codec("ldm-rsic-tiny", **opts)
    elic = create_codec("elic-tiny", **opts)
    noprior = create_codec("ldm-rsic-tiny", prior="none", **opts)
    j2k = create_codec("jpeg2000")
    j2k_star = create_codec("j2k+men-tiny", men_weights=str(weights / "j2k-men-tiny.safetensors"))
    size = image.shape[:2]
    bits = enhanced.encode(image)
    bpp = 8 * len(bits.data) / (size[0] * size[1])
    state = enhanced.parse(bits.data, size)
    row = {"bpp": bpp, "elic": psnr(image, elic.decode_state(state, 0, size=size))}
    row["enhanced_seeds"] = [psnr(image, enhanced.decode_state(state, s, size=size)) for s in SEEDS]
    row["enhanced"] = float(np.mean(row["enhanced_seeds"]))
    row["no_prior"] = psnr(image, noprior.decode_state(state, 0, size=size))
    jbits = j2k.encode_at_rate(image, bpp)
    row["j2k_bpp"] = 8 * len(jbits.data) / (size[0] * size[1])
    row["j2k"] = psnr(image, j2k.decode(jbits.data, size))
    row["j2k_star"] = psnr(image, j2k_star.decode(jbits.data, size, 0))
    return row


def summarise(rows: dict[str, dict]) -> dict[str, object]:
    from reports.stats import mean_interval

    def diff(a: str, b: str) -> list[float]:
        m, lo, hi = mean_interval(np.array([r[a] - r[b] for r in rows.values()]))
        return [round(m, 4), round(lo, 4), round(hi, 4)]

    keys = ("bpp", "elic", "enhanced", "no_prior", "j2k_bpp", "j2k", "j2k_star")
    means = {k: round(float(np.mean([r[k] for r in rows.values()])), 4) for k in keys}
    return {
        "images": len(rows),
        "means": means,
        "enhanced_minus_elic_db": diff("enhanced", "elic"),
        "enhanced_minus_no_prior_db": diff("enhanced", "no_prior"),
        "j2k_star_minus_j2k_db": diff("j2k_star", "j2k"),
        "accept_enhanced_ge_elic_minus_0.05": means["enhanced"] >= means["elic"] - 0.05,
        "accept_enhanced_gt_no_prior": means["enhanced"] > means["no_prior"],
        "accept_j2k_star_gt_j2k": means["j2k_star"] > means["j2k"],
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m harness.train.ldm_rsic_evaluate")
    ap.add_argument("--weights", default="weights/ldm-rsic-tiny")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    weights = Path(args.weights)
    rows = {}
    for name, image in heldout_images():
        rows[name] = measure(weights, image)
        print(name, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in rows[name].items()}))
    groups = {"all": rows, "standin_overhead": {k: v for k, v in rows.items() if k.startswith("standin_overhead")}}
    out = {"decode_seeds": list(SEEDS), "summary": {g: summarise(r) for g, r in groups.items()}, "images": rows}
    (weights / "heldout.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
