"""The side-information axis (issue #19), for any codec that declares decoder-side information: [[side_info]]
levels run on the clean stream, crossed levels meet bit errors, the true view is keyed by its pixels, codecs
without side information ignore the axis, and every degradation reaches the decoder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import stored_cells

from harness.config import parse_suite
from harness.runner import RunOptions, make_plan, run

SUITE = """
name = "side"
seed = 3
seeds = 1
metrics = ["psnr"]

[[datasets]]
name = "standin_stereo"
options = { count = 2, height = 32, width = 64 }

[[codecs]]
codec = "fake_side"
label = "side"

[[codecs]]
codec = "jpeg2000"
label = "j2k"
options = { target_bpp = 2.0, numres = 3 }

[[corruptions]]
corruption = "bsc"
scopes = ["payload"]
grid = { ber = [0.0, 1e-3] }

[[side_info]]
degradation = "side_noise"
grid = { sigma = [0.0, 20.0] }

[[side_info]]
degradation = "side_missing"
grid = { probability = [1.0] }
cross = ["bsc"]
"""


def _suite(text: str = SUITE):
    return parse_suite(text, "side.toml")


def test_cells_of_the_side_axis(tmp_path):
    plan = make_plan(RunOptions(_suite(), tmp_path))
    side = [c for c in plan.cells if c.codec_label == "side"]
    j2k = [c for c in plan.cells if c.codec_label == "j2k"]
    # JPEG2000 declares no side information: the bit-error levels only (2 images x 2 BERs)
    assert len(j2k) == 4 and all(c.side_sha256 is None and c.side is None for c in j2k)
    # per image: 2 BERs with the true view + 2 BERs x missing (crossed) + noise 0, 20 + missing (clean stream)
    assert len(side) == 2 * (2 + 2 + 3)
    assert all(c.side_sha256 and set(c.side_sha256) == {"stereo"} for c in side)
    crossed = [c for c in side if c.side is not None]
    assert {(c.corruption, c.side["name"]) for c in crossed} == {("bsc", "side_missing")} and len(crossed) == 4
    assert {c.corruption for c in side if c.side is None} == {"bsc", "side_noise", "side_missing"}
    # a crossed cell is its own cell, but draws the flips of the same level with the true view
    for c in crossed:
        twin = [t for t in side if t.side is None and (t.image_sha256, t.level, t.scope, t.replicate, t.corruption)
                == (c.image_sha256, c.level, c.scope, c.replicate, c.corruption)]  # fmt: skip
        assert len(twin) == 1 and twin[0].key != c.key and twin[0].rng_key == c.rng_key
    # a codec without side information paired with one that has it: the same flips as its true-view cells
    paired = make_plan(
        RunOptions(_suite(SUITE.replace('label = "j2k"', 'label = "j2k"\npaired_with = "side"')), tmp_path)
    )
    true_view = {
        (c.image_sha256, c.level, c.scope): c.rng_key for c in side if c.side is None and c.corruption == "bsc"
    }
    partner = [c for c in paired.cells if c.codec_label == "j2k"]
    assert len(partner) == 4 and all(true_view[(c.image_sha256, c.level, c.scope)] == c.rng_key for c in partner)
    # the side view's pixels are in the key: another side view is another cell
    swapped = SUITE.replace("count = 2", "count = 2, primary = 'right'")
    other = make_plan(RunOptions(_suite(swapped), tmp_path))
    assert {c.key for c in other.cells if c.codec_label == "side"}.isdisjoint({c.key for c in side})


def test_every_degradation_reaches_the_decoder(tmp_path):
    run(RunOptions(_suite(), tmp_path / "run", workers=1, progress=False))
    cells = stored_cells(tmp_path / "run")
    side = cells[cells["codec_label"] == "side"]
    assert set(side["status"]) == {"ok"}

    def psnr(corruption: str, level: str, crossed: bool = False) -> float:
        rows = side[(side["corruption"] == corruption) & (side["level"] == level)]
        rows = rows[rows["side"].map(lambda s: json.loads(s)["degradation"] is not None if crossed else True)]
        if corruption == "bsc":
            rows = rows[rows["side"].map(lambda s: (json.loads(s)["degradation"] is not None) == crossed)]
        return float(rows["metric.psnr"].mean())

    true_view = psnr("bsc", "ber=0")
    assert psnr("side_noise", "sigma=0") == pytest.approx(true_view)  # the identity degradation is the true view
    assert psnr("side_noise", "sigma=20") < true_view  # a noisy side view lowers the output's quality
    assert psnr("side_missing", "probability=1") != pytest.approx(true_view)
    # a crossed degradation: BER 0 with the view missing decodes like the missing level on the clean stream
    assert psnr("bsc", "ber=0", crossed=True) == pytest.approx(psnr("side_missing", "probability=1"))
    missing = side[side["corruption"] == "side_missing"]
    assert all(json.loads(s)["missing"] == ["stereo"] for s in missing["side"])
    # distinct side images, distinct decodes; the same stream and side view, one decode
    noisy = side[side["corruption"] == "side_noise"]
    assert noisy["decode_key"].nunique() == len(noisy)
    j2k = cells[cells["codec_label"] == "j2k"]
    assert j2k["side"].isna().all()
    # bit errors crossed with the missing view hit the very bytes the true view's cells got: only the view differs
    bsc = side[(side["corruption"] == "bsc") & (side["level"] == "ber=0.001")]
    crossed = bsc["side"].map(lambda s: json.loads(s)["degradation"] is not None)
    by_image = [
        set(g.loc[crossed[g.index], "stream_sha256"]) == set(g.loc[~crossed[g.index], "stream_sha256"])
        for _, g in bsc.groupby("image_sha256")
    ]
    assert len(by_image) == 2 and all(by_image)
    assert (bsc["actual_flips"] > 0).any()


def test_a_degradation_the_dataset_cannot_serve_is_refused_or_not_applicable(tmp_path):
    text = SUITE.replace('degradation = "side_noise"', 'degradation = "side_wrong_pair"').replace(
        "sigma = [0.0, 20.0]", "probability = [1.0]"
    )
    result = run(RunOptions(_suite(text), tmp_path / "run", workers=1, progress=False, limit_images=1))
    cells = stored_cells(tmp_path / "run")
    # one image in the run: no other scene to swap in, so those cells are not applicable (not failures)
    assert not (cells["corruption"] == "side_wrong_pair").any()
    assert result.planned > len(cells)
    assert np.all(cells["status"] == "ok")


def test_a_codec_without_side_information_paired_with_one_that_has_it_gets_a_paired_table(tmp_path):
    """The "DICM without w at the same bits" reference: its cells meet the partner's true-view cells one to one
    (not the crossed ones), on the same corrupted bytes, and the report's paired table says so."""
    from reports import paired

    text = SUITE.replace(
        'codec = "jpeg2000"\nlabel = "j2k"\noptions = { target_bpp = 2.0, numres = 3 }',
        'codec = "fake"\nlabel = "plain"\npaired_with = "side"',
    )
    assert 'label = "plain"' in text
    run(RunOptions(_suite(text), tmp_path / "run", workers=1, progress=False))
    cells = stored_cells(tmp_path / "run")
    assert paired.partner_pairs(cells) == [("plain", "side")]
    path = paired.write(tmp_path / "run", ("psnr",))
    assert path is not None
    table = pd.read_csv(path.with_suffix(".csv"))
    assert set(table["level"]) == {"ber=0", "ber=0.001"}
    assert (table["pairs"] == 2).all() and table["bytes_identical"].all()
    # the same bytes parse alike: whatever fails, fails on both sides
    assert (table["failure_rate_reference"] == table["failure_rate_treatment"]).all()


