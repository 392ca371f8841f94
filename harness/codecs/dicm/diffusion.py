"""DICM's diffusion numbers as the official ``modules/model.py`` computes them (dongqingcc/DICC; checked number
for number by ``tests/test_parity_dicm.py``): the linear schedule scaled to T steps and the deterministic DDIM
sampler.

* β = linspace(s·1e-4, s·2e-2, T) with s = 1000 / T (T = 20000 official: 5e-6 .. 1e-3, ᾱ_T ≈ 4e-5), in float64,
  stored as the six float32 ``train_*`` buffers. Sampling reads the model's (loaded) ``train_alphas_cumprod``
  buffer, so an official checkpoint samples with the numbers it carries.
* DDIM, η = 0. Timestep indices ``linspace(0, T-1, steps)`` in float32, **truncated** (``.long()``, official; 20
  of 200 published indices differ from rounding). The per-step numbers are float32 tensors derived from
  ``train_alphas_cumprod[indices]`` in float32 (``sample_schedule``), as the official ``set_sample_schedule``.
* Time input of the network: ``i / steps`` (the step's index, official at sampling, ``time_input = "index"``), or
  ``t_i / T`` (``"t"``: what training feeds; our option, no official code path samples with it).
* Each step, ``pred_mode = "noise"`` (official): x̂₀ = √(1/ᾱ_i)·x − √(1/ᾱ_i − 1)·ε̂, **not clamped** with the
  official ``clip_noise = "none"`` (``clip_x0 = "full"`` clamps it to [−1, 1]); x_prev = √ᾱ_{i−1}·x̂₀ +
  √(1 − ᾱ_{i−1})·ε̂ with ᾱ_{−1} = 1, so the last step returns x̂₀. ``pred_mode = "x"`` (our interpretation: the
  official DDIM has no x̂₀-prediction path) takes the network's output as x̂₀ and ε̂ = (√(1/ᾱ_i)·x − x̂₀) /
  √(1/ᾱ_i − 1).
* The start sample: γ·N(0, I), γ = 0.8, from a CPU generator seeded with the decode seed (the official test.py
  draws ``randn_like(img) * 0.8`` from torch's global RNG: the seeding is ours).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from harness.codecs.dicm.config import DiffusionConfig

TRAIN_BUFFERS = (
    "train_betas",
    "train_alphas_cumprod",
    "train_sqrt_alphas_cumprod",
    "train_sqrt_one_minus_alphas_cumprod",
    "train_sqrt_recip_alphas_cumprod",
    "train_sqrt_recipm1_alphas_cumprod",
)
TIME_INPUTS = ("index", "t")

#: ``model_fn(x_t, time_input) -> ε̂ or x̂₀`` (by ``pred_mode``; the context is bound by the caller).
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def betas(cfg: DiffusionConfig) -> np.ndarray:
    """float64 [T]: the official ``linear_beta_schedule`` (scale = 1000 / T times the 1000-step end points)."""
    scale = 1000 / cfg.timesteps
    return np.linspace(scale * cfg.beta_start_1000, scale * cfg.beta_end_1000, cfg.timesteps)


def alphas_cumprod(cfg: DiffusionConfig) -> np.ndarray:
    """float64 [T] cumulative product of 1 - β (the value before the float32 buffer is made of it)."""
    return np.cumprod(1.0 - betas(cfg), axis=0)


def train_buffers(cfg: DiffusionConfig) -> dict[str, torch.Tensor]:
    """The six float32 [T] buffers of the official state dict (names ``train_*``), from float64 numpy."""
    b = betas(cfg)
    ac = np.cumprod(1.0 - b, axis=0)
    values = {
        "train_betas": b,
        "train_alphas_cumprod": ac,
        "train_sqrt_alphas_cumprod": np.sqrt(ac),
        "train_sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "train_sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "train_sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in values.items()}


def ddim_timesteps(cfg: DiffusionConfig, steps: int) -> torch.Tensor:
    """int64 [steps]: ``linspace(0, T-1, steps)`` in float32, truncated (official ``.long()``), ascending."""
    if not 1 <= steps <= cfg.timesteps:
        raise ValueError(f"DDIM steps must be in 1..{cfg.timesteps}, got {steps}")
    return torch.linspace(0, cfg.timesteps - 1, steps, dtype=torch.float32).long()


def sample_schedule(
    train_alphas_cumprod: torch.Tensor | None, cfg: DiffusionConfig, steps: int
) -> dict[str, torch.Tensor]:
    """The per-step float32 [steps] numbers of DDIM, derived in float32 from ``train_alphas_cumprod`` (the
    model's buffer; ``None``: this config's) at :func:`ddim_timesteps`, as the official ``set_sample_schedule``;
    ``indices`` (int64) too. Step i uses entry i; ᾱ_prev of step 0 is 1."""
    if train_alphas_cumprod is None:
        train_alphas_cumprod = train_buffers(cfg)["train_alphas_cumprod"]
    idx = ddim_timesteps(cfg, steps).to(train_alphas_cumprod.device)
    ac = train_alphas_cumprod.float()[idx]
    ac_prev = F.pad(ac[:-1], (1, 0), value=1.0)
    return {
        "indices": idx,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod_prev": torch.sqrt(ac_prev),
        "one_minus_alphas_cumprod_prev": 1.0 - ac_prev,
        "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / ac - 1),
    }


def _at(values: torch.Tensor, i: int, like: torch.Tensor) -> torch.Tensor:
    """Entry i of a [steps] schedule tensor, shaped B x 1 x 1 x 1 for ``like`` (the official ``extract``)."""
    b = like.shape[0]
    return values.to(like.device)[torch.full((b,), i, dtype=torch.long, device=like.device)].reshape(b, 1, 1, 1)


def network_time(
    i: int, schedule: dict[str, torch.Tensor], cfg: DiffusionConfig, mode: str, batch: int
) -> torch.Tensor:
    """float32 B x 1: the network's time input at DDIM step i: ``i / steps`` ("index", official) or
    ``t_i / T`` ("t")."""
    if mode not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {mode!r}")
    if mode == "index":
        return torch.full((batch,), i, dtype=torch.long).float().unsqueeze(-1) / len(schedule["indices"])
    t = int(schedule["indices"][i])
    return torch.full((batch,), t, dtype=torch.long).float().unsqueeze(-1) / cfg.timesteps


def predict_x0(
    x: torch.Tensor, out: torch.Tensor, i: int, schedule: dict[str, torch.Tensor], cfg: DiffusionConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂₀, ε̂) at DDIM step i from the sample x and the network's output (ε̂ or x̂₀ by ``cfg.pred_mode``),
    x̂₀ clamped to [-1, 1] only with ``cfg.clip_x0 == "full"``."""
    sra = _at(schedule["sqrt_recip_alphas_cumprod"], i, x)
    srm1 = _at(schedule["sqrt_recipm1_alphas_cumprod"], i, x)
    if cfg.pred_mode == "x":
        x0 = out.clamp(-1.0, 1.0) if cfg.clip_x0 == "full" else out
        return x0, (sra * x - x0) / srm1
    x0 = sra * x - srm1 * out
    return (x0.clamp(-1.0, 1.0) if cfg.clip_x0 == "full" else x0), out


