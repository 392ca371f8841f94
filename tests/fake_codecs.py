"""Codecs that misbehave on purpose, registered only by tests.

The stream is ``header`` (shape + sha256 of the payload) followed by raw pixels. A stream whose payload
matches its checksum decodes exactly (so clean decodes and controls pass in-process); a corrupted one
triggers the codec's failure mode inside the isolated worker.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import struct
import time
from dataclasses import dataclass

import numpy as np

from corruptions.base import LatentCorruption
from harness.codecs.base import Bitstream, Codec, DecodedState, LatentHook, check_image
from harness.codecs.jpeg2000 import JPEG2000
from harness.registry import CODECS, CORRUPTIONS

HEADER = struct.Struct(">II32s")


class FakeCodec(Codec):
    name = "fake"
    hooks = ("image",)

    @dataclass(frozen=True)
    class Options:
        # what a corrupted stream does: ok | segfault | hang (sleeps) | spin (burns CPU) | raise | nan |
        # wrong_shape | slow | balloon (allocates without bound) | oversized (returns a state far too large);
        # every stream: burn (sleep_s seconds of CPU, then ok) | hang_in_worker (in a decode worker, even the
        # clean stream hangs)
        mode: str = "ok"
        sleep_s: float = 0.05

    def encode(self, image: np.ndarray) -> Bitstream:
        image = check_image(image)
        payload = image.tobytes()
        head = HEADER.pack(image.shape[0], image.shape[1], hashlib.sha256(payload).digest())
        return Bitstream(
            head + payload, {"header": ((0, HEADER.size),), "payload": ((HEADER.size, len(head + payload)),)}
        )

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        h, w, digest = HEADER.unpack(data[: HEADER.size])
        payload = data[HEADER.size :]
        if self.options.mode == "burn":  # every stream, clean or not, costs sleep_s seconds of CPU
            end = time.process_time() + self.options.sleep_s
            while time.process_time() < end:
                pass
        elif self.options.mode == "hang_in_worker" and multiprocessing.parent_process() is not None:
            time.sleep(3600)  # even the clean stream never finishes in a decode worker (in-process it does)
        image = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, 3).copy()
        if hashlib.sha256(payload).digest() == digest:
            return {"image": image}
        mode = self.options.mode
        if mode == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "hang":
            time.sleep(3600)
        elif mode == "spin":
            while True:
                pass
        elif mode == "balloon":
            chunks = []
            while True:  # what a corrupted size field does to a native decoder: allocate and touch, without end
                chunks.append(np.ones(2**24, dtype=np.uint8))
        elif mode == "oversized":
            return {"image": np.zeros((h * 8, w * 8, 3), dtype=np.float64)}
        elif mode == "raise":
            raise ValueError("corrupted payload")
        elif mode == "nan":
            return {"image": np.full((h, w, 3), np.nan, dtype=np.float32)}
        elif mode == "wrong_shape":
            return {"image": image[: h // 2]}
        elif mode == "slow":
            time.sleep(self.options.sleep_s)
        return {"image": image}

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        image = state["image"]
        return hook("image", image) if hook else image


class NondeterministicCodec(FakeCodec):
    """Decodes differ from call to call: the BER-0 control must catch it."""

    name = "fake_nondeterministic"

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        image = state["image"].copy()
        image[0, 0, 0] ^= np.uint8(os.getpid() & 0xFF or 1) ^ np.uint8(time.perf_counter_ns() & 0xFF)
        return image


class BrokenCodec(FakeCodec):
    """Round trip far below any sane quality: the suite must refuse to build a table."""

    name = "fake_broken"

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return 255 - state["image"]


class UncheckedJPEG2000(JPEG2000):
    """JPEG2000 without the SIZ/COD pre-check: what OpenJPEG does with a hostile header, under the worker's caps."""

    name = "fake_j2k_unchecked"

    def check_header(self, data: bytes, size: tuple[int, int]) -> None:
        pass


class SideInfoCodec(FakeCodec):
    """A distributed-coding stand-in: the decoder averages the decoded primary with the side view it is given
    (missing: the primary alone), so every side degradation shows in the output."""

    name = "fake_side"
    side_info = ("stereo",)

    def reconstruct(self, state, decode_seed, hook=None, side_info=None):  # type: ignore[override]
        image = state["image"].astype(np.float32)
        side = (side_info or {}).get("stereo")
        return image if side is None else (image + side.astype(np.float32)) / 2


