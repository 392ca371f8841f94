"""``evaluate.py report RUN_DIR``: write ``report.html`` and ``report.md`` (tables, plots, provenance)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory (holds results.sqlite)")
    parser.add_argument("--no-grid", action="store_true", help="skip the visual grid (it re-decodes a few cells)")


def run(args: argparse.Namespace) -> int:
    from harness.cli import UsageError
    from reports.report import build

    if not (args.run_dir / "results.sqlite").is_file():
        raise UsageError(f"{args.run_dir} has no results.sqlite (run a suite with --out {args.run_dir} first)")
    rep = build(args.run_dir, grid=not args.no_grid)
    for note in rep.notes:
        print(f"note: {note}")
    print(f"wrote {rep.html} and {rep.markdown} ({len(rep.figures)} figures, tables in {args.run_dir / 'report'})")
    return 0
