"""Figures of a run (matplotlib, Agg backend, each written as PNG and SVG).

- ``failure_rate``: failure rate vs level (log x for BER) with Wilson 95% bands, one line per codec, one
  panel per (corruption, scope).
- ``quality``: each metric vs level over ok decodes (mean; its 95% t band only where n ≥ :data:`MIN_BAND_N`,
  points with fewer values marked with their n), clean decode dotted; the y axis is clipped to the plotted
  values, never stretched by a wide band.
- ``status``: status composition per level (stacked bars), one panel per (codec, corruption, scope).
- ``rd``: rate–distortion points of the clean decodes per dataset (log bpp axis when the rates span a decade;
  lossless points left out and named).
- ``grid``: one image across levels per codec: original, clean decode, corrupted decodes (re-decoded, see
  :mod:`reports.redecode`), per-tile metrics in the titles.

Every codec configuration keeps one colour in every panel and figure (:func:`codec_colours`); legends sit
outside the panels; axes carry units (dB, bpp, a probability per bit).

Levels of 0 (the identity) cannot sit on a log axis: they are drawn at a stated position left of the
smallest positive level and the tick is labelled "0".
"""

from __future__ import annotations

import json
import math
import textwrap
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from harness.status import ALL_STATUSES
from reports.tables import axis_label, level_axis, metric_unit, varying_label

STATUS_COLOURS = {
    "ok": "#4c9f70",
    "exception": "#e0a93b",
    "crash": "#c8553d",
    "timeout": "#7d4e9f",
    "invalid_output": "#3b6ea8",
    "fec_failure": "#8c8c8c",
}

#: A quality point's t band is drawn only from this many values up (with n = 2 the 95% t interval is
#: ±12.7 standard errors: it says "too few", which the n beside the point says better).
MIN_BAND_N = 5

#: Up to this many lines per panel draw their interval as a band; with more, overlapping bands merge into one
#: opaque block, so each point gets an error bar instead, the lines dodged sideways (identical curves stay visible).
MAX_BANDS = 3
#: Sideways dodge between lines of one panel: a fraction of a decade on a log axis, of the level spacing otherwise.
DODGE = 0.035

#: Other parameters that vary within a panel (burst length, FEC, dataset) keep the codec's colour and change
#: the line style and marker.
STYLES = [("-", "o"), ("--", "s"), ("-.", "^"), ((0, (5, 1)), "D"), ((0, (3, 1, 1, 1, 1, 1)), "v"), ("-", "P")]
#: Where every decode of a point is lossless (no finite mean), the point is drawn at the top of the axis with this.
LOSSLESS_MARKER = "$\\infty$"
#: The clean decode's level in the quality figure (thin, dotted, no marker: never one of :data:`STYLES`).
CLEAN_STYLE = {"ls": ":", "lw": 1.0, "alpha": 0.7}


def codec_colours(labels: Iterable[str]) -> dict[str, str]:
    """One colour per codec label, stable (sorted labels) so the same run always gets the same colours."""
    names = sorted({str(label) for label in labels})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    n = 10 if len(names) <= 10 else 20
    colours = {}
    for i, name in enumerate(names):
        colours[name] = matplotlib.colors.to_hex(cmap(i % n) if i < n else plt.get_cmap("hsv")((i - n) / len(names)))
    return colours


def _variant_keys(frame: pd.DataFrame) -> list[str]:
    """Columns besides the codec that tell lines apart anywhere in ``frame`` (dataset, preprocessing, FEC, the
    decoder's side view): named in every panel, so one FEC setting or side view keeps one line style across the
    figure (bit errors decoded with the true and with a missing side view are two lines, not one)."""
    return [k for k in ("dataset", "preprocessing", "fec", "side") if k in frame and frame[k].nunique() > 1]


