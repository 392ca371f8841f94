"""The VAE-only row (``CODECS`` name ``rdeic-vae``, METHODOLOGY.md §5): RDEIC's own autoencoder with no
compression, which bounds the quality RDEIC can reach. **Not a compressor**: its "bitstream" is the latent
stored raw, so its bpp is the latent's size, not a rate to compare.

::

    encode:       image -> pad (zeros, bottom/right, to x64, as RDEIC) -> [-1, 1] -> VAE encoder -> quant_conv
                  -> posterior mean (the mode: deterministic) x scale_factor -> header + float32 latent
    parse:        bytes -> header checked against the config and the original's size -> {"latent"}
    reconstruct:  hook("latent") -> bound check -> VAE decoder (latent / scale_factor) -> RDEIC's pixel
                  conversion ((x+1)/2, clamp, x255; truncate or round with ``rounding``), padded shape

File layout (little-endian), 12-byte header then the payload::

    b"RVAE" | uint8 format (1) | uint8 bytes per value (4) | uint16 channels | uint16 height | uint16 width
    channels x height x width float32 values, C order (channel, row, column)

float32, not float16: the stored latent is then exactly the encoder's, so the row measures the autoencoder
alone (a float16 latent would add a rounding of our own to the bound it is meant to be). bpp = 8 x file bytes /
original pixels is therefore the raw latent's size (official VAE: 4 channels at 1/8 resolution, 2 bpp on padded
pixels; RDEIC-tiny: 8 channels, 4 bpp), documented as "not a compressor: an upper bound on quality".

Weights and options are RDEIC's (``config``, ``weights`` / ``sd_ckpt`` [+ ``rdeic_ckpt``], ``allow_random_weights``,
``device``, ``precision``, ``rounding``); only the ``first_stage_model.*`` keys are read. With the official pair the
VAE comes from the SD file, overridden by the RDEIC file's keys if it holds any (the official merge order), so
``rdeic_ckpt`` is optional. The model code is RDEIC's (``vae.AutoencoderKL``, ``model.seeded``: random weights are
the same tensors RDEIC's random model has), and so are the loading checks (``checkpoint``).
"""

from __future__ import annotations

import math
import struct
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
from harness.codecs.rdeic.codec import LATENT_BOUND, PATH_OPTIONS, pad_to
from harness.hashing import key_of

