"""DICM's file format (ours: the official code writes no file, BRIEF §3) and its rANS strings.

Layout (big-endian, 16 bytes of header)::

    offset  size  field
    0       2     magic b"DM"
    2       1     format version (1)
    3       1     rate index: which rate point's model wrote the stream (a decoder with another refuses it)
    4       2     height of the original image, pixels (uint16)
    6       2     width  (uint16)
    8       4     length of the z string, bytes (uint32)
    12      4     length of the y string, bytes (uint32)
    16      lz    z string: rANS, EntropyBottleneck tables, symbols round(z - median), channel-major
    16+lz   ly    y string: rANS, GaussianConditional tables indexed by the scale, symbols round(y - mean)

Segments for the channel: ``header`` (bytes 0-15), ``z``, ``y``; ``payload`` = z + y. The grids (y: C_y x H/16 x
W/16 after padding, z: C_z x H/64 x W/64) follow from the header's size and the codec config, so nothing in the
stream sizes an allocation: :func:`unpack` checks every field against the size the harness expects before
anything is decoded, and the rANS decoder reads a zero-padded copy of each string (compressai's decoder reads past
the end of a corrupted string; with the padding it reads zeros, deterministically, instead of heap memory).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"DM"
VERSION = 1
HEADER_BYTES = 16
#: compressai's rANS coder flushes its 32-bit state at the end of every string: a valid string has >= 4 bytes.
MIN_STRING = 4
_HEADER = struct.Struct(">2sBBHHII")


class BitstreamError(ValueError):
    """A file that is not a valid DICM stream for this codec (truncated, inconsistent or impossible fields)."""


@dataclass(frozen=True)
class Container:
    rate_index: int
    height: int
    width: int
    z_string: bytes
    y_string: bytes

    def pack(self) -> bytes:
        if not (0 < self.height < 65536 and 0 < self.width < 65536):
            raise BitstreamError(f"image of {self.width}x{self.height} does not fit the 16-bit size fields")
        head = _HEADER.pack(
            MAGIC, VERSION, self.rate_index, self.height, self.width, len(self.z_string), len(self.y_string)
        )
        return head + self.z_string + self.y_string

    def segments(self) -> dict[str, tuple[tuple[int, int], ...]]:
        return segments_of(len(self.z_string), len(self.y_string))


def segments_of(lz: int, ly: int) -> dict[str, tuple[tuple[int, int], ...]]:
    """The byte map of a stream whose strings have these lengths: ``header``, ``z``, ``y``; ``payload`` = z + y."""
    z = ((HEADER_BYTES, HEADER_BYTES + lz),)
    y = ((HEADER_BYTES + lz, HEADER_BYTES + lz + ly),)
    return {"header": ((0, HEADER_BYTES),), "payload": z + y, "z": z, "y": y}


def read_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(rate index, height, width, len_z, len_y) of a stream, or :class:`BitstreamError` (no size checks)."""
    if len(data) < HEADER_BYTES:
        raise BitstreamError(f"file of {len(data)} bytes is shorter than the {HEADER_BYTES}-byte header")
    magic, version, rate_index, height, width, lz, ly = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise BitstreamError(f"not a DICM stream (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise BitstreamError(f"DICM stream format version {version}; this decoder reads version {VERSION}")
    return rate_index, height, width, lz, ly


def unpack(data: bytes, rate_index: int) -> Container:
    """Parse and validate the container against this decoder's rate index (no allocation beyond the input)."""
    got_index, height, width, lz, ly = read_header(data)
    if got_index != rate_index:
        raise BitstreamError(f"stream written by the model of rate index {got_index}; this decoder is {rate_index}")
    if HEADER_BYTES + lz + ly != len(data):
        raise BitstreamError(
            f"header lengths z={lz} + y={ly} bytes do not end the file ({HEADER_BYTES + lz + ly} != {len(data)})"
        )
    if lz < MIN_STRING or ly < MIN_STRING:
        raise BitstreamError(f"z string of {lz} or y string of {ly} bytes: a valid stream has >= {MIN_STRING} each")
    z = bytes(data[HEADER_BYTES : HEADER_BYTES + lz])
    return Container(got_index, height, width, z, bytes(data[HEADER_BYTES + lz :]))


# -- rANS -------------------------------------------------------------------------------------------------------
def _tables(entropy_model) -> tuple[list, list, list]:
    if entropy_model._quantized_cdf.numel() == 0:
        raise RuntimeError("entropy tables are empty: call update() after loading weights")
    return (
        entropy_model._quantized_cdf.tolist(),
        entropy_model._cdf_length.reshape(-1).int().tolist(),
        entropy_model._offset.reshape(-1).int().tolist(),
    )


def rans_encode(symbols: np.ndarray, indexes: np.ndarray, entropy_model) -> bytes:
    """One rANS string of integer ``symbols`` coded with the CDFs ``indexes`` select (same shapes)."""
    from compressai.ans import RansEncoder

    cdf, lengths, offsets = _tables(entropy_model)
    return RansEncoder().encode_with_indexes(
        np.asarray(symbols, dtype=np.int64).reshape(-1).tolist(),
        np.asarray(indexes, dtype=np.int64).reshape(-1).tolist(),
        cdf,
        lengths,
        offsets,
    )


def rans_decode(string: bytes, indexes: np.ndarray, entropy_model) -> np.ndarray:
    """The integer symbols of ``string`` (shaped like ``indexes``). The string is zero-padded (bound: one 32-bit
    refill per symbol plus the escape path's reads, which stop at zero bits) so a corrupted one cannot make the
    decoder read memory after it."""
    from compressai.ans import RansDecoder

    cdf, lengths, offsets = _tables(entropy_model)
    flat = np.asarray(indexes, dtype=np.int64).reshape(-1)
    decoder = RansDecoder()
    decoder.set_stream(string + bytes(8 * flat.size + 1024))
    values = decoder.decode_stream(flat.tolist(), cdf, lengths, offsets)
    return np.asarray(values, dtype=np.int64).reshape(np.shape(indexes))
