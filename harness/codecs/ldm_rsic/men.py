"""The decoder-side enhancer of LDM-RSIC (brief §2.2–2.5, §4): the S2 network with the official attribute names.

::

    x_tilde (B x 3 x S x S in [0, 1], S = native_size)
      condition: PixelUnshuffle(4) -> conv + LReLU -> ResBlocks -> conv s2 (no pad) -> conv -> AvgPool 4x4
                 -> 16 tokens ("pre") -> 2 x (Linear + LReLU) -> D (B x 16 x T)               [hook cond_tokens]
      diffusion: F_T ~ N(0, I) (seeded) -> 4 x [x0 = denoise([D, t/40, F_t]); F_{t-1} = posterior mean]
                 -> the prior F_hat (B x 16 x T)                                             [hook prior]
      G (MEN):   Restormer U-Net dim C: C@S -> 2C@S/2 -> 4C@S/4 -> 8C@S/8 (DFAM(F_hat), then TBs)
                 -> 4C -> 2C -> 2C@S, + skip_conv(patch_embed), conv3x3 -> 3 (+ x_tilde only if global_residual)

DFAM (``HIM_block``, only at the latent level; every other level's ``him`` is built for the key set and never
called): F_hat -> T x 4 x 4 -> K x (conv3x3 -> PixelShuffle 2) -> T x S/8 x S/8; concatenated with LN(M), channel
attention (avg and max pool through a shared MLP ending in a sigmoid, the two weights added), 1x1 conv, + M; then
LN -> FiLM (x * Linear(mean F_hat) + Linear(mean F_hat)) -> GDFN gate -> + residual. The HIM cross-attention
projections, the TBs' FiLM linears and ``refinement`` are dead weights of the official file: built and loaded,
never used.

Sampler (``ldm/ddpm.py`` behaviour, not the paper's equations, brief §4): x0-parameterisation, each step returns
the posterior mean only (no noise added), so the only randomness is the seeded start F_T. ``steps < T`` uses a
deterministic DDIM (eta = 0) subset of the timesteps: a documented deviation for ablations only.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.codecs.ldm_rsic.config import MENConfig


class _LNBody(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class LayerNorm2d(nn.Module):
    """WithBias LayerNorm over the channels of each pixel (Restormer's ``LayerNorm``), eps 1e-5."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = _LNBody(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.body.weight, self.body.bias, 1e-5)
        return y.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """MDTA: attention across channels per head (C/h x C/h maps), cost linear in pixels."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class FeedForward(nn.Module):
    """GDFN; with ``film_dim`` it also holds the FiLM linears ``ln1`` (scale) and ``ln2`` (shift) of the prior."""

    def __init__(self, dim: int, expansion: float, bias: bool, film_dim: int | None = None) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)
        if film_dim is not None:
            self.ln1 = nn.Linear(film_dim, dim)
            self.ln2 = nn.Linear(film_dim, dim)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if prior is not None:
            p = prior.mean(dim=1)  # B x T
            x = x * self.ln1(p)[:, :, None, None] + self.ln2(p)[:, :, None, None]
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cfg: MENConfig, film: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = Attention(dim, heads, cfg.bias)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = FeedForward(dim, cfg.ffn_expansion, cfg.bias, cfg.token_dim if film else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _Upsample(nn.Module):
    """conv3x3 (C -> 2C, or 4C for the prior map) -> PixelShuffle(2)."""

    def __init__(self, cin: int, cout_before_shuffle: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout_before_shuffle, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Downsample(nn.Module):
    """conv3x3 (C -> C/2) -> PixelUnshuffle(2): C@S -> 2C@S/2."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(dim, dim // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ChannelAttention(nn.Module):
    """The DFAM's channel attention as the official ``ChannelAttention``: the shared MLP ends in a sigmoid, and
    the weights are sigmoid(fc(avg)) + sigmoid(fc(max)) (each in (0, 1), their sum in (0, 2)), not the CBAM
    form sigmoid(fc(avg) + fc(max))."""

    def __init__(self, ch: int, reduction: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(ch, ch // reduction, bias=False),
            nn.ReLU(),
            nn.Linear(ch // reduction, ch, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(x.mean(dim=(2, 3))) + self.fc(x.amax(dim=(2, 3)))
        return x * w[:, :, None, None]


class DFAMAttention(nn.Module):
    """The HIM's attention module: cross-attention projections (dead weights, kept for the key set) and, where
    the level has a prior, the DFAM (prior map upsampling, channel attention, 1x1 fusion)."""

    def __init__(self, dim: int, heads: int, cfg: MENConfig, dfam: bool) -> None:
        super().__init__()
        inner = cfg.cross_head_dim * heads
        self.temperature2 = nn.Parameter(torch.ones(heads, 1, 1))
        self.proj_q1 = nn.Linear(dim, inner, bias=False)
        self.proj_k2 = nn.Linear(cfg.token_dim, inner, bias=False)
        self.proj_v2 = nn.Linear(cfg.token_dim, inner, bias=False)
        self.proj_o = nn.Linear(inner, dim)
        self.side = cfg.tokens_side
        if dfam:
            t = cfg.token_dim
            self.UpSampling = nn.ModuleList(_Upsample(t, 4 * t) for _ in range(cfg.upsamplings))
            self.conv_cat = nn.Conv2d(dim + t, dim, 1, bias=cfg.bias)
            self.channel_attention = ChannelAttention(dim + t, cfg.ca_reduction)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        b, _, t = prior.shape
        p = prior.transpose(1, 2).reshape(b, t, self.side, self.side)
        for up in self.UpSampling:
            p = up(p)
        if p.shape[-2:] != x.shape[-2:]:
            raise ValueError(
                f"the DFAM's prior map is {p.shape[-1]} px but the MEN's latent level is {tuple(x.shape[-2:])}: "
                "the MEN only runs on inputs of its native size"
            )
        return self.conv_cat(self.channel_attention(torch.cat([x, p], dim=1)))


class HIMBlock(nn.Module):
    def __init__(self, dim: int, heads: int, cfg: MENConfig, with_prior: bool) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = DFAMAttention(dim, heads, cfg, with_prior)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = FeedForward(dim, cfg.ffn_expansion, cfg.bias, cfg.token_dim if with_prior else None)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), prior)
        return x + self.ffn(self.norm2(x), prior)


class Level(nn.Module):
    """``blocks_Global`` (transformer blocks) and ``him`` (called only when the level receives a prior)."""

    def __init__(self, dim: int, heads: int, blocks: int, cfg: MENConfig, with_prior: bool) -> None:
        super().__init__()
        self.blocks_Global = nn.ModuleList(TransformerBlock(dim, heads, cfg, with_prior) for _ in range(blocks))
        self.him = HIMBlock(dim, heads, cfg, with_prior)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        if prior is not None:
            x = self.him(x, prior)
        for block in self.blocks_Global:
            x = block(x)
        return x


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Transformer(nn.Module):
    """MEN (``G``): the Restormer-style U-Net."""

    def __init__(self, cfg: MENConfig) -> None:
        super().__init__()
        c, nb, hd = cfg.dim, cfg.num_blocks, cfg.heads
        self.cfg = cfg
        self.patch_embed = _PatchEmbed(c, cfg.bias)
        self.encoder_level1 = Level(c, hd[0], nb[0], cfg, False)
        self.down1_2 = _Downsample(c)
        self.encoder_level2 = Level(2 * c, hd[1], nb[1], cfg, False)
        self.down2_3 = _Downsample(2 * c)
        self.encoder_level3 = Level(4 * c, hd[2], nb[2], cfg, False)
        self.down3_4 = _Downsample(4 * c)
        self.latent = Level(8 * c, hd[3], nb[3], cfg, True)
        self.up4_3 = _Upsample(8 * c, 16 * c)
        self.reduce_chan_level3 = nn.Conv2d(8 * c, 4 * c, 1, bias=cfg.bias)
        self.decoder_level3 = Level(4 * c, hd[2], nb[2], cfg, False)
        self.up3_2 = _Upsample(4 * c, 8 * c)
        self.reduce_chan_level2 = nn.Conv2d(4 * c, 2 * c, 1, bias=cfg.bias)
        self.decoder_level2 = Level(2 * c, hd[1], nb[1], cfg, False)
        self.up2_1 = _Upsample(2 * c, 4 * c)
        self.decoder_level1 = Level(2 * c, hd[0], nb[0], cfg, False)
        self.refinement = Level(2 * c, hd[0], cfg.refinement_blocks, cfg, True)  # never called (official)
        self.skip_conv = nn.Conv2d(c, 2 * c, 1, bias=cfg.bias)
        self.output = nn.Conv2d(2 * c, 3, 3, padding=1, bias=cfg.bias)

    def forward(self, x: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        """x: B x 3 x S x S in [0, 1]; prior: B x 16 x T or None (the "w/o DFAM" ablation) -> B x 3 x S x S."""
        inp = self.patch_embed(x)
        e1 = self.encoder_level1(inp)
        e2 = self.encoder_level2(self.down1_2(e1))
        e3 = self.encoder_level3(self.down2_3(e2))
        lat = self.latent(self.down3_4(e3), prior)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], dim=1)))
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], dim=1)))
        d1 = self.decoder_level1(torch.cat([self.up2_1(d2), e1], dim=1))
        out = self.output(d1 + self.skip_conv(inp))
        return out + x if self.cfg.global_residual else out


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.1), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ConditionEncoder(nn.Module):
    """CPEN / LRM: PixelUnshuffle(4) -> convs -> 4 x 4 pooled tokens ("pre") -> MLP (``mlp1``) -> D.

    ``inputs = 1`` is the S2 condition (x_tilde); ``inputs = 2`` the stage-I LRM (x_tilde and x, 6 channels)."""

    def __init__(self, cfg: MENConfig, inputs: int = 1) -> None:
        super().__init__()
        c, t = cfg.cond_channels, cfg.token_dim
        self.pixel_unshuffle = nn.PixelUnshuffle(4)
        self.E = nn.Sequential(
            nn.Conv2d(3 * inputs * 16, c, 3, padding=1),
            nn.LeakyReLU(0.1),
            *[ResBlock(c) for _ in range(cfg.n_encoder_res)],
            nn.Conv2d(c, 2 * c, 3, stride=2),
            nn.LeakyReLU(0.1),
            nn.Conv2d(2 * c, t, 3, padding=1),
            nn.LeakyReLU(0.1),
            nn.AdaptiveAvgPool2d(cfg.tokens_side),
        )
        self.mlp1 = nn.Sequential(nn.Linear(t, t), nn.LeakyReLU(0.1), nn.Linear(t, t), nn.LeakyReLU(0.1))

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: B x 3k x S x S in [0, 1] -> (pre-MLP tokens, D), each B x 16 x T."""
        pre = self.E(self.pixel_unshuffle(x)).flatten(2).transpose(1, 2)
        return pre, self.mlp1(pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)[1]


class _ResMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(width, width), nn.LeakyReLU(0.1))  # no skip (brief §2.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resmlp(x)


class Denoiser(nn.Module):
    """MLP over the 16 tokens: [D, t / max_period, F_t] (2T + 1 wide) -> T -> n x (Linear + LReLU) -> x0
    prediction; max_period = 10 x timesteps (40 for the official 4 steps), as the official ``denoise``."""

    def __init__(self, cfg: MENConfig) -> None:
        super().__init__()
        t = cfg.token_dim
        self.max_period = 10 * cfg.timesteps
        self.resmlp = nn.Sequential(
            nn.Linear(2 * t + 1, t), nn.LeakyReLU(0.1), *[_ResMLP(t) for _ in range(cfg.n_denoise_res)]
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        tt = (t.float() / self.max_period).reshape(-1, 1, 1).expand(x_t.shape[0], x_t.shape[1], 1)
        return self.resmlp(torch.cat([cond, tt, x_t], dim=2))


def schedule(cfg: MENConfig) -> dict[str, torch.Tensor]:
    """The 12 DDPM buffers of the official ``diffusion`` module (float32), betas = linspace(sqrt a, sqrt b, T)^2."""
    betas = np.linspace(math.sqrt(cfg.linear_start), math.sqrt(cfg.linear_end), cfg.timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
    out = {
        "betas": betas,
        "alphas_cumprod": ac,
        "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac),
        "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
        "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in out.items()}


class Diffusion(nn.Module):
    """``diffusion``: the denoiser and the condition encoder again (the same modules, so the state dict repeats
    their tensors under ``diffusion.model.*`` / ``diffusion.condition.*``, as the official file does) plus the
    schedule buffers."""

    def __init__(self, model: Denoiser, condition: ConditionEncoder, cfg: MENConfig) -> None:
        super().__init__()
        self.model = model
        self.condition = condition
        self.timesteps = cfg.timesteps
        for k, v in schedule(cfg).items():
            self.register_buffer(k, v)

    def posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> torch.Tensor:
        """The official ``p_sample`` output: coef1[t] x0 + coef2[t] x_t (no clamp, no noise added)."""
        return self.posterior_mean_coef1[t] * x0 + self.posterior_mean_coef2[t] * x_t

    def q_sample(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        return self.sqrt_alphas_cumprod[t] * x0 + self.sqrt_one_minus_alphas_cumprod[t] * noise

    def sample(self, cond: torch.Tensor, start: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        """From ``start`` (F_T, B x 16 x T) to the prior. ``steps = T`` (default): the official chain, posterior
        mean at every step; fewer: DDIM (eta = 0) over an evenly spaced subset (our deviation, ablations only)."""
        steps = self.timesteps if steps is None else steps
        x = start
        if steps == self.timesteps:
            for t in reversed(range(self.timesteps)):
                tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
                x0 = self.model(x, tt, cond)
                x = self.posterior_mean(x0, x, t)
            return x
        times = sorted({round(v) for v in np.linspace(self.timesteps - 1, 0, steps)}, reverse=True)
        for j, t in enumerate(times):
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            x0 = self.model(x, tt, cond)
            if j + 1 == len(times):
                return x0
            nxt = times[j + 1]
            eps = (x - self.sqrt_alphas_cumprod[t] * x0) / self.sqrt_one_minus_alphas_cumprod[t]
            x = self.sqrt_alphas_cumprod[nxt] * x0 + self.sqrt_one_minus_alphas_cumprod[nxt] * eps
        return x


class S2(nn.Module):
    """The official S2 network (``DiffIRS2``) key for key: ``G``, ``condition``, ``denoise``, ``diffusion``."""

    def __init__(self, cfg: MENConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.G = Transformer(cfg)
        self.condition = ConditionEncoder(cfg, 1)
        self.denoise = Denoiser(cfg)
        self.diffusion = Diffusion(self.denoise, self.condition, cfg)

    def prior(self, x_tilde: torch.Tensor, start: torch.Tensor, steps: int | None = None) -> torch.Tensor:
        return self.diffusion.sample(self.condition(x_tilde), start, steps)

    def enhance(self, x_tilde: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        return self.G(x_tilde, prior)

    def prior_shape(self, batch: int = 1) -> tuple[int, int, int]:
        return (batch, self.cfg.tokens_side**2, self.cfg.token_dim)
