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

from reports import tables
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
            for (corruption, scope, params), p in pairs.groupby(["corruption", "scope", "params"], sort=False):
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
                    "level_value": tables.level_value(params),
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
    return sort_levels(pd.DataFrame(rows))


def _level_number(level: object) -> float:
    """The numeric value of a level label such as ``ber=0.001`` or ``sigma=0.2,unit=rel`` (first number)."""
    for part in str(level).split(","):
        _, _, value = part.partition("=")
        try:
            return float(value)
        except ValueError:
            continue
    return math.nan


def sort_levels(table: pd.DataFrame) -> pd.DataFrame:
    """Rows in reading order: per OOD dataset, evaluated set, corruption and scope, levels by value (ber=0
    before ber=0.001), whatever order the pairs came in (tables read back from CSV included)."""
    if table.empty or "level" not in table:
        return table
    values = table["level_value"] if "level_value" in table else table["level"].map(_level_number)
    keys = [k for k in ("ood_dataset", "role", "evaluated", "corruption", "scope") if k in table]
    out = table.assign(_v=values.astype(float)).sort_values([*keys, "_v", "level"], kind="stable")
    return out.drop(columns="_v").reset_index(drop=True)


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    if table.empty:
        return "(no paired cells)"
    return tables.markdown_table(human_table(table, metrics), ("ood_dataset", "evaluated", "corruption", "level"))


def metrics_of(table: pd.DataFrame) -> tuple[str, ...]:
    return tuple(c[: -len("_diff")] for c in table.columns if c.endswith("_diff"))


def human_table(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The before/after table as people read it (strings with arrows and intervals)."""
    table = sort_levels(table)
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


def best_step_text(sidecar: dict[str, Any]) -> str:
    """The validation outcome in words: ``step 0 = base (fine-tuning did not improve validation)`` when the
    best step is the base itself, else the best step and its value."""
    best = sidecar.get("best") or {}
    step = best.get("step")
    if step is None:
        return "no validation recorded"
    value = best.get("value")
    shown = f" ({float(value):.4g})" if isinstance(value, int | float) else ""
    if int(step) == 0:
        return f"step 0 = base{shown} (fine-tuning did not improve validation; the adapter is the base)"
    return f"step {int(step)}{shown}"


def adapters_table(groups: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per fine-tuned adapter: mode, objective, trained parameters, steps, best validation step in words
    (:func:`best_step_text`), frozen tensors unchanged, images used."""
    rows = []
    for g in groups:
        sc = g.get("sidecar") or {}
        data = sc.get("data") or {}
        frozen = sc.get("frozen") or {}
        rows.append(
            {
                "dataset": g.get("dataset"),
                "mode": sc.get("mode"),
                "objective": sc.get("objective"),
                "trainable / total params": f"{sc.get('trainable_parameters', 0):,} / "
                f"{sc.get('total_parameters', 0):,}",
                "steps run": sc.get("steps_run"),
                "best validation step": best_step_text(sc),
                "frozen tensors unchanged": frozen.get("sha256_before") == frozen.get("sha256_after"),
                "train images": (data.get("train") or {}).get("used_count"),
                "val images": (data.get("val") or {}).get("used_count"),
            }
        )
    return pd.DataFrame(rows)


def training_curves(groups: list[dict[str, Any]], run_dir: Path, out_dir: Path) -> list[Path]:
    """Training loss and validation metric against steps, one line per OOD dataset (PNG and SVG). The loss panel
    is drawn only when some adapter logged a training loss (otherwise the figure says so); the best validation
    step is marked, and a best step 0 is named as the base."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, vals = [], []
    for g in groups:
        train = Path(g["adapter_path"]).parent / "train"
        loss, val = train / "adapter" / "metrics.csv", train / "validation.csv"
        if loss.is_file():
            df = pd.read_csv(loss)
            if {"step", "loss"} <= set(df.columns) and df["loss"].notna().any():
                losses.append((g, df))
        if val.is_file():
            df = pd.read_csv(val)
            metric = next((c for c in df.columns if c not in ("step", "bpp")), None)
            if metric is not None and len(df):
                vals.append((g, df, metric))
    if not losses and not vals:
        return []
    panels = int(bool(losses)) + int(bool(vals))
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8), squeeze=False, layout="constrained")
    axes = list(axes.ravel())
    if losses:
        ax_loss = axes.pop(0)
        for g, df in losses:
            ax_loss.plot(df["step"], df["loss"], label=g["dataset"])
        ax_loss.set(xlabel="training step", ylabel="training loss", title="adapter training loss")
        ax_loss.grid(alpha=0.3)
        ax_loss.legend(fontsize=8)
    if vals:
        ax_val = axes.pop(0)
        words = []
        for g, df, metric in vals:
            line = ax_val.plot(df["step"], df[metric], marker="o", label=g["dataset"])[0]
            best = (g.get("sidecar") or {}).get("best") or {}
            if best.get("step") is not None and best.get("value") is not None:
                ax_val.plot([best["step"]], [best["value"]], marker="*", ms=12, color=line.get_color(), ls="none")
                words.append(f"{g['dataset']}: best {best_step_text(g.get('sidecar') or {})}")
            unit = tables.metric_unit(metric)
            ax_val.set_ylabel(f"validation {metric}{f' ({unit})' if unit else ''}")
        ax_val.set(xlabel="training step (0 = the base)", title="validation (val part); ★ best step")
        ax_val.grid(alpha=0.3)
        ax_val.legend(fontsize=8)
        if not losses:
            words.insert(0, "no training loss logged")
        if words:
            fig.supxlabel("\n".join(words), fontsize=8)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "ood_training_curves.png", out_dir / "ood_training_curves.svg"]
    for p in paths:
        fig.savefig(p, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return paths
