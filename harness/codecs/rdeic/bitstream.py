"""The official file container and the z-string (VQ index) coders, SPEC §3.

Layout (big-endian)::

    uint32 h_z | uint32 w_z | uint32 n_strings (= 2) | uint32 len_y | y string | uint32 len_z | z string

20 bytes of framing. ``unpack`` validates every length field before using it (a corrupted header raises
``BitstreamError``, it never allocates or reads past the end), and ``segments`` gives the byte map the
harness corrupts by scope: ``header`` (the five uint32 fields), ``y``, ``z``; ``payload`` = y + z.

z coders (named, for ablations): ``torchac`` (official: torchac 0.9.3 ``encode_float_cdf`` with a uniform
float CDF of L+1 entries per index), ``rans_uniform`` (compressai rANS, uniform 16-bit CDF),
``fixed_length`` (ceil(log2 L)-bit big-endian packing: no entropy coder, no desynchronisation).
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Z_CODINGS = ("torchac", "rans_uniform", "fixed_length")
HEADER_BYTES = 20
#: Largest hyper-latent grid a file may declare (h_z * w_z): 4096 = a 4096 x 4096-pixel image. Bigger headers
#: are treated as corrupted rather than allocated.
MAX_Z_POSITIONS = 4096
#: compressai's rANS coder flushes its (64-bit) state on every string, so a y string is never shorter than this.
MIN_Y_STRING = 4


class BitstreamError(ValueError):
    """A file that is not a valid RDEIC container (truncated, inconsistent or absurd length fields)."""


@dataclass(frozen=True)
class Container:
    h_z: int
    w_z: int
    y_string: bytes
    z_string: bytes

    def pack(self) -> bytes:
        return (
            struct.pack(">III", self.h_z, self.w_z, 2)
            + struct.pack(">I", len(self.y_string))
            + self.y_string
            + struct.pack(">I", len(self.z_string))
            + self.z_string
        )

    def segments(self) -> dict[str, tuple[tuple[int, int], ...]]:
        ly, lz = len(self.y_string), len(self.z_string)
        y = ((16, 16 + ly),)
        z = ((20 + ly, 20 + ly + lz),)
        return {"header": ((0, 16), (16 + ly, 20 + ly)), "payload": y + z, "y": y, "z": z}


def unpack(data: bytes, max_z_positions: int = MAX_Z_POSITIONS) -> Container:
    """Parse and validate the container (no allocation beyond the input's own size)."""
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"file of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte framing")
    h_z, w_z, n = struct.unpack_from(">III", data, 0)
    if n != 2:
        raise BitstreamError(f"header says {n} strings; an RDEIC file has 2 (y, z)")
    if not (h_z >= 1 and w_z >= 1 and h_z * w_z <= max_z_positions):
        raise BitstreamError(f"hyper-latent size {h_z} x {w_z} outside 1..{max_z_positions} positions")
    (ly,) = struct.unpack_from(">I", data, 12)
    if 16 + ly + 4 > len(data):
        raise BitstreamError(f"y string length {ly} runs past the end of a {len(data)}-byte file")
    (lz,) = struct.unpack_from(">I", data, 16 + ly)
    if 20 + ly + lz != len(data):
        raise BitstreamError(f"z string length {lz} does not end the file ({20 + ly + lz} != {len(data)} bytes)")
    if ly < MIN_Y_STRING or lz < 1:
        # structurally impossible: rANS always flushes its state, and a grid of >= 1 index codes to >= 1 byte.
        # (A zero-padded decoder would turn an empty string into a plausible all-zero latent: refuse it here.)
        raise BitstreamError(
            f"y string of {ly} bytes or z string of {lz} bytes: a valid file has >= {MIN_Y_STRING} and >= 1"
        )
    return Container(h_z, w_z, bytes(data[16 : 16 + ly]), bytes(data[20 + ly :]))


