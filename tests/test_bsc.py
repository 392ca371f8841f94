from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from corruptions.base import CorruptionError
from corruptions.bsc import BinarySymmetricChannel


def _stream(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_flip_counts_follow_binomial():
    n_bytes, ber, trials = 500, 2e-3, 4000
    data = _stream(n_bytes)
    ch = BinarySymmetricChannel(ber=ber)
    rng = np.random.default_rng(12345)
    counts = np.array([ch.apply(data, ((0, n_bytes),), rng).actual_flips for _ in range(trials)])
    n_bits = n_bytes * 8
    # Chi-square goodness of fit against Binomial(N, p), bins pooled so every expectation is >= 5.
    pmf = stats.binom(n_bits, ber).pmf(np.arange(0, 25))
    expected = np.append(pmf, 1 - pmf.sum()) * trials
    observed = np.append(np.bincount(np.minimum(counts, 25), minlength=26)[:25], (counts >= 25).sum())
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3
    # and the zero-flip fraction matches (1-p)^N within 4 standard errors
    p0 = (1 - ber) ** n_bits
    assert abs((counts == 0).mean() - p0) < 4 * np.sqrt(p0 * (1 - p0) / trials)


def test_records_exposure_and_probabilities():
    data = _stream(100)
    r = BinarySymmetricChannel(ber=1e-3).apply(data, ((10, 60),), np.random.default_rng(1))
    assert r.bits_exposed == 400
    assert r.expected_flips == pytest.approx(0.4)
    assert r.p_error_free == pytest.approx((1 - 1e-3) ** 400)
    diff = np.frombuffer(r.data, np.uint8) ^ np.frombuffer(data, np.uint8)
    assert int(np.unpackbits(diff).sum()) == r.actual_flips


def test_only_the_scope_is_touched():
    data = _stream(1000)
    r = BinarySymmetricChannel(ber=0.2).apply(data, ((100, 200), (500, 600)), np.random.default_rng(2))
    a, b = np.frombuffer(data, np.uint8), np.frombuffer(r.data, np.uint8)
    changed = np.nonzero(a != b)[0]
    assert changed.size > 50
    assert np.all(((changed >= 100) & (changed < 200)) | ((changed >= 500) & (changed < 600)))


def test_ber_zero_is_identity_and_bad_values_fail():
    data = _stream(300)
    assert BinarySymmetricChannel(ber=0.0).apply(data, ((0, 300),), np.random.default_rng(3)).data == data
    for bad in (-0.1, 0.7, "0.1"):
        with pytest.raises(CorruptionError):
            BinarySymmetricChannel(ber=bad)
    with pytest.raises(CorruptionError, match="unknown parameter"):
        BinarySymmetricChannel(ber=0.1, burst=3)
