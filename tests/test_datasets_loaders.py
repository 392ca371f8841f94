"""Loaders on tiny fixtures in each real layout: ImageFolder tree, zip, hub-style parquet shards, Galaxy10
HDF5, generic folders; splits, labels, hashes, and the offline hub failing fast with an actionable line."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.datasets import DatasetError, create_dataset, stratified_subset
from harness.datasets.loaders import GALAXY10_CLASSES
from harness.datasets.stores import HDF5Store
from harness.hashing import pixels_sha256

EUROSAT_CLASSES = ("AnnualCrop", "Forest", "River")


def tiny(seed: int, size: tuple[int, int] = (16, 16)) -> np.ndarray:
    """A deterministic small RGB image (height, width)."""
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def png_bytes(image: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(image)
    (im.convert(mode) if mode else im).save(buf, format="PNG")
    return buf.getvalue()


def make_eurosat_tree(root: Path, per_class: tuple[int, ...] = (4, 3, 2), fmt: str = "png") -> dict[str, str]:
    """``root/2750/<class>/<class>_<i>.<fmt>`` like the torchgeo EuroSAT.zip; returns id -> pixel sha256."""
    hashes = {}
    for c, (cls, n) in enumerate(zip(EUROSAT_CLASSES, per_class, strict=True)):
        folder = root / "2750" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image = tiny(100 * c + i)
            path = folder / f"{cls}_{i + 1}.{fmt}"
            Image.fromarray(image).save(path)
            hashes[f"2750/{cls}/{path.name}"] = pixels_sha256(np.asarray(Image.open(path).convert("RGB")))
    return hashes


def zip_tree(root: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    return archive


def make_parquet(folder: Path, split: str, images: list[np.ndarray], labels: list[int], names: list[str]) -> Path:
    """A hub-style shard ``data/<split>-00000-of-00001.parquet``: image {bytes, path}, label with names."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    table = pa.table(
        {
            "image": [{"bytes": png_bytes(im), "path": f"{i}.png"} for i, im in enumerate(images)],
            "label": pa.array(labels, type=pa.int64()),
        }
    ).replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path = folder / "data" / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=3)
    return path


def make_galaxy10_h5(path: Path, counts: tuple[int, ...] = (5, 3, 8, 4)) -> list[np.ndarray]:
    """An HDF5 file with the Galaxy10 keys, sorted by class like the real one."""
    import h5py

    labels = np.concatenate([np.full(n, c, dtype=np.uint8) for c, n in enumerate(counts)])
    images = [tiny(7000 + i, (8, 8)) for i in range(len(labels))]
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.stack(images), chunks=(1, 8, 8, 3))
        f.create_dataset("ans", data=labels)
        for key in ("ra", "dec", "redshift", "pxscale"):
            f.create_dataset(key, data=np.zeros(len(labels)))
    return images


@pytest.fixture(autouse=True)
def _isolated_data(tmp_path, monkeypatch):
    """No developer copy of a dataset (datasets/<name>/, the user cache) may leak into these tests."""
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "no-cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


# -- ImageFolder trees and zips ------------------------------------------------------------------------------
def test_eurosat_tree_labels_ids_and_pixel_hashes(tmp_path):
    hashes = make_eurosat_tree(tmp_path / "eurosat")
    ds = create_dataset("eurosat", path=str(tmp_path / "eurosat"))
    entries = ds.entries()
    assert [e.id for e in entries] == sorted(hashes)
    assert {e.id: e.sha256 for e in entries} == hashes
    assert {e.label for e in entries} == set(EUROSAT_CLASSES)
    assert all(e.label == e.id.split("/")[1] and e.split == "all" for e in entries)
    assert all((e.width, e.height) == (16, 16) and e.original_size == (16, 16) for e in entries)
    image = ds.load(entries[0])
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)


def test_zip_gives_the_same_entries_as_the_tree(tmp_path):
    make_eurosat_tree(tmp_path / "tree", fmt="jpg")
    archive = zip_tree(tmp_path / "tree", tmp_path / "EuroSAT.zip")
    from_tree = create_dataset("eurosat", path=str(tmp_path / "tree")).entries()
    from_zip = create_dataset("eurosat", path=str(archive)).entries()
    assert [(e.id, e.label, e.sha256) for e in from_tree] == [(e.id, e.label, e.sha256) for e in from_zip]
    assert from_zip[0].path == str(archive)


def test_a_folder_holding_only_the_zip_reads_the_zip(tmp_path, monkeypatch):
    make_eurosat_tree(tmp_path / "tree")
    (tmp_path / "data" / "eurosat").mkdir(parents=True)
    zip_tree(tmp_path / "tree", tmp_path / "data" / "eurosat" / "EuroSAT.zip")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "data"))
    ds = create_dataset("eurosat")
    assert ds.describe()["source_kind"] == "zip" and len(ds.index()) == 9


