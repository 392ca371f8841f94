"""Statuses that do not depend on the machine's load or free memory (issue #16 §1).

A parse runs under the kernel's limits (CPU time, data segment) in a worker that dies with the harness; its
CPU budget scales with the measured cost of the clean stream; controls give a slow machine room and call a
timeout a timeout, never a mismatch.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import HANG_GUARD_S, ROOT, TESTS, stored_cells, write_suite

from harness.codecs.base import create_codec
from harness.config import load_suite
from harness.datasets import create_dataset
from harness.decoding import Budget
from harness.runner import ControlError, RunOptions, run
from harness.status import Status
from harness.workers import IsolatedWorker, Limits

BSC = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = {{ ber = [{levels}] }}'
TIMING = ["corrupt_s", "encode_s", "finished_at"]


def _sample() -> np.ndarray:
    ds = create_dataset("samples")
    return ds.load(ds.entries()[0])


def _siz_bomb(image: np.ndarray) -> bytes:
    """A valid stream whose SIZ declares a 2,097,652-pixel-wide image (what five flipped bits did in the issue:
    OpenJPEG then allocates ~10 GB)."""
    data = bytearray(create_codec("jpeg2000", target_bpp=1.0).encode(image).data)
    struct.pack_into(">I", data, 8, 2_097_652)  # SOC(2) SIZ(2) Lsiz(2) Rsiz(2) | Xsiz
    return bytes(data)


def test_a_siz_bomb_is_refused_before_openjpeg_allocates():
    image = _sample()
    bomb = _siz_bomb(image)
    worker = IsolatedWorker()
    try:
        # refused before decoding: well under a second of CPU (the 300 s wall limit is only a hang guard)
        outcome = worker.parse(create_codec("jpeg2000").spec(), bomb, image.shape[:2], Limits(30, 300, 2**29))
        assert outcome.status is Status.INVALID_OUTPUT and "SIZ declares image (2097652" in outcome.error_message
        assert outcome.cpu_s < 1
        # without the header check, the memory cap still keeps OpenJPEG from taking the machine: the allocation
        # fails inside the worker, deterministically, in well under a second of CPU
        unchecked = create_codec("fake_j2k_unchecked").spec()
        capped = worker.parse(unchecked, bomb, image.shape[:2], Limits(30, 300, 2**29))
        assert capped.status in (Status.EXCEPTION, Status.INVALID_OUTPUT) and capped.cpu_s < 5
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("field", "offset", "value"),
    [("width", 8, 4000), ("height", 12, 77), ("tile width", 24, 64), ("components", 40, 1)],
)
def test_every_siz_field_is_checked_against_the_configuration(field, offset, value):
    image = _sample()
    data = bytearray(create_codec("jpeg2000", target_bpp=1.0).encode(image).data)
    if field == "components":
        struct.pack_into(">H", data, offset, value)
    else:
        struct.pack_into(">I", data, offset, value)
    from harness.codecs.base import InvalidOutput

    with pytest.raises(InvalidOutput, match="SIZ declares"):
        create_codec("jpeg2000").parse(bytes(data), image.shape[:2])


def test_the_main_process_never_receives_a_state_larger_than_the_output():
    codec = create_codec("fake", mode="oversized")
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)
    clean = codec.encode(image).data
    worker = IsolatedWorker()
    try:
        out = worker.parse(codec.spec(), clean[:-1] + bytes([clean[-1] ^ 1]), (16, 16), Limits(5, 50, 2**28))
    finally:
        worker.close()
    assert out.status is Status.INVALID_OUTPUT and out.state is None and "exceeds" in out.error_message


def test_budget_scales_with_the_clean_parse_and_is_recorded(tmp_path):
    budget = Budget(timeout_s=30, timeout_factor=20, wall_factor=10)
    codec = create_codec("fake")
    cell = type("C", (), {"height": 100, "width": 200})()
    fast, slow = budget.limits(codec, cell, 0.01), budget.limits(codec, cell, 4.0)
    assert fast.cpu_s == 30 and slow.cpu_s == 80 and slow.wall_s == 800
    assert fast.memory_bytes == 512 * 2**20 + 256 * 100 * 200


def test_a_slow_codec_is_not_called_a_timeout_when_its_clean_stream_is_as_slow(tmp_path):
    """Every parse of this codec burns 1.2 s of CPU. With timeout_s = 1 a fixed deadline would call each
    corrupted cell a timeout; the budget scales with the clean stream's measured cost instead."""
    codecs = '[[codecs]]\ncodec = "fake"\nlabel = "burn"\noptions = { mode = "burn", sleep_s = 1.2 }\n'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=BSC.format(levels="1e-4"), seeds=1, timeout_s=1)
    run(RunOptions(load_suite(str(suite)), tmp_path / "run", workers=2, progress=False, limit_images=1))
    cells = stored_cells(tmp_path / "run")
    assert len(cells) == 1 and set(cells["status"]) == {"ok"}


