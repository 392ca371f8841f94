"""Issue #16: every error a user can cause ends in one line naming the cause and the fix, exit 2, no traceback.
Here: ``regress`` against the wrong baseline or run directory, and RDEIC weights given on the command line."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT

from harness.cli import main

SUITE = """name = "{name}"
seed = 7
seeds = 1
metrics = ["psnr"]
timeout_s = 60
[[datasets]]
name = "samples"
limit_images = 1
preprocessing = "center_crop(size=64)"
[[codecs]]
codec = "jpeg2000"
label = "j"
options = {{ target_bpp = 0.5 }}
[[corruptions]]
corruption = "bsc"
scopes = ["all"]
grid = {{ ber = [0.0, 1e-3] }}
{fec}
"""


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("evaluate.py: error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f in err, (f, err)
    return err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two small JPEG2000 runs, one with an FEC variant (its table has a ``fec`` key column), one without, and
    the baseline of each (written by ``--update``)."""
    base = tmp_path_factory.mktemp("regress")
    out = {}
    for name, fec in (("with_fec", 'fec = ["none", { n = 255, k = 223 }]'), ("plain", "")):
        suite = base / f"{name}.toml"
        suite.write_text(SUITE.format(name=name, fec=fec))
        run = base / name
        assert main(["--suite", str(suite), "--out", str(run), "--no-progress", "--workers", "1"]) == 0
        baseline = base / "baselines" / f"{name}.csv"
        assert main(["regress", str(run), "--baseline", str(baseline), "--update"]) == 0
        out[name] = (run, baseline)
    return out


def test_own_baselines_pass(runs, capsys):
    for run, baseline in runs.values():
        assert main(["regress", str(run), "--baseline", str(baseline)]) == 0
        assert "OK: within tolerances" in capsys.readouterr().out


def test_baseline_keyed_by_a_column_the_run_lacks(runs, capsys):
    """The old failure: the ``ci`` baseline (keyed by fec) against a run without FEC ended in KeyError: 'fec'."""
    run, _ = runs["plain"]
    _, other = runs["with_fec"]
    assert main(["regress", str(run), "--baseline", str(other)]) == 2
    one_line_error(capsys, str(other), "suite 'plain'", "keys its rows by fec", f"use {runs['plain'][1]}")


def test_baseline_without_a_key_column_the_run_splits_by(runs, capsys):
    run, _ = runs["with_fec"]
    _, other = runs["plain"]
    assert main(["regress", str(run), "--baseline", str(other)]) == 2
    one_line_error(capsys, "splits its rows by fec", f"use {runs['with_fec'][1]}")


def test_another_suites_committed_baseline(runs, capsys):
    run, _ = runs["plain"]
    assert main(["regress", str(run), "--baseline", str(ROOT / "reports" / "baselines" / "ci_rdeic.csv")]) == 2
    one_line_error(capsys, "named after suite 'ci_rdeic'", "none of its", "rdeic-tiny@low", "the run has codecs j")


def test_a_summary_csv_is_not_a_baseline(runs, capsys):
    run, _ = runs["plain"]
    assert main(["regress", str(run), "--baseline", str(run / "summary.csv")]) == 2
    one_line_error(capsys, "columns no regression baseline has", "summary.csv")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x89\xff\xfe garbage \x00\x01", "not a readable CSV table"),
        (b"a,b\n1,2\n", "not a regression baseline"),
        (b"", "not a readable CSV table"),
        (b"dataset,preprocessing,codec,corruption,scope,level,ok\n", "has no rows"),
    ],
)
def test_garbled_baselines(runs, tmp_path, capsys, content, fragment):
    run, _ = runs["plain"]
    bad = tmp_path / "b.csv"
    bad.write_bytes(content)
    assert main(["regress", str(run), "--baseline", str(bad)]) == 2
    one_line_error(capsys, str(bad), fragment)


def test_missing_baseline_directory_and_garbled_sidecar(runs, tmp_path, capsys):
    run, baseline = runs["plain"]
    assert main(["regress", str(run), "--baseline", str(tmp_path / "none.csv")]) == 2
    one_line_error(capsys, "no baseline at", "--update")
    assert main(["regress", str(run), "--baseline", str(tmp_path)]) == 2
    one_line_error(capsys, "is a directory")
    copy = tmp_path / "copy.csv"
    shutil.copy(baseline, copy)
    (tmp_path / "copy.libraries.json").write_text("{not json")
    assert main(["regress", str(run), "--baseline", str(copy)]) == 2
    one_line_error(capsys, "copy.libraries.json", "not valid JSON")


def test_run_directories_without_results(runs, tmp_path, capsys):
    _, baseline = runs["plain"]
    assert main(["regress", str(tmp_path / "nowhere"), "--baseline", str(baseline)]) == 2
    one_line_error(capsys, "no run directory")
    assert main(["regress", str(tmp_path), "--baseline", str(baseline)]) == 2
    one_line_error(capsys, "has no results.sqlite")
    (tmp_path / "results.sqlite").write_bytes(b"this is not sqlite" * 100)
    assert main(["regress", str(tmp_path), "--baseline", str(baseline)]) == 2
    one_line_error(capsys, "cannot be read as a results store")


