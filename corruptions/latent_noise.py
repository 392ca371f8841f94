"""Corruptions of decoded latents, applied at a codec hook point inside ``reconstruct``.

Latents are arrays laid out ``(..., C, H, W)`` (NumPy or torch); "per-channel" statistics are taken over
the last two axes and any leading batch axis. Every draw comes from the cell's RNG through NumPy, so the
same cell gives the same noise on any device.

* ``latent_gaussian``: ``x + sigma * n``, ``n ~ N(0, 1)``. ``unit = "abs"``: sigma in latent units;
  ``unit = "rel"``: sigma times the clean latent's per-channel standard deviation (the README's
  "sigma = 100" was sigma = 1.0 in latent units: units are explicit here). Optional clamp afterwards.
* ``mask_replace``: each element is replaced with probability ``fraction`` by a value drawn from
  ``fill``: ``uniform`` over the clean latent's [min, max] per channel (default) or ``zeros``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from corruptions.base import CorruptionError, LatentCorruption


def _to_numpy(latent: Any) -> tuple[np.ndarray, Any]:
    """(float64 array, a function mapping an array back to the input's type, dtype and device)."""
    if isinstance(latent, np.ndarray):
        return latent.astype(np.float64), lambda a: a.astype(latent.dtype)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch missing and a non-array latent: unsupported
        torch = None
    if torch is not None and isinstance(latent, torch.Tensor):
        arr = latent.detach().to("cpu", torch.float64).numpy()
        return arr, lambda a: torch.from_numpy(a).to(device=latent.device, dtype=latent.dtype)
    raise CorruptionError(f"latent corruption: unsupported latent type {type(latent).__name__}")


def _channel_axes(x: np.ndarray) -> tuple[int, ...]:
    """Axes reduced for per-channel statistics: all but the channel axis (-3), or all for < 3 dims."""
    if x.ndim < 3:
        return tuple(range(x.ndim))
    return tuple(a for a in range(x.ndim) if a != x.ndim - 3)


class LatentGaussian(LatentCorruption):
    name = "latent_gaussian"
    units: ClassVar[dict[str, str]] = {
        "sigma": "latent units",
        "clamp_min": "latent units",
        "clamp_max": "latent units",
    }

    @classmethod
    def unit_of(cls, param: str, params: dict[str, Any] | None = None) -> str:
        """``sigma`` is in latent units only with ``unit = "abs"``; by default (``"rel"``) it is a multiple of the
        clean latent's per-channel standard deviation."""
        if param == "sigma" and (params or {}).get("unit", "rel") == "rel":
            return "× the clean latent's per-channel std"
        return super().unit_of(param, params)

    @dataclass(frozen=True)
    class Params:
        sigma: float  # noise standard deviation, in `unit`
        unit: str = "rel"  # "abs": latent units; "rel": x the clean latent's per-channel std
        clamp_min: float | None = None  # clamp after adding noise (None: no clamp), recorded
        clamp_max: float | None = None

    def validate(self) -> None:
        p = self.params
        if not isinstance(p.sigma, int | float) or p.sigma < 0:
            raise CorruptionError(f"latent_gaussian: sigma must be >= 0, got {p.sigma!r}")
        if p.unit not in ("abs", "rel"):
            raise CorruptionError(
                f"latent_gaussian: unit is 'abs' (latent units) or 'rel' (x clean std), got {p.unit!r}"
            )

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"sigma": 0.0}

    def corrupt(self, latent: Any, rng: np.random.Generator) -> Any:
        x, back = _to_numpy(latent)
        p = self.params
        scale = float(p.sigma)
        if p.unit == "rel":
            scale = scale * np.std(x, axis=_channel_axes(x), keepdims=True)
        noise = rng.standard_normal(x.shape)
        y = x + scale * noise if p.sigma else x.copy()
        if p.clamp_min is not None or p.clamp_max is not None:
            y = np.clip(y, p.clamp_min, p.clamp_max)
        return back(y)


class MaskReplace(LatentCorruption):
    name = "mask_replace"
    units: ClassVar[dict[str, str]] = {"fraction": "share of latent elements replaced"}

    @dataclass(frozen=True)
    class Params:
        fraction: float  # probability that each element is replaced
        fill: str = "uniform"  # "uniform": U[min, max] of the clean latent per channel; "zeros"

    def validate(self) -> None:
        p = self.params
        if not isinstance(p.fraction, int | float) or not 0.0 <= p.fraction <= 1.0:
            raise CorruptionError(f"mask_replace: fraction is a probability in [0, 1], got {p.fraction!r}")
        if p.fill not in ("uniform", "zeros"):
            raise CorruptionError(f"mask_replace: fill is 'uniform' or 'zeros', got {p.fill!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"fraction": 0.0}

    def corrupt(self, latent: Any, rng: np.random.Generator) -> Any:
        x, back = _to_numpy(latent)
        mask = rng.random(x.shape) < self.params.fraction
        if self.params.fill == "zeros":
            values = np.zeros_like(x)
        else:
            axes = _channel_axes(x)
            lo, hi = np.min(x, axis=axes, keepdims=True), np.max(x, axis=axes, keepdims=True)
            values = lo + (hi - lo) * rng.random(x.shape)
        return back(np.where(mask, values, x))
