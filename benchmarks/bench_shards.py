"""1 vs N shards of the same suite through a real single-node Slurm on this machine (issue #17, 6).

``tests/slurm_cluster.py`` starts munged, slurmctld and slurmd for localhost in a temporary directory (root and
Debian's slurm-wlm needed; every daemon stops at the end). The suite (JPEG2000 cells of ``bit_errors``) then runs
twice through ``--executor slurm``: as 1 shard, and as N shards (a job array whose tasks run at the same time,
``cpus_per_task`` each), every task with ``--workers`` isolated workers. When the cluster cannot start, the same
runs go through ``--executor local-shards`` (submitit's local executor) and the result says so.

Efficiency = t(1 shard) / (N t(N shards)) over the task phase: from the array's submission to the end of its last
task (each task re-plans, warms its workers, runs its controls and its cells). The N-shard run starts from the
1-shard run's encoded streams (its cache, copied), because the encode phase runs in the submitter alone and is
the same work for any N; each run's whole wall (encode phase, plan file, tasks, merge) is recorded too.

    .venv/bin/python benchmarks/bench_shards.py [--shards 2] [--seeds 1] [--limit-images 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common
from bench_suite import JPEG2000_LABELS


def _run(args: argparse.Namespace, out: Path, executor: str, shards: int, fresh: bool) -> dict[str, Any]:
    import harness.executors as executors
    import harness.sharding as sharding
    from harness.artifacts import ArtifactSource
    from harness.config import load_suite
    from harness.executors import ExecutorConfig
    from harness.planning import RunOptions
    from harness.runner import run

    phases: Counter = Counter()
    originals = (executors.submit_shards, sharding.merge, ArtifactSource.prepare)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - t0

        return wrapper

    executors.submit_shards = timed("tasks", executors.submit_shards)
    sharding.merge = timed("merge", sharding.merge)
    ArtifactSource.prepare = timed("encode", ArtifactSource.prepare)
    cfg = ExecutorConfig(
        name=executor,
        shards=shards,
        slurm_partition="debug" if executor == "slurm" else None,
        cpus_per_task=args.cpus_per_task,
        timeout_min=60,
    )
    opts = RunOptions(
        suite=load_suite(args.suite),
        out=out,
        codecs=tuple(args.codecs.split(",")),
        limit_images=args.limit_images,
        seeds=args.seeds,
        workers=args.workers,
        fresh=fresh,
        progress=False,
        executor=cfg,
    )
    try:
        with common.quiet_warnings(), common.Meter() as meter:
            result = run(opts)
    finally:
        executors.submit_shards, sharding.merge, ArtifactSource.prepare = originals
    task_logs = list((out / "shards" / "logs").glob("*_log.out"))
    return {
        "executor": executor,
        "shards": shards,
        **meter.as_dict(),
        "phases_s": dict(phases),
        "cells": result.computed,
        "planned": result.planned,
        "statuses": dict(result.statuses),
        "task_logs": len(task_logs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=2, help="N (compared with 1)")
    ap.add_argument("--suite", default="bit_errors")
    ap.add_argument("--codecs", default=",".join(JPEG2000_LABELS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--limit-images", type=int)
    ap.add_argument("--workers", type=int, default=1, help="isolated workers per shard task")
    ap.add_argument("--cpus-per-task", type=int, default=1)
    ap.add_argument("--executor", choices=("auto", "slurm", "local-shards"), default="auto")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(common.ROOT / "tests"))
    result: dict[str, Any] = {
        "suite": args.suite,
        "codecs": args.codecs,
        "seeds": args.seeds,
        "limit_images": args.limit_images,
        "workers_per_task": args.workers,
        "cpus_per_task": args.cpus_per_task,
    }
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp:
        tmp_path = Path(tmp)
        cluster = None
        executor = "local-shards" if args.executor == "local-shards" else "slurm"
        if executor == "slurm":
            import slurm_cluster

            try:
                t0 = time.perf_counter()
                cluster = slurm_cluster.start(tmp_path / "slurm")
                env = cluster.__enter__()
                result["cluster_start_s"] = time.perf_counter() - t0
                os.environ["SLURM_CONF"] = env["SLURM_CONF"]
            except slurm_cluster.ClusterUnavailable as exc:
                if args.executor == "slurm":
                    raise
                result["slurm_unavailable"] = str(exc)
                executor, cluster = "local-shards", None
        result["executor"] = executor
        try:
            runs = {}
            for n in (1, args.shards):
                print(f"  {executor}: {n} shard(s) (load {common.loadavg()}) ...", flush=True)
                out = tmp_path / f"shards{n}"
                if n != 1:  # the same encoded streams: the encode phase is not what is compared
                    shutil.copytree(tmp_path / "shards1" / "cache", out / "cache")
                runs[str(n)] = _run(args, out, executor, n, fresh=n == 1)
                print(f"    {runs[str(n)]['wall_s']:.1f} s, {runs[str(n)]['cells']} cells", flush=True)
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)
                os.environ.pop("SLURM_CONF", None)
    t1, tn = runs["1"]["phases_s"]["tasks"], runs[str(args.shards)]["phases_s"]["tasks"]
    result.update(runs=runs, speedup=t1 / tn, efficiency=t1 / (args.shards * tn))
    print(
        f"{executor}: task phase (submission to the last task's end), 1 shard {t1:.1f} s, {args.shards} shards "
        f"{tn:.1f} s: speedup {t1 / tn:.2f}, efficiency t1/(N tN) = {result['efficiency']:.3f}"
    )
    for n, r in runs.items():
        print(
            f"  {n} shard(s): phases {', '.join(f'{k} {v:.1f} s' for k, v in r['phases_s'].items())}; "
            f"machine CPU busy {100 * (r['machine_cpu_busy'] or 0):.0f}%, load {r['load_before']} -> {r['load_after']}"
        )
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
