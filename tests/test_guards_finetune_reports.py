"""Fine-tuning, reports and provenance (issue #23, "Rules that no test guards"; METHODOLOGY.md §6-§8): the
frozen-tensor check, OOD paired differences over both-ok pairs, images counted by content, the git commit, dirty
flag and suite sha256 in provenance, and the regression tolerances.

The mutation each test was checked against is named above it."""

from __future__ import annotations

import hashlib
import math
import subprocess

import guard_fakes
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, stored_cells
from guard_fakes import bsc_entry, codec_entry, dataset_entry, image_folder, noise, suite_text

from harness.config import load_suite
from harness.hashing import pixels_sha256
from harness.provenance import git_commit
from harness.runner import RunOptions, run
from harness.store import ResultStore


@pytest.fixture(scope="module", autouse=True)
def _fakes() -> None:
    guard_fakes.register()


# -- fine-tuning: the frozen-tensor check --------------------------------------------------------------------------
# Mutation: harness/train/finetune.py finetune never finds a changed frozen tensor (`changed = []`): a training step
# that moved a weight of the compression module goes through and the adapter is written.
def test_fine_tuning_that_changes_a_frozen_tensor_is_refused(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressai")
    import harness.train.finetune as ft
    from harness.codecs.base import create_codec

    real_loss = ft.adapter_loss
    moved: list[str] = []

    def loss_that_moves_a_frozen_weight(model, *args, **kwargs):
        """The real objective, and then a write to the frozen compression module (what a wrong optimizer
        parameter list, or a buffer updated in train mode, does)."""
        name, weight = next(iter(model.preprocess_model.named_parameters()))
        with torch.no_grad():
            weight.add_(1.0)
        moved.append(f"preprocess_model.{name}")
        return real_loss(model, *args, **kwargs)

    def cheap_validation(self, step: int) -> dict[str, float]:  # decoding is not under test here
        self.history.append({"step": step, "psnr": 0.0})
        if self.best is None:
            self.best = {"step": step, "value": 0.0}
            self.save_best()
        return self.history[-1]

    monkeypatch.setattr(ft, "adapter_loss", loss_that_moves_a_frozen_weight)
    monkeypatch.setattr(ft.Validator, "evaluate", cheap_validation)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    data = ft.FinetuneData(train=images, val=[("v.png", images[0])], record={})
    cfg = ft.FinetuneConfig(steps=1, batch=1, patch=64, val_every=1, val_images=1, perceptual="none", log_every=1)
    with pytest.raises(AssertionError, match=r"frozen tensors changed during fine-tuning: \['preprocess_model\."):
        ft.finetune(create_codec("rdeic-tiny@low"), data, cfg, tmp_path / "ft", {"name": "rdeic-tiny@low"}, False)
    assert moved and not (tmp_path / "ft" / "adapter.safetensors").exists()


# -- OOD: paired differences over the pairs where both decodes are ok ------------------------------------------------
def ood_cells() -> tuple[pd.DataFrame, dict[str, float]]:
    """Base ("b") and adapter ("a") cells of 5 images at one level; pairs 3 and 4 have a failed decode. The failed
    adapter cell of pair 4 carries a PSNR anyway (what a failure-imputing policy writes): it must not count."""
    before = [20.0, 22.0, 24.0, 25.0, 26.0]
    after = [21.0, 22.5, 26.0, math.nan, 10.0]
    status_after = ["ok", "ok", "ok", "crash", "timeout"]
    status_before = ["ok", "ok", "ok", "ok", "ok"]
    rows = []
    for label, values, statuses in (("b", before, status_before), ("a", after, status_after)):
        for i, (v, s) in enumerate(zip(values, statuses, strict=True)):
            rows.append(
                {
                    "dataset": "ood",
                    "codec_label": label,
                    "image_id": "same_name.png",  # five images under one file name: counted by content
                    "image_sha256": f"{i:064x}",
                    "corruption": "bsc",
                    "params": '{"ber": 0.001}',
                    "scope": "all",
                    "level": "ber=0.001",
                    "replicate": 0,
                    "decode_seed": 0,
                    "status": s,
                    "bpp": 0.5,
                    "bytes_total": 1000,
                    "metric.psnr": v,
                }
            )
    both_ok = [0, 1, 2]
    diffs = [after[i] - before[i] for i in both_ok]
    oracle = {
        "pairs_both_ok": len(both_ok),
        "psnr_before": float(np.mean([before[i] for i in both_ok])),
        "psnr_after": float(np.mean([after[i] for i in both_ok])),
        "psnr_diff": float(np.mean(diffs)),
        "psnr_n": len(both_ok),
    }
    return pd.DataFrame(rows), oracle


# Mutation: reports/ood.py before_after takes every pair (`ok = p`) instead of the pairs where both are ok.
def test_ood_paired_differences_use_only_pairs_where_both_decodes_are_ok():
    from reports.ood import before_after

    cells, oracle = ood_cells()
    group = {"dataset": "ood", "in_distribution": [], "base": "b", "adapter": "a"}
    (row,) = before_after(cells, [group], ("psnr",)).to_dict("records")
    assert row["pairs"] == 5 and row["images"] == 5
    for key, value in oracle.items():
        assert row[key] == pytest.approx(value, rel=1e-12), key
    assert row["failure_rate_after"] == pytest.approx(2 / 5) and row["failure_rate_before"] == 0.0


# -- reports: images counted by content ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def same_names_run(tmp_path_factory):
    """Two folders, each with a house.png of other pixels: two images under one name."""
    tmp = tmp_path_factory.mktemp("names")
    x, z = noise(16, 24, 1), noise(16, 24, 2)
    first, second = image_folder(tmp / "A", {"house.png": x}), image_folder(tmp / "B", {"house.png": z})
    suite = tmp / "s.toml"
    suite.write_text(
        suite_text(
            datasets=dataset_entry(first) + dataset_entry(second),
            codecs=codec_entry("fake"),
            corruptions=bsc_entry("0.0, 0.01"),
            seeds=2,
        )
    )
    run(RunOptions(suite=load_suite(str(suite)), out=tmp / "run", workers=1, progress=False))
    return stored_cells(tmp / "run"), {pixels_sha256(x), pixels_sha256(z)}


# Mutations: the image counts of reports/tables.py use image_id instead of image_sha256 ((a) summarise "images",
# (b) rd_summary "images"/"images_left_out", (c) footer), and of reports/ood.py before_after ("images").
def test_tables_count_images_by_content_not_by_file_name(same_names_run):
    from reports import tables

    cells, contents = same_names_run
    assert set(cells["image_id"]) == {"house.png"} and set(cells["image_sha256"]) == contents
    summary = tables.summarise(cells)
    assert len(summary) == 2 and list(summary["images"]) == [2, 2]
    rd = tables.rd_summary(cells)
    assert list(rd["images"]) == [2] and list(rd["images_left_out"]) == [0]
    assert "8 cells on 2 images, 2 seed(s)" in tables.footer(cells)
    assert len(tables.per_image(cells)) == 2 * 2  # images x levels


def test_the_ood_table_counts_images_by_content():
    from reports.ood import before_after

    cells, _ = ood_cells()
    assert cells["image_id"].nunique() == 1
    group = {"dataset": "ood", "in_distribution": [], "base": "b", "adapter": "a"}
    assert before_after(cells, [group], ("psnr",))["images"].tolist() == [5]


# -- provenance -------------------------------------------------------------------------------------------------------
def git(*args: str, cwd=ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def expected_commit(cwd=ROOT) -> str:
    """HEAD, with ``-dirty`` when a tracked file differs from it (untracked files do not count)."""
    dirty = git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return git("rev-parse", "HEAD", cwd=cwd) + ("-dirty" if dirty else "")


# Mutations: (a) "git_commit" dropped from harness/provenance.collect; (b) "suite_sha256" dropped from the record in
# harness/runner._execute; (c) git_commit without the "-dirty" suffix.
def test_a_run_records_the_git_commit_with_its_dirty_flag_and_the_suite_sha256(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 16, 3)})
    suite = tmp_path / "s.toml"
    suite.write_text(suite_text(datasets=dataset_entry(images), codecs=codec_entry("fake"), corruptions=bsc_entry("0")))
    before = expected_commit()  # other work in this checkout may change its state while the run runs: either is right
    run(RunOptions(suite=load_suite(str(suite)), out=tmp_path / "run", workers=1, progress=False))
    after = expected_commit()
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        prov = store.provenance()
    finally:
        store.close()
    assert prov.get("git_commit", "").strip('"') in {before, after}
    assert prov.get("suite_sha256", "").strip('"') == hashlib.sha256(suite.read_bytes()).hexdigest()


