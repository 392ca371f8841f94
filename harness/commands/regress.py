"""``evaluate.py regress RUN_DIR --baseline reports/baselines/ci.csv [--update]``: compare the run's summary
with a committed baseline within the tolerances of :mod:`reports.regress`; exit 1 on a regression.
``--update`` rewrites the baseline from the run (an explicit act) and prints what changed.

Exit codes: 0 within tolerances (or baseline written), 1 a regression, 2 a user error in one line: no run
directory or results store there, a store this harness cannot read, no cells, a missing or unreadable baseline,
or a baseline that does not fit the run (another suite's, or not a baseline at all: it names what the baseline
has, what the run has, and the baselines beside it that fit). ``--update`` refuses to overwrite a baseline of
another suite (delete it first or name a new file): a committed baseline is never replaced by mistake.
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory (holds results.sqlite)")
    parser.add_argument("--baseline", type=Path, required=True, help="baseline CSV, e.g. reports/baselines/ci.csv")
    parser.add_argument("--update", action="store_true", help="rewrite the baseline from this run, show the diff")


def _read_run(run_dir: Path):
    """(cells, provenance) of a run directory; UsageError (one line) when there is no readable store."""
    from harness.cli import UsageError
    from harness.store import ResultStore

    db = run_dir / "results.sqlite"
    if not run_dir.exists():
        raise UsageError(f"no run directory {run_dir} (give the --out folder of a suite run)")
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is a file; give the run directory that holds results.sqlite")
    if not db.is_file():
        raise UsageError(
            f"{run_dir} has no results.sqlite: not a run directory, or its run stopped before any cell "
            f"(run a suite with --out {run_dir})"
        )
    try:
        store = ResultStore(db)
    except (sqlite3.Error, RuntimeError, OSError) as exc:  # not SQLite, another schema version, unreadable
        raise UsageError(f"{db} cannot be read as a results store ({exc}); run the suite again") from None
    try:
        cells, prov = store.cells_frame(), store.provenance()
    except (sqlite3.Error, ValueError, KeyError) as exc:
        raise UsageError(f"{db} cannot be read as a results store ({exc}); run the suite again") from None
    finally:
        store.close()
    if cells.empty:
        raise UsageError(f"{run_dir}: no cells in the results store (run the suite to completion first)")
    return cells, prov


def mismatch_message(view, path: Path, run_dir: Path, suite: str | None, problem: str, update: bool = False) -> str:
    """One line: the baseline does not fit the run, why, and which baseline would (or, for ``--update``, that
    it is not overwritten)."""
    from harness.config import suite_names
    from reports import regress

    named = path.stem.split("@")[0]
    try:
        known = set(suite_names())
    except Exception:
        known = set()
    hint = f" (named after suite {named!r})" if named in known and named != suite else ""
    target = path.parent / f"{suite or 'NAME'}.csv"
    if update:
        fix = f"--update will not overwrite another suite's baseline: delete it first, or name a new file ({target})"
    elif fits := regress.fitting_baselines(view, path):
        fix = (
            f"use {fits[0]}, which fits this run"
            if len(fits) == 1
            else (f"use one of {', '.join(map(str, fits[:3]))}, which fit this run")
        )
    else:
        fix = f"give the baseline of this run's suite, or write one with --baseline {target} --update"
    return f"baseline {path}{hint} does not fit run {run_dir} (suite {suite or '?'!r}): {problem}; {fix}"


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from reports import regress, tables
    from reports.report import run_metrics

    cells, prov = _read_run(args.run_dir)
    suite = prov.get("suite_name")
    metrics = run_metrics(cells, prov)
    view = regress.roundtrip(regress.regression_view(tables.summarise(tables.prepare(cells), metrics), metrics))
    libraries = regress.libraries_of(prov, set(cells["codec"]))
    try:
        if args.update:
            try:
                old = regress.read_baseline(args.baseline)
            except regress.BaselineError as exc:
                if not exc.replaceable:
                    raise UsageError(
                        f"{args.baseline} is not a baseline ({exc.reason}); --update will not overwrite it: delete "
                        "it first, or name a new file"
                    ) from None
                old = None
            if old is not None:
                problem = regress.fit_problem(view, old)
                if problem:
                    raise UsageError(mismatch_message(view, args.baseline, args.run_dir, suite, problem, update=True))
                print(regress.compare(view, old).text())
            else:
                print(f"new baseline ({len(view)} rows)")
            try:
                args.baseline.parent.mkdir(parents=True, exist_ok=True)
                view.to_csv(args.baseline, index=False)
                regress.write_libraries(args.baseline, libraries)
            except OSError as exc:
                raise UsageError(f"cannot write the baseline {args.baseline}: {exc.strerror or exc}") from None
            print(f"baseline rewritten: {args.baseline}")
            return 0
        baseline = regress.select_baseline(args.baseline, libraries) if args.baseline.is_file() else args.baseline
        table = regress.read_baseline(baseline)
        problem = regress.fit_problem(view, table)
        if problem:
            raise UsageError(mismatch_message(view, baseline, args.run_dir, suite, problem))
        if baseline != args.baseline:
            print(f"using {baseline}: made with OpenJPEG {libraries.get('openjpeg_version')}, as this run")
        result = regress.compare(view, table)
        result.notes += regress.library_notes(baseline, libraries)
    except regress.BaselineError as exc:
        raise UsageError(str(exc)) from None
    print(result.text())
    return 0 if result.ok else 1
