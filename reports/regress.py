"""Regression of a run's summary against a committed baseline (``reports/baselines/*.csv``).

The baseline holds the *regression view* of the summary table: one row per (dataset, preprocessing, codec
config, corruption, scope, level[, FEC]) and the columns below (a baseline written before rows were split by
dataset has no ``dataset`` / ``preprocessing`` columns and is compared on the keys it has). Tolerances:

- exact: counts (cells, images, seeds, every status, n ok, n per metric) and bytes (file, header);
- 1e-9 absolute: values derived from counts and bytes only (bpp, header bpp, failure rate, share within
  1 dB of clean), which are exact up to float formatting;
- metrics, absolute: 1e-3 for dB metrics (``psnr*``), 1e-4 for the others (SSIM, LPIPS, ...), enough for
  float32 torch kernels on another CPU, far below any real change;
- a row or column of the baseline missing from the run is a regression; new rows/columns are reported only.

Beside the baseline, ``<name>.libraries.json`` records the native library versions it was made with.
OpenJPEG versions decode corrupted streams differently (measured: 2.5.0 vs 2.5.4 differ in 66 values of the
``ci`` table), so there is one baseline per OpenJPEG version, ``<name>@openjpeg-<version>.csv`` beside
``<name>.csv``; :func:`select_baseline` picks the one made with the run's version, and a run compared with
another version's baseline gets a note naming both.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.status import ALL_STATUSES

KEYS = ["dataset", "preprocessing", "codec", "corruption", "scope", "level"]
EXACT = ["images", "seeds", "cells", *(s.value for s in ALL_STATUSES), "n_ok", "bytes_total", "bytes_header"]
DERIVED = ["bpp", "header_bpp", "failure_rate", "within_1db_of_clean"]
DERIVED_TOL = 1e-9
DB_TOL = 1e-3
OTHER_TOL = 1e-4


def tolerance(column: str) -> float:
    """Absolute tolerance of a column (0 = exact)."""
    if column in EXACT or column.endswith("_n"):
        return 0.0
    if column in DERIVED:
        return DERIVED_TOL
    return DB_TOL if column.startswith("psnr") else OTHER_TOL


def regression_view(summary: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The columns of ``summary`` that a baseline pins, in a stable order."""
    keys = [k for k in [*KEYS, "fec"] if k in summary]
    cols = [*keys, *EXACT, *DERIVED]
    for m in metrics:
        cols += [m, f"{m}_n"]
    view = summary[[c for c in cols if c in summary]].copy()
    return view.sort_values(keys, kind="stable").reset_index(drop=True)


def _same(a: object, b: object, tol: float) -> bool:
    try:
        x, y = float(a), float(b)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(a) == str(b)
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    if math.isinf(x) or math.isinf(y):
        return x == y
    return abs(x - y) <= tol


@dataclass
class Comparison:
    regressions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    compared_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.regressions

    def text(self) -> str:
        lines = [f"compared {self.compared_rows} rows"]
        lines += [f"REGRESSION {r}" for r in self.regressions]
        lines += [f"note       {n}" for n in self.notes]
        lines.append("OK: within tolerances" if self.ok else f"FAILED: {len(self.regressions)} difference(s)")
        return "\n".join(lines)


def compare(run: pd.DataFrame, baseline: pd.DataFrame) -> Comparison:
    keys = [k for k in [*KEYS, "fec"] if k in baseline]
    res = Comparison()
    missing_cols = [c for c in baseline.columns if c not in run.columns]
    for c in missing_cols:
        res.regressions.append(f"column {c!r} is in the baseline but not in the run")
    res.notes += [f"new column {c!r} (not in the baseline)" for c in run.columns if c not in baseline.columns]

    def index(frame: pd.DataFrame) -> dict[tuple, dict]:
        return {tuple(str(r[k]) for k in keys): r for r in frame.to_dict("records")}

    base, now = index(baseline), index(run)
    for key, brow in base.items():
        label = " | ".join(key)
        if key not in now:
            res.regressions.append(f"{label}: row missing from the run")
            continue
        res.compared_rows += 1
        rrow = now[key]
        for c in baseline.columns:
            if c in keys or c in missing_cols:
                continue
            tol = tolerance(c)
            if not _same(rrow[c], brow[c], tol):
                bound = "exact" if tol == 0 else f"tolerance {tol:g}"
                try:
                    delta = f", Δ {float(rrow[c]) - float(brow[c]):+.6g}"
                except (TypeError, ValueError):
                    delta = ""
                res.regressions.append(f"{label}: {c} {brow[c]!r} -> {rrow[c]!r} ({bound}{delta})")
    res.notes += [f"{' | '.join(k)}: new row (not in the baseline)" for k in now if k not in base]
    return res


def read_baseline(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=True)


def roundtrip(frame: pd.DataFrame) -> pd.DataFrame:
    """Through CSV text, so a fresh run compares the way a committed file reads back."""
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


#: Provenance keys whose change can legitimately change a codec's numbers, per codec name.
LIBRARY_KEYS = {"jpeg2000": ("openjpeg_version", "glymur_version")}


def libraries_of(provenance: dict[str, str], codecs: set[str] | None = None) -> dict[str, str]:
    """The native library versions a baseline depends on: those of the codecs in the run (all when ``codecs``
    is None). An RDEIC-only baseline records none, so it serves every OpenJPEG version."""
    keys = [k for codec, ks in LIBRARY_KEYS.items() if codecs is None or codec in codecs for k in ks]
    return {k: provenance[k] for k in keys if k in provenance}


def _libraries_path(baseline: Path) -> Path:
    return baseline.with_name(baseline.stem + ".libraries.json")


def write_libraries(baseline: Path, libraries: dict[str, str]) -> None:
    _libraries_path(baseline).write_text(json.dumps(libraries, indent=1, sort_keys=True) + "\n")


def library_notes(baseline: Path, libraries: dict[str, str]) -> list[str]:
    path = _libraries_path(baseline)
    if not path.is_file():
        return []
    then = json.loads(path.read_text())
    return [
        f"{k}: baseline made with {then.get(k)!r}, this run used {libraries.get(k)!r} (differences may come from it)"
        for k in sorted(set(then) | set(libraries))
        if then.get(k) != libraries.get(k)
    ]


def select_baseline(path: Path, libraries: dict[str, str]) -> Path:
    """``path`` when it was made with the run's OpenJPEG version (or records none), else its sibling
    ``<stem>@openjpeg-<version>.csv`` when that exists, else ``path`` (the comparison then notes why)."""
    recorded = _libraries_path(path)
    version = libraries.get("openjpeg_version")
    if not recorded.is_file() or json.loads(recorded.read_text()).get("openjpeg_version") == version:
        return path
    sibling = path.with_name(f"{path.stem.split('@')[0]}@openjpeg-{version}{path.suffix}")
    return sibling if sibling.is_file() else path


def same_libraries(baseline: Path, libraries: dict[str, str]) -> bool:
    """Whether ``baseline`` was made with the run's OpenJPEG version (True when it records none)."""
    recorded = _libraries_path(baseline)
    if not recorded.is_file():
        return True
    return json.loads(recorded.read_text()).get("openjpeg_version") == libraries.get("openjpeg_version")
