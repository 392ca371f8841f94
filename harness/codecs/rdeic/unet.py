"""The SD 2.1-base UNet and RDEIC's control module (NoiseEstimator), SPEC §2.2-§2.3.

Attribute names follow the official state dict (``input_blocks.{i}.{j}``, ``in_layers.0`` ...), so official
weights load with ``strict=True``. Forward with control (SPEC §2.3)::

    for i in 0..n-1:  b = U.input_blocks[i](b);  c = C.input_blocks[i](c);  b += enc_zero[i](c)
                      push b (UNet skip stack), push c (control stack)
    b = U.middle(b);  c = C.middle(c);  b += middle_block_out(c)
    for j in 0..n-1:  b += dec_zero[j](pop c);  b = U.output_blocks[j](cat(b, pop b-stack))
    eps = U.out(b)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.codecs.rdeic.config import ControlConfig, UNetConfig


def largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, min(n, limit) + 1) if n % d == 0)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the autocast dtype (as ldm's GroupNorm32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def norm(channels: int, eps: float = 1e-5) -> GroupNorm32:
    return GroupNorm32(largest_divisor_at_most(channels, 32), channels, eps=eps)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding, cos first then sin (ldm's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class ResBlock(nn.Module):
    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(
            norm(out_channels), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[..., None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    """Multi-head attention; ``backend`` "math" (ldm's formula, fp32 logits) or "sdpa" (PyTorch SDPA)."""

    backend = "math"

    def __init__(self, query_dim: int, context_dim: int | None, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, n, _ = q.shape
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2) for t in (q, k, v))
        if self.backend == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            sim = torch.matmul(q.float(), k.float().transpose(-1, -2)) * self.scale
            out = torch.matmul(sim.softmax(dim=-1).to(v.dtype), v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = CrossAttention(dim, None, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GroupNorm, linear proj_in, transformer blocks, linear proj_out, residual (use_linear_in_transformer)."""

    def __init__(self, channels: int, heads: int, dim_head: int, context_dim: int, depth: int = 1) -> None:
        super().__init__()
        inner = heads * dim_head
        self.norm = nn.GroupNorm(largest_divisor_at_most(channels, 32), channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)
        )
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        y = self.proj_in(y)
        for block in self.transformer_blocks:
            y = block(y, context)
        y = self.proj_out(y)
        return y.transpose(1, 2).reshape(b, c, h, w) + x


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x: torch.Tensor, emb: torch.Tensor, context: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


def _transformer(ch: int, head_channels: int, cfg: UNetConfig, divisor_rule: bool) -> SpatialTransformer:
    dim_head = largest_divisor_at_most(ch, head_channels) if divisor_rule else head_channels
    return SpatialTransformer(ch, ch // dim_head, dim_head, cfg.context_dim, cfg.transformer_depth)


def _encoder(
    cfg: UNetConfig, width: int, in_channels: int, head_channels: int, divisor_rule: bool
) -> tuple[nn.ModuleList, TimestepEmbedSequential, list[int]]:
    """Input blocks + middle block of an SD-layout encoder at ``width``; returns their output channels too."""
    emb = cfg.model_channels * 4
    blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, width, 3, padding=1))])
    chans, ch, ds = [width], width, 1
    for level, mult in enumerate(cfg.channel_mult):
        for _ in range(cfg.num_res_blocks):
            layers: list[nn.Module] = [ResBlock(ch, emb, mult * width)]
            ch = mult * width
            if ds in cfg.attention_resolutions:
                layers.append(_transformer(ch, head_channels, cfg, divisor_rule))
            blocks.append(TimestepEmbedSequential(*layers))
            chans.append(ch)
        if level != len(cfg.channel_mult) - 1:
            blocks.append(TimestepEmbedSequential(Downsample(ch)))
            chans.append(ch)
            ds *= 2
    middle = TimestepEmbedSequential(
        ResBlock(ch, emb), _transformer(ch, head_channels, cfg, divisor_rule), ResBlock(ch, emb)
    )
    return blocks, middle, chans


def _time_embed(mc: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(mc, mc * 4), nn.SiLU(), nn.Linear(mc * 4, mc * 4))


class UNetModel(nn.Module):
    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc = cfg.model_channels
        self.time_embed = _time_embed(mc)
        self.input_blocks, self.middle_block, chans = _encoder(cfg, mc, cfg.in_channels, cfg.num_head_channels, False)
        self.input_channels = list(chans)  # output channels of each input block
        self.output_blocks = nn.ModuleList()
        self.output_channels: list[int] = []
        ch, ds = mc * cfg.channel_mult[-1], 2 ** (len(cfg.channel_mult) - 1)
        self.middle_channels = ch
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers: list[nn.Module] = [ResBlock(ch + chans.pop(), mc * 4, mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(_transformer(ch, cfg.num_head_channels, cfg, False))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
                self.output_channels.append(ch)
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def embed_time(self, timesteps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.time_embed(timestep_embedding(timesteps, self.cfg.model_channels).to(dtype))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The plain SD UNet (``forward_unconditional``: no control branch)."""
        emb = self.embed_time(timesteps, x.dtype)
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        return self.out(h)


class ControlModule(nn.Module):
    """Encoder-only half UNet at ``ratio`` width; input is concat(x_t, guide_hint)."""

    def __init__(self, unet: UNetConfig, ctrl: ControlConfig) -> None:
        super().__init__()
        self.model_channels = unet.model_channels
        width = int(unet.model_channels * ctrl.ratio)
        self.time_embed = _time_embed(unet.model_channels)
        self.input_blocks, self.middle_block, self.input_channels = _encoder(
            unet, width, unet.in_channels + ctrl.hint_channels, ctrl.num_head_channels, True
        )


def _zero_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1))