# -- z coders ---------------------------------------------------------------------------------------------------
def import_torchac():
    """torchac compiles a C++ extension on first import; keep its build cache inside the environment."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    if "torchac" in sys.modules:
        return sys.modules["torchac"]
    try:
        with _quiet_fds() as captured:  # torch's extension loader runs ninja, which prints to fd 1 every time
            import torchac
    except ImportError as exc:
        raise RuntimeError(
            "the official z coder needs torchac 0.9.3, which compiles a C++ extension on first import: "
            "`pip install torchac==0.9.3 ninja` and a C++ compiler (set z_coding='fixed_length' or "
            f"'rans_uniform' to avoid it): {exc}"
        ) from exc
    except Exception as exc:  # build failures surface as RuntimeError/CalledProcessError from torch's loader
        raise RuntimeError(
            f"torchac could not build its C++ extension (needs ninja and a C++ compiler; cache dir "
            f"{os.environ['TORCH_EXTENSIONS_DIR']}): {exc}; build output: {captured.get('text', '')[-2000:]}"
        ) from exc
    return torchac


@contextlib.contextmanager
def _quiet_fds() -> Iterator[dict[str, str]]:
    """Send file descriptors 1 and 2 (what subprocesses such as ninja write to) to a temporary file; what was
    written is in the yielded dict's ``text`` afterwards."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    captured: dict[str, str] = {}
    with tempfile.TemporaryFile(mode="w+") as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            captured["text"] = sink.read()


def uniform_float_cdf(h_z: int, w_z: int, levels: int):
    """[1, h_z, w_z, levels + 1] float32: k / levels (exact in float32 for power-of-two levels), last = 1.0."""
    import torch

    cdf = torch.arange(levels + 1, dtype=torch.float32) / levels
    cdf[-1] = 1.0
    return cdf.reshape(1, 1, 1, -1).expand(1, h_z, w_z, levels + 1).contiguous()


def _rans_uniform_table(levels: int) -> tuple[list[int], int]:
    """A 16-bit compressai CDF over ``levels`` symbols plus the escape symbol (freq 1, never used)."""
    total = 1 << 16
    if levels + 1 > total:
        raise ValueError("codebook too large for a 16-bit rANS table")
    freqs = [total // levels] * levels
    freqs[0] += total - sum(freqs) - 1  # leave one count for the escape symbol
    cdf = [0]
    for f in [*freqs, 1]:
        cdf.append(cdf[-1] + f)
    return cdf, len(cdf)


def encode_z(indices: np.ndarray, levels: int, coding: str) -> bytes:
    """indices: int array [h_z, w_z] in [0, levels)."""
    flat = np.asarray(indices, dtype=np.int64).reshape(-1)
    h_z, w_z = indices.shape
    if coding == "torchac":
        import torch

        torchac = import_torchac()
        sym = torch.from_numpy(flat.astype(np.int16).reshape(1, h_z, w_z))
        return torchac.encode_float_cdf(uniform_float_cdf(h_z, w_z, levels), sym, check_input_bounds=True)
    if coding == "rans_uniform":
        from compressai.ans import RansEncoder

        cdf, size = _rans_uniform_table(levels)
        return RansEncoder().encode_with_indexes(flat.tolist(), [0] * flat.size, [cdf], [size], [0])
    if coding == "fixed_length":
        bits = max(1, math.ceil(math.log2(levels)))
        as_bits = ((flat[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8).reshape(-1)
        return np.packbits(as_bits).tobytes()
    raise ValueError(f"unknown z_coding {coding!r}; known: {', '.join(Z_CODINGS)}")


def decode_z(z_string: bytes, h_z: int, w_z: int, levels: int, coding: str) -> np.ndarray:
    """The mirror of ``encode_z``; raises BitstreamError when decoded indices fall outside the codebook."""
    n = h_z * w_z
    if coding == "torchac":
        torchac = import_torchac()
        out = torchac.decode_float_cdf(uniform_float_cdf(h_z, w_z, levels), z_string).numpy().astype(np.int64)
    elif coding == "rans_uniform":
        from compressai.ans import RansDecoder

        cdf, size = _rans_uniform_table(levels)
        out = np.asarray(RansDecoder().decode_with_indexes(z_string, [0] * n, [cdf], [size], [0]), dtype=np.int64)
    elif coding == "fixed_length":
        bits = max(1, math.ceil(math.log2(levels)))
        need = math.ceil(n * bits / 8)
        if len(z_string) != need:
            raise BitstreamError(f"fixed-length z string has {len(z_string)} bytes, expected {need}")
        as_bits = np.unpackbits(np.frombuffer(z_string, dtype=np.uint8))[: n * bits].reshape(n, bits)
        out = (as_bits.astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(axis=1)
    else:
        raise ValueError(f"unknown z_coding {coding!r}; known: {', '.join(Z_CODINGS)}")
    out = out.reshape(h_z, w_z)
    if out.size and (out.min() < 0 or out.max() >= levels):
        raise BitstreamError(f"decoded VQ index outside the {levels}-entry codebook")
    return out
