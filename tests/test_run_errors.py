"""Inputs that used to stop a run, falsify its rows or end in a traceback (issue #16 §4): one image's refusal,
NaN parameters, malformed streams, random temp names in messages, a busy / read-only / full run directory."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import stored_cells, write_suite
from PIL import Image

from harness.cli import main
from harness.codecs.base import InvalidOutput, create_codec, to_output
from harness.config import SuiteError, load_suite, parse_suite
from harness.rundir import RunDirectory, RunDirectoryBusy
from harness.runner import RunOptions, make_plan, run
from harness.store import ResultStore

BSC = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["{scope}"]\ngrid = {{ ber = [{levels}] }}'


def _folder_suite(tmp_path, images: dict[str, np.ndarray], codecs: str, levels: str = "0.0") -> str:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / name)
    path = tmp_path / "s.toml"
    path.write_text(
        f'name = "t"\nseed = 1\nseeds = 1\nmetrics = ["psnr"]\n[[datasets]]\nname = "folder"\npath = "{folder}"\n'
        f"{codecs}\n{BSC.format(scope='all', levels=levels)}\n"
    )
    return str(path)


def _photo(side: int) -> np.ndarray:
    """A crop of a bundled photo (compressible, unlike noise)."""
    path = os.path.join(os.path.dirname(__file__), "..", "datasets", "samples", "coffee.png")
    return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:side, :side])


def test_an_image_the_codec_refuses_is_skipped_with_its_reason_and_the_run_goes_on(tmp_path):
    """A flat image cannot reach 1 bpp within 2 %: it used to end the whole run with exit 2, unnamed."""
    flat = np.full((96, 96, 3), 128, dtype=np.uint8)
    codecs = '[[codecs]]\ncodec = "jpeg2000"\noptions = { target_bpp = 1.0, rate_tolerance = 0.02 }\n'
    suite = _folder_suite(tmp_path, {"flat.png": flat, "photo.png": _photo(96)}, codecs)
    result = run(RunOptions(load_suite(suite), tmp_path / "run", workers=1, progress=False))
    cells = stored_cells(tmp_path / "run")
    assert set(cells["image_id"]) == {"photo.png"} and set(cells["status"]) == {"ok"}
    (skip,) = result.skipped_images
    assert skip["id"] == "flat.png" and skip["stage"] == "encode" and "cannot reach 1.0000 bpp" in skip["error"]
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        recorded = json.loads(store.provenance()["skipped_images"])
    finally:
        store.close()
    assert [s["id"] for s in recorded] == ["flat.png"]


def test_tiles_larger_than_an_image_skip_it_instead_of_a_glymur_traceback(tmp_path):
    codecs = '[[codecs]]\ncodec = "j2k-tiles"\noptions = { target_bpp = 0.5 }\n'
    suite = _folder_suite(tmp_path, {"small.png": _photo(100), "big.png": _photo(160)}, codecs)
    plan = make_plan(RunOptions(load_suite(suite), tmp_path / "run", progress=False))
    assert {c.image_id for c in plan.cells} == {"big.png"}
    (skip,) = plan.skipped_images
    assert skip["id"] == "small.png" and "minimum side of 128 px" in skip["error"]


NAN_CASES = {
    "corruption parameter": ('codec = "jpeg2000"', 'corruption = "latent_gaussian"', "sigma = [nan]"),
    "channel parameter": ('codec = "jpeg2000"', 'corruption = "bsc"', "ber = [nan]"),
    "codec option": ('codec = "jpeg2000"\noptions = { target_bpp = nan }', 'corruption = "bsc"', "ber = [0.0]"),
    "infinite option": ('codec = "jpeg2000"\noptions = { target_bpp = inf }', 'corruption = "bsc"', "ber = [0.0]"),
}


@pytest.mark.parametrize("case", NAN_CASES)
def test_every_float_parameter_must_be_finite(case, tmp_path):
    codec, corruption, grid = NAN_CASES[case]
    text = (
        f'name = "t"\n[[datasets]]\nname = "samples"\n[[codecs]]\n{codec}\n[[corruptions]]\n{corruption}\n'
        f'scopes = ["*"]\ngrid = {{ {grid} }}\n'
    )
    with pytest.raises(SuiteError, match="must be finite"):
        make_plan(RunOptions(parse_suite(text), tmp_path))


@pytest.mark.parametrize(
    "line", ["timeout_s = nan", "timeout_factor = inf", "worker_memory_mb = nan", "clean_psnr_floor_db = nan"]
)
def test_suite_numbers_must_be_finite(line):
    text = f'name = "t"\n{line}\n[[datasets]]\nname = "samples"\n[[codecs]]\ncodec = "jpeg2000"\n[[corruptions]]\n'
    with pytest.raises(SuiteError, match="finite"):
        parse_suite(text + 'corruption = "bsc"\n')


def test_fixed_flips_is_the_published_uniform_experiment():
    from harness.registry import CORRUPTIONS

    data = bytes(range(256)) * 40
    uniform = CORRUPTIONS.get("fixed_flips")(ber=1e-3).apply(data, ((0, len(data)),), np.random.default_rng(3))
    same = CORRUPTIONS.get("burst_fixed")(ber=1e-3, mean_burst_bits=1)
    assert uniform.data == same.apply(data, ((0, len(data)),), np.random.default_rng(3)).data
    assert uniform.actual_flips == int(1e-3 * len(data) * 8)


def test_float_output_is_checked_before_the_cast():
    """NaN cast to uint8 is a plausible pixel: every plugin's float output is checked in the base class."""
    with pytest.raises(InvalidOutput, match="non-finite"):
        to_output(np.full((4, 4, 3), np.nan, dtype=np.float32))
    with pytest.raises(InvalidOutput, match=r"outside \[0, 255\]"):
        to_output(np.full((4, 4, 3), 300.0, dtype=np.float32))
    assert to_output(np.full((2, 2, 3), 7.9, dtype=np.float32), "truncate")[0, 0, 0] == 7
    assert to_output(np.full((2, 2, 3), 7.5, dtype=np.float32), "round")[0, 0, 0] == 8


