"""Summary tables of a run: failure rates with Wilson intervals, quality conditional on ``ok``.

Quality is never averaged over failures: a failed cell has no PSNR. The count each mean rests on is
printed beside it (METHODOLOGY.md §2, §7).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness.status import ALL_STATUSES, Status
from reports.impute import Imputation, imputed_values
from reports.stats import mean_interval, wilson_interval

GROUP = ["codec_label", "corruption", "scope", "level"]
#: Rows are also split by dataset and preprocessing policy (when the cells have those columns): a suite with
#: several datasets, or one dataset under several policies, gets separate rows, never a pooled mean.
DATA_KEYS = ["dataset", "preprocessing"]

#: Within this many dB of the clean decode, an ``ok`` corrupted decode counts as "degraded gracefully".
CLEAN_TOLERANCE_DB = 1.0


#: The failure-rate ceiling of the threshold table (METHODOLOGY.md: "keeps failure rate ≤ 1%").
THRESHOLD_FAILURE_RATE = 0.01


def _level_sort_key(params: str) -> tuple:
    return tuple(v if isinstance(v, int | float) else str(v) for v in json.loads(params).values())


def level_value(params: str | dict) -> float:
    """The number a level is plotted against: ``ber`` when the corruption has one, else the first ``sigma*``
    parameter, else the first numeric parameter (NaN when none)."""
    p = json.loads(params) if isinstance(params, str) else params
    for key in ["ber", *sorted(k for k in p if k.startswith("sigma")), *p]:
        v = p.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return math.nan


def level_axis(params: str | dict) -> str:
    """Name of the parameter :func:`level_value` picked (the x-axis label of plots)."""
    p = json.loads(params) if isinstance(params, str) else params
    for key in ["ber", *sorted(k for k in p if k.startswith("sigma")), *p]:
        if isinstance(p.get(key), int | float) and not isinstance(p.get(key), bool):
            return key
    return "level"


def varying_label(params: list[str | dict]) -> list[str]:
    """For levels that share a plotted parameter, a label of the other parameters whose values differ among
    them (e.g. ``mean_burst_bits=64``); empty strings when nothing else varies."""
    parsed = [json.loads(p) if isinstance(p, str) else p for p in params]
    if not parsed:
        return []
    axis = level_axis(parsed[0])
    keys = [k for k in parsed[0] if k != axis and len({json.dumps(p.get(k)) for p in parsed}) > 1]
    return [",".join(f"{k}={p.get(k)}" for k in keys) for p in parsed]


def series_of(params: str | dict) -> str:
    """The parameters of a level other than the plotted one (e.g. ``mean_burst_bits=64``): levels that share
    them form one line in plots and one walk in the threshold table."""
    p = json.loads(params) if isinstance(params, str) else params
    axis = level_axis(p)
    return ",".join(f"{k}={v}" for k, v in p.items() if k != axis)


def fec_label(fec: object) -> str:
    """A short label of a cell's FEC column (JSON in the store): 'none' without FEC."""
    value = json.loads(fec) if isinstance(fec, str) else fec
    if not value:
        return "none"
    return ",".join(f"{k}={v}" for k, v in sorted(value.items()))


def _data_keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in DATA_KEYS if k in frame]


def _groups(cells: pd.DataFrame) -> list[str]:
    return [*_data_keys(cells), *GROUP, *(["fec_label"] if "fec_label" in cells else [])]


def prepare(cells: pd.DataFrame) -> pd.DataFrame:
    """Derived columns every table uses: numeric level, FEC label (when the store has an FEC column)."""
    cells = cells.copy()
    cells["level_value"] = [level_value(p) for p in cells["params"]] if len(cells) else []
    if "fec" in cells:
        labels = [fec_label(f) for f in cells["fec"]]
        if any(label != "none" for label in labels):  # a FEC column only where some cell has FEC
            cells["fec_label"] = labels
    return cells


