"""Preprocessing policies: canonical names (the cell-key string), shapes, determinism, mosaic tile maps."""

from __future__ import annotations

import numpy as np
import pytest

from harness.hashing import pixels_sha256
from harness.preprocess import PolicyError, canonical_policy, parse_policy


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        (None, "none"),
        ("none", "none"),
        ("resize(short=256)", "resize(filter=lanczos,short=256)"),
        ("resize( filter = bicubic , short=256 )", "resize(filter=bicubic,short=256)"),
        ({"policy": "resize", "short": 256}, "resize(filter=lanczos,short=256)"),
        ("upscale(factor=4)", "upscale(factor=4,filter=bicubic)"),
        ("pad64", "pad64(mode=edge,multiple=64)"),
        ("center_crop(size=64)", "center_crop(size=64)"),
        ("mosaic(k=4)", "mosaic(k=4)"),
        ("resize(short=300)+center_crop(size=256)", "resize(filter=lanczos,short=300)+center_crop(size=256)"),
        ("upscale(factor=2,filter=nearest)+mosaic(k=2)", "upscale(factor=2,filter=nearest)+mosaic(k=2)"),
    ],
)
def test_canonical_strings_fill_defaults_and_sort(spec, canonical):
    assert canonical_policy(spec) == canonical
    assert canonical_policy(canonical) == canonical  # a fixed point: what the cell key stores parses back


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("blur(sigma=2)", "unknown preprocessing"),
        ("resize", "needs short="),
        ("resize(short=0)", "positive integer"),
        ("resize(short=256,filter=sinc)", "filter 'sinc'"),
        ("resize(short=256,size=3)", "unknown parameter"),
        ("upscale(factor=1)", "factor must be >= 2"),
        ("mosaic(k=2)+resize(short=64)", "mosaic must be the last"),
        ("pad64(mode=wrap)", "mode 'wrap'"),
        ({"short": 3}, "policy = NAME"),
        ("resize(short)", "key=value"),
    ],
)
def test_bad_policies_are_clear_errors(spec, message):
    with pytest.raises(PolicyError, match=message.replace("(", r"\(").replace("=", "=")):
        parse_policy(spec)


def test_resize_short_side_and_aspect():
    out = parse_policy("resize(short=64)").apply(image(100, 150))
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    assert parse_policy("resize(short=64)").apply(image(150, 100)).shape == (96, 64, 3)
    assert parse_policy("resize(short=256)").apply(image(100, 150)).shape == (256, 384, 3)  # enlarges too


def test_upscale_center_crop_pad64_shapes():
    small = image(64, 64)
    assert parse_policy("upscale(factor=4)").apply(small).shape == (256, 256, 3)
    nearest = parse_policy("upscale(factor=2,filter=nearest)").apply(small)
    assert (nearest[::2, ::2] == small).all()
    crop = parse_policy("center_crop(size=32)").apply(image(40, 50))
    assert crop.shape == (32, 32, 3) and (crop == image(40, 50)[4:36, 9:41]).all()
    padded = parse_policy("pad64").apply(image(70, 100))
    assert padded.shape == (128, 128, 3) and (padded[:70, :100] == image(70, 100)).all()
    assert (padded[70:, :100] == image(70, 100)[69:70, :]).all()  # edge replication
    assert parse_policy("pad64").apply(image(64, 128)).shape == (64, 128, 3)
    zeros = parse_policy("pad64(mode=constant)").apply(image(10, 10))
    assert zeros.shape == (64, 64, 3) and not zeros[10:].any()
    chained = parse_policy("resize(short=300)+center_crop(size=256)").apply(image(200, 400))
    assert chained.shape == (256, 256, 3)


def test_center_crop_larger_than_image_is_a_per_image_error():
    with pytest.raises(PolicyError, match="smaller than the crop"):
        parse_policy("center_crop(size=64)").apply(image(32, 100))


def test_policies_are_deterministic():
    src = image(77, 91, seed=5)
    for spec in (
        "resize(short=50)",
        "upscale(factor=3)",
        "pad64",
        "center_crop(size=40)",
        "resize(short=33,filter=box)",
    ):
        a, b = parse_policy(spec).apply(src.copy()), parse_policy(spec).apply(src.copy())
        assert pixels_sha256(a) == pixels_sha256(b), spec
    assert pixels_sha256(parse_policy("resize(short=50,filter=bicubic)").apply(src)) != pixels_sha256(
        parse_policy("resize(short=50,filter=lanczos)").apply(src)
    )


def test_mosaic_tiles_row_major_and_keeps_the_map():
    policy = parse_policy("mosaic(k=2)")
    tiles = [image(8, 6, seed=i) for i in range(4)]
    out, tile_map = policy.mosaic(tiles, ["a", "b", "c", "d"])
    assert out.shape == (16, 12, 3)
    for t, tile in zip(tile_map, tiles, strict=True):
        assert (out[t["y"] : t["y"] + t["h"], t["x"] : t["x"] + t["w"]] == tile).all()
    assert [(t["id"], t["row"], t["col"]) for t in tile_map] == [("a", 0, 0), ("b", 0, 1), ("c", 1, 0), ("d", 1, 1)]
    with pytest.raises(PolicyError, match="needs 4 images"):
        policy.mosaic(tiles[:3], ["a", "b", "c"])
    with pytest.raises(PolicyError, match="one size"):
        policy.mosaic([*tiles[:3], image(9, 6)], ["a", "b", "c", "d"])
    assert parse_policy("upscale(factor=2)+mosaic(k=2)").apply(tiles[0]).shape == (16, 12, 3)  # per-image part
