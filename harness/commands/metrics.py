"""``evaluate.py metrics check``: which metrics this machine can compute, and the weight files the others
need (with the exact paths to put them at). Checks files only: builds nothing and downloads nothing. A weight
file that cannot be read (permissions, a broken mount) is reported as MISSING with the reason, never a
traceback. The codecs' own weights are checked by ``evaluate.py weights check``."""

from __future__ import annotations

import argparse
import textwrap

from harness.metrics import availability, describe
from harness.metrics.weights import torch_home
from harness.registry import METRICS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"], help="check: list metrics and whether they can be computed")
    parser.add_argument(
        "--metric", action="append", default=[], help="only this metric (repeatable, or comma-separated)"
    )


def _availability(check, *args) -> tuple[bool, str]:
    """``check(*args)``, with a weight file that cannot be read reported as a reason, not raised."""
    try:
        return check(*args)
    except OSError as exc:
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        return False, f"cannot read a weight file{where}: {exc.strerror or exc} (fix its permissions or fetch it again)"


#: Terminal width of the command's text (as the headline's).
WIDTH = 100


def _fit(line: str) -> str:
    """A line whose one unbreakable word (a URL) makes it too wide loses indentation until it fits."""
    if len(line) <= WIDTH:
        return line
    text = line.lstrip()
    return " " * max(0, WIDTH - len(text)) + text


def _wrapped(first: str, text: str, indent: int = 8, clauses: bool = True) -> list[str]:
    """``first`` + ``text`` within :data:`WIDTH` columns: with ``clauses``, each ``; ``-separated clause (a
    missing file, where to get it) starts a line; continuation lines indented; paths and URLs are never broken
    (a URL too long for its indentation loses some, :func:`_fit`)."""
    pad = " " * indent
    lines: list[str] = []
    for i, clause in enumerate(text.split("; ") if clauses else [text]):
        lead = first if i == 0 else pad + "  "
        lines += textwrap.wrap(
            clause,
            WIDTH,
            initial_indent=lead,
            subsequent_indent=pad + "    ",
            break_long_words=False,
            break_on_hyphens=False,
        ) or [lead.rstrip()]
    return [_fit(line) for line in lines]


def report(names: list[str], names_given: bool = False) -> tuple[str, bool]:
    """The text of ``metrics check`` and whether every named metric is usable. Without ``names_given`` it
    also lists the set metrics FID/KID (not per-cell metrics: they are computed over a group's patches)."""
    lines = [f"TORCH_HOME = {torch_home()}"]
    all_ok = True
    for name in names:
        usable, why = _availability(availability, name)
        all_ok &= usable
        lines += _wrapped(f"{'ok ' if usable else 'MISSING'} {name:<12} ", describe(name), 17, clauses=False)
        lines += _wrapped(f"{'':8}{'uses' if usable else 'why'}: ", why)
    if not names_given:
        from reports.distribution import MIN_PATCHES_FID, MIN_PATCHES_KID
        from reports.distribution import availability as set_availability

        usable, why = _availability(set_availability)
        lines += _wrapped(
            f"{'ok ' if usable else 'MISSING'} {'fid, kid':<12} ",
            "set metrics on 256 px patches (HiFiC protocol), per group via `evaluate.py report RUN_DIR "
            f"--distribution`, at least {MIN_PATCHES_FID} (FID) / {MIN_PATCHES_KID} (KID) patches per set",
            17,
            clauses=False,
        )
        lines += _wrapped(f"{'':8}{'uses' if usable else 'why'}: ", why)
        lines.append("codec weights (RDEIC, RDEIC-tiny): evaluate.py weights check")
    return "\n".join(lines), all_ok


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for item in args.metric for n in item.split(",") if n.strip()] or METRICS.names()
    for name in names:
        METRICS.get(name)  # unknown names raise with suggestions (exit 2)
    text, all_ok = report(names, names_given=bool(args.metric))
    print(text)
    # Without --metric it answers "what can this machine compute" (exit 0 either way); a metric asked for by name
    # that cannot be computed is a failed check (exit 1), so scripts and CI can gate on it.
    return 0 if all_ok or not args.metric else 1
