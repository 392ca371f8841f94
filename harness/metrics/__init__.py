"""Quality metrics (registry ``METRICS``), named with their variant (METHODOLOGY.md §3).

Metrics compare the uint8 image a user would see with the uint8 original, both cropped to the original
size. Each cell records every metric twice: against the original (``psnr``) and against the clean decode of
the same stream (``psnr_vs_clean``): a corrupted decode that returns garbage is not the same as one that
degrades gracefully.

===============  =====================================================================  ==========
name             what                                                                   weights
===============  =====================================================================  ==========
``psnr``         RGB, all channels, peak 255 (numpy; +inf for identical images)         none
``psnr_y``       luma Y = 0.299R+0.587G+0.114B, peak 255 (numpy; = pyiqa ``psnry``)     none
``ssim``         pyiqa ``ssim``: on Y (rounded), 11×11 Gaussian σ 1.5, no downsampling  none
``ms_ssim``      pyiqa ``ms_ssim``: on Y, 5 scales                                      none
``ms_ssim_rgb``  pytorch_msssim ``ms_ssim`` on RGB, data range 255 (CompressAI's)       none
``lpips``        pyiqa ``lpips`` v0.1, AlexNet (lower is better)                        AlexNet + head
``lpips_vgg``    pyiqa ``lpips-vgg`` v0.1, VGG16 (lower is better)                      VGG16 + head
``dists``        pyiqa ``dists`` (lower is better)                                      VGG16 + DISTS
``niqe``         pyiqa ``niqe``, no-reference (ignores the reference; lower is better)  NIQE params
===============  =====================================================================  ==========

``import harness.metrics`` imports neither torch nor pyiqa: the torch metrics live in
:mod:`harness.metrics.torch_metrics` and are imported when one is created. Metrics whose weight files
are not in ``$TORCH_HOME`` (:mod:`harness.metrics.weights`) are never built with other weights:
:func:`create_metric` returns an :class:`Unavailable` placeholder that records NaN (tables show "not
computed") and says so once, naming the files and where to put them.

One image never stops a run: every metric declares the smallest image it can score (:attr:`Metric.min_side`,
the shorter side in pixels, measured on each architecture: SSIM's 11x11 window, LPIPS-Alex's pooling, NIQE's
96 px blocks, the multi-scale metrics' four downsamplings) and gives NaN below it, saying why once per metric;
:func:`measure` (what the clean-decode control and every cell call) turns any other failure of one metric on
one image into NaN with its reason, once per metric and error type, instead of a traceback that loses the run.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from harness.metrics.weights import WeightFile, how_to_provide, problems


class Metric(ABC):
    name: ClassVar[str]
    unit: ClassVar[str] = ""
    higher_better: ClassVar[bool] = True
    description: ClassVar[str] = ""
    #: Weight files the metric loads from ``$TORCH_HOME`` (checked before it is built).
    requires: ClassVar[tuple[WeightFile, ...]] = ()
    #: Python packages it imports when built (checked without importing them).
    packages: ClassVar[tuple[str, ...]] = ()
    available: ClassVar[bool] = True
    #: Smallest image it can score, in pixels of the shorter side: below it the metric gives NaN (and says why).
    min_side: ClassVar[int] = 1

    @abstractmethod
    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        """The score of ``output`` against ``reference`` (uint8 HxWx3 of one shape); NaN below :attr:`min_side`."""

    def too_small(self, image: np.ndarray) -> bool:
        """Whether ``image`` is below :attr:`min_side` (then the caller returns NaN); says so once per metric."""
        height, width = image.shape[:2]
        if min(height, width) >= self.min_side:
            return False
        self.say_once(
            "min_side",
            f"metric {self.name!r} needs images of at least {self.min_side} px a side; {width}x{height} gets NaN",
        )
        return True

    def say_once(self, reason: str, message: str) -> None:
        """One line on stderr per reason and metric object (a run builds each metric once): why it gave NaN."""
        said: set[str] = self.__dict__.setdefault("_said", set())
        if reason not in said:
            said.add(reason)
            print(message, file=sys.stderr)


def measure(metrics: Mapping[str, Metric], output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Every metric of ``metrics`` on one (output, reference) pair (uint8 HxWx3, cropped to the original size):
    name -> score. A metric that raises on this pair records NaN and says why (once per metric and error type),
    so one image a metric cannot score never stops the run; the other metrics and images are unaffected."""
    out: dict[str, float] = {}
    for name, metric in metrics.items():
        try:
            out[name] = float(metric(output, reference))
        except Exception as exc:  # one metric on one image: NaN with its reason, never the whole run
            height, width = output.shape[:2]
            what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
            metric.say_once(type(exc).__name__, f"metric {name!r} failed on a {width}x{height} image ({what}); NaN")
            out[name] = math.nan
    return out


