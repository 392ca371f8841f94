"""Shards: the unit of distribution on a cluster or over several GPUs of a node.

::

    submitter: plan ──> encode phase (cache/, shared file system) ──> shards/plan.json ──> executor (array)
    task i:    shards/plan.json ──> re-plan the suite ──> its cells ──> controls + execute ──> shards/shard-<i>.sqlite
    merge:     every shards/shard-*.sqlite ──INSERT OR IGNORE by key──> results.sqlite ──> tables, report

A shard holds the cells of one codec config (a task loads one codec and its weights once), cut into runs of
whole images so memoised decodes stay within a task. Each task writes only its own SQLite store, so tasks never
contend for a lock; :func:`merge` is idempotent (cells and decodes by key), and a task that is run again, or two
tasks given the same cell by mistake, still give one row. Resume is as local: cells already in
``results.sqlite`` or in the task's own store are skipped, so a killed task loses only the cells in flight.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cells import Cell

PLAN_FILE = "plan.json"


def shard_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "shards"


def shard_store(run_dir: Path, index: int) -> Path:
    return shard_dir(run_dir) / f"shard-{index:04d}.sqlite"


def make_shards(cells: list[Cell], n: int) -> list[list[str]]:
    """Cell keys in at most ``n`` shards of about equal size: grouped by codec config, then by image (the cells of
    one encode key stay together), in plan order; never an empty shard."""
    by_codec: dict[str, dict[str, list[str]]] = {}
    for c in cells:
        by_codec.setdefault(c.codec_fingerprint, {}).setdefault(c.encode_key, []).append(c.key)
    runs = [keys for images in by_codec.values() for keys in images.values()]
    total = sum(len(r) for r in runs)
    n = max(1, min(n, len(runs)))
    target = total / n
    shards: list[list[str]] = [[]]
    for keys in runs:
        if shards[-1] and len(shards[-1]) + len(keys) / 2 > target and len(shards) < n:
            shards.append([])
        shards[-1].extend(keys)
    return shards


@dataclass(frozen=True)
class ShardPlan:
    """What every task needs to rebuild its part of the run: the suite text and the run options, plus the keys
    of each shard. Written once by the submitter (``shards/plan.json``)."""

    suite_text: str
    suite_path: str
    options: dict[str, Any]  # RunOptions fields other than suite/out (filters, seeds, budgets, device, batch)
    shards: list[list[str]]

    def write(self, run_dir: Path) -> Path:
        path = shard_dir(run_dir) / PLAN_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self)))
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, run_dir: Path) -> ShardPlan:
        return cls(**json.loads((shard_dir(run_dir) / PLAN_FILE).read_text()))


def run_options_of(plan: ShardPlan, run_dir: Path) -> Any:
    """The RunOptions the submitter ran with (progress off: a task logs to its own files)."""
    from harness.config import parse_suite
    from harness.planning import RunOptions

    options = {k: tuple(v) if isinstance(v, list) else v for k, v in plan.options.items()}
    return RunOptions(suite=parse_suite(plan.suite_text, plan.suite_path), out=Path(run_dir), **options)


@dataclass(frozen=True)
class ShardResult:
    index: int
    cells: int
    computed: int
    statuses: dict[str, int]
    seconds: float


def run_shard(run_dir: str | Path, index: int) -> ShardResult:
    """One task: the cells of shard ``index`` that are in neither store yet, written to the shard's own store.
    Safe to run again (requeue after preemption): it resumes."""
    from harness.budgets import auto_batch_size, budget_of
    from harness.cache import ArtifactCache
    from harness.channel import Channel
    from harness.controls import run_controls
    from harness.execution import execute_local
    from harness.planning import make_plan
    from harness.rundir import RunDirectory
    from harness.store import DecodeRecord, ResultStore
    from harness.workers import WorkerPool

    started = time.perf_counter()
    run_dir = Path(run_dir)
    shard_plan = ShardPlan.read(run_dir)
    opts = run_options_of(shard_plan, run_dir)
    plan = make_plan(opts)
    wanted = set(shard_plan.shards[index])
    cells = [c for c in plan.cells if c.key in wanted]
    plan.cells = cells
    with RunDirectory(shard_dir(run_dir) / f"shard-{index:04d}.lock.d"):
        store = ResultStore(shard_store(run_dir, index))
        try:
            done = store.done_keys() | _main_done(run_dir)
            pending = [c for c in cells if c.key not in done]
            progress = None
            if pending:
                from harness.artifacts import ArtifactSource

                artifacts = ArtifactSource(plan, ArtifactCache(run_dir / "cache"), opts.suite.clean_psnr_floor_db)
                memo: dict[str, DecodeRecord] = {}
                channel = Channel()
                preload = tuple(sorted({type(c).__module__ for c in plan.codecs.values()}))
                with WorkerPool(opts.workers, preload=preload) as pool:
                    labels = dict.fromkeys(plan.label_of(c.codec_fingerprint) for c in pending)
                    pool.warm([plan.codecs[label].spec() for label in labels])
                    clean_cpu = run_controls(pending, plan, artifacts, channel, pool, memo)
                    batch = opts.batch_size or auto_batch_size(plan)
                    progress = execute_local(
                        pending, plan, artifacts, channel, pool, store, memo, budget_of(opts), clean_cpu, None, batch
                    )
        finally:
            store.close()
    statuses = dict(progress.statuses) if progress else {}
    return ShardResult(index, len(cells), len(pending), statuses, time.perf_counter() - started)


def _main_done(run_dir: Path) -> set[str]:
    path = Path(run_dir) / "results.sqlite"
    if not path.exists():
        return set()
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60) as db:
        try:
            return {k for (k,) in db.execute("SELECT key FROM cells")}
        except sqlite3.OperationalError:
            return set()


@dataclass(frozen=True)
class MergeResult:
    shards: int
    cells_added: int
    decodes_added: int
    statuses: Counter


def merge(run_dir: str | Path) -> MergeResult:
    """Merge every shard store of ``run_dir`` into its ``results.sqlite``, idempotently by key (a cell already
    there is kept as it is); provenance rows are copied too."""
    from harness.store import ResultStore

    run_dir = Path(run_dir)
    stores = sorted(shard_dir(run_dir).glob("shard-*.sqlite"))
    main = ResultStore(run_dir / "results.sqlite")  # creates the schema when the array ran before any local cell
    main.close()
    cells_added = decodes_added = 0
    with sqlite3.connect(run_dir / "results.sqlite", timeout=60) as db:
        for path in stores:
            db.execute("ATTACH DATABASE ? AS shard", (str(path),))
            try:
                before = db.execute("SELECT (SELECT COUNT(*) FROM cells), (SELECT COUNT(*) FROM decodes)").fetchone()
                db.execute("INSERT OR IGNORE INTO decodes SELECT * FROM shard.decodes")
                db.execute("INSERT OR IGNORE INTO cells SELECT * FROM shard.cells")
                db.execute("INSERT OR IGNORE INTO provenance SELECT * FROM shard.provenance")
                after = db.execute("SELECT (SELECT COUNT(*) FROM cells), (SELECT COUNT(*) FROM decodes)").fetchone()
                db.commit()
            finally:
                db.execute("DETACH DATABASE shard")
            cells_added += after[0] - before[0]
            decodes_added += after[1] - before[1]
        statuses = Counter(dict(db.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall()))
    return MergeResult(len(stores), cells_added, decodes_added, statuses)
