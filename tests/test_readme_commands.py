"""Every command the README and ``docs/`` show runs (issue #16: the quick start's own command had rotted; issue #27:
every page of ``docs/``, its Python and TOML blocks too).

What is read: each ``bash`` block's ``.venv/bin/python ...`` lines (continuation lines joined; ``make`` lines are
the Makefile's, tested by running the suites they run), each ``python`` block (run as a script, as a reader would
save it: so a block that would re-run itself in every forkserver worker without an ``if __name__ == "__main__":``
guard fails here), each ``toml`` block (parsed; a whole suite is also checked as a suite).

How it stays cheap (issue #27: this test alone took 600 s of a 21-minute ``make test`` on 2 idle cores):

- one scratch directory and one run directory per suite for every command: a command repeated on two pages, or
  repeated on purpose ("again: resumes"), runs once;
- a suite command runs for real only when a later command reads its run directory (``report``, ``regress``,
  ``merge``), shrunk the way a reader would try it first (one image, one seed; the ``ci*`` regression suites as
  committed, since their baselines are compared). Every other suite command runs with ``--dry-run``: the point of
  such a line on a page is that its suite, codecs, options, flags, weights and datasets resolve, and a dry run
  checks all of that (running it would test the runner, which its own tests do);
- the training recipes run ``--help`` (35-60 minute trainings, tested stage by stage in their own tests), and so do
  the RDEIC-tiny and LDM-RSIC-tiny held-out evaluations (their model-card tests repeat the measurement); DICM-tiny's
  runs on two images, the fine-tuning for two steps;
- commands that need files the reader must provide (official checkpoints, a local Kodak, their own suite) must
  end with exit 2 and one line naming what is missing.

Verdicts never depend on time: the subprocess limit is a hang guard far above any command here.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

HANG_GUARD_S = 3600  # a hang guard only (the slowest command here, the ci suite, takes ~1 min on 2 loaded cores)
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
SHRINK = {"--limit-images": "1", "--seeds": "1", "--steps": "2", "--val-every": "1"}
#: the training recipes (35-60 min) and the two held-out evaluations whose measurement the model-card tests repeat
#: (tests/test_rdeic_tiny.py, tests/test_ldm_rsic_tiny.py call their ``measure``): here, that the command and its
#: flags exist (``--help`` after them: argparse reads every flag before it)
HELP_ONLY = {
    "harness.train.tiny",
    "harness.train.ldm_rsic_tiny",
    "harness.train.dicm_tiny",
    "harness.train.evaluate",
    "harness.train.ldm_rsic_evaluate",
}
#: held-out evaluation scripts and how to shrink them (they accept these flags)
EVALUATIONS = {"harness.train.dicm_eval": ["--images", "2"]}
READS_RUN_DIR = {"report", "regress", "merge"}
READER_FILES = (".ckpt", ".toml", ".pth", ".tar", ".pt", ".safetensors", ".h5")


def blocks(page: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", page.read_text(), flags=re.S)


def doc_commands(pages: list[Path] = PAGES) -> list[tuple[str, list[str]]]:
    """(page name, tokens) of every ``.venv/bin/python ...`` line of the pages' bash blocks, in page order."""
    out = []
    for page in pages:
        for block in blocks(page, "bash"):
            for line in block.replace("\\\n", " ").splitlines():
                tokens = shlex.split(line, comments=True)
                while tokens and tokens[0] != ".venv/bin/python":  # e.g. `salloc --gpus 1 .venv/bin/python ...`
                    tokens = tokens[1:]
                if tokens:
                    out.append((page.name, tokens))
    return out


def readme_commands() -> list[list[str]]:
    """The README's own commands (kept for the quick-start checks below)."""
    return [tokens for _, tokens in doc_commands([README])]


def provided_by_reader(tokens: list[str], cwd: Path) -> list[str]:
    """Files the command names that a reader must provide (official weights, their own suites and data): plain
    arguments and ``--set CODEC.OPTION=PATH`` values."""
    values = [t.rpartition("=")[2] if "=" in t else t for t in tokens[1:]]
    wanted = [v for v in values if v.endswith(READER_FILES) or v.startswith("/data")]
    return [v for v in wanted if not (cwd / v).exists()]


def _suite_out(tokens: list[str]) -> str | None:
    """The run directory a suite command writes (``--out`` or ``runs/<suite name>``), None for other commands."""
    if "--suite" not in tokens:
        return None
    if "--out" in tokens:
        return tokens[tokens.index("--out") + 1]
    suite = tokens[tokens.index("--suite") + 1]
    return f"runs/{Path(suite).stem if suite.endswith('.toml') else suite}"


def _reads(tokens: list[str]) -> str | None:
    """The run directory a ``report`` / ``regress`` / ``merge`` command reads."""
    if len(tokens) > 3 and tokens[1] == "evaluate.py" and tokens[2] in READS_RUN_DIR:
        return tokens[3]
    return None


