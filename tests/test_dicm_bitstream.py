"""DICM's container and its untrusted parse: every field checked against the expected image before anything is
decoded, structurally impossible files refused (ValueError subclass), another image's header refused
(InvalidOutput), corrupted strings never crash the decoder, and the file's bits next to the likelihood estimate."""

from __future__ import annotations

import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import HANG_GUARD_S

from harness.codecs.base import InvalidOutput
from harness.codecs.dicm.bitstream import HEADER_BYTES, BitstreamError, Container, read_header, unpack

SIZE = (64, 128)


@pytest.fixture(scope="module")
def codec():
    from harness.codecs.dicm.codec import DICM

    return DICM(config="test", allow_random_weights=True, steps=2)


@pytest.fixture(scope="module")
def pair():
    from harness.datasets.stereo_synth import stereo_pair

    return stereo_pair(5, *SIZE)


@pytest.fixture(scope="module")
def stream(codec, pair):
    return codec.encode(pair[0])


def test_container_layout_and_segments():
    box = Container(3, 64, 128, b"zzzzz", b"yyyyyyy")
    data = box.pack()
    assert len(data) == HEADER_BYTES + 12 and data[:2] == b"DM"
    assert read_header(data) == (3, 64, 128, 5, 7)
    seg = box.segments()
    assert seg == {"header": ((0, 16),), "payload": ((16, 21), (21, 28)), "z": ((16, 21),), "y": ((21, 28),)}
    assert unpack(data, 3) == box


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d[:10], "shorter than the 16-byte header"),
        (lambda d: b"XX" + d[2:], "not a DICM stream"),
        (lambda d: d[:2] + b"\x07" + d[3:], "format version 7"),
        (lambda d: d[:3] + b"\x09" + d[4:], "rate index 9"),
        (lambda d: d[:-1], "do not end the file"),
        (lambda d: d + b"\x00", "do not end the file"),
        (lambda d: d[:8] + struct.pack(">II", 2, len(d) - 18) + d[16:], ">= 4 each"),
    ],
)
def test_structurally_impossible_files_raise_a_value_error(codec, stream, mutate, match):
    with pytest.raises(BitstreamError, match=match) as err:
        codec.parse(mutate(stream.data), SIZE)
    assert isinstance(err.value, ValueError)


def test_a_header_declaring_another_image_is_refused_before_decoding(codec, stream):
    other = stream.data[:4] + struct.pack(">HH", 640, 1280) + stream.data[8:]
    with pytest.raises(InvalidOutput, match="declares a 640 x 1280 image"):
        codec.parse(other, SIZE)
    with pytest.raises(InvalidOutput, match="declares a 64 x 128 image"):
        codec.parse(stream.data, (64, 192))


def test_parse_returns_exactly_the_declared_state_and_is_deterministic(codec, stream, pair):
    state = codec.parse_checked(stream.data, SIZE)
    (cy, hy, wy), (cz, hz, wz) = codec.grids(*SIZE)
    assert state["y_hat"].shape == (1, cy, hy, wy) and state["z_hat"].shape == (1, cz, hz, wz)
    assert sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray)) <= codec.max_state_bytes(SIZE)
    again = codec.parse(stream.data, SIZE)
    assert np.array_equal(state["y_hat"], again["y_hat"]) and np.array_equal(state["z_hat"], again["z_hat"])
    # the decoder's y_hat is the encoder's (round(y - mean) + mean)
    import torch

    from harness.codecs.dicm.codec import pad_image, to_model_input

    lat = codec.compressor().latents(to_model_input(pad_image(pair[0], 64)))
    np.testing.assert_array_equal(state["y_hat"], lat["y_hat"].numpy())
    np.testing.assert_array_equal(state["z_hat"], lat["z_hat"].numpy())
    assert torch.is_tensor(lat["y"])


def test_segments_cover_the_file_and_name_the_scopes(stream):
    assert stream.scope_names() == ("all", "payload", "header", "y", "z")
    assert stream.header_bytes == HEADER_BYTES
    (z0, z1), (y0, y1) = stream.segments["z"][0], stream.segments["y"][0]
    assert z0 == HEADER_BYTES and z1 == y0 and y1 == len(stream.data)


def test_corrupted_streams_never_crash_the_parser():
    """Bit flips in z and y, decoded in a child process (a segfault would show as a negative return code):
    every parse either raises or returns finite-shaped state; compressai's decoder reads the zero padding."""
    code = textwrap.dedent(
        """
        import numpy as np
        from harness.codecs.dicm.codec import DICM
        from harness.codecs.base import InvalidOutput
        from harness.datasets.stereo_synth import stereo_pair
        codec = DICM(config="test", allow_random_weights=True)
        data = bytearray(codec.encode(stereo_pair(1, 64, 128)[0]).data)
        rng = np.random.default_rng(0)
        outcomes = {"ok": 0, "refused": 0}
        for trial in range(60):
            bad = bytearray(data)
            for pos in rng.integers(16, len(bad), size=int(rng.integers(1, 6))):
                bad[pos] ^= 1 << int(rng.integers(0, 8))
            try:
                state = codec.parse_checked(bytes(bad), (64, 128))
                assert state["y_hat"].shape[0] == 1
                outcomes["ok"] += 1
            except (InvalidOutput, ValueError):
                outcomes["refused"] += 1
        print(outcomes)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ok" in proc.stdout


def test_the_rate_report_puts_file_bits_beside_the_likelihood_estimate(codec, stream, pair):
    report = codec.rate_report(stream.data, SIZE)
    pixels = SIZE[0] * SIZE[1]
    assert report["bpp"] == pytest.approx(8 * len(stream.data) / pixels)
    assert report["header_bpp"] == pytest.approx(8 * HEADER_BYTES / pixels)
    assert report["z_bpp"] + report["y_bpp"] + report["header_bpp"] == pytest.approx(report["bpp"])
    assert report["estimated_bpp"] > 0
    _, enc_report = codec.encode_with_report(pair[0])
    assert enc_report == pytest.approx(report)
