"""A codec that counts its work, for tests/test_throughput*.py (issue #25: no work done twice).

It lives in a module of its own (not a test file) because decode workers import a codec by its
``module:qualname`` target: importing a test module there would pull pytest in. Every ``encode``, ``parse`` and
``reconstruct`` appends one line to the file named by its ``log`` option (``O_APPEND`` writes of one short line are
atomic, so the main process and every worker can share the file): ``encode <where> <H>x<W>``,
``parse <where> <sha256 of the bytes>`` and ``reconstruct <where> <decode seed>``, where ``<where>`` is ``worker``
in a decode worker and ``main`` otherwise.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from dataclasses import dataclass

import numpy as np
from fake_codecs import FakeCodec

from harness.codecs.base import Bitstream, DecodedState, LatentHook
from harness.registry import CODECS


def _where() -> str:
    return "worker" if multiprocessing.parent_process() is not None else "main"


class CountingCodec(FakeCodec):
    """The lossless fake codec (``fake``) that logs every parse and reconstruct to ``log``."""

    name = "fake_counting"

    @dataclass(frozen=True)
    class Options:
        mode: str = "ok"
        sleep_s: float = 0.05
        log: str = ""  # the file every call appends its line to

    def _log(self, line: str) -> None:
        fd = os.open(self.options.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def encode(self, image: np.ndarray) -> Bitstream:
        self._log(f"encode {_where()} {image.shape[0]}x{image.shape[1]}")
        return super().encode(image)

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        self._log(f"parse {_where()} {hashlib.sha256(data).hexdigest()}")
        return super().parse(data, size)

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        self._log(f"reconstruct {_where()} {decode_seed}")
        return super().reconstruct(state, decode_seed, hook)


def register() -> None:
    if CountingCodec.name not in CODECS:
        CODECS.register(CountingCodec.name, CountingCodec)


def calls(log: str) -> list[tuple[str, str, str]]:
    """The logged calls, each as (what, where, detail)."""
    try:
        with open(log) as fh:
            return [tuple(line.split()) for line in fh if line.strip()]  # type: ignore[misc]
    except FileNotFoundError:
        return []
