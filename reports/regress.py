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

A baseline that cannot be compared with the run at all is a user error (:class:`BaselineError`, one line, exit 2
through the CLI), not a regression: a missing, unreadable or empty file, one without the key columns
(``codec``, ``corruption``, ``scope``, ``level``), one with columns no regression view has (e.g. a run's
``summary.csv``), and one made from another suite: its rows are keyed by a column the run lacks (``fec``) or none
of its rows is in the run. :func:`fit_problem` says which, and :func:`fitting_baselines` finds the baselines
beside it that would fit.
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
#: Key columns a summary has only where some cell needs them: a FEC layer, a side view crossed with bit errors.
VARIANT_KEYS = ["fec", "side"]
#: Key columns every baseline has (``dataset`` / ``preprocessing`` / ``fec`` / ``side`` only where the suite had them).
REQUIRED_KEYS = ["codec", "corruption", "scope", "level"]
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
    keys = [k for k in [*KEYS, *VARIANT_KEYS] if k in summary]
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
    keys = [k for k in [*KEYS, *VARIANT_KEYS] if k in baseline]
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


class BaselineError(ValueError):
    """A baseline that cannot be compared with a run (missing, unreadable, not a baseline, another suite's).
    The message is one line: what is wrong and what to do; ``reason`` is the short cause alone, and
    ``replaceable`` says whether ``--update`` may overwrite the file (nothing in it could be lost)."""

    def __init__(self, message: str, reason: str = "", replaceable: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.replaceable = replaceable


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:160] if text else type(exc).__name__).rstrip(".")


def read_baseline(path: Path) -> pd.DataFrame:
    """The baseline table; :class:`BaselineError` when there is none at ``path`` or it is not a baseline."""
    path = Path(path)
    if path.is_dir():
        raise BaselineError(f"baseline {path} is a directory; give the CSV file, e.g. {path / 'ci.csv'}", "a directory")
    if not path.is_file():
        raise BaselineError(f"no baseline at {path} (create it from a run with --update)", "missing", True)
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, ValueError) as exc:  # pandas' ParserError / EmptyDataError, UnicodeDecodeError
        reason = f"not a readable CSV table: {_first_line(exc)}"
        raise BaselineError(
            f"baseline {path} is {reason}; restore it (git checkout -- {path}) or write it again from a run with "
            "--update",
            reason,
        ) from None
    missing = [k for k in REQUIRED_KEYS if k not in frame.columns]
    if missing:
        cols = ", ".join(map(str, frame.columns[:6])) + (", ..." if len(frame.columns) > 6 else "")
        reason = f"it lacks the key column(s) {', '.join(missing)}; its columns: {cols or 'none'}"
        raise BaselineError(
            f"{path} is not a regression baseline ({reason}); write one with "
            f"`evaluate.py regress RUN_DIR --baseline {path} --update`",
            reason,
        )
    if frame.empty:
        raise BaselineError(f"baseline {path} has no rows; write it again from a run with --update", "no rows", True)
    return frame


def _values(frame: pd.DataFrame, column: str, n: int = 3) -> str:
    vals = list(dict.fromkeys(map(str, frame[column]))) if column in frame else []
    more = f" (+{len(vals) - n} more)" if len(vals) > n else ""
    return ", ".join(vals[:n]) + more if vals else "none"


def _metric_like(column: str, columns: set[str]) -> bool:
    """A metric column (``m`` beside ``m_n``, or ``m_n`` itself): its absence from a run is a regression."""
    return f"{column}_n" in columns or (column.endswith("_n") and column[:-2] in columns)


