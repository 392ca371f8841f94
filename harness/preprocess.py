"""Preprocessing as a named, recorded policy (METHODOLOGY.md §6: "splits, preprocessing and subset selection
are recorded in the results").

A policy is a chain of named steps with explicit parameters; its canonical string (defaults filled in,
parameters sorted) goes into every cell key, so ``resize(short=256)`` and ``resize(filter=lanczos,short=256)``
are the same cell and ``resize(filter=bicubic,short=256)`` is another::

    none                                   pixels as decoded (uint8 RGB)
    resize(filter=lanczos,short=N)         scale so the short side is N (up or down), aspect kept
    center_crop(size=N)                    central N x N window (an image smaller than N is a per-image error)
    pad64(mode=edge,multiple=64)           pad right/bottom to a multiple of 64 (what learned codecs do anyway);
                                           bpp and metrics then count the padded pixels: the original size is
                                           recorded beside every image so a report can tell
    upscale(factor=K,filter=bicubic)       enlarge K times (e.g. EuroSAT 64 -> 256); never shrinks
    mosaic(k=K)                            tile K x K images of one size into one image, row-major; the tile
                                           map (which image sits where) is recorded so metrics can be per tile

Steps chain with ``+`` (``resize(short=256)+center_crop(size=256)``); ``mosaic`` may only be the last step.
In a suite a policy is a string as above or an inline table: ``{ policy = "resize", short = 256 }``.
Filters are Pillow's resampling filters by name: nearest, box, bilinear, hamming, bicubic, lanczos.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

FILTERS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
PAD_MODES = ("edge", "reflect", "constant")

# name -> {parameter: default}; ``None`` marks a required parameter.
POLICIES: dict[str, dict[str, Any]] = {
    "none": {},
    "resize": {"short": None, "filter": "lanczos"},
    "center_crop": {"size": None},
    "pad64": {"multiple": 64, "mode": "edge"},
    "upscale": {"factor": None, "filter": "bicubic"},
    "mosaic": {"k": None},
}


class PolicyError(ValueError):
    """A policy that cannot be parsed, or that cannot be applied to one image (recorded per image)."""


@dataclass(frozen=True)
class Step:
    name: str
    params: tuple[tuple[str, Any], ...]

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.params)

    def canonical(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in self.params) + ")"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) this step gives an image of that size, computed before any pixel is made."""
        o = self.options
        if self.name == "resize":
            scale = o["short"] / min(height, width)
            return max(1, round(width * scale)), max(1, round(height * scale))
        if self.name == "upscale":
            return width * o["factor"], height * o["factor"]
        if self.name == "center_crop":
            return min(width, o["size"]), min(height, o["size"])
        if self.name == "pad64":
            m = o["multiple"]
            return width + (-width % m), height + (-height % m)
        if self.name == "mosaic":
            return width * o["k"], height * o["k"]
        return width, height

    def apply(self, image: np.ndarray) -> np.ndarray:
        o = self.options
        h, w = image.shape[:2]
        if self.name == "none":
            return image
        if self.name == "resize":
            scale = o["short"] / min(h, w)
            return _resize(image, max(1, round(w * scale)), max(1, round(h * scale)), o["filter"])
        if self.name == "upscale":
            return _resize(image, w * o["factor"], h * o["factor"], o["filter"])
        if self.name == "center_crop":
            n = o["size"]
            if h < n or w < n:
                raise PolicyError(f"center_crop(size={n}): image is {w}x{h}, smaller than the crop")
            top, left = (h - n) // 2, (w - n) // 2
            return np.ascontiguousarray(image[top : top + n, left : left + n])
        if self.name == "pad64":
            m = o["multiple"]
            pad = ((0, -h % m), (0, -w % m), (0, 0))
            if o["mode"] == "constant":
                return np.pad(image, pad, mode="constant", constant_values=0)
            return np.pad(image, pad, mode=o["mode"])
        raise PolicyError(f"{self.name} is not a per-image step")


def _resize(image: np.ndarray, width: int, height: int, filter_name: str) -> np.ndarray:
    from PIL import Image

    resample = getattr(Image.Resampling, filter_name.upper())
    out = Image.fromarray(image).resize((width, height), resample=resample)
    return np.asarray(out, dtype=np.uint8).copy()