def test_a_control_that_times_out_says_so_instead_of_calling_it_a_mismatch(tmp_path, monkeypatch):
    import harness.controls as controls

    monkeypatch.setattr(controls, "CONTROL_CPU_S", 1.0)  # wall backstop 3 s, two attempts
    codecs = '[[codecs]]\ncodec = "fake"\noptions = { mode = "hang_in_worker" }\n'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=BSC.format(levels="0.0"), seeds=1)
    with pytest.raises(ControlError, match=r"timed out 2 times .*this is not a mismatch"):
        run(RunOptions(load_suite(str(suite)), tmp_path / "run", workers=1, progress=False, limit_images=1))


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


DRIVER = (
    "import sys; sys.path.insert(0, {tests!r}); import fake_codecs; fake_codecs.register(); "
    "from harness.cli import main; sys.exit(main({argv!r}))"
)


@pytest.mark.slow
def test_workers_die_with_the_harness_after_kill_minus_nine(tmp_path):
    """Every corrupted stream makes the decoder spin: after ``kill -9`` of the harness, no decoder (nor the
    forkserver) may go on burning CPU or memory."""
    codecs = '[[codecs]]\ncodec = "fake"\noptions = { mode = "spin" }\n'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=BSC.format(levels="0.01"), timeout_s=300)
    argv = ["--suite", str(suite), "--out", str(tmp_path / "run"), "--workers", "2", "--no-progress"]
    cmd = [sys.executable, "-c", DRIVER.format(tests=str(TESTS), argv=argv)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + HANG_GUARD_S  # hang guards: each loop ends as soon as its condition holds
        family: set[int] = set()
        while time.monotonic() < deadline and len(family) < 3:  # forkserver + 2 workers at least
            time.sleep(0.5)
            family = _descendants(proc.pid)
        assert len(family) >= 3, f"workers never started: {family}"
        time.sleep(2)  # the workers are spinning on corrupted streams now
        family = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 300  # they die at once (parent-death signal); 300 s only bounds a failure
        while time.monotonic() < deadline and any(_alive(p) for p in family):
            time.sleep(0.2)
        assert not [p for p in family if _alive(p)], "decode workers outlived the harness"
    finally:
        if proc.poll() is None:
            proc.kill()


def _spinners(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.slow
def test_the_ci_suite_gives_the_same_rows_on_a_loaded_machine(tmp_path):
    """The regression suite's rows (statuses, bytes, metrics; timings aside) on an idle machine and with
    four CPU-bound processes per core competing with it."""
    suite = load_suite("ci")
    run(RunOptions(suite, tmp_path / "idle", workers=2, progress=False))
    load = _spinners(4 * (os.cpu_count() or 2))
    try:
        run(RunOptions(suite, tmp_path / "loaded", workers=2, progress=False))
    finally:
        for p in load:
            p.kill()
            p.wait()
    idle, loaded = (stored_cells(tmp_path / d).drop(columns=TIMING) for d in ("idle", "loaded"))
    assert len(idle) == len(loaded) > 100
    assert idle.equals(loaded)
