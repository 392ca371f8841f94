from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import CodecError, create_codec
from harness.codecs.jpeg2000 import main_header_length
from harness.datasets import create_dataset
from harness.metrics import create_metric


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    ds = create_dataset("samples")
    return ds.load(ds.entries()[0])


def test_round_trip_rate_and_quality(image):
    codec = create_codec("jpeg2000", target_bpp=0.5)
    stream = codec.encode(image)
    bpp = 8 * len(stream.data) / (image.shape[0] * image.shape[1])
    assert 0.35 < bpp <= 0.55  # OpenJPEG's ratio control is approximate, never far over
    out = codec.decode(stream.data, image.shape[:2])
    assert out.shape == image.shape and out.dtype == np.uint8
    assert create_metric("psnr")(out, image) > 24.0


def test_segment_map_splits_at_first_sot(image):
    stream = create_codec("jpeg2000", target_bpp=0.25).encode(image)
    ((h0, h1),) = stream.segments["header"]
    ((p0, p1),) = stream.segments["payload"]
    assert h0 == 0 and h1 == p0 and p1 == len(stream.data)
    assert stream.data[:2] == b"\xff\x4f" and stream.data[p0 : p0 + 2] == b"\xff\x90"
    assert stream.header_bytes == h1


def test_fingerprint_changes_with_options():
    a = create_codec("jpeg2000", target_bpp=0.25)
    assert a.fingerprint() == create_codec("jpeg2000", target_bpp=0.25).fingerprint()
    assert a.fingerprint() != create_codec("jpeg2000", target_bpp=0.5).fingerprint()
    assert "openjpeg" in a.library_versions()


def test_bad_options_are_clear():
    with pytest.raises(CodecError, match="unknown option"):
        create_codec("jpeg2000", cratio=10)
    with pytest.raises(CodecError, match="target_bpp"):
        create_codec("jpeg2000", target_bpp=0)
    with pytest.raises(CodecError, match="SOC"):
        main_header_length(b"not a codestream")