MAGIC = b"RVAE"
FORMAT = 1
HEADER = struct.Struct("<4sBBHHH")  # magic, format, bytes per value, channels, height, width
VALUE_BYTES = 4  # float32
PREFIX = "first_stage_model."
#: Largest latent grid a header may declare (height x width positions): a 16384 x 16384-pixel image.
MAX_POSITIONS = (16384 // 8) ** 2


class RDEICVAE(LearnedCodec):
    """RDEIC's VAE alone: encode to the scaled latent, store it raw, decode. An upper bound, not a codec."""

    name = "rdeic-vae"
    version = "1"
    path_options = PATH_OPTIONS
    hooks = ("latent",)

    @dataclass(frozen=True)
    class Options:
        config: str = "official"  # official | tiny | test (harness/codecs/rdeic/config.py)
        sd_ckpt: str | None = None  # v2-1_512-ema-pruned.ckpt (holds the VAE)
        rdeic_ckpt: str | None = None  # optional: its first_stage_model.* keys, if any, replace the SD file's
        weights: str | None = None  # merged .safetensors (e.g. RDEIC-tiny's)
        device: str = "cpu"
        precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast of the decoder, CUDA only; encoding is fp32)
        rounding: str = "truncate"  # truncate (official) | round
        allow_random_weights: bool = False
        random_seed: int = 0

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        from harness.codecs.rdeic.config import PRESETS

        if o.config not in PRESETS:
            raise CodecError(f"rdeic-vae: unknown config {o.config!r}; known: {', '.join(PRESETS)}")
        if o.precision not in ("fp32", "fp16", "bf16"):
            raise CodecError(f"rdeic-vae: precision must be fp32, fp16 or bf16, got {o.precision!r}")
        if o.rounding not in ("truncate", "round"):
            raise CodecError(f"rdeic-vae: rounding must be truncate or round, got {o.rounding!r}")
        if o.weights is not None and (o.sd_ckpt is not None or o.rdeic_ckpt is not None):
            raise CodecError("rdeic-vae: give either weights (a merged file) or sd_ckpt [+ rdeic_ckpt], not both")
        if o.weights is None and o.sd_ckpt is None:
            from harness.codecs.rdeic.checkpoint import missing_weights_message

            if o.rdeic_ckpt is not None:
                raise CodecError(
                    "rdeic-vae: the VAE is in the Stable Diffusion checkpoint: give sd_ckpt (v2-1_512-ema-pruned.ckpt) "
                    "too; rdeic_ckpt alone holds no first_stage_model keys"
                )
            if not o.allow_random_weights:
                raise CodecError(missing_weights_message("no weights given (rdeic-vae reads the VAE of sd_ckpt)"))
        if not self.random_weights:
            from harness.codecs.checkpoints import inspect_all

            inspect_all(self.weight_files(o))  # one line each: missing, empty, a folder, truncated, not weights
        else:
            self.clean_psnr_floor_db = -math.inf  # random weights decode to noise (plumbing runs only)
        self.output_rounding = o.rounding
        self.model_config = PRESETS[o.config]
        self._vae = None
        self.last_timings: dict[str, float] = {}

    @property
    def random_weights(self) -> bool:
        o = self.options
        return o.weights is None and o.sd_ckpt is None and o.rdeic_ckpt is None

    @classmethod
    def weight_files(cls, options: Options) -> list:
        """The weight files ``options`` name, described for harness.codecs.checkpoints (checked before a run)."""
        from harness.codecs.rdeic.checkpoint import weight_files

        return weight_files(options, "vae")

    # -- identity -------------------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        o = self.options
        if self.random_weights:
            import torch

            return key_of({"random_weights": o.config, "seed": o.random_seed, "torch": torch.__version__})
        from harness.codecs.rdeic.checkpoint import file_sha256

        files = [o.weights] if o.weights else [p for p in (o.sd_ckpt, o.rdeic_ckpt) if p is not None]
        return key_of({"files": [file_sha256(p) for p in files]})

    def decoded_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (pad_to(height), pad_to(width), 3)

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """(channels, height, width) of the latent an original of ``height`` x ``width`` is stored as."""
        return (self.model_config.vae.embed_dim, pad_to(height) // 8, pad_to(width) // 8)

    # -- weights --------------------------------------------------------------------------------------------
    def _source(self) -> tuple[str, str]:
        o = self.options
        if o.weights:
            return o.weights, "weights"
        return (f"{o.sd_ckpt} + {o.rdeic_ckpt}" if o.rdeic_ckpt else str(o.sd_ckpt)), "sd_ckpt"

    def vae(self):
        """RDEIC's ``first_stage_model`` alone, loaded strictly from the weights (on ``device``, eval mode)."""
        if self._vae is None:
            import torch

            from harness.codecs.rdeic.checkpoint import check_keys, read_state_dict
            from harness.codecs.rdeic.model import seeded
            from harness.codecs.rdeic.vae import AutoencoderKL

            o = self.options

            def build():
                return AutoencoderKL(self.model_config.vae)

            if self.random_weights:  # the same tensors as RDEIC's random model (same seeded component)
                vae = seeded("first_stage_model", o.random_seed, build)
            else:  # as RDEIC: build on the meta device, allocate, copy the loaded tensors in
                with torch.device("meta"):
                    vae = build()
                vae = vae.to_empty(device="cpu")
                if o.weights:
                    state = read_state_dict(o.weights, (PREFIX,), role="weights", kind="vae")
                else:
                    state = read_state_dict(o.sd_ckpt, (PREFIX,), role="sd_ckpt", kind="vae")
                    if o.rdeic_ckpt:  # the official order: the SD dict updated with the RDEIC dict
                        state.update(read_state_dict(o.rdeic_ckpt, (PREFIX,), role="rdeic_ckpt", kind="vae"))
                expected = {PREFIX + k: tuple(v.shape) for k, v in vae.state_dict().items()}
                source, role = self._source()
                check_keys(state, expected, (), source=source, config=o.config, role=role, scope=(PREFIX,), kind="vae")
                vae.load_state_dict({k[len(PREFIX) :]: v for k, v in state.items()}, strict=True)
            self._vae = vae.eval().to(torch.device(o.device))
        return self._vae

    # -- the codec ------------------------------------------------------------------------------------------
    def encode(self, image: np.ndarray) -> Bitstream:
        import torch

        image = check_image(image)
        h, w = image.shape[:2]
        vae = self.vae()
        x = np.zeros((pad_to(h), pad_to(w), 3), dtype=np.float32)
        x[:h, :w] = image.astype(np.float32) / 255.0
        t = torch.from_numpy(x).permute(2, 0, 1)[None].to(self.options.device)
        with torch.no_grad():
            mean = vae.quant_conv(vae.encoder(t * 2 - 1)).chunk(2, dim=1)[0]  # the KL posterior's mode
            latent = (mean * self.model_config.diffusion.scale_factor).float().cpu().numpy()
        return self.pack(latent[0])

    def pack(self, latent: np.ndarray) -> Bitstream:
        """A C x H x W latent -> the file (header + float32 little-endian values) with its segment map."""
        c, h, w = latent.shape
        data = HEADER.pack(MAGIC, FORMAT, VALUE_BYTES, c, h, w) + np.ascontiguousarray(latent, dtype="<f4").tobytes()
        return Bitstream(data, {"header": ((0, HEADER.size),), "payload": ((HEADER.size, len(data)),)})

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        """Untrusted: the header must declare exactly the latent this config gives an original of ``size``
        (height, width), and the payload must be exactly its length, before anything is allocated."""
        if len(data) < HEADER.size:
            raise InvalidOutput(f"file of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
        magic, fmt, value_bytes, c, h, w = HEADER.unpack_from(data, 0)
        if magic != MAGIC or fmt != FORMAT or value_bytes != VALUE_BYTES:
            raise InvalidOutput(
                f"not an rdeic-vae latent file: magic {magic!r}, format {fmt}, {value_bytes} bytes per value "
                f"(expected {MAGIC!r}, {FORMAT}, {VALUE_BYTES})"
            )
        if not (h >= 1 and w >= 1 and h * w <= MAX_POSITIONS):
            raise InvalidOutput(f"header declares a {h} x {w} latent, outside 1..{MAX_POSITIONS} positions")
        want = self.latent_shape(*size)
        if (c, h, w) != want:
            raise InvalidOutput(
                f"header declares a {c} x {h} x {w} latent; a {size[0]} x {size[1]} image with config "
                f"{self.options.config!r} is stored as {want[0]} x {want[1]} x {want[2]}"
            )
        n = c * h * w
        if len(data) != HEADER.size + n * VALUE_BYTES:
            raise InvalidOutput(
                f"payload of {len(data) - HEADER.size} bytes; a {c} x {h} x {w} float32 latent is {n * VALUE_BYTES}"
            )
        latent = np.frombuffer(data, dtype="<f4", count=n, offset=HEADER.size).astype(np.float32)
        return {"latent": latent.reshape(1, c, h, w)}

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        """Trusted: the latent (through ``hook``) -> VAE decoder -> float pixel values in [0, 255] of the padded
        shape (RDEIC's conversion; the base class casts with ``rounding``). Deterministic: the seed is unused."""
        import torch

        from harness.codecs.rdeic.codec import to_pixel_values

        t0 = time.perf_counter()
        latent = np.asarray(state["latent"], dtype=np.float32)
        if hook is not None:
            latent = np.asarray(hook("latent", latent), dtype=np.float32)
        if not np.all(np.isfinite(latent)):
            raise InvalidOutput("non-finite values (NaN/inf) in latent")
        if latent.size and (peak := float(np.max(np.abs(latent)))) > LATENT_BOUND:
            raise InvalidOutput(f"latent reaches |{peak:.3g}|, beyond the bound of {LATENT_BOUND:g} latent units")
        vae = self.vae()
        o = self.options
        dev = torch.device(o.device)
        dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[o.precision]
        autocast = torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None and dev.type == "cuda")
        z = torch.from_numpy(latent).to(dev) / self.model_config.diffusion.scale_factor
        with torch.no_grad(), autocast:
            img = vae.decode(z).float()
        out = np.ascontiguousarray(to_pixel_values(img)[0])
        self.last_timings = {"vae_decode_s": time.perf_counter() - t0}
        return out


def describe_bpp(height: int, width: int, channels: int) -> float:
    """The bpp an ``rdeic-vae`` file has for an original of ``height`` x ``width`` (for docs and tests)."""
    n = channels * (pad_to(height) // 8) * (pad_to(width) // 8)
    return 8.0 * (HEADER.size + VALUE_BYTES * n) / (height * width)
