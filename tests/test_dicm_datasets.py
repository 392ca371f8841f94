"""Stereo datasets (harness/datasets/stereo.py, stereo_synth.py): entries carry their side view, both views share
one protocol and size, which view is primary is an explicit option, and errors are one line."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import DatasetError, ImageEntry, create_dataset
from harness.datasets.stereo_synth import make_scene, render_pair, stereo_pair
from harness.hashing import pixels_sha256


# -- the generator ---------------------------------------------------------------------------------------------
def test_generated_pairs_are_deterministic_one_to_two_and_differ_by_disparity():
    left, right = stereo_pair(11, 64, 128)
    again = stereo_pair(11, 64, 128)
    assert left.shape == right.shape == (64, 128, 3) and left.dtype == np.uint8
    assert np.array_equal(left, again[0]) and np.array_equal(right, again[1])
    assert not np.array_equal(left, right)
    assert not np.array_equal(left, stereo_pair(12, 64, 128)[0])
    assert {make_scene(s).kind for s in range(12)} == {"layered", "translation"}


def test_a_translation_pair_is_one_horizontal_shift():
    seed = next(s for s in range(50) if make_scene(s).kind == "translation")
    scene = make_scene(seed, 64, 128)
    left, right = render_pair(scene, 0, seed)
    d = scene.translation
    errors = {k: float(np.mean(np.abs(left[:, k + 8 : 120].astype(int) - right[:, 8 : 120 - k]))) for k in range(9)}
    best = min(errors, key=errors.get)
    assert abs(best - d) <= 1.0, (d, errors)  # the right view's pixel x shows the left view's x + d


def test_layered_scenes_move_in_time():
    seed = next(s for s in range(50) if make_scene(s).kind == "layered")
    now = stereo_pair(seed, 64, 128)[1]
    later = stereo_pair(seed, 64, 128, frame=3)[1]
    diff = np.abs(now.astype(int) - later).mean()
    assert 1.0 < diff < 80.0


# -- standin_stereo --------------------------------------------------------------------------------------------
def test_standin_stereo_entries_carry_their_side_view_outside_the_pixel_hash():
    ds = create_dataset("standin_stereo", count=3)
    entries = ds.index()
    assert [e.id for e in entries] == [f"scene_00000{i}_left.png" for i in range(3)]
    e = entries[0]
    assert e.side == {"stereo": "scene_000000_right.png"} and e.sha256 == pixels_sha256(ds.load(e))
    side = ds.load_side(e, "stereo")
    assert side.shape == (64, 128, 3) and not np.array_equal(side, ds.load(e))
    assert hash(e) == hash(ImageEntry(**{**e.__dict__, "side": {"stereo": "elsewhere"}}))  # not in the hash
    assert e.record()["side"] == {"stereo": "scene_000000_right.png"}
    assert ds.load_neighbour(e, "stereo", 1).shape == side.shape
    with pytest.raises(DatasetError, match="no side kind 'depth'"):
        ds.load_side(e, "depth")
    described = ds.describe()
    assert described["stand_in"] and described["seeds"] == [0, 2] and described["primary"] == "left"


def test_standin_right_primary_swaps_the_views():
    left_first = create_dataset("standin_stereo", count=1).index()[0]
    right_first = create_dataset("standin_stereo", count=1, primary="right").index()[0]
    assert right_first.id == left_first.side["stereo"] and right_first.side["stereo"] == left_first.id


def test_datasets_without_side_images_refuse_in_one_line():
    ds = create_dataset("samples")
    with pytest.raises(DatasetError, match="no decoder-side image 'stereo'"):
        ds.load_side(ds.index()[0], "stereo")
    with pytest.raises(DatasetError, match="count must be"):
        create_dataset("standin_stereo", count=0)


# -- KITTI and Cityscapes from local files ----------------------------------------------------------------------
def _png(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3 + seed * 40) % 256, (yy * 2 + seed * 10) % 256, (xx + yy) % 256], axis=2)
    Image.fromarray(img.astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kitti") / "data_scene_flow_multiview"
    for scene in range(4):
        for frame in (9, 10, 11):
            for cam in ("image_2", "image_3"):
                _png(root / "training" / cam / f"{scene:06d}_{frame:02d}.png", 372, 744, scene + frame)
    _png(root / "training" / "image_2" / "000009_10.png", 372, 744, 0)  # no right view: not a pair
    return root


def test_kitti_pairs_follow_ndics_protocol_and_alternate_the_primary_view(kitti_root):
    ds = create_dataset("kitti", path=str(kitti_root))
    entries = ds.index()
    assert len(entries) == 4  # frame 10 of each scene with both views
    primaries = [Path(e.id).parent.name for e in sorted(entries, key=lambda e: Path(e.id).name)]
    assert primaries == ["image_2", "image_2", "image_3", "image_3"]  # second half right-primary
    e = next(e for e in entries if "image_3" in e.id)
    assert e.side["stereo"].replace("image_2", "image_3") == e.id
    view = ds.read(e)
    assert view.shape == (128, 256, 3) and ds.load_side(e, "stereo").shape == (128, 256, 3)
    assert "center_crop(370x740)+resize(128x256,bilinear)" in ds.decode(e).conversion
    assert ds.load_neighbour(e, "stereo", 1).shape == (128, 256, 3)
    assert ds.load_neighbour(e, "stereo", 5) is None
    assert ds.has_neighbour(e, "stereo", 1) and not ds.has_neighbour(e, "stereo", 5)
    d = ds.describe()
    assert d["primary"] == "alternate" and d["protocol"].startswith("ndic-kitti") and d["frames"] == "10"
    assert len(create_dataset("kitti", path=str(kitti_root), frames="all", primary="left").index()) == 12


def test_kitti_reads_the_official_zip_too(kitti_root, tmp_path):
    archive = tmp_path / "data_scene_flow_multiview.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(kitti_root.rglob("*.png")):
            zf.write(p, p.relative_to(kitti_root.parent).as_posix())
    ds = create_dataset("kitti", path=str(archive), primary="left", protocol="native")
    e = ds.index()[0]
    assert ds.read(e).shape == (372, 744, 3) and ds.load_side(e, "stereo").shape == (372, 744, 3)


def test_cityscapes_pairs_left_and_right_folders(tmp_path):
    root = tmp_path / "cityscapes"
    for split, city, n in (("val", "lindau", 2), ("test", "berlin", 1)):
        for i in range(n):
            stem = f"{city}_{i:06d}_000019"
            _png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", 64, 128, i)
            _png(root / "rightImg8bit" / split / city / f"{stem}_rightImg8bit.png", 64, 128, i + 1)
    ds = create_dataset("cityscapes", path=str(root), split="val")
    entries = ds.index()
    assert len(entries) == 2 and all(e.split == "val" and e.label == "lindau" for e in entries)
    assert ds.read(entries[0]).shape == (128, 256, 3)  # NDIC: resized to 128 x 256
    assert ds.load_side(entries[0], "stereo").shape == (128, 256, 3)
    assert ds.load_neighbour(entries[0], "stereo", 1) is None  # no sequences read: temporal desync unavailable
    assert not ds.has_neighbour(entries[0], "stereo", 1)
    assert len(create_dataset("cityscapes", path=str(root)).index()) == 3


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("kitti", {"path": "/nonexistent/kitti"}, "does not exist"),
        ("kitti", {"path": ".", "primary": "middle"}, "primary must be one of"),
        ("kitti", {"path": ".", "frames": "3"}, "frames must be"),
        ("cityscapes", {"path": ".", "protocol": "huge"}, "protocol must be one of"),
    ],
)
def test_stereo_loader_errors_are_one_line(name, options, match):
    with pytest.raises(DatasetError, match=match) as err:
        create_dataset(name, **options)
    assert "\n" not in str(err.value)


def test_a_folder_without_pairs_says_where_to_put_them(tmp_path):
    _png(tmp_path / "x.png", 8, 8, 0)
    with pytest.raises(DatasetError, match="no stereo pairs found"):
        create_dataset("cityscapes", path=str(tmp_path)).index()


def test_an_ndic_pair_list_sets_the_pairs(kitti_root, tmp_path):
    lst = tmp_path / "kitti_test.txt"
    lst.write_text(
        "KITTI/training/image_3/000001_10.png KITTI/training/image_2/000001_10.png\n"
        "KITTI/training/image_2/000002_10.png KITTI/training/image_3/000002_10.png\n"
    )
    ds = create_dataset("kitti", path=str(kitti_root), pair_list=str(lst))
    ids = [e.id for e in ds.index()]
    assert ids == ["training/image_2/000002_10.png", "training/image_3/000001_10.png"]
