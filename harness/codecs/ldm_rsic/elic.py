"""The ELIC compressor of LDM-RSIC (``ELIC/Network.py`` of mlkk518/LDM-RSIC, ``TestModel(N=192, M=320)``):
analysis/synthesis transforms, hyperprior, and the checkerboard + channel-context entropy model over uneven
channel slices, coded with compressai's rANS.

::

    x (padded to x64) --g_a--> y (M x h x w) --h_a--> z (N x h/4 x w/4) --EntropyBottleneck--> z string
    z_hat --h_s--> hyper = [latent_means, latent_scales] (2M) ; y split into slices g_0..g_4 (16, 16, 32, 64, 192)
    slice i:  cc_i = cc_transforms[i-1](y_hat_0 [, y_hat_{i-1}]) = [mean, scale]   (slice 0 and the previous one)
              anchors:     (means, scales) = ParamAggregation[i]([0, cc_i, hyper])            -> string y.s{i}.a
              non-anchors: ctx = context_prediction[i](y_hat anchors)                (5x5 checkerboard mask)
                           (means, scales) = ParamAggregation[i]([ctx, cc_i, hyper])          -> string y.s{i}.n
    y_hat --g_s--> x_tilde (clamped to [0, 1], cropped)

As the official code computes it (checked stage by stage against the official implementation's outputs by
``tests/test_parity_ldm_rsic.py``):

- anchors are the positions with (row + col) even, i.e. (even, even) and (odd, odd); each row's anchors
  (non-anchors) are packed to W/2 columns before coding (rows 0::2 take columns 0::2, rows 1::2 columns 1::2);
- ParamAggregation's input is ``[spatial context (zeros for anchors), channel context (slices >= 1), hyper]``
  and its output is read as ``(means, scales)``;
- symbols are round(y - mean), y_hat = symbol + mean;
- the z tables follow compressai **1.1.5**'s ``EntropyBottleneck.update`` (the version ``ELIC/requirements.txt``
  pins), reproduced by :func:`update_entropy_bottleneck_115` because this project installs compressai 1.2.x,
  whose rule gives different tables; the Gaussian tables (``update_scale_table`` of the default 64-scale table,
  as ``updata.py``) are the same in both versions.

The encoder and the decoder run the same ``_slices`` loop, so y_hat is bit-identical on both sides as long as
both run on the CPU in float32 (the codec keeps this module there).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from harness.codecs.ldm_rsic.config import ELICConfig

# shared with RDEIC (imported, not copied): compressai's default 64-entry scale table exp(linspace(ln 0.11, ln 256,
# 64)), which the official updata.py uses too, and the checkerboard squeeze / unsqueeze of anchor positions
from harness.codecs.rdeic import compression as _rdeic
from harness.codecs.rdeic.compression import scale_table

#: (row + col) % 2 of the anchors: official ELIC codes (even, even) and (odd, odd) first (RDEIC's parity is 1).
ANCHOR_PARITY = 0


def squeeze(x: torch.Tensor, anchor: bool) -> torch.Tensor:
    """B x C x H x W -> B x C x H x W/2: ELIC's anchor (or non-anchor) positions of each row, packed."""
    return _rdeic.squeeze(x, anchor, ANCHOR_PARITY)


def unsqueeze(x: torch.Tensor, anchor: bool) -> torch.Tensor:
    """The inverse of :func:`squeeze`: B x C x H x W/2 -> B x C x H x W, zeros at the other positions."""
    return _rdeic.unsqueeze(x, anchor, ANCHOR_PARITY)


def anchor_mask(h: int, w: int, device: torch.device | None = None) -> torch.Tensor:
    """1 x 1 x h x w bool, True at ELIC's anchor positions ((row + col) % 2 == ANCHOR_PARITY)."""
    rows = torch.arange(h, device=device)[:, None]
    cols = torch.arange(w, device=device)[None, :]
    return ((rows + cols) % 2 == ANCHOR_PARITY)[None, None]


