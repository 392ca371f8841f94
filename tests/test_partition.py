"""Seeded train/val/test partitions: disjoint, covering, stable, stratified; their use in suites."""

from __future__ import annotations

import pytest

from harness.config import SuiteError, parse_suite
from harness.datasets.base import DatasetError, ImageEntry
from harness.datasets.partition import Partition
from harness.datasets.selection import select_images


def _entries(n: int, labels: int = 2, hashed: bool = True) -> list[ImageEntry]:
    return [
        ImageEntry("d", "all", f"img{i:03d}", f"{i:064x}" if hashed else "", 8, 8, "x", label=str(i % labels))
        for i in range(n)
    ]


def _partition(**kw) -> Partition:
    return Partition.from_table({"take": "test", "train": 0.6, "val": 0.2, "test": 0.2, **kw})


def test_parts_are_disjoint_cover_the_index_and_keep_class_shares():
    entries = _entries(50, labels=5)
    parts = _partition().split(entries)
    ids = [e.id for part in parts.values() for e in part]
    assert sorted(ids) == sorted(e.id for e in entries)  # cover, and disjoint (no id twice)
    assert len(ids) == len(set(ids))
    assert [len(parts[p]) for p in ("train", "val", "test")] == [30, 10, 10]
    for part in parts.values():  # 5 classes of 10: each part gets every class in proportion
        counts = {lab: sum(e.label == lab for e in part) for lab in map(str, range(5))}
        assert len(set(counts.values())) == 1


def test_partition_is_stable_when_the_folder_grows_and_depends_on_the_seed():
    small, large = _entries(40), _entries(60)
    test_small = {e.id for e in _partition().apply(small)}
    test_large = {e.id for e in _partition().apply(large)}
    # content-ranked: most images keep their part when more are added (no reshuffle by position)
    assert len(test_small & test_large) >= 0.6 * len(test_small)
    assert {e.id for e in _partition(seed=1).apply(small)} != test_small
    assert _partition().apply(_entries(40, hashed=False))  # unhashed index: ranked by dataset/id


@pytest.mark.parametrize(
    "table, message",
    [
        ({"take": "test", "train": 0.5, "test": 0.4}, "sum to 1"),
        ({"take": "holdout", "train": 0.5, "test": 0.5}, "take"),
        ({"take": "test", "train": -0.5, "test": 1.5}, ">= 0"),
        ("0.6,0.2,0.2", "expected"),
    ],
)
def test_bad_partitions_are_refused_with_a_reason(table, message):
    with pytest.raises(DatasetError, match=message):
        Partition.from_table(table)


def test_select_images_takes_one_part_and_records_the_partition():
    parts = {}
    for take in ("train", "val", "test"):
        sel = select_images("standin_astro", partition=_partition().with_take(take))
        parts[take] = {e.sha256 for e in sel.entries}
        assert sel.record["partition"]["take"] == take
        assert sum(sel.record["partition"]["counts"].values()) == 9
    assert not (parts["train"] & parts["val"]) and not (parts["train"] & parts["test"])
    assert not (parts["val"] & parts["test"])
    with pytest.raises(DatasetError, match="empty"):
        select_images("standin_astro", partition=Partition.from_table({"take": "test", "train": 1.0, "test": 0.0}))


def test_suite_datasets_accept_a_partition_table():
    text = (
        'name = "p"\n[[datasets]]\nname = "standin_astro"\n'
        'partition = { take = "val", train = 0.6, val = 0.2, test = 0.2, seed = 3 }\n'
        '[[codecs]]\ncodec = "jpeg2000"\n[[corruptions]]\ncorruption = "bsc"\ngrid = { ber = [0.0] }\n'
    )
    suite = parse_suite(text)
    assert suite.datasets[0].partition == Partition("val", (("train", 0.6), ("val", 0.2), ("test", 0.2)), 3)
    with pytest.raises(SuiteError, match="sum to 1"):
        parse_suite(text.replace("test = 0.2, seed", "test = 0.3, seed"))


def test_one_image_per_class_still_fills_every_part():
    """The sketch stand-in labels each image with its own class: per-class rounding alone would put all in train."""
    parts = _partition().split(_entries(10, labels=10))
    assert [len(parts[p]) for p in ("train", "val", "test")] == [6, 2, 2]
