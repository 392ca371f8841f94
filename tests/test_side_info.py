"""Side-information corruptions (corruptions/side_info.py): the plugin contract the runner relies on (identity is
byte-identical, outputs keep the shape, draws come from the given rng only, parameters validated in one line) and
what each degradation does, in its units."""

from __future__ import annotations

import numpy as np
import pytest

from corruptions.base import CorruptionError
from corruptions.side_info import SideContext, SideInfoCorruption, SideInfoUnavailable, SideResult
from harness.registry import CORRUPTIONS

LEVELS = {
    "side_noise": {"sigma": 10.0},
    "side_blur": {"sigma_px": 2.0},
    "side_jpeg": {"bpp": 2.0},
    "side_jpeg2000": {"bpp": 1.0},
    "side_downscale": {"factor": 4},
    "side_shift": {"dx_px": 3.5},
    "side_rectify": {"dy_px": 2.0, "rotate_deg": 1.0},
    "side_occlusion": {"fraction": 0.25, "fill": "noise"},
    "side_photometric": {"gain": 1.2, "offset": -10.0, "gamma": 0.9},
    "side_temporal": {"frames": 2},
    "side_wrong_pair": {"probability": 1.0},
    "side_missing": {"probability": 1.0},
}


@pytest.fixture(scope="module")
def scene():
    from harness.datasets.stereo_synth import stereo_pair

    side = stereo_pair(7, 64, 128)[1]
    other = stereo_pair(8, 64, 128)[1]
    later = {k: stereo_pair(7, 64, 128, frame=k)[1] for k in (-2, 2)}
    ctx = SideContext("stereo", "scene_7", other_scene=lambda rng: other, neighbour=lambda k: later.get(k))
    return side, other, ctx


def test_every_side_plugin_is_registered_as_the_third_kind():
    names = CORRUPTIONS.names("side_*")
    assert set(names) == set(LEVELS)
    for name in names:
        cls = CORRUPTIONS.get(name)
        assert issubclass(cls, SideInfoCorruption) and cls.acts_on == "side_info" and cls.name == name


@pytest.mark.parametrize("name", sorted(LEVELS))
def test_identity_is_byte_identical_and_a_level_keeps_shape_and_is_reproducible(name, scene):
    side, _, ctx = scene
    cls = CORRUPTIONS.get(name)
    ident = cls(**cls.identity_params())
    assert ident.is_identity()
    before = side.copy()
    assert ident.apply(side, np.random.default_rng(0), ctx).image is side
    level = cls(**LEVELS[name])
    assert not level.is_identity() and level.label()
    a = level.apply(side, np.random.default_rng(5), ctx)
    b = level.apply(side, np.random.default_rng(5), ctx)
    assert isinstance(a, SideResult) and np.array_equal(side, before)  # never modified in place
    if name == "side_missing":
        assert a.image is None and a.extra == {"missing": True}
        return
    assert a.image.shape == side.shape and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and a.extra == b.extra
    assert not np.array_equal(a.image, side)


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("side_noise", {"sigma": -1.0}, "sigma"),
        ("side_blur", {"sigma_px": "wide"}, "sigma_px"),
        ("side_jpeg", {"bpp": 0.0}, r"\(0, 24\]"),
        ("side_jpeg2000", {"bpp": 30.0}, r"\(0, 24\]"),
        ("side_downscale", {"factor": 0.5}, r"\[1, 64\]"),
        ("side_shift", {"dx_px": True}, "dx_px"),
        ("side_rectify", {"dy_px": 1.0, "rotate_deg": "x"}, "rotate_deg"),
        ("side_occlusion", {"fraction": 1.5}, "fraction"),
        ("side_occlusion", {"fraction": 0.1, "fill": "pink"}, "fill"),
        ("side_photometric", {"gain": -1.0}, "gain"),
        ("side_temporal", {"frames": 1.5}, "whole number"),
        ("side_wrong_pair", {"probability": 2.0}, "probability"),
        ("side_missing", {"chance": 1.0}, "chance"),
    ],
)
def test_bad_parameters_fail_in_one_line(name, params, match):
    with pytest.raises(CorruptionError, match=match) as err:
        CORRUPTIONS.get(name)(**params)
    assert "\n" not in str(err.value)


def test_shift_and_rectify_move_content_by_their_pixels(scene):
    side, _, ctx = scene
    rng = np.random.default_rng(0)
    shifted = CORRUPTIONS.get("side_shift")(dx_px=3.0).apply(side, rng, ctx).image
    np.testing.assert_array_equal(shifted[:, 3:], side[:, :-3])  # content moved right by 3 px
    np.testing.assert_array_equal(shifted[:, :3], np.repeat(side[:, :1], 3, axis=1))  # edge replicated
    down = CORRUPTIONS.get("side_rectify")(dy_px=2.0).apply(side, rng, ctx).image
    np.testing.assert_array_equal(down[2:], side[:-2])


