"""``evaluate.py report RUN_DIR [--impute POLICY] [--distribution]``: write ``report.html`` and ``report.md``
(tables, plots, provenance); optionally failure-imputed columns and the FID/KID table."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory (holds results.sqlite)")
    parser.add_argument("--no-grid", action="store_true", help="skip the visual grid (it re-decodes a few cells)")
    parser.add_argument(
        "--impute",
        action="append",
        default=[],
        metavar="POLICY",
        help="add a failure-imputed column per metric, labelled with its policy: 'worst_ok' (a failure counts as "
        "the worst ok decode of that image), 'grey' (as a mid-grey image) or '<metric>=<value>' (e.g. 'psnr=0'); "
        "repeatable; never the default",
    )
    parser.add_argument(
        "--distribution",
        action="store_true",
        help="also compute FID/KID per group on 256 px patches (+ a grid shifted by 128), re-decoding every ok cell "
        "of groups with enough patches (opt-in: slow); writes report/distribution.csv",
    )


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from reports.impute import parse_imputation
    from reports.report import build

    if not (args.run_dir / "results.sqlite").is_file():
        raise UsageError(f"{args.run_dir} has no results.sqlite (run a suite with --out {args.run_dir} first)")
    try:
        impute = tuple(parse_imputation(p) for p in args.impute)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rep = build(args.run_dir, grid=not args.no_grid, impute=impute, distribution=args.distribution)
    for note in rep.notes:
        print(f"note: {note}")
    print(f"wrote {rep.html} and {rep.markdown} ({len(rep.figures)} figures, tables in {args.run_dir / 'report'})")
    return 0
