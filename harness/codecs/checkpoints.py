"""Checking weight files, for every codec: one reader, one key/shape diff, one hash, one wording.

Each learned codec describes the files its options name as :class:`WeightFile` rows (its own
``checkpoint.weight_files``): which codec, which option, what the file is, where the right one comes from, where
its state dict sits in a PyTorch file, and how its tensor names and shapes must look. Everything else is here::

    path ──> inspect: exists? a file? empty? first bytes: safetensors | PyTorch zip | PyTorch legacy | a pickle
         ──> read: safetensors header / torch.load(weights_only=True, mmap=True for zip files)   [never unpickles]
         ──> tensor names and shapes against the codec's expectation (``WeightFile.fit``)
         ──> sha256 against the recorded one (shipped files, or a SHA256SUMS line beside the file)

A file that fails any step is one :class:`WeightsError` line, always ``<Codec> <option> <path> <cause>; <fix>``
(e.g. ``DICM ckpt /w/dicm.pt is a Python pickle, ...; give ...``): the codec that checks it names itself, the
cause is said in our words (never torch's text, which carries ANSI escapes and suggests ``weights_only=False``),
and the fix says where the right file comes from. Loading a file that stores Python objects is never suggested:
unpickling can run code.

:func:`preflight` runs every step for every file of every codec of a suite before anything is encoded
(``harness/planning.py``), so a bad file late in the chain (LDM-RSIC's S2 file, read at the first decode) stops
the run at once instead of after the encode phase.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.codecs.base import CodecUnusable
from harness.hashing import file_sha256

Shapes = dict[str, tuple[int, ...]]

#: Formats :func:`inspect` recognises.
SAFETENSORS, TORCH_ZIP, TORCH_LEGACY = "safetensors", "pytorch-zip", "pytorch-legacy"
#: What ``torch.save(..., _use_new_zipfile_serialization=False)`` writes first: pickle protocol 2, then the long
#: 0x1950a86a20f9469cfc6c (torch/serialization.py's MAGIC_NUMBER). Any other pickle is not a PyTorch file.
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
ROOT = Path(__file__).resolve().parent.parent.parent
#: sha256 of the weight files the project ships (each folder's MODEL_CARD.md: a rerun of its recipe reproduces
#: them byte for byte). Retrained on purpose? Record the new hashes here (``sha256sum weights/*/*.safetensors``).
SHIPPED_SHA256 = {
    "rdeic-tiny-low.safetensors": "7282a69d6b77102c764cf1f46e1fdf91015724bfe7ce4531fb936c9002c84d9f",
    "rdeic-tiny-high.safetensors": "75b30f9c2c2ef7bae928bec197a0933498e36d9c09ccdd1c2dfcfe72d17935f7",
    "ldm-rsic-tiny.safetensors": "75fdb9584afe3cdbd5f7019f4ff036dd89a9d3063916d8f919830b4e70c7ef29",
    "j2k-men-tiny.safetensors": "6dc7669f2d527bdf62c0927c267dbd31d4e5b85fd8f9220ff295c63f15062eba",
    "dicm-tiny.safetensors": "03505e27e9c4caa4afad51be34bf037077b00e770cd7e75d8e9f5d3e85579c86",
}
#: Where :data:`SHIPPED_SHA256` is, for the messages.
SHIPPED_TABLE = "harness/codecs/checkpoints.py SHIPPED_SHA256"


class WeightsError(CodecUnusable, FileNotFoundError):
    """A weights file missing or unusable. The message is one line: the codec, the option, the file, the cause and
    the fix; ``problem`` and ``fix`` hold the two halves alone (``evaluate.py weights check`` prints them apart).
    A ``CodecUnusable`` (the CLI prints the line and exits 2; a run stops instead of refusing images one by one),
    and a ``FileNotFoundError`` for older callers."""

    def __init__(self, message: str, problem: str = "", fix: str = "", codec: str = "", path: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message
        self.fix = fix
        self.codec = codec
        self.path = path


@dataclass(frozen=True)
class Misfit:
    """Why a file's tensors do not fit (one clause), and a better fix than the file's own where one is known
    (e.g. "they are weights for config 'tiny': set config = \"tiny\"")."""

    problem: str
    fix: str | None = None


@dataclass(frozen=True)
class WeightFile:
    """One weights file a codec's options name.

    ``codec``: the codec's name as users read it (``RDEIC``, ``LDM-RSIC``, ``JPEG2000*``, ``DICM``); ``role``: the
    option that names the file; ``path``: None when the option is not given; ``what``: what the file is, one
    clause; ``fix``: where the right file comes from and how to give it, one clause; ``containers``: keys of a
    PyTorch file's top-level dict the state dict may sit under, in order of preference (else the dict itself);
    ``fit``: tensor names and shapes -> :class:`Misfit` (None: they fit), after the codec's own conversions."""

    codec: str
    role: str
    path: str | None
    what: str
    fix: str
    containers: tuple[str, ...] = ("state_dict",)
    fit: Callable[[Shapes], Misfit | None] | None = dataclasses.field(default=None, compare=False)