def _metric_stats(values: pd.Series) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of a metric over the cells that have a value (NaN = not computed)."""
    x = values.dropna().to_numpy(dtype=float)
    mean, lo, hi = mean_interval(x) if len(x) else (math.nan,) * 3
    return mean, lo, hi, len(x)


def summarise(
    cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), impute: tuple[Imputation, ...] = ()
) -> pd.DataFrame:
    """One row per (dataset, preprocessing, codec config, corruption, scope, level[, FEC]), numeric columns
    only (``dataset`` / ``preprocessing`` where the cells have them).

    Quality columns (``<metric>``, its interval and ``<metric>_n``) are over ``ok`` cells that have the
    metric; ``<metric>_drop`` is the mean of (clean decode's metric − corrupted decode's metric) over them.

    Each ``impute`` policy adds, per metric it applies to, a failure-imputed column over *all* cells
    (:mod:`reports.impute`): ``<metric>_impute_<policy>`` with its interval, ``_n`` (cells with a value),
    ``_imputed`` (failed cells given the policy's value) and ``_missing`` (failed cells it could not fill).
    Never part of the default table.
    """
    if cells.empty:
        return pd.DataFrame()
    cells = prepare(cells) if "level_value" not in cells else cells
    imputed_cols = []
    if impute:
        cells = cells.copy()
        for imp in impute:
            for m in metrics:
                if imp.applies_to(m):
                    col = imp.column(m)
                    cells[f"_imp.{col}"], cells[f"_impd.{col}"] = imputed_values(cells, m, imp)
                    imputed_cols.append(col)
    keys = _groups(cells)
    rows = []
    for group, g in cells.groupby(keys, sort=False, dropna=False):
        k = dict(zip(keys, group, strict=True))
        n = len(g)
        counts = {s.value: int((g["status"] == s.value).sum()) for s in ALL_STATUSES}
        failures = n - counts[Status.OK.value]
        lo, hi = wilson_interval(failures, n)
        row = {
            **{d: k[d] for d in _data_keys(cells)},
            "codec": k["codec_label"],
            "corruption": k["corruption"],
            "scope": k["scope"],
            "level": k["level"],
            **({"fec": k["fec_label"]} if "fec_label" in k else {}),
            "level_value": g["level_value"].iloc[0],
            "series": series_of(g["params"].iloc[0]),
            "params": g["params"].iloc[0],
            "_order": _level_sort_key(g["params"].iloc[0]),
            "images": g["image_sha256"].nunique(),
            "seeds": g["replicate"].nunique(),
            "cells": n,
            "bytes_total": g["bytes_total"].mean(),
            "bytes_header": g["bytes_header"].mean(),
            "bpp": g["bpp"].mean(),
            "header_bpp": g["header_bpp"].mean(),
            **({"fec_overhead_bpp": g["fec_overhead_bpp"].mean()} if "fec_overhead_bpp" in g else {}),
            "expected_flips": g["expected_flips"].mean(),
            "actual_flips": g["actual_flips"].mean(),
            "p_error_free": g["p_error_free"].mean(),
            **counts,
            "failure_rate": failures / n,
            "failure_ci_low": lo,
            "failure_ci_high": hi,
        }
        ok = g[g["status"] == Status.OK.value]
        row["n_ok"] = len(ok)
        for m in metrics:
            col = f"metric.{m}"
            mean, mlo, mhi, mn = _metric_stats(ok[col]) if col in ok else (math.nan, math.nan, math.nan, 0)
            row.update({m: mean, f"{m}_ci_low": mlo, f"{m}_ci_high": mhi, f"{m}_n": mn})
            if col in ok and f"metric.clean_{m}" in ok:
                drop = (ok[f"metric.clean_{m}"] - ok[col]).replace([np.inf, -np.inf], np.nan)
                dmean, dlo, dhi, _ = _metric_stats(drop)
            else:
                dmean = dlo = dhi = math.nan
            row.update({f"{m}_drop": dmean, f"{m}_drop_ci_low": dlo, f"{m}_drop_ci_high": dhi})
        for col in imputed_cols:
            imean, ilo, ihi, ini = _metric_stats(g[f"_imp.{col}"])
            n_imputed = int(g[f"_impd.{col}"].sum())
            row.update({col: imean, f"{col}_ci_low": ilo, f"{col}_ci_high": ihi, f"{col}_n": ini})
            row.update({f"{col}_imputed": n_imputed, f"{col}_missing": failures - n_imputed})
        if "psnr" in metrics and len(ok) and "metric.psnr" in ok:
            delta = ok["metric.clean_psnr"] - ok["metric.psnr"]
            row["within_1db_of_clean"] = float((delta <= CLEAN_TOLERANCE_DB).mean())
        else:
            row["within_1db_of_clean"] = math.nan
        rows.append(row)
    sort = [*_data_keys(cells), "codec", "corruption", "scope", *(["fec"] if "fec" in rows[0] else []), "_order"]
    table = pd.DataFrame(rows).sort_values(sort, kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def per_image(cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> pd.DataFrame:
    """One row per (dataset, image, codec config, corruption, scope, level): the per-image results any
    aggregate can be recomputed from (METHODOLOGY.md §7)."""
    if cells.empty:
        return pd.DataFrame()
    cells = prepare(cells) if "level_value" not in cells else cells
    keys = ["dataset", "image_id", "image_sha256", *(k for k in _groups(cells) if k != "dataset")]
    rows = []
    for group, g in cells.groupby(keys, sort=True, dropna=False):
        ok = g[g["status"] == Status.OK.value]
        row = dict(zip(keys, group, strict=True))
        row.update(
            {
                "level_value": g["level_value"].iloc[0],
                "cells": len(g),
                "n_ok": len(ok),
                "failure_rate": 1.0 - len(ok) / len(g),
                "statuses": ",".join(f"{k}:{v}" for k, v in sorted(g["status"].value_counts().items())),
                "bpp": g["bpp"].mean(),
            }
        )
        for m in metrics:
            col = f"metric.{m}"
            row[m] = ok[col].dropna().mean() if col in ok and ok[col].notna().any() else math.nan
            row[f"clean_{m}"] = (
                ok[f"metric.clean_{m}"].dropna().mean() if f"metric.clean_{m}" in ok and len(ok) else math.nan
            )
        rows.append(row)
    return pd.DataFrame(rows)


def curve_of(label: str) -> str:
    """Codec configurations labelled ``NAME@RATE`` form one rate–distortion curve, ``NAME``."""
    return label.split("@", 1)[0]


def rd_summary(cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> pd.DataFrame:
    """Rate–distortion points per dataset (and preprocessing policy): for each codec configuration, mean bpp
    and mean clean-decode quality over its images (each image once per decode seed), with intervals."""
    if cells.empty:
        return pd.DataFrame()
    rows = []
    data = _data_keys(cells) or ["dataset"]
    for group, g in cells.groupby([*data, "codec_label"], sort=True):
        label = group[-1]
        per_img = g.drop_duplicates(["image_sha256", "decode_seed"])
        row = {**dict(zip(data, group[:-1], strict=True)), "curve": curve_of(label), "codec": label}
        row["images"] = g["image_sha256"].nunique()
        row["bpp"], row["bpp_ci_low"], row["bpp_ci_high"] = mean_interval(per_img["bpp"].to_numpy())
        ok = g[g["status"] == Status.OK.value].drop_duplicates(["image_sha256", "decode_seed"])
        for m in metrics:
            col = f"metric.clean_{m}"
            mean, lo, hi, n = _metric_stats(ok[col]) if col in ok else (math.nan, math.nan, math.nan, 0)
            row.update({m: mean, f"{m}_ci_low": lo, f"{m}_ci_high": hi, f"{m}_n": n})
        rows.append(row)
    return pd.DataFrame(rows).sort_values([*data, "curve", "bpp"]).reset_index(drop=True)


def bd_rates(rd: pd.DataFrame, metric: str = "psnr", method: str = "pchip") -> pd.DataFrame:
    """BD-rate (%) of each curve against each other curve of the same dataset (``bjontegaard`` package,
    piecewise-cubic interpolation). Negative = fewer bits for the same quality. Rows only where both curves
    have at least two points and their quality ranges overlap; otherwise the row says why."""
    rows = []
    data = _data_keys(rd) or ["dataset"]
    columns = [*data, "anchor", "test", "metric", "bd_rate_pct", "note"]
    if rd.empty or metric not in rd:
        return pd.DataFrame(columns=columns)
    for group, d in rd.groupby(data, sort=True):
        curves = {c: g.dropna(subset=[metric]).sort_values("bpp") for c, g in d.groupby("curve", sort=True)}
        names = sorted(curves)
        for i, anchor in enumerate(names):
            for test in names[i + 1 :]:
                a, t = curves[anchor], curves[test]
                row = {**dict(zip(data, group, strict=True)), "anchor": anchor, "test": test, "metric": metric}
                lo = max(a[metric].min(), t[metric].min())
                hi = min(a[metric].max(), t[metric].max())
                if len(a) < 2 or len(t) < 2:
                    row.update(bd_rate_pct=math.nan, note="needs at least two rate points per curve")
                elif not (np.isfinite([lo, hi]).all() and hi > lo):
                    row.update(bd_rate_pct=math.nan, note="quality ranges do not overlap")
                else:
                    row.update(bd_rate_pct=bd_rate(a, t, metric, method), note=f"{method}, overlap {lo:.3g}–{hi:.3g}")
                rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def bd_rate(anchor: pd.DataFrame, test: pd.DataFrame, metric: str, method: str = "pchip") -> float:
    import warnings

    import bjontegaard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns on partial overlap; the note column reports it
        return float(
            bjontegaard.bd_rate(
                anchor["bpp"].to_numpy(),
                anchor[metric].to_numpy(),
                test["bpp"].to_numpy(),
                test[metric].to_numpy(),
                method=method,
                require_matching_points=False,
            )
        )


def threshold_table(summary: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """Per (codec, corruption, scope[, FEC]): the highest level, walking up from the lowest, before the first
    level where the failure rate exceeds 1% or the mean drop of ``metric`` from the clean decode exceeds
    1 dB (over ok cells). Point estimates decide; the Wilson interval and the drop's interval at the chosen
    level are printed beside it so a reader sees how much n supports it."""
    cols = [*_data_keys(summary), "codec", "corruption", "scope", *(["fec"] if "fec" in summary else []), "series"]
    rows = []
    if summary.empty:
        return pd.DataFrame()
    for key, g in summary.groupby(cols, sort=True):
        g = g.sort_values("level_value", kind="stable")
        passing, stop = None, None
        for r in g.to_dict("records"):
            drop = r.get(f"{metric}_drop", math.nan)
            why = []
            if r["failure_rate"] > THRESHOLD_FAILURE_RATE:
                why.append(f"failure {100 * r['failure_rate']:.1f}%")
            if r["n_ok"] == 0 or not math.isfinite(drop) or drop > CLEAN_TOLERANCE_DB:
                why.append(f"{metric} drop {drop:.2f}" if math.isfinite(drop) else f"no {metric} on ok cells")
            if why:
                stop = (r, "; ".join(why))
                break
            passing = r
        row = dict(zip(cols, key, strict=True))
        if passing is None:
            row.update(threshold_level="none (fails at the lowest level)", threshold_value=math.nan)
        else:
            row.update(
                threshold_level=passing["level"],
                threshold_value=passing["level_value"],
                cells=passing["cells"],
                failure_rate=passing["failure_rate"],
                failure_ci_high=passing["failure_ci_high"],
                drop=passing.get(f"{metric}_drop", math.nan),
                drop_ci_high=passing.get(f"{metric}_drop_ci_high", math.nan),
            )
        row["first_failing_level"] = stop[0]["level"] if stop else "none tested"
        row["why"] = stop[1] if stop else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_ci(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "inf" if mean == math.inf else "–"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def computed_metrics(table: pd.DataFrame, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The metrics that have at least one value (a metric whose weights were missing has none)."""
    return tuple(m for m in metrics if f"{m}_n" not in table or table[f"{m}_n"].sum() > 0)


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), impute: tuple[Imputation, ...] = ()) -> str:
    """A compact human table: failure % with its Wilson interval, quality mean ± CI half-width (ok only)."""
    if table.empty:
        return "(no cells)"
    return human_table(table, metrics, impute).to_markdown(index=False, disable_numparse=True)


