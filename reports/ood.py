"""Before/after tables of the fine-tune-then-evaluate suite (harness/ood.py), with paired differences.

A pair is the base codec's cell and the adapter codec's cell on the same image, corruption, level, scope,
replicate and decode seed (the suite pairs their corruption draws too). Per (OOD dataset, evaluated set,
corruption, scope, level) the table gives failure rates before and after, each metric's mean before and after
over the pairs where **both** decodes are ``ok``, the mean paired difference (after − before) with a Student-t
95 % interval, and the bpp before and after (identical for adapter modes: asserted by the suite). The role column
says whether the evaluated set is the OOD test part or an in-distribution set (forgetting).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports.stats import mean_interval

PAIR_KEYS = ["image_sha256", "corruption", "params", "scope", "replicate", "decode_seed"]


def _fec_free(cells: pd.DataFrame) -> pd.DataFrame:
    return cells if "fec" not in cells else cells.assign(fec=cells["fec"].fillna("none").astype(str))


def paired(cells: pd.DataFrame, base: str, adapter: str, dataset: str) -> pd.DataFrame:
    """Base and adapter cells of one evaluated dataset, joined on the pair keys (suffixes _before/_after)."""
    cells = _fec_free(cells)
    keys = PAIR_KEYS + (["fec"] if "fec" in cells else [])
    sel = cells[cells["dataset"] == dataset]
    a = sel[sel["codec_label"] == base]
    b = sel[sel["codec_label"] == adapter]
    return a.merge(b, on=keys, suffixes=("_before", "_after"), how="inner", validate="one_to_one")


def before_after(cells: pd.DataFrame, groups: list[dict[str, Any]], metrics: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for g in groups:
        evaluated = [(g["dataset"], "OOD test"), *((d, "ID (forgetting)") for d in g["in_distribution"])]
        for dataset, role in evaluated:
            pairs = paired(cells, g["base"], g["adapter"], dataset)
            if pairs.empty:
                continue
            for (corruption, scope, _params), p in pairs.groupby(["corruption", "scope", "params"], sort=False):
                ok = p[(p["status_before"] == "ok") & (p["status_after"] == "ok")]
                row: dict[str, Any] = {
                    "ood_dataset": g["dataset"],
                    "evaluated": dataset,
                    "role": role,
                    "base": g["base"],
                    "adapter": g["adapter"],
                    "corruption": corruption,
                    "scope": scope,
                    "level": p["level_before"].iloc[0],
                    "images": p["image_sha256"].nunique(),
                    "pairs": len(p),
                    "pairs_both_ok": len(ok),
                    "failure_rate_before": float((p["status_before"] != "ok").mean()),
                    "failure_rate_after": float((p["status_after"] != "ok").mean()),
                    "bpp_before": float(p["bpp_before"].mean()),
                    "bpp_after": float(p["bpp_after"].mean()),
                    "bytes_identical": bool((p["bytes_total_before"] == p["bytes_total_after"]).all()),
                }
                for m in metrics:
                    cb, ca = f"metric.{m}_before", f"metric.{m}_after"
                    if cb not in ok or ca not in ok:
                        continue
                    both = ok[[cb, ca]].replace([np.inf, -np.inf], np.nan).dropna()
                    diff = both[ca] - both[cb]
                    mean, lo, hi = mean_interval(diff.to_numpy()) if len(diff) else (math.nan,) * 3
                    row.update(
                        {
                            f"{m}_before": float(both[cb].mean()) if len(both) else math.nan,
                            f"{m}_after": float(both[ca].mean()) if len(both) else math.nan,
                            f"{m}_diff": mean,
                            f"{m}_diff_ci_low": lo,
                            f"{m}_diff_ci_high": hi,
                            f"{m}_n": len(diff),
                        }
                    )
                rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    return "(no paired cells)" if table.empty else human_table(table, metrics).to_markdown(index=False)


def metrics_of(table: pd.DataFrame) -> tuple[str, ...]:
    return tuple(c[: -len("_diff")] for c in table.columns if c.endswith("_diff"))


def human_table(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The before/after table as people read it (strings with arrows and intervals)."""
    cols = ["ood_dataset", "evaluated", "role", "corruption", "scope", "level", "images", "pairs_both_ok"]
    out = table[cols].copy()
    out["failures before → after"] = [
        f"{b:.1%} → {a:.1%}" for b, a in zip(table["failure_rate_before"], table["failure_rate_after"], strict=True)
    ]
    bpp = zip(table["bpp_before"], table["bpp_after"], strict=True)
    out["bpp before → after"] = [f"{b:.4f} → {a:.4f}" for b, a in bpp]
    for m in metrics:
        if f"{m}_diff" not in table:
            continue
        out[f"{m} before → after"] = [
            f"{b:.3f} → {a:.3f}" for b, a in zip(table[f"{m}_before"], table[f"{m}_after"], strict=True)
        ]
        out[f"Δ{m} [95% CI]"] = [
            f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(lo) else f"{d:+.3f} (n<2)"
            for d, lo, hi in zip(table[f"{m}_diff"], table[f"{m}_diff_ci_low"], table[f"{m}_diff_ci_high"], strict=True)
        ]
    return out


def training_curves(groups: list[dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
    """Training loss and validation metric against steps, one line per OOD dataset (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    drawn = False
    for g in groups:
        train = Path(g["adapter_path"]).parent / "train"
        loss = train / "adapter" / "metrics.csv"
        val = train / "validation.csv"
        if loss.is_file():
            df = pd.read_csv(loss)
            ax_loss.plot(df["step"], df["loss"], label=g["dataset"])
            drawn = True
        if val.is_file():
            df = pd.read_csv(val)
            metric = next(c for c in df.columns if c not in ("step", "bpp"))
            ax_val.plot(df["step"], df[metric], marker="o", label=g["dataset"])
            ax_val.set_ylabel(f"validation {metric}")
            drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax_loss.set(xlabel="step", ylabel="training loss", title="adapter training loss")
    ax_val.set(xlabel="step", title="validation (val part; step 0 = base)")
    for ax in (ax_loss, ax_val):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "ood_training_curves.png", out_dir / "ood_training_curves.svg"]
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths
