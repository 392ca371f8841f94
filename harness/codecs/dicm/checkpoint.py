"""DICM weights: official trainer checkpoints (converted, checked strictly) and our ``.safetensors``.

Official files (none are published; users train their own) are what ``trainer_dis.py`` saves:
``{"step": int, "model": state_dict}``. The official loaders use ``strict=False`` everywhere, so a wrong file
"loads" with random weights (BRIEF §6.9). Here a file loads only if, after two documented conversions, its keys
and shapes are exactly the config's:

1. ``loss_fn_vgg.*`` (the LPIPS-VGG aux loss, 38 keys, present when it was trained with aux weight > 0) is dropped.
2. Each compressor's factorized prior (CDC's ``FlexiblePrior``) becomes compressai's ``EntropyBottleneck(C,
   filters=(3, 3, 3))``, the same density family (softplus matrices, biases, tanh factors):

   ==============================  =============================  ==========================================
   official key (per compressor)   shape                          ours
   ==============================  =============================  ==========================================
   ``prior.affine.i.weight``       [C, 1, 1, in, out]             ``prior.matrices.i`` [C, out, in]: transposed
   ``prior.affine.i.bias``         [C, 1, 1, 1, out]              ``prior.biases.i`` [C, out, 1]
   ``prior.a.i``                   [C, 1, 1, 1, out]              ``prior.factors.i`` [C, out, 1]
   ``prior._medians``              [1, C, 1, 1]                   centre column of ``prior.quantiles`` [C, 1, 3]
   ==============================  =============================  ==========================================

   The lower/upper quantiles (compressai's coding range) are solved by bisection on the converted density so the
   CDF there is tail_mass/2 and 1 - tail_mass/2; the median is kept as trained (it is the quantisation offset
   the decoder was trained with). The CDF tables are then built with ``update(force=True)``.

The six ``train_*`` schedule buffers must equal this config's schedule (a checkpoint trained with another T is
refused). Any mismatch is one line: what differs (counts and examples) and what fits instead.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch

from harness.codecs.base import CodecUnusable
from harness.codecs.dicm.config import DICMConfig

TINY_DIR = "weights/dicm-tiny"
DROP_PREFIXES = ("loss_fn_vgg.",)
#: Buffers of compressai's entropy models: rebuilt by ``update()`` (CDF tables) or fixed by the module config.
ENTROPY_BUFFERS = (
    "prior._offset",
    "prior._quantized_cdf",
    "prior._cdf_length",
    "prior.target",
    "prior.likelihood_lower_bound.bound",
    "gaussian_conditional._offset",
    "gaussian_conditional._quantized_cdf",
    "gaussian_conditional._cdf_length",
    "gaussian_conditional.scale_table",
    "gaussian_conditional.scale_bound",
    "gaussian_conditional.likelihood_lower_bound.bound",
    "gaussian_conditional.lower_bound_scale.bound",
)
#: CDF tables: any shape in a file (their size depends on the trained density).
TABLES = ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")
_PRIOR = re.compile(r"^(?P<c>.*)prior\.(?:affine\.(?P<i>\d+)\.(?P<wb>weight|bias)|a\.(?P<a>\d+)|_medians)$")


class DICMWeightsError(CodecUnusable, FileNotFoundError):
    """Weights missing or unusable (one line: the file, what is wrong, how to fix it)."""


def missing_weights_message(what: str = "no weights given") -> str:
    return (
        f"DICM weights missing: {what}. No official weights are published: train your own with the official code "
        "(github.com/dongqingcc/DICC, trainer_dis.py saves {'step', 'model'}) and give the file as `ckpt`, or use "
        f"the project's DICM-tiny (codec preset dicm@tiny, {TINY_DIR}/dicm-tiny.safetensors) or `weights` = one of "
        "our .safetensors. Random weights run only when asked for (allow_random_weights = true), for plumbing tests."
    )


def is_entropy_buffer(key: str) -> bool:
    return key.endswith(ENTROPY_BUFFERS)


# -- the prior conversion ---------------------------------------------------------------------------------------
def convert_prior(state: dict[str, torch.Tensor], tail_mass: float = 1e-9) -> dict[str, torch.Tensor]:
    """Official FlexiblePrior keys of every compressor in ``state`` -> compressai EntropyBottleneck keys (other
    keys unchanged). Works on meta tensors too (shapes only; the tails are then not solved)."""
    out: dict[str, torch.Tensor] = {}
    priors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _PRIOR.match(key)
        if m is None:
            out[key] = value
            continue
        priors.setdefault(m.group("c"), {})[key[len(m.group("c")) + len("prior.") :]] = value
    for comp, keys in priors.items():
        p = f"{comp}prior."
        n_layers = sum(1 for k in keys if k.startswith("affine.") and k.endswith(".weight"))
        for i in range(n_layers):
            w, b = keys.get(f"affine.{i}.weight"), keys.get(f"affine.{i}.bias")
            if w is not None:
                out[f"{p}matrices.{i}"] = w[:, 0, 0].transpose(1, 2).contiguous()
            if b is not None:
                out[f"{p}biases.{i}"] = b[:, 0, 0, 0, :, None].contiguous()
        for k, a in keys.items():
            if k.startswith("a."):
                out[f"{p}factors.{int(k[2:])}"] = a[:, 0, 0, 0, :, None].contiguous()
        if "_medians" in keys:
            med = keys["_medians"].reshape(-1, 1, 1)
            out[f"{p}quantiles"] = torch.cat([med, med, med], dim=2)
            if not med.is_meta and all(f"{p}{n}.{i}" in out for n in ("matrices", "biases") for i in range(n_layers)):
                out[f"{p}quantiles"] = solve_tails(out, p, n_layers, med, tail_mass)
    return out


@torch.no_grad()
def solve_tails(
    state: dict[str, torch.Tensor], prefix: str, n_layers: int, medians: torch.Tensor, tail_mass: float = 1e-9
) -> torch.Tensor:
    """quantiles [C, 1, 3]: (lower, median, upper) with the converted density's logits at lower/upper equal to
    compressai's targets -+log(2 / tail_mass - 1) (bisection per channel), the median as given."""
    from compressai.entropy_models import EntropyBottleneck

    c = medians.shape[0]
    filters = tuple(state[f"{prefix}matrices.{i}"].shape[1] for i in range(n_layers - 1))
    eb = EntropyBottleneck(c, filters=filters, tail_mass=tail_mass)
    params = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k != f"{prefix}quantiles"}
    eb.load_state_dict({**eb.state_dict(), **params})
    return tails_for(eb, medians.reshape(c, 1, 1))


