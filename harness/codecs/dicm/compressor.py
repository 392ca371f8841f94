"""The CDC-style compressor DICM uses three times (BRIEF §2): ``context_fn`` (the primary image x), ``encode_w``
(the side image: its decoder pyramid is w) and ``context_fn_cor`` (the side image's own chain, official only).

::

    image [-1,1] --enc: L x (ResnetBlock, -, Downsample)--> y (latent, C_y x H/2^L x W/2^L)
    y --hyper_enc: conv3 s1, LReLU, conv5 s2, LReLU, conv5 s2--> z (C_z x H/2^(L+2) x W/2^(L+2))
    z_hat = round(z - median) + median                     (EntropyBottleneck: compressai's factorized prior)
    z_hat --hyper_dec: convT5 s2, LReLU, convT5 s2, LReLU, conv3--> (mean, scale); scale floored at 0.1
    y_hat = round(y - mean) + mean                         (GaussianConditional with means)
    y_hat --dec: L x (ResnetBlock, -, Upsample)--> pyramid [C0@H, C1@H/2, ..., C_{L-1}@H/2^(L-1)]

Every stage computes what the official ``modules/compressor.py`` computes (checked number for number by
``tests/test_parity_dicm.py``): quantisation with offsets (round(z − median) + median, round(y − μ) + μ), the
0.1 floor on the scale, the pyramid full resolution first, and the likelihoods of the official ``FlexiblePrior``
(with its sign trick) and ``NormalDistribution``. Entropy coding is ours: the official code has no coder at all (it
estimates bits from likelihoods); we use compressai's rANS with the tables of both entropy models (``update()``
builds them). The factorized prior it trains is the same density family as compressai's ``EntropyBottleneck``,
which is what this module holds (``prior``), so official weights load through
:func:`harness.codecs.dicm.checkpoint.convert_prior`.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import nn

from harness.codecs.dicm.blocks import Downsample, ResnetBlock, Upsample
from harness.codecs.dicm.config import CompressorConfig


def scale_table(cfg: CompressorConfig) -> torch.Tensor:
    """``cfg.scale_levels`` log-spaced scales from the floor ``cfg.scale_bound`` to ``cfg.scale_max``. With 64
    levels (a 13 % step) DICM-tiny's y string was 2.6 % above the likelihood estimate, with 256 (3 %) 1.3 %."""
    return torch.exp(torch.linspace(math.log(cfg.scale_bound), math.log(cfg.scale_max), cfg.scale_levels))


