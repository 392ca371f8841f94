"""Summary tables of a run: failure rates with Wilson intervals, quality conditional on ``ok``.

Quality is never averaged over failures: a failed cell has no PSNR. The count each mean rests on is
printed beside it (METHODOLOGY.md §2, §7).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from harness.status import ALL_STATUSES, Status
from reports.stats import mean_interval, wilson_interval

GROUP = ["codec_label", "corruption", "scope", "level"]

#: Within this many dB of the clean decode, an ``ok`` corrupted decode counts as "degraded gracefully".
CLEAN_TOLERANCE_DB = 1.0


def _level_sort_key(params: str) -> tuple:
    return tuple(v if isinstance(v, int | float) else str(v) for v in json.loads(params).values())


def summarise(cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> pd.DataFrame:
    """One row per (codec config, corruption, scope, level), numeric columns only."""
    rows = []
    for (codec, corruption, scope, level), g in cells.groupby(GROUP, sort=False):
        n = len(g)
        counts = {s.value: int((g["status"] == s.value).sum()) for s in ALL_STATUSES}
        failures = n - counts[Status.OK.value]
        lo, hi = wilson_interval(failures, n)
        row = {
            "codec": codec,
            "corruption": corruption,
            "scope": scope,
            "level": level,
            "_order": _level_sort_key(g["params"].iloc[0]),
            "images": g["image_sha256"].nunique(),
            "seeds": g["replicate"].nunique(),
            "cells": n,
            "bpp": g["bpp"].mean(),
            "header_bpp": g["header_bpp"].mean(),
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
            mean, mlo, mhi = mean_interval(ok[f"metric.{m}"].to_numpy()) if len(ok) else (math.nan,) * 3
            row.update({m: mean, f"{m}_ci_low": mlo, f"{m}_ci_high": mhi})
        if "psnr" in metrics and len(ok):
            delta = ok["metric.clean_psnr"] - ok["metric.psnr"]
            row["within_1db_of_clean"] = float((delta <= CLEAN_TOLERANCE_DB).mean())
        else:
            row["within_1db_of_clean"] = math.nan
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).sort_values(["codec", "corruption", "scope", "_order"], kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def _fmt_ci(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "inf" if mean == math.inf else "–"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> str:
    """A compact human table: failure % with its Wilson interval, quality mean ± CI half-width (ok only)."""
    if table.empty:
        return "(no cells)"
    shown = []
    present = [s.value for s in ALL_STATUSES if s is not Status.OK and table[s.value].sum() > 0]
    for r in table.to_dict("records"):
        row = {
            "codec": r["codec"],
            "corruption": r["corruption"],
            "scope": r["scope"],
            "level": r["level"],
            "cells": r["cells"],
            "bpp": f"{r['bpp']:.3f}",
            "E[flips]": f"{r['expected_flips']:.2f}",
            "P(no error)": f"{r['p_error_free']:.3f}",
            "fail % [95% CI]": f"{100 * r['failure_rate']:.1f} "
            f"[{100 * r['failure_ci_low']:.1f}, {100 * r['failure_ci_high']:.1f}]",
        }
        for s in present:
            row[s] = r[s]
        for m in metrics:
            row[f"{m} (ok)"] = _fmt_ci(r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"])
        row["n ok"] = r["n_ok"]
        row["≤1 dB of clean"] = (
            "–" if not math.isfinite(r["within_1db_of_clean"]) else f"{100 * r['within_1db_of_clean']:.0f}%"
        )
        shown.append(row)
    return pd.DataFrame(shown).to_markdown(index=False, disable_numparse=True)


def footer(cells: pd.DataFrame) -> str:
    return (
        f"{len(cells)} cells on {cells['image_sha256'].nunique()} images, "
        f"{cells['replicate'].nunique()} seed(s). Failure = any status but ok; intervals are 95% "
        "(Wilson for rates, Student t for means). Quality is over ok decodes only, n ok beside it; "
        "'≤1 dB of clean' is the share of ok decodes within 1 dB PSNR of the clean decode."
    )


def write_summary(out_dir: Path, cells: pd.DataFrame, metrics: tuple[str, ...], title: str) -> str:
    """Write ``summary.csv`` (all numeric columns) and ``summary.md``; return the Markdown."""
    table = summarise(cells, metrics)
    table.to_csv(out_dir / "summary.csv", index=False)
    text = f"## {title}\n\n{to_markdown(table, metrics)}\n\n{footer(cells)}\n"
    (out_dir / "summary.md").write_text(text)
    return text