@torch.no_grad()
def tails_for(eb, medians: torch.Tensor) -> torch.Tensor:
    """(lower, median, upper) for an EntropyBottleneck's density, keeping ``medians`` ([C, 1, 1])."""
    c = medians.shape[0]
    q = torch.empty(c, 1, 3)
    q[:, :, 1:2] = medians
    for col, target in ((0, eb.target[0]), (2, eb.target[2])):
        lo = torch.full((c, 1, 1), -1e5)
        hi = torch.full((c, 1, 1), 1e5)
        for _ in range(200):  # logits are increasing in x: bisection to float precision
            mid = (lo + hi) / 2
            below = eb._logits_cumulative(mid, stop_gradient=True) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        q[:, :, col] = ((lo + hi) / 2)[:, :, 0]
    return q


def official_shapes(cfg: DICMConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an official checkpoint's ``model`` dict for ``cfg`` (without ``loss_fn_vgg.*``): our model's
    keys with the EntropyBottleneck mapped back to the FlexiblePrior and compressai's buffers left out."""
    out = {}
    for key, shape in our_shapes(cfg).items():
        if is_entropy_buffer(key):
            continue
        mm = re.match(r"^(.*prior\.)(matrices|biases|factors)\.(\d+)$", key)
        if mm:
            p, kind, i = mm.group(1), mm.group(2), mm.group(3)
            if kind == "matrices":
                out[f"{p}affine.{i}.weight"] = (shape[0], 1, 1, shape[2], shape[1])
            elif kind == "biases":
                out[f"{p}affine.{i}.bias"] = (shape[0], 1, 1, 1, shape[1])
            else:
                out[f"{p}a.{i}"] = (shape[0], 1, 1, 1, shape[1])
        elif key.endswith("prior.quantiles"):
            out[key[: -len("quantiles")] + "_medians"] = (1, shape[0], 1, 1)
        else:
            out[key] = shape
    return out


def our_shapes(cfg: DICMConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``DICMModel(cfg)``'s state dict (built once per process on the meta device: ~3 s official)."""
    return dict(_our_shapes(cfg))


@functools.lru_cache(maxsize=8)
def _our_shapes(cfg: DICMConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    from harness.codecs.dicm.model import DICMModel

    with torch.device("meta"):
        m = DICMModel(cfg)
    return tuple((k, tuple(v.shape)) for k, v in m.state_dict().items())


# -- reading files ----------------------------------------------------------------------------------------------
def _fail(path: str | os.PathLike, role: str, problem: str, fix: str | None = None) -> DICMWeightsError:
    fix = fix or (
        f"restore or retrain the shipped file (python -m harness.train.dicm_tiny --out {TINY_DIR})"
        if Path(path).name.startswith("dicm-tiny")
        else "give an official DICM trainer checkpoint ({'step', 'model'}) as ckpt, or our .safetensors as weights"
    )
    return DICMWeightsError(f"DICM weights: {role} {path} {problem}; {fix}")


def _read(path: str | os.PathLike, role: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file or a PyTorch checkpoint (``weights_only=True``; the official
    ``{"step", "model"}`` dict, a Lightning ``state_dict``, or a bare dict of tensors)."""
    from harness.codecs.rdeic.checkpoint import SAFETENSORS, WeightsError, read_state_dict, sniff

    try:
        fmt = sniff(path, role)
        if fmt == SAFETENSORS:
            return read_state_dict(path, None, role)
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError as exc:
        raise DICMWeightsError(str(exc).replace("RDEIC weights", "DICM weights")) from None
    except Exception as exc:  # a pickle with Python objects, a damaged zip: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise _fail(path, role, f"cannot be read as a PyTorch checkpoint with weights_only=True ({first})") from None
    state = obj.get("model", obj.get("state_dict", obj)) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        kind = f"keys {', '.join(map(repr, list(obj)[:4]))}" if isinstance(obj, dict) else type(obj).__name__
        raise _fail(path, role, f"holds no state dict of tensors ({kind}; expected {{'step', 'model': state_dict}})")
    return state


def _check(state: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], source: str, cfg_name: str,
           optional: tuple[str, ...] = ()) -> None:  # fmt: skip
    from harness.codecs.rdeic.checkpoint import key_problems

    shapes = {k: tuple(v.shape) for k, v in state.items()}
    tables = tuple(k for k in expected if k.endswith(TABLES))
    problem = key_problems(shapes, expected, tables, optional)
    if problem is None:
        return
    from harness.codecs.dicm.config import PRESETS

    fits = next((n for n in PRESETS if n != cfg_name and key_problems(shapes, _expected(n, state), tables,
                                                                      optional) is None), None)  # fmt: skip
    fix = f'they are weights for config {fits!r}: set config = "{fits}"' if fits else None
    role, path = source.split(" ", 1)
    raise _fail(path, role, f"does not fit DICM config {cfg_name!r}: {problem}", fix)


def _expected(name: str, state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    from harness.codecs.dicm.config import PRESETS

    cfg = PRESETS[name]
    return our_shapes(cfg) if any(".matrices." in k for k in state) else official_shapes(cfg)


def load_official(
    path: str | os.PathLike, cfg: DICMConfig, prefixes: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """An official checkpoint, ``loss_fn_vgg.*`` dropped, checked strictly against ``cfg``'s official layout,
    the schedule buffers compared with ours, the prior converted (our key names; no CDF tables)."""
    from harness.codecs.dicm.diffusion import train_buffers

    state = {k: v for k, v in _read(path, "ckpt").items() if not k.startswith(DROP_PREFIXES)}
    _check(state, official_shapes(cfg), f"ckpt {path}", cfg.name)
    for name, ours in train_buffers(cfg.diffusion).items():
        if not torch.allclose(state[name].float(), ours, rtol=1e-4, atol=1e-9):
            raise _fail(path, "ckpt", f"was trained with another noise schedule ({name} differs from the linear "
                        f"T={cfg.diffusion.timesteps} schedule of config {cfg.name!r})")  # fmt: skip
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return convert_prior({k: v.float() for k, v in state.items()})


def read_weights(
    path: str | os.PathLike, cfg: DICMConfig, prefixes: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Our .safetensors (DICMModel's own keys), checked strictly against ``cfg``."""
    state = _read(path, "weights")
    _check(state, our_shapes(cfg), f"weights {path}", cfg.name)
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str, source: str) -> None:
    """Strict load of ``state`` (keys under ``prefix``) into ``module``; entropy buffers absent from the state
    (official files) are built with ``update(force=True)`` for the compressors that code (not ``encode_w``),
    present ones (ours) are used as stored, so the encoder's and every decoder's tables are the same integers."""
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    own = module.state_dict()
    for key, value in own.items():  # official files: compressai's buffers come from the module itself
        if key not in state and is_entropy_buffer(key):
            state[key] = value
    comps = [module] if hasattr(module, "prior") else list(module.compressors())  # type: ignore[operator]
    names = [""] if hasattr(module, "prior") else [n + "." for n, m in module.named_children() if m in comps]
    for comp, name in zip(comps, names, strict=True):
        comp.resize_entropy_buffers(state, name)
    missing = module.load_state_dict(state, strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise DICMWeightsError(
            f"DICM weights: {source} does not fit the model: missing {missing.missing_keys[:3]}, "
            f"unexpected {missing.unexpected_keys[:3]}"
        )
    for comp in module.coders() if hasattr(module, "coders") else comps:  # encode_w codes nothing: no tables
        if comp.prior._quantized_cdf.numel() == 0 or comp.gaussian_conditional._quantized_cdf.numel() == 0:
            comp.update(force=True)
