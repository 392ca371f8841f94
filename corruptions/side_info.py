"""Side-information corruptions: a third kind of plugin beside ``bitstream`` and ``latent`` (``acts_on =
"side_info"``). They degrade the image a decoder receives through its trusted, decoder-local side channel (the
other stereo view for DICM), never the transmitted stream: a codec that declares no side information ignores
this axis, as JPEG2000 ignores latent hooks.

The interface the runner calls (one call per cell, in the main process, before ``reconstruct``)::

    plugin = CORRUPTIONS.get(name)(**params)            # checked at planning, like every corruption
    result = plugin.apply(side_image, rng, context)      # side_image: uint8 H x W x 3, the clean side view
    result.image   -> uint8 H x W x 3 of the same shape, or None: the side information is MISSING
    result.extra   -> dict recorded with the cell (actual bpp of a re-compressed view, occluded fraction, ...)

``rng`` is the cell's generator (from the cell key, like every other draw); ``context`` is a :class:`SideContext`
with what some degradations need beyond the image: another scene's side view (``wrong pair``) and the side view
a few frames away (``temporal desync``), as callables so nothing is loaded that is not used. ``plugin.needs``
names the callables a plugin uses, so a suite asking for ``side_temporal`` on a dataset without sequences stops
at planning. A plugin at its :meth:`identity_params` returns the input unchanged (byte for byte): the control
"identity degradation decodes exactly like the clean decode with the true side view".

Plugins and parameters (units in the names or stated):

=====================  ==========================================  ================================================
name                   parameters                                  what it does
=====================  ==========================================  ================================================
``side_noise``         ``sigma``: std, 8-bit code values           additive Gaussian sensor noise, clipped, rounded
``side_blur``          ``sigma_px``: Gaussian std, pixels          defocus / motion-free blur (separable, reflect)
``side_jpeg``          ``bpp``: bits per side pixel (24: off,      the side view as a JPEG decoder would have it:
                       the raw RGB size: no compression)           highest libjpeg quality (Pillow, 4:2:0) whose
                                                                   file is <= bpp; actual bpp and quality recorded
``side_jpeg2000``      ``bpp`` (24: off)                           the same with the harness's JPEG2000 codec (9/7,
                                                                   one layer, OpenJPEG), rate bisected to 2 %
``side_downscale``     ``factor``: linear downscale (1: off)       down by ``factor`` (box filter) and back up
                                                                   (bicubic) to the original size
``side_shift``         ``dx_px``: horizontal shift, pixels         disparity / calibration error; sub-pixel
                                                                   (linear), positive moves content right, edges
                                                                   replicated
``side_rectify``       ``dy_px``: vertical shift, pixels;          rectification error: the views no longer share
                       ``rotate_deg``: rotation, degrees           rows (rotation about the centre, bilinear)
``side_occlusion``     ``fraction``: share of pixels covered;      random rectangles (each 8-30 % of the short side)
                       ``fill``: gray | black | noise              until the covered share reaches ``fraction``
``side_photometric``   ``gain`` (factor), ``offset`` (8-bit        out = 255 clip(gain x + offset / 255, 0, 1) ** gamma
                       code values), ``gamma`` (exponent)          (x in [0, 1]): exposure / response mismatch
``side_temporal``      ``frames``: offset in frames (0: off)       the side view ``frames`` frames away
                                                                   (unsynchronised cameras); needs ``neighbour``
``side_wrong_pair``    ``probability`` that the view is another    another scene's side view (a mismatched pair);
                       scene's (0: off)                            needs ``other_scene``
``side_missing``       ``probability`` that it is missing (0: off) None: the decoder runs without side information
                                                                   (DICM: w = 0, "DICM without w")
=====================  ==========================================  ================================================
"""

from __future__ import annotations

import io
import math
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from corruptions.base import Corruption, CorruptionError

#: The callables of :class:`SideContext` a plugin may declare in ``needs``.
CONTEXT_NEEDS = ("other_scene", "neighbour")


