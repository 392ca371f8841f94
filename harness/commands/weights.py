"""``evaluate.py weights check [--codec NAME ...] [--sd-ckpt P] [--rdeic-ckpt P]``: for each codec and preset
of the registry, the weight files it needs, what each is, whether it is here and usable, and where the others
come from. Checks files only (:mod:`harness.codecs.checkpoints`, the checks a run makes before its encode phase):
builds no model, downloads nothing.

One entry per file (wrapped to 100 columns when long), status first:

- ``ok``: present and usable: its sha256 matches the recorded one where the project records it (the shipped tiny
  models: ``SHIPPED_SHA256``, or a ``SHA256SUMS`` line beside the file), and its tensor names and shapes (read
  from the safetensors header or a memory-mapped PyTorch checkpoint: no tensor is read) fit what the codec's
  ``config`` loads.
- ``MISSING``: not given, or no file there; says what the file is, where it comes from and which option (or flag)
  names it.
- ``BAD``: present but unusable (a folder, empty, truncated, a pickle, other keys or shapes, another sha256): what
  is wrong, then how to fix it.
- ``optional``: a cache the codec writes itself when absent (RDEIC's empty-prompt text cache).

Codecs whose class describes no weight files (``weight_files``) but loads some (a ``LearnedCodec``, or its own
``weights_hash``) are third-party plugins: listed as "not described (a plugin)".

``--sd-ckpt`` / ``--rdeic-ckpt`` set those files on the RDEIC codecs without weights of their own, as they do
for a suite run, so the official files can be checked before a run.

Exit codes: 0 every file of the codecs asked for (all by default) is present and valid; 1 a file is missing or
bad (the official files are not shipped, so a plain ``weights check`` exits 1 until they are given); 2 a bad
argument (unknown codec name).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIDTH = 100
#: Flags that name a codec option on the command line (the rest: suite TOML ``options = { ... }``).
FLAGS = {"sd_ckpt": "--sd-ckpt", "rdeic_ckpt": "--rdeic-ckpt"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"], help="check: the weight files each codec needs")
    parser.add_argument(
        "--codec", action="append", default=[], help="only this codec or preset (repeatable, or comma-separated)"
    )
    parser.add_argument("--sd-ckpt", help="check this SD 2.1 checkpoint as the RDEIC codecs' sd_ckpt")
    parser.add_argument("--rdeic-ckpt", help="check this RDEIC checkpoint as the RDEIC codecs' rdeic_ckpt")


@dataclass
class Entry:
    """One file of one codec: its status (ok, MISSING, BAD, optional), the option naming it, the file (None: not
    given), what was found (after the file's name) and, when it failed, how to fix it."""

    status: str
    role: str
    path: Path | None
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status in ("MISSING", "BAD")


@dataclass
class Report:
    name: str
    about: str
    entries: list[Entry] = field(default_factory=list)


def shown(path: str | os.PathLike) -> str:
    """A path as short as it stays unambiguous: relative to the working directory when under it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def entry_of(f: Any, codec: str | None = None) -> Entry:
    """The entry of one :class:`~harness.codecs.checkpoints.WeightFile` (its path None: not given); ``codec``: the
    registry name checked, for the exact flag that gives the file (``--set CODEC.OPTION=PATH``, issue #27)."""
    from harness.codecs.checkpoints import WeightsError, check

    if f.path is None:
        flag = f", or {FLAGS[f.role]} PATH" if f.role in FLAGS else f", or --set {codec}.{f.role}=PATH" if codec else ""
        return Entry("MISSING", f.role, None, f"not given (codec option {f.role}{flag}): {f.what}", f.fix)
    p = Path(f.path)
    try:
        return Entry("ok", f.role, p, f"{check(f)} ({f.what})")
    except WeightsError as exc:
        status = "MISSING" if exc.problem.startswith("is missing") else "BAD"
        return Entry(status, f.role, p, exc.problem, exc.fix)


def check_file(path: str | None, role: str, kind: str, config: str) -> Entry:
    """The entry of one RDEIC file (``kind`` rdeic or vae) in ``role`` for ``config``."""
    from harness.codecs.rdeic.checkpoint import describe

    return entry_of(describe(role, path, config, kind))


def check_text_cache(options: Any) -> Entry | None:
    """RDEIC's empty-prompt cache: optional (written on first use); a damaged one is BAD (the codec reads it)."""
    from harness.codecs.checkpoints import WeightFile, WeightsError, read_shapes

    base = options.weights or options.sd_ckpt
    if not base:
        return None
    path = Path(options.text_cache or Path(base).with_name(Path(base).name + ".empty_prompt.safetensors"))
    fix = "delete it: it is rebuilt from the weights on first use"
    if not path.exists():
        return Entry("optional", "text cache", path, "absent: written on first use")
    try:
        keys = read_shapes(WeightFile("RDEIC", "text cache", str(path), "a cache", fix, ()))
    except WeightsError as exc:
        return Entry("BAD", "text cache", path, exc.problem, fix)
    if not any(k.startswith("context.") for k in keys):
        return Entry("BAD", "text cache", path, "holds no context.* entry", fix)
    return Entry("optional", "text cache", path, "present (a cache)")


def _resolve(name: str) -> tuple[str, dict[str, Any], str, Any]:
    """(base codec name, preset options, description, codec class) of a registry name."""
    from harness.registry import CODECS, Preset

    entry = CODECS.get(name)  # unknown names raise RegistryError with suggestions (exit 2)
    if isinstance(entry, Preset):
        base = entry.codec
        return base, dict(entry.options), entry.description or f"{base} preset", CODECS.get(base)
    return name, {}, "", entry


def report_for(name: str, sd_ckpt: str | None, rdeic_ckpt: str | None) -> Report:
    from harness.codecs.base import Codec, LearnedCodec
    from harness.codecs.rdeic.flags import is_rdeic, own_weights

    base, options, about, cls = _resolve(name)
    describes = isinstance(cls, type) and callable(getattr(cls, "weight_files", None))
    if not describes:
        loads = isinstance(cls, type) and (
            issubclass(cls, LearnedCodec) or (issubclass(cls, Codec) and cls.weights_hash is not Codec.weights_hash)
        )
        if not loads:
            return Report(name, "")  # no weight files
        return Report(name, (about + ": " if about else "") + "weights not described (a plugin): not checked")
    if is_rdeic(base) and own_weights(base, options) is None:
        options.update({k: v for k, v in (("sd_ckpt", sd_ckpt), ("rdeic_ckpt", rdeic_ckpt)) if v})
    try:
        opts = cls.Options(**options)
    except TypeError as exc:
        return Report(name, about, [Entry("BAD", "options", None, f"the preset's options do not fit: {exc}")])
    config = getattr(opts, "config", None)
    rep = Report(name, about or f"{getattr(cls, 'name', base)}" + (f", config {config!r}" if config else ""))
    files = cls.weight_files(opts)
    if not files:
        rep.entries.append(Entry("ok", "weights", None, "random weights (plumbing only): no file"))
    rep.entries += [entry_of(f, name) for f in files]
    if hasattr(opts, "text_cache"):  # RDEIC's empty-prompt cache, beside its weights
        cache = check_text_cache(opts)
        if cache is not None:
            rep.entries.append(cache)
    return rep


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, subsequent_indent=" " * indent, break_long_words=True, break_on_hyphens=False
    ) or [text]


_VERBS = ("is ", "stores ", "holds ", "cannot ", "does ", "has ")


def render(reports: list[Report]) -> str:
    """The text of ``weights check``: every line fits :data:`WIDTH` columns."""
    lines = ["weights check: the files each codec needs, here and usable? (sha256 checked where recorded)"]
    weightless = [r.name for r in reports if not r.entries and not r.about]
    for rep in reports:
        if not rep.entries and not rep.about:
            continue
        folders = {e.path.parent for e in rep.entries if e.path is not None}
        where = f"; files in {shown(next(iter(folders)))}/" if len(folders) == 1 else ""
        lines += _wrap(f"{rep.name:<16} {rep.about}{where}", 17)
        for e in rep.entries:
            head = f"  {e.status:<8} {e.role:<10} "
            text = e.detail
            if e.path is not None:
                sep = " " if e.detail.startswith(_VERBS) else ": "
                text = (e.path.name if where else shown(e.path)) + sep + e.detail
            lines += _wrap(head + text, len(head))
            if e.fix and e.failed:
                lines += _wrap(" " * 11 + ("get: " if e.status == "MISSING" else "fix: ") + e.fix, 16)
    if weightless:
        lines += _wrap("no weight files: " + ", ".join(weightless), 17)
    entries = [e for r in reports for e in r.entries]
    counts = {s: sum(e.status == s for e in entries) for s in ("ok", "MISSING", "BAD")}
    lines.append(f"{counts['ok']} ok, {counts['MISSING']} missing, {counts['BAD']} bad")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from harness.registry import CODECS

    names = [n.strip() for item in args.codec for n in item.split(",") if n.strip()] or CODECS.names()
    reports = [report_for(n, args.sd_ckpt, args.rdeic_ckpt) for n in dict.fromkeys(names)]
    print(render(reports))
    return 1 if any(e.failed for r in reports for e in r.entries) else 0