def human_table(
    table: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), impute: tuple[Imputation, ...] = ()
) -> pd.DataFrame:
    """The rows of :func:`to_markdown` as text cells (also the HTML report's summary). Failure-imputed
    columns (only for the ``impute`` policies asked for) come last, headed with their policy."""
    shown = []
    present = [s.value for s in ALL_STATUSES if s is not Status.OK and table[s.value].sum() > 0]
    metrics = computed_metrics(table, metrics)
    # the dataset always (rows are per dataset); the preprocessing policy where some row has one
    data = [k for k in _data_keys(table) if k == "dataset" or (table[k].astype(str) != "none").any()]
    for r in table.to_dict("records"):
        row = {
            **{k: r[k] for k in data},
            "codec": r["codec"],
            "corruption": r["corruption"],
            "scope": r["scope"],
            "level": r["level"],
            **({"FEC": r["fec"]} if "fec" in r else {}),
            "images": r.get("images", ""),
            "seeds": r.get("seeds", ""),
            "cells": r["cells"],
            "bpp": f"{r['bpp']:.3f}",
            "header bpp": f"{r['header_bpp']:.4f}",
            **({"FEC bpp": f"{r['fec_overhead_bpp']:.3f}"} if "fec" in r and "fec_overhead_bpp" in r else {}),
            "E[flips]": f"{r['expected_flips']:.2f}",
            "P(no error)": f"{r['p_error_free']:.3f}",
            "fail % [95% CI]": f"{100 * r['failure_rate']:.1f} "
            f"[{100 * r['failure_ci_low']:.1f}, {100 * r['failure_ci_high']:.1f}]",
        }
        for s in present:
            row[s] = r[s]
        for m in metrics:
            digits = 2 if m.startswith("psnr") else 4
            row[f"{m} (ok)"] = _fmt_ci(r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"], digits)
        row["n ok"] = r["n_ok"]
        row["≤1 dB of clean"] = (
            "–" if not math.isfinite(r["within_1db_of_clean"]) else f"{100 * r['within_1db_of_clean']:.0f}%"
        )
        for imp in impute:
            for m in metrics:
                col = imp.column(m)
                if imp.applies_to(m) and col in r:
                    digits = 2 if m.startswith("psnr") else 4
                    text = _fmt_ci(r[col], r[f"{col}_ci_low"], r[f"{col}_ci_high"], digits)
                    missing = f", {r[f'{col}_missing']} not imputable" if r[f"{col}_missing"] else ""
                    row[imp.label(m)] = f"{text} (n {r[f'{col}_n']}, {r[f'{col}_imputed']} imputed{missing})"
        shown.append(row)
    return pd.DataFrame(shown)


def footer(cells: pd.DataFrame) -> str:
    return (
        f"{len(cells)} cells on {cells['image_sha256'].nunique()} images, "
        f"{cells['replicate'].nunique()} seed(s). Failure = any status but ok; intervals are 95% "
        "(Wilson for rates, Student t for means). Quality is over ok decodes only, n ok beside it; "
        "'≤1 dB of clean' is the share of ok decodes within 1 dB PSNR of the clean decode."
    )


def imputation_note(impute: tuple[Imputation, ...]) -> str:
    """The footnote that states each failure-imputation policy shown (empty when none)."""
    if not impute:
        return ""
    policies = "; ".join(imp.describe() for imp in impute)
    return (
        f"Failure-imputed columns (asked for; not the default summary, which is over ok decodes only): {policies}. "
        "Their values depend on the policy; read them with the failure rate."
    )


def not_computed_note(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    missing = [m for m in metrics if m not in computed_metrics(table, metrics)]
    if not missing:
        return ""
    return f"Not computed in this run (weights missing; see `evaluate.py metrics check`): {', '.join(missing)}."


def has_parquet() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def write_frame(frame: pd.DataFrame, path_csv: Path) -> list[Path]:
    """CSV always; Parquet beside it when pyarrow is installed. Returns the files written."""
    frame.to_csv(path_csv, index=False)
    written = [path_csv]
    if has_parquet() and not frame.empty:
        frame.to_parquet(path_csv.with_suffix(".parquet"), index=False)
        written.append(path_csv.with_suffix(".parquet"))
    return written


def write_summary(out_dir: Path, cells: pd.DataFrame, metrics: tuple[str, ...], title: str) -> str:
    """Write ``summary.csv`` (all numeric columns; ``.parquet`` too with pyarrow), ``per_image.csv`` and
    ``summary.md``; return the Markdown."""
    table = summarise(cells, metrics)
    write_frame(table, out_dir / "summary.csv")
    write_frame(per_image(cells, metrics), out_dir / "per_image.csv")
    note = not_computed_note(table, metrics)
    text = f"## {title}\n\n{to_markdown(table, metrics)}\n\n{footer(cells)}{' ' + note if note else ''}\n"
    (out_dir / "summary.md").write_text(text)
    return text
