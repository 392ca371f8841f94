"""Every bitstream channel stays inside its scope, and is an exact identity at its zero level."""

from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import create_codec
from harness.datasets import create_dataset
from harness.registry import CORRUPTIONS

CHANNELS = {
    "bsc": {"ber": 0.05},
    "burst": {"ber": 0.05, "mean_burst_bits": 16},
    "burst_fixed": {"ber": 0.05},
}


@pytest.fixture(scope="module")
def stream():
    ds = create_dataset("samples")
    return create_codec("jpeg2000", target_bpp=0.5).encode(ds.load(ds.entries()[0]))


@pytest.mark.parametrize("name", sorted(CHANNELS))
@pytest.mark.parametrize("scope", ["header", "payload", "all"])
def test_channel_never_touches_bytes_outside_its_scope(name, scope, stream):
    channel = CORRUPTIONS.get(name)(**CHANNELS[name])
    ranges = stream.ranges(scope)
    inside = np.zeros(len(stream.data), dtype=bool)
    for a, b in ranges:
        inside[a:b] = True
    rng = np.random.default_rng(0)
    for _ in range(5):
        out = channel.apply(stream.data, ranges, rng)
        before, after = np.frombuffer(stream.data, np.uint8), np.frombuffer(out.data, np.uint8)
        assert np.array_equal(before[~inside], after[~inside])
        assert out.bits_exposed == 8 * int(inside.sum())
        assert out.actual_flips == int(np.unpackbits(before ^ after).sum())
    assert scope == "header" or out.actual_flips > 0


@pytest.mark.parametrize("name", sorted(CHANNELS))
def test_zero_level_is_identity(name, stream):
    cls = CORRUPTIONS.get(name)
    out = cls(**cls.identity_params()).apply(stream.data, stream.ranges("all"), np.random.default_rng(1))
    assert out.data == stream.data and out.actual_flips == 0 and out.p_error_free == 1.0
