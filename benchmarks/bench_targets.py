"""The CPU targets of issue #25, measured on what a user runs, in interleaved rounds; exits 1 when one is missed.

Each round runs four variants, each in a fresh process, in the order ``cli ×2, bare ×2, cli ×1, bare ×1`` (A B A B:
a change of the machine's load between rounds hits every variant alike):

* ``cli ×N``: ``harness.cli.main`` (what ``evaluate.py`` calls) with ``--workers N --fresh --no-progress``, so the
  summary, tables and the HTML report every CLI run writes are on the clock. Inside the same process,
  ``harness.runner.run`` is timed too (its wall is the denominator of the third target).
* ``bare ×N``: the same cells' work with no harness on N lanes (``bench_suite.run_bare``: encode once, the same
  channel draw per cell, identical streams decoded once, parse + reconstruct + metrics in-process).

CPU seconds come first: on cores shared with other jobs they measure the work, whatever share of the cores a run
got; wall seconds are printed beside them. CPU seconds of a variant = its main process + every child it waited for
+ the decode workers (read from /proc just before the pool closes them) + the forkserver. Targets (each figure is
the median over the rounds of the per-round value, so one disturbed round does not decide it):

1. harness CPU s / bare loop CPU s, same cells, 2 workers vs 2 lanes: ``<= 1.15``;
2. the harness's 1 -> 2 worker efficiency ``t1 / (2 t2)`` over the bare loop's own ``t1 / (2 t2)`` measured in the
   same minutes (wall; the bare loop is the yardstick of what the machine gives right now): ``>= 0.85``;
3. CLI wall / ``runner.run`` wall (2 workers): ``<= 1.10``.

    .venv/bin/python benchmarks/bench_targets.py                  # 3 rounds, JPEG2000 part of bit_errors, 4 images
    .venv/bin/python benchmarks/bench_targets.py --quick          # 3 rounds of a tiny slice: proves the exit code
    .venv/bin/python benchmarks/bench_targets.py --json out.json  # also write every figure
    .venv/bin/python benchmarks/bench_targets.py --judge out.json # the verdicts of rounds measured before

Exit status: 0 when every target is met, 1 when one is missed (each figure and its target printed), 2 when a
variant failed to run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent
#: The JPEG2000 configurations of ``bit_errors`` (as bench_suite.py): no weights needed, parses cheap, so the
#: harness's own cost is what shows.
CODECS = "j2k-plain@0.25bpp,j2k-reversible,j2k-resilient,j2k-resilient-nonstrict,j2k-layers,j2k-tiles"
ORDER = (("cli", 2), ("bare", 2), ("cli", 1), ("bare", 1))


@dataclass(frozen=True)
class Target:
    """One target: ``name``, how its figure is computed (in words), the bound and its direction."""

    name: str
    what: str
    bound: float
    at_most: bool  # True: the figure must be <= bound; False: >= bound

    def met(self, figure: float) -> bool:
        return figure <= self.bound if self.at_most else figure >= self.bound


TARGETS = (
    Target("cpu_overhead", "harness CPU s / bare loop CPU s, same cells (2 workers vs 2 lanes)", 1.15, True),
    Target("scaling", "harness 1->2 worker efficiency / bare loop's, same minutes (wall)", 0.85, False),
    Target("cli_over_run", "CLI wall / runner.run wall (2 workers, report included)", 1.10, True),
)


@dataclass(frozen=True)
class Verdict:
    target: Target
    figure: float
    per_round: tuple[float, ...]

    @property
    def met(self) -> bool:
        return self.target.met(self.figure)

    def line(self) -> str:
        sign = "<=" if self.target.at_most else ">="
        rounds = ", ".join(f"{x:.3f}" for x in self.per_round)
        state = "met" if self.met else "MISSED"
        return f"{state:6s} {self.target.name}: {self.figure:.3f} (target {sign} {self.target.bound}; rounds {rounds})"


def figures_of_round(r: dict[str, dict[str, float]]) -> dict[str, float]:
    """The three figures of one round from its four variants (each with ``cpu_s``, ``wall_s`` and, for ``cli``,
    ``run_wall_s``): see the module docstring."""
    eff_harness = r["cli_1"]["wall_s"] / (2 * r["cli_2"]["wall_s"])
    eff_bare = r["bare_1"]["wall_s"] / (2 * r["bare_2"]["wall_s"])
    return {
        "cpu_overhead": r["cli_2"]["cpu_s"] / r["bare_2"]["cpu_s"],
        "scaling": eff_harness / eff_bare,
        "cli_over_run": r["cli_2"]["wall_s"] / r["cli_2"]["run_wall_s"],
    }


def verdicts(rounds: list[dict[str, dict[str, float]]]) -> list[Verdict]:
    """Every target's verdict over ``rounds`` (the median of the per-round figures). Raises ValueError for fewer
    than 3 rounds: one round cannot tell a change from the load's noise."""
    if len(rounds) < 3:
        raise ValueError(f"the targets need at least 3 interleaved rounds, got {len(rounds)}")
    per = [figures_of_round(r) for r in rounds]
    out = []
    for t in TARGETS:
        values = tuple(p[t.name] for p in per)
        out.append(Verdict(t, statistics.median(values), values))
    return out


def exit_code(found: list[Verdict]) -> int:
    return 0 if all(v.met for v in found) else 1