def ddim_next(x0: torch.Tensor, eps: torch.Tensor, i: int, schedule: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sample after DDIM step i (η = 0): √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε̂ (x̂₀ itself at the last step)."""
    return (
        _at(schedule["sqrt_alphas_cumprod_prev"], i, x0) * x0
        + torch.sqrt(_at(schedule["one_minus_alphas_cumprod_prev"], i, x0)) * eps
    )


def init_noise(shape: tuple[int, ...], decode_seed: int, gamma: float) -> torch.Tensor:
    """γ·N(0, I) of ``shape`` from a CPU generator seeded with the decode seed (same on every device)."""
    gen = torch.Generator(device="cpu").manual_seed(int(decode_seed) % 2**63)
    return gamma * torch.randn(shape, generator=gen, dtype=torch.float32)


def ddim_sample(
    model_fn: ModelFn,
    x: torch.Tensor,
    cfg: DiffusionConfig,
    steps: int,
    time_input: str = "index",
    timings: dict[str, float] | None = None,
    alphas_cumprod: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run DDIM (η = 0) from ``x`` (already γ·noise, B x 3 x H x W) and return the last step's x̂₀ (float32,
    not clamped unless ``cfg.clip_x0 == "full"``). ``alphas_cumprod``: the model's float32 ``train_alphas_cumprod``
    buffer (``None``: this config's schedule)."""
    import time

    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
    schedule = sample_schedule(alphas_cumprod, cfg, steps)
    for i in range(steps - 1, -1, -1):
        t0 = time.perf_counter()
        tin = network_time(i, schedule, cfg, time_input, x.shape[0]).to(x.device)
        x0, eps = predict_x0(x, model_fn(x, tin), i, schedule, cfg)
        x = ddim_next(x0, eps, i, schedule)
        if timings is not None:
            timings[f"step_{steps - 1 - i}_s"] = time.perf_counter() - t0
    return x
