"""RDEIC's compression module (``preprocess_model.*``), SPEC §2.4 and §3.

::

    h (VAE feature x 0.18215) --g_a--> y --hyper_enc--> z --VQ argmin--> indices --codebook--> z_q
    z_q --hyper_dec--> hp (2M ch) ; y, hp --10-slice checkerboard context model--> symbols (rANS) ; y_hat
    y_hat --g_s--> guide_hint --out--> c_latent

Symbol order (one rANS string): for each slice, all anchor symbols then all non-anchor symbols, each group
"squeezed" to [B, C_i, h, w/2] and flattened in C order. Anchors are the (row + col) odd positions.
The encoder and the decoder run the same ``_slices`` loop, so y_hat is bit-identical on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from harness.codecs.rdeic.config import CompressionConfig


def scale_table() -> torch.Tensor:
    """exp(linspace(ln 0.11, ln 256, 64)): compressai's default table (SPEC §3)."""
    return torch.exp(torch.linspace(math.log(0.11), math.log(256), 64))


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride)


class RB(nn.Module):
    """conv3x3 -> LReLU(0.01) -> conv3x3 -> LReLU(0.01), plus identity (a 1x1 ``adaptor`` when widths differ)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv3x3(cin, cout), conv3x3(cout, cout)
        self.act = nn.LeakyReLU(0.01)
        self.adaptor = conv1x1(cin, cout) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.conv2(self.act(self.conv1(x))))
        return out + (self.adaptor(x) if self.adaptor is not None else x)


class RBS(nn.Module):
    """Stride-2 residual block: conv3x3/s2 -> LReLU(0.01) -> conv3x3 -> LReLU(0.1), plus 1x1/s2 ``downsample``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv3x3(cin, cout, 2), conv3x3(cout, cout)
        self.downsample = conv1x1(cin, cout, 2)
        self.act1, self.act2 = nn.LeakyReLU(0.01), nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.conv1(x)))) + self.downsample(x)


def _subpel(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv1x1(cin, cout * 4), nn.PixelShuffle(2))


