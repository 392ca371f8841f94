"""Figures of a run (matplotlib, Agg backend, each written as PNG and SVG).

- ``failure_rate``: failure rate vs level (log x for BER) with Wilson 95% bands, one line per codec, one
  panel per (corruption, scope).
- ``quality``: each metric vs level over ok decodes (mean with its 95% interval), clean decode dashed.
- ``status``: status composition per level (stacked bars), one panel per (codec, corruption, scope).
- ``rd``: rate–distortion points of the clean decodes per dataset.
- ``grid``: one image across levels per codec: original, clean decode, corrupted decodes (re-decoded, see
  :mod:`reports.redecode`), per-tile metrics in the titles.

Levels of 0 (the identity) cannot sit on a log axis: they are drawn at a stated position left of the
smallest positive level and the tick is labelled "0".
"""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.status import ALL_STATUSES
from reports.tables import level_axis, varying_label

STATUS_COLOURS = {
    "ok": "#4c9f70",
    "exception": "#e0a93b",
    "crash": "#c8553d",
    "timeout": "#7d4e9f",
    "invalid_output": "#3b6ea8",
    "fec_failure": "#8c8c8c",
}


def _lines(g: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """One line per codec config, FEC setting and value of any other level parameter that varies in ``g``
    (e.g. burst length); the label names only what varies."""
    g = g.assign(_line=varying_label(list(g["params"])))
    data = [k for k in ("dataset", "preprocessing") if k in g and g[k].nunique() > 1]
    keys = ["codec"] + [k for k in (*data, "fec", "_line") if k in g and g[k].nunique() > 1]
    out = []
    for key, c in g.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        label = str(key[0]) + "".join(f" [{v}]" for v in key[1:] if v)
        out.append((label, c.sort_values("level_value")))
    return out


def _short_labels(g: pd.DataFrame) -> list[str]:
    """Level labels naming only the parameters that vary within ``g`` (one per line)."""
    params = [json.loads(p) for p in g["params"]]
    varying = [k for k in params[0] if len({json.dumps(p.get(k)) for p in params}) > 1] or list(params[0])[:1]
    return [
        "\n".join(f"{k}={p.get(k):g}" if isinstance(p.get(k), float) else f"{k}={p.get(k)}" for k in varying)
        for p in params
    ]


def save(fig: plt.Figure, out_dir: Path, name: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    fig.savefig(paths[0], dpi=110, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _x_positions(values: pd.Series, axis_name: str = "") -> tuple[np.ndarray, bool, float | None]:
    """x for each level, whether the axis is logarithmic (always for BER, else when levels span a decade),
    and where level 0 was put (None: not needed)."""
    v = values.to_numpy(dtype=float)
    positive = v[v > 0]
    spans_decade = len(positive) >= 2 and positive.max() / positive.min() >= 10
    if len(positive) >= 1 and (axis_name == "ber" or spans_decade):
        zero_at = positive.min() / 10
        return np.where(v > 0, v, zero_at), True, zero_at
    return v, False, None


def _panels(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _finish_x(ax: plt.Axes, log: bool, zero_at: float | None, axis_name: str, levels: pd.Series) -> None:
    if log:
        ax.set_xscale("log")
        ticks = sorted({float(v) for v in levels if v > 0})
        ax.set_xticks(([zero_at] if zero_at is not None else []) + ticks)
        ax.set_xticklabels((["0"] if zero_at is not None else []) + [f"{t:g}" for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel(axis_name + (" (log axis; 0 drawn at left)" if log and zero_at else ""))
    ax.grid(alpha=0.3)


def failure_rate(summary: pd.DataFrame, default_axis: str, out_dir: Path) -> list[Path]:
    panels = list(summary.groupby(["corruption", "scope"], sort=True))
    fig, axes = _panels(len(panels))
    for ax, ((corruption, scope), g) in zip(axes, panels, strict=True):
        axis_name = level_axis(g["params"].iloc[0]) or default_axis
        for codec, c in _lines(g):
            x, log, zero_at = _x_positions(c["level_value"], axis_name)
            line = ax.plot(x, 100 * c["failure_rate"], marker="o", label=codec)[0]
            ax.fill_between(x, 100 * c["failure_ci_low"], 100 * c["failure_ci_high"], alpha=0.2, color=line.get_color())
        _finish_x(ax, log, zero_at, axis_name, g["level_value"])
        ax.set_ylim(-2, 102)
        ax.set_ylabel("failure rate % (Wilson 95%)")
        ax.set_title(f"{corruption}, scope {scope}")
        ax.legend(fontsize=8)
    fig.suptitle("Decode failures (any status but ok)")
    return save(fig, out_dir, "failure_rate")


def quality(summary: pd.DataFrame, metrics: tuple[str, ...], default_axis: str, out_dir: Path) -> list[Path]:
    panels = [(m, k, g) for m in metrics for k, g in summary.groupby(["corruption", "scope"], sort=True)]
    fig, axes = _panels(len(panels))
    for ax, (m, (corruption, scope), g) in zip(axes, panels, strict=True):
        axis_name = level_axis(g["params"].iloc[0]) or default_axis
        for codec, c in _lines(g):
            x, log, zero_at = _x_positions(c["level_value"], axis_name)
            mean = c[m].replace([np.inf, -np.inf], np.nan)
            line = ax.plot(x, mean, marker="o", label=f"{codec}")[0]
            ax.fill_between(x, c[f"{m}_ci_low"], c[f"{m}_ci_high"], alpha=0.2, color=line.get_color())
            if f"{m}_drop" in c:  # clean decode's level = corrupted mean + mean drop
                clean = mean + c[f"{m}_drop"]
                ax.plot(x, clean, ls="--", lw=1, color=line.get_color(), alpha=0.7)
        _finish_x(ax, log, zero_at, axis_name, g["level_value"])
        ax.set_ylabel(f"{m} over ok decodes (95% CI)")
        ax.set_title(f"{m}: {corruption}, scope {scope}", fontsize=10)
        ax.legend(fontsize=8, title="dashed: clean decode", title_fontsize=7)
    fig.suptitle("Quality conditional on ok (failures are not averaged in)")
    return save(fig, out_dir, "quality")


def status_composition(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    data = [k for k in ("dataset", "preprocessing") if k in summary and summary[k].nunique() > 1]
    panels = list(summary.groupby([*data, "codec", "corruption", "scope"], sort=True))
    fig, axes = _panels(len(panels))
    statuses = [s.value for s in ALL_STATUSES if s.value in summary and summary[s.value].sum() > 0]
    for ax, (key, g) in zip(axes, panels, strict=True):
        *where, codec, corruption, scope = key
        codec = " ".join([*map(str, where), str(codec)])
        g = g.sort_values("level_value")
        bottom = np.zeros(len(g))
        labels = _short_labels(g)
        for s in statuses:
            share = 100 * g[s].to_numpy() / g["cells"].to_numpy()
            ax.bar(labels, share, bottom=bottom, color=STATUS_COLOURS.get(s), label=s)
            bottom += share
        ax.set_ylabel("% of cells")
        ax.set_title(f"{codec}\n{corruption}, scope {scope}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Status of each decode")
    return save(fig, out_dir, "status")


def rd_curves(rd: pd.DataFrame, metrics: tuple[str, ...], out_dir: Path) -> list[Path]:
    data = [k for k in ("dataset", "preprocessing") if k in rd and (k == "dataset" or rd[k].nunique() > 1)]
    panels = [(m, " ".join(map(str, d)), g) for m in metrics for d, g in rd.groupby(data, sort=True)]
    fig, axes = _panels(len(panels))
    for ax, (m, dataset, g) in zip(axes, panels, strict=True):
        for curve, c in g.groupby("curve", sort=True):
            c = c.sort_values("bpp")
            ax.errorbar(
                c["bpp"],
                c[m],
                yerr=[c[m] - c[f"{m}_ci_low"], c[f"{m}_ci_high"] - c[m]],
                marker="o",
                capsize=3,
                label=curve,
            )
        ax.set_xlabel("bpp (8·file bytes / original pixels)")
        ax.set_ylabel(f"clean {m} (mean over images, 95% CI)")
        ax.set_title(f"{dataset}: {m}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Rate–distortion of the clean decodes")
    return save(fig, out_dir, "rd")


def visual_grid(rows: list[dict], out_dir: Path, name: str = "grid") -> list[Path]:
    """``rows``: one per codec: {"codec", "tiles": [(title, uint8 image or None, caption)]}. A None image is
    drawn as a labelled blank (a failed decode has no picture)."""
    n_cols = max(len(r["tiles"]) for r in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(2.6 * n_cols, 2.9 * len(rows)), squeeze=False, layout="constrained"
    )
    for i, r in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(r["tiles"]):
                ax.set_visible(False)
                continue
            title, image, caption = r["tiles"][j]
            shape = next((t[1].shape for t in r["tiles"] if t[1] is not None), (3, 4, 3))
            if image is None:
                ax.imshow(np.full(shape, 238, np.uint8))  # same size as the decodes: a blank, labelled tile
                text = textwrap.fill(caption, 22)
                ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, transform=ax.transAxes)
                caption = ""
            else:
                ax.imshow(image)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel(caption, fontsize=7)
            if j == 0:
                ax.set_ylabel(r["codec"], fontsize=8)
    fig.suptitle("The same image across corruption levels (metrics vs the original)", fontsize=10)
    return save(fig, out_dir, name)