@torch.no_grad()
def update_entropy_bottleneck_115(eb: nn.Module) -> None:
    """Build ``eb``'s CDF tables (``_offset``, ``_quantized_cdf``, ``_cdf_length``) by the rule of compressai
    1.1.5's ``EntropyBottleneck.update(force=True)`` (compressai/entropy_models/entropy_models.py at tag v1.1.5),
    the version the official ELIC pins (``ELIC/requirements.txt``).

    Why not ``eb.update()``: compressai >= 1.2 takes the probability of each integer bin as
    sigmoid(upper) - sigmoid(lower) of the cumulative logits; 1.1.5 first flips both logits by
    s = -sign(lower + upper) and takes |sigmoid(s * upper) - sigmoid(s * lower)|, which is the same number in
    exact arithmetic but not in float32 (in the far tails sigmoid saturates differently), and the quantised CDF
    differs in a few entries: then the official z string decodes to garbage with our tables and vice versa.

    The rule: medians m = quantiles[:, 0, 1]; minima = max(ceil(m - quantiles[:, 0, 0]), 0); maxima =
    max(ceil(quantiles[:, 0, 2] - m), 0); samples = arange(max_len) + (m - minima); lower / upper = the cumulative
    logits at samples -/+ 0.5; pmf as above; tail mass = sigmoid(lower[first]) + sigmoid(-upper[last]);
    ``pmf_to_quantized_cdf`` (compressai's C++ extension, 16-bit precision, unchanged between the versions);
    ``_offset = -minima``; ``_cdf_length = pmf_length + 2``."""
    q = eb.quantiles
    medians = q[:, 0, 1]
    minima = torch.clamp(torch.ceil(medians - q[:, 0, 0]).int(), min=0)
    maxima = torch.clamp(torch.ceil(q[:, 0, 2] - medians).int(), min=0)
    pmf_start = medians - minima
    pmf_length = maxima + minima + 1
    max_length = int(pmf_length.max().item())
    samples = torch.arange(max_length, device=q.device)[None, :] + pmf_start[:, None, None]
    lower = eb._logits_cumulative(samples - 0.5, stop_gradient=True)
    upper = eb._logits_cumulative(samples + 0.5, stop_gradient=True)
    flip = -torch.sign(lower + upper)
    pmf = torch.abs(torch.sigmoid(flip * upper) - torch.sigmoid(flip * lower))[:, 0, :]
    tail_mass = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
    eb._offset = -minima
    eb._quantized_cdf = eb._pmf_to_cdf(pmf, tail_mass, pmf_length, max_length)
    eb._cdf_length = pmf_length + 2


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
        """Rebuild every CDF table (what the official ``updata.py`` does after training), the z tables by
        compressai 1.1.5's rule (:func:`update_entropy_bottleneck_115`). ``force = False`` keeps tables that
        are already built."""
        if force or self.entropy_bottleneck._offset.numel() == 0:
            update_entropy_bottleneck_115(self.entropy_bottleneck)
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
    def channel_context(self, i: int, done: list[torch.Tensor]) -> torch.Tensor | None:
        """cc_transforms[i-1] of the decoded slices 0 (and i-1): B x 2 g_i x h x w as [mean, scale]; None for
        slice 0 (it has no channel context)."""
        if i == 0:
            return None
        support = done[0] if i == 1 else torch.cat([done[0], done[i - 1]], dim=1)
        return self.cc_transforms[i - 1](support)

    def entropy_parameters(
        self, i: int, ctx: torch.Tensor, cc: torch.Tensor | None, hyper: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ParamAggregation[i] of ``[ctx, cc, hyper]`` (the official input order: spatial context, channel context
        when i >= 1, hyperprior) -> (means, scales), each B x g_i x h x w. ``ctx`` is zeros for the anchors."""
        parts = [ctx] if cc is None else [ctx, cc]
        means, scales = self.ParamAggregation[i](torch.cat([*parts, hyper], dim=1)).chunk(2, dim=1)
        return means, scales

    def _slices(self, hyper: torch.Tensor, symbols_fn: SymbolsFn) -> torch.Tensor:
        gc = self.gaussian_conditional
        groups = self.cfg.groups
        done: list[torch.Tensor] = []
        for i, c in enumerate(groups):
            cc = self.channel_context(i, done)
            b, _, h, w = hyper.shape
            means, scales = self.entropy_parameters(i, hyper.new_zeros(b, 2 * c, h, w), cc, hyper)
            m_sq = squeeze(means, True)
            q = symbols_fn(i, True, squeeze(scales, True), m_sq)
            y_anchor = unsqueeze(gc.dequantize(q, m_sq), True)
            ctx = self.context_prediction[i](y_anchor)
            means, scales = self.entropy_parameters(i, ctx, cc, hyper)
            m_sq = squeeze(means, False)
            q = symbols_fn(i, False, squeeze(scales, False), m_sq)
            done.append(y_anchor + unsqueeze(gc.dequantize(q, m_sq), False))
        return torch.cat(done, dim=1)

    def encode_symbols(self, symbols: torch.Tensor, indexes: torch.Tensor) -> bytes:
        """One rANS string of integer ``symbols`` under the Gaussian tables ``indexes`` (same shape), as the
        official ``gaussian_conditional.compress`` codes them (batch 1)."""
        from compressai.ans import RansEncoder

        cdf, lengths, offsets = self._tables()
        return RansEncoder().encode_with_indexes(
            symbols.reshape(-1).int().tolist(), indexes.reshape(-1).int().tolist(), cdf, lengths, offsets
        )

    def decode_symbols(self, string: bytes, indexes: torch.Tensor) -> torch.Tensor:
        """The mirror of :meth:`encode_symbols`: int32 symbols of ``indexes``' shape. The string is zero-padded
        (8 bytes per symbol + 1 KiB): compressai's rANS decoder reads past the end of a string it does not
        expect to end (a corrupted one); the padding keeps such a read deterministic and inside our buffer, as
        RDEIC's decoder does. A clean decode never reads the padding."""
        from compressai.ans import RansDecoder

        cdf, lengths, offsets = self._tables()
        idx = indexes.reshape(-1).int().tolist()
        values = RansDecoder().decode_with_indexes(string + bytes(8 * len(idx) + 1024), idx, cdf, lengths, offsets)
        return torch.tensor(values, dtype=torch.int32).reshape(indexes.shape)

    # -- coding ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> tuple[list[bytes], torch.Tensor, torch.Tensor]:
        """x: 1 x 3 x H x W in [0, 1], H and W multiples of 64 -> (11 strings: z, then y.s{i}.a / y.s{i}.n per
        slice; z_hat; y_hat). z_hat is the decoded one, so the y parameters are the decoder's."""
        if x.shape[0] != 1:
            raise ValueError("one image per stream (batch 1)")
        y = self.g_a(x)
        z = self.h_a(y)
        z_string = self.entropy_bottleneck.compress(z)[0]
        z_hat = self.entropy_bottleneck.decompress([z_string], z.shape[-2:])
        gc = self.gaussian_conditional
        y_slices = y.split(list(self.cfg.groups), dim=1)
        strings: list[bytes] = [z_string]

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            q = gc.quantize(squeeze(y_slices[i], anchor), "symbols", means_sq)
            strings.append(self.encode_symbols(q, gc.build_indexes(scales_sq)))
            return q

        y_hat = self._slices(self.h_s(z_hat), symbols)
        return strings, z_hat, y_hat

    @torch.no_grad()
    def decode_z(self, z_string: bytes, z_shape: tuple[int, int]) -> torch.Tensor:
        """The mirror of the z part of ``compress``; the string is zero-padded (see ``decode_symbols``)."""
        n_symbols = self.cfg.N * z_shape[0] * z_shape[1]
        return self.entropy_bottleneck.decompress([z_string + bytes(8 * n_symbols + 1024)], z_shape)

    @torch.no_grad()
    def decode_y(self, y_strings: list[bytes], z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """10 y strings + z_hat -> (y_hat float32, symbols int32), both 1 x M x h x w."""
        gc = self.gaussian_conditional
        it = iter(y_strings)
        parts: list[list[torch.Tensor]] = [[] for _ in self.cfg.groups]

        def symbols(i: int, anchor: bool, scales_sq: torch.Tensor, means_sq: torch.Tensor) -> torch.Tensor:
            q = self.decode_symbols(next(it), gc.build_indexes(scales_sq))
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
        anchor = anchor_mask(h, w, y.device)
        done: list[torch.Tensor] = []
        bits = -torch.log2(z_lik).sum()
        for i, (c, y_i) in enumerate(zip(self.cfg.groups, y.split(list(self.cfg.groups), dim=1), strict=True)):
            cc = self.channel_context(i, done)
            m_a, s_a = self.entropy_parameters(i, hyper.new_zeros(b, 2 * c, h, w), cc, hyper)
            y_a = torch.where(anchor, _ste_round(y_i - m_a) + m_a, torch.zeros_like(y_i))
            ctx = self.context_prediction[i](y_a)
            m_n, s_n = self.entropy_parameters(i, ctx, cc, hyper)
            y_hat_i = torch.where(anchor, y_a, _ste_round(y_i - m_n) + m_n)
            _, lik = gc(y_i, torch.where(anchor, s_a, s_n), torch.where(anchor, m_a, m_n))
            bits = bits - torch.log2(lik).sum()
            done.append(y_hat_i)
        x_hat = self.g_s(torch.cat(done, dim=1))
        return {"x_hat": x_hat, "bits": bits, "aux": eb.loss()}


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()
