"""Isolation: a decoder that segfaults, hangs or raises gets a status; the pool survives it."""

from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import create_codec
from harness.status import Status
from harness.workers import IsolatedWorker, Limits, WorkerPool

SIZE = (16, 16)


def _limits(cpu_s: float, wall_s: float | None = None, memory_mb: int = 256) -> Limits:
    return Limits(cpu_s=cpu_s, wall_s=wall_s or 10 * cpu_s, memory_bytes=memory_mb * 2**20)


def _streams(mode: str):
    codec = create_codec("fake", mode=mode)
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    clean = codec.encode(image).data
    corrupted = clean[:-1] + bytes([clean[-1] ^ 1])
    return codec, image, clean, corrupted


@pytest.mark.parametrize(
    ("mode", "status", "error_type"),
    [
        ("segfault", Status.CRASH, "SIGSEGV"),
        ("raise", Status.EXCEPTION, "ValueError"),
        ("hang", Status.TIMEOUT, "Timeout"),
        ("spin", Status.TIMEOUT, "Timeout"),
        ("balloon", Status.INVALID_OUTPUT, "MemoryCapExceeded"),
        ("oversized", Status.INVALID_OUTPUT, "InvalidOutput"),
    ],
)
def test_failure_is_classified_and_worker_recovers(mode, status, error_type):
    codec, image, clean, corrupted = _streams(mode)
    worker = IsolatedWorker()
    try:
        # the wall-clock backstop ends only the parse that sleeps ("hang": timeout whatever the load); for the others
        # it is a hang guard far above their work (a spin is ended by its 1 s CPU-time limit)
        bad = worker.parse(codec.spec(), corrupted, SIZE, _limits(1.0, wall_s=3.0 if mode == "hang" else 120.0))
        assert bad.status is status and bad.error_type == error_type and bad.state is None
        good = worker.parse(codec.spec(), clean, SIZE, _limits(5.0))  # same handle: restarted if it died
        assert good.status is Status.OK
        np.testing.assert_array_equal(good.state["image"], image)
        assert worker.starts == (1 if mode in ("raise", "oversized") else 2)
    finally:
        worker.close()


def test_pool_runs_many_and_counts_restarts():
    codec, _, clean, corrupted = _streams("segfault")
    with WorkerPool(2) as pool:
        futures = [pool.submit(codec.spec(), corrupted if i % 3 == 0 else clean, SIZE, _limits(5.0)) for i in range(12)]
        statuses = [f.result().status for f in futures]
        assert statuses.count(Status.CRASH) == 4 and statuses.count(Status.OK) == 8
        assert pool.restarts >= 3


def test_a_worker_parse_equals_the_in_process_one_whatever_the_main_process_thread_count():
    """Float reductions round differently over another number of threads (RDEIC-tiny's y_hat does): both parses
    run at the codec's fixed entropy-side count, so the controls compare equal floats (tests/test_threads.py
    checks 1, 2 and 4 threads on streams whose parse moved with the count)."""
    import torch

    from harness.datasets import create_dataset

    codec = create_codec("rdeic-tiny@low")
    ds = create_dataset("samples")
    image = ds.load(ds.index()[0])
    data, size = codec.encode(image).data, image.shape[:2]
    default = torch.get_num_threads()
    other = 1 if default > 1 else 2  # not what a fresh worker starts with
    worker = IsolatedWorker()
    try:
        torch.set_num_threads(other)
        here = codec.parse_checked(data, size)
        there = worker.parse(codec.spec(), data, size, Limits(cpu_s=300, wall_s=600, memory_bytes=4 << 30))
    finally:
        torch.set_num_threads(default)
        worker.close()
    assert there.status is Status.OK, there
    assert np.array_equal(here["y_hat"], there.state["y_hat"])
