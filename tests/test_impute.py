"""Failure-imputed columns: optional, labelled with their policy, never the default summary."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from reports import tables
from reports.impute import Imputation, imputed_values, parse_imputation


def _cells() -> pd.DataFrame:
    """Two images, one level; image a: ok 30, ok 26, one failure; image b: ok 20, one failure. Clean decodes:
    a 31, b 22."""
    rows = [
        ("a", "ok", 30.0, 31.0),
        ("a", "ok", 26.0, 31.0),
        ("a", "crash", np.nan, np.nan),
        ("b", "ok", 20.0, 22.0),
        ("b", "exception", np.nan, np.nan),
    ]
    return pd.DataFrame(
        [
            {
                "dataset": "d",
                "preprocessing": "none",
                "image_id": img,
                "image_sha256": img,
                "codec": "c",
                "codec_label": "c@1",
                "corruption": "bsc",
                "scope": "all",
                "params": json.dumps({"ber": 1e-3}),
                "level": "ber=0.001",
                "replicate": i,
                "decode_seed": 0,
                "bytes_total": 100,
                "bytes_header": 10,
                "bpp": 1.0,
                "header_bpp": 0.1,
                "expected_flips": 1.0,
                "actual_flips": 1,
                "p_error_free": 0.3,
                "fec": None,
                "status": status,
                "metric.psnr": psnr,
                "metric.clean_psnr": clean,
                "metric.lpips": np.nan if status != "ok" else (0.1 if img == "a" else 0.5),
            }
            for i, (img, status, psnr, clean) in enumerate(rows)
        ]
    )


def test_parse_policies():
    assert parse_imputation("worst_ok") == Imputation("worst_ok")
    assert parse_imputation("psnr=0") == Imputation("const", "psnr", 0.0)
    assert parse_imputation("lpips=1.0").tag == "lpips=1"
    assert parse_imputation("grey") == Imputation("grey")
    for bad in ("zero", "psnr=", "psnr=nan", "=3"):
        with pytest.raises(ValueError, match="worst_ok"):
            parse_imputation(bad)


def test_worst_ok_takes_the_worst_ok_decode_of_the_same_image_in_the_metric_direction():
    cells = _cells()
    values, imputed = imputed_values(cells, "psnr", Imputation("worst_ok"))
    assert list(values) == [30.0, 26.0, 26.0, 20.0, 20.0]  # worst of {30, 26, clean 31} and of {20, clean 22}
    assert list(imputed) == [False, False, True, False, True]
    lp, _ = imputed_values(cells, "lpips", Imputation("worst_ok"))  # lower is better: worst = highest
    assert lp.iloc[2] == 0.1 and lp.iloc[4] == 0.5
    unknown = cells.rename(columns={"metric.psnr": "metric.mystery"})
    v, flagged = imputed_values(unknown, "mystery", Imputation("worst_ok"))  # direction unknown: no value
    assert math.isnan(v.iloc[2]) and not flagged.any()


def test_imputed_columns_are_separate_labelled_and_absent_by_default():
    cells = tables.prepare(_cells())
    plain = tables.summarise(cells, ("psnr",))
    assert not [c for c in plain.columns if "impute" in c]
    assert plain.loc[0, "psnr"] == pytest.approx((30 + 26 + 20) / 3)  # ok only: unchanged
    policies = (Imputation("worst_ok"), parse_imputation("psnr=0"))
    table = tables.summarise(cells, ("psnr", "lpips"), policies)
    r = table.iloc[0]
    assert r["psnr"] == plain.loc[0, "psnr"] and r["psnr_n"] == 3  # the default columns do not move
    assert r["psnr_impute_worst_ok"] == pytest.approx((30 + 26 + 26 + 20 + 20) / 5)
    assert (r["psnr_impute_worst_ok_n"], r["psnr_impute_worst_ok_imputed"], r["psnr_impute_worst_ok_missing"]) == (
        5,
        2,
        0,
    )
    assert r["psnr_impute_0"] == pytest.approx((30 + 26 + 20) / 5)
    assert "lpips_impute_0" not in table  # a constant applies to the metric it names only
    human = tables.human_table(table, ("psnr", "lpips"), policies)
    assert "psnr incl. failures (failed = worst ok decode of the image)" in human.columns
    assert "psnr incl. failures (failed = 0)" in human.columns
    assert human.loc[0, "psnr incl. failures (failed = 0)"].endswith("(n 5, 2 imputed)")
    note = tables.imputation_note(policies)
    assert "worst_ok" in note and "psnr = 0" in note and "not the default" in note
    assert tables.imputation_note(()) == ""


def test_grey_gives_failed_cells_the_metric_of_a_mid_grey_image(monkeypatch):
    import reports.impute as imp

    seen = []

    def fake(row, metric):
        seen.append((row["image_id"], metric))
        return {"a": 11.0, "b": 7.0}[row["image_id"]]

    monkeypatch.setattr(imp, "grey_value", fake)
    values, imputed = imputed_values(_cells(), "psnr", Imputation("grey"))
    assert list(values) == [30.0, 26.0, 11.0, 20.0, 7.0] and list(imputed) == [False, False, True, False, True]
    assert seen == [("a", "psnr"), ("b", "psnr")]  # only failed cells ask for it
    label = Imputation("grey").label("psnr")
    assert label == "psnr incl. failures (failed = mid-grey image)" and Imputation("grey").column("psnr").endswith(
        "grey"
    )


def test_grey_value_of_a_bundled_sample_is_the_psnr_of_grey_against_it():
    from harness.datasets import create_dataset
    from harness.hashing import pixels_sha256
    from harness.metrics import PSNR
    from reports.impute import grey_value

    ds = create_dataset("samples")
    entry = sorted(ds.index(), key=lambda e: e.id)[0] if hasattr(ds, "index") else None
    if entry is None:
        pytest.skip("samples dataset has no index()")
    image = ds.load(entry)
    row = {"dataset": "samples", "image_id": entry.id, "image_sha256": pixels_sha256(image), "preprocessing": "none"}
    assert grey_value(row, "psnr") == pytest.approx(PSNR()(np.full_like(image, 128), image))
    assert math.isnan(grey_value({**row, "image_sha256": "0" * 64, "image_id": "nope"}, "psnr"))