def adapt(tokens: list[str], real_run: bool) -> list[str]:
    """The argv that runs ``tokens`` here (see the module docstring)."""
    argv = [sys.executable, *tokens[1:]]
    for i, t in enumerate(argv[:-1]):
        if t in SHRINK:
            argv[i + 1] = SHRINK[t]
    module = tokens[2] if len(tokens) > 2 and tokens[1] == "-m" else ""
    if module in HELP_ONLY:
        argv.append("--help")
    argv += EVALUATIONS.get(module, [])
    if "evaluate.py" in tokens and "--suite" in tokens:
        suite = tokens[tokens.index("--suite") + 1]
        if not real_run:
            argv += [] if "--dry-run" in argv else ["--dry-run"]
        elif not Path(suite).stem.startswith("ci") and "--limit-images" not in argv:
            argv += ["--limit-images", "1", "--seeds", "1"]
        argv.append("--no-progress")
    if "finetune" in tokens and "--limit-images" not in argv:
        argv += ["--limit-images", "3", "--no-progress"]
    return argv


def plan(commands: list[tuple[str, list[str]]], cwd: Path) -> list[tuple[str, list[str], list[str]]]:
    """(page, tokens, argv) of each distinct command in order: suite runs are real only when a later command reads
    their run directory and the reader has nothing to provide (a missing file stops a dry run the same way)."""
    read_later = {d for _, t in commands if (d := _reads(t))}
    seen: set[tuple[str, ...]] = set()
    out = []
    for page, tokens in commands:
        real = _suite_out(tokens) in read_later and not provided_by_reader(tokens, cwd)
        argv = adapt(tokens, real_run=real)
        if tuple(argv) not in seen:
            seen.add(tuple(argv))
            out.append((page, tokens, argv))
    return out


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "weights", cwd / "weights", ignore=shutil.ignore_patterns("train"))  # some commands write
    (cwd / "reports").symlink_to(ROOT / "reports")
    (cwd / "evaluate.py").symlink_to(ROOT / "evaluate.py")
    return cwd


def test_the_readme_is_short_and_shows_the_commands_a_user_runs():
    commands = [" ".join(c) for c in readme_commands()]
    assert any("--suite bit_errors" in c for c in commands) and any("--list" in c for c in commands)
    assert any("--set " in c for c in commands)  # official weights from the command line
    text = README.read_text()
    assert "make demo" in text and "make test" in text and "docs/index.md" in text
    assert len(text.splitlines()) <= 150


def test_every_docs_page_is_linked_from_the_index():
    index = (ROOT / "docs" / "index.md").read_text()
    missing = [p.name for p in PAGES[1:] if p.name != "index.md" and f"({p.name})" not in index]
    assert not missing


def test_docs_links_point_to_files():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith(("http://", "https://")) and not (page.parent / target).exists():
                broken.append(f"{page.name}: {target}")
    assert not broken


def test_the_plan_shares_runs_and_dry_runs_what_nothing_reads():
    commands = [
        ("a", [".venv/bin/python", "evaluate.py", "--suite", "bit_errors", "--limit-images", "4", "--seeds", "2"]),
        ("a", [".venv/bin/python", "evaluate.py", "--suite", "bit_errors", "--limit-images", "4", "--seeds", "2"]),
        ("b", [".venv/bin/python", "evaluate.py", "report", "runs/bit_errors"]),
        ("b", [".venv/bin/python", "evaluate.py", "--suite", "side_info"]),
    ]
    planned = plan(commands, ROOT)
    assert len(planned) == 3  # the repeated command runs once
    assert planned[0][2][-5:] == ["--limit-images", "1", "--seeds", "1", "--no-progress"]  # real, shrunk
    assert planned[2][2][-2:] == ["--dry-run", "--no-progress"]  # nothing reads runs/side_info


def test_toml_blocks_parse_and_whole_suites_are_valid_suites():
    from harness.config import parse_finetune, parse_suite

    problems = []
    for page in PAGES:
        for text in blocks(page, "toml"):
            try:
                data = tomllib.loads(text)
                if "name" in data and "corruptions" in data:
                    parse_suite(text, f"{page.name} block")
                elif "finetune" in data:  # a [finetune] table to copy into a suite
                    parse_finetune(data["finetune"], f"{page.name} block")
            except Exception as exc:  # every kind: the block is what a reader copies
                problems.append(f"{page.name}: {type(exc).__name__}: {exc}")
    assert not problems


@pytest.mark.slow
def test_every_python_block_runs_as_a_script(scratch):
    failures = []
    for page in PAGES:
        for i, text in enumerate(blocks(page, "python")):
            script = scratch / f"{page.stem}_{i}.py"
            script.write_text(text)
            done = subprocess.run(
                [sys.executable, script.name], cwd=scratch, capture_output=True, text=True, timeout=HANG_GUARD_S
            )
            if done.returncode != 0:
                failures.append(f"{page.name} block {i}: exit {done.returncode}: {done.stderr[-800:]}")
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_every_docs_command_runs(scratch):
    failures, seconds = [], []
    for page, tokens, argv in plan(doc_commands(), scratch):
        missing = provided_by_reader(tokens, scratch)
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=HANG_GUARD_S)
        seconds.append((time.perf_counter() - started, " ".join(argv[1:])))
        shown = f"{page}: {' '.join(tokens)}"
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
    for took, what in sorted(seconds, reverse=True)[:8]:  # shown with -s or on failure: where the time goes
        print(f"{took:7.1f} s  {what}")
    assert not failures, "\n".join(failures)
