"""Diffusion schedule numbers (NumPy, float64), as SPEC §2.5/§2.6 describe them.

Two precisions on purpose: the relay start point uses the *float32 buffers* of the state dict
(``root_buffers``), while the spaced sampler recomputes its schedule in float64 (``SpacedSchedule``) and casts
each coefficient to float32 when it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.codecs.rdeic.config import DiffusionConfig

ROOT_BUFFER_NAMES = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
)


def betas(cfg: DiffusionConfig) -> np.ndarray:
    """SD's "scaled linear" schedule: squares of a float64 linspace between the square roots."""
    return np.linspace(cfg.linear_start**0.5, cfg.linear_end**0.5, cfg.timesteps, dtype=np.float64) ** 2


def alphas_cumprod(cfg: DiffusionConfig) -> np.ndarray:
    return np.cumprod(1.0 - betas(cfg))


def root_buffers(cfg: DiffusionConfig) -> dict[str, np.ndarray]:
    """The 13 float32 [T] root buffers of the state dict (computed in float64, then cast)."""
    b = betas(cfg)
    ac = np.cumprod(1.0 - b)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = b * (1.0 - ac_prev) / (1.0 - ac)
    values = {
        "betas": b,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": b * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac),
        "logvar": np.zeros(cfg.timesteps),
    }
    return {k: values[k].astype(np.float32) for k in ROOT_BUFFER_NAMES}


def relay_start_index(cfg: DiffusionConfig) -> int:
    return cfg.used_timesteps - 1


def relay_lambda(cfg: DiffusionConfig) -> float:
    """λ = sqrt(1/ᾱ_{N-1} - 1) (code name ``lamba``): 0.829860 for the official schedule."""
    return float(np.sqrt(1.0 / alphas_cumprod(cfg)[relay_start_index(cfg)] - 1.0))


def space_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """guided-diffusion's ``space_timesteps(N, str(S))`` for one section: evenly strided, Python rounding
    (round half to even). S=2 -> [0, 299]; S=5 -> [0, 75, 150, 224, 299] for N=300."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    if steps == 1:
        return [0]
    stride = (num_timesteps - 1) / (steps - 1)
    taken, cur = [], 0.0
    for _ in range(steps):
        taken.append(round(cur))
        cur += stride
    return sorted(set(taken))


@dataclass(frozen=True)
class SpacedSchedule:
    """The spaced DDPM schedule over ``timesteps`` (ascending original indices), float64 arrays indexed by k."""

    timesteps: tuple[int, ...]
    alphas_cumprod: np.ndarray
    alphas_cumprod_prev: np.ndarray
    betas: np.ndarray
    sqrt_recip_alphas_cumprod: np.ndarray
    sqrt_recipm1_alphas_cumprod: np.ndarray
    posterior_variance: np.ndarray
    posterior_mean_coef1: np.ndarray
    posterior_mean_coef2: np.ndarray

    @classmethod
    def build(cls, cfg: DiffusionConfig, steps: int) -> SpacedSchedule:
        ts = space_timesteps(cfg.used_timesteps, steps)
        full = alphas_cumprod(cfg)
        ac = full[ts]
        ac_prev = np.append(1.0, ac[:-1])
        b = 1.0 - ac / ac_prev
        return cls(
            timesteps=tuple(ts),
            alphas_cumprod=ac,
            alphas_cumprod_prev=ac_prev,
            betas=b,
            sqrt_recip_alphas_cumprod=np.sqrt(1.0 / ac),
            sqrt_recipm1_alphas_cumprod=np.sqrt(1.0 / ac - 1.0),
            posterior_variance=b * (1.0 - ac_prev) / (1.0 - ac),
            posterior_mean_coef1=b * np.sqrt(ac_prev) / (1.0 - ac),
            posterior_mean_coef2=(1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac),
        )
