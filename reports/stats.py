"""Interval estimates used by every table (METHODOLOGY.md §7)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

Z95 = 1.959963984540054


def wilson_interval(failures: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; well-behaved at 0 and n (unlike the Wald interval)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = failures / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) with a Student-t interval; NaN bounds when fewer than two finite values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(np.mean(x))
    if x.size < 2 or not np.all(np.isfinite(x)):
        return (mean, math.nan, math.nan)
    sem = float(np.std(x, ddof=1)) / math.sqrt(x.size)
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1)) * sem
    return (mean, mean - half, mean + half)
