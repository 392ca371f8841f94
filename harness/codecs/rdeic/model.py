"""The whole RDEIC state-dict tree (SPEC §1) and its stages.

``RDEICModel`` has exactly the official key names (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.model.*``, ``control_model.*``, ``preprocess_model.*`` and 13 root buffers), so the official
merged checkpoint loads with ``strict=True``. Each component is built under its own seeded RNG, so random
weights (tests, plumbing) are identical in every process that builds the same component, e.g. the compression
module alone in a decode worker.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from harness.codecs.rdeic.compression import Compression
from harness.codecs.rdeic.config import ModelConfig
from harness.codecs.rdeic.sampler import NoiseSource, relay_sample
from harness.codecs.rdeic.schedule import root_buffers
from harness.codecs.rdeic.text import FrozenOpenCLIPEmbedder
from harness.codecs.rdeic.unet import NoiseEstimator, UNetModel
from harness.codecs.rdeic.vae import AutoencoderKL

M = TypeVar("M", bound=nn.Module)

COMPONENTS = ("model", "first_stage_model", "cond_stage_model", "control_model", "preprocess_model")


def seeded(name: str, seed: int, build: Callable[[], M]) -> M:
    """Build a module under a private RNG seeded from (seed, name): the same random weights in every process."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63)
        return build()


def build_compression(cfg: ModelConfig, seed: int = 0) -> Compression:
    return seeded("preprocess_model", seed, lambda: Compression(cfg.compression))


class DiffusionWrapper(nn.Module):
    def __init__(self, unet: UNetModel) -> None:
        super().__init__()
        self.diffusion_model = unet


class RDEICModel(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0, with_text: bool = True) -> None:
        super().__init__()
        self.cfg = cfg
        for name, value in root_buffers(cfg.diffusion).items():
            self.register_buffer(name, torch.from_numpy(value))
        self.model = seeded("model", seed, lambda: DiffusionWrapper(UNetModel(cfg.unet)))
        self.first_stage_model = seeded("first_stage_model", seed, lambda: AutoencoderKL(cfg.vae))
        if with_text:  # skipped when the empty-prompt embedding is cached (its keys are then not loaded)
            self.cond_stage_model = seeded("cond_stage_model", seed, lambda: FrozenOpenCLIPEmbedder(cfg.text))
        self.control_model = seeded(
            "control_model", seed, lambda: NoiseEstimator(cfg.unet, cfg.control, self.model.diffusion_model)
        )
        self.preprocess_model = build_compression(cfg, seed)

    @property
    def unet(self) -> UNetModel:
        return self.model.diffusion_model

    def set_attention_backend(self, backend: str) -> None:
        from harness.codecs.rdeic.unet import CrossAttention

        for m in self.modules():
            if isinstance(m, CrossAttention):
                m.backend = backend

    # -- stages (each callable on its own) ------------------------------------------------------------------
    @torch.no_grad()
    def encode_feature(self, image: torch.Tensor) -> torch.Tensor:
        """image in [0, 1], B x 3 x H x W (H, W multiples of 64) -> scaled VAE trunk feature (x 0.18215)."""
        return self.first_stage_model.encode_feature(image * 2 - 1) * self.cfg.diffusion.scale_factor

    @torch.no_grad()
    def eps(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, hint: torch.Tensor | None) -> torch.Tensor:
        """ε̂ at original timestep t: UNet + control when ``hint`` is given, the plain SD UNet when None."""
        if hint is None:
            return self.unet(x, t, context)
        return self.control_model(self.unet, x, hint, t, context)

    @torch.no_grad()
    def relay(
        self,
        c_latent: torch.Tensor,
        guide_hint: torch.Tensor,
        context: torch.Tensor,
        steps: int,
        noise: NoiseSource,
        guidance: float = 1.0,
        timings: dict[str, float] | None = None,
    ) -> torch.Tensor:
        """Relay residual sampling from (c_latent, guide_hint, context) to x̂0 (fp32, no autocast)."""
        ctx = context.expand(c_latent.shape[0], -1, -1)
        dev = c_latent.device
        buffers = {
            "sqrt_alphas_cumprod": self.sqrt_alphas_cumprod.to(dev),
            "sqrt_one_minus_alphas_cumprod": self.sqrt_one_minus_alphas_cumprod.to(dev),
        }
        return relay_sample(
            lambda x, t, h: self.eps(x, t, ctx, h),
            c_latent,
            guide_hint,
            buffers,
            self.cfg.diffusion,
            steps,
            noise,
            guidance,
            timings,
        )

    @torch.no_grad()
    def decode_latent(self, x0: torch.Tensor) -> torch.Tensor:
        """x̂0 (scaled latent) -> image in about [-1, 1]."""
        return self.first_stage_model.decode(x0 / self.cfg.diffusion.scale_factor)
