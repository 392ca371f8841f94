"""End-to-end behaviour of a suite run: statuses, controls, memoisation, determinism, resume."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from conftest import HANG_GUARD_S, ROOT, TESTS, stored_cells, write_suite

from harness.config import SuiteError, load_suite
from harness.runner import ControlError, RunOptions, make_plan, run

BSC = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = {{ ber = [{levels}] }}'
TIMING = ["corrupt_s", "encode_s", "finished_at"]


def fake(mode: str, label: str | None = None) -> str:
    return f'[[codecs]]\ncodec = "fake"\nlabel = "{label or mode}"\noptions = {{ mode = "{mode}" }}\n'


def _run(tmp_path, suite_text_path, out="run", **kw):
    opts = RunOptions(suite=load_suite(str(suite_text_path)), out=tmp_path / out, workers=2, progress=False, **kw)
    return run(opts), opts


def test_every_failure_mode_gets_its_status_and_the_sweep_finishes(tmp_path):
    codecs = "".join(fake(m) for m in ("ok", "segfault", "hang", "raise", "nan", "wrong_shape"))
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=BSC.format(levels="0.0, 0.01"), timeout_s=1.5)
    result, _ = _run(tmp_path, suite)
    cells = stored_cells(tmp_path / "run")
    assert result.computed == len(cells) == 6 * 2 * 2 * 2  # codecs x images x levels x seeds
    corrupted = cells[cells["level"] == "ber=0.01"].groupby("codec_label")["status"].agg(set).to_dict()
    assert corrupted == {
        "ok": {"ok"},
        "segfault": {"crash"},
        "hang": {"timeout"},
        "raise": {"exception"},
        "nan": {"invalid_output"},
        "wrong_shape": {"invalid_output"},
    }
    assert set(cells.loc[cells["level"] == "ber=0", "status"]) == {"ok"}
    crashed = cells[cells["codec_label"] == "segfault"]
    assert set(crashed.loc[crashed["status"] == "crash", "error_type"]) == {"SIGSEGV"}
    # failures carry no quality numbers: never a PSNR of 0 averaged in
    assert cells.loc[cells["status"] != "ok", "metric.psnr"].isna().all()


def test_ber_zero_reproduces_clean_decode_and_identical_streams_decode_once(tmp_path):
    # ~3 Mbit streams at BER 1e-7: about 0.3 expected flips, so most corrupted streams equal the clean one.
    suite = write_suite(tmp_path / "s.toml", codecs=fake("ok"), corruptions=BSC.format(levels="0.0, 1e-7"), seeds=3)
    result, _ = _run(tmp_path, suite)
    cells = stored_cells(tmp_path / "run")
    untouched = cells[cells["actual_flips"] == 0]
    assert len(untouched) > len(cells) / 2 and (cells.loc[cells["level"] == "ber=0", "actual_flips"] == 0).all()
    assert (untouched["metric.psnr_vs_clean"] == float("inf")).all()
    assert (untouched["metric.psnr"] == untouched["metric.clean_psnr"]).all()
    # the control decoded each clean stream once and every untouched cell reused that decode
    assert untouched["memoised"].all()
    assert result.decodes == (cells["actual_flips"] > 0).sum() > 0


def test_same_seed_same_rows(tmp_path):
    codecs = '[[codecs]]\ncodec = "jpeg2000"\noptions = { target_bpp = 0.25 }\n'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=BSC.format(levels="0.0, 1e-3"))
    _run(tmp_path, suite, out="a")
    _run(tmp_path, suite, out="b")
    a, b = (stored_cells(tmp_path / d).drop(columns=TIMING) for d in ("a", "b"))
    assert len(a) == 8 and (a["actual_flips"] > 0).any()
    assert a.equals(b)


def test_control_stops_a_nondeterministic_decoder(tmp_path):
    codecs = '[[codecs]]\ncodec = "fake_nondeterministic"\n'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=BSC.format(levels="0.0"))
    with pytest.raises(ControlError, match="does not reproduce the clean decode"):
        _run(tmp_path, suite)


def test_broken_codec_stops_before_a_table(tmp_path):
    suite = write_suite(
        tmp_path / "s.toml", codecs='[[codecs]]\ncodec = "fake_broken"\n', corruptions=BSC.format(levels="0.0")
    )
    with pytest.raises(ControlError, match="below the codec's floor"):
        _run(tmp_path, suite)


def test_suite_errors_are_found_before_work(tmp_path):
    j2k = '[[codecs]]\ncodec = "jpeg2000"\n'
    bad_scope = BSC.format(levels="0.0").replace('"payload"', '"y"')
    with pytest.raises(SuiteError, match="scope 'y' is not offered"):
        make_plan(
            RunOptions(load_suite(str(write_suite(tmp_path / "a.toml", codecs=j2k, corruptions=bad_scope))), tmp_path)
        )
    with pytest.raises(SuiteError, match="did you mean bsc"):
        make_plan(
            RunOptions(
                load_suite(
                    str(
                        write_suite(
                            tmp_path / "b.toml",
                            codecs=j2k,
                            corruptions=BSC.format(levels="0.0").replace('"bsc"', '"bcs"'),
                        )
                    )
                ),
                tmp_path,
            )
        )
    with pytest.raises(SuiteError, match="ber is a probability"):
        make_plan(
            RunOptions(
                load_suite(str(write_suite(tmp_path / "c.toml", codecs=j2k, corruptions=BSC.format(levels="10")))),
                tmp_path,
            )
        )


LATENT = '[[corruptions]]\ncorruption = "fake_latent_noise"\nscopes = ["image"]\ngrid = { amp = [0, 20] }'


def test_latent_corruption_acts_between_parse_and_reconstruct(tmp_path):
    suite = write_suite(tmp_path / "s.toml", codecs=fake("ok"), corruptions=LATENT)
    result, _ = _run(tmp_path, suite)
    cells = stored_cells(tmp_path / "run")
    assert set(cells["status"]) == {"ok"} and (cells["bits_exposed"] == 0).all()
    zero, noisy = cells[cells["level"] == "amp=0"], cells[cells["level"] == "amp=20"]
    assert (zero["metric.psnr_vs_clean"] == float("inf")).all()
    assert (noisy["metric.psnr_vs_clean"] < 30).all() and (noisy["metric.psnr"] < noisy["metric.clean_psnr"]).all()
    # noise draws depend on the cell: no two cells share a decode; amp = 0 is the identity the controls decoded,
    # so those cells reuse the clean decode (issue #25) instead of decoding it again
    assert noisy["decode_key"].nunique() == len(noisy) and result.decodes == len(noisy)
    assert zero["memoised"].all()


def test_latent_corruption_on_a_codec_without_hooks_is_refused(tmp_path):
    suite = write_suite(tmp_path / "s.toml", codecs='[[codecs]]\ncodec = "jpeg2000"\n', corruptions=LATENT)
    refused = r"latent hook 'image' is not offered by any codec of the suite \('jpeg2000' offers no latent hooks"
    with pytest.raises(SuiteError, match=refused):
        make_plan(RunOptions(load_suite(str(suite)), tmp_path))


DRIVER = (
    "import sys; sys.path.insert(0, {tests!r}); import fake_codecs; fake_codecs.register(); "
    "from harness.cli import main; sys.exit(main({argv!r}))"
)


@pytest.mark.slow
def test_kill_minus_nine_then_resume_gives_exactly_the_planned_cells(tmp_path):
    suite = write_suite(
        tmp_path / "s.toml", codecs=fake("slow"), corruptions=BSC.format(levels="0.0, 0.01"), seeds=30, limit_images=3
    )
    out = tmp_path / "run"
    argv = ["--suite", str(suite), "--out", str(out), "--workers", "2", "--no-progress"]
    cmd = [sys.executable, "-c", DRIVER.format(tests=str(TESTS), argv=argv)]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "results.sqlite"
    deadline = time.monotonic() + HANG_GUARD_S  # a hang guard: the loop ends at 40 stored cells
    done = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
                    done = con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 40:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    expected = {c.key for c in make_plan(RunOptions(load_suite(str(suite)), out)).cells}
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        partial = con.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
    assert 40 <= partial < len(expected) == 3 * 2 * 30
    resumed = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"{partial} already done" in resumed.stdout
    with sqlite3.connect(db) as con:
        keys = [k for (k,) in con.execute("SELECT key FROM cells")]
    assert len(keys) == len(set(keys)) and set(keys) == expected
