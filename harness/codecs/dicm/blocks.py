"""Building blocks shared by DICM's compressor and UNet (CDC's components, as dongqingcc/DICC's
``modules/components.py`` computes them; checked number for number by ``tests/test_parity_dicm.py``).

Parameter names and shapes follow the official state dict (``block.0`` conv, ``block.1`` channel LayerNorm
with ``g``/``b``, ``mlp.1`` time projection, ``res_conv``, ``fn.fn.to_qkv`` / ``fn.norm`` for the pre-normed
linear attention, ``conv`` for up/down-sampling). The parameter-free parts are the official ones too: ReLU after
each block's LayerNorm, LeakyReLU(0.2) before the time projection, GELU in the UNet's time MLP, and a linear
attention whose queries are only scaled (softmax on the keys alone). Until issue #22 the blocks used LeakyReLU(0.2)
and a softmax on the queries as well: guesses made from the key manifest, which fixes no activation.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of B x C x H x W (per position), with gain ``g`` and bias ``b`` of shape
    [1, C, 1, 1]. Unlike GroupNorm it normalises each pixel on its own, so image size does not change it."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = torch.var(x, dim=1, unbiased=False, keepdim=True)
        mean = torch.mean(x, dim=1, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.g + self.b


class Block(nn.Module):
    """conv (7x7 for the first block of a network, else 3x3) -> channel LayerNorm -> ReLU (official)."""

    def __init__(self, dim: int, dim_out: int, large_filter: bool = False) -> None:
        super().__init__()
        k = 7 if large_filter else 3
        self.block = nn.Sequential(nn.Conv2d(dim, dim_out, k, padding=k // 2), ChannelLayerNorm(dim_out), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResnetBlock(nn.Module):
    """Two blocks, the time embedding (LeakyReLU(0.2) -> Linear) added between them (UNet only), plus a 1x1
    ``res_conv`` when widths differ."""

    def __init__(self, dim: int, dim_out: int, time_dim: int | None = None, large_filter: bool = False) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(time_dim, dim_out)) if time_dim else None
        self.block1 = Block(dim, dim_out, large_filter)
        self.block2 = Block(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.block1(x)
        if self.mlp is not None and time_emb is not None:
            h = h + self.mlp(time_emb)[:, :, None, None]
        return self.block2(h) + self.res_conv(x)


class LinearAttention(nn.Module):
    """Single-head linear attention (cost linear in H*W), as the official code computes it: keys softmaxed over
    positions, queries only scaled by dim^-1/2 (no softmax), context = k v^T (C x C), out = context^T q."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.to_out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.to_qkv(x).reshape(b, 3, c, h * w).unbind(dim=1)  # each B x C x N
        q = q * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("bdn,ben->bde", k, v)  # B x C x C
        out = torch.einsum("bde,bdn->ben", context, q)
        return self.to_out(out.reshape(b, c, h, w))


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def attention(dim: int) -> Residual:
    """x + LinearAttention(LayerNorm(x)): keys ``fn.fn.to_qkv``, ``fn.fn.to_out``, ``fn.norm``."""
    return Residual(PreNorm(dim, LinearAttention(dim)))


class Downsample(nn.Module):
    """3x3 convolution, stride 2 (halves H and W; even sizes only, which the codec's padding guarantees)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """4x4 transposed convolution, stride 2 (doubles H and W exactly)."""

    def __init__(self, dim: int, dim_out: int | None = None) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(dim, dim_out or dim, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