def test_single_top_folder_is_skipped_when_taking_classes(tmp_path):
    make_eurosat_tree(tmp_path / "a")
    (tmp_path / "a" / "2750").rename(tmp_path / "a" / "EuroSAT_RGB")
    entries = create_dataset("eurosat", path=str(tmp_path / "a")).index()
    assert {e.label for e in entries} == set(EUROSAT_CLASSES)


def test_split_lists_beside_the_tree_select_by_stem(tmp_path):
    make_eurosat_tree(tmp_path / "e")
    (tmp_path / "e" / "eurosat-test.txt").write_text("AnnualCrop_1.tif\nRiver_2.tif\n")
    entries = create_dataset("eurosat", path=str(tmp_path / "e"), split="test").index()
    assert [e.id for e in entries] == ["2750/AnnualCrop/AnnualCrop_1.png", "2750/River/River_2.png"]
    assert {e.split for e in entries} == {"test"}
    with pytest.raises(DatasetError, match="no images for split 'train'"):
        create_dataset("eurosat", path=str(tmp_path / "e"), split="train").index()


def test_split_folders(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for i in range(n):
            (tmp_path / "s" / split / "cat").mkdir(parents=True, exist_ok=True)
            Image.fromarray(tiny(i)).save(tmp_path / "s" / split / "cat" / f"{i}.png")
    test = create_dataset("tu_berlin", path=str(tmp_path / "s"), split="test").index()
    assert len(test) == 2 and {e.label for e in test} == {"cat"} and {e.split for e in test} == {"test"}


def test_tu_berlin_grayscale_becomes_rgb(tmp_path):
    gray = np.random.default_rng(1).integers(0, 256, (20, 20), dtype=np.uint8)
    (tmp_path / "tu" / "airplane").mkdir(parents=True)
    Image.fromarray(gray, mode="L").save(tmp_path / "tu" / "airplane" / "1.png")
    ds = create_dataset("tu_berlin", path=str(tmp_path / "tu"))
    (entry,) = ds.entries()
    image = ds.load(entry)
    assert image.shape == (20, 20, 3) and (image == gray[..., None]).all()
    assert entry.label == "airplane" and entry.conversion.startswith("L->RGB")


def test_generic_folder_is_recursive_sorted_and_content_hashed(tmp_path):
    root = tmp_path / "kodak"
    (root / "b").mkdir(parents=True)
    Image.fromarray(tiny(1)).save(root / "kodim02.png")
    Image.fromarray(tiny(2)).save(root / "b" / "kodim01.png")
    (root / "README.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"")
    for name in ("kodak", "clic", "tecnick", "lsdir", "folder"):
        entries = create_dataset(name, path=str(root)).entries()
        assert [e.id for e in entries] == ["b/kodim01.png", "kodim02.png"], name
        assert [e.sha256 for e in entries] == [pixels_sha256(tiny(2)), pixels_sha256(tiny(1))]
        assert all(e.label is None for e in entries)
    # renaming a file changes its id, never its hash
    (root / "kodim02.png").rename(root / "renamed.png")
    assert pixels_sha256(tiny(1)) in {e.sha256 for e in create_dataset("kodak", path=str(root)).entries()}


def test_folder_labels_parent_option(tmp_path):
    make_eurosat_tree(tmp_path / "f")
    assert {e.label for e in create_dataset("folder", path=str(tmp_path / "f"), labels="parent").index()} == set(
        EUROSAT_CLASSES
    )
    with pytest.raises(DatasetError, match="labels must be"):
        create_dataset("folder", path=str(tmp_path / "f"), labels="grandparent")


def test_missing_path_is_one_line_error(tmp_path):
    with pytest.raises(DatasetError) as err:
        create_dataset("kodak", path=str(tmp_path / "nope"))
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DatasetError, match="no local copy"):
        create_dataset("kodak")  # no path, nothing where the loader looks, no default hub id
    with pytest.raises(DatasetError, match="does not take option"):
        create_dataset("kodak", path=str(tmp_path), colour="blue")


def test_default_location_is_found(tmp_path, monkeypatch):
    data = tmp_path / "data"
    make_eurosat_tree(data / "eurosat")
    monkeypatch.setenv("HARNESS_DATA_DIR", str(data))
    ds = create_dataset("eurosat")
    assert ds.describe()["source"] == str(data / "eurosat") and len(ds.index()) == 9


# -- parquet and HDF5 ----------------------------------------------------------------------------------------
def test_parquet_shards_with_hub_class_names_and_splits(tmp_path):
    names = ["Disturbed", "Merging"]
    train = [tiny(i) for i in range(7)]
    make_parquet(tmp_path / "g", "train", train, [0, 0, 0, 1, 1, 1, 1], names)
    make_parquet(tmp_path / "g", "test", [tiny(50), tiny(51)], [1, 0], names)
    ds = create_dataset("galaxy10", path=str(tmp_path / "g"), split="train")
    entries = ds.entries()
    assert len(entries) == 7 and {e.split for e in entries} == {"train"}
    assert [e.sha256 for e in entries] == [pixels_sha256(im) for im in train]  # rows across 3 row groups
    assert [e.label for e in entries][:4] == ["Disturbed", "Disturbed", "Disturbed", "Merging"]
    assert entries[0].id == "data/train-00000-of-00001.parquet#000000"
    both = create_dataset("galaxy10", path=str(tmp_path / "g")).index()
    assert len(both) == 9
    single = create_dataset("eurosat", path=str(tmp_path / "g" / "data" / "test-00000-of-00001.parquet")).entries()
    assert [e.label for e in single] == ["Merging", "Disturbed"]


def test_galaxy10_h5_keys_labels_and_lazy_rows(tmp_path, monkeypatch):
    images = make_galaxy10_h5(tmp_path / "Galaxy10_DECals.h5")
    reads = []
    original = HDF5Store.read
    monkeypatch.setattr(HDF5Store, "read", lambda self, *a: reads.append(a[0]) or original(self, *a))
    ds = create_dataset("galaxy10", path=str(tmp_path / "Galaxy10_DECals.h5"))
    index = ds.index()
    assert len(index) == 20 and reads == []  # indexing reads labels only, never the images
    assert [e.label for e in index[:6]] == [GALAXY10_CLASSES[0]] * 5 + [GALAXY10_CLASSES[1]]
    picked = stratified_subset(index, 8, seed=3)
    resolved = [ds.resolve(e) for e in picked]
    assert len(reads) == 8
    assert all(e.sha256 == pixels_sha256(images[e.index]) for e in resolved)
    # a folder holding the .h5 works too, and there is no official split
    assert len(create_dataset("galaxy10", path=str(tmp_path)).index()) == 20
    with pytest.raises(DatasetError, match="no official split"):
        create_dataset("galaxy10", path=str(tmp_path / "Galaxy10_DECals.h5"), split="train")


def test_galaxy10_card_agrees_with_the_loader():
    from harness.datasets import read_card

    card = read_card("galaxy10")
    assert tuple(card["classes"]) == GALAXY10_CLASSES
    assert sum(card["expected"]["class_counts"]) == card["expected"]["total"] == 17736


def test_cards_are_complete_and_data_only():
    from conftest import ROOT

    required = {"name", "title", "version", "citation", "licence", "default_preprocessing", "sources", "splits"}
    for name in ("eurosat", "tu_berlin", "galaxy10", "kodak", "clic", "tecnick", "lsdir"):
        import tomllib

        card = tomllib.loads((ROOT / "datasets" / f"{name}.toml").read_text())
        assert required <= set(card), (name, required - set(card))
        assert card["name"] == name and "expected" in card and "fetch" in card
        for archive in card["sources"].get("archives", []):
            sha = archive.get("sha256", "not published")
            assert sha == "not published" or len(sha) == 64
        from harness.preprocess import canonical_policy

        assert canonical_policy(card["default_preprocessing"]) == card["default_preprocessing"]


# -- the hub -------------------------------------------------------------------------------------------------
def test_offline_hub_fails_fast_with_an_actionable_line(monkeypatch):
    """Fast, checked without a clock (a verdict must not depend on the machine's load): offline, the loader
    neither opens a connection nor waits to retry one."""
    import socket

    waits: list[str] = []

    def no_connect(self, *args, **kwargs):
        waits.append(f"connect {args}")
        raise OSError("network disabled by the test")

    def no_lookup(*args, **kwargs):
        waits.append(f"lookup {args}")
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", no_connect)
    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    monkeypatch.setattr(socket, "create_connection", no_lookup)
    monkeypatch.setattr(time, "sleep", lambda s: waits.append(f"sleep {s}"))
    with pytest.raises(DatasetError) as err:
        create_dataset("eurosat")  # no local copy: the card's hub id, not cached, offline
    msg = str(err.value)
    assert waits == [], f"the offline loader tried the network or waited: {waits}"
    assert "\n" not in msg and "timm/eurosat-rgb" in msg and "HF_HUB_OFFLINE" in msg
    assert "evaluate.py datasets fetch eurosat" in msg and "path" in msg


def test_unreachable_hub_fails_fast_without_the_offline_flag(monkeypatch):
    import harness.datasets.hub as hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(hub, "reachable", lambda *a, **k: False)
    with pytest.raises(DatasetError, match=r"unreachable.*datasets fetch galaxy10"):
        create_dataset("galaxy10", hub_id="matthieulel/galaxy10_decals", split="test")
    with pytest.raises(DatasetError, match="unreachable"):
        hub.fetch("eurosat", {"fetch": {"allowed": True, "method": "hub", "hub_id": "timm/eurosat-rgb"}}, Path("/x"))


def test_fetch_respects_the_card():
    from harness.datasets import read_card
    from harness.datasets.hub import fetch

    with pytest.raises(DatasetError, match="fetching is not offered"):
        fetch("galaxy10", read_card("galaxy10"), Path("/nonexistent"))
    with pytest.raises(DatasetError, match="HF_HUB_OFFLINE"):
        fetch("eurosat", read_card("eurosat"), Path("/nonexistent"))


def test_hub_split_through_the_datasets_library(monkeypatch):
    """A cached hub split (stood in for by an in-memory ``datasets.Dataset``) indexes and decodes like the rest."""
    import datasets as hf
    import harness.datasets.hub as hub

    images = [tiny(i) for i in range(4)]
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=list(EUROSAT_CLASSES))})
    table = hf.Dataset.from_dict(
        {"image": [{"bytes": png_bytes(im), "path": None} for im in images], "label": [2, 0, 1, 0]}, features=features
    )
    monkeypatch.setattr(hub, "open_hub_split", lambda name, hub_id, split, hint="": table)
    ds = create_dataset("eurosat", split="test")
    entries = ds.entries()
    assert [e.label for e in entries] == ["River", "AnnualCrop", "Forest", "AnnualCrop"]
    assert [e.sha256 for e in entries] == [pixels_sha256(im) for im in images]
    assert ds.describe()["source"] == "hf://datasets/timm/eurosat-rgb [test]" and entries[0].split == "test"


