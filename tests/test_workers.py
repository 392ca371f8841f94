"""Isolation: a decoder that segfaults, hangs or raises gets a status; the pool survives it."""

from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import create_codec
from harness.status import Status
from harness.workers import IsolatedWorker, WorkerPool


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
    ],
)
def test_failure_is_classified_and_worker_recovers(mode, status, error_type):
    codec, image, clean, corrupted = _streams(mode)
    worker = IsolatedWorker()
    try:
        bad = worker.parse(codec.spec(), corrupted, timeout_s=1.0)
        assert bad.status is status and bad.error_type == error_type and bad.state is None
        good = worker.parse(codec.spec(), clean, timeout_s=5.0)  # same handle: restarted if it died
        assert good.status is Status.OK
        np.testing.assert_array_equal(good.state["image"], image)
        assert worker.starts == (1 if status is Status.EXCEPTION else 2)
    finally:
        worker.close()


def test_pool_runs_many_and_counts_restarts():
    codec, _, clean, corrupted = _streams("segfault")
    with WorkerPool(2, timeout_s=5.0) as pool:
        futures = [pool.submit(codec.spec(), corrupted if i % 3 == 0 else clean) for i in range(12)]
        statuses = [f.result().status for f in futures]
        assert statuses.count(Status.CRASH) == 4 and statuses.count(Status.OK) == 8
        assert pool.restarts >= 3
