"""Loading LDM-RSIC weights strictly, and saying in one line what is wrong with a file that does not fit.

Official files (brief §1, §8; none can be downloaded here): the ELIC checkpoint
``checkpoint/ELIC_arch_base/mse_{λ}/checkpoint_best_loss.pth.tar`` (a compressai-style dict whose ``state_dict``
holds the model; or ``updata.py``'s bare dict) and the BasicSR S2 file ``experiments/pre_trained/mlkk_{λ}_GP4_S2/
net_g_latest.pth`` (``params_ema``, else ``params``). The official test loads S2 with ``strict_load_g: False``,
which silently accepts a wrong file; here every key and shape must match the config's modules:

- ELIC: the entropy bottleneck's compressai-1.1.x names (``_matrix{i}``, ``_bias{i}``, ``_factor{i}``) are renamed
  to 1.2.x's (``matrices.{i}`` ...) and the loader says which it saw; the CDF buffers (empty [0] in a training
  checkpoint, data-dependent after ``update``) may have any shape and are rebuilt with ``update(force=True)``;
  a ``module.`` prefix (multi-GPU training) is stripped.
- S2: ``diffusion.model.*`` / ``diffusion.condition.*`` repeat ``denoise.*`` / ``condition.*`` in the official
  file: when present they must equal them (else the file is refused); our own files omit them.

Our merged ``.safetensors`` holds ``elic.*`` and ``s2.*`` (JPEG2000*'s MEN file: ``s2.*`` only).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from harness.codecs.base import CodecUnusable

ELIC_SOURCE = (
    "the official LDM-RSIC release (github.com/mlkk518/LDM-RSIC: Baidu Netdisk link, code v72j), "
    "checkpoint/ELIC_arch_base/mse_{lam}/checkpoint_best_loss.pth.tar"
)
LDM_SOURCE = (
    "the official LDM-RSIC release (github.com/mlkk518/LDM-RSIC: Baidu Netdisk link, code v72j), "
    "experiments/pre_trained/mlkk_{lam}_GP4_S2/net_g_latest.pth"
)
S2_DUPLICATES = ("diffusion.model.", "diffusion.condition.")
_OLD_EB = re.compile(r"^entropy_bottleneck\._(matrix|bias|factor)(\d+)$")
_NEW_NAME = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


class WeightsError(CodecUnusable, FileNotFoundError):
    """Weights missing or unusable (one line: the file, what is wrong, where the right file comes from)."""


def missing_weights_message(what: str, lam: float) -> str:
    return (
        f"LDM-RSIC weights missing: {what}. The official model needs the ELIC checkpoint (codec option `elic_ckpt`: "
        f"{ELIC_SOURCE.format(lam=lam)}) and, unless enhance = false, the S2 file (option `ldm_ckpt`: "
        f"{LDM_SOURCE.format(lam=lam)}); or a merged .safetensors (`weights`), e.g. the project's LDM-RSIC-tiny "
        "(codec `ldm-rsic-tiny`, weights/ldm-rsic-tiny/). Random weights run only with allow_random_weights = true "
        "(plumbing tests)."
    )


def read_tensors(path: str | os.PathLike, role: str) -> dict[str, Any]:
    """The top-level object of a weights file (safetensors: a flat dict of tensors; PyTorch: whatever it holds,
    read with ``weights_only=True``). One-line ``WeightsError`` for a missing, empty or unreadable file."""
    p = Path(path)
    if not p.is_file():
        why = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise WeightsError(f"LDM-RSIC weights: {role} {p} {why}")
    if p.stat().st_size == 0:
        raise WeightsError(f"LDM-RSIC weights: {role} {p} is empty (0 bytes: an interrupted download or copy?)")
    with open(p, "rb") as fh:
        head = fh.read(9)
    try:
        if len(head) == 9 and head[8:9] == b"{":
            from safetensors.torch import load_file

            return load_file(str(p))
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:  # any reader failure, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise WeightsError(f"LDM-RSIC weights: {role} {p} cannot be read as a checkpoint ({first})") from None


def _tensor_dict(obj: Any, keys: tuple[str, ...], path: str, role: str) -> dict[str, torch.Tensor]:
    """The state dict inside ``obj``: the first of ``keys`` present, else ``obj`` itself; tensors only."""
    state = obj
    if isinstance(obj, dict):
        for k in keys:
            if isinstance(obj.get(k), dict):
                state = obj[k]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = f"keys {', '.join(map(repr, list(obj)[:4]))}" if isinstance(obj, dict) else type(obj).__name__
        raise WeightsError(
            f"LDM-RSIC weights: {role} {path} holds no state dict ({kind}; expected tensors by name"
            + (f" or under {' / '.join(map(repr, keys))}" if keys else "")
            + ")"
        )
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def rename_entropy_bottleneck(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """compressai 1.1.x factorized-prior names -> 1.2.x; returns (state, which naming the file used)."""
    out, old = {}, False
    for k, v in state.items():
        m = _OLD_EB.match(k)
        if m:
            old = True
            k = f"entropy_bottleneck.{_NEW_NAME[m.group(1)]}.{m.group(2)}"
        out[k] = v
    return out, "compressai 1.1.x names (_matrix/_bias/_factor)" if old else "compressai 1.2.x names"


def key_problems(
    shapes: dict[str, tuple[int, ...]],
    expected: dict[str, tuple[int, ...]],
    any_shape: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> str | None:
    """How ``shapes`` (from a file) differ from ``expected``, in one line (None when they fit)."""
    missing = sorted(k for k in set(expected) - set(shapes) if not k.startswith(optional or ("\0",)))
    extra = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in expected if k in shapes and k not in any_shape and tuple(shapes[k]) != expected[k])
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if extra:
        parts.append(f"unexpected {len(extra)} keys ({', '.join(extra[:4])}{', ...' if len(extra) > 4 else ''})")
    if wrong:
        k = wrong[0]
        more = f" and {len(wrong) - 1} more keys of other shapes" if len(wrong) > 1 else ""
        parts.append(f"shape of {k} is {list(shapes[k])} in the file, {list(expected[k])} expected{more}")
    return "; ".join(parts) or None


def check_state(
    state: dict[str, torch.Tensor],
    module: torch.nn.Module,
    source: str,
    part: str,
    config: str,
    any_shape: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    """Exact key set and shapes of ``module``'s state dict, or one ``WeightsError`` line naming what differs."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problem = key_problems({k: tuple(v.shape) for k, v in state.items()}, expected, any_shape, optional)
    if problem:
        raise WeightsError(f"LDM-RSIC weights {source} do not fit the {part} of config {config!r}: {problem}")


