"""The whole DICM state-dict tree (BRIEF §2, §8) and the decoder's stages.

``DICMModel`` holds ``denoise_fn`` (the UNet), ``context_fn`` (x's compressor), ``encode_w`` (the side image's
compressor, whose decoder pyramid is w), ``context_fn_cor`` (official only: the side image's own chain) and the six
``train_*`` schedule buffers, with the official key names except the factorized prior, which is compressai's
``EntropyBottleneck`` (``prior.matrices.i`` ...; :mod:`harness.codecs.dicm.checkpoint` converts official files).
Each component is built under its own seeded RNG (``seeded``), so a decode worker that builds ``context_fn``
alone gets the same random weights as the main process.

Decoding x (the official ``DICM.compress`` for the x chain)::

    y_hat --context_fn.decode--> ctx ─┐
    side --encode_w (deterministic: round(y - mean) + mean)--> w ─┴─ ctx[i] + w[i] ─> UNet ─ DDIM ─> x̂

Missing side information is w = 0: our interpretation of "DICM without side information" (the paper's ablation);
the official code has no path that decodes x without w.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.codecs.dicm.compressor import Compressor
from harness.codecs.dicm.config import DICMConfig
from harness.codecs.dicm.diffusion import train_buffers
from harness.codecs.dicm.unet import Unet
from harness.codecs.rdeic.model import seeded

COMPONENTS = ("denoise_fn", "context_fn", "context_fn_cor", "encode_w")


def build_compressor(cfg: DICMConfig, name: str = "context_fn", seed: int = 0) -> Compressor:
    return seeded(name, seed, lambda: Compressor(cfg.compressor))


class DICMModel(nn.Module):
    def __init__(self, cfg: DICMConfig, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        for name, value in train_buffers(cfg.diffusion).items():
            self.register_buffer(name, value)
        self.denoise_fn = seeded("denoise_fn", seed, lambda: Unet(cfg.unet, cfg.compressor.pyramid_channels))
        self.context_fn = build_compressor(cfg, "context_fn", seed)
        if cfg.joint_y:
            self.context_fn_cor = build_compressor(cfg, "context_fn_cor", seed)
        self.encode_w = build_compressor(cfg, "encode_w", seed)

    def compressors(self) -> list[Compressor]:
        return [m for m in (self.context_fn, getattr(self, "context_fn_cor", None), self.encode_w) if m is not None]

    def coders(self) -> list[Compressor]:
        """The compressors whose latents are entropy-coded (x's, and the side image's own chain in the official
        joint mode). ``encode_w`` is not: w is never transmitted, so its CDF tables stay empty."""
        return [m for m in (self.context_fn, getattr(self, "context_fn_cor", None)) if m is not None]

    def update(self, force: bool = True) -> None:
        """Build the CDF tables of the coders (after loading or training weights)."""
        for comp in self.coders():
            comp.update(force=force)

    @torch.no_grad()
    def w_pyramid(self, side: torch.Tensor) -> list[torch.Tensor]:
        """w: the decoder pyramid of the side image's quantized latent (side in [-1, 1], B x 3 x H x W)."""
        return self.encode_w.decode(self.encode_w.latents(side)["y_hat"])

    @staticmethod
    def context(ctx: list[torch.Tensor], w: list[torch.Tensor]) -> list[torch.Tensor]:
        """The x chain's UNet context: x's pyramid plus w's, level by level (full resolution first)."""
        return [c + wi for c, wi in zip(ctx, w, strict=True)]

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        """The UNet's output at x_t: ε̂ or x̂₀ (``cfg.diffusion.pred_mode``)."""
        return self.denoise_fn(x_t, t, context)
