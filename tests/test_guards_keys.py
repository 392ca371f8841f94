"""Keys (issue #23, "Rules that no test guards"): a cell's key holds the dataset version, the preprocessing and
the metric set; the decode memo key holds the reference image and the metric set (METHODOLOGY.md §1).

Each test runs the harness twice (or on two images) where only that input differs, and checks the stored rows
against values computed here. The mutation each test was checked against is named above it."""

from __future__ import annotations

import math

import guard_fakes
import numpy as np
import pytest
from conftest import stored_cells
from guard_fakes import (
    QuantizingCodec,
    VersionedFolder,
    bsc_entry,
    codec_entry,
    dataset_entry,
    image_folder,
    noise,
    psnr,
    quantized,
    suite_text,
)

from harness.config import load_suite
from harness.hashing import pixels_sha256, sha256_bytes
from harness.runner import RunOptions, run


@pytest.fixture(scope="module", autouse=True)
def _fakes() -> None:
    guard_fakes.register()


def run_text(tmp_path, name: str, text: str, out):
    suite = tmp_path / f"{name}.toml"
    suite.write_text(text)
    return run(RunOptions(suite=load_suite(str(suite)), out=out, workers=1, progress=False))


# Mutation: drop "version" from the "dataset" field of Cell.key_fields (harness/cells.py): the second release's
# cells are taken as already done and keep the first release's rows.
def test_a_new_dataset_version_is_new_work(tmp_path, monkeypatch):
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 24, 1), "b.png": noise(24, 16, 2)})
    text = suite_text(
        datasets=dataset_entry(images, VersionedFolder.name), codecs=codec_entry("fake"), corruptions=bsc_entry("0.0")
    )
    out = tmp_path / "run"
    assert run_text(tmp_path, "s", text, out).computed == 2
    monkeypatch.setattr(VersionedFolder, "current_version", "2")  # same files, a new release of the dataset
    second = run_text(tmp_path, "s", text, out)
    assert (second.already_done, second.computed) == (0, 2), "cells of version 1 were reused for version 2"
    cells = stored_cells(out)
    assert sorted(cells["dataset_version"]) == ["1", "1", "2", "2"]
    assert cells.groupby("dataset_version")["image_sha256"].agg(frozenset).nunique() == 1  # same pixels


# Mutation: drop "preprocessing" from Cell.key_fields: pad64 on 64 x 64 images gives the same pixels as none, so
# the pad64 cells are taken as already done (rows that say preprocessing "none").
def test_another_preprocessing_with_the_same_pixels_is_new_work(tmp_path):
    originals = {"a.png": noise(64, 64, 3), "b.png": noise(64, 64, 4)}
    images = image_folder(tmp_path / "img", originals)
    out = tmp_path / "run"
    for policy in ("none", "pad64"):
        text = suite_text(
            datasets=dataset_entry(images, extra=f'preprocessing = "{policy}"'),
            codecs=codec_entry("fake"),
            corruptions=bsc_entry("0.0"),
        )
        result = run_text(tmp_path, policy, text, out)
        assert (result.already_done, result.computed) == (0, 2), f"{policy}: cells of another policy reused"
    cells = stored_cells(out)
    assert sorted(set(cells["preprocessing"])) == ["none", "pad64(mode=edge,multiple=64)"]
    expected = {pixels_sha256(p) for p in originals.values()}  # 64 x 64: padding to 64 changes no pixel
    assert all(set(g) == expected for _, g in cells.groupby("preprocessing")["image_sha256"])
    assert cells["key"].nunique() == 4


# Mutations: (a) drop "metrics" from Cell.key_fields: the second run finds every cell already done, without
# psnr_y; (b) drop "metrics" from harness.cells.decode_key: a cell whose decoded input is the same in both runs (the
# clean stream with a deterministically blurred side view: no draw from the cell key) reuses the first run's decode
# record from results.sqlite, which lacks psnr_y. (Bit-error cells draw other flips under another metric set and
# clean cells are decoded afresh by the controls, so only such a cell can show it.)
STEREO = '[[datasets]]\nname = "standin_stereo"\noptions = { count = 2, height = 16, width = 24 }\n'
BLUR = '[[side_info]]\ndegradation = "side_blur"\ngrid = { sigma_px = [2.0] }\n'


def test_a_resumed_run_with_another_metric_set_measures_the_new_metrics(tmp_path):
    out = tmp_path / "run"
    parts = {"datasets": STEREO, "codecs": codec_entry("fake_side"), "corruptions": bsc_entry("0.0, 0.01") + BLUR}
    first = run_text(tmp_path, "a", suite_text(**parts, metrics=("psnr",), seeds=2), out)
    n = 2 * 3 * 2  # images x (ber 0, ber 0.01, blurred side view) x replicates
    assert first.computed == n
    second = run_text(tmp_path, "b", suite_text(**parts, metrics=("psnr", "psnr_y"), seeds=2), out)
    assert (second.already_done, second.computed) == (0, n), "cells of the psnr-only run taken as done"
    assert not set(first.planned_keys) & set(second.planned_keys)
    cells = stored_cells(out)
    new = cells[cells["key"].isin(second.planned_keys)]
    assert len(new) == n
    assert (new[new["level"] == "ber=0.01"]["actual_flips"] > 0).all()
    blurred = new[new["corruption"] == "side_blur"]
    assert len(blurred) == 4 and blurred["stream_sha256"].isin(new[new["level"] == "ber=0"]["stream_sha256"]).all()
    for _, row in new.iterrows():
        value = row["metric.psnr_y"]
        assert isinstance(value, float) and not math.isnan(value), f"{row['level']}: psnr_y missing (stale decode)"
    old = cells[~cells["key"].isin(second.planned_keys)]
    old_blurred = old[old["corruption"] == "side_blur"]
    assert len(old_blurred) == 4 and old_blurred["metric.psnr_y"].isna().all()
    # the same decoded input, measured again: the metric both sets share agrees
    assert sorted(blurred["metric.psnr"]) == sorted(old_blurred["metric.psnr"])


# Mutation: drop "reference" from harness.cells.decode_key: image b (whose stream is a's) gets a's record, i.e.
# a's PSNR, instead of its own (inf: b is exactly what the codec decodes).
def test_two_images_sharing_one_stream_are_each_measured_against_themselves(tmp_path):
    a = noise(24, 32, 7)
    b = quantized(a)  # other pixels, the same stream: the codec quantises a to exactly b
    assert pixels_sha256(a) != pixels_sha256(b)
    stream = QuantizingCodec().encode(a).data
    assert stream == QuantizingCodec().encode(b).data
    images = image_folder(tmp_path / "img", {"a.png": a, "b.png": b})
    text = suite_text(
        datasets=dataset_entry(images), codecs=codec_entry("fake_quantizing"), corruptions=bsc_entry("0.0"), seeds=2
    )
    out = tmp_path / "run"
    run_text(tmp_path, "s", text, out)
    cells = stored_cells(out)
    assert len(cells) == 4 and set(cells["stream_sha256"]) == {sha256_bytes(stream)}
    expected = {pixels_sha256(a): psnr(b, a), pixels_sha256(b): math.inf}
    assert math.isfinite(expected[pixels_sha256(a)])
    for _, row in cells.iterrows():
        assert row["metric.psnr"] == pytest.approx(expected[row["image_sha256"]], rel=1e-12), row["image_id"]
        assert row["metric.clean_psnr"] == pytest.approx(expected[row["image_sha256"]], rel=1e-12)
    assert cells["decode_key"].nunique() == 2  # one decode per (stream, reference), shared by the replicates
    assert np.array_equal(quantized(b), b)
