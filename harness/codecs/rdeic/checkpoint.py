"""Loading the official checkpoints (SPEC §1.1) and our own ``.safetensors``, and saying in one line what is
wrong with a weights file that cannot be used.

The official inference merges two files: the SD 2.1 checkpoint ``v2-1_512-ema-pruned.ckpt`` (UNet, VAE, text
tower, schedule buffers) and an RDEIC checkpoint such as ``rdeic_2_step2.ckpt`` (control module and
compression module). ``merge_official`` reproduces that merge for a *strict* load: drop ``model_ema.*`` and
``perceptual_loss.*``, supply ``logvar`` (zeros) when absent, and report in words what the RDEIC file adds or
lacks. The GaussianConditional CDF buffers arrive empty ([0]); the loader resizes them and the caller
rebuilds the tables with ``update(force=True)``.

A file's format is read from its first bytes, never from its name (a ``.ckpt`` that is really a safetensors
file loads; random bytes named ``.ckpt`` are called what they are): ``sniff`` recognises a PyTorch zip
checkpoint, an old-format (pickle) PyTorch file and a safetensors file, and refuses a missing, empty,
truncated or unrecognised file, or a directory, with a :class:`WeightsError` (a ``CodecError``: the CLI prints
its one line and exits 2) that names the file, what is wrong and where the right file comes from. Tensors are
read exactly as before (``safe_open``/``get_tensor``; ``torch.load(weights_only=True, mmap=True)``); only the
checks and messages are new.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zipfile
from pathlib import Path

import torch

# a codec that cannot run at all stops the suite (never an image refusal)
from harness.codecs.base import CodecUnusable as _Unusable

SD_FILE = "v2-1_512-ema-pruned.ckpt"
RDEIC_FILE = "rdeic_2_step2.ckpt"
SD_SOURCE = "huggingface.co/stabilityai/stable-diffusion-2-1-base"
RDEIC_SOURCE = "the links in the README of github.com/huai-chang/RDEIC"
TINY_DIR = "weights/rdeic-tiny"
TRAINED_PREFIXES = ("control_model.", "preprocess_model.")
DROP_PREFIXES = ("model_ema.", "perceptual_loss.")
#: Formats :func:`sniff` recognises.
SAFETENSORS, TORCH_ZIP, TORCH_LEGACY = "safetensors", "pytorch-zip", "pytorch-legacy"


class WeightsError(_Unusable, FileNotFoundError):
    """Weights missing or unusable; the message (one line) names the file, what is wrong and how to fix it.
    A ``CodecError`` (the CLI's exit 2), and still a ``FileNotFoundError`` for older callers. ``problem`` and
    ``fix`` hold the two halves alone where they are known (``evaluate.py weights check`` prints them)."""

    def __init__(self, message: str, problem: str = "", fix: str = "") -> None:
        super().__init__(message)
        self.problem = problem or message
        self.fix = fix


def missing_weights_message(what: str) -> str:
    return (
        f"RDEIC weights missing: {what}. The official model needs two files: the Stable Diffusion 2.1 base "
        f"checkpoint `{SD_FILE}` (stabilityai/stable-diffusion-2-1-base) and an RDEIC checkpoint such as "
        f"`{RDEIC_FILE}` (released with github.com/huai-chang/RDEIC). Point to them with the codec options "
        '`sd_ckpt` and `rdeic_ckpt` (suite TOML: options = { sd_ckpt = "...", rdeic_ckpt = "..." }, or the '
        "CLI flags --sd-ckpt/--rdeic-ckpt), or to a merged file with `weights` (.safetensors). "
        "Random weights run only when asked for explicitly (allow_random_weights = true), for plumbing tests."
    )


def guess_role(path: str | os.PathLike) -> str | None:
    """The role a file's name suggests (``None`` when it suggests none)."""
    name = Path(path).name.lower()
    if "rdeic-tiny" in name or (name.endswith(".safetensors") and "rdeic" in name):
        return "weights"
    if name.startswith(("v2-1", "v2_1", "sd")) or "stable-diffusion" in name or "stable_diffusion" in name:
        return "sd_ckpt"
    if "rdeic" in name:
        return "rdeic_ckpt"
    return None


def how_to_fix(path: str | os.PathLike, role: str | None = None) -> str:
    """Where the right file for ``role`` (guessed from the name when None) comes from, in one clause."""
    role = role or guess_role(path)
    name = Path(path).name
    if role == "sd_ckpt":
        return f"sd_ckpt must be the Stable Diffusion 2.1 base checkpoint `{SD_FILE}` from {SD_SOURCE}"
    if role == "rdeic_ckpt":
        return f"rdeic_ckpt must be an RDEIC checkpoint such as `{RDEIC_FILE}` ({RDEIC_SOURCE})"
    if role == "weights" and name.startswith("rdeic-tiny"):
        return (
            f"restore the shipped file (git checkout -- {TINY_DIR}/{name}) or retrain it "
            f"(python -m harness.train.tiny --out {TINY_DIR})"
        )
    if role == "weights":
        return (
            "`weights` must be a merged .safetensors of the whole model (harness.codecs.rdeic.checkpoint."
            f"save_safetensors), or give the official pair: sd_ckpt `{SD_FILE}` ({SD_SOURCE}) and rdeic_ckpt "
            f"`{RDEIC_FILE}` ({RDEIC_SOURCE})"
        )
    return (
        f"the official files are `{SD_FILE}` ({SD_SOURCE}) for sd_ckpt and an RDEIC checkpoint such as "
        f"`{RDEIC_FILE}` ({RDEIC_SOURCE}) for rdeic_ckpt; RDEIC-tiny's are in {TINY_DIR}/"
    )


def _fail(path: str | os.PathLike, role: str | None, problem: str) -> WeightsError:
    what = f"{role} " if role else ""
    fix = how_to_fix(path, role)
    return WeightsError(f"RDEIC weights: {what}{path} {problem}; {fix}", problem, fix)


def _safetensors_problem(path: Path, size: int) -> str | None:
    """Why ``path`` (which starts like a safetensors file) is not a complete one; ``None`` when it is."""
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


def sniff(path: str | os.PathLike, role: str | None = None) -> str:
    """The format of a weights file from its first bytes (and, cheaply, its end): ``safetensors``,
    ``pytorch-zip`` or ``pytorch-legacy``. Raises :class:`WeightsError` (one line) for a missing, empty,
    truncated or unrecognised file, or a directory. Reads the safetensors header, not the tensors."""
    p = Path(path)
    if p.is_dir():
        inside = sorted(c.name for c in p.iterdir() if c.suffix in (".ckpt", ".safetensors", ".pt", ".pth"))[:3]
        holds = f" (it holds {', '.join(inside)})" if inside else ""
        raise _fail(p, role, f"is a directory, not a weights file{holds}: give the file itself")
    if not p.exists():
        what = f"no file at {str(p)!r}" + (f" ({role})" if role else "")
        raise WeightsError(missing_weights_message(what), "does not exist", how_to_fix(p, role))
    if not p.is_file():
        raise _fail(p, role, "is not a regular file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(16)
    except OSError as exc:
        raise _fail(p, role, f"cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise _fail(p, role, "is empty (0 bytes: an interrupted download or copy?)")
    if head[:4] == b"PK\x03\x04":
        if not zipfile.is_zipfile(p):
            raise _fail(p, role, "is a truncated or damaged PyTorch checkpoint (its zip directory is missing)")
        return TORCH_ZIP
    if head[:1] == b"\x80" and 2 <= head[1] <= 5 and size > 16:
        return TORCH_LEGACY
    if _looks_like_safetensors(head):
        problem = _safetensors_problem(p, size)
        if problem:
            raise _fail(p, role, problem)
        return SAFETENSORS
    shown = " ".join(f"{b:02x}" for b in head[:8])
    raise _fail(p, role, f"is not a PyTorch checkpoint or a safetensors file (first bytes: {shown})")


def check_weights_file(path: str | os.PathLike, role: str | None = None) -> str:
    """``sniff`` under the name the codec uses: the cheap check a codec can run when it is built (header only)."""
    return sniff(path, role)


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _torch_load(path: Path, role: str | None, fmt: str):
    try:
        if path.suffix == ".safetensors":  # torch.load reads a path so named as safetensors: hand it the file
            with open(path, "rb") as fh:
                return torch.load(fh, map_location="cpu", weights_only=True)
        # old-format (pickle) files cannot be memory-mapped; zip checkpoints are read exactly as always
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=fmt == TORCH_ZIP)
    except MemoryError:
        raise
    except Exception as exc:  # every failure: one line naming the file
        text = str(exc)
        if "Weights only load failed" in text or type(exc).__name__ == "UnpicklingError":
            m = _UNSUPPORTED_GLOBAL.search(text)
            what = f" ({m.group(1)})" if m else ""
            extract = (
                f"python -c \"import torch; from safetensors.torch import save_file; o = torch.load('{path}', "
                "weights_only=False); sd = o.get('state_dict', o); save_file({k: v.contiguous() for k, v in "
                f"sd.items()}}, '{path.with_suffix('.safetensors')}')\""
            )
            problem = (
                f"stores Python objects besides tensors{what}, which are not loaded for safety "
                "(torch.load weights_only=True)"
            )
            fix = f"if you trust the file, extract its state dict with {extract} and pass the .safetensors instead"
            who = f"{role} " if role else ""
            raise WeightsError(f"RDEIC weights: {who}{path} {problem}; {fix}", problem, fix) from None
        first = text.strip().splitlines()[0][:160] if text.strip() else type(exc).__name__
        raise _fail(path, role, f"cannot be read as a PyTorch checkpoint, damaged or incomplete ({first})") from None


def read_state_dict(
    path: str | os.PathLike, prefixes: tuple[str, ...] | None = None, role: str | None = None
) -> dict[str, torch.Tensor]:
    """A state dict from a Lightning ``.ckpt`` (its ``state_dict`` entry; ``weights_only=True``) or a
    ``.safetensors`` file (format read from the content), optionally only the keys under ``prefixes``.
    ``role`` (``sd_ckpt``, ``rdeic_ckpt``, ``weights``) only improves the error messages."""
    path = Path(path)
    fmt = sniff(path, role)
    if fmt == SAFETENSORS:
        from safetensors import safe_open

        out = {}
        try:
            with safe_open(str(path), framework="pt") as fh:
                for key in fh.keys():  # noqa: SIM118 (safe_open is not a dict)
                    if prefixes is None or key.startswith(prefixes):
                        out[key] = fh.get_tensor(key)
        except MemoryError:
            raise
        except Exception as exc:  # safetensors' own errors, in one line
            raise _fail(path, role, f"is not a readable safetensors file ({exc})") from None
        return out
    obj = _torch_load(path, role, fmt)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        kind = f"keys {', '.join(map(repr, list(obj)[:4]))}" if isinstance(obj, dict) else type(obj).__name__
        raise _fail(path, role, f"holds no state dict ({kind}; expected tensors by name, or under 'state_dict')")
    bad = next(((k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise _fail(path, role, f"holds a state dict whose entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor")
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return state


def read_shapes(path: str | os.PathLike, role: str | None = None) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a weights file without reading its tensors (safetensors header; memory-mapped
    PyTorch zip checkpoints): for ``evaluate.py weights check``."""
    path = Path(path)
    fmt = sniff(path, role)
    if fmt == SAFETENSORS:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}
    return {k: tuple(v.shape) for k, v in read_state_dict(path, None, role).items()}


def merge_official(
    sd_state: dict[str, torch.Tensor], cc_state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """SD dict updated with the RDEIC dict (the official order), cleaned for a strict load against ``expected``
    (key -> shape). Returns (state, notes in plain words)."""
    notes: list[str] = []
    overridden = sorted(k for k in cc_state if k in sd_state and not k.startswith(TRAINED_PREFIXES))
    beyond = sorted(k for k in cc_state if not k.startswith(TRAINED_PREFIXES))
    if beyond:
        notes.append(
            f"the RDEIC file holds {len(beyond)} keys beyond control_model./preprocess_model. "
            f"({len(overridden)} of them replace SD keys), e.g. {', '.join(beyond[:3])}"
        )
    lacking = sorted(k for k in expected if k.startswith(TRAINED_PREFIXES) and k not in cc_state)
    if lacking:
        notes.append(f"the RDEIC file lacks {len(lacking)} trained keys, e.g. {', '.join(lacking[:3])}")
    merged = dict(sd_state)
    merged.update(cc_state)
    dropped = sorted(k for k in merged if k.startswith(DROP_PREFIXES))
    for k in dropped:
        del merged[k]
    if dropped:
        notes.append(f"dropped {len(dropped)} keys not used at inference (model_ema.*, perceptual_loss.*)")
    if "logvar" in expected and "logvar" not in merged:
        merged["logvar"] = torch.zeros(expected["logvar"])
        notes.append("supplied logvar = zeros (absent from both files; used only by the training loss)")
    return merged, notes


def _shape(shape) -> str:
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def key_problems(
    shapes: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    entropy_keys: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> str | None:
    """How ``shapes`` (key -> shape, from a file) differ from ``expected``, in one line (None when they fit).
    Keys under the ``optional`` prefixes may be absent; ``entropy_keys`` may have any shape."""
    missing = sorted(k for k in set(expected) - set(shapes) if not (optional and k.startswith(optional)))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(
        k for k in expected if k in shapes and k not in entropy_keys and tuple(shapes[k]) != tuple(expected[k])
    )
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


_PRESET_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {}


def preset_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the whole model of config ``name`` (built on the meta device: no memory, ~3 s official)."""
    if name not in _PRESET_SHAPES:
        from harness.codecs.rdeic.config import PRESETS
        from harness.codecs.rdeic.model import RDEICModel

        with torch.device("meta"):
            m = RDEICModel(PRESETS[name])
        _PRESET_SHAPES[name] = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    return _PRESET_SHAPES[name]


def fitting_config(
    shapes: dict[str, tuple[int, ...]], entropy_keys: tuple[str, ...] = (), scope: tuple[str, ...] | None = None
) -> str | None:
    """The config (``official``, ``tiny``, ``test``) whose model ``shapes`` fit, if any (the text tower and
    ``logvar`` may be absent; with ``scope``, only the keys under those prefixes count). For the message
    "these weights are for config X"."""
    from harness.codecs.rdeic.config import PRESETS

    for name in sorted(PRESETS, key=lambda n: n == "official"):  # the cheap ones first
        exp = preset_shapes(name)
        if scope is not None:
            exp = {k: v for k, v in exp.items() if k.startswith(scope)}
        if key_problems(shapes, exp, entropy_keys, ("cond_stage_model.", "logvar")) is None:
            return name
    return None


def _config_of(expected: dict[str, tuple[int, ...]]) -> str | None:
    from harness.codecs.rdeic.config import PRESETS

    for name in sorted(PRESETS, key=lambda n: n == "official"):
        exp = preset_shapes(name)
        if all(exp.get(k) == tuple(v) for k, v in expected.items()):
            return name
    return None


def check_keys(
    state: dict[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    entropy_keys: tuple[str, ...],
    source: str | None = None,
    config: str | None = None,
    role: str | None = None,
    scope: tuple[str, ...] | None = None,
) -> None:
    """Exact key match, same shapes except the GaussianConditional CDF buffers (rebuilt by update()). Raises
    :class:`WeightsError` in one line: what differs, and the config the weights fit when they fit another.
    ``source`` names the file(s) the state came from (``role``: the option that names it, for the fix),
    ``config`` the codec's config (inferred from ``expected`` when None), ``scope`` the key prefixes the caller
    loads (e.g. ``first_stage_model.`` for the VAE alone)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    problem = key_problems(shapes, expected, entropy_keys)
    if problem is None:
        return
    config = config or _config_of(expected)
    src = f" {source}" if source else ""
    fits = fitting_config(shapes, entropy_keys, scope)
    if fits is not None and fits != config:
        fix = f'they are weights for config {fits!r}: set config = "{fits}" (or give the files of config {config!r})'
    else:
        fix = how_to_fix(source or "", role)
    target = f"config {config!r}" if config else "the model"
    raise WeightsError(f"RDEIC weights{src} do not fit {target}: {problem}; {fix}")


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def file_sha256(path: str | os.PathLike, _cache: dict = {}) -> str:  # noqa: B006 (deliberate memo)
    """sha256 of a weights file (memoised per path, size and mtime: hashing 5 GB takes seconds)."""
    try:
        st = os.stat(path)
        key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
        if key not in _cache:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
            _cache[key] = h.hexdigest()
    except IsADirectoryError:
        raise _fail(path, None, "is a directory, not a weights file: give the file itself") from None
    except FileNotFoundError:
        raise WeightsError(missing_weights_message(f"no file at {str(path)!r}")) from None
    except OSError as exc:
        raise _fail(path, None, f"cannot be read ({exc.strerror or exc})") from None
    return _cache[key]


def read_text_cache(path: str | os.PathLike, key: str):
    """The cached empty-prompt context ``context.<key>`` of a text cache file, ``None`` when the file does not
    hold it; a damaged cache raises one line (delete it: it is rebuilt from the weights)."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path)).get(f"context.{key}")
    except Exception as exc:  # whatever safetensors raises
        raise WeightsError(
            f"RDEIC text cache {path} is damaged ({str(exc)[:120]}); delete it: it is rebuilt from the weights"
        ) from None