# -- one variant, in its own process ------------------------------------------------------------------------------
def run_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``harness.cli.main`` as evaluate.py calls it, with ``runner.run`` timed inside; CPU of every process."""
    import harness.runner as runner
    from harness.workers import WorkerPool

    run_wall: list[float] = []
    real_run = runner.run

    def timed_run(opts: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return real_run(opts)
        finally:
            run_wall.append(time.perf_counter() - t0)

    runner.run = timed_run  # harness.cli imports it at call time
    workers_cpu = [0.0]
    close = WorkerPool.close

    def counted_close(pool: Any) -> None:
        workers_cpu[0] += sum(common.proc_cpu(w._proc.pid) for w in pool._workers if w._proc is not None)
        close(pool)

    WorkerPool.close = counted_close
    from harness.cli import main

    argv = ["--suite", args.suite, "--out", args.out, "--workers", str(args.workers), "--fresh", "--no-progress"]
    argv += ["--seeds", str(args.seeds)] + (["--limit-images", str(args.limit_images)] if args.limit_images else [])
    argv += ["--codec", args.codecs] if args.codecs else []
    cpu0 = common.cpu_now()
    t0 = time.perf_counter()
    with common.quiet_warnings():
        code = main(argv)
    wall = time.perf_counter() - t0
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    cpu = common.cpu_now() - cpu0 + workers_cpu[0] + (common.proc_cpu(pid) if pid else 0.0)
    if code != 0 or not run_wall:
        raise SystemExit(f"the CLI exited with {code}")
    return {"variant": "cli", "workers": args.workers, "wall_s": wall, "run_wall_s": run_wall[0], "cpu_s": cpu}


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    import bench_suite

    ns = argparse.Namespace(
        suite=args.suite,
        out=args.out,
        codecs=args.codecs,
        limit_images=args.limit_images,
        seeds=args.seeds,
        device="cpu",
        batch_size=None,
        lanes=args.workers,
    )
    res = bench_suite.run_bare(ns)
    return {
        "variant": "bare",
        "lanes": args.workers,
        "wall_s": res["wall_s"],
        "cpu_s": res["cpu_s"],
        "cells": res["cells"],
    }


def _child(args: argparse.Namespace, variant: str, n: int, tmp: Path, tag: str) -> dict[str, Any]:
    json_path = tmp / f"{tag}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--workers", str(n)]
    cmd += ["--out", str(tmp / tag), "--json", str(json_path), "--suite", args.suite, "--codecs", args.codecs]
    cmd += ["--seeds", str(args.seeds)] + (["--limit-images", str(args.limit_images)] if args.limit_images else [])
    env = {"OMP_WAIT_POLICY": "PASSIVE"}

    done = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"{variant} x{n} failed: {done.stderr.strip()[-1500:]}")
    return json.loads(json_path.read_text())


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as tmp:
        for r in range(args.rounds):
            this: dict[str, dict[str, float]] = {}
            for variant, n in ORDER:
                name = f"{variant}_{n}"
                res = _child(args, variant, n, Path(tmp), f"{name}_{r}")
                extra = f", runner.run {res['run_wall_s']:.2f} s" if "run_wall_s" in res else ""
                print(
                    f"  round {r + 1} {name}: CPU {res['cpu_s']:.2f} s, wall {res['wall_s']:.2f} s{extra} "
                    f"(load {common.loadavg()})",
                    flush=True,
                )
                this[name] = res
            rounds.append(this)
            common.write_json(args.json, {"rounds": rounds, "partial": True})  # a stopped run can still be judged
    return {"rounds": rounds}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", choices=("cli", "bare"), help="(internal) run one variant and write --json")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="")
    ap.add_argument("--suite", default="bit_errors")
    ap.add_argument("--codecs", default=CODECS)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--limit-images", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 image, 1 seed, 2 configs: the exit code, not the figures")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--judge", metavar="JSON", help="judge the rounds of an earlier --json instead of measuring")
    args = ap.parse_args(argv)
    if args.variant:
        payload = run_cli(args) if args.variant == "cli" else run_bare(args)
        common.write_json(args.json, payload)
        return 0
    if args.quick:
        args.limit_images, args.seeds, args.codecs = 1, 1, "j2k-plain@0.25bpp,j2k-resilient"
    if args.rounds < 3:
        print("error: --rounds must be at least 3 (interleaved A B A B rounds); e.g. --rounds 3", file=sys.stderr)
        return 2
    print(
        f"bench_targets: {args.suite} ({args.codecs}), {args.limit_images} images, {args.seeds} seeds, "
        f"{args.rounds} rounds of {', '.join(f'{v} x{n}' for v, n in ORDER)}; load {common.loadavg()}"
    )
    if args.judge:
        data = json.loads(Path(args.judge).read_text())
    else:
        try:
            data = measure(args)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        found = verdicts(data["rounds"])
    except ValueError as exc:
        print(f"error: {exc}; run more rounds (--rounds 3)", file=sys.stderr)
        return 2
    for v in found:
        print(v.line())
    data["verdicts"] = [
        {
            "target": v.target.name,
            "what": v.target.what,
            "figure": v.figure,
            "bound": v.target.bound,
            "at_most": v.target.at_most,
            "met": v.met,
            "per_round": list(v.per_round),
        }
        for v in found
    ]
    data["quick"] = args.quick
    data["machine"] = common.machine()
    common.write_json(args.json, data)
    code = exit_code(found)
    print("all targets met" if code == 0 else "a target was missed: exit 1")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