def test_the_visual_grid_redecodes_side_cells_with_their_true_view_and_skips_degraded_ones(tmp_path):
    """A re-decode of a codec with side information gets the true side view again (checked by pixel hash), so it
    reproduces the run's pixels; a degraded or missing view is not re-created outside the run's plan."""
    from harness.store import ResultStore
    from reports import tables
    from reports.redecode import Redecoder
    from reports.report import grid_rows

    run(RunOptions(_suite(), tmp_path / "run", workers=1, progress=False))
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells = store.cells_frame()
        side = cells[cells["codec_label"] == "side"]
        with Redecoder(tmp_path / "run", store) as rd:
            got = {row["key"]: (row, rd.decode(row)) for row in side.to_dict("records")}
        rows = grid_rows(tmp_path / "run", store, tables.prepare(cells), ("psnr",), 30.0)
    finally:
        store.close()
    degraded = 0
    for row, out in got.values():
        record = json.loads(row["side"])
        if row["corruption"] == "bsc" and record["degradation"] is None:
            assert out.note == "ok" and out.image is not None, out.note  # pixels match the run's (checked inside)
        else:
            degraded += 1
            assert out.image is None and out.note == "side-information level: not re-decoded"
    assert degraded == 2 * (2 + 3)
    # the grid shows the bit-error levels once per codec: the crossed (missing view) cells are not extra tiles
    side_row = next(r for r in rows if r["label"] == "side")  # "codec" names the build too (#24)
    assert len(side_row["tiles"]) == 2 + 2 and all(img is not None for _, img, _ in side_row["tiles"][1:])
