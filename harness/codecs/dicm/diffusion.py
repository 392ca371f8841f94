"""DICM's diffusion numbers (BRIEF §4): the linear schedule scaled to T steps and the deterministic DDIM sampler.

* β_t = linspace(1e-4, 2e-2, T) x 1000 / T (T = 20000 official: 5e-6 .. 1e-3, ᾱ_T ≈ 4e-5); computed in float64,
  stored as the official float32 ``train_*`` buffers.
* DDIM, η = 0, ``steps`` timesteps ``round(linspace(0, T-1, steps))``; start x = γ·N(0, I) with γ = 0.8, the
  noise drawn from a CPU generator seeded with the decode seed (the only randomness of a decode).
* Time input of the ε-predictor: ``t / T`` in training. At sampling the official code feeds ``i / steps`` (the
  step's index); ``time_input = "index"`` reproduces that, ``"t"`` feeds ``t_i / T`` (what training saw; the two
  differ by up to ~5 % at 20 steps, negligibly at 200).
* Each step (``pred_mode = "noise"``, official): x̂₀ = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t clamped to [−1, 1];
  x_prev = √ᾱ_prev x̂₀ + √(1−ᾱ_prev) ε̂; the last step returns x̂₀. With ``pred_mode = "x"`` the network's output
  is x̂₀ (clamped) and ε̂ = (x_t − √ᾱ_t x̂₀) / √(1−ᾱ_t).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

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
    return np.linspace(cfg.beta_start, cfg.beta_end, cfg.timesteps, dtype=np.float64)


def alphas_cumprod(cfg: DiffusionConfig) -> np.ndarray:
    return np.cumprod(1.0 - betas(cfg))


def train_buffers(cfg: DiffusionConfig) -> dict[str, torch.Tensor]:
    """The six float32 [T] buffers of the official state dict (names ``train_*``)."""
    b = betas(cfg)
    ac = np.cumprod(1.0 - b)
    values = {
        "train_betas": b,
        "train_alphas_cumprod": ac,
        "train_sqrt_alphas_cumprod": np.sqrt(ac),
        "train_sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "train_sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "train_sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
    }
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in values.items()}


def ddim_timesteps(cfg: DiffusionConfig, steps: int) -> np.ndarray:
    if not 1 <= steps <= cfg.timesteps:
        raise ValueError(f"DDIM steps must be in 1..{cfg.timesteps}, got {steps}")
    return np.round(np.linspace(0, cfg.timesteps - 1, steps)).astype(np.int64)


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
) -> torch.Tensor:
    """Run DDIM (η = 0) from ``x`` (already γ·noise) and return x̂₀ in [−1, 1] (B x 3 x H x W)."""
    import time

    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
    ac = alphas_cumprod(cfg)
    ts = ddim_timesteps(cfg, steps)
    b = x.shape[0]
    x0 = x
    for i in range(steps - 1, -1, -1):
        t0 = time.perf_counter()
        t = int(ts[i])
        tin = i / steps if time_input == "index" else t / cfg.timesteps
        out = model_fn(x, torch.full((b,), tin, dtype=torch.float32, device=x.device))
        a_t = float(ac[t])
        if cfg.pred_mode == "x":
            x0 = out.clamp(-1.0, 1.0)
            eps = (x - np.sqrt(a_t) * x0) / np.sqrt(1.0 - a_t)
        else:
            eps = out
            x0 = ((x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)).clamp(-1.0, 1.0)
        if i > 0:
            a_prev = float(ac[int(ts[i - 1])])
            x = np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps
        if timings is not None:
            timings[f"step_{steps - 1 - i}_s"] = time.perf_counter() - t0
    return x0
