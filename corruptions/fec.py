"""Reed–Solomon forward error correction as a channel layer around any codec's stream.

::

    stream ──frame (4-byte length)──pad──> k-byte blocks ──RS(n, k)──> codewords
           ──interleave depth I (I codewords written column by column)──> transmitted bytes ──channel──>
           ──de-interleave──RS decode (corrects up to t = (n-k)/2 byte errors per codeword)──> stream

With depth I, a burst of up to I·t consecutive corrupted bytes lands as at most t errors in each of I
codewords, so it is corrected. A codeword with more errors is uncorrectable: the cell's status is
``fec_failure`` (policy ``on_failure = "fail"``) or, with ``"pass_through"``, the uncorrected systematic
bytes go to the decoder and the number of failed codewords is recorded. (RS can also *miscorrect* beyond
t; the residual flips after FEC are recorded for every cell, so that shows.)

The compiled ``creedsolo`` is used when importable, else pure-Python ``reedsolo`` with a warning; which
one ran is recorded with every cell.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from corruptions.base import CorruptionError

LENGTH_BYTES = 4


@dataclass(frozen=True)
class FECConfig:
    n: int = 255  # codeword length in bytes (<= 255 for GF(2^8))
    k: int = 223  # message bytes per codeword
    depth: int = 1  # interleaving depth I (codewords per interleaved group)
    on_failure: str = "fail"  # "fail": status fec_failure; "pass_through": decode the uncorrected bytes

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and isinstance(self.k, int) and 0 < self.k < self.n <= 255):
            raise CorruptionError(f"fec: need 0 < k < n <= 255, got n={self.n}, k={self.k}")
        if (self.n - self.k) % 2:
            raise CorruptionError(f"fec: n - k must be even (t = (n-k)/2 correctable bytes), got {self.n - self.k}")
        if not isinstance(self.depth, int) or self.depth < 1:
            raise CorruptionError(f"fec: depth is an integer >= 1, got {self.depth!r}")
        if self.on_failure not in ("fail", "pass_through"):
            raise CorruptionError(f"fec: on_failure is 'fail' or 'pass_through', got {self.on_failure!r}")

    @property
    def t(self) -> int:
        return (self.n - self.k) // 2

    def label(self) -> str:
        tail = "" if self.on_failure == "fail" else ", pass-through"
        return f"RS({self.n},{self.k}) I={self.depth}{tail}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@cache
def rs_backend() -> tuple[Any, type[Exception], str]:
    """(RSCodec class, its error class, backend name): compiled creedsolo when present."""
    try:
        from creedsolo import ReedSolomonError, RSCodec

        return RSCodec, ReedSolomonError, "creedsolo"
    except ImportError:
        from reedsolo import ReedSolomonError, RSCodec

        warnings.warn(
            "creedsolo (compiled Reed-Solomon) is not installed; using pure-Python reedsolo (~90x slower). "
            "Install the project's 'fec' extra (reedsolo 2.1.1b1 ships both).",
            stacklevel=2,
        )
        return RSCodec, ReedSolomonError, "reedsolo (pure Python)"


@dataclass(frozen=True)
class FECDecoded:
    data: bytes  # the recovered stream (uncorrected bytes where a codeword failed)
    failed_codewords: int
    codewords: int
    length_ok: bool  # the framed length survived (else the stream was cut to what arrived)


class ReedSolomonFEC:
    def __init__(self, config: FECConfig) -> None:
        self.config = config
        codec_cls, self._error, self.backend = rs_backend()
        self._rs = codec_cls(config.n - config.k, nsize=config.n)

    def encode(self, data: bytes) -> bytes:
        c = self.config
        framed = len(data).to_bytes(LENGTH_BYTES, "big") + data
        group = c.k * c.depth
        padded = np.zeros(-(-len(framed) // group) * group, dtype=np.uint8)
        padded[: len(framed)] = np.frombuffer(framed, dtype=np.uint8)
        messages = padded.reshape(-1, c.k)
        codewords = np.stack([np.frombuffer(bytes(self._rs.encode(bytearray(m))), dtype=np.uint8) for m in messages])
        # (groups, depth, n) -> (groups, n, depth): byte j of every codeword of a group, then byte j+1, ...
        return codewords.reshape(-1, c.depth, c.n).transpose(0, 2, 1).tobytes()

    def decode(self, received: bytes) -> FECDecoded:
        c = self.config
        arr = np.frombuffer(received, dtype=np.uint8)
        if arr.size % (c.n * c.depth):
            raise CorruptionError("fec: received stream is not a whole number of interleaved groups")
        codewords = arr.reshape(-1, c.n, c.depth).transpose(0, 2, 1).reshape(-1, c.n)
        messages, failed = [], 0
        for cw in codewords:
            try:
                messages.append(bytes(self._rs.decode(bytearray(cw))[0]))
            except self._error:
                failed += 1
                messages.append(cw[: c.k].tobytes())  # systematic part, uncorrected
        framed = b"".join(messages)
        length = int.from_bytes(framed[:LENGTH_BYTES], "big")
        available = len(framed) - LENGTH_BYTES
        length_ok = length <= available
        return FECDecoded(
            framed[LENGTH_BYTES : LENGTH_BYTES + min(length, available)], failed, len(codewords), length_ok
        )
