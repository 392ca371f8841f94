"""RDEIC bitstream: exact round trips, the official layout written independently, hostile headers."""

from __future__ import annotations

import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import Bitstream  # noqa: E402
from harness.codecs.rdeic.bitstream import (  # noqa: E402
    BitstreamError,
    decode_z,
    encode_z,
    unpack,
)
from harness.codecs.rdeic.codec import RDEIC  # noqa: E402


def _image(h: int = 100, w: int = 130) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 2, (xx + yy)], axis=-1) % 256
    return np.clip(base + rng.integers(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def codec():
    return RDEIC(config="test", allow_random_weights=True)


def _feature(codec: RDEIC, image: np.ndarray) -> torch.Tensor:
    h, w = image.shape[:2]
    x = np.zeros((-(-h // 64) * 64, -(-w // 64) * 64, 3), np.float32)
    x[:h, :w] = image / 255.0
    return codec.model().encode_feature(torch.from_numpy(x).permute(2, 0, 1)[None])


@pytest.mark.parametrize("z_coding", ["torchac", "rans_uniform", "fixed_length"])
def test_encode_file_parse_equals_in_memory_forward(z_coding):
    codec = RDEIC(config="test", allow_random_weights=True, z_coding=z_coding)
    image = _image()
    bs = codec.encode(image)
    state = codec.parse(bs.data, image.shape[:2])
    ref = codec.compression().forward_quantized(_feature(codec, image))
    assert state["y_hat"].dtype == np.float32
    assert np.abs(state["y_hat"] - ref["y_hat"].numpy()).max() == 0.0
    # and downstream: identical c_latent / guide_hint from the decoded file
    gh, c = codec.compression().synthesis(torch.from_numpy(state["y_hat"]))
    assert torch.equal(c, ref["c_latent"]) and torch.equal(gh, ref["guide_hint"])


def test_segment_map(codec):
    bs = codec.encode(_image())
    ly = struct.unpack_from(">I", bs.data, 12)[0]
    lz = struct.unpack_from(">I", bs.data, 16 + ly)[0]
    assert bs.segments["header"] == ((0, 16), (16 + ly, 20 + ly))
    assert bs.segments["y"] == ((16, 16 + ly),) and bs.segments["z"] == ((20 + ly, 20 + ly + lz),)
    assert bs.header_bytes == 20 and len(bs.data) == 20 + ly + lz
    assert Bitstream.from_json(bs.data, bs.segments_json()).scope_names() == ("all", "payload", "header", "y", "z")
    assert struct.unpack_from(">III", bs.data, 0) == (2, 3, 2)  # 100x130 -> padded 128x192 -> z 2x3, 2 strings


# -- the official layout, written here without the codec's coder (struct + torchac + compressai) -------------------
def _official_file(comp, feature: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    """SPEC §3 followed literally, with boolean masks instead of the codec's squeeze helpers."""
    from compressai.ans import BufferedRansEncoder

    from harness.codecs.rdeic.bitstream import import_torchac

    torchac = import_torchac()
    with torch.no_grad():
        y = comp.analysis(feature)
        z = comp.hyper_enc(y)
        e = comp.quantize.embedding.weight
        d = ((z.permute(0, 2, 3, 1)[..., None, :] - e) ** 2).sum(-1)  # 1 x h x w x L, direct squared L2
        indices = d.argmin(-1)
        hp = comp.hyper_dec(e[indices].permute(0, 3, 1, 2).contiguous())  # layout changes conv rounding
        hh, ww = y.shape[2:]
        rows, cols = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
        anchor = (rows + cols) % 2 == 1
        gc = comp.gaussian_conditional
        syms, idxs, done = [], [], []
        start = 0
        for i, c in enumerate(comp.cfg.slice_ch):
            ys = y[:, start : start + c]
            start += c
            ctx = comp.channel_context[i](torch.cat(done, 1)) if i else None
            s, m = comp.entropy_parameters_anchor[i](torch.cat([ctx, hp], 1) if i else hp).split(c, 1)
            q = torch.round(ys - m)
            syms += q[0][:, anchor].reshape(-1).int().tolist()  # (channel, row, col) order
            idxs += gc.build_indexes(s[0][:, anchor]).reshape(-1).tolist()
            ya = torch.where(anchor, q + m, torch.zeros_like(m))
            sp = comp.local_context[i](ya)
            s, m = comp.entropy_parameters_nonanchor[i](
                torch.cat([sp, ctx, hp], 1) if i else torch.cat([sp, hp], 1)
            ).split(c, 1)
            q = torch.round(ys - m)
            syms += q[0][:, ~anchor].reshape(-1).int().tolist()
            idxs += gc.build_indexes(s[0][:, ~anchor]).reshape(-1).tolist()
            done.append(ya + torch.where(anchor, torch.zeros_like(m), q + m))
        enc = BufferedRansEncoder()
        enc.encode_with_indexes(
            syms,
            idxs,
            gc._quantized_cdf.tolist(),
            gc._cdf_length.reshape(-1).int().tolist(),
            gc._offset.reshape(-1).int().tolist(),
        )
        y_string = enc.flush()
        levels = e.shape[0]
        hz, wz = indices.shape[1:]
        cdf = (torch.arange(levels + 1, dtype=torch.float32) / levels).repeat(1, hz, wz, 1)
        cdf[..., -1] = 1.0
        z_string = torchac.encode_float_cdf(cdf, indices.to(torch.int16))
    data = struct.pack(">III", hz, wz, 2) + struct.pack(">I", len(y_string)) + y_string
    data += struct.pack(">I", len(z_string)) + z_string
    return data, torch.cat(done, 1)


def test_official_layout_decodes_and_codec_writes_the_same_bytes(codec):
    image = _image()
    data, y_hat = _official_file(codec.compression(), _feature(codec, image))
    state = codec.parse(data, image.shape[:2])  # official -> ours
    assert np.abs(state["y_hat"] - y_hat.numpy()).max() == 0.0
    assert codec.encode(image).data == data  # ours -> official (byte-identical file)


def test_torchac_uniform_cdf_cost_matches_measurement():
    # ENVIRONMENT.md: with a uniform float CDF over 16384 symbols, 6 indices take 11 bytes.
    idx = np.array([[0, 16383, 5], [7000, 123, 9999]])
    s = encode_z(idx, 16384, "torchac")
    assert len(s) == 11
    assert np.array_equal(decode_z(s, 2, 3, 16384, "torchac"), idx)


@pytest.mark.parametrize("coding", ["torchac", "rans_uniform", "fixed_length"])
def test_z_codings_round_trip(coding):
    idx = np.random.default_rng(1).integers(0, 16384, size=(4, 5))
    idx[0, 0], idx[0, 1] = 0, 16383
    s = encode_z(idx, 16384, coding)
    assert np.array_equal(decode_z(s, 4, 5, 16384, coding), idx)
    if coding == "fixed_length":
        assert len(s) == (20 * 14 + 7) // 8


def _with(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack(">I", value) + data[offset + 4 :]


def test_hostile_headers_raise_before_allocating(codec):
    data = codec.encode(_image()).data
    ly = struct.unpack_from(">I", data, 12)[0]
    bad = {
        "truncated": data[:10],
        "empty": b"",
        "n_strings": _with(data, 8, 3),
        "huge_hz": _with(data, 0, 0xFFFFFFFF),
        "zero_wz": _with(data, 4, 0),
        "huge_grid": _with(_with(data, 0, 1000), 4, 1000),
        "y_len_past_end": _with(data, 12, 0xFFFFFFF0),
        "z_len_wrong": _with(data, 16 + ly, 1 << 30),
        "trailing": data + b"\0",
    }
    for name, blob in bad.items():
        with pytest.raises(BitstreamError):
            codec.parse(blob, (100, 130))
        with pytest.raises(BitstreamError):
            unpack(blob)
        assert name


def test_fixed_length_rejects_wrong_size_and_out_of_range():
    with pytest.raises(BitstreamError):
        decode_z(b"\0\0", 2, 2, 16384, "fixed_length")
    s = encode_z(np.array([[3, 5]]), 6, "fixed_length")  # 3 bits: 6 and 7 are not codebook entries
    flipped = bytes([s[0] | 0b11100000])
    with pytest.raises(BitstreamError):
        decode_z(flipped, 1, 2, 6, "fixed_length")


def test_parsing_a_corrupted_stream_is_deterministic():
    """compressai's rANS decoder reads past the end of a corrupted string; before the y string was zero-padded it
    read heap garbage, and the same corrupted bytes decoded to a different y_hat on every call."""
    import hashlib

    from corruptions.bsc import BinarySymmetricChannel
    from harness.codecs.base import create_codec
    from harness.datasets.base import data_root, load_rgb

    codec = create_codec("rdeic-tiny@low")
    bits = codec.encode(load_rgb(data_root() / "samples" / "coffee.png")[:128, :128])
    assert codec.parse(bits.data, (128, 128))["y_hat"].shape[0] == 1
    outcomes = []
    for k in range(8):
        data = BinarySymmetricChannel(ber=3e-3).apply(bits.data, bits.ranges("y"), np.random.default_rng(k)).data
        seen = set()
        for _ in range(3):
            try:
                seen.add(hashlib.sha256(codec.parse(data, (128, 128))["y_hat"].tobytes()).hexdigest())
            except Exception as exc:  # a refused stream must be refused every time, the same way
                seen.add(f"{type(exc).__name__}: {exc}")
        outcomes.append(seen)
    assert all(len(s) == 1 for s in outcomes), outcomes


def test_structurally_impossible_files_are_refused_not_decoded_as_zeros(codec):
    """An empty y (or z) string used to parse ok: the zero-padded rANS decoder turned it into a plausible latent."""
    from harness.codecs.rdeic.bitstream import Container

    box = unpack(codec.encode(_image()).data)
    for name, blob in {
        "empty y": Container(box.h_z, box.w_z, b"", box.z_string).pack(),
        "empty z": Container(box.h_z, box.w_z, box.y_string, b"").pack(),
        "3-byte y": Container(box.h_z, box.w_z, box.y_string[:3], box.z_string).pack(),
    }.items():
        with pytest.raises(BitstreamError, match="a valid file has"):
            codec.parse(blob, (100, 130))
        assert name


def test_a_header_declaring_another_grid_is_refused_before_decoding(codec):
    """Five flipped header bits declared a 2049 x 1 grid: parse said ok and the diffusion ran at 131136 x 64 px
    in the main process. The grid must be the one the original's padded size gives."""
    from harness.codecs.base import InvalidOutput

    data = codec.encode(_image()).data  # 100 x 130 -> padded 128 x 192 -> grid 2 x 3
    assert codec.z_grid(100, 130) == (2, 3)
    for h_z, w_z in ((2049, 1), (3, 2), (1, 3)):
        with pytest.raises(InvalidOutput, match="hyper-latent grid"):
            codec.parse(_with(_with(data, 0, h_z), 4, w_z), (100, 130))
    with pytest.raises(InvalidOutput, match="hyper-latent grid"):
        codec.parse(data, (300, 130))  # the same stream, measured against another image
