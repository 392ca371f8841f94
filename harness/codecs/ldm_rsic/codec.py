"""The LDM-RSIC codec plugins: ``ldm-rsic`` (ELIC bits, decoder-side MEN enhancement guided by a generated
distortion prior; ``enhance = false`` is ELIC alone, the same bits) and ``j2k+men`` (JPEG2000*, the paper's
post-filter baseline: a JPEG2000 decode enhanced by a MEN trained on JPEG2000 decodes, the same bits as JPEG2000).

::

    encode:       image -> zero-pad bottom/right to x64 -> ELIC compress (CPU, fp32) -> container (bitstream.py)
    parse:        bytes -> header (checked against the original's size) -> z (EntropyBottleneck)
                  -> h_s -> 5 slices x (anchors, non-anchors) rANS -> {y_hat, z_hat, symbols}   [isolated worker]
    reconstruct:  hook(z_hat) [a changed z_hat re-derives y_hat's means from the symbols] -> hook(y_hat)
                  -> g_s, clamp, crop, x255 + 0.5, floor = x_tilde (the official save_image PNG) -> hook(x_tilde)
                  -> [enhance] tiles of the MEN's native size -> condition -> hook(cond_tokens)
                  -> 4-step sampler from seeded noise -> hook(prior) -> MEN -> clamp, x255 -> float pixels

Hooks (instance-level: only the ones a config calls): ``z_hat``, ``y_hat`` (latent units), ``x_tilde`` (pixel
values 0..255, 1 x 3 x H x W, rounded and clipped after the hook), ``cond_tokens`` (D, tiles x 16 x T), ``prior``
(the generated F_hat, tiles x 16 x T). ``prior = "none"`` skips the DFAM (the paper's "w/o DFAM" ablation: with
weights trained with the prior it measures what the prior contributes, not a separately trained model).

Geometry: the MEN runs on squares of ``native_size`` only (256 official, 64 tiny). ``geometry = "faithful"``
(default) refuses any other size at encode time, in one line naming the ``center_crop(size=N)`` preprocessing and
``geometry = "tiled"``; ``tiled`` (a documented deviation, "tile256" for the official model) cuts the decoded image
into native-size tiles (edge tiles reflect-padded), enhances each with its own prior, and stitches them.

The compression network always runs on the CPU in float32, in ``encode`` and in ``parse``, so that entropy
parameters, hence rANS indexes, agree bit for bit (brief §6.10); the MEN and the sampler run on ``device``.

Official or ours. With ``config = "official"``, ``geometry = "faithful"`` and 4 steps, every computation is the
official code's (mlkk518/LDM-RSIC: ``ELIC/Network.py`` with compressai 1.1.5's tables, ``Inference.py``'s
bottom/right padding, ``save_image`` between the stages, ``DiffIR/archs/S2_arch.py``, ``ldm/ddpm.py``, BasicSR's
``tensor2img``): ``tests/test_parity_ldm_rsic.py`` checks it stage by stage against the official outputs of the
parity kit (``../shared/parity/ldm_rsic``), strings byte for byte. These are OURS, not the official code's:

- the container (header with magic, λ index, sizes and string lengths; the official code writes no file; its bpp
  counts the strings only, ours the whole file);
- F_T drawn from a generator seeded by the decode seed (the official code uses torch's global RNG);
- ``geometry = "tiled"``: the official S2 raises on any size but 256 x 256 (the DFAM's prior map is fixed); tiling
  into native-size tiles, each with its own prior, is our extension;
- ``steps < 4``: a DDIM (eta = 0) subset of the timesteps (the official sampler always runs all 4);
- ``prior = "none"``: the official MEN skips the DFAM when given no prior (``BasicLayer``), but the official
  pipeline always generates one; with weights trained with the prior this is an ablation, not the paper's
  separately trained "w/o DFAM" model;
- ``enhance = false`` returns ELIC's decode as the official intermediate PNG (the same pixels);
- strict loading (the official test loads S2 with ``strict_load_g: False``), zero-padded rANS strings and the
  latent bound (robustness to corrupted streams; a clean decode is unchanged), the compression network pinned to
  the CPU in float32;
- the ``tiny`` and ``test`` configs (widths, K = 1, ``global_residual``): the project's own models.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.codecs.base import (
    Bitstream,
    CodecError,
    DecodedState,
    InvalidOutput,
    LatentHook,
    LearnedCodec,
    check_image,
    create_codec,
)
from harness.hashing import key_of

PATH_OPTIONS = ("weights", "elic_ckpt", "ldm_ckpt", "men_weights")
#: |y_hat| or |z_hat| above this (latent units) is refused before synthesis: trained ELIC latents stay within a few
#: hundred, corrupted rANS strings reach ±1e9 through compressai's escape path.
LATENT_BOUND = 1.0e4
GEOMETRIES = ("faithful", "tiled")


def pad_to(n: int, multiple: int = 64) -> int:
    return int(math.ceil(n / multiple) * multiple)


def _check_sane(name: str, arr: np.ndarray, bound: float = LATENT_BOUND) -> None:
    if not np.all(np.isfinite(arr)):
        raise InvalidOutput(f"non-finite values (NaN/inf) in {name}")
    if arr.size and (peak := float(np.max(np.abs(arr)))) > bound:
        raise InvalidOutput(f"{name} reaches |{peak:.3g}|, beyond the bound of {bound:g}")


class Enhancer:
    """The decoder-side half shared by ``ldm-rsic`` and ``j2k+men``: x_tilde (uint8-valued) -> enhanced pixels."""

    def __init__(self, s2, native: int, geometry: str, prior: str, steps: int, device: str, precision: str) -> None:
        self.s2, self.native, self.geometry = s2, native, geometry
        self.prior, self.steps, self.device, self.precision = prior, steps, device, precision

    def tiles(self, x: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """1 x 3 x H x W -> (n x 3 x S x S in raster order, (rows, cols)); edge tiles reflect-padded."""
        s = self.native
        _, _, h, w = x.shape
        rows, cols = -(-h // s), -(-w // s)
        if (rows * s, cols * s) != (h, w):
            x = np.pad(
                x, ((0, 0), (0, 0), (0, rows * s - h), (0, cols * s - w)), mode="reflect" if min(h, w) > 1 else "edge"
            )
        t = x.reshape(3, rows, s, cols, s).transpose(1, 3, 0, 2, 4).reshape(rows * cols, 3, s, s)
        return np.ascontiguousarray(t), (rows, cols)

    def start_noise(self, n_tiles: int, decode_seed: int):
        """The sampler's start F_T (n_tiles x 16 x T, standard normal): the decoder's only random draw, on the CPU
        from a generator seeded by ``decode_seed`` (the official code draws it from torch's global RNG)."""
        import torch

        gen = torch.Generator().manual_seed(int(decode_seed))
        return torch.randn(self.s2.prior_shape(n_tiles), generator=gen)

    def __call__(
        self, x_tilde: np.ndarray, decode_seed: int, hook: LatentHook | None, timings: dict[str, float]
    ) -> np.ndarray:
        """x_tilde: 1 x 3 x H x W pixel values (integers 0..255) -> H x W x 3 float pixel values in [0, 255]."""
        import torch

        _, _, h, w = x_tilde.shape
        tiles, (rows, cols) = self.tiles(x_tilde.astype(np.float32) / 255.0)
        dev = torch.device(self.device)
        dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None and dev.type == "cuda")
        with torch.no_grad():
            xt = torch.from_numpy(tiles).to(dev)
            prior = None
            if self.prior == "generated":  # "none": no condition, no sampler, no DFAM
                t0 = time.perf_counter()
                with autocast:
                    d = self.s2.condition(xt).float()
                if hook is not None:
                    d = torch.from_numpy(np.asarray(hook("cond_tokens", d.cpu().numpy()), np.float32)).to(dev)
                _check_sane("cond_tokens", d.cpu().numpy())
                timings["condition_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                start = self.start_noise(len(tiles), decode_seed).to(dev)
                with autocast:
                    prior = self.s2.diffusion.sample(d, start, self.steps).float()
                if hook is not None:
                    prior = torch.from_numpy(np.asarray(hook("prior", prior.cpu().numpy()), np.float32)).to(dev)
                _check_sane("prior", prior.cpu().numpy())
                timings["sampler_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            with autocast:
                out = self.s2.G(xt, prior).float()
            timings["men_s"] = time.perf_counter() - t0
        out = (out.clamp(0, 1) * 255).cpu().numpy()
        s = self.native
        img = out.reshape(rows, cols, 3, s, s).transpose(0, 3, 1, 4, 2).reshape(rows * s, cols * s, 3)
        return np.ascontiguousarray(img[:h, :w])


def _size_refusal(name: str, config: str, native: int, h: int, w: int) -> CodecError:
    return CodecError(
        f"{name}: the MEN of config {config!r} runs on {native}x{native} images only (the DFAM's prior map is "
        f'fixed), got {h}x{w}: use preprocessing = "center_crop(size={native})" or the codec option '
        f'geometry = "tiled" (tile{native}: {native}-px tiles, a documented deviation)'
    )


class LDMRSIC(LearnedCodec):
    """LDM-RSIC: ELIC bitstream, MEN enhancement with a generated distortion prior (decoder side only)."""

    name = "ldm-rsic"
    version = "1"
    path_options = PATH_OPTIONS
    libraries = ("torch", "compressai")
    hooks: ClassVar[tuple[str, ...]] = ("z_hat", "y_hat", "x_tilde", "cond_tokens", "prior")
    segments = ("z", "y", *(f"y.s{i}.{k}" for i in range(5) for k in ("a", "n")))

    @dataclass(frozen=True)
    class Options:
        config: str = "official"  # official | tiny | test (harness/codecs/ldm_rsic/config.py)
        lam: float = 0.0032  # one of config.LAMBDAS; written in the header, checked on parse
        weights: str | None = None  # merged .safetensors (elic.* + s2.*), e.g. LDM-RSIC-tiny
        elic_ckpt: str | None = None  # official ELIC checkpoint_best_loss.pth.tar of this λ
        ldm_ckpt: str | None = None  # official S2 net_g_latest.pth of this λ (params_ema)
        enhance: bool = True  # False: ELIC alone (the paper's baseline row; the same bits)
        prior: str = "generated"  # generated | none (the "w/o DFAM" ablation)
        steps: int = 4  # sampler steps (4 = the official chain; fewer: DDIM subset, a deviation)
        geometry: str = "faithful"  # faithful (native size only) | tiled (tile<native>, a deviation)
        device: str = "cpu"  # the MEN and the sampler; compression always on the CPU
        precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast, CUDA only)
        allow_random_weights: bool = False
        random_seed: int = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from harness.codecs.ldm_rsic.config import LAMBDAS, PRESETS

        o = self.options
        if o.config not in PRESETS:
            raise CodecError(f"ldm-rsic: unknown config {o.config!r}; known: {', '.join(PRESETS)}")
        if o.lam not in LAMBDAS:
            raise CodecError(f"ldm-rsic: lam must be one of the official {', '.join(map(str, LAMBDAS))}, got {o.lam}")
        if o.prior not in ("generated", "none"):
            raise CodecError(f"ldm-rsic: prior must be generated or none, got {o.prior!r}")
        if o.geometry not in GEOMETRIES:
            raise CodecError(f"ldm-rsic: geometry must be faithful or tiled, got {o.geometry!r}")
        if o.precision not in ("fp32", "fp16", "bf16"):
            raise CodecError(f"ldm-rsic: precision must be fp32, fp16 or bf16, got {o.precision!r}")
        self.model_config = PRESETS[o.config]
        if not 1 <= o.steps <= self.model_config.men.timesteps:
            raise CodecError(f"ldm-rsic: steps must be in 1..{self.model_config.men.timesteps}, got {o.steps}")
        self.lam_index = LAMBDAS.index(o.lam)
        self._check_weight_options()
        if self.random_weights:
            self.clean_psnr_floor_db = -math.inf  # random weights decode to noise: plumbing runs only
        if not o.enhance or o.prior == "none":
            self.hooks = ("z_hat", "y_hat", "x_tilde")
        self._elic = None
        self._enhancer: Enhancer | None = None
        self.last_timings: dict[str, float] = {}
        self.load_notes: list[str] = []

    def _check_weight_options(self) -> None:
        from harness.codecs.ldm_rsic.checkpoint import missing_weights_message

        o = self.options
        official = o.elic_ckpt is not None or o.ldm_ckpt is not None
        if o.weights is not None and official:
            raise CodecError("ldm-rsic: give either weights (merged .safetensors) or elic_ckpt/ldm_ckpt, not both")
        if o.weights is None and not official and not o.allow_random_weights:
            raise CodecError(missing_weights_message("no weights given", o.lam))
        if official and o.elic_ckpt is None:
            raise CodecError(missing_weights_message("elic_ckpt is needed (it makes the bits)", o.lam))
        if official and o.enhance and o.ldm_ckpt is None:
            raise CodecError(
                missing_weights_message("ldm_ckpt is needed to enhance (or set enhance = false: ELIC alone)", o.lam)
            )
        from harness.codecs.checkpoints import inspect_all

        inspect_all(self.weight_files(o))  # one line each: missing, empty, a folder, truncated, not weights

    @property
    def random_weights(self) -> bool:
        o = self.options
        return o.weights is None and o.elic_ckpt is None and o.ldm_ckpt is None

    @classmethod
    def weight_files(cls, options: Options) -> list:
        """The weight files ``options`` name, described for harness.codecs.checkpoints (checked before a run)."""
        from harness.codecs.ldm_rsic.checkpoint import weight_files

        return weight_files(options)

    # -- identity -------------------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        from harness.codecs.ldm_rsic.checkpoint import file_sha256

        o = self.options
        if self.random_weights:
            import torch

            return key_of({"random_weights": o.config, "seed": o.random_seed, "torch": torch.__version__})
        files = [o.weights] if o.weights else [o.elic_ckpt] + ([o.ldm_ckpt] if o.enhance else [])
        return key_of({"files": [file_sha256(p) for p in files]})

    @property
    def native_size(self) -> int:
        return self.model_config.men.native_size

    def max_state_bytes(self, size: tuple[int, int]) -> int:
        """y_hat (float32) + symbols (int32) + z_hat (float32) of the padded image, plus 1 KiB."""
        e = self.model_config.elic
        hp, wp = pad_to(size[0]), pad_to(size[1])
        return 8 * e.M * (hp // 16) * (wp // 16) + 4 * e.N * (hp // 64) * (wp // 64) + 1024

    def warm(self) -> None:
        self.elic()

    # -- weights --------------------------------------------------------------------------------------------
    def elic(self):
        """The ELIC module on the CPU, tables rebuilt (what a decode worker loads: no MEN)."""
        if self._elic is None:
            import torch

            from harness.codecs.ldm_rsic import checkpoint as ck
            from harness.codecs.ldm_rsic.elic import ELIC

            o = self.options
            if self.random_weights:
                torch.manual_seed(o.random_seed)
                elic = ELIC(self.model_config.elic)
            else:
                with torch.device("meta"):
                    elic = ELIC(self.model_config.elic)
                elic = elic.to_empty(device="cpu")
                if o.weights:
                    state = ck.split_merged(o.weights)["elic"]
                    state, _ = ck.rename_entropy_bottleneck(state)
                    ck.check_state(state, elic, f"weights {o.weights}", "ELIC", o.config, elic.CDF_BUFFERS)
                else:
                    state, note = ck.elic_state(o.elic_ckpt, elic, o.config)
                    self.load_notes.append(note)
                elic.resize_cdf_buffers(state)
                elic.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
                elic = _restore_masks(
                    elic, o.config, f"weights {o.weights}" if o.weights else f"elic_ckpt {o.elic_ckpt}"
                )
            elic.update(force=True)
            self._elic = elic.eval()
        return self._elic

    def s2(self):
        """The S2 network (MEN + condition + denoiser) on ``device``."""
        return self.enhancer().s2

    def enhancer(self) -> Enhancer:
        if self._enhancer is None:
            o = self.options
            s2 = load_s2(self.model_config, o.weights, o.ldm_ckpt, o.random_seed, o.config)
            self._enhancer = Enhancer(s2, self.native_size, o.geometry, o.prior, o.steps, o.device, o.precision)
        return self._enhancer

    # -- the codec ------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> Bitstream:
        import torch

        from harness.codecs.ldm_rsic.bitstream import Container

        image = check_image(image)
        h, w = image.shape[:2]
        o = self.options
        if o.enhance and o.geometry == "faithful" and (h, w) != (self.native_size, self.native_size):
            raise _size_refusal(self.name, o.config, self.native_size, h, w)
        if h > 65535 or w > 65535:
            raise CodecError(f"ldm-rsic: {h}x{w} exceeds the container's 65535-pixel sides")
        x = np.zeros((pad_to(h), pad_to(w), 3), np.float32)
        x[:h, :w] = image.astype(np.float32) / 255.0
        strings, _, _ = self.elic().compress(torch.from_numpy(x).permute(2, 0, 1)[None])
        box = Container(self.lam_index, h, w, pad_to(h) // 64, pad_to(w) // 64, tuple(strings))
        return Bitstream(box.pack(), box.segments())

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        """Untrusted: header (checked against ``size`` before anything is decoded) -> z -> 10 y strings."""
        import torch

        from harness.codecs.ldm_rsic.bitstream import BitstreamError, unpack

        start = time.perf_counter()
        box = unpack(data)
        if (box.height, box.width) != tuple(size):
            raise InvalidOutput(
                f"header declares a {box.height} x {box.width} image; the original is {size[0]} x {size[1]}"
            )
        if box.lam_index != self.lam_index:
            raise BitstreamError(
                f"header declares λ index {box.lam_index}; this decoder is configured for {self.lam_index}"
            )
        elic = self.elic()
        with torch.no_grad():
            z_hat = elic.decode_z(box.z_string, (box.z_height, box.z_width))
            y_hat, sym = elic.decode_y(box.y_strings, z_hat)
        return {
            "y_hat": y_hat.numpy().astype(np.float32),
            "z_hat": z_hat.numpy().astype(np.float32),
            "symbols": sym.numpy().astype(np.int32),
            "height": int(box.height),  # the original's size (checked above): the enhancer sees the cropped decode
            "width": int(box.width),
            "entropy_decode_s": time.perf_counter() - start,
        }

    def x_tilde(self, state: DecodedState, size: tuple[int, int] | None, hook: LatentHook | None) -> np.ndarray:
        """ELIC's decode as the enhancer sees it: 1 x 3 x H x W pixel values 0..255 (after the z_hat, y_hat and
        x_tilde hooks). ``size`` (H, W) crops the padding; None: the state's padded size."""
        import torch

        elic = self.elic()
        z_hat = np.asarray(state["z_hat"], np.float32)
        y_hat = np.asarray(state["y_hat"], np.float32)
        if hook is not None:
            z_new = np.asarray(hook("z_hat", z_hat), np.float32)
            if not np.array_equal(z_new, z_hat):
                _check_sane("z_hat", z_new)
                with torch.no_grad():
                    y_hat = elic.dequantize_symbols(
                        torch.from_numpy(np.asarray(state["symbols"])), torch.from_numpy(z_new)
                    ).numpy()
            y_hat = np.asarray(hook("y_hat", y_hat), np.float32)
        _check_sane("y_hat", y_hat)
        with torch.no_grad():
            x = elic.synthesis(torch.from_numpy(y_hat)).numpy()
        h, w = size if size is not None else x.shape[-2:]
        x = x_tilde_pixels(x[:, :, :h, :w])
        if hook is not None:
            x = np.asarray(hook("x_tilde", x.astype(np.float32)), np.float32)
            if not np.all(np.isfinite(x)):
                raise InvalidOutput("non-finite values (NaN/inf) in x_tilde")
            x = np.round(np.clip(x, 0, 255))  # the stored PNG: clipped and rounded after the corruption
        return x

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        t_all = time.perf_counter()
        timings: dict[str, float] = {}
        size = (int(state["height"]), int(state["width"])) if "height" in state else None
        x = self.x_tilde(state, size, hook)
        timings["elic_synthesis_s"] = time.perf_counter() - t_all
        if not self.options.enhance:
            out = np.ascontiguousarray(x[0].transpose(1, 2, 0))
        else:
            out = self.enhancer()(x, decode_seed, hook, timings)
        timings["reconstruct_s"] = time.perf_counter() - t_all
        if "entropy_decode_s" in state:
            timings["entropy_decode_s"] = float(state["entropy_decode_s"])
        self.last_timings = timings
        return out


def x_tilde_pixels(x_hat: np.ndarray) -> np.ndarray:
    """ELIC's clamped output in [0, 1] -> the pixel values of the PNG the official pipeline stores between its two
    stages (``torchvision.utils.save_image``: x * 255 + 0.5, clamped to [0, 255], truncated to uint8; float32
    arithmetic), as float32. Not round-half-to-even: a value at exactly k + 0.5 goes up."""
    x = np.asarray(x_hat, np.float32) * np.float32(255.0) + np.float32(0.5)
    return np.floor(np.clip(x, 0.0, 255.0)).astype(np.float32)


def _restore_masks(elic, config: str = "official", source: str = "weights"):
    """A loaded ``context_prediction.{i}.mask`` must be the checkerboard itself: recompute it and refuse a file
    whose masks differ (a file cannot change which positions are context)."""
    import torch

    from harness.codecs.ldm_rsic.checkpoint import mask_error

    for i, layer in enumerate(elic.context_prediction):
        _, _, kh, kw = layer.mask.shape
        want = torch.ones_like(layer.mask)
        want[:, :, 0::2, 0::2] = 0
        want[:, :, 1::2, 1::2] = 0
        want[:, :, kh // 2, kw // 2] = 0
        if not torch.equal(layer.mask, want):
            raise mask_error(i, config, source)
    return elic


def load_s2(cfg, weights: str | None, ldm_ckpt: str | None, seed: int, config: str, role: str = "weights"):
    """The S2 network of ``cfg`` with weights from our safetensors (``s2.*``), an official S2 file, or random
    (``seed``) when neither is given; eval mode, float32, CPU (callers move it)."""
    import torch

    from harness.codecs.ldm_rsic import checkpoint as ck
    from harness.codecs.ldm_rsic.men import S2

    if weights is None and ldm_ckpt is None:
        torch.manual_seed(seed + 1)
        return S2(cfg.men).eval()
    with torch.device("meta"):
        s2 = S2(cfg.men)
    s2 = s2.to_empty(device="cpu")
    if weights is not None:
        state = ck.checked_s2(ck.split_merged(weights, role)["s2"], s2, f"{role} {weights}", config)
    else:
        state = ck.s2_state(ldm_ckpt, s2, config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing = s2.load_state_dict(state, strict=False)
    # the only keys a checked file may lack are the diffusion.* repeats (shared modules: loaded with their
    # originals) and the schedule buffers are recomputed from the config, not read
    left = [k for k in missing.missing_keys if not k.startswith(ck.S2_DUPLICATES)]
    if left or missing.unexpected_keys:
        source = f"{role} {weights}" if weights is not None else f"ldm_ckpt {ldm_ckpt}"
        raise ck.fail(
            ck.describe(source.split(" ", 1)[0], source.split(" ", 1)[1], config),
            f"does not load into the S2 network: missing {left[:3]}, unexpected {missing.unexpected_keys[:3]}",
        )
    return s2.eval()


class J2KMEN(LearnedCodec):
    """JPEG2000* (``j2k+men``): a JPEG2000 configuration (``j2k``: the registry name of any JPEG2000 codec or
    preset, plus ``j2k_options``) whose decode is enhanced by a MEN trained on JPEG2000 decodes. Encoding, rate
    matching and parsing are the JPEG2000 configuration's own, so the bits are identical to it."""

    name = "j2k+men"
    version = "1"
    path_options = PATH_OPTIONS
    hooks: ClassVar[tuple[str, ...]] = ("x_tilde", "cond_tokens", "prior")
    matches_rate: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Options:
        j2k: str = "jpeg2000"  # registry name of the JPEG2000 configuration (jpeg2000, j2k-plain, j2k-resilient ...)
        j2k_options: dict[str, Any] = field(default_factory=dict)  # overrides of that configuration's options
        config: str = "official"  # the MEN's architecture (harness/codecs/ldm_rsic/config.py)
        men_weights: str | None = None  # .safetensors with s2.* (e.g. weights/ldm-rsic-tiny/j2k-men-tiny.safetensors)
        prior: str = "generated"
        steps: int = 4
        geometry: str = "faithful"
        device: str = "cpu"
        precision: str = "fp32"
        allow_random_weights: bool = False
        random_seed: int = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        from harness.codecs.jpeg2000 import JPEG2000
        from harness.codecs.ldm_rsic.config import PRESETS

        o = self.options
        if o.config not in PRESETS:
            raise CodecError(f"j2k+men: unknown config {o.config!r}; known: {', '.join(PRESETS)}")
        if o.prior not in ("generated", "none") or o.geometry not in GEOMETRIES:
            raise CodecError(
                f"j2k+men: prior is generated|none and geometry faithful|tiled, got {o.prior!r}, {o.geometry!r}"
            )
        self.model_config = PRESETS[o.config]
        if not 1 <= o.steps <= self.model_config.men.timesteps:
            raise CodecError(f"j2k+men: steps must be in 1..{self.model_config.men.timesteps}, got {o.steps}")
        if o.men_weights is None and not o.allow_random_weights:
            raise CodecError(
                "j2k+men: no MEN weights (men_weights = a .safetensors with s2.*, e.g. "
                "weights/ldm-rsic-tiny/j2k-men-tiny.safetensors, codec j2k+men-tiny); the paper's JPEG2000* MEN was "
                "not "
                "released. Random weights only with allow_random_weights = true (plumbing tests)"
            )
        from harness.codecs.checkpoints import inspect_all

        inspect_all(self.weight_files(o))  # one line: missing, empty, a folder, truncated, not weights
        self.inner = create_codec(o.j2k, **o.j2k_options)
        if not isinstance(self.inner, JPEG2000):
            raise CodecError(f"j2k+men: j2k must name a JPEG2000 configuration, {o.j2k!r} builds {self.inner.name}")
        if o.men_weights is None:
            self.clean_psnr_floor_db = -math.inf
        if o.prior == "none":
            self.hooks = ("x_tilde",)
        self._enhancer: Enhancer | None = None
        self.last_timings: dict[str, float] = {}

    @classmethod
    def weight_files(cls, options: Options) -> list:
        """The MEN file ``options`` name, described for harness.codecs.checkpoints (checked before a run)."""
        from harness.codecs.ldm_rsic.checkpoint import weight_files

        return weight_files(options, men_only=True)

    def config(self) -> dict[str, Any]:
        out = super().config()
        out["j2k_resolved"] = self.inner.config()  # the bits' configuration (a preset's options included)
        return out

    def weights_hash(self) -> str | None:
        from harness.codecs.ldm_rsic.checkpoint import file_sha256

        o = self.options
        if o.men_weights is None:
            return key_of({"random_weights": o.config, "seed": o.random_seed})
        return key_of({"files": [file_sha256(o.men_weights)]})

    def library_versions(self) -> dict[str, str]:
        return {**self.inner.library_versions(), **super().library_versions()}

    @property
    def min_side(self) -> int:
        return self.inner.min_side

    @property
    def native_size(self) -> int:
        return self.model_config.men.native_size

    def enhancer(self) -> Enhancer:
        if self._enhancer is None:
            o = self.options
            s2 = load_s2(self.model_config, o.men_weights, None, o.random_seed, o.config, role="men_weights")
            self._enhancer = Enhancer(s2, self.native_size, o.geometry, o.prior, o.steps, o.device, o.precision)
        return self._enhancer

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = check_image(image)
        h, w = image.shape[:2]
        if self.options.geometry == "faithful" and (h, w) != (self.native_size, self.native_size):
            raise _size_refusal(self.name, self.options.config, self.native_size, h, w)
        return image

    def encode(self, image: np.ndarray) -> Bitstream:
        return self.inner.encode(self._check(image))

    def encode_at_rate(self, image: np.ndarray, target_bpp: float) -> Bitstream:
        return self.inner.encode_at_rate(self._check(image), target_bpp)

    def warm(self) -> None:
        self.inner.warm()

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        return self.inner.parse(data, size)

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        image = np.asarray(self.inner.reconstruct(state, decode_seed, None))
        x = image.transpose(2, 0, 1)[None].astype(np.float32)
        if hook is not None:
            x = np.asarray(hook("x_tilde", x), np.float32)
            if not np.all(np.isfinite(x)):
                raise InvalidOutput("non-finite values (NaN/inf) in x_tilde")
            x = np.round(np.clip(x, 0, 255))
        timings: dict[str, float] = {}
        out = self.enhancer()(x, decode_seed, hook, timings)
        timings["reconstruct_s"] = time.perf_counter() - t0
        self.last_timings = timings
        return out