def fit_problem(run: pd.DataFrame, baseline: pd.DataFrame) -> str | None:
    """Why ``baseline`` cannot be compared with the ``run``'s regression view at all (None when it can): its rows
    are keyed by a column the run lacks, it has columns no regression view has, or none of its rows is in the
    run. A few missing rows or metric columns are regressions instead, reported by :func:`compare`."""
    keys = [k for k in [*KEYS, *VARIANT_KEYS] if k in baseline]
    absent = [k for k in keys if k not in run]
    if absent:
        have = ", ".join(k for k in [*KEYS, *VARIANT_KEYS] if k in run)
        return (
            f"the baseline keys its rows by {', '.join(absent)}, which this run's table does not have "
            f"(its keys: {have})"
        )
    split = [k for k in [*KEYS, *VARIANT_KEYS] if k in run and k not in baseline]
    if split and run.duplicated(subset=keys).any():
        k = split[0]
        return (
            f"this run splits its rows by {k} ({_values(run, k)}), which the baseline does not: its rows "
            f"would be compared with the wrong ones"
        )
    columns = set(map(str, baseline.columns))
    known = {*KEYS, *VARIANT_KEYS, *EXACT, *DERIVED, *map(str, run.columns)}
    foreign = [c for c in map(str, baseline.columns) if c not in known and not _metric_like(c, columns)]
    if foreign:
        more = f" and {len(foreign) - 4} more" if len(foreign) > 4 else ""
        return (
            f"it has columns no regression baseline has ({', '.join(foreign[:4])}{more}), as a run's summary.csv "
            "does (baselines are written by --update)"
        )

    def rows(frame: pd.DataFrame) -> set[tuple[str, ...]]:
        return {tuple(str(r[k]) for k in keys) for r in frame[keys].to_dict("records")}

    if not rows(baseline) & rows(run):
        return (
            f"none of its {len(baseline)} rows is in this run: the baseline has codecs {_values(baseline, 'codec')} "
            f"and corruptions {_values(baseline, 'corruption')}, the run has codecs {_values(run, 'codec')} and "
            f"corruptions {_values(run, 'corruption')}"
        )
    return None


def fitting_baselines(run: pd.DataFrame, path: Path) -> list[Path]:
    """The other baselines in ``path``'s folder that the run could be compared with."""
    out = []
    for other in sorted(Path(path).parent.glob("*.csv")):
        if other.resolve() == Path(path).resolve():
            continue
        try:
            if fit_problem(run, read_baseline(other)) is None:
                out.append(other)
        except BaselineError:
            continue
    return out


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


def _recorded_libraries(baseline: Path) -> dict[str, str] | None:
    """The libraries a baseline records (None without a sidecar); a garbled sidecar is a BaselineError."""
    path = _libraries_path(baseline)
    if not path.is_file():
        return None
    try:
        then = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BaselineError(
            f"{path} (the library versions of baseline {baseline.name}) is not valid JSON ({_first_line(exc)}); "
            f"restore it (git checkout -- {path}) or write the baseline again with --update"
        ) from None
    if not isinstance(then, dict):
        raise BaselineError(f"{path} should hold a JSON object of library versions; write the baseline again")
    return then


def library_notes(baseline: Path, libraries: dict[str, str]) -> list[str]:
    then = _recorded_libraries(baseline)
    if then is None:
        return []
    return [
        f"{k}: baseline made with {then.get(k)!r}, this run used {libraries.get(k)!r} (differences may come from it)"
        for k in sorted(set(then) | set(libraries))
        if then.get(k) != libraries.get(k)
    ]


def select_baseline(path: Path, libraries: dict[str, str]) -> Path:
    """``path`` when it was made with the run's OpenJPEG version (or records none), else its sibling
    ``<stem>@openjpeg-<version>.csv`` when that exists, else ``path`` (the comparison then notes why)."""
    recorded = _recorded_libraries(path)
    version = libraries.get("openjpeg_version")
    if recorded is None or recorded.get("openjpeg_version") == version:
        return path
    sibling = path.with_name(f"{path.stem.split('@')[0]}@openjpeg-{version}{path.suffix}")
    return sibling if sibling.is_file() else path


def same_libraries(baseline: Path, libraries: dict[str, str]) -> bool:
    """Whether ``baseline`` was made with the run's OpenJPEG version (True when it records none)."""
    recorded = _recorded_libraries(baseline)
    if recorded is None:
        return True
    return recorded.get("openjpeg_version") == libraries.get("openjpeg_version")
