"""Running a suite: plan, lock the run directory, encode once, controls, execute, store.

::

    make_plan ──> lock <out> ──> store + provenance ──> worker pool ──> encode phase in its workers, one image
        per task (cache; clean decodes here; images a codec refuses: skipped) ──> warm the decode workers
        ──> controls (BER 0 == clean; isolated decode == clean decode)
        ──> execute pending cells (harness/execution.py) ──> results.sqlite

Each stage lives in its own module: ``planning`` (cells, keys), ``artifacts`` (encode once, clean decodes),
``controls``, ``channel``, ``workers`` (isolated parse), ``decoding`` (trusted half, limits), ``records``
(stored rows), ``execution`` (the local loop). Cells already in the store are skipped, so running the same
command again resumes.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import provenance
from harness.artifacts import ArtifactSource, ControlError
from harness.budgets import auto_batch_size, budget_of
from harness.cache import ArtifactCache
from harness.channel import Channel
from harness.config import SuiteError
from harness.controls import run_controls
from harness.execution import execute_local
from harness.metrics import provenance as metric_provenance
from harness.planning import Plan, RunOptions, make_plan
from harness.rundir import RunDirectory
from harness.store import DecodeRecord, ResultStore
from harness.workers import WorkerPool

__all__ = ["ControlError", "RunOptions", "RunResult", "discard_results", "make_plan", "run"]


@dataclass
class RunResult:
    out: Path
    planned_keys: list[str]
    metrics: tuple[str, ...]
    planned: int
    already_done: int
    computed: int
    decodes: int
    memo_hits: int
    worker_restarts: int
    statuses: Counter
    seconds: float
    skipped_images: list[dict[str, Any]] = field(default_factory=list)


def discard_results(out: Path) -> None:
    """``--fresh``: the run directory's results store, summary and encode cache go."""
    for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "summary.csv", "summary.md"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "cache", ignore_errors=True)


def run(opts: RunOptions) -> RunResult:
    """Run (or resume) a suite; returns counts. Raises SuiteError/ControlError before writing a table and
    RunDirectoryBusy when another run holds the directory."""
    started = time.perf_counter()
    plan = make_plan(opts)
    if not plan.cells:
        raise SuiteError("the suite (after --codec/--dataset/--limit-images filters) has no cells")
    with RunDirectory(opts.out):
        if opts.fresh:
            discard_results(opts.out)
        store = ResultStore(opts.out / "results.sqlite")
        try:
            return _execute(opts, plan, store, started)
        finally:
            store.close()


def _bar(opts: RunOptions, total: int, desc: str, unit: str) -> Any:
    from harness.console import progress_bar  # a bar on a terminal, plain periodic lines in a log

    return progress_bar(total, desc, unit, enabled=opts.progress)


def _execute(opts: RunOptions, plan: Plan, store: ResultStore, started: float) -> RunResult:
    suite = opts.suite
    budget = budget_of(opts)
    recorded_at = datetime.now(UTC).isoformat()
    record = {
        "suite_name": suite.name,
        "suite_path": suite.path,
        "suite_sha256": suite.sha256,
        "suite_text": suite.text,
        "workers": opts.workers,
        "timeout_s": budget.timeout_s,
        "budget": {
            "cpu_s": f"max({budget.timeout_s:g}, {budget.timeout_factor:g} x CPU time of the clean stream's parse)",
            "wall_s": f"{budget.wall_factor:g} x the CPU budget (backstop for parses that hang without CPU)",
            "memory": "harness.workers.default_memory_bytes(decoded pixels)"
            if budget.memory_mb is None
            else f"{budget.memory_mb:g} MiB over the warm worker",
        },
        "clean_psnr_floor_db": suite.clean_psnr_floor_db,
        "image_subsets": plan.subsets,
        "datasets": plan.datasets,
        "planned_cells": len(plan.cells),
        "metrics": metric_provenance(suite.metrics),
        "devices": provenance.devices(plan.codecs),
    }
    store.record_provenance(recorded_at, provenance.collect(record) | {"skipped_images": plan.skipped_images})
    cache = ArtifactCache(opts.out / "cache")
    artifacts = ArtifactSource(plan, cache, suite.clean_psnr_floor_db, 4 * opts.workers + 4)
    preload = tuple(sorted({type(c).__module__ for c in plan.codecs.values()}))
    pool = WorkerPool(opts.workers, preload=preload)  # encodes first (one image per task), then the parses
    with pool:
        return _run_phases(opts, plan, store, started, artifacts, pool, recorded_at)


