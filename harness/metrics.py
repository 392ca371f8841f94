"""Quality metrics (registry ``METRICS``), named with their variant.

Metrics compare the uint8 image a user would see with the uint8 original, both cropped to the original
size. Each cell records every metric twice: against the original (``psnr``) and against the clean decode of
the same stream (``psnr_vs_clean``): a corrupted decode that returns garbage is not the same as one that
degrades gracefully.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np


class Metric(ABC):
    name: ClassVar[str]
    unit: ClassVar[str] = ""
    higher_better: ClassVar[bool] = True
    description: ClassVar[str] = ""

    @abstractmethod
    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float: ...


class PSNR(Metric):
    """PSNR in dB over all RGB channels of uint8 images (peak 255). Identical images give +inf."""

    name = "psnr"
    unit = "dB"
    description = "PSNR on RGB, uint8, peak 255, mean squared error over all pixels and channels"

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        if output.shape != reference.shape:
            raise ValueError(f"psnr: shapes differ {output.shape} vs {reference.shape}")
        mse = float(np.mean((output.astype(np.float64) - reference.astype(np.float64)) ** 2))
        return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def create_metric(name: str) -> Metric:
    from harness.registry import METRICS

    return METRICS.get(name)()
