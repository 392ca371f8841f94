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
from typing import Any

import torch

from harness.codecs.checkpoints import (
    Misfit,
    Shapes,
    WeightFile,
    WeightsError,
    fail,
    inspect,
    key_problems,
    read_state,
    shipped_fix,
)
from harness.codecs.dicm.config import DICMConfig

TINY_DIR = "weights/dicm-tiny"
TINY_RECIPE = "harness.train.dicm_tiny"
OFFICIAL_SOURCE = (
    "none are published: train one with github.com/dongqingcc/DICC, whose trainer_dis.py saves {'step', 'model'}"
)
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


#: The one weights error of every codec (harness.codecs.checkpoints), under the name older callers import.
DICMWeightsError = WeightsError


def missing_weights_message(what: str = "no weights given") -> str:
    """The refusal of a DICM codec given no weights file: what exists and how to give it."""
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


# -- what each file is, reading it ------------------------------------------------------------------------------
def describe(role: str, path: str | os.PathLike | None, config: str = "official") -> WeightFile:
    """The :class:`WeightFile` of a DICM file: ``ckpt`` (an official trainer checkpoint) or ``weights`` (ours)."""
    p = None if path is None else str(path)
    if role == "ckpt":
        return WeightFile(
            "DICM",
            role,
            p,
            "an official DICM trainer checkpoint {'step', 'model'} (trainer_dis.py)",
            f"give ckpt = an official trainer checkpoint of config {config!r} ({OFFICIAL_SOURCE}), or weights = "
            f"our .safetensors (e.g. {TINY_DIR}/dicm-tiny.safetensors, codec dicm@tiny)",
            ("model", "state_dict"),
            lambda shapes: _misfit(shapes, config, official=True),
        )
    shipped = p is not None and Path(p).name == "dicm-tiny.safetensors"
    return WeightFile(
        "DICM",
        role,
        p,
        "DICM-tiny's .safetensors, shipped in weights/dicm-tiny/" if shipped else "a DICM .safetensors of ours",
        shipped_fix(f"{TINY_DIR}/dicm-tiny.safetensors", TINY_RECIPE)
        if shipped
        else f"give weights = our .safetensors of config {config!r} (e.g. {TINY_DIR}/dicm-tiny.safetensors, codec "
        f"dicm@tiny), or ckpt = an official trainer checkpoint ({OFFICIAL_SOURCE})",
        (),
        lambda shapes: _misfit(shapes, config, official=False),
    )


def weight_files(options: Any) -> list[WeightFile]:
    """The file a ``dicm`` codec's ``options`` read (``weights`` or ``ckpt``); none with random weights."""
    o = options
    if o.weights is not None:
        return [describe("weights", o.weights, o.config)]
    if o.ckpt is not None or not o.allow_random_weights:
        return [describe("ckpt", o.ckpt, o.config)]
    return []


def check_weights_file(path: str | os.PathLike, role: str, config: str = "official") -> str:
    """The format of a DICM file (the cheap check the codec runs when it is built: first bytes and headers)."""
    return inspect(describe(role, path, config))


def _misfit(shapes: Shapes, cfg_name: str, official: bool) -> Misfit | None:
    """How a file's names/shapes differ from config ``cfg_name``'s (official layout: ``loss_fn_vgg.*`` dropped,
    our compressai buffers absent), with the config they fit instead where one does."""
    from harness.codecs.dicm.config import PRESETS

    if official:
        shapes = {k: v for k, v in shapes.items() if not k.startswith(DROP_PREFIXES)}

    def problem_for(name: str) -> str | None:
        cfg = PRESETS[name]
        expected = official_shapes(cfg) if official else our_shapes(cfg)
        return key_problems(shapes, expected, tuple(k for k in expected if k.endswith(TABLES)))

    problem = problem_for(cfg_name)
    if problem is None:
        return None
    fits = next((n for n in PRESETS if n != cfg_name and problem_for(n) is None), None)
    fix = f'they are weights for config {fits!r}: set config = "{fits}"' if fits else None
    return Misfit(f"holds tensors that do not fit the DICM model of config {cfg_name!r}: {problem}", fix)


def _checked(path: str | os.PathLike, role: str, cfg: DICMConfig) -> dict[str, torch.Tensor]:
    """The state dict of a DICM file, names and shapes checked against ``cfg`` (one line when they differ)."""
    f = describe(role, path, cfg.name)
    state = read_state(f)
    if role == "ckpt":
        state = {k: v for k, v in state.items() if not k.startswith(DROP_PREFIXES)}
    misfit = _misfit({k: tuple(v.shape) for k, v in state.items()}, cfg.name, official=role == "ckpt")
    if misfit is not None:
        raise fail(f, misfit.problem, misfit.fix)
    return state


def load_official(
    path: str | os.PathLike, cfg: DICMConfig, prefixes: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """An official checkpoint, ``loss_fn_vgg.*`` dropped, checked strictly against ``cfg``'s official layout,
    the schedule buffers compared with ours, the prior converted (our key names; no CDF tables)."""
    from harness.codecs.dicm.diffusion import train_buffers

    state = _checked(path, "ckpt", cfg)
    for name, ours in train_buffers(cfg.diffusion).items():
        if not torch.allclose(state[name].float(), ours, rtol=1e-4, atol=1e-9):
            raise fail(describe("ckpt", path, cfg.name), f"was trained with another noise schedule ({name} differs "
                       f"from the linear T={cfg.diffusion.timesteps} schedule of config {cfg.name!r})")  # fmt: skip
    if prefixes is not None:
        state = {k: v for k, v in state.items() if k.startswith(prefixes)}
    return convert_prior({k: v.float() for k, v in state.items()})


def read_weights(
    path: str | os.PathLike, cfg: DICMConfig, prefixes: tuple[str, ...] | None = None
) -> dict[str, torch.Tensor]:
    """Our .safetensors (DICMModel's own keys), checked strictly against ``cfg``."""
    state = _checked(path, "weights", cfg)
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
        role, _, path = source.partition(" ")
        raise fail(
            describe(role if role in ("ckpt", "weights") else "weights", path),
            f"holds tensors that do not fit the model: missing {missing.missing_keys[:3]}, unexpected "
            f"{missing.unexpected_keys[:3]}",
        )
    for comp in module.coders() if hasattr(module, "coders") else comps:  # encode_w codes nothing: no tables
        if comp.prior._quantized_cdf.numel() == 0 or comp.gaussian_conditional._quantized_cdf.numel() == 0:
            comp.update(force=True)
