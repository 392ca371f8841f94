"""``evaluate.py merge RUN_DIR``: merge a sharded run's stores (a Slurm array, or shard processes per GPU) into
``results.sqlite``, idempotently by cell key, then write the tables and the report. The runner does this by
itself when the array ends; run it by hand after a task was requeued or finished late."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="the --out directory of the sharded run")
    p.add_argument("--no-report", action="store_true", help="merge and write the tables only")


def run(args: argparse.Namespace) -> int:
    from harness.rundir import RunDirectory
    from harness.sharding import ShardPlan, merge, shard_dir
    from harness.store import ResultStore
    from reports.tables import write_summary
    from reports.terminal import headline

    run_dir: Path = args.run_dir
    if not (shard_dir(run_dir) / "plan.json").is_file():
        print(f"evaluate.py: error: {run_dir} has no shards/plan.json: not a sharded run directory", file=sys.stderr)
        return 2
    with RunDirectory(run_dir):
        result = merge(run_dir)
        plan = ShardPlan.read(run_dir)
        keys = [k for shard in plan.shards for k in shard]
        store = ResultStore(run_dir / "results.sqlite")
        try:
            cells = store.cells_frame()
            prov = store.provenance()
        finally:
            store.close()
    suite = prov.get("suite_name", "run")
    metrics = tuple(json.loads(prov["metrics"])) if "metrics" in prov else ("psnr",)
    missing = len(set(keys) - set(cells["key"]))
    write_summary(run_dir, cells, metrics, f"{suite}: {run_dir}")
    print(headline(cells, metrics))
    print(
        f"merged {result.shards} shard stores: {result.cells_added} cells and {result.decodes_added} decodes added; "
        f"{len(cells)} cells in {run_dir}/results.sqlite"
        + (f"; {missing} planned cells still missing: run the same command again" if missing else "")
    )
    if not args.no_report:
        from harness.cli import _write_report

        _write_report(run_dir)
    return 0 if not missing else 1
