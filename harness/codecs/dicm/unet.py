"""DICM's ε-predictor (CDC's UNet, BRIEF §2.4): ResNet blocks with channel LayerNorm, linear attention at
every level, a scalar time input through an MLP (not sinusoidal), and the context pyramid concatenated at the
input of each of the first ``len(pyramid)`` levels.

::

    x_t (3@H) ─ level 0: cat ctx[0] ─ Res(7x7) ─ Res ─ Attn ─ Down ─ level 1: cat ctx[1] ─ ... ─ level n-1 (no Down)
                                                                                                    │
    ε (3@H) ─ LN ─ conv7 ─ Up ─ Res ─ Res ─ Attn ─ cat skip ─ ... ─ Res ─ Res ─ Attn ─ cat skip(n-1) ─ mid
    mid = Res ─ Attn ─ Res at the bottom (1/2^(n-1) resolution); level 0's activation is never used as a skip.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from harness.codecs.dicm.blocks import ChannelLayerNorm, Downsample, ResnetBlock, Upsample, attention
from harness.codecs.dicm.config import UnetConfig


class Unet(nn.Module):
    def __init__(self, cfg: UnetConfig, context_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.context_channels = context_channels
        dim = cfg.dim
        dims = [cfg.channels, *(dim * m for m in cfg.dim_mults)]
        in_out = list(pairwise(dims))
        time_dim = dim
        self.time_mlp = nn.Sequential(
            nn.Linear(1, dim * cfg.time_hidden_mult), nn.GELU(), nn.Linear(dim * cfg.time_hidden_mult, time_dim)
        )
        self.downs = nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            a_ctx = a + (context_channels[i] if i < len(context_channels) else 0)
            self.downs.append(
                nn.ModuleList(
                    [
                        ResnetBlock(a_ctx, b, time_dim, large_filter=i == 0),
                        ResnetBlock(b, b, time_dim),
                        attention(b),
                        nn.Identity() if last else Downsample(b),
                    ]
                )
            )
        mid = dims[-1]
        self.mid_block1 = ResnetBlock(mid, mid, time_dim)
        self.mid_attn = attention(mid)
        self.mid_block2 = ResnetBlock(mid, mid, time_dim)
        self.ups = nn.ModuleList()
        for a, b in reversed(in_out[1:]):
            self.ups.append(
                nn.ModuleList([ResnetBlock(b * 2, a, time_dim), ResnetBlock(a, a, time_dim), attention(a), Upsample(a)])
            )
        self.final_conv = nn.Sequential(ChannelLayerNorm(dim), nn.Conv2d(dim, cfg.channels, 7, padding=3))

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: list[torch.Tensor]) -> torch.Tensor:
        """x: B x 3 x H x W; t: B time inputs in [0, 1); context: the pyramid (one tensor per level, full
        resolution first, channels ``context_channels``). Returns ε̂ (B x 3 x H x W)."""
        if len(context) != len(self.context_channels):
            raise ValueError(f"expected {len(self.context_channels)} context levels, got {len(context)}")
        emb = self.time_mlp(t.reshape(-1, 1).to(x.dtype))
        skips = []
        for i, (res1, res2, attn, down) in enumerate(self.downs):  # type: ignore[misc]
            if i < len(context):
                x = torch.cat([x, context[i]], dim=1)
            x = attn(res2(res1(x, emb), emb))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, emb)), emb)
        for res1, res2, attn, up in self.ups:  # type: ignore[misc]
            x = torch.cat([x, skips.pop()], dim=1)
            x = up(attn(res2(res1(x, emb), emb)))
        return self.final_conv(x)