class SideInfoUnavailable(CorruptionError):
    """The context cannot supply what a degradation needs for this image (no frame ``k`` away, no other scene).
    The runner records the cell as not applicable for this image; it is not a decode failure."""


@dataclass(frozen=True)
class SideContext:
    """What a side-information degradation may need besides the clean side image; the runner builds one per cell.

    ``other_scene(rng)``: the same kind of side image of another image of the same dataset (a different scene),
    drawn with ``rng``, of the same H x W (the runner picks among the dataset's entries other than this one).
    ``neighbour(offset)``: the side image ``offset`` frames away from this image's frame, ``None`` when the
    dataset has no such frame. Either may be ``None`` when the dataset cannot provide it at all."""

    kind: str
    image_id: str = ""
    other_scene: Callable[[np.random.Generator], np.ndarray] | None = None
    neighbour: Callable[[int], np.ndarray | None] | None = None


def side_context(dataset: Any, entry: Any, kind: str, others: Sequence[Any] = ()) -> SideContext:
    """The :class:`SideContext` of one image, from any dataset with ``load_side(entry, kind)`` (and, for temporal
    neighbours, ``load_neighbour(entry, kind, offset)``): ``other_scene`` draws uniformly, with the cell's rng,
    among ``others`` (the run's other entries of that dataset with this kind; ``entry`` itself is left out) and
    loads that entry's side view; ``neighbour`` is ``None`` for datasets without sequences. Nothing is loaded
    until a degradation calls it."""
    pool = [e for e in others if e.id != entry.id and kind in getattr(e, "side", {})]

    def other_scene(rng: np.random.Generator) -> np.ndarray:
        return dataset.load_side(pool[int(rng.integers(0, len(pool)))], kind)

    load_neighbour = getattr(dataset, "load_neighbour", None)
    return SideContext(
        kind=kind,
        image_id=str(entry.id),
        other_scene=other_scene if pool else None,
        neighbour=(lambda offset: load_neighbour(entry, kind, offset)) if load_neighbour is not None else None,
    )


@dataclass(frozen=True)
class SideResult:
    """The degraded side image (uint8, the input's shape) or ``None`` (missing), and what to record."""

    image: np.ndarray | None
    extra: dict[str, Any] = field(default_factory=dict)


def _check_image(image: Any, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__), getattr(image, "dtype", "")
        raise ValueError(f"{what} must be a uint8 H x W x 3 image, got {got}")
    return image


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


