"""Deterministic synthetic stereo pairs (NumPy only): the offline STAND-IN for KITTI / Cityscapes pairs, used by
tests, by the DICM-tiny recipe and by the demo suites. Never report a stand-in number as a KITTI or Cityscapes
result.

Two kinds of rectified pairs, both built from a seed, views of H x W (1:2 by default):

* ``layered``: a textured background plane and 4-10 textured shapes (ellipses, rotated rectangles, bars) at
  random depths Z, drawn far to near (painter's algorithm, so nearer shapes truly occlude). A point at depth Z
  appears ``d = d_max * Z_min / Z`` pixels further left in the right view than in the left one (disparity ∝ 1/Z,
  sub-pixel exact: textures and shapes are functions of continuous coordinates, sampled at the shifted positions).
  Each view then gets its own photometric gain/offset and Gaussian sensor noise, and is quantised to uint8.
* ``translation``: two horizontally offset crops of a larger image (a layered scene rendered without disparity at
  twice the size): pure-translation stereo, one disparity for the whole frame.

Layered scenes also move in time (per-layer velocities in px/frame, plus a camera drift), so ``render_pair(...,
frame=k)`` gives the pair k frames later: the temporal neighbour a desynchronised side camera would deliver.

Units: disparities and velocities in pixels of the rendered size; gain is a factor, offset and noise are in 8-bit
code values. ``d_max`` defaults to W / 16 (8 px at 128 px wide, 16 px at 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("layered", "translation")


@dataclass(frozen=True)
class Texture:
    """fBm value noise over a random palette, plus optional stripes: a function of continuous (u, v) in pixels."""

    lattices: tuple[np.ndarray, ...]  # per octave: (gh, gw) random values in [0, 1)
    cells: tuple[float, ...]  # per octave: lattice cell size in pixels
    weights: tuple[float, ...]
    palette: np.ndarray  # (3, 3): colours at noise 0, 0.5, 1 (RGB in [0, 1])
    stripe_freq: float  # cycles per pixel (0: none)
    stripe_angle: float
    stripe_amp: float

    def __call__(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        n = np.zeros(u.shape, dtype=np.float64)
        for lat, cell, wgt in zip(self.lattices, self.cells, self.weights, strict=True):
            n += wgt * _value_noise(lat, u / cell, v / cell)
        n /= sum(self.weights)
        if self.stripe_freq:
            phase = 2 * np.pi * self.stripe_freq * (u * np.cos(self.stripe_angle) + v * np.sin(self.stripe_angle))
            n = np.clip(n + self.stripe_amp * np.sin(phase), 0.0, 1.0)
        lo = np.clip(2 * n, 0, 1)[..., None]
        hi = np.clip(2 * n - 1, 0, 1)[..., None]
        p = self.palette
        return (1 - lo) * p[0] + lo * (1 - hi) * p[1] + hi * p[2]


def _value_noise(lattice: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear (smoothstep-weighted) interpolation of a periodic random lattice at continuous coordinates."""
    gh, gw = lattice.shape
    x0, y0 = np.floor(u), np.floor(v)
    fx, fy = u - x0, v - y0
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    xi, yi = x0.astype(np.int64) % gw, y0.astype(np.int64) % gh
    xj, yj = (xi + 1) % gw, (yi + 1) % gh
    top = lattice[yi, xi] * (1 - fx) + lattice[yi, xj] * fx
    bottom = lattice[yj, xi] * (1 - fx) + lattice[yj, xj] * fx
    return top * (1 - fy) + bottom * fy