class AdditiveNoise(LatentCorruption):
    """Integer noise of amplitude ``amp`` added to the hooked array (a stand-in latent corruption)."""

    name = "fake_latent_noise"

    @dataclass(frozen=True)
    class Params:
        amp: int

    @classmethod
    def identity_params(cls) -> dict:
        return {"amp": 0}

    def corrupt(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noise = rng.integers(-self.params.amp, self.params.amp + 1, size=latent.shape)
        return np.clip(latent.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def register() -> None:
    for cls in (FakeCodec, NondeterministicCodec, BrokenCodec, UncheckedJPEG2000, SideInfoCodec):
        if cls.name not in CODECS:
            CODECS.register(cls.name, cls)
    if AdditiveNoise.name not in CORRUPTIONS:
        CORRUPTIONS.register(AdditiveNoise.name, AdditiveNoise)
    _register_guard_fakes()


# -- fakes for tests/test_methodology_guards.py (one per methodology guard) ---------------------------------------

from corruptions.base import BitstreamCorruption  # noqa: E402 - kept with the fakes that use it
from harness.codecs.base import CodecSpec  # noqa: E402


class SeedDependentCodec(FakeCodec):
    """Stochastic decoding: the decode seed changes pixel [0, 0] (as RDEIC's noise changes its output)."""

    name = "fake_seed_dependent"

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return seed_marked(state["image"], decode_seed)


def seed_marked(image: np.ndarray, decode_seed: int) -> np.ndarray:
    """What :class:`SeedDependentCodec` decodes ``image`` to with ``decode_seed``."""
    out = image.copy()
    out[0, 0, 0] ^= np.uint8((37 * (decode_seed + 1)) & 0xFF)
    return out


class PaddingCodec(FakeCodec):
    """Decodes to the image padded to multiples of 64 (as RDEIC does); the harness crops."""

    name = "fake_padding"

    def decoded_shape(self, height: int, width: int) -> tuple[int, int, int]:
        return (-(-height // 64) * 64, -(-width // 64) * 64, 3)

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        image = state["image"]
        h, w, _ = self.decoded_shape(*image.shape[:2])
        return np.pad(image, ((0, h - image.shape[0]), (0, w - image.shape[1]), (0, 0)))


class WeightsCodec(FakeCodec):
    """A codec with a weights file: the path is not in its config (as RDEIC's PATH_OPTIONS); only the hash of
    the file's content (``weights_hash``) tells two weights apart."""

    name = "fake_weights"

    @dataclass(frozen=True)
    class Options:
        mode: str = "ok"
        sleep_s: float = 0.05
        weights: str | None = None

    def config(self) -> dict:
        return {k: v for k, v in super().config().items() if k != "weights"}

    def spec(self) -> CodecSpec:
        return CodecSpec(target=f"{type(self).__module__}:{type(self).__qualname__}", options=dict(vars(self.options)))

    def weights_hash(self) -> str | None:
        if self.options.weights is None:
            return None
        with open(self.options.weights, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()


class AdapterCodec(FakeCodec):
    """Stand-in for an RDEIC adapter: an adapter file whose content starts with ``changes-stream`` alters the
    encoded stream (a leading tag byte), as an adapter that trained the compression module would."""

    name = "fake_adapter"

    @dataclass(frozen=True)
    class Options:
        mode: str = "ok"
        sleep_s: float = 0.05
        adapter: str | None = None

    def _tag(self) -> bytes:
        if self.options.adapter is None:
            return b"\x00"
        with open(self.options.adapter, "rb") as fh:
            return b"\x01" if fh.read().startswith(b"changes-stream") else b"\x00"

    def encode(self, image: np.ndarray) -> Bitstream:
        data = self._tag() + super().encode(image).data
        return Bitstream(data, {"header": ((0, 1 + HEADER.size),), "payload": ((1 + HEADER.size, len(data)),)})

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        return super().parse(data[1:], size)


class WrongSizeCleanCodec(FakeCodec):
    """Even the clean decode has the wrong size: 8 extra rows and columns below/right of the right content."""

    name = "fake_wrong_size_clean"

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return np.pad(state["image"], ((0, 8), (0, 8), (0, 0)), mode="edge")


class NaNCleanCodec(FakeCodec):
    """Even the clean decode holds a NaN (float output, one value: the rest would pass any PSNR floor)."""

    name = "fake_nan_clean"

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        out = state["image"].astype(np.float32)
        out[0, 0, 0] = np.nan
        return out


class LeakyChannel(BitstreamCorruption):
    """A broken bitstream plugin: it flips the first exposed bit at every level, its identity (ber 0) included."""

    name = "fake_leaky_channel"

    @dataclass(frozen=True)
    class Params:
        ber: float

    @classmethod
    def identity_params(cls) -> dict:
        return {"ber": 0.0}

    def flip_mask(self, n_bits: int, rng: np.random.Generator) -> np.ndarray:
        mask = rng.random(n_bits) < self.params.ber
        mask[:1] = True
        return mask

    def expected_flips(self, n_bits: int) -> float:
        return n_bits * self.params.ber

    def p_error_free(self, n_bits: int) -> float:
        return (1.0 - self.params.ber) ** n_bits


def _register_guard_fakes() -> None:
    for cls in (SeedDependentCodec, PaddingCodec, WeightsCodec, AdapterCodec, WrongSizeCleanCodec, NaNCleanCodec):
        if cls.name not in CODECS:
            CODECS.register(cls.name, cls)
    if LeakyChannel.name not in CORRUPTIONS:
        CORRUPTIONS.register(LeakyChannel.name, LeakyChannel)