class NoiseEstimator(nn.Module):
    """``control_model.*``: the control module, its 1x1 injection convs and ``scale_list`` (all 1.0)."""

    def __init__(self, unet_cfg: UNetConfig, ctrl: ControlConfig, unet_channels: UNetModel | None = None) -> None:
        super().__init__()
        # The official constructor builds a full UNet only to read channel counts (no keys); we do the same,
        # on the meta device, unless a UNet is handed over.
        ref = unet_channels or UNetModel(unet_cfg).to("meta")
        self.control_model = ControlModule(unet_cfg, ctrl)
        cc = self.control_model.input_channels
        n = len(cc)
        self.register_buffer("scale_list", torch.ones(2 * n + 1))
        self.enc_zero_convs_out = nn.ModuleList(_zero_conv(cc[i], ref.input_channels[i]) for i in range(n))
        self.middle_block_out = _zero_conv(cc[-1], ref.middle_channels)
        dec_out = [ref.middle_channels, *ref.output_channels[:-1]]
        self.dec_zero_convs_out = nn.ModuleList(_zero_conv(cc[n - 1 - j], dec_out[j]) for j in range(n))

    def forward(
        self, unet: UNetModel, x: torch.Tensor, hint: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """ε̂ of UNet + control (cross-wise injection after every encoder block, the middle, every decoder input)."""
        emb_u = unet.embed_time(timesteps, x.dtype)
        ctrl = self.control_model
        emb_c = ctrl.time_embed(timestep_embedding(timesteps, ctrl.model_channels).to(x.dtype))
        scales = self.scale_list.to(x.dtype)
        n = len(ctrl.input_blocks)
        b, c = x, torch.cat([x, hint.to(x.dtype)], dim=1)
        b_stack, c_stack = [], []
        for i in range(n):
            b = unet.input_blocks[i](b, emb_u, context)
            c = ctrl.input_blocks[i](c, emb_c, context)
            b = b + self.enc_zero_convs_out[i](c) * scales[i]
            b_stack.append(b)
            c_stack.append(c)
        b = unet.middle_block(b, emb_u, context)
        c = ctrl.middle_block(c, emb_c, context)
        b = b + self.middle_block_out(c) * scales[n]
        for j in range(n):
            b = b + self.dec_zero_convs_out[j](c_stack.pop()) * scales[n + 1 + j]
            b = unet.output_blocks[j](torch.cat([b, b_stack.pop()], dim=1), emb_u, context)
        return unet.out(b)
