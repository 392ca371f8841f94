"""Codecs that misbehave on purpose, registered only by tests.

The stream is ``header`` (shape + sha256 of the payload) followed by raw pixels. A stream whose payload
matches its checksum decodes exactly (so clean decodes and controls pass in-process); a corrupted one
triggers the codec's failure mode inside the isolated worker.
"""

from __future__ import annotations

import hashlib
import os
import signal
import struct
import time
from dataclasses import dataclass

import numpy as np

from corruptions.base import LatentCorruption
from harness.codecs.base import Bitstream, Codec, DecodedState, LatentHook, check_image
from harness.registry import CODECS, CORRUPTIONS

HEADER = struct.Struct(">II32s")


class FakeCodec(Codec):
    name = "fake"
    hooks = ("image",)

    @dataclass(frozen=True)
    class Options:
        mode: str = "ok"  # what a corrupted stream does: ok | segfault | hang | raise | nan | wrong_shape | slow
        sleep_s: float = 0.05

    def encode(self, image: np.ndarray) -> Bitstream:
        image = check_image(image)
        payload = image.tobytes()
        head = HEADER.pack(image.shape[0], image.shape[1], hashlib.sha256(payload).digest())
        return Bitstream(
            head + payload, {"header": ((0, HEADER.size),), "payload": ((HEADER.size, len(head + payload)),)}
        )

    def parse(self, data: bytes) -> DecodedState:
        h, w, digest = HEADER.unpack(data[: HEADER.size])
        payload = data[HEADER.size :]
        image = np.frombuffer(payload, dtype=np.uint8).reshape(h, w, 3).copy()
        if hashlib.sha256(payload).digest() == digest:
            return {"image": image}
        mode = self.options.mode
        if mode == "segfault":
            os.kill(os.getpid(), signal.SIGSEGV)
        elif mode == "hang":
            time.sleep(3600)
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
    for cls in (FakeCodec, NondeterministicCodec, BrokenCodec):
        if cls.name not in CODECS:
            CODECS.register(cls.name, cls)
    if AdditiveNoise.name not in CORRUPTIONS:
        CORRUPTIONS.register(AdditiveNoise.name, AdditiveNoise)