def elic_state(path: str | os.PathLike, elic: torch.nn.Module, config: str) -> tuple[dict, str]:
    """The ELIC state of an official checkpoint, renamed and checked against ``elic``; (state, note)."""
    obj = read_tensors(path, "elic_ckpt")
    state, naming = rename_entropy_bottleneck(_tensor_dict(obj, ("state_dict",), str(path), "elic_ckpt"))
    check_state(state, elic, f"elic_ckpt {path}", "ELIC", config, elic.CDF_BUFFERS)
    return state, f"elic_ckpt {Path(path).name}: {naming}"


def s2_state(path: str | os.PathLike, s2: torch.nn.Module, config: str, role: str = "ldm_ckpt") -> dict:
    """The S2 state of a BasicSR file (``params_ema``, else ``params``), checked key for key; repeated
    ``diffusion.*`` tensors must equal the ones they repeat."""
    obj = read_tensors(path, role)
    state = _tensor_dict(obj, ("params_ema", "params"), str(path), role)
    return checked_s2(state, s2, f"{role} {path}", config)


def checked_s2(state: dict, s2: torch.nn.Module, source: str, config: str) -> dict:
    check_state(state, s2, source, "S2 network (MEN + LDM)", config, optional=S2_DUPLICATES)
    for k, v in state.items():
        for dup, orig in (("diffusion.model.", "denoise."), ("diffusion.condition.", "condition.")):
            if k.startswith(dup) and not torch.equal(v, state[orig + k[len(dup) :]]):
                raise WeightsError(
                    f"LDM-RSIC weights {source}: {k} differs from {orig + k[len(dup) :]}, which it repeats in a "
                    "consistent file (refused: the official loader would keep whichever it loads last)"
                )
    return {k: v for k, v in state.items() if not k.startswith(S2_DUPLICATES)}


def split_merged(path: str | os.PathLike, role: str = "weights") -> dict[str, dict[str, torch.Tensor]]:
    """Our merged safetensors: ``{"elic": {...}, "s2": {...}}`` (either part may be absent)."""
    obj = read_tensors(path, role)
    state = _tensor_dict(obj, (), str(path), role)
    parts: dict[str, dict[str, torch.Tensor]] = {"elic": {}, "s2": {}}
    other = []
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if head in parts and rest:
            parts[head][rest] = v
        else:
            other.append(k)
    if other:
        raise WeightsError(
            f"LDM-RSIC weights {role} {path}: unexpected {len(other)} keys outside elic.* / s2.* "
            f"({', '.join(other[:4])}"
            f"{', ...' if len(other) > 4 else ''}): not an LDM-RSIC .safetensors"
        )
    return parts


def file_sha256(path: str | os.PathLike, _cache: dict = {}) -> str:  # noqa: B006 (deliberate memo)
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _cache[key] = h.hexdigest()
    return _cache[key]
