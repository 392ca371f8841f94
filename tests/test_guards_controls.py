"""Controls and statuses (issue #23, "Rules that no test guards"; METHODOLOGY.md §2 and §4): the latent
identity control, ``exception`` for a raising reconstruct, ``*_vs_clean`` against the clean decode, and the
CPU-time limit of a parse (SIGXCPU) told apart from the wall-clock backstop.

The mutation each test was checked against is named above it."""

from __future__ import annotations

import math

import guard_fakes
import numpy as np
import pytest
from conftest import HANG_GUARD_S, stored_cells
from fake_codecs import HEADER
from guard_fakes import (
    bsc_entry,
    codec_entry,
    dataset_entry,
    image_folder,
    noise,
    psnr,
    quantized,
    suite_text,
)

from harness.channel import Channel
from harness.codecs.base import create_codec
from harness.config import load_suite
from harness.hashing import pixels_sha256
from harness.runner import ControlError, RunOptions, make_plan, run
from harness.status import Status
from harness.workers import IsolatedWorker, Limits


@pytest.fixture(scope="module", autouse=True)
def _fakes() -> None:
    guard_fakes.register()


def run_text(tmp_path, text: str, out):
    suite = tmp_path / "s.toml"
    suite.write_text(text)
    return run(RunOptions(suite=load_suite(str(suite)), out=out, workers=1, progress=False))


# Mutation: in harness/controls.py run_controls, latent identities are not queued
# (`latent_checks.setdefault(dkey, []).append(...)` removed): the run goes on and stores amp=0 rows that are not
# the clean decode.
def test_a_latent_corruption_whose_identity_level_changes_the_output_stops_the_run(tmp_path):
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 16, 1), "b.png": noise(16, 24, 2)})
    leaky = '[[corruptions]]\ncorruption = "fake_leaky_latent"\nscopes = ["image"]\ngrid = { amp = [0, 3] }\n'
    text = suite_text(datasets=dataset_entry(images), codecs=codec_entry("fake"), corruptions=leaky)
    with pytest.raises(ControlError, match=r"isolated decode through fake_leaky_latent .* does not reproduce"):
        run_text(tmp_path, text, tmp_path / "run")
    assert len(stored_cells(tmp_path / "run")) == 0


def test_the_same_suite_with_a_correct_latent_plugin_runs(tmp_path):
    """The control case of the test above: the well-behaved plugin (identity = no change) passes the control."""
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 16, 1), "b.png": noise(16, 24, 2)})
    good = '[[corruptions]]\ncorruption = "fake_latent_noise"\nscopes = ["image"]\ngrid = { amp = [0, 3] }\n'
    text = suite_text(datasets=dataset_entry(images), codecs=codec_entry("fake"), corruptions=good)
    assert run_text(tmp_path, text, tmp_path / "run").computed == 4
    cells = stored_cells(tmp_path / "run")
    assert (cells[cells["level"] == "amp=0"]["metric.psnr"] == math.inf).all()


# Mutation: harness/decoding.py record_of records any exception from reconstruct as Status.INVALID_OUTPUT
# (`return failed_record(dkey, Status.INVALID_OUTPUT, type_name(result), ...)`).
def test_an_exception_raised_in_reconstruct_is_recorded_as_exception_with_its_type_and_message(tmp_path):
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 16, 3), "b.png": noise(24, 16, 4)})
    text = suite_text(
        datasets=dataset_entry(images),
        codecs=codec_entry("fake_reconstruct_raises"),
        corruptions=bsc_entry("0.0, 0.05"),
        seeds=2,
    )
    run_text(tmp_path, text, tmp_path / "run")
    cells = stored_cells(tmp_path / "run")
    clean, corrupted = cells[cells["level"] == "ber=0"], cells[cells["level"] == "ber=0.05"]
    assert len(clean) == 4 and (clean["status"] == "ok").all()
    assert len(corrupted) == 4 and (corrupted["actual_flips"] > 0).all()  # every payload damaged: reconstruct raises
    assert list(corrupted["status"]) == ["exception"] * 4
    assert set(corrupted["error_type"]) == {"RuntimeError"}
    assert set(corrupted["error_message"]) == {"reconstruct met a damaged state"}


# Mutation: harness/decoding.py measured_record computes f"{name}_vs_clean" against art.original instead of
# art.clean[cell.decode_seed] (with a lossy codec the two differ: the clean decode is not the original).
def test_vs_clean_metrics_are_measured_against_the_clean_decode_not_the_original(tmp_path):
    originals = {"a.png": noise(16, 24, 5), "b.png": noise(24, 16, 6)}
    images = image_folder(tmp_path / "img", originals)
    text = suite_text(
        datasets=dataset_entry(images), codecs=codec_entry("fake_quantizing"), corruptions=bsc_entry("0.0, 0.01")
    )
    suite = tmp_path / "s.toml"
    suite.write_text(text)
    opts = RunOptions(suite=load_suite(str(suite)), out=tmp_path / "run", workers=1, progress=False)
    run(opts)
    cells = stored_cells(tmp_path / "run").set_index("key")
    by_sha = {pixels_sha256(p): p for p in originals.values()}
    plan = make_plan(opts)
    codec, channel = create_codec("fake_quantizing"), Channel()
    assert len(plan.cells) == len(cells) == 4
    for cell in plan.cells:
        original = by_sha[cell.image_sha256]
        clean = quantized(original)  # what this codec decodes the clean stream to
        # the corrupted cell's decode, rebuilt here: the fake's decoder returns the payload bytes as pixels
        received = channel.transmit(cell, codec.encode(original), plan.corruption_of(cell)).data
        decoded = np.frombuffer(received[HEADER.size :], np.uint8).reshape(original.shape)
        row = cells.loc[cell.key]
        assert row["status"] == "ok"
        assert row["metric.psnr"] == pytest.approx(psnr(decoded, original), rel=1e-12)
        assert row["metric.psnr_vs_clean"] == pytest.approx(psnr(decoded, clean), rel=1e-12), cell.level
        assert row["metric.clean_psnr"] == pytest.approx(psnr(clean, original), rel=1e-12)
        if cell.level == "ber=0":  # the clean decode itself: identical to the clean decode, not to the original
            assert row["metric.psnr_vs_clean"] == math.inf and math.isfinite(row["metric.psnr"])


# Mutations: (a) harness/workers.py _set_limits never sets RLIMIT_CPU (`cpu = _NO_LIMIT`): the spin runs until the
# wall backstop (detail "wall-clock backstop"); (b) the `code == -signal.SIGXCPU` branch of IsolatedWorker._request
# removed: the killed worker is called a crash. The wall backstop here is an hour (HANG_GUARD_S) for 1 s of CPU, so
# on any machine, however loaded, only the CPU-time limit can end the spin before it: the detail tells which did.
def test_a_parse_that_burns_cpu_is_stopped_by_its_cpu_time_limit_not_the_wall_backstop():
    codec = create_codec("fake", mode="spin")
    image = noise(16, 16, 7)
    clean = codec.encode(image).data
    corrupted = clean[:-1] + bytes([clean[-1] ^ 1])  # a damaged payload: the fake spins
    limits = Limits(cpu_s=1.0, wall_s=HANG_GUARD_S, memory_bytes=2**28)
    worker = IsolatedWorker()
    try:
        outcome = worker.parse(codec.spec(), corrupted, (16, 16), limits)
    finally:
        worker.close()
    assert outcome.status is Status.TIMEOUT and outcome.error_type == "Timeout"
    assert outcome.error_message == "used more than its CPU-time budget of 1 s; worker killed"
    assert outcome.cpu_s == 1.0
