"""SD's KL-f8 autoencoder (``first_stage_model``), with RDEIC's extra encoder output (SPEC §1.4):
the 512-channel feature after ``norm_out`` + SiLU and *before* ``conv_out``, which feeds the compression
module (scaled by 0.18215)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.codecs.rdeic.config import VAEConfig


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32 if c % 32 == 0 else max(d for d in range(1, 33) if c % d == 0), c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = _norm(cout)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)  # b, hw, c
        k = self.k(h).reshape(b, c, hh * ww)  # b, c, hw
        v = self.v(h).reshape(b, c, hh * ww)
        w = torch.bmm(q, k) * (int(c) ** -0.5)
        w = w.softmax(dim=2)
        out = torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Asymmetric zero pad (right, bottom) then a stride-2 3x3 conv without padding (ldm's VAE)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(cin, cfg.ch * mult))
                cin = cfg.ch * mult
            level.attn = nn.ModuleList()
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(cin)
            self.down.append(level)
        self.mid = _Mid(cin)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything up to norm_out + SiLU (the feature RDEIC compresses), not conv_out."""
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        return F.silu(self.norm_out(self.mid(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.trunk(x))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        cin = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _Mid(cin)
        ups: list[nn.Module] = []
        for i in reversed(range(len(cfg.ch_mult))):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(cin, cfg.ch * cfg.ch_mult[i]))
                cin = cfg.ch * cfg.ch_mult[i]
            level.attn = nn.ModuleList()
            if i != 0:
                level.upsample = Upsample(cin)
            ups.insert(0, level)
        self.up = nn.ModuleList(ups)
        self.norm_out = _norm(cin)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode_feature(self, x: torch.Tensor) -> torch.Tensor:
        """The compression module's input feature (unscaled): x in [-1, 1], B x 3 x H x W -> B x C x H/8 x W/8."""
        return self.encoder.trunk(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latent (x0 / 0.18215) -> image in about [-1, 1]."""
        return self.decoder(self.post_quant_conv(z))
