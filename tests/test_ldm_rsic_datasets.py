"""Remote-sensing datasets of issue #18: UC Merced's seeded per-class split, DOTA as a folder, the overhead
stand-in (deterministic, disjoint from LDM-RSIC-tiny's training seeds), the cards."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.datasets import DatasetError, create_dataset, read_card
from harness.datasets.remote_sensing import TEST_SEEDS, TRAIN_SEEDS, overhead_scene


def _ucm_tree(root, classes=("agricultural", "beach", "forest"), per_class=10):
    base = root / "UCMerced_LandUse" / "Images"
    rng = np.random.default_rng(0)
    for c in classes:
        (base / c).mkdir(parents=True)
        for i in range(per_class):  # 8 x 8 stand-ins of the 256 x 256 TIFFs keep the test fast
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(base / c / f"{c}{i:02d}.tif")
    return root


def test_ucmerced_test_split_is_twenty_percent_of_every_class_and_disjoint(tmp_path):
    root = _ucm_tree(tmp_path)
    test = create_dataset("ucmerced", path=str(root), split="test").index()
    train = create_dataset("ucmerced", path=str(root), split="train").index()
    every = create_dataset("ucmerced", path=str(root)).index()
    assert len(every) == 30 and len(test) == 6 and len(train) == 24
    assert {e.label for e in test} == {"agricultural", "beach", "forest"}
    assert all(sum(e.label == c for e in test) == 2 for c in ("agricultural", "beach", "forest"))
    assert not {e.id for e in test} & {e.id for e in train}
    assert {e.split for e in test} == {"test"}
    again = create_dataset("ucmerced", path=str(root), split="test").index()
    assert [e.id for e in again] == [e.id for e in test]  # seeded, stable
    with pytest.raises(DatasetError, match="split must be"):
        create_dataset("ucmerced", path=str(root), split="val")


def test_dota_reads_any_folder_and_says_where_to_put_it(tmp_path, monkeypatch):
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "images" / "P0001.png")
    ds = create_dataset("dota", path=str(tmp_path))
    (entry,) = ds.entries()
    assert entry.id == "images/P0001.png" and (entry.width, entry.height) == (400, 300)
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "nocache"))
    with pytest.raises(DatasetError, match=r"captain-whu\.github\.io/DOTA"):
        create_dataset("dota")


def test_cards_state_protocols_and_licences():
    dota, ucm = read_card("dota"), read_card("ucmerced")
    assert dota["default_preprocessing"] == "center_crop(size=256)" and "academic" in dota["licence"]
    assert ucm["expected"]["splits"] == {"test": 420, "train": 1680} and len(ucm["classes"]) == 21
    assert "not exactly 256 x 256" in ucm["description"]
    assert dota["fetch"]["allowed"] is False and ucm["fetch"]["allowed"] is False


def test_overhead_standin_is_deterministic_and_held_out_from_training():
    assert not set(TEST_SEEDS) & set(TRAIN_SEEDS)
    a = overhead_scene(1000, 64)
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, overhead_scene(1000, 64)) and not np.array_equal(a, overhead_scene(1001, 64))
    ds = create_dataset("standin_overhead")
    entries = ds.index()
    assert len(entries) == len(TEST_SEEDS) and (entries[0].width, entries[0].height) == (256, 256)
    assert ds.describe()["stand_in"] is True