def test_update_never_overwrites_another_suites_baseline_or_a_foreign_file(runs, tmp_path, capsys):
    run, _ = runs["plain"]
    _, other = runs["with_fec"]
    before = other.read_bytes()
    assert main(["regress", str(run), "--baseline", str(other), "--update"]) == 2
    one_line_error(capsys, "will not overwrite")
    assert other.read_bytes() == before
    foreign = tmp_path / "data.csv"
    foreign.write_text("x,y\n1,2\n")
    assert main(["regress", str(run), "--baseline", str(foreign), "--update"]) == 2
    one_line_error(capsys, "is not a baseline", "will not overwrite")
    assert foreign.read_text() == "x,y\n1,2\n"
    fresh = tmp_path / "new" / "plain.csv"
    assert main(["regress", str(run), "--baseline", str(fresh), "--update"]) == 0 and fresh.is_file()


# -- RDEIC weights through the CLI (the checkpoint-level cases are in test_weights_check.py) -------------------
RDEIC_SUITE = """name = "w"
seed = 7
seeds = 1
metrics = ["psnr"]
timeout_s = 60
[[datasets]]
name = "samples"
limit_images = 1
preprocessing = "center_crop(size=64)"
[[codecs]]
codec = "rdeic"
label = "r"
options = {{ config = "test", z_coding = "fixed_length"{extra} }}
[[corruptions]]
corruption = "bsc"
scopes = ["all"]
grid = {{ ber = [0.0] }}
"""


def test_random_bytes_as_sd_ckpt_name_the_file_and_the_official_source(tmp_path, capsys):
    junk = tmp_path / "v2-1_512-ema-pruned.ckpt"
    junk.write_bytes(bytes(range(256)) * 64)
    suite = tmp_path / "w.toml"
    suite.write_text(RDEIC_SUITE.format(extra=""))
    argv = ["--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress", "--workers", "1"]
    assert main([*argv, "--sd-ckpt", str(junk), "--rdeic-ckpt", str(junk)]) == 2
    one_line_error(capsys, str(junk), "not a PyTorch checkpoint or a safetensors file", "stable-diffusion-2-1-base")


def test_weights_of_another_config_say_which_config_they_fit(tmp_path, capsys):
    tiny = ROOT / "weights" / "rdeic-tiny" / "rdeic-tiny-low.safetensors"
    weights = tmp_path / "mine.safetensors"
    shutil.copy(tiny, weights)  # a copy: no text cache beside it, nothing written next to the shipped file
    suite = tmp_path / "w.toml"
    suite.write_text(RDEIC_SUITE.format(extra=f', weights = "{weights}"'))
    argv = ["--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress", "--workers", "1"]
    assert main(argv) == 2
    one_line_error(capsys, "do not fit config 'test'", "missing", "shape of", "config 'tiny'")


def test_weight_flags_leave_configs_with_their_own_weights_alone():
    from harness.codecs.rdeic.flags import with_weight_flags
    from harness.config import load_suite

    suite = load_suite("ci_rdeic")  # rdeic-tiny@low only: its preset names its weights file
    flagged = with_weight_flags(suite, "/w/rdeic_2_step2.ckpt", "/w/v2-1_512-ema-pruned.ckpt")
    tiny = [c for c in flagged.codecs if c.codec == "rdeic-tiny@low"]
    assert tiny and all("sd_ckpt" not in c.options for c in tiny)
    added = [c for c in flagged.codecs if c.codec == "rdeic"]
    assert len(added) == 1 and added[0].options["sd_ckpt"] == "/w/v2-1_512-ema-pruned.ckpt"


def test_metrics_check_reports_an_unreadable_weight_file_instead_of_a_traceback(monkeypatch, capsys):
    import harness.commands.metrics as cmd

    def unreadable(name):
        if name == "lpips":
            raise PermissionError(13, "Permission denied", "/hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth")
        return True, "no weights"

    monkeypatch.setattr(cmd, "availability", unreadable)
    assert main(["metrics", "check", "--metric", "psnr,lpips"]) == 1
    out = capsys.readouterr().out
    assert "ok  psnr" in out and "MISSING lpips" in out
    assert "cannot read a weight file /hub/pyiqa/LPIPS_v0.1_alex-df73285e.pth: Permission denied" in out


# -- issue #23: the rest of the kind, each through a real `evaluate.py` process ------------------------------------
def _evaluate(*argv: str, cwd=None, env: dict | None = None, preexec=None):
    """``python evaluate.py ARGV`` in a subprocess: (exit code, stderr lines)."""
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), *argv],
        cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=1200,  # a hang guard far above the work (seconds)
        preexec_fn=preexec,
    )
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()]