class SideInfoCorruption(Corruption):
    """Base of side-information plugins: implement :meth:`degrade`; the runner calls :meth:`apply`."""

    acts_on: ClassVar[Literal["side_info"]] = "side_info"  # type: ignore[assignment]
    #: :class:`SideContext` callables this plugin uses (checked at planning against what the dataset provides)
    needs: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def degrade(
        self, image: np.ndarray, rng: np.random.Generator, context: SideContext
    ) -> np.ndarray | SideResult | None:
        """A degraded copy of ``image`` (uint8 H x W x 3; never modify it in place), ``None`` for missing side
        information, or a :class:`SideResult` to record extras."""

    def is_identity(self) -> bool:
        return self.config() == type(self)(**type(self).identity_params()).config()

    def apply(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        """``degrade`` with its contract enforced: identity parameters return ``image`` itself (byte-identical,
        no draw), and the output is None or uint8 of the input's shape."""
        _check_image(image, f"{self.name}: the side image")
        if self.is_identity():
            return SideResult(image, {})
        for need in self.needs:
            if getattr(context, need) is None:
                raise SideInfoUnavailable(
                    f"{self.name}: this dataset provides no {need} for side kind {context.kind!r}"
                )
        out = self.degrade(image, rng, context)
        result = out if isinstance(out, SideResult) else SideResult(out)
        if result.image is not None:
            _check_image(result.image, f"{self.name}: the degraded side image")
            if result.image.shape != image.shape:
                raise ValueError(f"{self.name}: degraded side image {result.image.shape}, expected {image.shape}")
        return result


def _positive_or_zero(name: str, field_name: str, value: Any, upper: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= upper:
        bound = f"[0, {upper:g}]" if math.isfinite(upper) else ">= 0"
        raise CorruptionError(f"{name}: {field_name} must be a number {bound}, got {value!r}")


def _probability(name: str, value: Any) -> None:
    _positive_or_zero(name, "probability", value, 1.0)


# -- pixel-level degradations -----------------------------------------------------------------------------------
class SideNoise(SideInfoCorruption):
    name = "side_noise"
    units: ClassVar[dict[str, str]] = {"sigma": "8-bit code values"}

    @dataclass(frozen=True)
    class Params:
        sigma: float  # standard deviation of additive Gaussian noise, 8-bit code values

    def validate(self) -> None:
        _positive_or_zero(self.name, "sigma (8-bit code values)", self.params.sigma, 255)

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"sigma": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> np.ndarray:
        return _to_uint8(image + rng.normal(0.0, float(self.params.sigma), image.shape))


def gaussian_blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Separable Gaussian blur of H x W x C float/uint8 (kernel radius ceil(3 sigma), reflected borders)."""
    radius = max(1, math.ceil(3 * sigma_px))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma_px) ** 2)
    k /= k.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        p = np.pad(out, pad, mode="reflect" if out.shape[axis] > radius else "edge")
        n = out.shape[axis]
        out = sum(k[i] * np.take(p, np.arange(i, i + n), axis=axis) for i in range(2 * radius + 1))
    return out


class SideBlur(SideInfoCorruption):
    name = "side_blur"
    units: ClassVar[dict[str, str]] = {"sigma_px": "side-image pixels"}

    @dataclass(frozen=True)
    class Params:
        sigma_px: float  # Gaussian standard deviation, pixels of the side image

    def validate(self) -> None:
        _positive_or_zero(self.name, "sigma_px", self.params.sigma_px, 1000)

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"sigma_px": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> np.ndarray:
        return _to_uint8(gaussian_blur(image, float(self.params.sigma_px)))


#: 24 bits per pixel: the raw 8-bit RGB size. A rate this high needs no compression: the side view passes unchanged.
RAW_BPP = 24.0


def _check_rate(name: str, bpp: Any) -> None:
    if isinstance(bpp, bool) or not isinstance(bpp, int | float) or not 0 < bpp <= RAW_BPP:
        raise CorruptionError(f"{name}: bpp is a rate in bits per pixel in (0, 24] (24: uncompressed), got {bpp!r}")


def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=True)
    return buf.getvalue()


class _SideAtRate(SideInfoCorruption):
    """The side view as a real decoder would hold it: compressed by an image codec to ``bpp``."""

    units: ClassVar[dict[str, str]] = {"bpp": "bits per side-image pixel"}

    @dataclass(frozen=True)
    class Params:
        bpp: float  # target rate, bits per side-image pixel; 24 (the raw RGB size): not compressed, the identity

    def validate(self) -> None:
        _check_rate(self.name, self.params.bpp)

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"bpp": RAW_BPP}


class SideJPEG(_SideAtRate):
    name = "side_jpeg"

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        from PIL import Image

        pixels = image.shape[0] * image.shape[1]
        lo, hi, best = 1, 95, None  # the highest quality whose file fits the rate (bpp falls with quality)
        while lo <= hi:
            q = (lo + hi) // 2
            data = _jpeg_bytes(image, q)
            if 8 * len(data) / pixels <= self.params.bpp:
                best, lo = (q, data), q + 1
            else:
                hi = q - 1
        exceeded = best is None
        q, data = best if best is not None else (1, _jpeg_bytes(image, 1))
        out = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        extra = {"quality": q, "actual_bpp": 8 * len(data) / pixels, "rate_exceeded": exceeded}
        return SideResult(np.ascontiguousarray(out), extra)


class SideJPEG2000(_SideAtRate):
    name = "side_jpeg2000"

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        from harness.codecs.jpeg2000 import JPEG2000

        codec = JPEG2000(target_bpp=float(self.params.bpp), rate_tolerance=0.02)
        stream = codec.encode(image)
        out = codec.decode(stream.data, image.shape[:2])[: image.shape[0], : image.shape[1]]
        actual = 8 * len(stream.data) / (image.shape[0] * image.shape[1])
        return SideResult(np.ascontiguousarray(out), {"actual_bpp": actual})


class SideDownscale(SideInfoCorruption):
    name = "side_downscale"
    units: ClassVar[dict[str, str]] = {"factor": "× linear downscale"}

    @dataclass(frozen=True)
    class Params:
        factor: float  # linear downscale factor (2: half the width and height), then back up; 1: off

    def validate(self) -> None:
        f = self.params.factor
        if isinstance(f, bool) or not isinstance(f, int | float) or not 1 <= f <= 64:
            raise CorruptionError(f"{self.name}: factor is a linear downscale factor in [1, 64], got {f!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"factor": 1.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        from PIL import Image

        h, w = image.shape[:2]
        small = (max(1, round(w / self.params.factor)), max(1, round(h / self.params.factor)))
        low = Image.fromarray(image).resize(small, Image.Resampling.BOX)
        out = np.asarray(low.resize((w, h), Image.Resampling.BICUBIC))
        return SideResult(np.ascontiguousarray(out), {"low_size": [small[1], small[0]]})


def _sample(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear sampling of H x W x C at float coordinates (edge-replicated outside the image)."""
    h, w = image.shape[:2]
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    y0 = np.clip(np.floor(ys).astype(np.int64), 0, h - 2 if h > 1 else 0)
    x0 = np.clip(np.floor(xs).astype(np.int64), 0, w - 2 if w > 1 else 0)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[..., None], (xs - x0)[..., None]
    img = image.astype(np.float64)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


class SideShift(SideInfoCorruption):
    name = "side_shift"
    units: ClassVar[dict[str, str]] = {"dx_px": "side-image pixels"}

    @dataclass(frozen=True)
    class Params:
        dx_px: float  # horizontal shift, pixels (positive: content moves right); sub-pixel is interpolated

    def validate(self) -> None:
        if isinstance(self.params.dx_px, bool) or not isinstance(self.params.dx_px, int | float):
            raise CorruptionError(f"{self.name}: dx_px is a number of pixels, got {self.params.dx_px!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"dx_px": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> np.ndarray:
        h, w = image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        return _to_uint8(_sample(image, ys, xs - float(self.params.dx_px)))


class SideRectify(SideInfoCorruption):
    name = "side_rectify"
    units: ClassVar[dict[str, str]] = {"dy_px": "side-image pixels", "rotate_deg": "degrees"}

    @dataclass(frozen=True)
    class Params:
        dy_px: float  # vertical shift, pixels (positive: content moves down)
        rotate_deg: float = 0.0  # rotation about the image centre, degrees (positive: counter-clockwise)

    def validate(self) -> None:
        for name in ("dy_px", "rotate_deg"):
            v = getattr(self.params, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise CorruptionError(f"{self.name}: {name} must be a finite number, got {v!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"dy_px": 0.0, "rotate_deg": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> np.ndarray:
        h, w = image.shape[:2]
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        a = math.radians(float(self.params.rotate_deg))
        # inverse map: where each output pixel comes from (undo the shift, then the rotation)
        yy, xx = ys - cy - float(self.params.dy_px), xs - cx
        src_x = math.cos(a) * xx - math.sin(a) * yy + cx
        src_y = math.sin(a) * xx + math.cos(a) * yy + cy
        return _to_uint8(_sample(image, src_y, src_x))


class SideOcclusion(SideInfoCorruption):
    name = "side_occlusion"
    units: ClassVar[dict[str, str]] = {"fraction": "share of side-image pixels covered"}

    @dataclass(frozen=True)
    class Params:
        fraction: float  # share of the side image's pixels to cover, in [0, 1]
        fill: str = "gray"  # gray (128) | black | noise (uniform 0..255)

    def validate(self) -> None:
        _positive_or_zero(self.name, "fraction", self.params.fraction, 1.0)
        if self.params.fill not in ("gray", "black", "noise"):
            raise CorruptionError(f"{self.name}: fill is gray, black or noise, got {self.params.fill!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"fraction": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        h, w = image.shape[:2]
        mask = np.zeros((h, w), dtype=bool)
        short = min(h, w)
        target = float(self.params.fraction)
        while mask.mean() < target:
            bh = max(1, round(short * rng.uniform(0.08, 0.3)))
            bw = max(1, round(short * rng.uniform(0.08, 0.3)))
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            mask[y : y + bh, x : x + bw] = True
        out = image.copy()
        if self.params.fill == "noise":
            out[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
        else:
            out[mask] = 128 if self.params.fill == "gray" else 0
        return SideResult(out, {"covered_fraction": float(mask.mean())})


class SidePhotometric(SideInfoCorruption):
    name = "side_photometric"
    units: ClassVar[dict[str, str]] = {"gain": "× intensity", "offset": "8-bit code values", "gamma": "exponent"}

    @dataclass(frozen=True)
    class Params:
        gain: float = 1.0  # multiplicative, on [0, 1] intensities
        offset: float = 0.0  # additive, 8-bit code values
        gamma: float = 1.0  # exponent applied after gain and offset

    def validate(self) -> None:
        p = self.params
        for name, v, lo in (("gain", p.gain, 0.0), ("gamma", p.gamma, 1e-3)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= 100:
                raise CorruptionError(f"{self.name}: {name} must be in [{lo:g}, 100], got {v!r}")
        if isinstance(p.offset, bool) or not isinstance(p.offset, int | float) or not -255 <= p.offset <= 255:
            raise CorruptionError(f"{self.name}: offset is in 8-bit code values [-255, 255], got {p.offset!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"gain": 1.0, "offset": 0.0, "gamma": 1.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> np.ndarray:
        p = self.params
        x = np.clip(image / 255.0 * p.gain + p.offset / 255.0, 0.0, 1.0) ** p.gamma
        return _to_uint8(255.0 * x)


# -- degradations that need the context -------------------------------------------------------------------------
class SideTemporal(SideInfoCorruption):
    name = "side_temporal"
    units: ClassVar[dict[str, str]] = {"frames": "frames"}
    needs = ("neighbour",)

    @dataclass(frozen=True)
    class Params:
        frames: int  # the side view this many frames away from the primary's frame (0: in sync)

    def validate(self) -> None:
        if isinstance(self.params.frames, bool) or not isinstance(self.params.frames, int):
            raise CorruptionError(f"{self.name}: frames is a whole number of frames, got {self.params.frames!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"frames": 0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        assert context.neighbour is not None
        out = context.neighbour(int(self.params.frames))
        if out is None:
            raise SideInfoUnavailable(
                f"{self.name}: no side view {self.params.frames:+d} frames from {context.image_id or 'this image'}"
            )
        return SideResult(np.ascontiguousarray(out), {"frames": int(self.params.frames)})


class SideWrongPair(SideInfoCorruption):
    name = "side_wrong_pair"
    units: ClassVar[dict[str, str]] = {"probability": "chance per cell"}
    needs = ("other_scene",)

    @dataclass(frozen=True)
    class Params:
        probability: float = 1.0  # chance that the side view is another scene's (per cell)

    def validate(self) -> None:
        _probability(self.name, self.params.probability)

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"probability": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        assert context.other_scene is not None
        if rng.random() >= self.params.probability:
            return SideResult(image.copy(), {"replaced": False})
        return SideResult(np.ascontiguousarray(context.other_scene(rng)), {"replaced": True})


class SideMissing(SideInfoCorruption):
    name = "side_missing"
    units: ClassVar[dict[str, str]] = {"probability": "chance per cell"}

    @dataclass(frozen=True)
    class Params:
        probability: float = 1.0  # chance that the side information is missing (per cell)

    def validate(self) -> None:
        _probability(self.name, self.params.probability)

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"probability": 0.0}

    def degrade(self, image: np.ndarray, rng: np.random.Generator, context: SideContext) -> SideResult:
        if rng.random() >= self.params.probability:
            return SideResult(image.copy(), {"missing": False})
        return SideResult(None, {"missing": True})
