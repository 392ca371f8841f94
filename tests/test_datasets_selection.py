"""Subsets, policies in cell keys, what a run records, suites naming paths, and the datasets subcommand."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from conftest import HANG_GUARD_S, ROOT
from PIL import Image
from test_datasets_badinput import make_messy_folder
from test_datasets_loaders import make_eurosat_tree, make_galaxy10_h5, tiny

from harness.config import SuiteError, parse_suite
from harness.datasets import ImageEntry, stratified_subset
from harness.hashing import pixels_sha256
from harness.preprocess import parse_policy
from harness.runner import RunOptions, make_plan, run

try:  # the run planning moved out of the runner
    from harness.planning import _subset
except ImportError:
    from harness.runner import _subset
from harness.store import ResultStore

FAKE = '[[codecs]]\ncodec = "fake"\nlabel = "ok"\noptions = { mode = "ok" }\n'
BSC = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = { ber = [0.0] }\n'


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "no-cache"))


def entries(counts: dict[str, int], with_sha: bool = False) -> list[ImageEntry]:
    out = []
    for label, n in counts.items():
        for i in range(n):
            sha = pixels_sha256(np.array([hash((label, i)) % 251], dtype=np.uint8)) + label if with_sha else ""
            out.append(ImageEntry("d", "all", f"{label}/{i:04d}", sha, 1, 1, "", label))
    return out


# -- stratified, seeded subsets ------------------------------------------------------------------------------
def test_stratified_allocation_is_proportional_and_exact():
    pool = entries({"a": 50, "b": 30, "c": 20})
    picked = stratified_subset(pool, 10, seed=1)
    assert len(picked) == 10 and Counter(e.label for e in picked) == {"a": 5, "b": 3, "c": 2}
    assert [e.id for e in picked] == sorted(e.id for e in picked)
    assert Counter(e.label for e in stratified_subset(pool, 7, seed=1)) == {"a": 4, "b": 2, "c": 1}  # largest rem.
    assert _subset(pool, 10, 1) == picked  # the runner's subset is this one


def test_class_sorted_pool_gets_every_class_not_the_first_ones():
    pool = entries({str(c): n for c, n in enumerate((1081, 1853, 2645, 2027, 334, 2043, 1829, 2628, 1423, 1873))})
    picked = stratified_subset(pool, 100, seed=20261126)
    counts = Counter(e.label for e in picked)
    assert len(picked) == 100 and set(counts) == {str(c) for c in range(10)}
    assert counts["4"] == 2 and counts["2"] == 15  # 334/17736*100 = 1.9, 2645/17736*100 = 14.9


def test_subset_is_seeded_deterministic_and_stable():
    pool = entries({"a": 40, "b": 40})
    assert stratified_subset(pool, 8, seed=3) == stratified_subset(list(reversed(pool)), 8, seed=3)
    assert stratified_subset(pool, 8, seed=3) != stratified_subset(pool, 8, seed=4)
    assert stratified_subset(pool, None, 3) == pool and stratified_subset(pool, 1000, 3) == pool
    # fewer picks than classes: exactly `limit`, at most one per class
    few = stratified_subset(entries({str(c): 5 for c in range(10)}), 3, seed=0)
    assert len(few) == 3 and len({e.label for e in few}) == 3
    # with pixel hashes known the choice follows content: renaming every file keeps the same images
    hashed = entries({"a": 20, "b": 10}, with_sha=True)
    renamed = [ImageEntry(e.dataset, e.split, "x" + e.id, e.sha256, 1, 1, "", e.label) for e in hashed]
    assert {e.sha256 for e in stratified_subset(hashed, 6, 9)} == {e.sha256 for e in stratified_subset(renamed, 6, 9)}


# -- suites naming datasets ----------------------------------------------------------------------------------
def suite_text(datasets: str, name: str = "t") -> str:
    return f'name = "{name}"\nseed = 7\nseeds = 1\nmetrics = ["psnr"]\n{datasets}\n{FAKE}\n{BSC}'


def plan_for(tmp_path, datasets: str, **kw):
    suite = parse_suite(suite_text(datasets), str(tmp_path / "s.toml"))
    return make_plan(RunOptions(suite=suite, out=tmp_path / "run", progress=False, workers=1, **kw))


def test_suite_dataset_table_parses_paths_splits_and_policies(tmp_path):
    suite = parse_suite(
        suite_text(
            '[[datasets]]\nname = "eurosat"\npath = "~/data/eurosat"\nsplit = "test"\nlimit_images = 5\n'
            'preprocessing = { policy = "upscale", factor = 4 }\noptions = { label_column = "y" }\n'
            '[[datasets]]\nname = "kodak"\nhub_id = "danjacobellis/kodak"\nmin_side = 64\nmax_pixels = 1000000\n'
        )
    )
    eurosat, kodak = suite.datasets
    assert eurosat.preprocessing == "upscale(factor=4,filter=bicubic)" and eurosat.split == "test"
    assert eurosat.loader_options() == {"path": "~/data/eurosat", "split": "test", "label_column": "y"}
    assert kodak.preprocessing is None and kodak.min_side == 64
    assert kodak.loader_options() == {"hub_id": "danjacobellis/kodak", "max_pixels": 1000000}
    for bad, message in [
        ('preprocessing = "blur"', "unknown preprocessing"),
        ("colour = 1", "unknown key"),
        ('path = ""', "non-empty string"),
        ("min_side = -1", "integer >= 0"),
    ]:
        with pytest.raises(SuiteError, match=message):
            parse_suite(suite_text(f'[[datasets]]\nname = "kodak"\n{bad}\n'))


def test_missing_path_stops_the_plan_in_one_line(tmp_path):
    with pytest.raises(SuiteError) as err:
        plan_for(tmp_path, f'[[datasets]]\nname = "kodak"\npath = "{tmp_path / "nowhere"}"\n')
    assert "does not exist" in str(err.value) and "\n" not in str(err.value)


def test_policy_is_in_the_cell_key_and_the_hash_is_of_prepared_pixels(tmp_path):
    make_eurosat_tree(tmp_path / "e")
    base = f'[[datasets]]\nname = "eurosat"\npath = "{tmp_path / "e"}"\nlimit_images = 6\n'
    plans = {
        p: plan_for(tmp_path, base + f'preprocessing = "{p}"\n')
        for p in ("none", "upscale(factor=2,filter=nearest)", "upscale(factor=2,filter=bicubic)")
    }
    default = plan_for(tmp_path, base)  # the card's default: upscale(factor=4,filter=bicubic)
    assert {c.preprocessing for c in default.cells} == {"upscale(factor=4,filter=bicubic)"}
    assert {(c.height, c.width) for c in default.cells} == {(64, 64)}
    keys = [{c.key for c in p.cells} for p in plans.values()]
    assert all(len(k) == 6 for k in keys) and not (keys[0] & keys[1]) and not (keys[1] & keys[2])
    nearest = plans["upscale(factor=2,filter=nearest)"]
    for cell in nearest.cells:
        ds, entry = nearest.images[cell.image_sha256]
        image = ds.load(entry)  # what Runner.artifacts encodes
        assert image.shape == (32, 32, 3) and pixels_sha256(image) == cell.image_sha256
        assert entry.original_size == (16, 16) and entry.original_sha256 != entry.sha256
    (record,) = nearest.datasets
    assert record["preprocessing"] == "upscale(factor=2,filter=nearest)" and record["limit_images"] == 6
    assert record["index_class_counts"] == {"AnnualCrop": 4, "Forest": 3, "River": 2}
    assert record["chosen_class_counts"] == {"AnnualCrop": 3, "Forest": 2, "River": 1}
    assert all(r["original_size"] == [16, 16] and r["size"] == [32, 32] for r in record["images"])


def test_limit_images_option_overrides_and_is_stratified(tmp_path):
    make_galaxy10_h5(tmp_path / "Galaxy10_DECals.h5", counts=(10, 10, 10, 10))
    plan = plan_for(tmp_path, f'[[datasets]]\nname = "galaxy10"\npath = "{tmp_path / "Galaxy10_DECals.h5"}"\n',
                    limit_images=8)  # fmt: skip
    (record,) = plan.datasets
    assert record["chosen_class_counts"] == {
        "Disturbed": 2,
        "Merging": 2,
        "Round Smooth": 2,
        "In-between Round Smooth": 2,
    }
    assert record["subset"].startswith("stratified") and record["source_kind"] == "h5"
    assert len(plan.subsets["galaxy10"]) == 8


def test_run_records_images_policy_and_skipped_and_goes_on(tmp_path):
    root = make_messy_folder(tmp_path / "messy")
    suite = parse_suite(
        suite_text(
            f'[[datasets]]\nname = "folder"\npath = "{root}"\nmin_side = 16\nmax_pixels = 1000000\n'
            'preprocessing = "center_crop(size=32)"\n'
        )
    )
    result = run(RunOptions(suite=suite, out=tmp_path / "run", progress=False, workers=1))
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells, prov = store.cells_frame(), store.provenance()
    finally:
        store.close()
    assert result.computed == len(cells) == 7 and set(cells["status"]) == {"ok"}
    assert set(cells["preprocessing"]) == {"center_crop(size=32)"}
    assert (cells["height"] == 32).all() and (cells["width"] == 32).all()
    skipped = json.loads(prov["skipped_images"])
    assert sorted(s["id"] for s in skipped) == ["empty.png", "garbage.jpg", "huge.png", "tiny.png", "truncated.png"]
    assert next(s for s in skipped if s["id"] == "tiny.png")["stage"] == "preprocess"
    (record,) = json.loads(prov["datasets"])
    assert record["name"] == "folder" and record["source"] == str(root) and len(record["images"]) == 7
    assert {r["sha256"] for r in record["images"]} == set(cells["image_sha256"])


def test_mosaic_run_keeps_the_tile_map(tmp_path):
    make_eurosat_tree(tmp_path / "e", per_class=(4, 3, 2))
    suite = parse_suite(
        suite_text(f'[[datasets]]\nname = "eurosat"\npath = "{tmp_path / "e"}"\npreprocessing = "mosaic(k=2)"\n')
    )
    run(RunOptions(suite=suite, out=tmp_path / "run", progress=False, workers=1))
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells, prov = store.cells_frame(), store.provenance()
    finally:
        store.close()
    assert len(cells) == 2 and set(zip(cells["height"], cells["width"], strict=True)) == {(32, 32)}
    (record,) = json.loads(prov["datasets"])
    assert [m["id"] for m in record["mosaics"]] == ["mosaic_00000", "mosaic_00001"]
    tiles = [t for m in record["mosaics"] for t in m["tiles"]]
    assert len(tiles) == 8 and {(t["row"], t["col"]) for t in tiles} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert [s["stage"] for s in json.loads(prov["skipped_images"])] == ["mosaic"]  # 9 images: one left over


def test_samples_with_a_policy_and_standins_in_a_plan(tmp_path):
    plan = plan_for(
        tmp_path,
        '[[datasets]]\nname = "samples"\nlimit_images = 2\npreprocessing = "resize(short=64)"\n'
        '[[datasets]]\nname = "standin_astro"\nlimit_images = 2\n',
    )
    shapes = {(c.dataset, min(c.height, c.width)) for c in plan.cells}
    assert shapes == {("samples", 64), ("standin_astro", 128)}
    assert plan.subsets.keys() == {"samples", "standin_astro"}


# -- the datasets subcommand ---------------------------------------------------------------------------------
def cli(*args, env_extra=None, tmp_path=None):
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "evaluate.py", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S
    )


def test_datasets_list_and_verify(tmp_path):
    out = cli("datasets", "list", env_extra={"HARNESS_CACHE_DIR": str(tmp_path)})
    assert out.returncode == 0
    for name in ("eurosat", "tu_berlin", "galaxy10", "kodak", "clic", "tecnick", "lsdir", "folder", "standin_astro"):
        assert name in out.stdout
    make_eurosat_tree(tmp_path / "e", per_class=(2, 2, 2))
    out = cli("datasets", "verify", "eurosat", "--path", str(tmp_path / "e"), "--manifest", str(tmp_path / "m.json"))
    assert out.returncode == 1  # 6 images, the card expects 27,000
    assert "6 indexed" in out.stdout and "AnnualCrop=2" in out.stdout and "FAIL total 6 (card: 27000)" in out.stdout
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert len(manifest["images"]) == 6 and manifest["manifest_sha256"] in out.stdout
    Image.fromarray(tiny(9)).save(tmp_path / "k.png")
    (tmp_path / "kodak").mkdir()
    Image.fromarray(tiny(9)).save(tmp_path / "kodak" / "kodim01.png")
    (tmp_path / "kodak" / "kodim02.png").write_bytes(b"")
    out = cli("datasets", "verify", "kodak", "--path", str(tmp_path / "kodak"))
    assert out.returncode == 1 and "1 unreadable" in out.stdout and "kodim02.png" in out.stdout


def test_datasets_cli_errors_are_one_line(tmp_path):
    for args in (
        ("datasets", "verify", "kodak", "--path", str(tmp_path / "nope")),
        ("datasets", "fetch", "eurosat"),
        ("datasets", "fetch", "galaxy10"),
        ("datasets", "verify", "eurosat"),
    ):
        out = cli(*args, env_extra={"HARNESS_DATA_DIR": str(tmp_path), "HARNESS_CACHE_DIR": str(tmp_path)})
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_suite_with_a_missing_path_exits_2_before_work(tmp_path):
    suite = tmp_path / "s.toml"
    text = suite_text(f'[[datasets]]\nname = "kodak"\npath = "{tmp_path / "kodak"}"\n')
    suite.write_text(text.replace('codec = "fake"', 'codec = "jpeg2000"').replace('{ mode = "ok" }', "{}"))
    out = cli("--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress")
    assert out.returncode == 2 and "does not exist" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_policy_helper_round_trip():
    assert parse_policy(parse_policy("pad64").canonical) == parse_policy("pad64")


def test_a_codec_minimum_side_skips_smaller_images(tmp_path):
    from fake_codecs import FakeCodec

    from harness.registry import CODECS

    class MinSideCodec(FakeCodec):
        name = "fake_min_side"
        min_side = 20

    (tmp_path / "f").mkdir()
    Image.fromarray(tiny(1, (16, 16))).save(tmp_path / "f" / "small.png")
    Image.fromarray(tiny(2, (32, 24))).save(tmp_path / "f" / "big.png")
    CODECS.register("fake_min_side", MinSideCodec)
    try:
        suite = parse_suite(
            suite_text(f'[[datasets]]\nname = "folder"\npath = "{tmp_path / "f"}"\n').replace(
                'codec = "fake"', 'codec = "fake_min_side"'
            )
        )
        plan = make_plan(RunOptions(suite=suite, out=tmp_path / "run", progress=False, workers=1))
    finally:
        CODECS.unregister("fake_min_side")
    assert {c.image_id for c in plan.cells} == {"big.png"}
    (skipped,) = plan.skipped_images
    assert skipped["id"] == "small.png" and skipped["stage"] == "size" and "minimum side of 20" in skipped["error"]


def test_the_standin_suite_plans_offline(monkeypatch):
    from harness.config import load_suite

    monkeypatch.setenv("HARNESS_DATA_DIR", str(ROOT / "datasets"))
    suite = load_suite("ood_standins")
    plan = make_plan(RunOptions(suite=suite, out=ROOT / "runs" / "unused", progress=False, workers=1))
    records = {r["name"]: r for r in plan.datasets}
    assert set(records) == {"samples", "standin_astro", "standin_sketch", "standin_terrain"}
    assert all(records[n]["stand_in"] for n in records if n.startswith("standin_"))
    assert records["standin_sketch"]["preprocessing"] == "resize(filter=lanczos,short=256)"
    assert all(r["used_count"] == 4 for r in records.values())