def _texture(rng: np.random.Generator, scale: float) -> Texture:
    octaves = int(rng.integers(2, 5))
    base = float(rng.uniform(4, 20)) * scale
    cells = tuple(base / 2**o for o in range(octaves))
    lattices = tuple(rng.random((int(rng.integers(8, 24)), int(rng.integers(8, 24)))) for _ in range(octaves))
    weights = tuple(0.6**o for o in range(octaves))
    hue = rng.random(3)
    palette = np.stack([np.clip(hue * rng.uniform(0.2, 1.2) + rng.uniform(-0.25, 0.25, 3), 0, 1) for _ in range(3)])
    stripes = rng.random() < 0.35
    return Texture(
        lattices,
        cells,
        weights,
        palette,
        float(rng.uniform(0.04, 0.25) / scale) if stripes else 0.0,
        float(rng.uniform(0, np.pi)),
        float(rng.uniform(0.15, 0.45)),
    )


@dataclass(frozen=True)
class Layer:
    texture: Texture
    shape: str  # "plane" | "ellipse" | "rect" | "bar"
    cx: float  # centre in layer pixels (left view, frame 0)
    cy: float
    a: float  # half sizes in pixels
    b: float
    angle: float
    depth: float  # Z, in units of Z_min
    vx: float  # px / frame
    vy: float
    shade: tuple[float, float, float]  # linear shading gain: (g0, gx, gy) over the shape

    def alpha(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Coverage in [0, 1] with a one-pixel anti-aliased edge (from a signed distance in pixels)."""
        if self.shape == "plane":
            return np.ones(u.shape)
        c, s = np.cos(self.angle), np.sin(self.angle)
        du, dv = u - self.cx, v - self.cy
        ru, rv = c * du + s * dv, -s * du + c * dv
        if self.shape == "ellipse":
            sdf = (np.sqrt((ru / self.a) ** 2 + (rv / self.b) ** 2) - 1.0) * min(self.a, self.b)
        else:  # rect and bar: a box
            sdf = np.maximum(np.abs(ru) - self.a, np.abs(rv) - self.b)
        return np.clip(0.5 - sdf, 0.0, 1.0)


@dataclass(frozen=True)
class Scene:
    kind: str
    height: int
    width: int
    layers: tuple[Layer, ...]  # far to near
    d_max: float  # disparity of the nearest possible depth, px
    camera_v: tuple[float, float]  # camera drift, px / frame (moves every layer by -v / depth)
    gains: np.ndarray  # (2 views, 3 channels)
    offsets: np.ndarray  # (2 views,) in 8-bit code values
    noise: np.ndarray  # (2 views,) sigma in 8-bit code values
    translation: float  # kind "translation": the one disparity of the frame, px


def make_scene(seed: int, height: int = 64, width: int = 128, kind: str | None = None) -> Scene:
    """The scene of ``seed`` (kind chosen by the seed unless given: 3 in 4 layered, 1 in 4 translation)."""
    if height < 8 or width < 8:
        raise ValueError(f"stereo stand-in views must be at least 8 x 8 pixels, got {height} x {width}")
    rng = np.random.default_rng([int(seed), height, width, 0x5EED])
    chosen = kind or ("translation" if rng.random() < 0.25 else "layered")
    if chosen not in KINDS:
        raise ValueError(f"stereo stand-in kind must be one of {KINDS}, got {chosen!r}")
    scale = width / 128.0
    d_max = width / 16.0
    span_h, span_w = (2 * height, 2 * width) if chosen == "translation" else (height, width)
    layers = [
        Layer(_texture(rng, scale * 2), "plane", 0, 0, 0, 0, 0, float(rng.uniform(6, 10)),
              float(rng.uniform(-0.5, 0.5)), 0.0, (1.0, 0.0, 0.0))
    ]  # fmt: skip
    for _ in range(int(rng.integers(4, 11))):
        shape = str(rng.choice(["ellipse", "rect", "bar"], p=[0.45, 0.35, 0.2]))
        a = float(rng.uniform(0.06, 0.3) * span_h)
        b = a * float(rng.uniform(0.15, 0.4) if shape == "bar" else rng.uniform(0.4, 1.0))
        layers.append(
            Layer(
                _texture(rng, scale),
                shape,
                float(rng.uniform(-0.1, 1.1) * span_w),
                float(rng.uniform(0.0, 1.0) * span_h),
                a,
                b,
                float(rng.uniform(0, np.pi)),
                float(rng.uniform(1.0, 6.0)),
                float(rng.uniform(-2, 2)),
                float(rng.uniform(-1, 1)),
                (float(rng.uniform(0.8, 1.15)), float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))),
            )
        )
    layers = [layers[0], *sorted(layers[1:], key=lambda la: -la.depth)]
    gains = 1.0 + rng.uniform(-0.06, 0.06, (2, 1)) + rng.uniform(-0.02, 0.02, (2, 3))
    return Scene(
        kind=chosen,
        height=height,
        width=width,
        layers=tuple(layers),
        d_max=d_max,
        camera_v=(float(rng.uniform(-1.5, 1.5)), float(rng.uniform(-0.3, 0.3))),
        gains=gains,
        offsets=rng.uniform(-5, 5, 2),
        noise=rng.uniform(0.5, 2.5, 2),
        translation=float(rng.uniform(1.0, d_max)),
    )


def _render_layers(scene: Scene, h: int, w: int, shift: float, frame: int, y0: float = 0.0) -> np.ndarray:
    """Composite the layers into an h x w float image in [0, 1]; a layer at depth Z is sampled at
    u = x + shift * d_max / Z (the right view: shift = 1), moved by its velocity and the camera drift."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    v = v + y0
    out = np.zeros((h, w, 3))
    for layer in scene.layers:
        d = shift * scene.d_max / layer.depth
        mu = layer.vx * frame - scene.camera_v[0] * frame / layer.depth
        mv = layer.vy * frame - scene.camera_v[1] * frame / layer.depth
        lu, lv = u + d - mu, v - mv
        alpha = layer.alpha(lu, lv)[..., None]
        g0, gx, gy = layer.shade
        shade = g0 + gx * (lu - layer.cx) / max(w, 1) + gy * (lv - layer.cy) / max(h, 1)
        colour = np.clip(layer.texture(lu, lv) * shade[..., None], 0, 1)
        out = out * (1 - alpha) + colour * alpha
    return out


def _finish(image: np.ndarray, scene: Scene, view: int, rng: np.random.Generator) -> np.ndarray:
    """Photometric gain/offset and sensor noise of camera ``view``, then round to uint8."""
    x = image * 255.0 * scene.gains[view] + scene.offsets[view]
    x = x + rng.normal(0.0, scene.noise[view], x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def render_pair(scene: Scene, frame: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) uint8 H x W x 3 views of ``scene`` at ``frame``; ``seed`` drives the sensor noise."""
    h, w = scene.height, scene.width
    rng = np.random.default_rng([int(seed), int(frame) + 1_000_000, 0xC0FFEE])
    if scene.kind == "translation":
        # one big image (layers without disparity), two crops offset by the frame's single disparity
        big = _render_layers(scene, 2 * h, 2 * w, 0.0, frame)
        top, left = h // 2, w // 2
        xs = np.arange(w, dtype=np.float64)
        base = big[top : top + h]
        views = []
        for view in (0, 1):
            pos = left + xs + view * scene.translation
            i0 = np.clip(np.floor(pos).astype(np.int64), 0, 2 * w - 2)
            f = np.clip(pos - i0, 0.0, 1.0)[None, :, None]
            views.append(base[:, i0] * (1 - f) + base[:, i0 + 1] * f)
        return _finish(views[0], scene, 0, rng), _finish(views[1], scene, 1, rng)
    left_img = _render_layers(scene, h, w, 0.0, frame)
    right_img = _render_layers(scene, h, w, 1.0, frame)
    return _finish(left_img, scene, 0, rng), _finish(right_img, scene, 1, rng)


def stereo_pair(
    seed: int, height: int = 64, width: int = 128, frame: int = 0, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) uint8 views of the scene of ``seed`` at ``frame`` (the sensor noise is seeded too)."""
    return render_pair(make_scene(seed, height, width, kind), frame, seed)
