"""LDM-RSIC-tiny: the shipped weights load strictly through the registry presets, fit the 20 MB budget, and
reproduce the model card's held-out numbers (weights/ldm-rsic-tiny/heldout.json); the ci_ldm_rsic regression
suite matches its committed baseline."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import create_codec  # noqa: E402
from harness.registry import CODECS, LDM_RSIC_TINY  # noqa: E402

WEIGHTS = ROOT / "weights" / "ldm-rsic-tiny"
FILES = (WEIGHTS / "ldm-rsic-tiny.safetensors", WEIGHTS / "j2k-men-tiny.safetensors")
BASELINE = ROOT / "reports" / "baselines" / "ci_ldm_rsic.csv"


def test_presets_point_at_the_shipped_weights():
    assert WEIGHTS.resolve() == LDM_RSIC_TINY
    for name in ("ldm-rsic-tiny", "elic-tiny"):
        preset = CODECS.get(name)
        assert preset.codec == "ldm-rsic" and preset.options["weights"] == str(FILES[0].resolve())
    assert CODECS.get("elic-tiny").options["enhance"] is False
    assert CODECS.get("j2k+men-tiny").options["men_weights"] == str(FILES[1].resolve())


def test_shipped_weights_fit_the_budget_and_load_strictly():
    from harness.codecs.ldm_rsic import checkpoint as ck

    assert all(f.is_file() for f in FILES), "run python -m harness.train.ldm_rsic_tiny --out weights/ldm-rsic-tiny"
    assert sum(f.stat().st_size for f in FILES) <= 20 * 1024 * 1024
    parts = ck.split_merged(FILES[0])
    assert parts["elic"] and parts["s2"] and not any(k.startswith(ck.S2_DUPLICATES) for k in parts["s2"])
    codec = create_codec("ldm-rsic-tiny")
    codec.elic()
    codec.s2()  # strict: raises listing missing / unexpected keys otherwise
    create_codec("j2k+men-tiny").enhancer()


@pytest.mark.slow
def test_held_out_numbers_reproduce():
    from harness.datasets import create_dataset
    from harness.train.ldm_rsic_evaluate import measure

    reference = json.loads((WEIGHTS / "heldout.json").read_text())
    ds = create_dataset("standin_overhead")
    entry = ds.index()[0]
    want = reference["images"][f"standin_overhead/{entry.id}"]
    got = measure(WEIGHTS, ds.read(entry))
    for key in ("bpp", "elic", "enhanced", "no_prior", "j2k", "j2k_star"):
        assert got[key] == pytest.approx(want[key], abs=0.05), key


@pytest.mark.slow
def test_ci_ldm_rsic_suite_matches_its_baseline(tmp_path, capsys):
    """LDM-RSIC-tiny and ELIC-tiny (paired) under bit errors and latent noise, against the committed baseline
    (no OpenJPEG in these rows). After an intended change, review the diff and rerun with ``--update``."""
    from harness.cli import main

    out = tmp_path / "ldm"
    assert main(["--suite", "ci_ldm_rsic", "--out", str(out), "--no-progress", "--workers", "2"]) == 0
    capsys.readouterr()
    code = main(["regress", str(out), "--baseline", str(BASELINE)])
    text = capsys.readouterr().out
    assert code == 0, text
    base = pd.read_csv(BASELINE)
    assert f"compared {len(base)} rows" in text and "OK: within tolerances" in text
    assert set(base["codec"]) == {"ldm-rsic-tiny", "elic-tiny"}
    assert {"z_hat", "y_hat", "x_tilde", "cond_tokens", "prior", "all", "payload"} <= set(base["scope"])
    assert np.isfinite(base.loc[base["codec"] == "ldm-rsic-tiny", "psnr"]).any()
