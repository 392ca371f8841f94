"""Every command the README shows runs (issue #16: the quick start's own command had rotted).

The commands are read from the README's ``bash`` blocks and run in order in a scratch directory that holds a
copy of the shipped weights (some commands write into them) and a link to ``reports/``. Long ones are
shrunk the way a reader would try them first: one image and one seed, two fine-tuning steps, the training
recipe's ``--help``, a dry run of the fine-tune-then-evaluate suite. Commands that need files the reader must provide
(official checkpoints, a local Kodak, their own suite) must end with exit 2 and one line naming what is missing.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
SHRINK = {"--limit-images": "1", "--seeds": "1", "--steps": "2", "--val-every": "1"}
RECIPES = {"harness.train.tiny", "harness.train.ldm_rsic_tiny", "harness.train.dicm_tiny"}


def readme_commands() -> list[list[str]]:
    """The ``.venv/bin/python ...`` commands of the README's bash blocks, continuation lines joined."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens and tokens[0] != ".venv/bin/python":  # e.g. `salloc --gpus 1 .venv/bin/python ...`
                tokens = tokens[1:]
            if tokens:
                out.append(tokens)
    return out


def _provided_by_reader(tokens: list[str], cwd: Path) -> list[str]:
    """Files the command names that a reader must provide (official weights, their own suites and data)."""
    wanted = [t for t in tokens[1:] if t.endswith((".ckpt", ".toml")) or t.startswith("/data")]
    return [t for t in wanted if not (cwd / t).exists()]


def adapt(tokens: list[str]) -> list[str]:
    argv = [sys.executable, *tokens[1:]]
    for i, t in enumerate(argv[:-1]):
        if t in SHRINK:
            argv[i + 1] = SHRINK[t]
    if len(tokens) > 2 and tokens[1] == "-m" and tokens[2] in RECIPES:  # 35-60 minute trainings: their stages are
        argv.append("--help")  # tested in their own tests; here, that the command and its flags exist
    if tokens[1:3] == ["-m", "harness.train.dicm_eval"]:  # 24 held-out pairs, 2 min: two of them
        argv += ["--images", "2"]
    if "evaluate.py" in tokens and "--suite" in tokens:
        suite = tokens[tokens.index("--suite") + 1]
        if suite == "ood_finetune":  # 20 min of fine-tuning: resolve it, do not run it
            argv.append("--dry-run")
        elif suite.startswith("ci"):  # the regression suites run as committed (their baselines are compared)
            pass
        elif "--limit-images" not in argv:
            argv += ["--limit-images", "1", "--seeds", "1"]
        argv.append("--no-progress")
    if "finetune" in tokens and "--limit-images" not in argv:
        argv += ["--limit-images", "3", "--no-progress"]
    return argv


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "weights", cwd / "weights", ignore=shutil.ignore_patterns("train"))  # some commands write
    (cwd / "reports").symlink_to(ROOT / "reports")
    (cwd / "evaluate.py").symlink_to(ROOT / "evaluate.py")
    return cwd


def test_the_readme_shows_the_commands_a_user_runs():
    commands = [" ".join(c) for c in readme_commands()]
    assert any("--suite bit_errors" in c for c in commands) and any("weights check" in c for c in commands)
    assert len(commands) >= 15


@pytest.mark.slow
def test_every_readme_command_runs(scratch):
    failures = []
    for tokens in readme_commands():
        argv = adapt(tokens)
        missing = _provided_by_reader(tokens, scratch)
        done = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=900)
        shown = " ".join(tokens)
        errors = [line for line in done.stderr.splitlines() if line.startswith("evaluate.py: error")]
        if "weights check" in shown:
            if done.returncode not in (0, 1) or "Traceback" in done.stderr:  # 1: the official files are not here
                failures.append(f"{shown}: exit {done.returncode}: {done.stderr[-300:]}")
        elif missing:  # the reader's own files: one line, exit 2, naming what is missing
            if done.returncode != 2 or len(errors) != 1 or "Traceback" in done.stderr:
                got = f"exit {done.returncode}: {done.stderr[-300:]}"
                failures.append(f"{shown}: expected exit 2 and one line about {missing}, got {got}")
        elif done.returncode != 0:
            failures.append(f"{shown}: exit {done.returncode}: {done.stderr[-500:]}")
    assert not failures, "\n".join(failures)
