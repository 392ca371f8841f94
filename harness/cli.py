"""Command line: ``python evaluate.py --suite NAME [...]``, ``python evaluate.py --list`` and subcommands
``python evaluate.py COMMAND ...`` (see :data:`COMMANDS`).

Only this module turns exceptions into exit codes: user errors print one line and exit 2; a failed
control exits 3; a cluster task that failed exits 4 (the other shards are merged); an interrupted run exits 130
(finished cells are kept; run again to resume).

A subcommand is a module with ``add_arguments(parser)`` and ``run(args) -> int``, named lazily in
:data:`COMMANDS` so that ``--list`` or a suite run imports none of them.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

from harness.codecs.base import CodecError
from harness.config import SuiteError, load_suite
from harness.console import routed_warnings
from harness.datasets import DatasetError
from harness.executors import EXECUTORS, ExecutorError
from harness.registry import RegistryError
from harness.rundir import RunDirectoryError
from harness.store import StoreError


class UsageError(Exception):
    pass


#: Subcommands: name -> (module, one-line help). Modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "datasets": ("harness.commands.datasets", "list datasets, verify a local copy (counts, checksums), fetch one"),
    "metrics": ("harness.commands.metrics", "list metrics and whether their weights are present (metrics check)"),
    "weights": ("harness.commands.weights", "which weight files each codec needs, present and valid (weights check)"),
    "report": ("harness.commands.report", "write report.html and report.md (tables, plots) for a run directory"),
    "regress": ("harness.commands.regress", "compare a run's summary with a committed baseline within tolerances"),
    "finetune": ("harness.commands.finetune", "fine-tune an RDEIC adapter on a dataset's training split"),
    "merge": ("harness.commands.merge", "merge a sharded (cluster) run's stores into its results; tables + report"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage dump
        raise UsageError(message)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite positive number of seconds, got {text!r}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser() -> argparse.ArgumentParser:
    commands = "; ".join(f"{n}: {h}" for n, (_, h) in COMMANDS.items())
    p = _Parser(
        prog="evaluate.py",
        description="Robustness evaluation of image codecs (README.md, docs/index.md)."
        + (f" Subcommands (evaluate.py COMMAND --help): {commands}" if commands else ""),
    )
    p.add_argument("--suite", help="suite name (harness/suites/NAME.toml) or path to a suite TOML file")
    p.add_argument("--list", action="store_true", help="list suites, codecs, corruptions, datasets, metrics")
    p.add_argument("--codec", type=_names, default=(), help="only these codec labels or names (comma-separated)")
    p.add_argument("--dataset", type=_names, default=(), help="only these datasets (comma-separated)")
    p.add_argument("--limit-images", type=_positive, help="seeded subset of N images per dataset")
    p.add_argument("--seeds", type=_positive, help="corruption replicates per level (overrides the suite)")
    p.add_argument("--workers", type=_positive, default=2, help="isolated decode worker processes (default 2)")
    p.add_argument(
        "--timeout",
        type=_seconds,
        help="CPU seconds a parse may use before it is a timeout (overrides the suite's timeout_s; the budget is "
        "still at least timeout_factor x the clean stream's parse time)",
    )
    p.add_argument("--out", type=Path, help="run directory (default runs/<suite>); re-running resumes")
    p.add_argument("--fresh", action="store_true", help="discard the run directory's results and cache first")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true", help="resolve the suite and count its cells; encode nothing")
    g = p.add_argument_group("devices (codecs with these options: RDEIC; part of the fingerprint)")
    g.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where reconstruct runs (parse stays on CPU)")
    g.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="autocast precision of reconstruct (CUDA)")
    g.add_argument("--batch-size", type=_positive, help="reconstructs per batch (default: from free GPU memory)")
    g = p.add_argument_group("executors (docs/gpus-and-clusters.md: on a cluster, on a multi-GPU node)")
    where = "local: this process's workers; local-shards: shard processes here; slurm: a job array"
    g.add_argument("--executor", choices=EXECUTORS, default="local", help=where)
    g.add_argument("--shards", type=_positive, help="tasks of the array (default: per codec config x GPUs)")
    g.add_argument("--gpus", type=_positive, help="local-shards: one shard process per GPU of this node")
    g.add_argument("--slurm-partition")
    g.add_argument("--slurm-account")
    g.add_argument("--gpus-per-task", type=_positive, default=0)
    g.add_argument("--cpus-per-task", type=_positive, default=2)
    g.add_argument("--timeout-min", type=_positive, default=60, help="per task; requeued on timeout/preemption")
    g.add_argument("--array-parallelism", type=_positive, default=256)
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE", help="any other sbatch option")
    g = p.add_argument_group("codec options (docs/codecs.md: official weights of each codec)")
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="CODEC.OPTION=VALUE",
        help="set a codec option (repeatable): CODEC is a label of the suite or a codec/preset name, e.g. "
        "--set ldm-rsic.elic_ckpt=PATH --set dicm.ckpt=PATH; VALUE is read as TOML (2, 0.5, true) else as text",
    )
    g.add_argument("--rdeic-ckpt", help="alias of --set rdeic.rdeic_ckpt=PATH (e.g. rdeic_2_step2.ckpt)")
    g.add_argument("--sd-ckpt", help="alias of --set rdeic.sd_ckpt=PATH (v2-1_512-ema-pruned.ckpt)")
    return p


def list_everything() -> str:
    """``--list``: each suite, codec, corruption, dataset and metric with one line about it (harness/listing.py)."""
    from harness.listing import list_everything as listing

    return listing()


#: The options of RDEIC's two official checkpoints: their flags and ``--set rdeic.*`` keep RDEIC's own rules
#: (harness/codecs/rdeic/flags.py: "rdeic-auto", the VAE-only bound takes the SD file too).
RDEIC_FILES = ("rdeic_ckpt", "sd_ckpt")


def codec_overrides(args: argparse.Namespace) -> tuple[list[Any], str | None, str | None]:
    """(the ``--set`` overrides other than RDEIC's two checkpoints, rdeic_ckpt, sd_ckpt). ``--rdeic-ckpt P`` is
    ``--set rdeic.rdeic_ckpt=P`` and ``--sd-ckpt P`` is ``--set rdeic.sd_ckpt=P``; giving both forms is refused."""
    from harness.options import parse_override

    overrides = [parse_override(text, UsageError) for text in args.set]
    files = {"rdeic_ckpt": args.rdeic_ckpt, "sd_ckpt": args.sd_ckpt}
    for o in overrides:
        if o.name == "rdeic" and o.option in RDEIC_FILES:
            if files[o.option] not in (None, str(o.value)):
                flag = "--" + o.option.replace("_", "-")
                raise UsageError(f"--set {o.text} and {flag} {files[o.option]} disagree: give one of them")
            files[o.option] = str(o.value)
    rest = [o for o in overrides if not (o.name == "rdeic" and o.option in RDEIC_FILES)]
    return rest, files["rdeic_ckpt"], files["sd_ckpt"]


def check_official_pair(suite: Any, rdeic_ckpt: str | None, sd_ckpt: str | None) -> None:
    """RDEIC's official model is two files: one of them given (flags, ``--set`` or the ``RDEIC_CKPT`` /
    ``RDEIC_SD_CKPT`` environment variables) is a half-given model, refused instead of running RDEIC-tiny.
    ``--sd-ckpt`` alone stays valid for a suite without an ``rdeic-auto`` config (the VAE-only bound takes it)."""
    rdeic = rdeic_ckpt or os.environ.get("RDEIC_CKPT")
    sd = sd_ckpt or os.environ.get("RDEIC_SD_CKPT")
    if rdeic and not sd:
        raise UsageError(
            f"--rdeic-ckpt {rdeic} without --sd-ckpt: RDEIC's official model needs both files; give --sd-ckpt "
            "v2-1_512-ema-pruned.ckpt too (evaluate.py weights check), or neither to run RDEIC-tiny"
        )
    if sd and not rdeic and any(c.codec == "rdeic-auto" for c in suite.codecs):
        raise UsageError(
            f"--sd-ckpt {sd} without --rdeic-ckpt: RDEIC's official model needs both files; give --rdeic-ckpt "
            "(e.g. rdeic_2_step2.ckpt) too (evaluate.py weights check), or neither to run RDEIC-tiny"
        )


def run_suite(args: argparse.Namespace) -> int:
    from harness.codecs.rdeic.flags import resolve_auto, with_weight_flags
    from harness.options import apply_overrides

    suite = load_suite(args.suite)
    overrides, args.rdeic_ckpt, args.sd_ckpt = codec_overrides(args)
    if suite.finetune is not None:
        if overrides:
            raise UsageError(f"--set {overrides[0].text}: a [finetune] suite takes its options from [finetune] in "
                             "its TOML (only --rdeic-ckpt / --sd-ckpt apply)")
        return run_finetune_suite(args, suite)
    check_official_pair(suite, args.rdeic_ckpt, args.sd_ckpt)
    suite, which_rdeic = resolve_auto(suite, args.rdeic_ckpt, args.sd_ckpt)  # "rdeic-auto": official or tiny
    if which_rdeic is None:
        suite = with_weight_flags(suite, args.rdeic_ckpt, args.sd_ckpt)  # no-op without the flags
    else:
        print(which_rdeic)
    suite = apply_overrides(suite, overrides, UsageError)  # --set: checked against each codec's options
    out = args.out or Path("runs") / suite.name
    with routed_warnings(out):
        return _run_plain_suite(args, suite, out)


def _run_plain_suite(args: argparse.Namespace, suite: Any, out: Path) -> int:
    from harness.runner import ControlError, RunOptions, make_plan, run
    from reports.tables import write_summary
    from reports.terminal import headline

    opts = RunOptions(
        suite=suite,
        out=out,
        codecs=args.codec,
        datasets=args.dataset,
        limit_images=args.limit_images,
        seeds=args.seeds,
        workers=args.workers,
        fresh=args.fresh,
        progress=not args.no_progress,
        timeout_s=args.timeout,
        device=_device(args),
        precision=args.precision,
        batch_size=args.batch_size,
        executor=_executor(args),
    )
    if args.dry_run:
        plan = make_plan(opts)
        labels = Counter(c.codec_label for c in plan.cells)
        skipped = len(plan.skipped_images)
        print(f"{suite.name}: {len(plan.cells)} cells on {len(plan.images)} images ({skipped} skipped) per codec:")
        for label, n in labels.items():
            print(f"  {label}: {n}")
        return 0
    try:
        result = run(opts)
    except ControlError as exc:
        print(f"evaluate.py: control failed, no table written: {exc}", file=sys.stderr)
        return 3
    cells = _stored_cells(out, result.planned_keys)
    write_summary(out, cells, suite.metrics, f"{suite.name}: {out}")  # the full tables: summary.md / .csv
    print(headline(cells, suite.metrics))  # what fits 100 columns
    if result.skipped_images:
        by_stage = Counter(s.get("stage", "?") for s in result.skipped_images)
        counts = ", ".join(f"{n} at {stage}" for stage, n in sorted(by_stage.items()))
        print(f"{len(result.skipped_images)} images skipped ({counts}); reasons: evaluate.py report {out}, provenance")
    print(
        f"{result.planned} cells planned, {result.already_done} already done, {result.computed} computed in "
        f"{result.seconds:.1f} s\n({result.decodes} decodes, {result.memo_hits} reused identical streams, "
        f"{result.worker_restarts} worker restarts)\nResults: {out}/results.sqlite\nTables:  {out}/summary.md (.csv)"
    )
    _write_report(out)
    return 0


def _stored_cells(out: Path, keys: list[str]):
    from harness.store import ResultStore

    store = ResultStore(out / "results.sqlite")
    try:
        return store.cells_frame(keys)
    finally:
        store.close()


def _write_report(out: Path) -> None:
    try:  # the report is a view of stored results: its failure never loses them
        from reports.report import build

        print(f"Report:  {build(out).html}")
    except Exception as exc:
        print(f"evaluate.py: report not written ({type(exc).__name__}: {exc}); results are kept", file=sys.stderr)


def run_finetune_suite(args: argparse.Namespace, suite) -> int:
    """A suite with a ``[finetune]`` table (harness/ood.py): fine-tune per OOD dataset, evaluate before/after."""
    import dataclasses

    if args.codec or args.dataset or args.limit_images or args.seeds:
        raise UsageError("--codec/--dataset/--limit-images/--seeds do not apply to a [finetune] suite; edit its TOML")
    if args.dry_run:
        spec = suite.finetune
        ood = ", ".join(d.name for d in spec.datasets)
        ind = ", ".join(d.name for d in spec.in_distribution) or "none"
        print(f"{suite.name}: fine-tune {spec.label} ({spec.train.mode}, {spec.train.steps} steps) on {ood}")
        print(f"  in-distribution (forgetting): {ind}")
        return 0
    flags = {k: str(v) for k, v in (("rdeic_ckpt", args.rdeic_ckpt), ("sd_ckpt", args.sd_ckpt)) if v}
    if flags:
        spec = suite.finetune
        suite = dataclasses.replace(suite, finetune=dataclasses.replace(spec, options={**spec.options, **flags}))
    out = args.out or Path("runs") / suite.name
    with routed_warnings(out):
        return _run_finetune_suite(args, suite, out)


def _run_finetune_suite(args: argparse.Namespace, suite: Any, out: Path) -> int:
    from harness.ood import check_bitstreams, failed_bitstream_checks, run_ood, write_outputs
    from harness.runner import ControlError
    from reports.tables import write_summary
    from reports.terminal import headline

    try:
        result = run_ood(suite, out, args.workers, args.fresh, not args.no_progress)
    except ControlError as exc:
        print(f"evaluate.py: control failed, no table written: {exc}", file=sys.stderr)
        return 3
    cells = _stored_cells(out, result.keys)
    checks = check_bitstreams(cells, out, result.groups)
    failed = failed_bitstream_checks(checks)
    if failed:  # METHODOLOGY.md §6: before any table is written
        what = "an adapter mode changed or lost bitstreams"
        print(f"evaluate.py: control failed, no table written: {what}: {failed}", file=sys.stderr)
        return 3
    write_summary(out, cells, suite.metrics, f"{suite.name}: {out}")
    write_outputs(out, cells, result, suite.metrics, checks)
    print(headline(cells, suite.metrics))
    print(f"Before/after (paired, with intervals): {out}/ood_before_after.md")
    print(f"{len(result.keys)} cells ({result.computed} computed) in {result.seconds:.1f} s. Results: {out}")
    _write_report(out)
    return 0


def _executor(args: argparse.Namespace) -> Any:
    from harness.executors import ExecutorConfig

    slurm_args = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--slurm-arg takes KEY=VALUE (an sbatch option without dashes), got {item!r}")
        slurm_args[key.lstrip("-").replace("-", "_")] = value
    if args.gpus and args.executor != "local-shards":
        raise UsageError("--gpus N runs one shard process per GPU of this node: use it with --executor local-shards")
    return ExecutorConfig(
        name=args.executor,
        shards=args.shards,
        gpus=args.gpus or 0,
        slurm_partition=args.slurm_partition,
        slurm_account=args.slurm_account,
        gpus_per_task=args.gpus_per_task,
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.timeout_min,
        array_parallelism=args.array_parallelism,
        slurm_args=slurm_args,
    )


def _device(args: argparse.Namespace) -> str | None:
    """``auto`` is resolved where the cells will run: on a Slurm array with GPUs, or one process per local GPU,
    that is CUDA even when this (login) process sees none; otherwise it is resolved here."""
    if args.device != "auto":
        return args.device
    if (args.executor == "slurm" and args.gpus_per_task) or (args.executor == "local-shards" and args.gpus):
        return "cuda"
    if args.executor == "slurm":
        raise UsageError("--device auto on a Slurm array without --gpus-per-task: say --device cpu or cuda")
    return "auto"


def _filesystem_error(exc: BaseException) -> str | None:
    """One line for the file-system errors a user causes or can fix (read-only or full disk, no permission);
    None for anything else (a bug: let its traceback show)."""
    code = getattr(exc, "errno", None)
    where = getattr(exc, "filename", None)
    where = f" ({where})" if where else ""
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {exc.strerror}; give a writable --out. Finished cells are kept."
    if code == errno.EFBIG:
        return (
            f"a file grew past this shell's file-size limit{where} (ulimit -f); raise it and run the same command "
            "again: finished cells are kept"
        )
    if code in (errno.ENOSPC, errno.EDQUOT) or "disk is full" in str(exc) or "disk I/O error" in str(exc):
        return f"the disk is full{where}; free space and run the same command again: finished cells are kept"
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
        return f"the results store is read-only: {exc}; give a writable --out"
    return None


def run_command(name: str, argv: list[str]) -> int:
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = _Parser(prog=f"evaluate.py {name}", description=help_text)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # OpenMP threads that spin while they wait made torch steps 10-30x slower on a shared, loaded machine; passive
    # waiting changes no number. Set before torch is imported (here, by the CLI, and inherited by every worker).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        if argv and argv[0] in COMMANDS:
            return run_command(argv[0], argv[1:])
        args = build_parser().parse_args(argv)
        if args.list:
            print(list_everything())
            return 0
        if not args.suite:
            raise UsageError("give --suite NAME, --list, or a subcommand: " + (", ".join(COMMANDS) or "none yet"))
        return run_suite(args)
    except (UsageError, SuiteError, RegistryError, CodecError, DatasetError, RunDirectoryError, StoreError) as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 2
    except ExecutorError as exc:
        print(f"evaluate.py: error: {exc}", file=sys.stderr)
        return 4
    except (OSError, sqlite3.OperationalError) as exc:
        message = _filesystem_error(exc)
        if message is None:
            raise
        print(f"evaluate.py: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evaluate.py: interrupted; finished cells are saved, run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