def _check_pair(name: str, output: np.ndarray, reference: np.ndarray) -> None:
    if output.shape != reference.shape:
        raise ValueError(f"{name}: shapes differ {output.shape} vs {reference.shape}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


class PSNR(Metric):
    """PSNR in dB over all RGB channels of uint8 images (peak 255). Identical images give +inf."""

    name = "psnr"
    unit = "dB"
    description = "PSNR on RGB, uint8, peak 255, mean squared error over all pixels and channels"

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        _check_pair(self.name, output, reference)
        return math.nan if self.too_small(output) else _psnr(output, reference)


#: ITU-R BT.601 luma weights, as pyiqa's ``psnry`` (its YIQ Y) uses them.
LUMA = np.array([0.299, 0.587, 0.114])


class PSNR_Y(Metric):
    """PSNR of the luma channel (not rounded), peak 255: pyiqa's ``psnry`` without its epsilon (so identical
    images give +inf here too). Agreement with pyiqa is checked in the tests."""

    name = "psnr_y"
    unit = "dB"
    description = "PSNR on luma Y = 0.299R+0.587G+0.114B (BT.601, not rounded), peak 255; equals pyiqa psnry"

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        _check_pair(self.name, output, reference)
        if self.too_small(output):
            return math.nan
        return _psnr(output.astype(np.float64) @ LUMA, reference.astype(np.float64) @ LUMA)


class Unavailable(Metric):
    """Stands in for a metric whose weights are missing: records NaN, never a number made up without them."""

    name = "unavailable"
    available = False

    def __init__(self, name: str, reason: str) -> None:
        self.name = name  # type: ignore[misc]
        self.reason = reason

    def __call__(self, output: np.ndarray, reference: np.ndarray) -> float:
        return math.nan


_warned: set[str] = set()


def availability(name: str) -> tuple[bool, str]:
    """(usable, why not / what it needs) for a registered metric, checked on files only (nothing is built)."""
    from harness.registry import METRICS

    cls = METRICS.get(name)
    absent = [p for p in cls.packages if importlib.util.find_spec(p) is None]
    if absent:
        return False, f"package(s) {', '.join(absent)} not installed (see README: pip install -e '.[metrics]')"
    found = problems(cls.requires)
    if found:
        return False, "; ".join(found) + " (get " + how_to_provide(cls.requires) + ", on a machine with internet)"
    return True, ", ".join(f.name for f in cls.requires) or "no weights"


def create_metric(name: str, *, warn: bool = True) -> Metric:
    """Build a registered metric once per run. When its weight files are missing or do not match their
    published hashes, return :class:`Unavailable` (the run goes on without the metric) and say so once."""
    from harness.registry import METRICS

    cls = METRICS.get(name)
    usable, why = availability(name)
    if not usable:
        if warn and name not in _warned:
            _warned.add(name)
            print(f"metric {name!r} is not computed in this run: {why}", file=sys.stderr)
        return Unavailable(name, why)
    return cls()


def describe(name: str) -> str:
    from harness.registry import METRICS

    return METRICS.get(name).description


def provenance(names: tuple[str, ...] | list[str]) -> dict[str, dict[str, str]]:
    """For the run's provenance: each metric's availability and the sha256 of the weight files it uses."""
    from harness.metrics.weights import weights_hashes
    from harness.registry import METRICS

    out = {}
    for name in names:
        usable, why = availability(name)
        out[name] = {"available": str(usable), **({} if usable else {"why": why})}
        out[name].update(weights_hashes(METRICS.get(name).requires) if usable else {})
    return out