# -- stand-ins -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["standin_astro", "standin_sketch", "standin_terrain"])
def test_standins_are_deterministic_and_labelled_as_such(name, monkeypatch):
    from conftest import ROOT

    monkeypatch.setenv("HARNESS_DATA_DIR", str(ROOT / "datasets"))
    a, b = create_dataset(name), create_dataset(name)
    ea, eb = a.entries(), b.entries()
    assert len(ea) >= 6 and [e.sha256 for e in ea] == [e.sha256 for e in eb]
    assert len({e.sha256 for e in ea}) == len(ea)
    assert a.describe()["stand_in"] is True and "stand-in" in ea[0].path
    image = a.load(ea[0])
    assert image.dtype == np.uint8 and image.ndim == 3 and min(image.shape[:2]) >= 128
    if name == "standin_sketch":  # line art: mostly white, some black
        assert set(np.unique(image)) == {0, 255} and (image == 255).mean() > 0.8


def test_a_cached_hub_copy_is_read_cache_only_when_offline(monkeypatch):
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst

    import datasets as hf
    import harness.datasets.hub as hub

    seen = []
    table = hf.Dataset.from_dict(
        {"image": [{"bytes": png_bytes(tiny(1)), "path": None}]}, features=hf.Features({"image": hf.Image()})
    )

    def fake_load(hub_id, split):
        seen.append((hub_id, split, dconfig.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE))
        return table

    before = (dconfig.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE)
    monkeypatch.setattr(hub, "hub_cached", lambda hub_id: True)
    monkeypatch.setattr(hf, "load_dataset", fake_load)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.setattr(hub, "reachable", lambda *a, **k: False)
    (entry,) = create_dataset("kodak", hub_id="someone/kodak", split="test").entries()
    assert seen == [("someone/kodak", "test", True, True)]  # unreachable: cache only, no retries
    assert before == (dconfig.HF_HUB_OFFLINE, hconst.HF_HUB_OFFLINE)  # and the flags are restored
    assert entry.sha256 == pixels_sha256(tiny(1)) and entry.label is None


def test_pixel_hash_is_sha256_of_rgb_bytes_whatever_the_file_format(tmp_path):
    import hashlib

    pixels = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)
    expected = hashlib.sha256(bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])).hexdigest()
    (tmp_path / "f").mkdir()
    for fmt in ("png", "bmp", "tiff", "ppm"):
        Image.fromarray(pixels).save(tmp_path / "f" / f"x.{fmt}")
    entries = create_dataset("folder", path=str(tmp_path / "f")).entries()
    assert len(entries) == 4 and {e.sha256 for e in entries} == {expected}