def _run_phases(
    opts: RunOptions,
    plan: Plan,
    store: ResultStore,
    started: float,
    artifacts: ArtifactSource,
    pool: WorkerPool,
    recorded_at: str,
) -> RunResult:
    """Encode phase on ``pool``'s workers, then (sharded: the shards) controls and execution on the same pool."""
    suite = opts.suite
    budget = budget_of(opts)
    with _bar(opts, len(plan.chosen), f"{suite.name}: encode", "image") as bar:
        refused = artifacts.prepare(list(plan.codecs), bar, pool)
    if refused:
        plan.skipped_images.extend(refused)
        plan.without_images({r["sha256"] for r in refused})
        store.record_provenance(recorded_at, {"skipped_images": plan.skipped_images})
        if not plan.cells:
            raise SuiteError(f"every image was refused at encode time, e.g. {refused[0]['id']}: {refused[0]['error']}")
    done = store.done_keys()
    pending = [c for c in plan.cells if c.key not in done]
    batch = opts.batch_size or auto_batch_size(plan)
    store.record_provenance(recorded_at, {"batch_size": batch})
    if opts.executor is not None and opts.executor.sharded and pending:
        pool.close()  # the shards start their own
        return _execute_sharded(opts, plan, store, pending, started)
    memo: dict[str, DecodeRecord] = {}
    channel = Channel()
    progress = None
    if pending:
        labels = dict.fromkeys(plan.label_of(c.codec_fingerprint) for c in pending)
        failed = pool.warm([plan.codecs[label].spec() for label in labels])
        if failed:
            first = failed[0]
            raise ControlError(f"a decode worker cannot build a codec: {first.error_type}: {first.error_message}")
        streams = len({(c.encode_key, c.decode_seed) for c in pending})
        with _bar(opts, streams, f"{suite.name}: controls", "stream") as bar:
            clean_cpu = run_controls(pending, plan, artifacts, channel, pool, memo, lambda: bar.update(1))
        store.record_provenance(recorded_at, {"clean_parse_cpu_s": clean_cpu})
        with _bar(opts, len(pending), suite.name, "cell") as bar:

            def on_cell(_status: str, statuses: Counter) -> None:
                bar.update(1)
                bar.set_postfix(dict(sorted(statuses.items())), refresh=False)

            progress = execute_local(
                pending, plan, artifacts, channel, pool, store, memo, budget, clean_cpu, on_cell, batch
            )
    restarts = pool.restarts
    return RunResult(
        out=opts.out,
        planned_keys=[c.key for c in plan.cells],
        metrics=tuple(plan.metrics),
        planned=len(plan.cells),
        already_done=len(plan.cells) - len(pending),
        computed=len(pending),
        decodes=progress.decodes if progress else 0,
        memo_hits=progress.memo_hits if progress else 0,
        worker_restarts=restarts,
        statuses=progress.statuses if progress else Counter(),
        seconds=time.perf_counter() - started,
        skipped_images=plan.skipped_images,
    )


def _execute_sharded(opts: RunOptions, plan: Plan, store: ResultStore, pending: list, started: float) -> RunResult:
    """The cells as shards through submitit (a Slurm array, or shard processes here), then merged."""
    from harness.executors import ExecutorError, shard_count, submit_shards
    from harness.sharding import ShardPlan, make_shards, merge

    cfg = opts.executor
    n = shard_count(cfg, len({c.codec_fingerprint for c in pending}))
    shards = make_shards(pending, n)
    ShardPlan(opts.suite.text, opts.suite.path, opts.shard_options(), shards).write(opts.out)
    store.close()  # the tasks read it to skip finished cells; the merge writes it
    with _bar(opts, len(shards), f"{opts.suite.name}: shards ({cfg.name})", "shard") as bar:
        try:
            results = submit_shards(cfg, opts.out, len(shards), lambda _r: bar.update(1))
            error = None
        except ExecutorError as exc:
            results, error = [], exc
    merged = merge(opts.out)
    if error is not None:
        if "ControlError" in str(error):
            raise ControlError(str(error))
        raise error
    statuses: Counter = Counter()
    for r in results:
        statuses.update(r.statuses)
    return RunResult(
        out=opts.out,
        planned_keys=[c.key for c in plan.cells],
        metrics=tuple(plan.metrics),
        planned=len(plan.cells),
        already_done=len(plan.cells) - len(pending),
        computed=sum(r.computed for r in results),
        decodes=merged.decodes_added,
        memo_hits=0,
        worker_restarts=0,
        statuses=statuses,
        seconds=time.perf_counter() - started,
        skipped_images=plan.skipped_images,
    )
