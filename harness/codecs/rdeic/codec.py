"""The RDEIC codec plugin (``CODECS`` name ``rdeic``).

::

    encode:       image -> pad (zeros, bottom/right, to x64) -> VAE trunk x0.18215 -> compress -> container
    parse:        bytes -> header -> z indices -> hyper_dec -> checkerboard rANS -> {"y_hat"}   [worker: compression
                  module only, no UNet/VAE]
    reconstruct:  hook("y_hat") -> g_s -> hook("c_latent"), hook("guide_hint") -> relay sampler -> VAE decode
                  -> (x+1)/2, clamp, x255 -> truncate (official) or round -> uint8, padded shape

Latents that are non-finite or beyond ``LATENT_BOUND`` (|value| > 1e4, in latent units) are refused before any
diffusion (``InvalidOutput``, recorded as ``invalid_output``). A header whose hyper-latent grid differs from the
one the original image's padded size gives is refused by ``parse`` before anything is decoded, and so is a
structurally impossible file (an empty y or z string: ``BitstreamError``, recorded as ``exception``).
``reconstruct`` returns float pixel values (the official (x+1)/2, clamp, x255); the base class checks them and
casts with ``rounding`` (truncate, as the official code does, or round).
The compression module always runs on the CPU (encoder side and decoder side), because the rANS tables depend
on entropy parameters that must be bit-identical on both sides; the VAE and the diffusion run on ``device``.
Weights: ``sd_ckpt`` + ``rdeic_ckpt`` (official files), or ``weights`` (our merged .safetensors), or random
weights with ``allow_random_weights = true`` (plumbing only: never report their numbers).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
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
    to_output,
)
from harness.codecs.rdeic.bitstream import Z_CODINGS
from harness.hashing import key_of

#: Options that locate files: not part of the codec identity (the weights hash is).
PATH_OPTIONS = ("sd_ckpt", "rdeic_ckpt", "weights", "text_cache", "adapter")
#: |y_hat|, |c_latent|, |guide_hint| above this (latent units) are "absurd": trained RDEIC latents stay within a
#: few tens, while corrupted rANS strings reach ±1e9 through compressai's escape path. Refused before diffusion.
LATENT_BOUND = 1.0e4


def pad_to(n: int, multiple: int = 64) -> int:
    return int(math.ceil(n / multiple) * multiple)


def padded_bpp(n_bytes: int, height: int, width: int) -> float:
    """bpp over the padded pixels (the official/published convention); the harness reports original pixels."""
    return 8.0 * n_bytes / (pad_to(height) * pad_to(width))


class RDEIC(LearnedCodec):
    """RDEIC (official architecture and bitstream) with relay residual diffusion decoding."""

    name = "rdeic"
    version = "1"
    path_options = PATH_OPTIONS
    libraries = ("torch", "compressai", "torchac")
    hooks = ("y_hat", "c_latent", "guide_hint")
    segments = ("y", "z")

    @dataclass(frozen=True)
    class Options:
        config: str = "official"  # official | tiny | test (harness/codecs/rdeic/config.py)
        sd_ckpt: str | None = None  # v2-1_512-ema-pruned.ckpt
        rdeic_ckpt: str | None = None  # e.g. rdeic_2_step2.ckpt
        weights: str | None = None  # merged .safetensors (alternative to the two checkpoints)
        text_cache: str | None = None  # empty-prompt embedding cache (default: beside the weights)
        adapter: str | None = None  # fine-tuned adapter .safetensors + .json sidecar (harness/codecs/rdeic/adapter.py)
        steps: int = 2  # S spaced denoising steps
        guidance: float = 1.0  # λs; 1.0 runs only the controlled pass
        z_coding: str = "torchac"  # torchac (official) | rans_uniform | fixed_length
        device: str = "cpu"
        precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast, CUDA only)
        rounding: str = "truncate"  # truncate (official) | round
        attention: str = "auto"  # math (ldm's fp32 softmax) | sdpa (PyTorch SDPA) | auto: sdpa on CUDA, else math
        allow_random_weights: bool = False
        random_seed: int = 0  # seed of the random weights when allowed

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        from harness.codecs.rdeic.config import PRESETS

        if o.config not in PRESETS:
            raise CodecError(f"rdeic: unknown config {o.config!r}; known: {', '.join(PRESETS)}")
        if o.z_coding not in Z_CODINGS:
            raise CodecError(f"rdeic: z_coding must be one of {', '.join(Z_CODINGS)}, got {o.z_coding!r}")
        if o.steps < 1:
            raise CodecError(f"rdeic: steps must be >= 1, got {o.steps}")
        if o.precision not in ("fp32", "fp16", "bf16"):
            raise CodecError(f"rdeic: precision must be fp32, fp16 or bf16, got {o.precision!r}")
        if o.attention not in ("auto", "math", "sdpa"):
            raise CodecError(f"rdeic: attention must be auto, math or sdpa, got {o.attention!r}")
        if o.rounding not in ("truncate", "round"):
            raise CodecError(f"rdeic: rounding must be truncate or round, got {o.rounding!r}")
        has_official = o.sd_ckpt is not None or o.rdeic_ckpt is not None
        if o.weights is None and not has_official and not o.allow_random_weights:
            from harness.codecs.rdeic.checkpoint import missing_weights_message

            raise CodecError(missing_weights_message("no weights given"))
        if has_official and (o.sd_ckpt is None or o.rdeic_ckpt is None):
            from harness.codecs.rdeic.checkpoint import missing_weights_message

            raise CodecError(missing_weights_message("both sd_ckpt and rdeic_ckpt are needed"))
        from harness.codecs.checkpoints import inspect_all

        inspect_all(self.weight_files(o))  # one line each: missing, empty, a folder, truncated, not weights
        if self.random_weights:
            # Random weights decode to noise: the clean-quality control cannot apply (plumbing runs only).
            self.clean_psnr_floor_db = -math.inf
        self.output_rounding = o.rounding
        self.model_config = PRESETS[o.config]
        self.adapter_record: dict[str, Any] | None = None
        if o.adapter is not None:
            from harness.codecs.rdeic.adapter import AdapterError, check_base, read_sidecar

            try:
                self.adapter_record = read_sidecar(o.adapter)
                check_base(self.adapter_record, self.base_fingerprint(), self.base_description())
            except AdapterError as exc:
                raise CodecError(f"rdeic: {exc}") from None
        self._compression = None
        self._model = None
        self._context = None
        self.last_timings: dict[str, float] = {}  # per-stage seconds of the latest reconstruct
        self.load_notes: list[str] = []

    @property
    def random_weights(self) -> bool:
        o = self.options
        return o.weights is None and o.sd_ckpt is None and o.rdeic_ckpt is None

    @classmethod
    def weight_files(cls, options: Options) -> list:
        """The weight files ``options`` name, described for harness.codecs.checkpoints (checked before a run)."""
        from harness.codecs.rdeic.checkpoint import weight_files

        return weight_files(options, "rdeic")

    # -- identity -------------------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        from harness.codecs.rdeic.checkpoint import file_sha256

        o = self.options
        if self.random_weights:
            import torch

            base = key_of({"random_weights": o.config, "seed": o.random_seed, "torch": torch.__version__})
        else:
            files = [o.weights] if o.weights else [o.sd_ckpt, o.rdeic_ckpt]
            base = key_of({"files": [file_sha256(p) for p in files]})
        if o.adapter is None:
            return base
        return key_of({"base": base, "adapter": file_sha256(o.adapter)})

    def base_fingerprint(self) -> str:
        """What an adapter is tied to: the architecture config and the base weight files (not the adapter,
        not decode-time options such as steps or precision)."""
        from harness.codecs.rdeic.checkpoint import file_sha256

        o = self.options
        if self.random_weights:
            files = [f"random:{o.random_seed}"]
        else:
            files = [file_sha256(p) for p in ([o.weights] if o.weights else [o.sd_ckpt, o.rdeic_ckpt])]
        return key_of({"codec": self.name, "config": o.config, "files": files})

    def base_description(self) -> str:
        o = self.options
        where = Path(o.weights).name if o.weights else (f"{o.sd_ckpt} + {o.rdeic_ckpt}" if o.sd_ckpt else "random")
        return f"rdeic config={o.config} weights={where}"

    @property
    def adapter_mode(self) -> str | None:
        return None if self.adapter_record is None else str(self.adapter_record["mode"])

    def decoded_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (pad_to(height), pad_to(width), 3)

    def z_grid(self, height: int, width: int) -> tuple[int, int]:
        """The hyper-latent grid (h_z, w_z) an original of ``height`` x ``width`` is coded with (padded / 64)."""
        return pad_to(height) // 64, pad_to(width) // 64

    def warm(self) -> None:
        """What a decode worker needs before its first parse: the compression module (weights, CDF tables)
        and, for the official z coder, torchac's compiled extension."""
        self.compression()
        if self.options.z_coding == "torchac":
            from harness.codecs.rdeic.bitstream import import_torchac

            import_torchac()

    # -- weights --------------------------------------------------------------------------------------------
    def _state(self, prefixes: tuple[str, ...] | None):
        """The merged official (or safetensors) state restricted to ``prefixes``, ready for a strict load."""
        from harness.codecs.rdeic.checkpoint import merge_official, read_state_dict

        o = self.options
        if o.weights:
            merged, notes = read_state_dict(o.weights, prefixes, role="weights"), []
        else:
            cc = read_state_dict(o.rdeic_ckpt, None, role="rdeic_ckpt")
            wants_sd = prefixes is None or any(
                not p.startswith(("control_model.", "preprocess_model.")) for p in prefixes
            )
            sd = read_state_dict(o.sd_ckpt, None, role="sd_ckpt") if wants_sd else {}
            merged, notes = merge_official(sd, cc, self._expected_shapes())
            if prefixes is not None:
                merged = {k: v for k, v in merged.items() if k.startswith(prefixes)}
        if self.adapter_record is not None:
            from harness.codecs.rdeic.adapter import AdapterError, overlay

            try:
                merged = overlay(merged, o.adapter, self.adapter_record, prefixes)
            except AdapterError as exc:
                raise CodecError(f"rdeic: {exc}") from None
        return merged, notes

    def _random_with_adapter(self, state: dict, prefix: str) -> dict:
        """A random-weight model's ``state`` (keys without ``prefix``) with the adapter applied (plumbing tests)."""
        from harness.codecs.rdeic.adapter import AdapterError, overlay

        full = {prefix + k: v for k, v in state.items()}
        try:
            out = overlay(full, self.options.adapter, self.adapter_record, (prefix,) if prefix else None)
        except AdapterError as exc:
            raise CodecError(f"rdeic: {exc}") from None
        return {k[len(prefix) :]: v for k, v in out.items()}

    def _expected_shapes(self) -> dict[str, tuple[int, ...]]:
        import torch

        from harness.codecs.rdeic.model import RDEICModel

        with torch.device("meta"):
            m = RDEICModel(self.model_config)
        return {k: tuple(v.shape) for k, v in m.state_dict().items()}

    def compression(self):
        """The compression module alone (what a decode worker loads), on the CPU, tables rebuilt."""
        if self._compression is None:
            if self._model is not None:
                self._compression = self._model.preprocess_model
            else:
                import torch

                from harness.codecs.rdeic.model import build_compression

                if self.random_weights:
                    comp = build_compression(self.model_config, self.options.random_seed)
                    if self.adapter_mode == "full":
                        comp.load_state_dict(self._random_with_adapter(comp.state_dict(), "preprocess_model."))
                else:  # skip the random init: build on the meta device, allocate, then copy the loaded tensors
                    with torch.device("meta"):
                        comp = build_compression(self.model_config, self.options.random_seed)
                    comp = comp.to_empty(device="cpu")
                    state, _ = self._state(("preprocess_model.",))
                    expected = {"preprocess_model." + k: tuple(v.shape) for k, v in comp.state_dict().items()}
                    self._check_keys(state, expected)
                    state = {k[len("preprocess_model.") :]: v for k, v in state.items()}
                    comp.resize_entropy_buffers(state)  # official files hold empty [0] CDF buffers
                    comp.load_state_dict(state, strict=True)
                comp.update(force=True)
                self._compression = comp.eval()
        return self._compression

    def model(self):
        """The whole model (main process: encode and reconstruct)."""
        if self._model is None:
            import torch

            from harness.codecs.rdeic.model import RDEICModel

            cached = self._cached_context()
            # real weights: build on the meta device and allocate (no 1.4 B-parameter random init), then copy the
            # loaded tensors in (a copy: load_state_dict(assign=True) gave last-ulp differences in CPU decodes)
            with torch.device("cpu" if self.random_weights else "meta"):
                m = RDEICModel(self.model_config, seed=self.options.random_seed, with_text=cached is None)
            if not self.random_weights:
                m = m.to_empty(device="cpu")
            elif self.adapter_record is not None:
                m.load_state_dict(self._random_with_adapter(m.state_dict(), ""), strict=False)
            if cached is not None:
                self._context = cached.to(self.options.device)
            if not self.random_weights:
                state, notes = self._state(None)
                if cached is not None:  # the text tower is not built: its keys are not loaded
                    state = {k: v for k, v in state.items() if not k.startswith("cond_stage_model.")}
                self._check_keys(state, {k: tuple(v.shape) for k, v in m.state_dict().items()})
                m.preprocess_model.resize_entropy_buffers(state, "preprocess_model.")
                m.load_state_dict(state, strict=True)
                self.load_notes = notes
                for note in notes:  # what the files add or lack beyond the manifest, in words
                    logging.getLogger(__name__).warning("rdeic checkpoint: %s", note)
            m.preprocess_model.update(force=True)
            m.eval()
            dev = torch.device(self.options.device)
            for name in ("model", "first_stage_model", "control_model"):
                getattr(m, name).to(dev)
            backend = self.options.attention
            m.set_attention_backend(("sdpa" if dev.type == "cuda" else "math") if backend == "auto" else backend)
            self._model = m
            self._compression = m.preprocess_model  # stays on the CPU
        return self._model

    def _check_keys(self, state: dict, expected: dict[str, tuple[int, ...]]) -> None:
        """Strict key/shape check of loaded weights: one line naming the file(s) and the config they fit."""
        from harness.codecs.rdeic.checkpoint import check_keys

        o = self.options
        gc = tuple(
            f"preprocess_model.gaussian_conditional.{n}"
            for n in ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")
        )
        source = o.weights or f"sd_ckpt {o.sd_ckpt} + rdeic_ckpt {o.rdeic_ckpt}"
        check_keys(state, expected, gc, source=source, config=o.config, role="weights" if o.weights else None)

    def _text_cache(self) -> tuple[str | None, str]:
        """(cache file, key): the embedding depends only on the text-tower weights (the SD file)."""
        o = self.options
        if self.random_weights:
            return o.text_cache, self.weights_hash()[:16]
        from harness.codecs.rdeic.checkpoint import file_sha256

        base = Path(o.weights or o.sd_ckpt)
        path = o.text_cache or str(base.with_name(base.name + ".empty_prompt.safetensors"))
        return path, file_sha256(base)[:16]

    def _cached_context(self):
        path, key = self._text_cache()
        if path is None or not Path(path).is_file():
            return None
        from harness.codecs.rdeic.checkpoint import read_text_cache

        return read_text_cache(path, key)  # a damaged cache: one line (delete it, it is rebuilt)

    def context(self):
        """The [1, 77, C] empty-prompt embedding, cached beside the SD weights (text tower built only once)."""
        if self._context is None:
            from harness.codecs.rdeic.text import empty_prompt_embedding

            m = self.model()
            path, key = self._text_cache()
            ctx = self._cached_context()
            if ctx is None:
                ctx = empty_prompt_embedding(path, lambda: m.cond_stage_model, key)
            self._context = ctx.to(self.options.device)
        return self._context

    # -- the codec ------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> Bitstream:
        import torch

        image = check_image(image)
        h, w = image.shape[:2]
        m = self.model()
        x = np.zeros((pad_to(h), pad_to(w), 3), dtype=np.float32)
        x[:h, :w] = image.astype(np.float32) / 255.0
        t = torch.from_numpy(x).permute(2, 0, 1)[None].to(self.options.device)
        with torch.no_grad():
            feature = m.encode_feature(t).float().cpu()
        return self.compress_feature(feature)

    def compress_feature(self, feature) -> Bitstream:
        """Scaled VAE feature (1 x C x H/8 x W/8, CPU) -> the official container, with its segment map."""
        import torch

        from harness.codecs.rdeic.bitstream import Container, encode_z

        comp = self.compression()
        with torch.no_grad():
            y = comp.analysis(feature)
            indices = comp.hyper_indices(y)
            y_string, _ = comp.code_y(y, comp.hyper_params(indices))
        idx = indices[0].numpy()
        z_string = encode_z(idx, self.model_config.compression.codebook_size, self.options.z_coding)
        box = Container(idx.shape[0], idx.shape[1], y_string, z_string)
        return Bitstream(box.pack(), box.segments())

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        """Untrusted: header -> z -> hyper_dec -> y (rANS). Needs only the compression module. The header's
        grid must be the one ``size`` (the original's height, width) gives, or nothing is decoded."""
        import torch

        from harness.codecs.rdeic.bitstream import decode_z, unpack

        start = time.perf_counter()
        box = unpack(data)
        if (box.h_z, box.w_z) != self.z_grid(*size):
            raise InvalidOutput(
                f"header declares a {box.h_z} x {box.w_z} hyper-latent grid; a {size[0]} x {size[1]} image is "
                f"coded with {self.z_grid(*size)[0]} x {self.z_grid(*size)[1]}"
            )
        comp = self.compression()
        indices = decode_z(
            box.z_string, box.h_z, box.w_z, self.model_config.compression.codebook_size, self.options.z_coding
        )
        with torch.no_grad():
            hp = comp.hyper_params(torch.from_numpy(indices)[None])
            y_hat = comp.decode_y(box.y_string, hp)
        return {"y_hat": y_hat.numpy().astype(np.float32), "entropy_decode_s": time.perf_counter() - start}

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return self.reconstruct_batch([state], [decode_seed], hook)[0]

    def decode_batch(
        self,
        states: list[DecodedState],
        decode_seeds: list[int],
        hooks: list[LatentHook | None],
        size: tuple[int, int],
        side_infos: list[dict[str, np.ndarray] | None] | None = None,
        stack: bool | None = None,
    ) -> list[np.ndarray | Exception]:
        """On CUDA (or with ``stack=True``) one stacked pass through synthesis, the sampler and the VAE, with each
        item's own noise and hooks; on the CPU, item by item. Batched CPU kernels sum in another order (measured:
        a few uint8 steps on RDEIC-tiny), and a cell's numbers must not depend on its batch. An item with absurd
        latents gets its own ``invalid_output`` and leaves the stack before the next stage; the others go on
        stacked (issue #25: before, one such item sent the whole batch back to item-by-item decoding)."""
        stack = self.options.device.startswith("cuda") if stack is None else stack
        if not stack or len(states) < 2 or len({np.shape(s["y_hat"]) for s in states}) != 1:
            return super().decode_batch(states, decode_seeds, hooks, size, side_infos)
        values = self.reconstruct_batch(states, decode_seeds, list(hooks), per_item=True)
        out: list[np.ndarray | Exception] = []
        for v in values:
            if isinstance(v, Exception):
                out.append(v)
                continue
            try:
                out.append(to_output(v, self.output_rounding, self.decoded_shape(*size)))
            except InvalidOutput as exc:
                out.append(exc)
        return out

    def batch_memory_bytes(self, height: int, width: int) -> int | None:
        """Estimated CUDA memory per extra batch item: ~2 GB per 512x512 item for the official model in fp32
        (activations of the UNet + control pass and of the VAE decode, from the CPU peak RSS minus the weights in
        ENVIRONMENT.md), half in fp16/bf16, scaled by pixels and by the config's UNet width. An estimate, not a GPU
        measurement: ``--batch-size`` overrides it."""
        per_pixel = 2 * 2**30 / (512 * 512) * (0.5 if self.options.precision != "fp32" else 1.0)
        width_ratio = self.model_config.unet.model_channels / 320 if hasattr(self.model_config, "unet") else 1.0
        return int(per_pixel * pad_to(height) * pad_to(width) * max(width_ratio, 0.05))

    def reconstruct_batch(
        self,
        states: list[DecodedState],
        decode_seeds: list[int],
        hook: LatentHook | list[LatentHook | None] | None = None,
        noise=None,
        per_item: bool = False,
    ) -> list[np.ndarray | InvalidOutput]:
        """Several states of the same shape in one batch (GPU throughput): float pixel values (B' x H x W x 3
        arrays in [0, 255], one per item) per item. Per-item seeds keep each item's noise identical to a batch of
        one; ``hook`` is one hook for every item or a list of per-item hooks (each applied to its own item's
        slice). ``noise`` overrides the seeded source (a ``sampler.NoiseSource``; it sees the batch of the items
        still stacked).

        Latents are checked item by item at every hook point (``y_hat``, then ``c_latent`` and ``guide_hint``):
        with ``per_item`` an item whose latent is non-finite or beyond ``LATENT_BOUND`` gets its
        :class:`InvalidOutput` in its slot and leaves the stack, so the stages after it run on the others only and
        one absurd latent never costs the batch its stacking; without it (one item: ``reconstruct``) the first
        such latent raises."""
        import torch

        from harness.codecs.rdeic.sampler import GeneratorNoise, relay_sample

        hooks = list(hook) if isinstance(hook, list) else [hook] * len(states)
        results: list[np.ndarray | InvalidOutput | None] = [None] * len(states)

        def refuse(i: int, name: str, arr: np.ndarray) -> bool:
            """Whether item ``i``'s ``name`` is absurd (then recorded, or raised without ``per_item``)."""
            try:
                _check_sane(name, arr)
            except InvalidOutput as exc:
                if not per_item:
                    raise
                results[i] = exc
                return True
            return False

        t_all = time.perf_counter()
        y_hats: dict[int, np.ndarray] = {}
        for i, (state, item_hook) in enumerate(zip(states, hooks, strict=True)):
            y_hat = np.asarray(state["y_hat"], dtype=np.float32)
            if item_hook is not None:
                y_hat = np.asarray(item_hook("y_hat", y_hat), dtype=np.float32)
            y_hats[i] = y_hat
        if len({y.shape for y in y_hats.values()}) != 1:
            raise ValueError("reconstruct_batch needs states of one shape")
        alive = [i for i in y_hats if not refuse(i, "y_hat", y_hats[i])]
        if not alive:
            return results  # type: ignore[return-value]
        m = self.model()
        o = self.options
        dev = torch.device(o.device)
        t0 = time.perf_counter()
        with torch.no_grad():
            guide, c_lat = m.preprocess_model.synthesis(torch.from_numpy(np.concatenate([y_hats[i] for i in alive])))
        timings: dict[str, float] = {"synthesis_s": time.perf_counter() - t0}
        c_parts, g_parts = {}, {}
        for row, i in enumerate(alive):
            c_i, g_i = c_lat[row : row + 1].numpy(), guide[row : row + 1].numpy()
            if hooks[i] is not None:
                c_i = np.asarray(hooks[i]("c_latent", c_i), dtype=np.float32)
                g_i = np.asarray(hooks[i]("guide_hint", g_i), dtype=np.float32)
            c_parts[i], g_parts[i] = c_i, g_i
        alive = [i for i in alive if not refuse(i, "c_latent", c_parts[i]) and not refuse(i, "guide_hint", g_parts[i])]
        if not alive:
            return results  # type: ignore[return-value]
        c_lat = torch.from_numpy(np.concatenate([c_parts[i] for i in alive]))
        guide = torch.from_numpy(np.concatenate([g_parts[i] for i in alive]))
        b = len(alive)
        timings["batch"] = float(b)
        if noise is None:
            sources = [GeneratorNoise(decode_seeds[i], dev) for i in alive]

            def noise(shape: tuple[int, ...], purpose: str) -> torch.Tensor:
                return torch.cat([src((1, *shape[1:]), purpose) for src in sources], dim=0)

        context = self.context().expand(b, -1, -1)
        dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[o.precision]
        autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None and dev.type == "cuda")

        def eps_fn(x: torch.Tensor, t: torch.Tensor, hint: torch.Tensor | None) -> torch.Tensor:
            with autocast:
                return m.eps(x, t, context, hint).float()

        buffers = {
            "sqrt_alphas_cumprod": m.sqrt_alphas_cumprod,
            "sqrt_one_minus_alphas_cumprod": m.sqrt_one_minus_alphas_cumprod,
        }
        x0 = relay_sample(
            eps_fn,
            c_lat.to(dev),
            guide.to(dev),
            {k: v.to(dev) for k, v in buffers.items()},
            self.model_config.diffusion,
            o.steps,
            noise,
            o.guidance,
            timings,
        )
        t0 = time.perf_counter()
        with torch.no_grad(), autocast:
            img = m.decode_latent(x0).float()
        out = to_pixel_values(img)
        timings["vae_decode_s"] = time.perf_counter() - t0
        timings["reconstruct_s"] = time.perf_counter() - t_all
        if "entropy_decode_s" in states[0]:
            timings["entropy_decode_s"] = float(states[0]["entropy_decode_s"])
        self.last_timings = timings
        for row, i in enumerate(alive):
            results[i] = np.ascontiguousarray(out[row])
        return results  # type: ignore[return-value]


def to_pixel_values(img) -> np.ndarray:
    """B x 3 x H x W in about [-1, 1] -> B x H x W x 3 float32 pixel values in [0, 255]: (x+1)/2, clamp, x255
    (the official conversion before its uint8 cast, which :func:`harness.codecs.base.to_output` applies)."""
    img = ((img.float() + 1) / 2).clamp(0, 1) * 255
    return img.permute(0, 2, 3, 1).cpu().numpy()


def to_uint8(img, rounding: str = "truncate") -> np.ndarray:
    """B x 3 x H x W in about [-1, 1] -> B x H x W x 3 uint8, truncated (official) or rounded."""
    return np.stack([to_output(v, rounding) for v in to_pixel_values(img)])


def _check_sane(name: str, arr: np.ndarray) -> None:
    """Refuse non-finite latents or latents beyond ``LATENT_BOUND`` before any diffusion (``InvalidOutput``)."""
    if not np.all(np.isfinite(arr)):
        raise InvalidOutput(f"non-finite values (NaN/inf) in {name}")
    if arr.size and (peak := float(np.max(np.abs(arr)))) > LATENT_BOUND:
        raise InvalidOutput(f"{name} reaches |{peak:.3g}|, beyond the bound of {LATENT_BOUND:g} latent units")
