"""Suite runs through the new channels: bursts, FEC layer (fail and pass-through), latent noise."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import stored_cells, write_suite

from harness.config import SuiteError, load_suite
from harness.runner import RunOptions, make_plan, run

J2K = '[[codecs]]\ncodec = "jpeg2000"\noptions = { target_bpp = 0.5 }\n'
FEC = """[[corruptions]]
corruption = "bsc"
scopes = ["all"]
grid = { ber = [0.0, 1e-3, 2e-2] }
fec = [{ n = 255, k = 223, depth = 1 }, { depth = 4, on_failure = "pass_through" }]
"""


def test_fec_layer_corrects_fails_and_passes_through(tmp_path):
    suite = write_suite(tmp_path / "s.toml", codecs=J2K, corruptions=FEC, seeds=2)
    run(RunOptions(load_suite(str(suite)), tmp_path / "run", workers=2, progress=False))
    cells = stored_cells(tmp_path / "run")
    assert len(cells) == 2 * 3 * 2 * 2  # images x levels x fec configs x seeds
    cells["depth"] = [json.loads(f)["depth"] for f in cells["fec"]]
    fec_info = [json.loads(c)["fec"] for c in cells["channel"]]
    cells["failed_codewords"] = [f["failed_codewords"] for f in fec_info]
    assert (cells["fec_overhead_bpp"] > 0).all() and {f["backend"] for f in fec_info} <= {
        "creedsolo",
        "reedsolo (pure Python)",
    }
    # ~1e-3 flips per bit: a few byte errors per 255-byte codeword, far below t = 16: all corrected
    low = cells[cells["level"] == "ber=0.001"]
    assert (low["actual_flips"] > 0).all() and (low["residual_flips"] == 0).all()
    assert set(low["status"]) == {"ok"} and (low["metric.psnr_vs_clean"] == float("inf")).all()
    # 2e-2: ~40 byte errors per codeword: uncorrectable. Policy "fail" -> fec_failure, nothing decoded;
    # policy "pass_through" -> the decoder sees the damaged bytes and the status is the decoder's.
    high = cells[cells["level"] == "ber=0.02"]
    assert (high["failed_codewords"] > 0).all() and (high["residual_flips"] > 0).all()
    assert set(high.loc[high["depth"] == 1, "status"]) == {"fec_failure"}
    assert "fec_failure" not in set(high.loc[high["depth"] == 4, "status"])
    assert high.loc[high["status"] == "fec_failure", "metric.psnr"].isna().all()


def test_fec_needs_a_whole_stream_bitstream_channel(tmp_path):
    bad = FEC.replace('scopes = ["all"]', 'scopes = ["payload"]')
    suite = write_suite(tmp_path / "s.toml", codecs=J2K, corruptions=bad)
    with pytest.raises(SuiteError, match="FEC protects the whole transmitted stream"):
        make_plan(RunOptions(load_suite(str(suite)), tmp_path))
    bad_params = FEC.replace("k = 223", "k = 224")
    suite = write_suite(tmp_path / "t.toml", codecs=J2K, corruptions=bad_params)
    with pytest.raises(SuiteError, match="n - k must be even"):
        make_plan(RunOptions(load_suite(str(suite)), tmp_path))


def test_burst_cells_record_the_derived_chain(tmp_path):
    burst = (
        '[[corruptions]]\ncorruption = "burst"\nscopes = ["payload"]\n'
        "grid = { ber = [1e-3], mean_burst_bits = [8, 64] }\n"
    )
    suite = write_suite(tmp_path / "s.toml", codecs=J2K, corruptions=burst, seeds=2)
    run(RunOptions(load_suite(str(suite)), tmp_path / "run", workers=2, progress=False))
    cells = stored_cells(tmp_path / "run")
    assert len(cells) == 2 * 2 * 2
    chains = [json.loads(c) for c in cells["channel"]]
    assert {round(1 / c["p_bad_to_good"]) for c in chains} == {8, 64}
    assert all(c["pi_bad"] == pytest.approx(1e-3) for c in chains)
    assert np.allclose(cells["expected_flips"], cells["bits_exposed"] * 1e-3)


def test_a_scope_one_codec_declares_targets_that_codec_only(tmp_path):
    """RDEIC's `y` segment: RDEIC gets y cells, JPEG2000 (which has no `y`) gets none, instead of a refused suite."""
    codecs = (
        '[[codecs]]\ncodec = "rdeic"\nlabel = "r"\noptions = { config = "test", allow_random_weights = true }\n'
        '[[codecs]]\ncodec = "jpeg2000"\nlabel = "j"\n'
    )
    corruptions = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["y", "all"]\ngrid = { ber = [0.0] }\n'
    suite = load_suite(str(write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=corruptions)))
    plan = make_plan(RunOptions(suite, tmp_path))
    scopes = {(c.codec_label, c.scope) for c in plan.cells}
    assert scopes == {("r", "y"), ("r", "all"), ("j", "all")}
