"""Statistical checks of the burst channels. Fixed seeds; tolerances come from the sample sizes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from corruptions.base import CorruptionError
from corruptions.burst_fixed import PublishedFixedBursts
from corruptions.gilbert_elliott import GilbertElliott


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of runs of True that do not touch either end of the mask (those are truncated)."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    keep = (starts > 0) & (ends < mask.size)
    return (ends - starts)[keep]


def test_derived_chain_parameters():
    c = GilbertElliott(ber=0.01, mean_burst_bits=8).chain()
    assert c["p_bad_to_good"] == pytest.approx(1 / 8)
    assert c["pi_bad"] == pytest.approx(0.01)
    assert c["p_good_to_bad"] == pytest.approx((1 / 8) * 0.01 / 0.99)
    c2 = GilbertElliott(ber=0.01, mean_burst_bits=64, burst_density=0.5, good_state_ber=1e-4).chain()
    assert c2["pi_bad"] == pytest.approx((0.01 - 1e-4) / (0.5 - 1e-4))


@pytest.mark.parametrize(
    ("ber", "mean_burst", "density", "good"), [(1e-2, 8, 1.0, 0.0), (1e-3, 64, 1.0, 0.0), (2e-2, 16, 0.5, 1e-3)]
)
def test_long_run_ber(ber, mean_burst, density, good):
    ch = GilbertElliott(ber=ber, mean_burst_bits=mean_burst, burst_density=density, good_state_ber=good)
    rng = np.random.default_rng(7)
    streams, n_bits = 300, 40_000
    fractions = np.array([ch.flip_mask(n_bits, rng).mean() for _ in range(streams)])
    se = fractions.std(ddof=1) / np.sqrt(streams)  # streams are independent, bits within one are not
    assert abs(fractions.mean() - ber) < 4 * se


@pytest.mark.parametrize("mean_burst", [8, 64])
def test_burst_lengths_are_geometric(mean_burst):
    ch = GilbertElliott(ber=5e-3, mean_burst_bits=mean_burst)
    rng = np.random.default_rng(11)
    lengths = np.concatenate([_runs(ch.flip_mask(200_000, rng)) for _ in range(20)])
    assert lengths.size > 200
    # mean within 4 standard errors of the geometric mean; then a chi-square fit on pooled bins
    sd = np.sqrt(1 - 1 / mean_burst) * mean_burst
    assert abs(lengths.mean() - mean_burst) < 4 * sd / np.sqrt(lengths.size)
    # bins of integer lengths [b_i, b_{i+1} - 1], the last one open; pooled so every expectation is >= 5
    geom = stats.geom(1 / mean_burst)
    width = max(1, mean_burst // 8)
    starts = np.arange(1, 25 * width + 1, width)
    expected = np.append(geom.cdf(starts[1:] - 1) - geom.cdf(starts[:-1] - 1), geom.sf(starts[-1] - 1))
    observed = np.histogram(lengths, bins=np.append(starts - 0.5, np.inf))[0]
    expected *= lengths.size
    keep = expected >= 5
    obs = np.append(observed[keep], observed[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    obs, exp = obs[exp > 0], exp[exp > 0]
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


def test_p_error_free_matches_simulation():
    ch = GilbertElliott(ber=2e-3, mean_burst_bits=8, burst_density=0.7, good_state_ber=1e-4)
    rng = np.random.default_rng(3)
    n_bits, trials = 800, 6000
    clean = np.mean([not ch.flip_mask(n_bits, rng).any() for _ in range(trials)])
    p = ch.p_error_free(n_bits)
    assert abs(clean - p) < 4 * np.sqrt(p * (1 - p) / trials)
    assert ch.p_error_free(1) == pytest.approx(1 - 2e-3)


def test_ber_zero_is_identity_and_validation():
    data = bytes(range(256)) * 4
    assert GilbertElliott(ber=0.0).apply(data, ((0, len(data)),), np.random.default_rng(0)).data == data
    with pytest.raises(CorruptionError, match="good_state_ber <= ber < burst_density"):
        GilbertElliott(ber=0.6, burst_density=0.5)
    with pytest.raises(CorruptionError, match="P\\(good->bad\\)"):
        GilbertElliott(ber=0.6, mean_burst_bits=1)
    with pytest.raises(CorruptionError, match="mean_burst_bits"):
        GilbertElliott(ber=0.1, mean_burst_bits=0.5)


def test_published_fixed_bursts_flip_an_exact_count():
    ch = PublishedFixedBursts(ber=0.01)
    data = bytes(1000)
    rng = np.random.default_rng(5)
    for _ in range(20):
        r = ch.apply(data, ((0, 1000),), rng)
        assert r.actual_flips == 80 == r.expected_flips
    mask = np.concatenate([ch.flip_mask(100_000, rng) for _ in range(5)])
    runs = _runs(mask)
    assert 4 < runs.mean() < 16  # geometric bursts of mean 8, merged or cut where they touch
    # a short stream at low BER gets no flip at all: the reason this is not a channel model
    assert PublishedFixedBursts(ber=1e-4).apply(bytes(100), ((0, 100),), rng).actual_flips == 0
