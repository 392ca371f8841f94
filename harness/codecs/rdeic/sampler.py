"""Relay residual sampler (SPEC §2.6) with an injectable noise source.

::

    x = sqrt(ab[N-1]) * c + sqrt(1 - ab[N-1]) * eps        float32 state-dict buffers, N-1 = 299
    for k = K-1 .. 0 (model called with the ORIGINAL timestep tau_k):
        e   = eps(x, tau_k)                                 (guidance s != 1: e_sd + s (e_ctrl - e_sd))
        x0  = f32(sqrt(1/ab'_k)) x - f32(sqrt(1/ab'_k - 1)) e
        mu  = f32(coef1_k) x0 + f32(coef2_k) x
        x   = mu + [k > 0] sqrt(f32(var_k)) z               one z drawn at EVERY step, the last included

Noise draws per image, in order: one discarded draw (latent shape), eps, then one per step: S + 2 in all.
``GeneratorNoise(seed, device)`` reproduces the official order from ``seed_everything(seed)`` on the same device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np
import torch

from harness.codecs.rdeic.config import DiffusionConfig
from harness.codecs.rdeic.schedule import SpacedSchedule, relay_start_index

#: ``noise(shape, purpose) -> tensor``; purpose is "discard", "start" or "step:<k>".
NoiseSource = Callable[[tuple[int, ...], str], torch.Tensor]
#: ``eps_fn(x, t, hint_or_None) -> eps``.
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


class GeneratorNoise:
    """Standard normal draws from a private generator seeded with ``seed`` on ``device``."""

    def __init__(self, seed: int, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(int(seed))

    def __call__(self, shape: tuple[int, ...], purpose: str) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, device=self.device)


class RecordedNoise:
    """Replays given tensors in order (tests feed recorded official noise this way)."""

    def __init__(self, tensors: Iterable[torch.Tensor]) -> None:
        self.tensors = list(tensors)
        self.used: list[str] = []

    def __call__(self, shape: tuple[int, ...], purpose: str) -> torch.Tensor:
        if not self.tensors:
            raise RuntimeError(f"recorded noise exhausted at {purpose!r}")
        t = self.tensors.pop(0)
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"recorded noise for {purpose!r} has shape {tuple(t.shape)}, expected {shape}")
        self.used.append(purpose)
        return t


def relay_start(
    c_latent: torch.Tensor, sqrt_ab: torch.Tensor, sqrt_one_minus_ab: torch.Tensor, noise: NoiseSource, t0: int
) -> torch.Tensor:
    shape = tuple(c_latent.shape)
    noise(shape, "discard")
    eps = noise(shape, "start").to(c_latent.device, c_latent.dtype)
    return sqrt_ab[t0].to(c_latent.dtype) * c_latent + sqrt_one_minus_ab[t0].to(c_latent.dtype) * eps


def relay_sample(
    eps_fn: EpsFn,
    c_latent: torch.Tensor,
    guide_hint: torch.Tensor,
    buffers: dict[str, torch.Tensor],
    cfg: DiffusionConfig,
    steps: int,
    noise: NoiseSource,
    guidance: float = 1.0,
    timings: dict[str, float] | None = None,
) -> torch.Tensor:
    """x̂0 from (c_latent, guide_hint). ``buffers`` holds the float32 ``sqrt_alphas_cumprod`` and
    ``sqrt_one_minus_alphas_cumprod`` of the state dict (used for the start point only)."""
    sched = SpacedSchedule.build(cfg, steps)
    t0 = relay_start_index(cfg)
    if sched.timesteps[-1] != t0:
        raise ValueError(f"spaced timesteps {sched.timesteps} do not end at the relay start {t0}")
    x = relay_start(c_latent, buffers["sqrt_alphas_cumprod"], buffers["sqrt_one_minus_alphas_cumprod"], noise, t0)
    b = x.shape[0]

    def f32(arr: np.ndarray, k: int) -> torch.Tensor:
        return torch.tensor(arr[k], dtype=torch.float64).float().to(x.device)

    for k in range(len(sched.timesteps) - 1, -1, -1):
        start = time.perf_counter()
        t = torch.full((b,), sched.timesteps[k], dtype=torch.long, device=x.device)
        e = eps_fn(x, t, guide_hint)
        if guidance != 1.0:
            e_sd = eps_fn(x, t, None)
            e = e_sd + guidance * (e - e_sd)
        e = e.to(x.dtype)
        x0 = f32(sched.sqrt_recip_alphas_cumprod, k) * x - f32(sched.sqrt_recipm1_alphas_cumprod, k) * e
        mean = f32(sched.posterior_mean_coef1, k) * x0 + f32(sched.posterior_mean_coef2, k) * x
        z = noise(tuple(x.shape), f"step:{k}").to(x.device, x.dtype)
        nonzero = torch.tensor(float(k != 0), device=x.device)
        x = mean + nonzero * torch.sqrt(f32(sched.posterior_variance, k)) * z
        if timings is not None:
            if x.is_cuda:
                torch.cuda.synchronize(x.device)
            timings[f"step_{len(sched.timesteps) - 1 - k}_t{sched.timesteps[k]}_s"] = time.perf_counter() - start
    return x