def fail(f: WeightFile, problem: str, fix: str | None = None) -> WeightsError:
    """The one-line error of ``f``: ``<Codec> <role> <path> <problem>; <fix>``."""
    fix = fix or f.fix
    return WeightsError(f"{f.codec} {f.role} {f.path} {problem}; {fix}", problem, fix, f.codec, str(f.path))


# -- the file: exists, kind, format ------------------------------------------------------------------------------
def _safetensors_problem(path: Path, size: int) -> str | None:
    """Why ``path`` (which starts like a safetensors file) is not a complete one; None when it is."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if 8 + n > size:
            return f"is a truncated safetensors file (its header alone needs {8 + n} bytes, the file has {size})"
        raw = fh.read(n)
    try:
        header = json.loads(raw)
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "is not a valid safetensors file (its header is not the JSON table of tensors)"
    need = 8 + n + max(ends, default=0)
    if need > size:
        return f"is a truncated safetensors file (its header describes {need} bytes, the file has {size})"
    return None


def _looks_like_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return head[8:9] == b"{" and 2 <= n < 100_000_000


def inspect(f: WeightFile) -> str:
    """The format of ``f.path`` from its first bytes (and, cheaply, its end), never from its name:
    :data:`SAFETENSORS`, :data:`TORCH_ZIP` or :data:`TORCH_LEGACY`. Raises :class:`WeightsError` for a missing,
    empty, truncated or unrecognised file, a folder, a zip that is not a PyTorch checkpoint, or a Python pickle.
    Reads a safetensors header, never the tensors."""
    if f.path is None:
        raise fail(f, "is not given", f"set the codec option {f.role}: {f.fix}")
    p = Path(f.path)
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if c.suffix in (".ckpt", ".safetensors", ".pt", ".pth", ".tar"))
        holds = f" (it holds {', '.join(inside[:3])})" if inside else ""
        raise fail(f, f"is a folder, not a weights file{holds}: give the file itself", f.fix)
    if not p.exists():
        raise fail(f, "is missing: no file at this path", f.fix)
    if not p.is_file():
        raise fail(f, "is not a regular file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise fail(f, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if size == 0:
        raise fail(f, "is empty (0 bytes: an interrupted download or copy?)")
    if head[:4] == b"PK\x03\x04":
        if not zipfile.is_zipfile(p):
            raise fail(f, "is a truncated or damaged PyTorch checkpoint (its zip directory is missing)")
        with zipfile.ZipFile(p) as zf:
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in zf.namelist()):
                raise fail(f, "is a zip archive but not a PyTorch checkpoint (no data.pkl inside)")
        return TORCH_ZIP
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        if head[: len(_LEGACY_MAGIC)] == _LEGACY_MAGIC[: len(head)]:
            return TORCH_LEGACY
        raise fail(
            f,
            "is a Python pickle, not a PyTorch checkpoint or a safetensors file (it is never unpickled here: "
            "unpickling can run code)",
        )
    if _looks_like_safetensors(head):
        problem = _safetensors_problem(p, size)
        if problem:
            raise fail(f, problem)
        return SAFETENSORS
    shown = " ".join(f"{b:02x}" for b in head[:8])
    raise fail(f, f"cannot be read as weights: not a PyTorch checkpoint or a safetensors file (first bytes: {shown})")


def inspect_all(files: Iterable[WeightFile]) -> None:
    """:func:`inspect` each given file (the cheap check a codec runs when it is built)."""
    for f in files:
        if f.path is not None:
            inspect(f)


# -- reading ---------------------------------------------------------------------------------------------------
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _torch_load(f: WeightFile, fmt: str) -> Any:
    """``torch.load(weights_only=True)`` (memory-mapped for zip files: nothing is read until used); every failure
    becomes one line in our words."""
    import pickle

    import torch

    path = Path(str(f.path))
    try:
        if path.suffix == ".safetensors":  # torch.load reads a path so named as safetensors: hand it the file
            with open(path, "rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=fmt == TORCH_ZIP)
    except MemoryError:
        raise
    except Exception as exc:  # every reader failure, in one line of our own
        text = str(exc)
        if "Weights only load failed" in text or "WeightsUnpickler" in text:
            m = _UNSUPPORTED_GLOBAL.search(text)
            what = f" ({m.group(1)})" if m else ""
            raise fail(
                f,
                f"stores Python objects besides tensors{what}, which are never unpickled here (that can run code)",
                f"{f.fix}; or a file of its tensors alone (.safetensors), written where the file was made",
            ) from None
        if isinstance(exc, EOFError | pickle.UnpicklingError) or "truncated" in text or "out of input" in text:
            raise fail(f, "is a truncated or damaged PyTorch checkpoint (its data ends early)") from None
        raise fail(f, f"cannot be read as a PyTorch checkpoint: damaged or incomplete ({type(exc).__name__})") from None


def _state_of(f: WeightFile, obj: Any) -> dict[str, Any]:
    """The state dict inside a file's top-level object: the first of ``f.containers`` present, else the object."""
    state = obj
    if isinstance(obj, dict):
        for key in f.containers:
            if isinstance(obj.get(key), dict):
                state = obj[key]
                break
    import torch

    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        kind = f"keys {', '.join(map(repr, list(obj)[:4]))}" if isinstance(obj, dict) else type(obj).__name__
        under = f" or under {' / '.join(map(repr, f.containers))}" if f.containers else ""
        raise fail(f, f"holds no state dict of tensors ({kind}; expected tensors by name{under})")
    bad = next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise fail(f, f"holds a state dict whose entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor")
    return state