def _lines(g: pd.DataFrame, keys: list[str] | None = None) -> list[tuple[str, str, pd.DataFrame]]:
    """One line per codec config, ``keys`` value (:func:`_variant_keys`) and value of any other level parameter
    that varies in ``g`` (e.g. burst length): (codec, variant, rows). The variant names only what varies ("" when
    nothing does)."""
    g = g.assign(_line=varying_label(list(g["params"])))
    extra = [*(_variant_keys(g) if keys is None else keys), *(["_line"] if g["_line"].nunique() > 1 else [])]
    out = []
    for key, c in g.groupby(["codec", *extra], sort=True):
        key = key if isinstance(key, tuple) else (key,)
        names = [_variant_name(k, v) for k, v in zip(extra, key[1:], strict=True) if str(v)]
        out.append((str(key[0]), ", ".join(names), c.sort_values("level_value")))
    return out


def _variant_name(key: str, value: object) -> str:
    if key == "fec":
        return f"FEC {value}"
    if key == "side":
        return f"side: {value}"
    return str(value)


def _styles(panels: Iterable[pd.DataFrame], keys: list[str]) -> dict[str, tuple]:
    """Line style and marker per variant (FEC setting, burst length...), the same in every panel of a figure."""
    variants = sorted({variant for g in panels for _, variant, _ in _lines(g, keys)})
    return {v: STYLES[i % len(STYLES)] for i, v in enumerate(variants)}


def _short_labels(g: pd.DataFrame) -> list[str]:
    """Level labels naming only the parameters that vary within ``g`` (one per line)."""
    params = [json.loads(p) for p in g["params"]]
    # a single level is named by its plotted parameter (sigma=0.1), never by the first key (clamp_max=None)
    varying = [k for k in params[0] if len({json.dumps(p.get(k)) for p in params}) > 1] or [level_axis(params[0])]
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
        zero_at = positive.min() / 10 if (v == 0).any() else None
        return np.where(v > 0, v, zero_at if zero_at is not None else np.nan), True, zero_at
    return v, False, None


def _x_of(values: pd.Series, log: bool, zero_at: float | None) -> np.ndarray:
    """x of a line's levels on its panel's axis (level 0 at the panel's stated position on a log axis)."""
    v = values.to_numpy(dtype=float)
    return np.where(v > 0, v, zero_at) if log and zero_at is not None else v


def _panels(n: int) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.9 * rows), squeeze=False, layout="constrained")
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def tick_label(value: float, log: bool) -> str:
    """A level's tick: one format per axis. On a log axis every tick in the same short scientific form
    (``1e-5``, ``5e-3``, ``1e-1``; never ``1e-05`` beside ``0.0001``); otherwise ``:g``."""
    if not log or value == 0:
        return f"{value:g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _dodge(x: np.ndarray, i: int, k: int, log: bool) -> np.ndarray:
    """x of line ``i`` of ``k`` moved sideways by :data:`DODGE` (a log axis multiplies, a linear one adds a share of
    the smallest level spacing), centred on the true level, so identical lines do not hide each other."""
    if k <= 1 or not len(x):
        return x
    shift = (i - (k - 1) / 2) * DODGE
    if log:
        return x * 10**shift
    finite = np.unique(x[np.isfinite(x)])
    step = float(np.min(np.diff(finite))) if len(finite) > 1 else 1.0
    return x + shift * step


def _finish_x(ax: plt.Axes, log: bool, zero_at: float | None, name: str, levels: pd.Series) -> None:
    """Ticks at the levels, and the x label ``name`` (the parameter with the unit its corruption declares)."""
    if log:
        ax.set_xscale("log")
        ticks = sorted({float(v) for v in levels if v > 0})
        ax.set_xticks(([zero_at] if zero_at is not None else []) + ticks)
        ax.set_xticklabels((["0"] if zero_at is not None else []) + [tick_label(t, True) for t in ticks])
        ax.minorticks_off()
    n_ticks = len(ax.get_xticks())
    if n_ticks > 4:  # long labels such as 1e-05 collide from about five ticks up
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax.set_xlabel(name + (" (log axis; 0 drawn at left)" if log and zero_at else ""), fontsize=9)
    ax.grid(alpha=0.3)


