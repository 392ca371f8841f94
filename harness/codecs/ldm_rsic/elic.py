"""The ELIC compressor (brief §2.1, §3): analysis/synthesis transforms, hyperprior, and the checkerboard +
channel-context entropy model over uneven channel slices, coded with compressai's rANS.

::

    x (padded to x64) --g_a--> y (M x h x w) --h_a--> z (N x h/4 x w/4) --EntropyBottleneck--> z string
    z_hat --h_s--> hyper (2M)      ; y split into slices g_0..g_4 (e.g. 16, 16, 32, 64, 192)
    slice i:  cc_i = cc_transforms[i-1](y_hat_0 [, y_hat_{i-1}])      (slice 0 and the previous one only)
              anchors:     (scales, means) = ParamAggregation[i](hyper, cc_i, 0)      -> string y.s{i}.a
              non-anchors: ctx = context_prediction[i](y_hat anchors)                (5x5 checkerboard mask)
                           (scales, means) = ParamAggregation[i](hyper, cc_i, ctx)    -> string y.s{i}.n
    y_hat --g_s--> x_tilde (clamped to [0, 1], cropped)

Anchors are the positions with (row + col) odd (RDEIC's convention, shared helpers
``harness.codecs.rdeic.compression.squeeze/unsqueeze``). Symbols are round(y - mean); y_hat = symbol + mean. The
encoder and the decoder run the same ``_slices`` loop, so y_hat is bit-identical on both sides as long as both run
on the CPU in float32 (the codec keeps this module there).

Conventions the brief does not fix and that we chose (unverified against the official weights until they are
available): the order of ParamAggregation's input (hyper, channel context, spatial context) and of its output
(scales, means), the anchor parity, ReLU between every conv pair, and compressai's default scale table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.codecs.ldm_rsic.config import ELICConfig

# shared with RDEIC (imported, not copied): compressai's default 64-entry scale table exp(linspace(ln 0.11, ln 256,
# 64)), which the official updata.py uses too, and the checkerboard squeeze / unsqueeze of anchor positions
from harness.codecs.rdeic.compression import scale_table, squeeze, unsqueeze

#: ``symbols_fn(slice, anchor, scales_sq, means_sq) -> int symbols`` of the squeezed (B x C x h x w/2) positions.
SymbolsFn = Callable[[int, bool, torch.Tensor, torch.Tensor], torch.Tensor]


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, output_padding=stride - 1, padding=k // 2)


class ResidualBottleneck(nn.Module):
    """1x1 (C -> C/2) -> ReLU -> 3x3 -> ReLU -> 1x1 (C/2 -> C), plus identity."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch // 2, 1)
        self.conv2 = nn.Conv2d(ch // 2, ch // 2, 3, padding=1)
        self.conv3 = nn.Conv2d(ch // 2, ch, 1)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))


def _stack(*layers: nn.Module) -> nn.Sequential:
    return nn.Sequential(*layers)


def _three(cin: int, h: tuple[int, int], cout: int, k: int) -> nn.Sequential:
    """conv(cin -> h0) ReLU conv(h0 -> h1) ReLU conv(h1 -> cout), stride 1 (cc_transforms: k = 5; aggregation: 1)."""
    return nn.Sequential(
        nn.Conv2d(cin, h[0], k, padding=k // 2),
        nn.ReLU(),
        nn.Conv2d(h[0], h[1], k, padding=k // 2),
        nn.ReLU(),
        nn.Conv2d(h[1], cout, k, padding=k // 2),
    )


class ELIC(nn.Module):
    """ELIC with the official attribute names (``g_a``, ``g_s``, ``h_a``, ``h_s``, ``cc_transforms``,
    ``context_prediction``, ``ParamAggregation``, ``entropy_bottleneck``, ``gaussian_conditional``)."""

    def __init__(self, cfg: ELICConfig) -> None:
        super().__init__()
        from compressai.entropy_models import EntropyBottleneck, GaussianConditional
        from compressai.layers import AttentionBlock, CheckerboardMaskedConv2d

        self.cfg = cfg
        n, m, g = cfg.N, cfg.M, cfg.groups
        rb = ResidualBottleneck
        self.g_a = _stack(
            conv(3, n), rb(n), rb(n), rb(n),
            conv(n, n), rb(n), rb(n), rb(n), AttentionBlock(n),
            conv(n, n), rb(n), rb(n), rb(n),
            conv(n, m), AttentionBlock(m),
        )  # fmt: skip
        self.g_s = _stack(
            AttentionBlock(m), deconv(m, n), rb(n), rb(n), rb(n),
            deconv(n, n), AttentionBlock(n), rb(n), rb(n), rb(n),
            deconv(n, n), rb(n), rb(n), rb(n),
            deconv(n, 3),
        )  # fmt: skip
        self.h_a = _stack(conv(m, n, 3, 1), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
        self.h_s = _stack(
            deconv(n, n), nn.ReLU(), deconv(n, cfg.hyper_out), nn.ReLU(), conv(cfg.hyper_out, 2 * m, 3, 1)
        )
        self.cc_transforms = nn.ModuleList(
            _three(g[0] + (g[i - 1] if i > 1 else 0), cfg.cc_hidden, 2 * g[i], 5) for i in range(1, len(g))
        )
        self.context_prediction = nn.ModuleList(
            CheckerboardMaskedConv2d(c, 2 * c, kernel_size=5, padding=2, stride=1) for c in g
        )
        self.ParamAggregation = nn.ModuleList(
            _three(2 * m + (4 * c if i else 2 * c), cfg.agg_hidden, 2 * c, 1) for i, c in enumerate(g)
        )
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.gaussian_conditional = GaussianConditional(None)

    # -- entropy tables -------------------------------------------------------------------------------------
    def update(self, force: bool = True) -> None:
        """Rebuild every CDF table (what the official ``updata.py`` does after training)."""
        self.entropy_bottleneck.update(force=force)
        self.gaussian_conditional.update_scale_table(scale_table(), force=force)
        self._tables_cache = None

    #: CDF buffers whose shapes a checkpoint decides (empty [0] before ``update``; data-dependent after).
    CDF_BUFFERS = (
        "entropy_bottleneck._offset",
        "entropy_bottleneck._quantized_cdf",
        "entropy_bottleneck._cdf_length",
        "gaussian_conditional._offset",
        "gaussian_conditional._quantized_cdf",
        "gaussian_conditional._cdf_length",
        "gaussian_conditional.scale_table",
    )

    def resize_cdf_buffers(self, state: dict[str, torch.Tensor]) -> None:
        """Give the CDF buffers the shapes ``state`` holds, so a strict ``load_state_dict`` accepts the file."""
        for key in self.CDF_BUFFERS:
            if key in state:
                module_name, name = key.rsplit(".", 1)
                module = self.get_submodule(module_name)
                cur = getattr(module, name)
                setattr(module, name, torch.empty(state[key].shape, dtype=cur.dtype, device=cur.device))

    def _tables(self) -> tuple[list, list, list]:
        cache = getattr(self, "_tables_cache", None)
        if cache is None:
            gc = self.gaussian_conditional
            if gc._quantized_cdf.numel() == 0:
                raise RuntimeError("entropy tables are empty: call ELIC.update() after loading weights")
            cache = (
                gc._quantized_cdf.tolist(),
                gc._cdf_length.reshape(-1).int().tolist(),
                gc._offset.reshape(-1).int().tolist(),
            )
            self._tables_cache = cache
        return cache

    # -- the slice loop shared by encoder, decoder and re-dequantisation --------------------------------------
    def _slices(self, hyper: torch.Tensor, symbols_fn: SymbolsFn) -> torch.Tensor:
        gc = self.gaussian_conditional
        groups = self.cfg.groups
        done: list[torch.Tensor] = []
        for i, c in enumerate(groups):
            base = [hyper]
            if i:
                support = done[0] if i == 1 else torch.cat([done[0], done[i - 1]], dim=1)
                base.append(self.cc_transforms[i - 1](support))
            b, _, h, w = hyper.shape
            zeros = hyper.new_zeros(b, 2 * c, h, w)
            scales, means = self.ParamAggregation[i](torch.cat([*base, zeros], dim=1)).chunk(2, dim=1)
            m_sq = squeeze(means, True)
            q = symbols_fn(i, True, squeeze(scales, True), m_sq)
            y_anchor = unsqueeze(gc.dequantize(q, m_sq), True)
            ctx = self.context_prediction[i](y_anchor)
            scales, means = self.ParamAggregation[i](torch.cat([*base, ctx], dim=1)).chunk(2, dim=1)
            m_sq = squeeze(means, False)
            q = symbols_fn(i, False, squeeze(scales, False), m_sq)
            done.append(y_anchor + unsqueeze(gc.dequantize(q, m_sq), False))
        return torch.cat(done, dim=1)

    # -- coding ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
        """x: 1 x 3 x H x W in [0, 1], H and W multiples of 64 -> (11 strings: z, then y.s{i}.a / y.s{i}.n per
        slice; z_hat; y_hat). z_hat is the decoded one, so the y parameters are the decoder's."""
        from compressai.ans import RansEncoder

        if x.shape[0] != 1:
            raise ValueError("one image per stream (batch 1)")
        y = self.g_a(x)
        z = self.h_a(y)
        z_string = self.entropy_bottleneck.compress(z)[0]
        z_hat = self.entropy_bottleneck.decompress([z_string], z.shape[-2:])
        gc = self.gaussian_conditional
        cdf, lengths, offsets = self._tables()
        y_slices = y.split(list(self.cfg.groups), dim=1)
        strings: list[bytes] = [z_string]

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            q = gc.quantize(squeeze(y_slices[i], anchor), "symbols", means_sq)
            idx = gc.build_indexes(scales_sq)
            strings.append(
                RansEncoder().encode_with_indexes(
                    q.reshape(-1).int().tolist(), idx.reshape(-1).int().tolist(), cdf, lengths, offsets
                )
            )
            return q

        y_hat = self._slices(self.h_s(z_hat), symbols)
        return strings, z_hat, y_hat

    @torch.no_grad()
    def decode_z(self, z_string: bytes, z_shape: tuple[int, int]) -> torch.Tensor:
        """The mirror of the z part of ``compress``; the string is zero-padded (see ``decode_y``)."""
        n_symbols = self.cfg.N * z_shape[0] * z_shape[1]
        return self.entropy_bottleneck.decompress([z_string + bytes(8 * n_symbols + 1024)], z_shape)

    @torch.no_grad()
    def decode_y(self, y_strings: list[bytes], z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """10 y strings + z_hat -> (y_hat float32, symbols int32), both 1 x M x h x w.

        compressai's rANS decoder reads past the end of a string it does not expect to end (a corrupted one);
        every string is zero-padded (8 bytes per symbol + 1 KiB) so that such a read is deterministic and stays
        inside our buffer, as RDEIC's decoder does. A clean decode never reads the padding."""
        from compressai.ans import RansDecoder

        gc = self.gaussian_conditional
        cdf, lengths, offsets = self._tables()
        it = iter(y_strings)
        parts: list[list[torch.Tensor]] = [[] for _ in self.cfg.groups]

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            idx = gc.build_indexes(scales_sq).reshape(-1).int().tolist()
            padded = next(it) + bytes(8 * len(idx) + 1024)
            values = RansDecoder().decode_with_indexes(padded, idx, cdf, lengths, offsets)
            q = torch.tensor(values, dtype=torch.int32).reshape(scales_sq.shape)
            parts[i].append(unsqueeze(q, anchor))
            return q

        y_hat = self._slices(self.h_s(z_hat), symbols)
        sym = torch.cat([a + n for a, n in parts], dim=1)
        return y_hat, sym

    @torch.no_grad()
    def dequantize_symbols(self, sym: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
        """y_hat from decoded symbols (1 x M x h x w int) and a (possibly altered) z_hat: the means are recomputed
        through h_s and the context model, which is how a change of z_hat reaches the image."""
        sym_slices = sym.split(list(self.cfg.groups), dim=1)

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            return squeeze(sym_slices[i], anchor)

        return self._slices(self.h_s(z_hat), symbols)

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.g_s(y_hat).clamp(0.0, 1.0)

    # -- training -------------------------------------------------------------------------------------------
    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Differentiable forward: y_hat by straight-through rounding around the means (the values the coder
        produces), rates from noise-relaxed likelihoods (compressai's training mode). Returns x_hat (unclamped),
        bits (a scalar, summed over the batch) and the entropy bottleneck's auxiliary loss."""
        eb, gc = self.entropy_bottleneck, self.gaussian_conditional
        y = self.g_a(x)
        z = self.h_a(y)
        _, z_lik = eb(z)
        medians = eb._get_medians()
        z_hat = _ste_round(z - medians) + medians
        hyper = self.h_s(z_hat)
        b, _, h, w = y.shape
        rows = torch.arange(h, device=y.device)[:, None]
        cols = torch.arange(w, device=y.device)[None, :]
        anchor = ((rows + cols) % 2 == 1)[None, None]
        done: list[torch.Tensor] = []
        bits = -torch.log2(z_lik).sum()
        for i, (c, y_i) in enumerate(zip(self.cfg.groups, y.split(list(self.cfg.groups), dim=1), strict=True)):
            base = [hyper]
            if i:
                support = done[0] if i == 1 else torch.cat([done[0], done[i - 1]], dim=1)
                base.append(self.cc_transforms[i - 1](support))
            zeros = hyper.new_zeros(b, 2 * c, h, w)
            s_a, m_a = self.ParamAggregation[i](torch.cat([*base, zeros], dim=1)).chunk(2, dim=1)
            y_a = torch.where(anchor, _ste_round(y_i - m_a) + m_a, torch.zeros_like(y_i))
            ctx = self.context_prediction[i](y_a)
            s_n, m_n = self.ParamAggregation[i](torch.cat([*base, ctx], dim=1)).chunk(2, dim=1)
            y_hat_i = torch.where(anchor, y_a, _ste_round(y_i - m_n) + m_n)
            _, lik = gc(y_i, torch.where(anchor, s_a, s_n), torch.where(anchor, m_a, m_n))
            bits = bits - torch.log2(lik).sum()
            done.append(y_hat_i)
        x_hat = self.g_s(torch.cat(done, dim=1))
        return {"x_hat": x_hat, "bits": bits, "aux": eb.loss()}


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()
