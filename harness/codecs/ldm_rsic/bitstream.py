"""Our LDM-RSIC file container (the official code writes no file: its 11 strings stay in memory, brief §3).

Layout (big-endian), 59 bytes of header, then the strings in coding order::

    0   4s  magic b"LRSC"
    4   u8  version (1)
    5   u8  λ index into config.LAMBDAS (0.0004, 0.0008, 0.0032, 0.01, 0.045)
    6   u16 original height      8  u16 original width
    10  u16 z height             12 u16 z width          (= padded size / 64)
    14  u8  number of y slices (5)
    15  11 x u32 string lengths: z, y.s0.a, y.s0.n, ..., y.s4.a, y.s4.n
    59  z | y.s0.a | y.s0.n | ... | y.s4.n

Segments (what a suite can target): ``header`` (bytes 0-58), ``z``, ``y`` (all y strings, contiguous), one per
string ``y.s{i}.a`` (anchors) / ``y.s{i}.n`` (non-anchors), ``payload`` = z + y. bpp counts every byte over the
original (unpadded) pixels. ``unpack`` checks every field before anything is sized by it and never reads past
the input; the codec checks the declared image against the original's size (``InvalidOutput``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"LRSC"
VERSION = 1
N_SLICES = 5
N_STRINGS = 1 + 2 * N_SLICES
_FIXED = struct.Struct(">4sBBHHHHB")
HEADER_BYTES = _FIXED.size + 4 * N_STRINGS  # 59
#: compressai's rANS coder flushes its state at the end of every string: a valid string is never shorter.
MIN_STRING = 4
#: segment names after ``header``/``payload``, in file order
STRING_NAMES = ("z", *(f"y.s{i}.{k}" for i in range(N_SLICES) for k in ("a", "n")))


class BitstreamError(ValueError):
    """Not a valid LDM-RSIC container (truncated, wrong magic/version, inconsistent or absurd fields)."""


@dataclass(frozen=True)
class Container:
    lam_index: int
    height: int
    width: int
    z_height: int
    z_width: int
    strings: tuple[bytes, ...]  # z, then y.s{i}.a / y.s{i}.n

    def pack(self) -> bytes:
        if len(self.strings) != N_STRINGS:
            raise ValueError(f"an LDM-RSIC file holds {N_STRINGS} strings, got {len(self.strings)}")
        head = _FIXED.pack(MAGIC, VERSION, self.lam_index, self.height, self.width, self.z_height, self.z_width,
                           N_SLICES)  # fmt: skip
        lengths = struct.pack(f">{N_STRINGS}I", *(len(s) for s in self.strings))
        return head + lengths + b"".join(self.strings)

    def segments(self) -> dict[str, tuple[tuple[int, int], ...]]:
        out: dict[str, tuple[tuple[int, int], ...]] = {"header": ((0, HEADER_BYTES),)}
        pos = HEADER_BYTES
        for name, s in zip(STRING_NAMES, self.strings, strict=True):
            out[name] = ((pos, pos + len(s)),)
            pos += len(s)
        y_start = HEADER_BYTES + len(self.strings[0])
        out["y"] = ((y_start, pos),)
        out["payload"] = ((HEADER_BYTES, pos),)
        return out

    @property
    def z_string(self) -> bytes:
        return self.strings[0]

    @property
    def y_strings(self) -> list[bytes]:
        return list(self.strings[1:])


def unpack(data: bytes) -> Container:
    """Parse and validate the container; raises ``BitstreamError`` (no allocation beyond the input's size)."""
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"file of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, lam_index, h, w, zh, zw, n_slices = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError(f"magic {magic!r} is not {MAGIC!r}: not an LDM-RSIC file")
    if version != VERSION:
        raise BitstreamError(f"container version {version}; this decoder reads version {VERSION}")
    if n_slices != N_SLICES:
        raise BitstreamError(f"header declares {n_slices} y slices; the file format has {N_SLICES}")
    if lam_index >= 5:
        raise BitstreamError(f"λ index {lam_index} outside the five official rate points")
    if h < 1 or w < 1:
        raise BitstreamError(f"image size {h} x {w} is empty")
    if (zh, zw) != (-(-h // 64), -(-w // 64)):
        raise BitstreamError(f"z grid {zh} x {zw} does not belong to a {h} x {w} image (padded / 64)")
    lengths = struct.unpack_from(f">{N_STRINGS}I", data, _FIXED.size)
    if sum(lengths) != len(data) - HEADER_BYTES:
        raise BitstreamError(
            f"string lengths add up to {sum(lengths)} bytes; the file holds {len(data) - HEADER_BYTES} after the header"
        )
    if min(lengths) < MIN_STRING:
        # structurally impossible: rANS always flushes its state. (A zero-padded decoder would otherwise turn an
        # empty string into a plausible latent.)
        raise BitstreamError(f"a string of {min(lengths)} bytes: every valid string has >= {MIN_STRING}")
    strings = []
    pos = HEADER_BYTES
    for n in lengths:
        strings.append(bytes(data[pos : pos + n]))
        pos += n
    return Container(lam_index, h, w, zh, zw, tuple(strings))
