"""``evaluate.py weights check [--codec NAME ...] [--sd-ckpt P] [--rdeic-ckpt P]``: for each codec and preset
of the registry, the weight files it needs, whether they are here and usable, and where to get the others.
Checks files only: builds no model, downloads nothing.

One entry per file (wrapped to 100 columns when long), status first:

- ``ok``: present and usable. Where the project records the file's sha256 (the shipped RDEIC-tiny files:
  :data:`RECORDED_SHA256`, or a ``SHA256SUMS`` file beside the weights), the hash must match; otherwise the
  file's format is read from its first bytes and its tensor names and shapes (safetensors header, memory-mapped
  PyTorch checkpoint: no tensor is read) are compared with what the codec's ``config`` loads from it.
- ``MISSING``: not given, or no file there; says where the official file comes from and which option or flag
  points to it.
- ``BAD``: present but unusable (not a weights file, empty, truncated, a directory, pickled objects, other keys or
  shapes, another sha256): one line saying what is wrong, then how to fix it.
- ``optional``: a cache the codec writes itself when absent (RDEIC's empty-prompt text cache).

``--sd-ckpt`` / ``--rdeic-ckpt`` set those files on the RDEIC codecs without weights of their own, as they do
for a suite run, so the official files can be checked before a run.

Exit codes: 0 every file of the codecs asked for (all by default) is present and valid; 1 a file is missing or
bad (the official RDEIC files are not shipped, so a plain ``weights check`` exits 1 until they are given);
2 a bad argument (unknown codec name).
"""

from __future__ import annotations

import argparse
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIDTH = 100
#: sha256 of the weight files the project ships (weights/rdeic-tiny/, MODEL_CARD.md: a rerun of the recipe
#: reproduces them byte for byte; the card quotes 7282a69d… for low). Retrained on purpose? Record the new hashes.
RECORDED_SHA256 = {
    "rdeic-tiny-low.safetensors": "7282a69d6b77102c764cf1f46e1fdf91015724bfe7ce4531fb936c9002c84d9f",
    "rdeic-tiny-high.safetensors": "75b30f9c2c2ef7bae928bec197a0933498e36d9c09ccdd1c2dfcfe72d17935f7",
}
RDEIC_TARGETS = ("harness.codecs.rdeic.codec:RDEIC", "harness.codecs.rdeic.vae_only:RDEICVAE")


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


def recorded_sha256(path: Path) -> tuple[str, str] | None:
    """(sha256, where it is recorded) for ``path``: a ``SHA256SUMS`` line beside it, else :data:`RECORDED_SHA256`."""
    sums = path.parent / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == path.name:
                return parts[0].lower(), str(sums)
    if path.name in RECORDED_SHA256:
        return RECORDED_SHA256[path.name], "harness/commands/weights.py"
    return None


def shown(path: str | os.PathLike) -> str:
    """A path as short as it stays unambiguous: relative to the working directory when under it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def short_fix(path: str | os.PathLike | None, role: str) -> str:
    """Where the right file comes from, short enough for one line of ``weights check``."""
    from harness.codecs.rdeic.checkpoint import RDEIC_FILE, SD_FILE, TINY_DIR

    name = Path(path).name if path else ""
    if role == "sd_ckpt":
        return f"{SD_FILE} from huggingface.co/stabilityai/stable-diffusion-2-1-base"
    if role == "rdeic_ckpt":
        return f"{RDEIC_FILE} or another: links in the README of github.com/huai-chang/RDEIC"
    if name.startswith("rdeic-tiny"):
        return f"git checkout -- {TINY_DIR}/{name}, or retrain: python -m harness.train.tiny --out {TINY_DIR}"
    return "a merged .safetensors (checkpoint.save_safetensors), or the official pair via sd_ckpt + rdeic_ckpt"


def _size(path: Path) -> str:
    n = path.stat().st_size
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def _structure_problem(path: Path, role: str, kind: str, config: str) -> str | None:
    """How the tensor names/shapes of ``path`` differ from what codec ``kind`` (rdeic, vae) of ``config`` loads
    from a file in ``role`` (None when they fit). Raises WeightsError for a file that cannot be read."""
    from harness.codecs.rdeic.checkpoint import (
        DROP_PREFIXES,
        TRAINED_PREFIXES,
        key_problems,
        preset_shapes,
        read_shapes,
    )

    shapes = read_shapes(path, role)
    full = preset_shapes(config)
    entropy = tuple(k for k in full if k.startswith("preprocess_model.gaussian_conditional.") and "bound" not in k)
    if kind == "vae":
        vae = {k: v for k, v in full.items() if k.startswith("first_stage_model.")}
        got = {k: v for k, v in shapes.items() if k.startswith("first_stage_model.")}
        if role == "rdeic_ckpt":  # optional overrides: only those present must fit
            return key_problems(got, {k: vae[k] for k in got if k in vae}) if got else None
        return key_problems(got, vae)
    if role == "weights":  # loaded as it is (strictly): nothing is dropped from a merged file
        return key_problems(shapes, full, entropy, ("cond_stage_model.", "logvar"))
    got = {k: v for k, v in shapes.items() if not k.startswith(DROP_PREFIXES)}  # as the official merge drops them
    if role == "sd_ckpt":
        sd = {k: v for k, v in full.items() if not k.startswith(TRAINED_PREFIXES)}
        extra_trained = {k: full[k] for k in got if k.startswith(TRAINED_PREFIXES) and k in full}
        return key_problems(got, {**sd, **extra_trained}, entropy, ("logvar",))
    trained = {k: v for k, v in full.items() if k.startswith(TRAINED_PREFIXES)}
    beyond = {k: full[k] for k in got if k in full and not k.startswith(TRAINED_PREFIXES)}  # they replace SD keys
    return key_problems(got, {**trained, **beyond}, entropy)


def check_file(path: str | None, role: str, kind: str, config: str) -> Entry:
    """The entry of one weights file (``path`` None: not configured)."""
    from harness.codecs.rdeic.checkpoint import WeightsError, file_sha256, sniff

    if path is None:
        flag = {"sd_ckpt": "--sd-ckpt", "rdeic_ckpt": "--rdeic-ckpt"}.get(role)
        how = f"not given (codec option {role}" + (f", or {flag} PATH)" if flag else ")")
        return Entry("MISSING", role, None, how, short_fix(None, role))
    p = Path(path)
    try:
        sniff(p, role)
        recorded = recorded_sha256(p)
        if recorded is not None:
            digest, where = recorded
            actual = file_sha256(p)
            if actual != digest:
                return Entry(
                    "BAD",
                    role,
                    p,
                    f"sha256 {actual[:8]}… is not the recorded {digest[:8]}… ({where})",
                    short_fix(p, role) + " (retrained on purpose? record the new sha256)",
                )
            return Entry("ok", role, p, f"{_size(p)}, sha256 {digest[:8]}… as recorded")
        problem = _structure_problem(p, role, kind, config)
        if problem:
            return Entry("BAD", role, p, f"does not fit config {config!r}: {problem}", short_fix(p, role))
        return Entry("ok", role, p, f"{_size(p)}; tensor names and shapes fit config {config!r} (no recorded sha256)")
    except WeightsError as exc:
        if exc.problem == "does not exist":
            return Entry("MISSING", role, p, "no file there", short_fix(p, role))
        fix = (
            "if you trust it, load it with torch.load(weights_only=False) and save its state_dict with "
            "safetensors.torch.save_file; pass that file"
            if "extract its state dict" in exc.fix
            else short_fix(p, role)
        )
        return Entry("BAD", role, p, exc.problem, fix)


def check_text_cache(options: dict[str, Any]) -> Entry | None:
    """RDEIC's empty-prompt cache: optional (written on first use); a damaged one is BAD (the codec reads it)."""
    from harness.codecs.rdeic.checkpoint import WeightsError, read_shapes

    base = options.get("weights") or options.get("sd_ckpt")
    if not base:
        return None
    path = Path(options.get("text_cache") or Path(base).with_name(Path(base).name + ".empty_prompt.safetensors"))
    fix = "delete it: it is rebuilt from the weights on first use"
    if not path.exists():
        return Entry("optional", "text cache", path, "absent: written on first use")
    try:
        keys = read_shapes(path, "text cache")
    except WeightsError as exc:
        return Entry("BAD", "text cache", path, exc.problem, fix)
    if not any(k.startswith("context.") for k in keys):
        return Entry("BAD", "text cache", path, "holds no context.* entry", fix)
    return Entry("optional", "text cache", path, "present (a cache)")