def test_rate_degradations_respect_their_rate_and_record_it(scene):
    side, _, ctx = scene
    rng = np.random.default_rng(0)
    jpeg = CORRUPTIONS.get("side_jpeg")(bpp=2.0).apply(side, rng, ctx)
    assert jpeg.extra["actual_bpp"] <= 2.0 and not jpeg.extra["rate_exceeded"] and 1 <= jpeg.extra["quality"] <= 95
    tight = CORRUPTIONS.get("side_jpeg")(bpp=0.05).apply(side, rng, ctx)  # below JPEG's header cost
    assert tight.extra["rate_exceeded"] and tight.extra["quality"] == 1
    j2k = CORRUPTIONS.get("side_jpeg2000")(bpp=1.0).apply(side, rng, ctx)
    assert j2k.extra["actual_bpp"] == pytest.approx(1.0, rel=0.1)


def test_occlusion_covers_at_least_the_fraction_and_photometric_is_the_formula(scene):
    side, _, ctx = scene
    occ = CORRUPTIONS.get("side_occlusion")(fraction=0.3, fill="black").apply(side, np.random.default_rng(1), ctx)
    assert occ.extra["covered_fraction"] >= 0.3
    assert np.mean(np.all(occ.image == 0, axis=2)) >= 0.3 - np.mean(np.all(side == 0, axis=2))
    out = CORRUPTIONS.get("side_photometric")(gain=0.5, offset=10.0).apply(side, np.random.default_rng(1), ctx)
    want = np.clip(np.round(255 * np.clip(side / 255 * 0.5 + 10 / 255, 0, 1)), 0, 255)
    np.testing.assert_array_equal(out.image, want.astype(np.uint8))


def test_context_degradations_use_the_context_and_say_when_it_cannot_help(scene):
    side, other, ctx = scene
    rng = np.random.default_rng(0)
    assert np.array_equal(CORRUPTIONS.get("side_wrong_pair")().apply(side, rng, ctx).image, other)
    temporal = CORRUPTIONS.get("side_temporal")
    assert np.array_equal(temporal(frames=2).apply(side, rng, ctx).image, ctx.neighbour(2))
    with pytest.raises(SideInfoUnavailable, match="no side view \\+5 frames"):
        temporal(frames=5).apply(side, rng, ctx)
    bare = SideContext("stereo")
    assert temporal.needs == ("neighbour",) and CORRUPTIONS.get("side_wrong_pair").needs == ("other_scene",)
    with pytest.raises(SideInfoUnavailable, match="provides no neighbour"):
        temporal(frames=1).apply(side, rng, bare)
    # probabilities below 1: some cells keep the true view (drawn from the cell's rng)
    kept = [
        CORRUPTIONS.get("side_missing")(probability=0.5).apply(side, np.random.default_rng(s), bare) for s in range(40)
    ]
    assert 5 < sum(r.image is None for r in kept) < 35


def test_outputs_that_break_the_contract_are_refused(scene):
    side, _, ctx = scene

    class Broken(SideInfoCorruption):
        name = "broken"

        from dataclasses import dataclass as _dc

        @_dc(frozen=True)
        class Params:
            level: float = 1.0

        @classmethod
        def identity_params(cls):
            return {"level": 0.0}

        def degrade(self, image, rng, context):
            return image[:10]

    with pytest.raises(ValueError, match="expected"):
        Broken().apply(side, np.random.default_rng(0), ctx)
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        Broken().apply(side.astype(np.float32), np.random.default_rng(0), ctx)


def test_side_context_from_a_stereo_dataset_draws_other_scenes_and_neighbours():
    from corruptions.side_info import side_context
    from harness.datasets import create_dataset

    ds = create_dataset("standin_stereo", count=3)
    entries = ds.index()
    ctx = side_context(ds, entries[0], "stereo", entries)
    assert ctx.kind == "stereo" and ctx.image_id == entries[0].id
    own = ds.load_side(entries[0], "stereo")
    others = [ctx.other_scene(np.random.default_rng(s)) for s in range(6)]
    assert all(o.shape == own.shape and not np.array_equal(o, own) for o in others)
    assert np.array_equal(ctx.neighbour(1), ds.load_neighbour(entries[0], "stereo", 1))
    lonely = side_context(ds, entries[0], "stereo", entries[:1])
    assert lonely.other_scene is None  # nothing else to draw from: side_wrong_pair is refused for it