@dataclass(frozen=True)
class Policy:
    """A parsed, validated preprocessing chain. ``str(policy)`` is its canonical form (the cell-key string)."""

    steps: tuple[Step, ...]

    def __str__(self) -> str:
        return self.canonical

    @property
    def canonical(self) -> str:
        return "+".join(s.canonical() for s in self.steps)

    @property
    def mosaic_k(self) -> int | None:
        last = self.steps[-1]
        return int(last.options["k"]) if last.name == "mosaic" else None

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of the prepared image (a final mosaic included) for a decoded image of that size."""
        for step in self.steps:
            width, height = step.output_size(width, height)
        return width, height

    def check_size(self, width: int, height: int, max_pixels: int | None) -> None:
        """PolicyError when the prepared image would exceed ``max_pixels`` (the suite's limit holds for what
        the codec receives too), checked before any pixel is made."""
        w, h = self.output_size(width, height)
        if max_pixels is not None and w * h > max_pixels:
            raise PolicyError(
                f"{self.canonical} makes {width}x{height} into {w}x{h} = {w * h} px, which exceeds "
                f"max_pixels={max_pixels}"
            )

    def apply(self, image: np.ndarray) -> np.ndarray:
        """The per-image steps (everything except a final ``mosaic``), deterministic for the same input."""
        for step in self.steps:
            if step.name != "mosaic":
                image = step.apply(image)
        return np.ascontiguousarray(image, dtype=np.uint8)

    def mosaic(self, tiles: list[np.ndarray], ids: list[str]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """Tile ``k*k`` already-prepared images (row-major) into one; returns the image and its tile map."""
        k = self.mosaic_k
        if k is None:
            raise PolicyError("this policy has no mosaic step")
        if len(tiles) != k * k:
            raise PolicyError(f"mosaic(k={k}) needs {k * k} images, got {len(tiles)}")
        shapes = {t.shape for t in tiles}
        if len(shapes) != 1:
            raise PolicyError(f"mosaic(k={k}) needs tiles of one size, got {sorted(s[:2] for s in shapes)}")
        th, tw = tiles[0].shape[:2]
        out = np.empty((k * th, k * tw, 3), dtype=np.uint8)
        tile_map = []
        for i, (tile, image_id) in enumerate(zip(tiles, ids, strict=True)):
            row, col = divmod(i, k)
            out[row * th : (row + 1) * th, col * tw : (col + 1) * tw] = tile
            tile_map.append({"id": image_id, "row": row, "col": col, "y": row * th, "x": col * tw, "h": th, "w": tw})
        return out, tile_map


_STEP = re.compile(r"^\s*([a-z_0-9]+)\s*(?:\((.*)\))?\s*$")


def _value(text: str) -> Any:
    text = text.strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text.strip("'\"")


def _step(name: str, raw: dict[str, Any]) -> Step:
    if name not in POLICIES:
        raise PolicyError(f"unknown preprocessing {name!r}; known: {', '.join(POLICIES)}")
    spec = POLICIES[name]
    unknown = sorted(set(raw) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise PolicyError(f"preprocessing {name}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}")
    params = {}
    for key, default in spec.items():
        value = raw.get(key, default)
        if value is None:
            raise PolicyError(f"preprocessing {name} needs {key}= (e.g. {name}({key}=256))")
        if key in ("short", "size", "factor", "k", "multiple") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise PolicyError(f"preprocessing {name}: {key} must be a positive integer, got {value!r}")
        if key == "filter" and value not in FILTERS:
            raise PolicyError(f"preprocessing {name}: filter {value!r} is not one of {', '.join(FILTERS)}")
        if key == "mode" and value not in PAD_MODES:
            raise PolicyError(f"preprocessing {name}: mode {value!r} is not one of {', '.join(PAD_MODES)}")
        params[key] = value
    if name == "upscale" and params["factor"] < 2:
        raise PolicyError("preprocessing upscale: factor must be >= 2 (use none for factor 1)")
    if name == "mosaic" and params["k"] < 2:
        raise PolicyError("preprocessing mosaic: k must be >= 2")
    return Step(name, tuple(sorted(params.items())))


def parse_policy(spec: str | dict[str, Any] | Policy | None) -> Policy:
    """A policy from its string form (``"resize(short=256,filter=lanczos)"``, chains with ``+``) or an inline
    table (``{"policy": "resize", "short": 256}``). ``None`` and ``""`` mean ``none``."""
    if isinstance(spec, Policy):
        return spec
    if spec is None or spec == "":
        return Policy((Step("none", ()),))
    if isinstance(spec, dict):
        raw = dict(spec)
        name = raw.pop("policy", None)
        if not isinstance(name, str):
            raise PolicyError('a preprocessing table needs policy = NAME (e.g. { policy = "resize", short = 256 })')
        if "+" in name or "(" in name:
            raise PolicyError("a preprocessing table names one policy; write chains as a string")
        steps = [_step(name, raw)]
    elif isinstance(spec, str):
        steps = []
        for part in spec.split("+"):
            m = _STEP.match(part)
            if not m:
                raise PolicyError(f"cannot parse preprocessing {spec!r}; write e.g. resize(short=256,filter=lanczos)")
            raw = {}
            for item in filter(None, (s.strip() for s in (m.group(2) or "").split(","))):
                key, sep, value = item.partition("=")
                if not sep:
                    raise PolicyError(f"preprocessing {spec!r}: expected key=value, got {item!r}")
                raw[key.strip()] = _value(value)
            steps.append(_step(m.group(1), raw))
    else:
        raise PolicyError(f"preprocessing must be a string or a table, got {type(spec).__name__}")
    if any(s.name == "mosaic" for s in steps[:-1]):
        raise PolicyError("mosaic must be the last preprocessing step")
    if len(steps) > 1:
        steps = [s for s in steps if s.name != "none"] or [steps[0]]
    return Policy(tuple(steps))


def canonical_policy(spec: str | dict[str, Any] | None) -> str:
    return parse_policy(spec).canonical
