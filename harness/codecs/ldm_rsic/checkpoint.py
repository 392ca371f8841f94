"""LDM-RSIC's weight files, described for :mod:`harness.codecs.checkpoints` (which reads and checks every codec's
files) and converted for a strict load.

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

Our merged ``.safetensors`` holds ``elic.*`` and ``s2.*`` (JPEG2000*'s MEN file: ``s2.*`` only). Every refusal is
one line naming LDM-RSIC (JPEG2000* for ``men_weights``), the option, the file, the cause and the fix.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import torch

from harness.codecs.checkpoints import (
    Misfit,
    Shapes,
    WeightFile,
    WeightsError,
    fail,
    file_sha256,
    key_problems,
    read_state,
    shipped_fix,
)

__all__ = [
    "WeightsError",
    "check_state",
    "checked_s2",
    "elic_state",
    "file_sha256",
    "key_problems",
    "s2_state",
    "split_merged",
    "weight_files",
]

RELEASE = "the official LDM-RSIC release (github.com/mlkk518/LDM-RSIC: Baidu Netdisk link, code v72j)"
ELIC_SOURCE = f"{RELEASE}, checkpoint/ELIC_arch_base/mse_{{lam}}/checkpoint_best_loss.pth.tar"
LDM_SOURCE = f"{RELEASE}, experiments/pre_trained/mlkk_{{lam}}_GP4_S2/net_g_latest.pth"
TINY_DIR = "weights/ldm-rsic-tiny"
TINY_RECIPE = "harness.train.ldm_rsic_tiny"
S2_DUPLICATES = ("diffusion.model.", "diffusion.condition.")
_OLD_EB = re.compile(r"^entropy_bottleneck\._(matrix|bias|factor)(\d+)$")
_NEW_NAME = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def missing_weights_message(what: str, lam: float) -> str:
    return (
        f"LDM-RSIC weights missing: {what}. The official model needs the ELIC checkpoint (codec option `elic_ckpt`: "
        f"{ELIC_SOURCE.format(lam=lam)}) and, unless enhance = false, the S2 file (option `ldm_ckpt`: "
        f"{LDM_SOURCE.format(lam=lam)}); or a merged .safetensors (`weights`), e.g. the project's LDM-RSIC-tiny "
        "(codec `ldm-rsic-tiny`, weights/ldm-rsic-tiny/). Random weights run only with allow_random_weights = true "
        "(plumbing tests)."
    )


# -- what each file is -------------------------------------------------------------------------------------------
def describe(role: str, path: str | os.PathLike | None, config: str = "official", lam: float = 0.0032,
             enhance: bool = True) -> WeightFile:  # fmt: skip
    """The :class:`WeightFile` of an LDM-RSIC (``men_weights``: JPEG2000*) file in ``role`` for ``config``."""
    name = Path(path).name if path is not None else ""
    p = None if path is None else str(path)
    if role == "elic_ckpt":
        return WeightFile(
            "LDM-RSIC", role, p, f"the official ELIC checkpoint of λ={lam} (checkpoint_best_loss.pth.tar)",
            f"give elic_ckpt = the file from {ELIC_SOURCE.format(lam=lam)}", ("state_dict",),
            lambda shapes: _elic_misfit(shapes, config),
        )  # fmt: skip
    if role == "ldm_ckpt":
        return WeightFile(
            "LDM-RSIC", role, p, f"the official S2 file (MEN + LDM) of λ={lam} (net_g_latest.pth)",
            f"give ldm_ckpt = the file from {LDM_SOURCE.format(lam=lam)}", ("params_ema", "params"),
            lambda shapes: _s2_misfit(shapes, config),
        )  # fmt: skip
    if role == "men_weights":
        shipped = name == "j2k-men-tiny.safetensors"
        fix = (
            shipped_fix(f"{TINY_DIR}/{name}", TINY_RECIPE)
            if shipped
            else "give men_weights = a .safetensors with s2.* (the paper's JPEG2000* MEN was not released), e.g. "
            "weights/ldm-rsic-tiny/j2k-men-tiny.safetensors (codec j2k+men-tiny)"
        )
        what = "JPEG2000*-tiny's MEN, shipped in weights/ldm-rsic-tiny/" if shipped else "a JPEG2000 MEN .safetensors"
        return WeightFile("JPEG2000*", role, p, what, fix, (), lambda shapes: _merged_misfit(shapes, config, False))
    shipped = name == "ldm-rsic-tiny.safetensors"
    fix = (
        shipped_fix(f"{TINY_DIR}/{name}", TINY_RECIPE)
        if shipped
        else "give weights = a merged LDM-RSIC .safetensors (elic.* + s2.*, e.g. weights/ldm-rsic-tiny/"
        f"ldm-rsic-tiny.safetensors), or the official elic_ckpt ({ELIC_SOURCE.format(lam=lam)}) and ldm_ckpt"
    )
    what = "LDM-RSIC-tiny's .safetensors, shipped in weights/ldm-rsic-tiny/" if shipped else "a merged .safetensors"
    return WeightFile("LDM-RSIC", role, p, what, fix, (), lambda shapes: _merged_misfit(shapes, config, True, enhance))


def weight_files(options: Any, men_only: bool = False) -> list[WeightFile]:
    """The files an ``ldm-rsic`` (or, ``men_only``, a ``j2k+men``) codec's ``options`` read; none with random
    weights. ``ldm_ckpt`` only when it enhances."""
    o = options
    if men_only:
        if o.men_weights is None and o.allow_random_weights:
            return []
        return [describe("men_weights", o.men_weights, o.config)]
    if o.weights is not None:
        return [describe("weights", o.weights, o.config, o.lam, o.enhance)]
    if o.elic_ckpt is None and o.ldm_ckpt is None and o.allow_random_weights:
        return []
    files = [describe("elic_ckpt", o.elic_ckpt, o.config, o.lam)]
    if o.enhance or o.ldm_ckpt is not None:
        files.append(describe("ldm_ckpt", o.ldm_ckpt, o.config, o.lam))
    return files


# -- names and shapes ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def expected_shapes(config: str) -> tuple[Shapes, Shapes, tuple[str, ...]]:
    """(ELIC key -> shape, S2 key -> shape, ELIC's CDF buffers) of ``config`` (built on the meta device)."""
    from harness.codecs.ldm_rsic.config import PRESETS
    from harness.codecs.ldm_rsic.elic import ELIC
    from harness.codecs.ldm_rsic.men import S2

    cfg = PRESETS[config]
    with torch.device("meta"):
        elic, s2 = ELIC(cfg.elic), S2(cfg.men)
    shapes = ({k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (elic, s2))
    return next(shapes), next(shapes), tuple(ELIC.CDF_BUFFERS)


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def rename_entropy_bottleneck(state: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """compressai 1.1.x factorized-prior names -> 1.2.x; returns (state, which naming the file used)."""
    out, old = {}, False
    for k, v in state.items():
        m = _OLD_EB.match(k)
        if m:
            old = True
            k = f"entropy_bottleneck.{_NEW_NAME[m.group(1)]}.{m.group(2)}"
        out[k] = v
    return out, "compressai 1.1.x names (_matrix/_bias/_factor)" if old else "compressai 1.2.x names"


def _other_config(shapes: Shapes, part: int, config: str) -> str | None:
    """Another config whose ELIC (``part`` 0) or S2 (1) ``shapes`` fit, for the fix."""
    from harness.codecs.ldm_rsic.config import PRESETS

    for name in PRESETS:
        if name != config:
            exp = expected_shapes(name)
            args = (exp[2], ()) if part == 0 else ((), S2_DUPLICATES)
            if key_problems(shapes, exp[part], *args) is None:
                return name
    return None


def _misfit(problem: str, shapes: Shapes, part: int, config: str, what: str) -> Misfit:
    other = _other_config(shapes, part, config)
    fix = f'they are weights for config {other!r}: set config = "{other}"' if other else None
    return Misfit(f"holds tensors that do not fit the {what} of config {config!r}: {problem}", fix)


def _elic_misfit(shapes: Shapes, config: str) -> Misfit | None:
    elic, _, cdf = expected_shapes(config)
    shapes, _ = rename_entropy_bottleneck(_strip_module(shapes))
    problem = key_problems(shapes, elic, cdf)
    return None if problem is None else _misfit(problem, shapes, 0, config, "ELIC")


def _s2_misfit(shapes: Shapes, config: str) -> Misfit | None:
    _, s2, _ = expected_shapes(config)
    shapes = _strip_module(shapes)
    problem = key_problems(shapes, s2, (), S2_DUPLICATES)
    return None if problem is None else _misfit(problem, shapes, 1, config, "S2 network (MEN + LDM)")


def _merged_misfit(shapes: Shapes, config: str, with_elic: bool, needs_s2: bool = True) -> Misfit | None:
    parts, other = _split(shapes)
    if other:
        return Misfit(
            f"holds {len(other)} keys outside elic.* / s2.*, e.g. {', '.join(other[:3])}: not an LDM-RSIC .safetensors"
        )
    if with_elic:
        if not parts["elic"]:
            return Misfit("holds no elic.* tensors (the ELIC part, which makes the bits)")
        misfit = _elic_misfit(parts["elic"], config)
        if misfit is not None:
            return misfit
    if not parts["s2"] and (needs_s2 or not with_elic):
        return Misfit("holds no s2.* tensors (the MEN that enhances the decode)")
    return _s2_misfit(parts["s2"], config) if parts["s2"] else None


def _split(state: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    parts: dict[str, dict[str, Any]] = {"elic": {}, "s2": {}}
    other = []
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if head in parts and rest:
            parts[head][rest] = v
        else:
            other.append(k)
    return parts, other


# -- loading -------------------------------------------------------------------------------------------------------
def _file_of(source: str, config: str) -> WeightFile:
    """The description of the file a ``source`` (``"<role> <path>"``) names."""
    role, _, path = source.partition(" ")
    return describe(role if role in ("weights", "elic_ckpt", "ldm_ckpt", "men_weights") else "weights", path, config)


def check_state(
    state: dict[str, torch.Tensor],
    module: torch.nn.Module,
    source: str,
    part: str,
    config: str,
    any_shape: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> None:
    """Exact key set and shapes of ``module``'s state dict, or one ``WeightsError`` line naming what differs and
    the fix. ``source``: ``"<role> <path>"``."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    problem = key_problems(shapes, expected, any_shape, optional)
    if problem:
        misfit = _misfit(problem, shapes, 0 if part == "ELIC" else 1, config, part)
        raise fail(_file_of(source, config), misfit.problem, misfit.fix)


def elic_state(path: str | os.PathLike, elic: torch.nn.Module, config: str) -> tuple[dict, str]:
    """The ELIC state of an official checkpoint, renamed and checked against ``elic``; (state, note)."""
    state = _strip_module(read_state(describe("elic_ckpt", path, config)))
    state, naming = rename_entropy_bottleneck(state)
    check_state(state, elic, f"elic_ckpt {path}", "ELIC", config, elic.CDF_BUFFERS)
    return state, f"elic_ckpt {Path(path).name}: {naming}"


def s2_state(path: str | os.PathLike, s2: torch.nn.Module, config: str, role: str = "ldm_ckpt") -> dict:
    """The S2 state of a BasicSR file (``params_ema``, else ``params``), checked key for key; repeated
    ``diffusion.*`` tensors must equal the ones they repeat."""
    state = _strip_module(read_state(describe(role, path, config)))
    return checked_s2(state, s2, f"{role} {path}", config)


def checked_s2(state: dict, s2: torch.nn.Module, source: str, config: str) -> dict:
    check_state(state, s2, source, "S2 network (MEN + LDM)", config, optional=S2_DUPLICATES)
    for k, v in state.items():
        for dup, orig in (("diffusion.model.", "denoise."), ("diffusion.condition.", "condition.")):
            if k.startswith(dup) and not torch.equal(v, state[orig + k[len(dup) :]]):
                f = _file_of(source, config)
                raise fail(
                    f,
                    f"is inconsistent: {k} differs from {orig + k[len(dup) :]}, which it repeats (the official "
                    "loader would keep whichever it loads last)",
                    f"{f.fix} (a fresh copy: this one was altered)",
                )
    return {k: v for k, v in state.items() if not k.startswith(S2_DUPLICATES)}


def split_merged(path: str | os.PathLike, role: str = "weights") -> dict[str, dict[str, torch.Tensor]]:
    """Our merged safetensors: ``{"elic": {...}, "s2": {...}}`` (either part may be absent)."""
    f = describe(role, path)
    parts, other = _split(read_state(f))
    if other:
        raise fail(
            f,
            f"holds {len(other)} keys outside elic.* / s2.*, e.g. {', '.join(other[:3])}: not an LDM-RSIC .safetensors",
        )
    return parts


def mask_error(index: int, config: str, source: str) -> WeightsError:
    """A file whose ``context_prediction.{index}.mask`` is not ELIC's checkerboard (a file cannot move context)."""
    return fail(
        _file_of(source, config), f"holds a context_prediction.{index}.mask that is not ELIC's checkerboard mask"
    )
