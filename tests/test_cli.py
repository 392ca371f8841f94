from __future__ import annotations

import re
import subprocess
import sys

import pytest
from conftest import HANG_GUARD_S, ROOT

from harness.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--suite", "nope"], "unknown suite 'nope'"),
        (["--seeds", "0", "--suite", "demo"], "positive integer"),
        (["--suite", "demo", "--codec", "jpeg3000"], "codec jpeg3000 not in this suite"),
        ([], "give --suite"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_demo_suite_runs_and_second_call_does_no_new_work(tmp_path):
    cmd = [
        sys.executable,
        "evaluate.py",
        "--suite",
        "demo",
        "--limit-images",
        "2",
        "--seeds",
        "1",
        "--out",
        str(tmp_path / "demo"),
        "--no-progress",
    ]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert first.returncode == 0, first.stderr
    headline = "bsc (ber in flip probability per bit), scope all: failure % [Wilson 95% CI]"
    assert "jpeg2000@rdeic-tiny" in first.stdout and headline in first.stdout
    # what reaches the terminal fits 100 columns and carries no library noise (ninja, torch.jit, CUDA)
    assert not [line for line in first.stdout.splitlines() if len(line) > 100]
    assert not re.search(r"ninja|FutureWarning|CUDA|torch\.jit", first.stdout + first.stderr), first.stderr
    assert (tmp_path / "demo" / "summary.csv").is_file() and (tmp_path / "demo" / "summary.md").is_file()
    planned = int(re.search(r"(\d+) cells planned, 0 already done", first.stdout).group(1))
    assert planned == 48  # 2 images x (42/2 RDEIC-tiny + JPEG2000 cells, + 3 clean VAE-only cells)
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert f"{planned} cells planned, {planned} already done, 0 computed" in second.stdout
