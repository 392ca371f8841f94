"""What the shipped tiny models' recipes share around their training (``harness.train.tiny``, ``ldm_rsic_tiny``,
``dicm_tiny``): the command line, the thread count, the time-stamped log and the ``recipe.json`` record.

Every recipe takes ``--out`` (weights and recipe.json), ``--work`` (resumable checkpoints, default
``<out>/train``), ``--scale`` (step counts multiplied: ``0.01`` is a smoke run), ``--threads`` and
``--no-progress``; a recipe adds its own flags to the parser. The record says what ran and what it cost: the
command, every hyper-parameter, wall and CPU seconds of this invocation (a rerun that resumes counts only its own
part) and the load average, because the machines it runs on are shared and the wall time alone would mislead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch


class Recipe(Protocol):
    threads: int

    def scaled(self, factor: float) -> Any: ...


R = TypeVar("R", bound=Recipe)


def log(msg: str) -> None:
    """One time-stamped line on stderr (a training run's only chatter besides its progress bar)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parser(module: str, doc: str, default_out: str) -> argparse.ArgumentParser:
    """The flags every recipe has; ``module`` is the ``python -m`` name, ``doc`` the module docstring."""
    ap = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    ap.add_argument("--out", default=default_out, help="output folder (weights, recipe.json)")
    ap.add_argument("--work", default=None, help="checkpoint folder (default <out>/train)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every step count (0.01: smoke run)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    return ap


def setup(recipe: R, args: argparse.Namespace) -> tuple[R, Path, Path]:
    """The recipe as the flags change it (scaled, threads) with torch's thread count set, and (out, work)."""
    if args.scale != 1.0:
        recipe = recipe.scaled(args.scale)
    if args.threads:
        recipe.threads = args.threads
    torch.set_num_threads(recipe.threads)
    out = Path(args.out)
    return recipe, out, Path(args.work) if args.work else out / "train"


class Clock:
    """Wall and CPU seconds since the recipe started (CPU: this process, all its threads)."""

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.wall0

    def cpu(self) -> float:
        return time.process_time() - self.cpu0


def write_record(
    out: Path, module: str, argv: list[str] | None, recipe: Any, summary: Any, clock: Clock, **extra: Any
) -> None:
    """``<out>/recipe.json``: the command, every hyper-parameter, ``extra`` (config, training data, loss), the
    summary, and what this invocation cost; then the closing log line."""
    wall = clock.wall()
    record = {
        "command": f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv),
        "recipe": asdict(recipe),
        **extra,
        "summary": summary,
        "wall_s_this_invocation": round(wall, 1),
        # what the recipe costs on an idle machine with `threads` cores; the wall time also counts other jobs
        "cpu_s_this_invocation": round(clock.cpu(), 1),
        "load_average_at_end": os.getloadavg(),
        "torch": torch.__version__,
        "threads": recipe.threads,
    }
    (out / "recipe.json").write_text(json.dumps(record, indent=1, default=str))
    log(f"done in {wall / 60:.1f} min")
