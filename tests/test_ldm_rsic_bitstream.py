"""LDM-RSIC's container and ELIC coding: exact round trips, the segment map, hostile headers refused before any
allocation, corrupted streams parsed deterministically (the isolated-worker path is classified like RDEIC's)."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import Bitstream, InvalidOutput  # noqa: E402
from harness.codecs.ldm_rsic.bitstream import (  # noqa: E402
    HEADER_BYTES,
    STRING_NAMES,
    BitstreamError,
    Container,
    unpack,
)
from harness.codecs.ldm_rsic.codec import LDMRSIC  # noqa: E402


def _image(h: int = 70, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1) % 256
    return np.clip(base + rng.integers(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def codec():
    return LDMRSIC(config="test", allow_random_weights=True, enhance=False)


@pytest.fixture(scope="module")
def stream(codec):
    return codec.encode(_image())


def test_parse_equals_the_encoders_latents_bit_for_bit(codec, stream):
    image = _image()
    h, w = image.shape[:2]
    x = np.zeros((128, 128, 3), np.float32)
    x[:h, :w] = image / 255.0
    strings, z_hat, y_hat = codec.elic().compress(torch.from_numpy(x).permute(2, 0, 1)[None])
    state = codec.parse(stream.data, (h, w))
    assert np.array_equal(state["y_hat"], y_hat.numpy()) and np.array_equal(state["z_hat"], z_hat.numpy())
    assert (state["height"], state["width"]) == (h, w)
    # y_hat = symbols + means: re-deriving the means from z_hat and the symbols gives y_hat back exactly
    again = codec.elic().dequantize_symbols(torch.from_numpy(state["symbols"]), torch.from_numpy(state["z_hat"]))
    assert torch.equal(again, y_hat)
    assert b"".join(strings) == stream.data[HEADER_BYTES:]


def test_header_fields_and_segment_map(codec, stream):
    data = stream.data
    assert data[:4] == b"LRSC" and data[4] == 1 and data[5] == 2  # version 1, λ index 2 (0.0032)
    assert struct.unpack_from(">HHHHB", data, 6) == (70, 90, 2, 2, 5)
    lengths = struct.unpack_from(">11I", data, 15)
    assert len(data) == HEADER_BYTES + sum(lengths) and HEADER_BYTES == 59
    seg = stream.segments
    pos = HEADER_BYTES
    for name, n in zip(STRING_NAMES, lengths, strict=True):
        assert seg[name] == ((pos, pos + n),)
        pos += n
    assert seg["header"] == ((0, 59),) and seg["payload"] == ((59, len(data)),)
    assert seg["y"] == ((59 + lengths[0], len(data)),)
    scopes = Bitstream.from_json(data, stream.segments_json()).scope_names()
    assert set(codec.segments) <= set(scopes) and "y.s4.n" in scopes
    assert stream.header_bytes == 59


def _with(data: bytes, fmt: str, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]


def test_hostile_headers_are_refused_before_decoding(codec, stream):
    data = stream.data
    bad = {
        "empty": b"",
        "truncated": data[:30],
        "magic": b"XXXX" + data[4:],
        "version": _with(data, ">B", 4, 9),
        "lambda": _with(data, ">B", 5, 7),
        "slices": _with(data, ">B", 14, 6),
        "z grid": _with(data, ">H", 10, 400),
        "huge length": _with(data, ">I", 15, 0xFFFFFFF0),
        "zero length": _with(_with(data, ">I", 15, 0), ">I", 19, struct.unpack_from(">I", data, 19)[0]),
        "trailing": data + b"\0",
        "short": data[:-1],
    }
    for name, blob in bad.items():
        with pytest.raises(BitstreamError):
            codec.parse(blob, (70, 90))
        assert name
    # the header declares another image than the original: refused as invalid output, nothing decoded
    for h, w in ((71, 90), (70, 2000)):
        blob = _with(_with(data, ">H", 6, h), ">H", 8, w)
        blob = _with(_with(blob, ">H", 10, -(-h // 64)), ">H", 12, -(-w // 64))
        with pytest.raises(InvalidOutput, match="header declares"):
            codec.parse(blob, (70, 90))
    with pytest.raises(InvalidOutput, match="header declares"):
        codec.parse(data, (128, 128))  # the same stream measured against another image


def test_a_stream_of_another_rate_point_is_refused(stream):
    other = LDMRSIC(config="test", allow_random_weights=True, enhance=False, lam=0.0008)
    with pytest.raises(BitstreamError, match="λ index 2"):
        other.parse(stream.data, (70, 90))


def test_structurally_impossible_files_are_refused_not_decoded(codec, stream):
    box = unpack(stream.data)
    for i in (0, 1, 10):
        strings = list(box.strings)
        strings[i] = b"\0\0"
        with pytest.raises(BitstreamError, match="every valid string has"):
            codec.parse(Container(box.lam_index, 70, 90, 2, 2, tuple(strings)).pack(), (70, 90))


def test_parsing_a_corrupted_stream_is_deterministic(codec, stream):
    """compressai's rANS decoder reads past the end of a corrupted string: every string is zero-padded, so the
    same corrupted bytes decode to the same latents every time (or are refused the same way)."""
    from corruptions.bsc import BinarySymmetricChannel

    for k in range(6):
        scope = ("z", "y", "y.s0.a", "payload", "y.s4.n", "y")[k]
        data = BinarySymmetricChannel(ber=5e-3).apply(stream.data, stream.ranges(scope), np.random.default_rng(k)).data
        seen = set()
        for _ in range(3):
            try:
                st = codec.parse(data, (70, 90))
                seen.add(hashlib.sha256(st["y_hat"].tobytes() + st["z_hat"].tobytes()).hexdigest())
            except Exception as exc:
                seen.add(f"{type(exc).__name__}: {exc}")
        assert len(seen) == 1, (scope, seen)


def test_state_size_bound_covers_the_state(codec, stream):
    state = codec.parse(stream.data, (70, 90))
    total = sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))
    assert total <= codec.max_state_bytes((70, 90)) < 2 * total + 2048