class RBU(nn.Module):
    """x2 residual block: [1x1 conv, PixelShuffle] -> LReLU(0.01) -> conv3x3 -> LReLU(0.1), plus ``upsample``."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.subpel_conv = _subpel(cin, cout)
        self.conv = conv3x3(cout, cout)
        self.upsample = _subpel(cin, cout)
        self.act1, self.act2 = nn.LeakyReLU(0.01), nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv(self.act1(self.subpel_conv(x)))) + self.upsample(x)


class _Holder(nn.Module):
    """Gives a Sequential the official attribute path (``encoder.g_a``, ``hyper_enc.hyper_enc`` ...)."""

    def __init__(self, name: str, seq: nn.Sequential) -> None:
        super().__init__()
        self._name = name
        self.add_module(name, seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self._name)(x)


class ChannelContext(nn.Module):
    def __init__(self, cin: int, hidden: tuple[int, int], cout: int) -> None:
        super().__init__()
        self.fushion = nn.Sequential(  # sic: the official attribute name
            nn.Conv2d(cin, hidden[0], 5, padding=2),
            nn.GELU(),
            nn.Conv2d(hidden[0], hidden[1], 5, padding=2),
            nn.GELU(),
            nn.Conv2d(hidden[1], cout, 5, padding=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fushion(x)


class EntropyParameters(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.fusion = nn.Sequential(
            conv1x1(cin, cout * 5 // 3),
            nn.GELU(),
            conv1x1(cout * 5 // 3, cout * 4 // 3),
            nn.GELU(),
            conv1x1(cout * 4 // 3, cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(x)


class VectorQuantiser(nn.Module):
    """CVQ-VAE codebook at inference: plain nearest-neighbour (squared L2) lookup, no normalisation."""

    def __init__(self, num_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / num_embed, 1.0 / num_embed)
        self.register_buffer("embed_prob", torch.zeros(num_embed))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """z: B x D x h x w -> int64 indices B x h x w (argmin of ||z||^2 + ||e||^2 - 2 z.e; first index on ties)."""
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        e = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1)[None] - 2 * flat @ e.t()
        return dist.argmin(dim=1).reshape(b, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()


def anchor_mask(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    r = torch.arange(h, device=device)[:, None]
    c = torch.arange(w, device=device)[None, :]
    return ((r + c) % 2 == 1)[None, None]


def squeeze(x: torch.Tensor, anchor: bool, anchor_parity: int = 1) -> torch.Tensor:
    """B x C x H x W -> B x C x H x W/2: the anchor (or non-anchor) positions of each row, packed.

    ``anchor_parity`` is (row + col) % 2 of the anchors: 1 for RDEIC (anchors at odd columns on even rows, even
    columns on odd rows, as its official code), 0 for ELIC (anchors at (even, even) and (odd, odd), as
    ``ELIC/Network.py`` of LDM-RSIC); non-anchors are the other parity."""
    out = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], x.shape[3] // 2)
    first, second = _columns(anchor, anchor_parity)
    out[:, :, 0::2] = x[:, :, 0::2, first::2]
    out[:, :, 1::2] = x[:, :, 1::2, second::2]
    return out


def unsqueeze(x: torch.Tensor, anchor: bool, anchor_parity: int = 1) -> torch.Tensor:
    """The inverse of :func:`squeeze` (zeros at the other parity's positions)."""
    out = x.new_zeros(x.shape[0], x.shape[1], x.shape[2], x.shape[3] * 2)
    first, second = _columns(anchor, anchor_parity)
    out[:, :, 0::2, first::2] = x[:, :, 0::2]
    out[:, :, 1::2, second::2] = x[:, :, 1::2]
    return out


def _columns(anchor: bool, anchor_parity: int) -> tuple[int, int]:
    """(first column on even rows, first column on odd rows) of the positions with (row + col) % 2 == parity."""
    if anchor_parity not in (0, 1):
        raise ValueError(f"anchor_parity must be 0 or 1, got {anchor_parity!r}")
    parity = anchor_parity if anchor else 1 - anchor_parity
    return parity, 1 - parity


#: ``symbols_fn(slice, anchor, scales_sq, means_sq) -> int symbols`` (same squeezed shape).
SymbolsFn = Callable[[int, bool, torch.Tensor, torch.Tensor], torch.Tensor]


class Compression(nn.Module):
    def __init__(self, cfg: CompressionConfig) -> None:
        super().__init__()
        from compressai.entropy_models import GaussianConditional

        self.cfg = cfg
        n, m, sc = cfg.N, cfg.M, cfg.slice_ch
        self.encoder = _Holder(
            "g_a",
            nn.Sequential(
                RB(cfg.in_nc, n), RB(n, n), RB(n, n), RB(n, n), RBS(n, n), RB(n, n), RB(n, n), RB(n, n), conv3x3(n, m)
            ),
        )
        self.hyper_enc = _Holder("hyper_enc", nn.Sequential(RB(m, n), RB(n, n), RBS(n, n), RBS(n, n)))
        self.hyper_dec = _Holder(
            "hyper_dec",
            nn.Sequential(RBU(n, m), RBU(m, m), RB(m, cfg.hyper_dec_mid), RB(cfg.hyper_dec_mid, 2 * m)),
        )
        self.decoder = _Holder(
            "g_s",
            nn.Sequential(
                conv3x3(m, n), RB(n, n), RB(n, n), RB(n, n), RBU(n, n), RB(n, n), RB(n, n), RB(n, n), RB(n, n)
            ),
        )
        self.out = conv3x3(n, cfg.out_nc)
        hp = 2 * m
        self.local_context = nn.ModuleList(nn.Conv2d(c, 2 * c, 5, padding=2) for c in sc)
        self.channel_context = nn.ModuleList(
            [None] + [ChannelContext(sum(sc[:i]), cfg.channel_ctx_hidden, 2 * sc[i]) for i in range(1, len(sc))]
        )
        self.entropy_parameters_anchor = nn.ModuleList(
            EntropyParameters(hp + (2 * c if i else 0), 2 * c) for i, c in enumerate(sc)
        )
        self.entropy_parameters_nonanchor = nn.ModuleList(
            EntropyParameters(hp + (4 * c if i else 2 * c), 2 * c) for i, c in enumerate(sc)
        )
        self.quantize = VectorQuantiser(cfg.codebook_size, n)
        self.gaussian_conditional = GaussianConditional(None)

    # -- entropy tables -------------------------------------------------------------------------------------
    def update(self, force: bool = True) -> bool:
        """Rebuild the GaussianConditional CDF tables (compressai ``update_scale_table``) from the scale table."""
        return self.gaussian_conditional.update_scale_table(scale_table(), force=force)

    def resize_entropy_buffers(self, state: dict[str, torch.Tensor], prefix: str = "") -> None:
        """Make the CDF buffers the shape ``state`` holds (empty [0] in official files) so a strict load works."""
        gc = self.gaussian_conditional
        for name in ("_offset", "_quantized_cdf", "_cdf_length", "scale_table"):
            key = f"{prefix}gaussian_conditional.{name}"
            if key in state:
                cur = getattr(gc, name)
                setattr(gc, name, torch.empty(state[key].shape, dtype=cur.dtype, device=cur.device))

    # -- stages ---------------------------------------------------------------------------------------------
    def analysis(self, h: torch.Tensor) -> torch.Tensor:
        return self.encoder(h)

    def hyper_indices(self, y: torch.Tensor) -> torch.Tensor:
        return self.quantize.indices(self.hyper_enc(y))

    def hyper_params(self, indices: torch.Tensor) -> torch.Tensor:
        return self.hyper_dec(self.quantize.lookup(indices))

    def synthesis(self, y_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y_hat -> (guide_hint, c_latent)."""
        guide_hint = self.decoder(y_hat)
        return guide_hint, self.out(guide_hint)

    def _slices(self, hp: torch.Tensor, symbols_fn: SymbolsFn) -> torch.Tensor:
        gc = self.gaussian_conditional
        done: list[torch.Tensor] = []
        for i, c in enumerate(self.cfg.slice_ch):
            ctx_ch = self.channel_context[i](torch.cat(done, dim=1)) if i else None
            inp = torch.cat([ctx_ch, hp], dim=1) if i else hp
            scales, means = self.entropy_parameters_anchor[i](inp).split(c, dim=1)
            m_sq = squeeze(means, True)
            q = symbols_fn(i, True, squeeze(scales, True), m_sq)
            y_anchor = unsqueeze(gc.dequantize(q, m_sq), True)
            ctx_sp = self.local_context[i](y_anchor)
            inp = torch.cat([ctx_sp, ctx_ch, hp], dim=1) if i else torch.cat([ctx_sp, hp], dim=1)
            scales, means = self.entropy_parameters_nonanchor[i](inp).split(c, dim=1)
            m_sq = squeeze(means, False)
            q = symbols_fn(i, False, squeeze(scales, False), m_sq)
            done.append(y_anchor + unsqueeze(gc.dequantize(q, m_sq), False))
        return torch.cat(done, dim=1)

    def _tables(self) -> tuple[list, list, list]:
        gc = self.gaussian_conditional
        if gc._quantized_cdf.numel() == 0:
            raise RuntimeError("entropy tables are empty: call Compression.update() after loading weights")
        return (
            gc._quantized_cdf.tolist(),
            gc._cdf_length.reshape(-1).int().tolist(),
            gc._offset.reshape(-1).int().tolist(),
        )

    @torch.no_grad()
    def code_y(self, y: torch.Tensor, hp: torch.Tensor) -> tuple[bytes, torch.Tensor]:
        """Encode y given the hyper params: (rANS string, y_hat)."""
        from compressai.ans import BufferedRansEncoder

        if y.shape[0] != 1:
            raise ValueError("one image per stream (batch 1)")
        gc = self.gaussian_conditional
        cdf, lengths, offsets = self._tables()
        sym_all: list[int] = []
        idx_all: list[int] = []
        y_slices = y.split(list(self.cfg.slice_ch), dim=1)

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            q = gc.quantize(squeeze(y_slices[i], anchor), "symbols", means_sq)
            sym_all.extend(q.reshape(-1).tolist())
            idx_all.extend(gc.build_indexes(scales_sq).reshape(-1).tolist())
            return q

        y_hat = self._slices(hp, symbols)
        encoder = BufferedRansEncoder()
        encoder.encode_with_indexes(sym_all, idx_all, cdf, lengths, offsets)
        return encoder.flush(), y_hat

    @torch.no_grad()
    def decode_y(self, y_string: bytes, hp: torch.Tensor) -> torch.Tensor:
        """Decode the rANS string given the hyper params (the mirror of ``code_y``)."""
        from compressai.ans import RansDecoder

        gc = self.gaussian_conditional
        cdf, lengths, offsets = self._tables()
        decoder = RansDecoder()
        # compressai's rANS decoder reads on past the end of a string it does not expect to end (a corrupted one):
        # without this zero padding it reads whatever heap memory follows, so one corrupted stream decoded to a
        # different y_hat on every call. A clean decode never reads the padding (same values, same format);
        # a corrupted one now reads zeros, deterministically. Bound: at most one 32-bit refill per symbol plus
        # the escape path's 4-bit reads, which stop at zero bits.
        n_symbols = int(hp.shape[0] * sum(self.cfg.slice_ch) * hp.shape[2] * hp.shape[3])
        decoder.set_stream(y_string + bytes(8 * n_symbols + 1024))

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            idx = gc.build_indexes(scales_sq).reshape(-1).tolist()
            values = decoder.decode_stream(idx, cdf, lengths, offsets)
            return torch.tensor(values, dtype=torch.int32, device=scales_sq.device).reshape(scales_sq.shape)

        return self._slices(hp, symbols)

    @torch.no_grad()
    def forward_quantized(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """In-memory eval forward (no entropy coding): indices, y_hat, guide_hint, c_latent."""
        gc = self.gaussian_conditional
        y = self.analysis(h)
        indices = self.hyper_indices(y)
        hp = self.hyper_params(indices)
        y_slices = y.split(list(self.cfg.slice_ch), dim=1)

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            return gc.quantize(squeeze(y_slices[i], anchor), "symbols", means_sq)

        y_hat = self._slices(hp, symbols)
        guide_hint, c_latent = self.synthesis(y_hat)
        return {"y": y, "indices": indices, "y_hat": y_hat, "guide_hint": guide_hint, "c_latent": c_latent}