def _figure_legend(
    fig: plt.Figure,
    colours: dict[str, str],
    styles: dict[str, tuple] | None = None,
    extra: list[tuple[object, str]] = (),
    title: str | None = None,
) -> None:
    """One legend for the whole figure, below the panels (outside every data area): one entry per codec (its
    colour), one per variant (its line style, in grey) when there are several, then ``extra`` entries. The
    figure grows by the legend's height, so the panels keep theirs."""
    from matplotlib.lines import Line2D

    entries: list[tuple[object, str]] = [(Line2D([], [], color=c, marker="o"), name) for name, c in colours.items()]
    if styles and (len(styles) > 1 or any(styles)):
        entries += [(Line2D([], [], color="0.4", ls=ls, marker=m), v or "(plain)") for v, (ls, m) in styles.items()]
    entries += list(extra)
    if not entries:
        return
    longest = max(len(label) for _, label in entries)
    width = fig.get_size_inches()[0]
    ncols = max(1, min(len(entries), int(width * 12 // max(longest + 5, 1)), 4))
    rows = math.ceil(len(entries) / ncols) + (1 if title else 0)
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + 0.24 * rows + 0.2)
    fig.legend(
        [e[0] for e in entries],
        [e[1] for e in entries],
        loc="outside lower center",
        ncols=ncols,
        fontsize=8,
        title=title,
        title_fontsize=8,
        frameon=False,
    )


def _used(colours: dict[str, str], codecs: Iterable[str]) -> dict[str, str]:
    present = {str(c) for c in codecs}
    return {k: v for k, v in colours.items() if k in present}


def _axes_entries(axes: list[plt.Axes]) -> list[tuple[object, str]]:
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    return [(h, label) for label, h in seen.items()]


def failure_rate(
    summary: pd.DataFrame, default_axis: str, out_dir: Path, colours: dict[str, str] | None = None
) -> list[Path]:
    colours = colours or codec_colours(summary["codec"])
    panels = list(summary.groupby(["corruption", "scope"], sort=True))
    # a panel earns its place by showing a comparison: flat 0 % panels are named in one line, not drawn
    flat = [f"{c}/{s}" for (c, s), g in panels if (g["failure_rate"] == 0).all()]
    shown = [p for p in panels if not (p[1]["failure_rate"] == 0).all()] or panels[:1]
    flat = [f for f in flat if f not in {f"{c}/{s}" for (c, s), _ in shown}]
    panels = shown
    keys = _variant_keys(summary)
    styles = _styles((g for _, g in panels), keys)
    fig, axes = _panels(len(panels))
    for ax, ((corruption, scope), g) in zip(axes, panels, strict=True):
        axis_name = level_axis(g["params"].iloc[0]) or default_axis
        _, log, zero_at = _x_positions(g["level_value"], axis_name)
        lines = _lines(g, keys)
        bands = len(lines) <= MAX_BANDS
        for i, (codec, variant, c) in enumerate(lines):
            x = _dodge(_x_of(c["level_value"], log, zero_at), i, len(lines), log)
            ls, marker = styles[variant]
            colour = colours.get(codec)
            label = codec + (f" [{variant}]" if variant else "")
            rate, lo, hi = (
                100 * c[k].to_numpy(dtype=float) for k in ("failure_rate", "failure_ci_low", "failure_ci_high")
            )
            if bands:
                ax.plot(x, rate, marker=marker, ls=ls, color=colour, label=label)
                ax.fill_between(x, lo, hi, alpha=0.15, color=colour)
            else:  # many lines: a faint interval bar per point, lines dodged, so neither bands nor curves hide
                ax.plot(x, rate, marker=marker, ms=4, ls=ls, lw=1.2, color=colour, label=label)
                ax.vlines(x, lo, hi, color=colour, lw=0.8, alpha=0.35)
        _finish_x(ax, log, zero_at, axis_label(str(corruption), g["params"].iloc[0]), g["level_value"])
        ax.set_ylim(-2, 102)
        ax.set_ylabel(f"failure rate (%, Wilson 95% {'band' if bands else 'interval'})", fontsize=9)
        ax.set_title(f"{corruption}, scope {scope}", fontsize=10)
    _figure_legend(fig, _used(colours, summary["codec"]), styles)
    title = "Decode failures (any status but ok)"
    if flat:
        title += "\n" + textwrap.shorten("no failure at any level (not drawn): " + ", ".join(flat), 160)
    fig.suptitle(title, fontsize=11 if flat else None)
    return save(fig, out_dir, "failure_rate")


def _y_limits(values: list[float]) -> tuple[float, float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return None
    lo, hi = float(v.min()), float(v.max())
    pad = max((hi - lo) * 0.08, 0.05 * max(abs(hi), 1e-3), 1e-3)
    return lo - pad, hi + pad


def quality(
    summary: pd.DataFrame,
    metrics: tuple[str, ...],
    default_axis: str,
    out_dir: Path,
    colours: dict[str, str] | None = None,
) -> list[Path]:
    colours = colours or codec_colours(summary["codec"])
    panels = [(m, k, g) for m in metrics for k, g in summary.groupby(["corruption", "scope"], sort=True)]
    keys = _variant_keys(summary)
    styles = _styles((g for _, _, g in panels), keys)
    fig, axes = _panels(len(panels))
    small_n = hollow = any_lossless = False
    plotted_of: dict[str, list[float]] = {}  # per metric, over every panel: one y range for one metric
    for ax, (m, (corruption, scope), g) in zip(axes, panels, strict=True):
        axis_name = level_axis(g["params"].iloc[0]) or default_axis
        _, log, zero_at = _x_positions(g["level_value"], axis_name)
        plotted = plotted_of.setdefault(m, [])
        lossless: list[tuple[float, str]] = []
        lines = _lines(g, keys)
        for i, (codec, variant, c) in enumerate(lines):
            x = _dodge(_x_of(c["level_value"], log, zero_at), i, len(lines), log)
            ls, marker = styles[variant]
            colour = colours.get(codec)
            label = codec + (f" [{variant}]" if variant else "")
            raw = c[m].to_numpy(dtype=float)
            mean = np.where(np.isfinite(raw), raw, np.nan)
            n = c[f"{m}_n"].to_numpy() if f"{m}_n" in c else np.full(len(c), MIN_BAND_N)
            ax.plot(x, mean, marker=marker, ls=ls, color=colour, label=label)
            band = (n >= MIN_BAND_N) & np.isfinite(mean)
            lo = np.where(band, c[f"{m}_ci_low"].to_numpy(dtype=float), np.nan)
            hi = np.where(band, c[f"{m}_ci_high"].to_numpy(dtype=float), np.nan)
            ax.fill_between(x, lo, hi, alpha=0.15, color=colour)
            plotted += list(mean)
            few = np.isfinite(mean) & (n > 0) & (n < MIN_BAND_N)
            if len(lines) <= MAX_BANDS:  # a few lines: n written beside each such point
                for xi, yi, ni in zip(x[few], mean[few], n[few], strict=True):
                    small_n = True
                    offset = {"textcoords": "offset points", "xytext": (3, 4)}
                    ax.annotate(f"n={int(ni)}", (xi, yi), fontsize=6, color=colour, **offset)
            elif few.any():  # many lines: labels would pile up; such points are hollow (n in the tables)
                hollow = True
                ax.plot(x[few], mean[few], ls="none", marker=marker, ms=7, mfc="white", mec=colour, zorder=3)
            lossless += [(xi, colour) for xi, r in zip(x, raw, strict=True) if r == math.inf]
            if f"{m}_drop" in c:  # clean decode's level = corrupted mean + mean drop
                drop = c[f"{m}_drop"].to_numpy(dtype=float)
                clean = np.where(np.isfinite(drop), mean + drop, np.nan)
                ax.plot(x, clean, color=colour, **CLEAN_STYLE)
                plotted += list(clean)
        any_lossless = any_lossless or bool(lossless)
        for xi, colour in lossless:  # all decodes lossless: no finite mean, marked at the top
            ax.plot(
                [xi],
                [1.0],
                marker=LOSSLESS_MARKER,
                ms=9,
                color=colour,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        _finish_x(ax, log, zero_at, axis_label(str(corruption), g["params"].iloc[0]), g["level_value"])
        unit = metric_unit(m)
        ax.set_ylabel(f"{m}{f' ({unit})' if unit else ''}, mean over ok decodes", fontsize=9)
        ax.set_title(f"{m}: {corruption}, scope {scope}", fontsize=10)
    for ax, (m, _, _) in zip(axes, panels, strict=True):
        limits = _y_limits(plotted_of[m])
        if limits:
            ax.set_ylim(*limits)
    from matplotlib.lines import Line2D

    extra = [(Line2D([], [], color="0.4", **CLEAN_STYLE), "clean decode (corrupted mean + mean drop)")]
    if hollow:
        entry = Line2D([], [], color="0.4", marker="o", mfc="white", ls="none")
        extra.append((entry, f"hollow: fewer than {MIN_BAND_N} ok decodes (no band; n in the tables)"))
    if any_lossless:
        lossless_entry = Line2D([], [], color="0.4", marker=LOSSLESS_MARKER, ms=9, ls="none")
        extra.append((lossless_entry, "every decode lossless (PSNR = inf), at the top"))
    title = f"band: 95% t interval where n ≥ {MIN_BAND_N}" + ("; n=k beside points with fewer" if small_n else "")
    _figure_legend(fig, _used(colours, summary["codec"]), styles, extra, title)
    fig.suptitle("Quality conditional on ok (failures are not averaged in)")
    return save(fig, out_dir, "quality")


def status_composition(summary: pd.DataFrame, out_dir: Path) -> list[Path]:
    data = [k for k in ("dataset", "preprocessing") if k in summary and summary[k].nunique() > 1]
    variants = [k for k in ("fec", "side") if k in summary and summary[k].nunique() > 1]
    panels = list(summary.groupby([*data, "codec", "corruption", "scope", *variants], sort=True))
    fig, axes = _panels(len(panels))
    statuses = [s.value for s in ALL_STATUSES if s.value in summary and summary[s.value].sum() > 0]
    for ax, (key, g) in zip(axes, panels, strict=True):
        key = list(key)
        values = [key.pop() for _ in variants][::-1]
        *where, codec, corruption, scope = key
        scope = ", ".join([str(scope), *(_variant_name(k, v) for k, v in zip(variants, values, strict=True))])
        codec = " ".join([*map(str, where), str(codec)])
        g = g.sort_values("level_value")
        bottom = np.zeros(len(g))
        labels = _short_labels(g)
        positions = np.arange(len(g))
        for s in statuses:
            share = 100 * g[s].to_numpy() / g["cells"].to_numpy()
            ax.bar(positions, share, bottom=bottom, color=STATUS_COLOURS.get(s), label=s)
            bottom += share
        ax.set_xticks(positions)
        ax.set_xticklabels(labels, fontsize=7, rotation=45 if len(g) > 4 else 0, ha="right" if len(g) > 4 else "center")
        ax.set_ylabel("% of cells", fontsize=9)
        ax.set_title("\n".join(textwrap.wrap(f"{codec}: {corruption}, scope {scope}", 48)), fontsize=9)
    from matplotlib.patches import Patch

    status_entries = [(Patch(color=STATUS_COLOURS.get(s)), s) for s in statuses]
    _figure_legend(fig, {}, None, status_entries)
    fig.suptitle("Status of each decode")
    return save(fig, out_dir, "status")


def rd_curves(
    rd: pd.DataFrame,
    metrics: tuple[str, ...],
    out_dir: Path,
    colours: dict[str, str] | None = None,
    bounds: Iterable[str] = (),
) -> list[Path]:
    """Rate–distortion of the clean decodes, one panel per (metric, dataset). ``bounds``: codec labels that are
    reference bounds, not codecs (the VAE-only row: no compression, ~5 bpp): drawn as a horizontal reference line
    at their quality, so their rate does not squash every real codec into one smear. Intervals are drawn only
    for points resting on at least :data:`MIN_BAND_N` images (a t interval from 2–3 images spans tens of dB);
    the axis is clipped to the plotted means."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    colours = colours or codec_colours(rd["codec"])
    bounds = {str(b) for b in bounds}
    data = [k for k in ("dataset", "preprocessing") if k in rd and (k == "dataset" or rd[k].nunique() > 1)]
    panels = [(m, " ".join(map(str, d)), g) for m in metrics for d, g in rd.groupby(data, sort=True)]
    fig, axes = _panels(len(panels))
    small_n = False
    for ax, (m, dataset, g) in zip(axes, panels, strict=True):
        finite = g[np.isfinite(g[m].to_numpy(dtype=float))]
        left_out = g[g[m].map(lambda v: v == math.inf)]
        is_bound = finite["codec"].astype(str).isin(bounds)
        plotted = list(finite[m].to_numpy(dtype=float))
        for curve, c in finite[~is_bound].groupby("curve", sort=True):
            c = c.sort_values("bpp")
            n_img = c["images"].to_numpy() if "images" in c else np.full(len(c), MIN_BAND_N)
            wide = n_img >= MIN_BAND_N
            lo = np.where(wide, c[m] - c[f"{m}_ci_low"], 0.0)
            hi = np.where(wide, c[f"{m}_ci_high"] - c[m], 0.0)
            small_n |= bool((~wide).any())
            colour = colours.get(str(c["codec"].iloc[0]))  # the curve's lowest-rate configuration
            n = "/".join(sorted({str(int(v)) for v in n_img})) if "images" in c else "?"
            label = f"{curve} (n {n} images)"
            ax.errorbar(c["bpp"], c[m], yerr=np.nan_to_num(np.vstack([lo, hi])), marker="o", capsize=3,
                        color=colour, label=label)  # fmt: skip
        for r in finite[is_bound].to_dict("records"):
            colour = colours.get(str(r["codec"]), "0.3")
            ax.axhline(r[m], ls="--", lw=1.0, color=colour,
                       label=f"{r['codec']}: bound at {r['bpp']:.2f} bpp (not to scale)")  # fmt: skip
        bpp = finite.loc[~is_bound, "bpp"].to_numpy(dtype=float)
        bpp = bpp[np.isfinite(bpp) & (bpp > 0)]
        if len(bpp) >= 2 and bpp.max() / bpp.min() >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10))
            ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
            plain = FuncFormatter(lambda v, _: f"{v:g}")
            ax.xaxis.set_major_formatter(plain)
            ax.xaxis.set_minor_formatter(plain if bpp.max() / bpp.min() < 100 else NullFormatter())
        limits = _y_limits(plotted)
        if limits:
            ax.set_ylim(*limits)
        ax.set_xlabel("bpp (bits per original pixel; 8·file bytes / pixels)", fontsize=9)
        unit = metric_unit(m)
        ax.set_ylabel(f"clean {m}{f' ({unit})' if unit else ''}, mean over images", fontsize=9)
        title = f"{dataset}: {m}"
        if len(left_out):
            title += "\nlossless (not drawn): " + ", ".join(map(str, left_out["codec"]))
        ax.set_title("\n".join(textwrap.wrap(title, 60, replace_whitespace=False)), fontsize=9)
        ax.grid(alpha=0.3, which="both")
    legend_title = f"bars: 95% t interval where n ≥ {MIN_BAND_N} images" + ("; points alone below" if small_n else "")
    _figure_legend(fig, {}, None, _axes_entries(axes), legend_title)
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
                ax.set_ylabel("\n".join(textwrap.wrap(str(r["codec"]), 24)), fontsize=8)
    fig.suptitle("The same image across corruption levels (metrics vs the original)", fontsize=10)
    return save(fig, out_dir, name)