def _resolve(name: str) -> tuple[str, dict[str, Any], str, Any]:
    """(base codec name, preset options, description, codec class) of a registry name (imports no torch)."""
    from harness.registry import CODECS, Preset

    entry = CODECS.get(name)  # unknown names raise RegistryError with suggestions (exit 2)
    if isinstance(entry, Preset):
        base = entry.codec
        return base, dict(entry.options), entry.description or f"{base} preset", CODECS.get(base)
    return name, {}, "", entry


def report_for(name: str, sd_ckpt: str | None, rdeic_ckpt: str | None) -> Report:
    from harness.codecs.base import Codec
    from harness.codecs.rdeic.flags import own_weights
    from harness.registry import CODECS

    base, options, about, cls = _resolve(name)
    target = CODECS.target(base)
    if target not in RDEIC_TARGETS:
        if isinstance(cls, type) and issubclass(cls, Codec) and cls.weights_hash is Codec.weights_hash:
            return Report(name, "")  # no weight files
        return Report(name, (about + ": " if about else "") + "weights not described (a plugin): not checked")
    kind = "vae" if target.endswith(":RDEICVAE") else "rdeic"
    if own_weights(base, options) is None:
        options.update({k: v for k, v in (("sd_ckpt", sd_ckpt), ("rdeic_ckpt", rdeic_ckpt)) if v})
    config = str(options.get("config", "official"))
    what = "RDEIC's VAE alone (a bound, not a compressor)" if kind == "vae" else "RDEIC"
    rep = Report(name, about or f"{what}, config {config!r}")
    if options.get("weights"):
        rep.entries.append(check_file(options["weights"], "weights", kind, config))
    elif not options.get("sd_ckpt") and not options.get("rdeic_ckpt") and options.get("allow_random_weights"):
        rep.entries.append(Entry("ok", "weights", None, "random weights (plumbing only): no file"))
    else:
        rep.entries.append(check_file(options.get("sd_ckpt"), "sd_ckpt", kind, config))
        if kind == "rdeic" or options.get("rdeic_ckpt"):
            rep.entries.append(check_file(options.get("rdeic_ckpt"), "rdeic_ckpt", kind, config))
    if kind == "rdeic":
        cache = check_text_cache(options)
        if cache is not None:
            rep.entries.append(cache)
    return rep


def _wrap(text: str, indent: int) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, subsequent_indent=" " * indent, break_long_words=True, break_on_hyphens=False
    ) or [text]


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


_VERBS = ("is ", "stores ", "holds ", "cannot ", "does ")


def run(args: argparse.Namespace) -> int:
    from harness.registry import CODECS

    names = [n.strip() for item in args.codec for n in item.split(",") if n.strip()] or CODECS.names()
    reports = [report_for(n, args.sd_ckpt, args.rdeic_ckpt) for n in dict.fromkeys(names)]
    print(render(reports))
    return 1 if any(e.failed for r in reports for e in r.entries) else 0
