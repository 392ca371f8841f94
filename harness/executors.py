"""Where the cells of a run execute: here, in this process's worker pool (``local``), or as shards on an existing
engine through submitit: a Slurm job array (``slurm``) or shard processes on this machine (``local-shards``, also
one process per GPU with ``--gpus N``).

::

    runner ──local──────> execution.execute_local (today's pool)
           ──slurm / local-shards──> shards/plan.json ──submitit──> task i: sharding.run_shard(run_dir, i)
                                          ──all tasks ended──> sharding.merge(run_dir) ──> results.sqlite

No scheduler of our own: submitit submits, requeues preempted or timed-out tasks (``ShardTask`` is
``Checkpointable``; a requeued task resumes) and reports failures with the task's log. A failed task loses only
its cells in flight: the others are merged and the same command resubmits what is missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.sharding import ShardResult, run_shard

EXECUTORS = ("local", "local-shards", "slurm")


class ExecutorError(RuntimeError):
    """The cluster refused the array or a task failed (the message names its log)."""


@dataclass(frozen=True)
class ExecutorConfig:
    """``--executor`` and its engine's parameters (Slurm's are passed to submitit's ``SlurmExecutor``)."""

    name: str = "local"
    shards: int | None = None  # tasks in the array (default: one per GPU, or one per codec config: shard_count)
    gpus: int = 0  # local-shards: one shard process per GPU (CUDA_VISIBLE_DEVICES=i)
    slurm_partition: str | None = None
    slurm_account: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 2
    timeout_min: int = 60
    array_parallelism: int = 256
    slurm_args: dict[str, str] = field(default_factory=dict)  # --slurm-arg KEY=VALUE passthrough (sbatch options)

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.name!r}")

    @property
    def sharded(self) -> bool:
        return self.name != "local"


def shard_count(cfg: ExecutorConfig, codec_configs: int) -> int:
    """How many shards a sharded run makes: ``--shards`` when given; else one per GPU with ``--gpus N`` (each shard
    runs every codec config of its images on its own device, so no two shards share a GPU or size their batches
    from the memory the other left free: issue #25); else one per codec config (CPU shards)."""
    if cfg.shards:
        return cfg.shards
    if cfg.gpus > 0:
        return cfg.gpus
    return max(1, codec_configs)


class ShardTask:
    """What a task runs: ``run_shard``. Requeued on preemption or timeout by submitit; it resumes."""

    def __call__(self, run_dir: str, index: int) -> ShardResult:
        return run_shard(run_dir, index)

    def checkpoint(self, run_dir: str, index: int) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(ShardTask(), run_dir, index)


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise ExecutorError(
            "the cluster executors need submitit: `pip install -e '.[cluster]'` (or `make venv`)"
        ) from exc
    return submitit


def submit_shards(
    cfg: ExecutorConfig, run_dir: Path, n_shards: int, on_done: Callable[[ShardResult], None] | None = None
) -> list[ShardResult]:
    """Run shards 0..n-1 of ``run_dir`` on the configured engine and wait for them; raises ExecutorError naming
    every failed task and its log (the others' results are on disk, ready to merge)."""
    submitit = _import_submitit()
    folder = Path(run_dir) / "shards" / "logs"
    indices = list(range(n_shards))
    task = ShardTask()
    if cfg.name == "slurm":
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
        params: dict[str, Any] = {
            "time": cfg.timeout_min,
            "cpus_per_task": cfg.cpus_per_task,
            "array_parallelism": cfg.array_parallelism,
            "job_name": "harness-shard",
        }
        if cfg.slurm_partition:
            params["partition"] = cfg.slurm_partition
        if cfg.slurm_account:
            params["account"] = cfg.slurm_account
        if cfg.gpus_per_task:
            params["gpus_per_node"] = cfg.gpus_per_task
        if cfg.slurm_args:
            params["additional_parameters"] = dict(cfg.slurm_args)
        try:
            ex.update_parameters(**params)
            jobs = ex.map_array(task, [str(run_dir)] * n_shards, indices)
        except Exception as exc:  # sbatch refused: bad partition/account, no Slurm here
            raise ExecutorError(f"Slurm refused the job array: {exc}") from exc
    else:
        jobs = []
        for i in indices:
            ex = submitit.LocalExecutor(folder=folder)
            local: dict[str, Any] = {"timeout_min": cfg.timeout_min}
            if cfg.gpus:
                local.update(gpus_per_node=1, visible_gpus=[i % cfg.gpus])
            ex.update_parameters(**local)
            jobs.append(ex.submit(task, str(run_dir), i))
    return _wait(jobs, on_done)


def _wait(jobs: list[Any], on_done: Callable[[ShardResult], None] | None) -> list[ShardResult]:
    results: dict[int, ShardResult] = {}
    failures: list[str] = []
    remaining = dict(enumerate(jobs))
    while remaining:
        for i, job in list(remaining.items()):
            if not job.done():
                continue
            del remaining[i]
            try:
                results[i] = job.result()
            except Exception as exc:
                log = getattr(getattr(job, "paths", None), "stderr", "its log")
                last = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
                failures.append(f"shard {i} (job {job.job_id}) failed: {last}; log: {log}")
                continue
            if on_done is not None:
                on_done(results[i])
        if remaining:
            time.sleep(1.0)
    if failures:
        raise ExecutorError("; ".join(failures) + "; the other shards are kept: run the same command to resume")
    return [results[i] for i in sorted(results)]
