from __future__ import annotations

import numpy as np
import pytest

from reports.stats import mean_interval, wilson_interval


def test_wilson_reference_values():
    # Reference values of the Wilson score interval (z = 1.96) from the closed form.
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.72247, abs=1e-4)


def test_mean_interval_matches_t():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    mean, lo, hi = mean_interval(x)
    assert mean == 2.5
    assert (hi - lo) / 2 == pytest.approx(3.182446 * np.std(x, ddof=1) / 2, rel=1e-5)
    assert np.isnan(mean_interval(np.array([1.0]))[1])
