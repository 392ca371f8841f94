"""The fine-tune-then-evaluate suite end to end on an offline stand-in (a handful of steps)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.cli import main
from harness.config import SuiteError, load_suite, parse_suite

SUITE = """
name = "ood_mini"
seed = 3
seeds = 1
metrics = ["psnr"]
timeout_s = 120
# the clean-round-trip control: RDEIC-tiny is weak on these domains (clean decodes of the hillshaded terrain
# stand-in measure 12-15 dB), so the floor that catches a broken codec is lowered from 15 to 10 dB here
clean_psnr_floor_db = 10.0

[finetune]
codec = "rdeic-tiny@low"
train = { steps = 2, lr = 1e-3, batch = 1, patch = 64, val_every = 2, val_images = 1, perceptual = "none" }

[[finetune.datasets]]
name = "standin_terrain"
partition = { train = 0.6, val = 0.2, test = 0.2, seed = 0 }

[[finetune.in_distribution]]
name = "samples"
limit_images = 1

[[corruptions]]
corruption = "bsc"
scopes = ["all"]
grid = { ber = [0.0, 1e-3] }

[[corruptions]]
corruption = "latent_gaussian"
scopes = ["c_latent"]
grid = { sigma = [0.2], unit = ["rel"] }
"""


@pytest.mark.slow
def test_ood_suite_fine_tunes_then_reports_paired_before_after(tmp_path):
    suite = tmp_path / "ood.toml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    table = pd.read_csv(out / "ood_before_after.csv")
    assert set(table["role"]) == {"OOD test", "ID (forgetting)"}
    assert set(table["evaluated"]) == {"standin_terrain", "samples"}
    assert table["bytes_identical"].all()
    assert (table["bpp_before"] == table["bpp_after"]).all()
    clean = table[table["level"] == "ber=0"]
    assert (clean["failure_rate_before"] == 0).all() and (clean["psnr_n"] > 0).all()
    checks = json.loads((out / "ood_groups.json").read_text())["bitstreams"]
    assert checks == [
        {"dataset": "standin_terrain", "mode": "control", "images_compared": 3, "identical": 3, "different": 0,
         "missing_from_cache": 0, "must_be_identical": True}
    ]  # fmt: skip
    cells = pd.read_csv(out / "per_image.csv")
    assert {"rdeic-tiny@low", "rdeic-tiny@low+standin_terrain"} <= set(cells["codec_label"])
    assert (out / "adapters" / "standin_terrain" / "adapter.json").is_file()
    assert (out / "report" / "ood_training_curves.png").is_file()
    assert "before (base)" in (out / "ood_before_after.md").read_text()
    page = (out / "report.html").read_text()
    assert "Fine-tune-then-evaluate" in page and "ood_training_curves" in page
    assert "Robustness report: ood_mini (" in page  # titled by the suite asked for, not its last sub-run
    # paired draws: the corrupted streams of base and adapter are the same bytes, cell by cell
    import sqlite3

    db = sqlite3.connect(out / "results.sqlite")
    rows = db.execute(
        "SELECT image_sha256, params, replicate, codec_label, stream_sha256 FROM cells WHERE params LIKE '%0.001%'"
    ).fetchall()
    by_pair: dict = {}
    for img, params, rep, _, stream in rows:
        by_pair.setdefault((img, params, rep), set()).add(stream)
    assert by_pair and all(len(s) == 1 for s in by_pair.values())
    # rerun: the adapter is reused and every cell is already done
    mtime = (out / "adapters" / "standin_terrain" / "adapter.safetensors").stat().st_mtime_ns
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    assert (out / "adapters" / "standin_terrain" / "adapter.safetensors").stat().st_mtime_ns == mtime


def test_finetune_suites_are_checked_before_any_work():
    assert load_suite("ood_finetune").finetune.train.mode == "control"
    with pytest.raises(SuiteError, match="not from"):
        parse_suite(SUITE + '\n[[codecs]]\ncodec = "jpeg2000"\n')
    with pytest.raises(SuiteError, match="unknown fine-tuning option"):
        parse_suite(SUITE.replace("steps = 2", "stepz = 2"))
    with pytest.raises(SuiteError, match="sum to 1"):
        parse_suite(SUITE.replace("test = 0.2, seed", "test = 0.5, seed"))
    with pytest.raises(SuiteError, match="official split"):
        parse_suite(SUITE.replace("partition = {", 'splits = { train = "a" }\n# {'))
