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
        bad = worker.parse(codec.spec(), corrupted, SIZE, _limits(1.0, wall_s=3.0))
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
