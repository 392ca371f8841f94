"""What a run may spend: the per-parse budget from the suite and the run options, and how many reconstructs
go in one batch. Both the local run (:mod:`harness.runner`) and a cluster task (:mod:`harness.sharding`) need
them; they live here, below both, so that neither imports the other (issue #27, ``tests/test_imports.py``).
"""

from __future__ import annotations

from harness.decoding import Budget
from harness.planning import Plan, RunOptions


def budget_of(opts: RunOptions) -> Budget:
    """The parse budget of every cell of a run: ``--timeout`` (CPU seconds) over the suite's ``timeout_s``, and
    the suite's ``timeout_factor``, ``wall_factor`` and ``worker_memory_mb`` (docs/concepts.md, Limits)."""
    suite = opts.suite
    return Budget(
        timeout_s=opts.timeout_s or suite.timeout_s,
        timeout_factor=suite.timeout_factor,
        wall_factor=suite.wall_factor,
        memory_mb=suite.worker_memory_mb,
    )


def auto_batch_size(plan: Plan, cap: int = 32) -> int:
    """Reconstructs per batch when ``--batch-size`` is not given: 1 on the CPU (batching buys nothing there and
    cells are decoded item by item anyway); on CUDA, what 80 % of the free memory holds by the codec's own
    per-item estimate (:meth:`Codec.batch_memory_bytes`) for the largest image, capped at ``cap``."""
    cuda = [c for c in plan.codecs.values() if str(getattr(c.options, "device", "cpu")).startswith("cuda")]
    if not cuda or not plan.chosen:
        return 1
    import torch

    free, _ = torch.cuda.mem_get_info()
    height, width = max(((e.height, e.width) for _, e, _ in plan.chosen), key=lambda hw: hw[0] * hw[1])
    sizes = [c.batch_memory_bytes(height, width) for c in cuda]
    if any(s is None for s in sizes):
        return 1
    return max(1, min(cap, int(0.8 * free // max(sizes))))