def test_git_commit_says_dirty_exactly_when_a_tracked_file_differs(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = ("-c", "user.name=t", "-c", "user.email=t@example.invalid")
    git("init", "-q", cwd=repo)
    (repo / "f.txt").write_text("one\n")
    git("add", "f.txt", cwd=repo)
    git(*env, "commit", "-q", "-m", "first", cwd=repo)
    head = git("rev-parse", "HEAD", cwd=repo)
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("not part of the commit\n")
    assert git_commit(repo) == head  # untracked files do not make a checkout dirty
    (repo / "f.txt").write_text("two\n")
    assert git_commit(repo) == head + "-dirty"


# -- regression tolerances --------------------------------------------------------------------------------------------
#: The documented tolerances (reports/regress.py docstring): exact counts, 1e-9 for values derived from counts and
#: bytes, 1e-3 dB for PSNR, 1e-4 for other metrics.
DOCUMENTED = {"images": 0.0, "bpp": 1e-9, "failure_rate": 1e-9, "psnr": 1e-3, "ssim": 1e-4}


# Mutation: DB_TOL, OTHER_TOL and DERIVED_TOL in reports/regress.py widened 1e7 times (a real change then passes).
@pytest.mark.parametrize("column", sorted(DOCUMENTED))
def test_regress_flags_a_change_ten_times_its_tolerance_and_passes_a_tenth(column):
    from reports.regress import compare

    baseline = pd.DataFrame(
        [
            {
                "codec": "c",
                "corruption": "bsc",
                "scope": "all",
                "level": "ber=0.001",
                "images": 24,
                "bpp": 0.4123456789,
                "failure_rate": 0.125,
                "psnr": 31.25,
                "ssim": 0.91,
            }
        ]
    )
    tol = DOCUMENTED[column]
    for delta, flagged in ((10 * tol or 1, True), (tol / 10, False)):
        moved = baseline.copy()
        moved[column] = moved[column] + delta
        result = compare(moved, baseline)
        assert result.compared_rows == 1
        assert (not result.ok) == flagged, f"{column} moved by {delta:g}: {result.text()}"
        if flagged:
            assert len(result.regressions) == 1 and f": {column} " in result.regressions[0]
