"""``evaluate.py regress RUN_DIR --baseline reports/baselines/ci.csv [--update]``: compare the run's summary
with a committed baseline within the tolerances of :mod:`reports.regress`; exit 1 on a regression.
``--update`` rewrites the baseline from the run (an explicit act) and prints what changed."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory (holds results.sqlite)")
    parser.add_argument("--baseline", type=Path, required=True, help="baseline CSV, e.g. reports/baselines/ci.csv")
    parser.add_argument("--update", action="store_true", help="rewrite the baseline from this run, show the diff")


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from harness.store import ResultStore
    from reports import regress, tables
    from reports.report import run_metrics

    if not (args.run_dir / "results.sqlite").is_file():
        raise UsageError(f"{args.run_dir} has no results.sqlite")
    store = ResultStore(args.run_dir / "results.sqlite")
    try:
        cells, prov = store.cells_frame(), store.provenance()
    finally:
        store.close()
    if cells.empty:
        raise UsageError(f"{args.run_dir}: no cells in the results store")
    metrics = run_metrics(cells, prov)
    view = regress.roundtrip(regress.regression_view(tables.summarise(tables.prepare(cells), metrics), metrics))
    libraries = regress.libraries_of(prov, set(cells["codec"]))
    if args.update:
        if args.baseline.is_file():
            print(regress.compare(view, regress.read_baseline(args.baseline)).text())
        else:
            print(f"new baseline ({len(view)} rows)")
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        view.to_csv(args.baseline, index=False)
        regress.write_libraries(args.baseline, libraries)
        print(f"baseline rewritten: {args.baseline}")
        return 0
    if not args.baseline.is_file():
        raise UsageError(f"no baseline at {args.baseline} (create it with --update)")
    baseline = regress.select_baseline(args.baseline, libraries)
    if baseline != args.baseline:
        print(f"using {baseline}: made with OpenJPEG {libraries.get('openjpeg_version')}, as this run")
    result = regress.compare(view, regress.read_baseline(baseline))
    result.notes += regress.library_notes(baseline, libraries)
    print(result.text())
    return 0 if result.ok else 1