def ste_round(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity gradient (what the decoder sees at test time, trainable)."""
    return (torch.round(x) - x).detach() + x


class Compressor(nn.Module):
    def __init__(self, cfg: CompressorConfig) -> None:
        super().__init__()
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional

        self.cfg = cfg
        dims = [cfg.channels, *(cfg.dim * m for m in cfg.dim_mults)]
        in_out = list(pairwise(dims))
        rdims = [*(cfg.dim * m for m in reversed(cfg.dim_mults)), cfg.out_channels]
        rin_out = list(pairwise(rdims))
        hdims = [cfg.latent_channels, *(cfg.dim * m for m in cfg.hyper_dims_mults)]
        hin_out = list(pairwise(hdims))
        self.enc = nn.ModuleList(
            nn.ModuleList([ResnetBlock(a, b, large_filter=i == 0), nn.Identity(), Downsample(b)])
            for i, (a, b) in enumerate(in_out)
        )
        self.dec = nn.ModuleList()
        for i, (a, b) in enumerate(rin_out):
            last = i == len(rin_out) - 1
            self.dec.append(
                nn.ModuleList([ResnetBlock(a, a if last else b), nn.Identity(), Upsample(a if last else b, b)])
            )
        self.hyper_enc = nn.ModuleList()
        for i, (a, b) in enumerate(hin_out):
            last = i == len(hin_out) - 1
            conv = nn.Conv2d(a, b, 3, 1, 1) if i == 0 else nn.Conv2d(a, b, 5, 2, 2)
            self.hyper_enc.append(nn.ModuleList([conv, nn.Identity(), nn.Identity() if last else nn.LeakyReLU(0.2)]))
        self.hyper_dec = nn.ModuleList()
        rhdims = hdims[::-1]
        for i, (a, b) in enumerate(pairwise(rhdims)):
            last = i == len(hin_out) - 1
            conv = nn.Conv2d(a, 2 * b, 3, 1, 1) if last else nn.ConvTranspose2d(a, b, 5, 2, 2, output_padding=1)
            self.hyper_dec.append(nn.ModuleList([conv, nn.Identity(), nn.Identity() if last else nn.LeakyReLU(0.2)]))
        self.prior = EntropyBottleneck(cfg.hyper_channels, filters=cfg.prior_filters)
        self.gaussian_conditional = GaussianConditional(None, scale_bound=cfg.scale_bound)

    # -- entropy tables -------------------------------------------------------------------------------------
    def update(self, force: bool = True) -> None:
        """Rebuild both CDF tables (after loading weights): the factorized prior's per channel, the Gaussian's
        from :func:`scale_table`."""
        self.prior.update(force=force)
        self.gaussian_conditional.update_scale_table(scale_table(self.cfg), force=force)

    def resize_entropy_buffers(self, state: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Give the CDF buffers the shapes ``state`` holds, so a strict load of a saved model works."""
        for module_name in ("prior", "gaussian_conditional"):
            module = getattr(self, module_name)
            for name in ("_offset", "_quantized_cdf", "_cdf_length", "scale_table"):
                key = f"{prefix}{module_name}.{name}"
                if key in state and hasattr(module, name):
                    cur = getattr(module, name)
                    setattr(module, name, torch.empty(state[key].shape, dtype=cur.dtype, device=cur.device))

    # -- stages ---------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        for resnet, _, down in self.enc:  # type: ignore[misc]
            x = down(resnet(x))
        return x

    def hyper_encode(self, y: torch.Tensor) -> torch.Tensor:
        for conv, _, act in self.hyper_enc:  # type: ignore[misc]
            y = act(conv(y))
        return y

    def hyper_decode(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_hat -> (mean, scale) of y, scale floored at ``scale_bound`` (the official clamp)."""
        h = z_hat
        for conv, _, act in self.hyper_dec:  # type: ignore[misc]
            h = act(conv(h))
        mean, scale = h.chunk(2, dim=1)
        return mean, scale.clamp(min=self.cfg.scale_bound)

    def decode(self, y_hat: torch.Tensor) -> list[torch.Tensor]:
        """y_hat -> the context pyramid, full resolution first (``cfg.pyramid_channels``)."""
        out = []
        h = y_hat
        for resnet, _, up in self.dec:  # type: ignore[misc]
            h = up(resnet(h))
            out.append(h)
        return out[::-1]

    def medians(self) -> torch.Tensor:
        """The factorized prior's per-channel medians, shaped [1, C_z, 1, 1]."""
        return self.prior.quantiles[:, 0, 1].detach().reshape(1, -1, 1, 1)

    def quantize_z(self, z: torch.Tensor) -> torch.Tensor:
        """z_hat = round(z - median) + median (the official ``quantize(z, "dequantize", medians)``)."""
        med = self.medians()
        return torch.round(z - med) + med

    @staticmethod
    def quantize_y(y: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """y_hat = round(y - mean) + mean (the official ``quantize(y, "dequantize", mean)``)."""
        return torch.round(y - mean) + mean

    def z_symbols(self, z: torch.Tensor) -> torch.Tensor:
        """int64 symbols of z for the rANS coder: round(z - median) (z_hat = symbols + median)."""
        return torch.round(z - self.medians()).to(torch.int64)

    @staticmethod
    def y_symbols(y: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """int64 symbols of y for the rANS coder: round(y - mean) (y_hat = symbols + mean)."""
        return torch.round(y - mean).to(torch.int64)

    def z_likelihood(self, z_hat: torch.Tensor) -> torch.Tensor:
        """P(z_hat) under the factorized prior, B x C_z x h x w, floored at 1e-9: the official FlexiblePrior's
        ``likelihood`` (logits of the CDF at z ± 1/2, sign-flipped so both sigmoids are taken on the accurate
        side, then their difference)."""
        c = z_hat.shape[1]
        v = z_hat.transpose(0, 1).reshape(c, 1, -1)  # C x 1 x N, compressai's layout of the density
        lower = self.prior._logits_cumulative(v - 0.5, stop_gradient=True)
        upper = self.prior._logits_cumulative(v + 0.5, stop_gradient=True)
        sign = -torch.sign(lower + upper)
        lik = torch.abs(torch.sigmoid(upper * sign) - torch.sigmoid(lower * sign))
        lik = lik.reshape(c, z_hat.shape[0], *z_hat.shape[2:]).transpose(0, 1)
        return torch.clamp(lik, min=1e-9)

    @staticmethod
    def y_likelihood(y_hat: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """P(y_hat) under N(mean, scale) integrated over the quantisation bin, floored at 1e-9 (the official
        ``NormalDistribution.likelihood``; ``scale`` is already floored at 0.1 by :meth:`hyper_decode`)."""
        d = torch.abs(y_hat - mean)
        upper = 0.5 * torch.erfc(-(2**-0.5) * ((0.5 - d) / scale))
        lower = 0.5 * torch.erfc(-(2**-0.5) * ((-0.5 - d) / scale))
        return torch.clamp(upper - lower, min=1e-9)

    @torch.no_grad()
    def latents(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Deterministic analysis of an image in [-1, 1]: y, z, z_hat, (mean, scale), y_hat (no entropy coding)."""
        y = self.encode(x)
        z = self.hyper_encode(y)
        z_hat = self.quantize_z(z)
        mean, scale = self.hyper_decode(z_hat)
        return {"y": y, "z": z, "z_hat": z_hat, "mean": mean, "scale": scale, "y_hat": self.quantize_y(y, mean)}

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Training forward: pyramid of the straight-through-rounded y_hat (the values the coder gives), bits of
        y and z from noise-relaxed likelihoods (compressai's training mode), per image, summed."""
        y = self.encode(x)
        z = self.hyper_encode(y)
        _, z_lik = self.prior(z, training=True)
        med = self.medians()
        z_hat = ste_round(z - med) + med
        mean, scale = self.hyper_decode(z_hat)
        _, y_lik = self.gaussian_conditional(y, scale, mean, training=True)
        y_hat = ste_round(y - mean) + mean
        bits = -(torch.log2(y_lik).sum(dim=(1, 2, 3)) + torch.log2(z_lik).sum(dim=(1, 2, 3)))
        return {"pyramid": self.decode(y_hat), "bits": bits, "y_hat": y_hat}

    def estimated_bits(self, y_hat: torch.Tensor, z_hat: torch.Tensor) -> tuple[float, float]:
        """(bits of y, bits of z): -sum log2 likelihood of the coded symbols under the model (the official "bpp"
        numerator, ``Compressor.bpp`` in eval mode; the rANS file should be within a few % of it)."""
        with torch.no_grad():
            mean, scale = self.hyper_decode(z_hat)
            y_bits = -torch.log2(self.y_likelihood(y_hat, mean, scale)).sum()
            z_bits = -torch.log2(self.z_likelihood(z_hat)).sum()
        return float(y_bits), float(z_bits)