def test_stored_messages_are_the_same_on_every_run(tmp_path):
    """glymur names the temporary file in its errors: 160 of 2000 cells differed between identical runs."""
    image = np.asarray(Image.open(os.path.join(os.path.dirname(__file__), "..", "datasets", "samples", "coffee.png")))
    image = np.ascontiguousarray(image[:128, :128, :3])
    data = create_codec("jpeg2000", target_bpp=0.5).encode(image).data
    broken = b"\x00" + data[1:]  # no SOC: glymur says "<its temp file> is not a JPEG 2000 file"
    # the header pre-check would refuse it first, with a message of ours: go straight to glymur
    codec = create_codec("fake_j2k_unchecked")
    from harness.workers import IsolatedWorker, Limits

    worker = IsolatedWorker()
    try:
        outcomes = [worker.parse(codec.spec(), broken, (128, 128), Limits(10, 60, 2**28)) for _ in range(2)]
    finally:
        worker.close()
    messages = [o.error_message or "" for o in outcomes]
    assert outcomes[0].status.value != "ok" and messages[0] == messages[1]
    assert "harness-j2k-" not in messages[0] and "/tmp/" not in messages[0] and "<stream>.j2k" in messages[0]


def test_a_second_run_on_a_busy_directory_is_refused_with_the_holder(tmp_path):
    with RunDirectory(tmp_path / "run"), pytest.raises(RunDirectoryBusy, match=r"in use \(pid \d+"):
        RunDirectory(tmp_path / "run").__enter__()
    with RunDirectory(tmp_path / "run"):  # released: a resume is never blocked by a stale lock
        pass


def test_cli_user_errors_end_in_one_line_and_exit_2(tmp_path, capsys):
    corruptions = BSC.format(scope="all", levels="0.0")
    suite = write_suite(tmp_path / "s.toml", codecs='[[codecs]]\ncodec = "fake"\n', corruptions=corruptions)
    with RunDirectory(tmp_path / "busy"):
        assert main(["--suite", str(suite), "--out", str(tmp_path / "busy"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is in use" in err[0]
    # a read-only --out (simulated: the tests may run as root, who can write anywhere)
    readonly = tmp_path / "ro" / "run"
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == readonly:
            raise PermissionError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "mkdir", refuse)
        assert main(["--suite", str(suite), "--out", str(readonly), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0] and str(readonly) in err[0]


def test_a_full_disk_is_one_line_and_keeps_finished_cells(tmp_path, capsys, monkeypatch):
    corruptions = BSC.format(scope="all", levels="0.0, 0.01")
    suite = write_suite(tmp_path / "s.toml", codecs='[[codecs]]\ncodec = "fake"\n', corruptions=corruptions)
    real = ResultStore.write_cell
    written = []

    def fill_up(self, cell, decode, new):
        if len(written) >= 3:
            raise sqlite3.OperationalError("database or disk is full")
        written.append(cell["key"])
        real(self, cell, decode, new)

    monkeypatch.setattr(ResultStore, "write_cell", fill_up)
    assert main(["--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk is full" in err[0] and "finished cells are kept" in err[0]
    assert len(stored_cells(tmp_path / "run")) == 3
