"""The DICM codec plugin (``CODECS`` name ``dicm``): distributed coding with decoder-side information.

::

    encode:       x -> pad (edge, to x64) -> context_fn: y, z -> rANS z, rANS y (means, scales from z_hat) -> file
    parse:        bytes -> header (size, rate index) -> z -> hyper_dec -> y -> {"y_hat", "z_hat"}   [worker:
                  context_fn only, no UNet]
    reconstruct:  hook("z_hat") [a changed z_hat moves the means: y_hat += mean(z') - mean(z)] -> hook("y_hat")
                  -> ctx pyramid (hook "ctx_pyramid", per level) ; side image -> encode_w -> w pyramid (hook
                  "w_pyramid", per level; w = 0 when the side image is missing) ; ctx + w -> DDIM from
                  0.8 N(0, I) of the decode seed (hook "init_noise") -> x0 -> clamp(-1, 1) / 2 + 0.5, x 255 float
                  pixel values of the padded shape (cast to uint8 by truncation, as the official save_image)

What is official and what is ours. With the official config and an official checkpoint (``ckpt``) every stage
computes what dongqingcc/DICC's ``DICM.compress`` computes for the x chain (tests/test_parity_dicm.py checks it
stage by stage against the official code's numbers): analysis, quantisation, hyperprior, context pyramid, w,
the UNet, the DDIM schedule and steps, the output conversion. Ours, with no official code path to compare with:

* the file (the official code writes none; it estimates bpp from likelihoods) and its rANS coding;
* padding to a multiple of 64 (the official code takes sizes that need none);
* missing side information decoded as w = 0 ("DICM without w": our interpretation; the official code always
  has a side view), and ``ignore_side_info``;
* the start noise drawn from the decode seed (test.py draws ``randn_like(img) * 0.8`` from the global RNG);
* ``time_input = "t"`` and ``rounding = "round"`` (options; the official values are "index" and "truncate");
* the ``tiny`` and ``test`` configs (x̂₀ prediction, context at every UNet level: see config.py).

Decoder-side information: ``side_info = ("stereo",)``. ``reconstruct`` takes ``side_info = {"stereo": image}``
from the harness (a trusted, decoder-local channel: never from the bitstream): a uint8 H x W x 3 image of the
original's size, or ``None`` for missing side information (w = 0, see above). ``ignore_side_info = true`` makes
that the codec's only mode (and it then declares no side information): the same streams, decoded without w, as a
reference row.

Latents that are non-finite or beyond ``LATENT_BOUND`` (|value| > 1e4) are refused before the UNet
(``InvalidOutput``); a header that declares another image size is refused by ``parse`` before anything is
decoded, and a structurally impossible file (bad magic, lengths that do not end the file, another model's rate
index, empty strings) raises :class:`~harness.codecs.dicm.bitstream.BitstreamError` (a ``ValueError``).
Weights: ``weights`` (our .safetensors), ``ckpt`` (an official ``{"step", "model"}`` checkpoint, converted and
checked strictly against the manifest), or random weights with ``allow_random_weights = true`` (plumbing only).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.codecs.base import (
    Bitstream,
    CodecError,
    DecodedState,
    InvalidOutput,
    LatentHook,
    LearnedCodec,
    check_image,
)
from harness.hashing import key_of

#: Options that locate files: not part of the codec identity (the weights hash is).
PATH_OPTIONS = ("weights", "ckpt")
#: |y_hat|, |z_hat| above this (latent units) are absurd: corrupted rANS strings reach ±1e9 through compressai's
#: escape path. Refused before any network runs.
LATENT_BOUND = 1.0e4
SIDE_KIND = "stereo"


def pad_to(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def pad_image(image: np.ndarray, multiple: int) -> np.ndarray:
    """Edge-replicate the bottom/right to a multiple of ``multiple`` (H x W x 3 uint8)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, pad_to(h, multiple) - h), (0, pad_to(w, multiple) - w), (0, 0)), mode="edge")


def to_model_input(image: np.ndarray):
    """uint8 H x W x 3 -> float32 1 x 3 x H x W in [-1, 1]: x / 127.5 - 1, bit-identical to the official
    ``ToTensor(img) * 2 - 1`` (x / 255 * 2 rounds like x / 127.5: scaling by 2 is exact)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div(127.5).sub(1.0)


def to_unit(x0):
    """The sampler's x̂₀ (B x 3 x H x W, any range) -> [0, 1] as the official test.py: clamp(-1, 1) / 2 + 0.5."""
    return x0.clamp(-1.0, 1.0) / 2.0 + 0.5