def _one_error_line(code: int, lines: list[str], *fragments: str) -> str:
    assert code == 2, (code, lines)
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: "), lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def _small_suite(path, name: str = "u") -> str:
    path.write_text(SUITE.format(name=name, fec=""))
    return str(path)


def test_a_suite_file_that_is_not_utf8(tmp_path):
    suite = tmp_path / "latin1.toml"
    suite.write_bytes(("# café\n" + SUITE.format(name="l", fec="")).encode("latin-1"))
    code, lines = _evaluate("--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress")
    _one_error_line(code, lines, str(suite), "not UTF-8", "0xe9", "save it as UTF-8")


def test_out_naming_an_existing_file_is_refused_and_the_file_kept(tmp_path):
    suite = _small_suite(tmp_path / "s.toml")
    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    for out in (taken, taken / "run"):
        code, lines = _evaluate("--suite", suite, "--out", str(out), "--no-progress", "--dry-run")
        if code == 0:  # --dry-run writes nothing: the real run must refuse
            code, lines = _evaluate("--suite", suite, "--out", str(out), "--no-progress")
        _one_error_line(code, lines, str(taken), "is a file, not a folder")
    assert taken.read_text() == "mine"


def test_a_damaged_results_store_is_named_and_left_as_it_is(tmp_path):
    suite = _small_suite(tmp_path / "s.toml")
    run = tmp_path / "run"
    run.mkdir()
    damaged = bytes(range(256)) * 40
    (run / "results.sqlite").write_bytes(damaged)
    code, lines = _evaluate("--suite", suite, "--out", str(run), "--no-progress", "--workers", "1")
    _one_error_line(code, lines, "results.sqlite", "not a readable results store", "--fresh")
    assert (run / "results.sqlite").read_bytes() == damaged  # nothing finished is thrown away unasked


def test_the_disk_filling_during_a_cache_write(tmp_path):
    """The kernel's file-size limit stands in for a full disk: numpy.save then reports a short write without an
    errno (the old traceback). The clean decode of a sample (>= 256x256x3 bytes) is the first file above it."""
    import resource
    import signal

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))

    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(name="full", fec="").replace('preprocessing = "center_crop(size=64)"\n', ""))
    run = tmp_path / "run"
    code, lines = _evaluate(
        "--suite", str(suite), "--out", str(run), "--no-progress", "--workers", "1", preexec=small_files
    )
    _one_error_line(code, lines, "run the same command again", "finished cells are kept")
    assert not list((run / "cache").rglob(".tmp-*")), "a failed cache write leaves no temporary file"


def test_rdeic_ckpt_without_sd_ckpt_is_an_error_not_rdeic_tiny(tmp_path):
    env = {"RDEIC_CKPT": "", "RDEIC_SD_CKPT": ""}
    ckpt = tmp_path / "rdeic_2_step2.ckpt"
    code, lines = _evaluate("--suite", "bit_errors", "--rdeic-ckpt", str(ckpt), "--dry-run", env=env)
    _one_error_line(code, lines, "--sd-ckpt", "needs both files")
    code, lines = _evaluate("--suite", "bit_errors", "--sd-ckpt", str(ckpt), "--dry-run", env=env)
    _one_error_line(code, lines, "--rdeic-ckpt", "needs both files")


WORKER_LOSES_ITS_PARENT = """
import os, sys, time
import numpy as np
import fake_codecs
from harness.workers import _spec_key, _worker_main, default_context


def main():
    codec = fake_codecs.FakeCodec(mode="burn", sleep_s=1.0)
    data = codec.encode(np.zeros((16, 16, 3), np.uint8)).data
    ctx = default_context()
    parent, child = ctx.Pipe(duplex=True)
    proc = ctx.Process(target=_worker_main, args=(child, os.getpid()))
    proc.start()
    child.close()
    parent.send(("load", codec.spec()))
    assert parent.recv()[0] == "ok"
    parent.send(("parse", _spec_key(codec.spec()), data, (16, 16), 60.0, 1 << 30, None))
    time.sleep(0.2)
    parent.close()  # what kill -9 of the harness does to the pipe, while the worker is still parsing
    proc.join(60)
    print("exitcode", proc.exitcode)


if __name__ == "__main__":
    main()
"""


def test_a_worker_whose_harness_died_mid_parse_leaves_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "orphan.py"
    script.write_text(WORKER_LOSES_ITS_PARENT)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests'}{os.pathsep}{ROOT}"}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "exitcode 0"


def test_a_utf8_suite_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors write a BOM before UTF-8 text; tomllib calls it an invalid statement. Not a user error."""
    suite = tmp_path / "bom.toml"
    suite.write_bytes(b"\xef\xbb\xbf" + SUITE.format(name="bom", fec="").encode())
    assert main(["--suite", str(suite), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