def read_state(f: WeightFile, prefixes: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Key -> tensor of ``f`` (safetensors: ``safe_open``/``get_tensor``; PyTorch: its state dict, see
    :attr:`WeightFile.containers`), optionally only the keys under ``prefixes``. Raises :class:`WeightsError`."""
    fmt = inspect(f)
    if fmt == SAFETENSORS:
        from safetensors import safe_open

        out = {}
        try:
            with safe_open(str(f.path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if prefixes is None or key.startswith(prefixes):
                        out[key] = fh.get_tensor(key)
        except MemoryError:
            raise
        except Exception as exc:  # safetensors' own errors, in our words
            raise fail(f, f"is not a readable safetensors file ({type(exc).__name__})") from None
        return out
    state = _state_of(f, _torch_load(f, fmt))
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return state


def read_shapes(f: WeightFile) -> Shapes:
    """Key -> shape of ``f`` without reading its tensors (safetensors header; a memory-mapped PyTorch zip)."""
    fmt = inspect(f)
    if fmt == SAFETENSORS:
        with open(str(f.path), "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return {k: tuple(v.shape) for k, v in _state_of(f, _torch_load(f, fmt)).items()}


# -- names and shapes ------------------------------------------------------------------------------------------
def _shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def key_problems(
    shapes: Shapes, expected: Shapes, any_shape: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> str | None:
    """How ``shapes`` (key -> shape, from a file) differ from ``expected``, in one clause (None when they fit).
    Keys under the ``optional`` prefixes may be absent; keys in ``any_shape`` (e.g. CDF tables that ``update``
    rebuilds) may have any shape."""
    missing = sorted(k for k in set(expected) - set(shapes) if not (optional and k.startswith(optional)))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in expected if k in shapes and k not in any_shape and tuple(shapes[k]) != tuple(expected[k]))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys, e.g. {', '.join(missing[:3])}")
    if extra:
        parts.append(f"unexpected {len(extra)} keys, e.g. {', '.join(extra[:3])}")
    if wrong:
        k = wrong[0]
        more = f" (and {len(wrong) - 1} more keys of other shapes)" if len(wrong) > 1 else ""
        parts.append(f"shape of {k} is {_shape(shapes[k])} in the file, {_shape(expected[k])} expected{more}")
    return "; ".join(parts) or None


# -- hashes ----------------------------------------------------------------------------------------------------
def recorded_sha256(path: str | os.PathLike) -> tuple[str, str] | None:
    """(sha256, where it is recorded) of a file: a ``SHA256SUMS`` line beside it (``sha256sum`` format), else the
    shipped table :data:`SHIPPED_SHA256` by file name; None when no hash is recorded."""
    p = Path(path)
    sums = p.parent / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == p.name:
                return parts[0].lower(), str(sums)
    if p.name in SHIPPED_SHA256:
        return SHIPPED_SHA256[p.name], SHIPPED_TABLE
    return None


def shipped_fix(path: str | os.PathLike, recipe: str) -> str:
    """The fix for a shipped file (``path``: where the project ships it, e.g. ``weights/dicm-tiny/x.safetensors``):
    restore it from git, or retrain it with its ``recipe`` (a module name)."""
    p = Path(path)
    return (
        f"restore the shipped file (git checkout -- {p.as_posix()}) or retrain it (python -m {recipe} "
        f"--out {p.parent.as_posix()})"
    )


def _size(path: Path) -> str:
    n = float(path.stat().st_size)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


# -- the whole check -------------------------------------------------------------------------------------------
def check(f: WeightFile) -> str:
    """Every check of one file: exists and is weights (:func:`inspect`), its tensor names and shapes
    (``f.fit``), its sha256 where one is recorded. Returns what was found, one clause (for ``weights check``); raises
    :class:`WeightsError` with the cause and the fix."""
    inspect(f)
    path = Path(str(f.path))
    detail = f"{_size(path)}"
    if f.fit is not None:  # names and shapes first: the more telling cause when both differ
        misfit = f.fit(read_shapes(f))
        if misfit is not None:
            raise fail(f, misfit.problem, misfit.fix)
    recorded = recorded_sha256(path)
    if recorded is not None:
        digest, where = recorded
        actual = file_sha256(path)
        if actual != digest:
            raise fail(
                f,
                f"has sha256 {actual[:8]}…, not the recorded {digest[:8]}… ({where}): changed or damaged",
                f"{f.fix} (retrained on purpose? record its sha256 in {where})",
            )
        detail += f", sha256 {digest[:8]}… as recorded"
    return detail + ("; tensor names and shapes fit" if f.fit is not None else "")


def preflight(codecs: Iterable[Any]) -> None:
    """:func:`check` every file of every codec (those with ``weight_files``): the pre-flight of a suite, before
    anything is encoded. Raises the first :class:`WeightsError`."""
    for codec in codecs:
        files = getattr(type(codec), "weight_files", None)
        if files is None:
            continue
        for f in files(codec.options):
            if f.path is not None:
                check(f)