def to_pixel_values(x0) -> np.ndarray:
    """x̂₀ of the first batch item -> float32 H x W x 3 pixel values in [0, 255]: the official save_image's
    ``clip(x * 255, 0, 255)`` before its uint8 cast (the harness casts with the codec's ``rounding``)."""
    return np.ascontiguousarray((to_unit(x0) * 255.0).clamp(0.0, 255.0)[0].permute(1, 2, 0).cpu().numpy())


class DICM(LearnedCodec):
    """DICM (official architecture, our container) with DDIM decoding from the decoded latent plus side features."""

    name = "dicm"
    version = "1"
    path_options = PATH_OPTIONS
    libraries = ("torch", "compressai")
    hooks = ("y_hat", "z_hat", "ctx_pyramid", "w_pyramid", "init_noise")
    segments = ("z", "y")
    side_info = (SIDE_KIND,)

    @dataclass(frozen=True)
    class Options:
        config: str = "official"  # official | tiny | test (harness/codecs/dicm/config.py)
        weights: str | None = None  # our .safetensors (harness/codecs/dicm/checkpoint.py)
        ckpt: str | None = None  # an official trainer checkpoint {"step", "model"}
        steps: int | None = None  # DDIM steps (None: the config's: 200 official, 20 tiny)
        time_input: str = "index"  # "index" (official: i / steps) | "t" (t_i / T, what training saw)
        rate_index: int = 0  # written to / required in the header: which rate point's model
        #: decode without side information, always (w = 0, our interpretation of "DICM without w": no official code
        #: path): a codec of its own, the reference row of side-information suites; it then declares no side
        #: information, so the harness skips that axis
        ignore_side_info: bool = False
        device: str = "cpu"
        rounding: str = "truncate"  # truncate (official save_image: astype uint8) | round (float pixels -> uint8)
        allow_random_weights: bool = False
        random_seed: int = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from harness.codecs.dicm.config import PRESETS
        from harness.codecs.dicm.diffusion import TIME_INPUTS

        o = self.options
        if o.config not in PRESETS:
            raise CodecError(f"dicm: unknown config {o.config!r}; known: {', '.join(PRESETS)}")
        self.model_config = PRESETS[o.config]
        if o.steps is None:
            self.options = o = dataclasses.replace(o, steps=self.model_config.diffusion.steps)
        if not 1 <= o.steps <= self.model_config.diffusion.timesteps:
            raise CodecError(f"dicm: steps must be in 1..{self.model_config.diffusion.timesteps}, got {o.steps}")
        if o.time_input not in TIME_INPUTS:
            raise CodecError(f"dicm: time_input must be one of {', '.join(TIME_INPUTS)}, got {o.time_input!r}")
        if not 0 <= o.rate_index <= 255:
            raise CodecError(f"dicm: rate_index is a byte (0..255), got {o.rate_index}")
        if o.rounding not in ("round", "truncate"):
            raise CodecError(f"dicm: rounding must be round or truncate, got {o.rounding!r}")
        if o.weights is not None and o.ckpt is not None:
            raise CodecError("dicm: give weights (our .safetensors) or ckpt (an official checkpoint), not both")
        if o.weights is None and o.ckpt is None and not o.allow_random_weights:
            from harness.codecs.dicm.checkpoint import missing_weights_message

            raise CodecError(missing_weights_message())
        from harness.codecs.checkpoints import inspect_all

        inspect_all(self.weight_files(o))  # one line each (DICM's): missing, empty, a folder, truncated, not weights
        self.clean_psnr_floor_db = self.model_config.clean_psnr_floor_db
        if self.random_weights:
            self.clean_psnr_floor_db = -math.inf  # random weights decode to noise: plumbing runs only
        self.output_rounding = o.rounding
        if o.ignore_side_info:
            self.side_info = ()
        self._compressor = None
        self._model = None
        self.last_timings: dict[str, float] = {}

    @property
    def random_weights(self) -> bool:
        return self.options.weights is None and self.options.ckpt is None

    @classmethod
    def weight_files(cls, options: Options) -> list:
        """The weight file ``options`` name, described for harness.codecs.checkpoints (checked before a run)."""
        from harness.codecs.dicm.checkpoint import weight_files

        return weight_files(options)

    # -- identity -------------------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        from harness.codecs.checkpoints import file_sha256

        o = self.options
        if self.random_weights:
            import torch

            return key_of({"random_weights": o.config, "seed": o.random_seed, "torch": torch.__version__})
        return key_of({"file": file_sha256(o.weights or o.ckpt), "kind": "weights" if o.weights else "ckpt"})

    def decoded_shape(self, height: int, width: int) -> tuple[int, int, int]:
        m = self.model_config.pad_multiple
        return (pad_to(height, m), pad_to(width, m), 3)

    def grids(self, height: int, width: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """((C_y, h_y, w_y), (C_z, h_z, w_z)) an original of ``height`` x ``width`` is coded with."""
        c = self.model_config.compressor
        hp, wp = self.decoded_shape(height, width)[:2]
        return (
            (c.latent_channels, hp // c.latent_stride, wp // c.latent_stride),
            (c.hyper_channels, hp // c.hyper_stride, wp // c.hyper_stride),
        )

    def max_state_bytes(self, size: tuple[int, int]) -> int:
        """Exactly what ``parse`` returns for ``size`` (float32 y_hat and z_hat) plus 4 KiB for scalars."""
        (cy, hy, wy), (cz, hz, wz) = self.grids(*size)
        return 4 * (cy * hy * wy + cz * hz * wz) + 4096

    def warm(self) -> None:
        """What a decode worker needs before its first parse: context_fn's weights and its CDF tables."""
        self.compressor()

    # -- weights --------------------------------------------------------------------------------------------
    def _state(self, prefixes: tuple[str, ...] | None) -> dict:
        from harness.codecs.dicm.checkpoint import load_official, read_weights

        o = self.options
        if o.weights:
            return read_weights(o.weights, self.model_config, prefixes)
        return load_official(o.ckpt, self.model_config, prefixes)

    def compressor(self):
        """context_fn alone (what a decode worker loads), on the CPU, with its entropy tables."""
        if self._compressor is None:
            if self._model is not None:
                self._compressor = self._model.context_fn
            else:
                from harness.codecs.dicm.checkpoint import load_into
                from harness.codecs.dicm.model import build_compressor

                comp = build_compressor(self.model_config, "context_fn", self.options.random_seed)
                if not self.random_weights:
                    load_into(comp, self._state(("context_fn.",)), "context_fn.", self._source())
                else:
                    comp.update(force=True)
                self._compressor = comp.eval()
        return self._compressor

    def model(self):
        """The whole model (main process: encode and reconstruct)."""
        if self._model is None:
            import torch

            from harness.codecs.dicm.checkpoint import load_into
            from harness.codecs.dicm.model import DICMModel

            m = DICMModel(self.model_config, seed=self.options.random_seed)
            if self.random_weights:
                m.update(force=True)
            else:
                load_into(m, self._state(None), "", self._source())
            m.eval()
            m.denoise_fn.to(torch.device(self.options.device))
            m.encode_w.to(torch.device(self.options.device))
            self._model = m
            self._compressor = m.context_fn  # stays on the CPU: entropy parameters must match bit for bit
        return self._model

    def _source(self) -> str:
        o = self.options
        return f"weights {o.weights}" if o.weights else f"ckpt {o.ckpt}"

    # -- the codec ------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> Bitstream:
        return self.encode_with_report(image)[0]

    def encode_with_report(self, image: np.ndarray) -> tuple[Bitstream, dict[str, float]]:
        """The stream plus its rate report: file bits by segment and the model's likelihood estimate of the same
        symbols (:meth:`rate_report`)."""
        import torch

        from harness.codecs.dicm.bitstream import Container, rans_encode

        image = check_image(image)
        h, w = image.shape[:2]
        comp = self.compressor()
        x = to_model_input(pad_image(image, self.model_config.pad_multiple))
        with torch.no_grad():
            lat = comp.latents(x)
            z_sym = comp.z_symbols(lat["z"])
            z_idx = torch.arange(z_sym.shape[1]).view(1, -1, 1, 1).expand_as(z_sym)
            y_sym = comp.y_symbols(lat["y"], lat["mean"])
            y_idx = comp.gaussian_conditional.build_indexes(lat["scale"])
        z_string = rans_encode(z_sym.numpy(), z_idx.numpy(), comp.prior)
        y_string = rans_encode(y_sym.numpy(), y_idx.numpy(), comp.gaussian_conditional)
        box = Container(self.options.rate_index, h, w, z_string, y_string)
        stream = Bitstream(box.pack(), box.segments())
        y_bits, z_bits = comp.estimated_bits(lat["y_hat"], lat["z_hat"])
        return stream, _report(stream, (h, w), y_bits, z_bits)

    def rate_report(self, data: bytes, size: tuple[int, int]) -> dict[str, float]:
        """For a clean stream: bits of the file (total, header, z, y) and the likelihood estimate
        -sum log2 p of its decoded symbols (what the official code reports as bpp), bpp on original pixels."""
        import torch

        from harness.codecs.dicm.bitstream import read_header, segments_of

        state = self.parse(data, size)
        y_hat, z_hat = torch.from_numpy(state["y_hat"]), torch.from_numpy(state["z_hat"])
        y_bits, z_bits = self.compressor().estimated_bits(y_hat, z_hat)
        _, _, _, lz, ly = read_header(data)
        return _report(Bitstream(data, segments_of(lz, ly)), size, y_bits, z_bits)

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        """Untrusted: header -> z -> hyper_dec -> y (rANS). Needs only context_fn. The header's size must be
        ``size`` (the original's height, width) or nothing is decoded."""
        import torch

        from harness.codecs.dicm.bitstream import rans_decode, unpack

        start = time.perf_counter()
        box = unpack(data, self.options.rate_index)
        if (box.height, box.width) != tuple(size):
            raise InvalidOutput(
                f"header declares a {box.height} x {box.width} image; the original is {size[0]} x {size[1]}"
            )
        comp = self.compressor()
        (cy, hy, wy), (cz, hz, wz) = self.grids(*size)
        z_idx = np.broadcast_to(np.arange(cz).reshape(1, cz, 1, 1), (1, cz, hz, wz))
        z_sym = rans_decode(box.z_string, z_idx, comp.prior)
        with torch.no_grad():
            z_hat = torch.from_numpy(z_sym).float() + comp.medians()
            if not torch.isfinite(z_hat).all() or float(z_hat.abs().max()) > LATENT_BOUND:
                raise InvalidOutput(f"z_hat beyond the bound of {LATENT_BOUND:g} latent units")
            mean, scale = comp.hyper_decode(z_hat)
            y_idx = comp.gaussian_conditional.build_indexes(scale).numpy()
        if y_idx.shape != (1, cy, hy, wy):
            raise InvalidOutput(f"hyper-decoder gave a {y_idx.shape} grid, expected {(1, cy, hy, wy)}")
        y_sym = rans_decode(box.y_string, y_idx, comp.gaussian_conditional)
        y_hat = torch.from_numpy(y_sym).float() + mean
        return {
            "y_hat": y_hat.numpy().astype(np.float32),
            "z_hat": z_hat.numpy().astype(np.float32),
            "entropy_decode_s": time.perf_counter() - start,
        }

    def reconstruct(
        self,
        state: DecodedState,
        decode_seed: int,
        hook: LatentHook | None = None,
        side_info: dict[str, np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """Float pixel values in [0, 255] of the padded shape. ``side_info[SIDE_KIND]``: the side image (uint8
        H x W x 3, the original's size), or ``None`` for missing side information (w = 0)."""
        import torch

        from harness.codecs.dicm.diffusion import ddim_sample, init_noise

        timings: dict[str, float] = {}
        t_all = time.perf_counter()
        m = self.model()
        comp = m.context_fn
        dev = torch.device(self.options.device)
        z_hat = np.asarray(state["z_hat"], dtype=np.float32)
        y_hat = np.asarray(state["y_hat"], dtype=np.float32)
        _check_sane("z_hat", z_hat)
        _check_sane("y_hat", y_hat)
        if hook is not None:
            z_new = np.asarray(hook("z_hat", z_hat), dtype=np.float32)
            if not np.array_equal(z_new, z_hat):  # the symbols stay; the means they are offsets from move
                _check_sane("z_hat", z_new)
                with torch.no_grad():
                    shift = (
                        comp.hyper_decode(torch.from_numpy(z_new))[0] - comp.hyper_decode(torch.from_numpy(z_hat))[0]
                    )
                y_hat = y_hat + shift.numpy()
            y_hat = np.asarray(hook("y_hat", y_hat), dtype=np.float32)
            _check_sane("y_hat", y_hat)
        t0 = time.perf_counter()
        with torch.no_grad():
            ctx = comp.decode(torch.from_numpy(y_hat))
        ctx = _hooked(ctx, "ctx_pyramid", hook)
        side = self._side_image(side_info, state, y_hat.shape)
        with torch.no_grad():
            w = m.w_pyramid(side.to(dev)) if side is not None else [torch.zeros_like(c) for c in ctx]
        w = _hooked([t.cpu() for t in w], "w_pyramid", hook)
        context = [c.to(dev) for c in m.context(ctx, w)]
        timings["context_s"] = time.perf_counter() - t0
        noise = init_noise(tuple(context[0].shape), decode_seed, self.model_config.diffusion.init_gamma)
        if hook is not None:
            noise = torch.from_numpy(np.asarray(hook("init_noise", noise.numpy()), dtype=np.float32))
        with torch.no_grad():
            x0 = ddim_sample(
                lambda x, t: m.denoise(x, t, context),
                noise.to(dev),
                self.model_config.diffusion,
                self.options.steps,
                self.options.time_input,
                timings,
                alphas_cumprod=m.train_alphas_cumprod,
            )
        out = to_pixel_values(x0.float().cpu())
        timings["reconstruct_s"] = time.perf_counter() - t_all
        if "entropy_decode_s" in state:
            timings["entropy_decode_s"] = float(state["entropy_decode_s"])
        self.last_timings = timings
        return np.ascontiguousarray(out)

    def _side_image(self, side_info: dict[str, np.ndarray | None] | None, state: DecodedState, y_shape: tuple):
        """The side image as model input (padded like the primary), or None when it is missing. Its size must
        be the original's (from the latent grid: padded size; an unpadded original of the same padded size)."""
        if side_info is None or side_info.get(SIDE_KIND) is None:
            return None
        side = side_info[SIDE_KIND]
        if not isinstance(side, np.ndarray) or side.dtype != np.uint8 or side.ndim != 3 or side.shape[2] != 3:
            got = getattr(side, "shape", type(side).__name__), getattr(side, "dtype", "")
            raise ValueError(f"dicm: side image must be uint8 H x W x 3, got {got}")
        stride = self.model_config.compressor.latent_stride
        want = (y_shape[2] * stride, y_shape[3] * stride)
        padded = pad_image(side, self.model_config.pad_multiple)
        if padded.shape[:2] != want:
            raise ValueError(
                f"dicm: side image of {side.shape[1]}x{side.shape[0]} does not match the primary image "
                f"(padded {want[1]}x{want[0]})"
            )
        return to_model_input(padded)


def _report(stream: Bitstream, size: tuple[int, int], y_bits: float, z_bits: float) -> dict[str, float]:
    pixels = size[0] * size[1]
    seg = {name: 8 * sum(b - a for a, b in stream.segments[name]) for name in ("header", "z", "y")}
    est = y_bits + z_bits
    payload = seg["z"] + seg["y"]
    return {
        "bpp": 8 * len(stream.data) / pixels,
        "header_bpp": seg["header"] / pixels,
        "z_bpp": seg["z"] / pixels,
        "y_bpp": seg["y"] / pixels,
        "estimated_bpp": est / pixels,  # -sum log2 likelihood of the coded symbols (the official "bpp")
        "estimated_z_bpp": z_bits / pixels,
        "estimated_y_bpp": y_bits / pixels,
        "payload_over_estimate": payload / est if est > 0 else float("inf"),
    }


def _hooked(levels: list, name: str, hook: LatentHook | None) -> list:
    """Pass each pyramid level (full resolution first) through ``hook(name, array)``; levels stay float32."""
    import torch

    if hook is None:
        return levels
    out = []
    for t in levels:
        arr = np.asarray(hook(name, t.numpy()), dtype=np.float32)
        _check_sane(name, arr)
        out.append(torch.from_numpy(arr))
    return out


def _check_sane(name: str, arr: np.ndarray) -> None:
    """Refuse non-finite latents or latents beyond ``LATENT_BOUND`` before any network runs (``InvalidOutput``)."""
    if not np.all(np.isfinite(arr)):
        raise InvalidOutput(f"non-finite values (NaN/inf) in {name}")
    if arr.size and (peak := float(np.max(np.abs(arr)))) > LATENT_BOUND:
        raise InvalidOutput(f"{name} reaches |{peak:.3g}|, beyond the bound of {LATENT_BOUND:g} latent units")
