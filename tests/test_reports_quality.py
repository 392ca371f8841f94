"""Issue #16, tables: infinite quality, degenerate RD curves, distance to the clean decode, RD points on one
image set, a metric's own n, silent FEC miscorrection, Markdown escaping. Tiny synthetic cell frames only."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from reports import tables

INF = math.inf


def _cells(rows: list[dict]) -> pd.DataFrame:
    """A minimal cells frame as ResultStore.cells_frame() returns it (``ber`` becomes params/level)."""
    base = {
        "dataset": "d",
        "preprocessing": "none",
        "image_id": "a",
        "codec": "c",
        "codec_label": "c@1",
        "corruption": "bsc",
        "scope": "all",
        "replicate": 0,
        "decode_seed": 0,
        "bytes_total": 100,
        "bytes_header": 10,
        "bpp": 1.0,
        "header_bpp": 0.1,
        "expected_flips": 0.0,
        "actual_flips": 0,
        "p_error_free": 1.0,
        "fec": None,
    }
    out = []
    for r in rows:
        row = {**base, **r}
        ber = row.pop("ber")
        row["params"] = json.dumps({"ber": ber})
        row["level"] = f"ber={ber:g}"
        row.setdefault("image_sha256", row["image_id"])
        out.append(row)
    return pd.DataFrame(out)


def _ok(ber: float, image: str, psnr: float, clean: float, vs_clean: float, **extra) -> dict:
    return {
        "ber": ber,
        "image_id": image,
        "status": "ok",
        "metric.psnr": psnr,
        "metric.clean_psnr": clean,
        "metric.psnr_vs_clean": vs_clean,
        **extra,
    }


def _summary(rows: list[dict], metrics=("psnr",)) -> pd.DataFrame:
    return tables.summarise(tables.prepare(_cells(rows)), metrics)


# -- 1. infinite quality -----------------------------------------------------------------------------------------------
def test_lossless_decode_identical_to_clean_is_within_1db_and_passes_the_threshold():
    """A lossless codec at BER 0: every decode identical to the original and to the clean decode (+inf)."""
    rows = [_ok(0.0, img, INF, INF, INF) for img in "abc"]
    rows += [_ok(1e-3, img, 40.0, INF, 40.0) for img in "abc"]  # lossy after corruption: an infinite drop
    s = _summary(rows)
    clean = s[s["level_value"] == 0].iloc[0]
    assert clean["within_1db_of_clean"] == 1.0 and clean["drop_within_1db"] == 1.0  # old code: 0 %
    assert clean["psnr_drop"] == 0.0  # inf - inf: no drop, not NaN
    assert clean["psnr"] == INF and clean["psnr_n"] == 3 and clean["psnr_lossless"] == 3
    human = tables.human_table(s, ("psnr",))
    assert human.loc[0, "psnr (ok)"] == "lossless (n 3)" and human.loc[0, "≤1 dB of clean decode"] == "100%"
    t = tables.threshold_table(s).iloc[0]
    assert t["threshold_level"] == "ber=0" and t["drop"] == 0.0  # old code: "none (fails at the lowest level)"
    assert t["first_failing_level"] == "ber=0.001" and "drop inf" in t["why"]
    lossy = s[s["level_value"] > 0].iloc[0]
    assert lossy["within_1db_of_clean"] == 0.0 and lossy["psnr_drop"] == INF


def test_a_mean_over_some_lossless_cells_is_the_finite_mean_with_the_lossless_count():
    rows = [_ok(1e-3, "a", 30.0, 31.0, 40.0), _ok(1e-3, "b", 32.0, 33.0, 41.0), _ok(1e-3, "c", INF, INF, INF)]
    r = _summary(rows).iloc[0]
    assert r["psnr"] == pytest.approx(31.0) and r["psnr_n"] == 3 and r["psnr_lossless"] == 1  # old code: inf
    assert r["psnr_ci_low"] < 31.0 < r["psnr_ci_high"]  # the interval is over the two finite values
    assert r["psnr_drop"] == pytest.approx(2 / 3)  # drops 1, 1 and 0 (the lossless pair)
    text = tables.human_table(_summary(rows), ("psnr",)).loc[0, "psnr (ok)"]
    assert text.startswith("31.00 ± ") and text.endswith("(2 lossy + 1 lossless)")
    assert tables.lossless_note(_summary(rows), ("psnr",)).startswith("Lossless decodes")
    s = tables.finite_stats(np.array([np.nan, INF, INF]))
    assert (s.mean, s.n, s.lossless) == (INF, 2, 2)
    assert math.isnan(tables.finite_stats(np.array([np.nan])).mean)


def _rd(points: dict[str, list[tuple[float, float]]], images=("x", "y")) -> pd.DataFrame:
    rows = []
    for curve, pts in points.items():
        for i, (bpp, q) in enumerate(pts):
            for img in images:
                rows.append(_ok(0.0, img, q, q, INF, codec_label=f"{curve}@{i + 1}", bpp=bpp))
    return tables.rd_summary(tables.prepare(_cells(rows)), ("psnr",))


def test_a_lossless_rd_point_is_left_out_of_bd_with_a_note():
    rd = _rd(
        {
            "a": [(0.5, 28.0), (1.0, 31.0), (2.0, 34.0), (4.0, INF)],  # the top rate point is lossless
            "b": [(0.25, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.0)],  # same quality at half the rate
        }
    )
    assert rd.set_index("codec").loc["a@4", "psnr_lossless"] == 2
    bd, notes = tables.bd_table(rd, ("psnr",))
    row = bd.iloc[0]
    assert row["bd_rate_pct"] == pytest.approx(-50.0, abs=0.5)  # old code: NaN, "ranges do not overlap"
    assert "lossless" in row["note"] and "a@4" in row["note"] and notes == []


# -- 2. degenerate curves ----------------------------------------------------------------------------------------------
def test_saturated_and_non_monotonic_curves_are_cleaned_and_never_raise():
    rd = _rd(
        {
            # two rate points saturate to the same (bpp, psnr); one dips (more bits, lower quality)
            "a": [(0.5, 28.0), (1.0, 31.0), (1.0, 31.0), (1.5, 30.0), (2.0, 34.0), (4.0, 37.0)],
            "b": [(0.25, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.0)],
        }
    )
    bd, _ = tables.bd_table(rd, ("psnr",))  # old code: ValueError from the interpolation
    row = bd.iloc[0]
    assert math.isfinite(row["bd_rate_pct"]) and row["bd_rate_pct"] < 0
    assert math.isfinite(row["bd_quality"]) and row["bd_quality"] > 0 and row["bd_quality_unit"] == "dB"
    assert "duplicate of" in row["note"] and "made monotonic" in row["note"]
    kept, what = tables.clean_curve(rd[rd["curve"] == "a"], "psnr")
    assert list(kept["codec"]) == ["a@1", "a@2", "a@5", "a@6"] and len(what) == 2
    assert (np.diff(kept["bpp"]) > 0).all() and (np.diff(kept["psnr"]) > 0).all()


def test_one_pair_failing_is_recorded_in_its_row(monkeypatch):
    rd = _rd({"a": [(0.5, 28.0), (1.0, 31.0)], "b": [(0.25, 28.0), (0.5, 31.0)], "c": [(0.5, 27.0), (2.0, 33.0)]})

    def broken(anchor, test, metric, method="pchip"):
        if "c@1" in set(test["codec"]):
            raise ValueError("synthetic failure")
        return -10.0

    monkeypatch.setattr(tables, "bd_rate", broken)
    bd, _ = tables.bd_table(rd, ("psnr",))
    assert len(bd) == 3
    failed = bd[bd["test"] == "c"]
    assert failed["bd_rate_pct"].isna().all() and failed["note"].str.contains("synthetic failure").all()
    assert (bd[bd["test"] != "c"]["bd_rate_pct"] == -10.0).all()


def test_curves_with_one_point_are_noted_once_not_as_rows():
    rd = _rd({"a": [(0.5, 28.0), (1.0, 31.0)], "b": [(0.5, 29.0)], "c": [(0.5, 30.0)], "e": [(0.4, 28.0), (1.0, 32.0)]})
    bd, notes = tables.bd_table(rd, ("psnr",))
    assert list(zip(bd["anchor"], bd["test"], strict=True)) == [("a", "e")]
    assert not bd["note"].str.contains("two").any()
    assert len(notes) == 1 and "b (d none, psnr: 1 usable point)" in notes[0] and "c (d none" in notes[0]


# -- 3. within 1 dB of the clean decode --------------------------------------------------------------------------------
def test_within_1db_reads_the_distance_to_the_clean_decode_not_the_quality_drop():
    rows = [
        _ok(1e-3, "a", 29.5, 30.0, 20.0),  # 0.5 dB lower PSNR, yet far from the clean decode (psnr_vs_clean 20)
        _ok(1e-3, "b", 29.5, 30.0, 20.0),
        _ok(1e-3, "c", 30.0, 30.0, INF),  # identical to the clean decode
        _ok(1e-3, "d", 25.0, 30.0, 35.0),  # 35 < 30 + 5.87: not within
    ]
    r = _summary(rows).iloc[0]
    assert r["within_1db_of_clean"] == pytest.approx(1 / 4)  # old code: 3/4 (from the PSNR drop)
    assert r["drop_within_1db"] == pytest.approx(3 / 4)
    assert r["psnr_vs_clean_identical"] == 1
    assert abs(tables.CLEAN_DECODE_MARGIN_DB - 5.8682) < 1e-4
    md = tables.to_markdown(_summary(rows), ("psnr",))
    assert "≤1 dB of clean decode" in md and "drop ≤1 dB vs clean quality" in md
    foot = tables.footer(_cells(rows))
    assert "psnr_vs_clean" in foot and "drop ≤1 dB vs clean quality" in foot


# -- 4. RD points on one image set -------------------------------------------------------------------------------------
def test_rd_bpp_and_quality_rest_on_the_same_images():
    """No BER-0 level; image z never decodes ok, so it has no clean quality: it must not count in bpp either."""
    rows = []
    for img, bpp, q in (("x", 1.0, 30.0), ("y", 2.0, 32.0), ("z", 3.0, math.nan)):
        for ber in (1e-3, 1e-2):
            if img == "z":
                rows.append({"ber": ber, "image_id": img, "bpp": bpp, "status": "crash", "metric.psnr": np.nan})
            else:
                rows.append(_ok(ber, img, q - 1, q, 30.0, bpp=bpp))
    rd = tables.rd_summary(tables.prepare(_cells(rows)), ("psnr",))
    r = rd.iloc[0]
    assert r["bpp"] == pytest.approx(1.5)  # old code: 2.0, over x, y and z
    assert r["psnr"] == pytest.approx(31.0) and r["images"] == 2 and r["psnr_n"] == 2
    assert r["images_left_out"] == 1 and "1 of 3 images" in r["note"]


# -- 5. a metric's own n -----------------------------------------------------------------------------------------------
def test_a_metrics_own_n_is_printed_where_it_differs_from_n_ok():
    rows = [_ok(1e-3, img, 30.0 + i, 31.0, 40.0) for i, img in enumerate("abc")]
    rows[2]["metric.psnr"] = np.nan  # the metric could not be computed on one ok decode
    human = tables.human_table(_summary(rows), ("psnr",))
    assert human.loc[0, "n ok"] == 3
    assert human.loc[0, "psnr (ok)"].endswith("(n 2)")  # old code: no n, read as over 3
    same = tables.human_table(_summary(rows[:2]), ("psnr",))
    assert "(n" not in same.loc[0, "psnr (ok)"]


# -- 6. silent FEC miscorrection ---------------------------------------------------------------------------------------
def test_fec_miscorrection_is_counted_and_said():
    fec = json.dumps({"n": 255, "k": 223, "depth": 1})

    def cell(image, status, residual, failed_codewords):
        channel = json.dumps({"fec": {"failed_codewords": failed_codewords, "residual_flips": residual}})
        row = _ok(1e-2, image, 30.0, 31.0, 40.0) if status == "ok" else {"ber": 1e-2, "image_id": image}
        return {**row, "status": status, "fec": fec, "residual_flips": residual, "channel": channel}

    rows = [
        cell("a", "ok", 0, 0),  # corrected
        cell("b", "ok", 5, 0),  # passed as corrected, still 5 bits wrong: silent miscorrection
        cell("c", "fec_failure", 7, 3),  # declared
        cell("d", "ok", 3, 2),  # pass_through: failed codewords declared, uncorrected bytes decoded
    ]
    s = _summary(rows)
    r = s.iloc[0]
    assert (r["fec_passed"], r["fec_miscorrected"]) == (2, 1)  # old code: no such columns
    assert r["fec_miscorrected_share"] == 0.5 and r["residual_flips_mean"] == pytest.approx(15 / 4)
    assert r["fec_miscorrected_ci_high"] > 0.5
    human = tables.human_table(s, ("psnr",))
    assert human.loc[0, "FEC passed but wrong"] == "1/2 (50%)" and human.loc[0, "residual flips (mean)"] == "3.8"
    note = tables.fec_note(s)
    assert note.startswith("Silent FEC miscorrection: 1 of the 2 streams")
    assert any(n.startswith("Silent FEC") for n in tables.summary_notes(s, ("psnr",)))
    clean = _summary([cell("a", "ok", 0, 0)])
    assert clean.loc[0, "fec_miscorrected"] == 0 and "equals the sent stream" in tables.fec_note(clean)


# -- 7. Markdown escaping ----------------------------------------------------------------------------------------------
NASTY = "j2k|<b>`x`*y*_z_[a](b)@0.5"

_PIPE = re.compile(r"(?<!\\)\|")


def _cell_counts(md: str) -> set[int]:
    return {len(_PIPE.findall(line)) for line in md.splitlines() if line.startswith("|")}


def test_markdown_tables_escape_labels():
    rows = [_ok(1e-3, "a", 30.0, 31.0, 40.0, codec_label=NASTY, scope="pay|load_*")]
    md = tables.to_markdown(_summary(rows), ("psnr",))
    assert len(_cell_counts(md)) == 1  # every row has as many cells as the header (old code: the pipe splits)
    assert "<b>" not in md and "&lt;b&gt;" in md and "\\`x\\`" in md and "\\*y\\*" in md and "\\_z\\_" in md
    assert "\\[a\\](b)" in md  # no link can form
    mdit = pytest.importorskip("markdown_it")
    rendered = mdit.MarkdownIt("commonmark").enable("table").render(md)
    body = rendered.split("<tbody>")[1]
    assert body.count("<td") == len(re.findall(r"<th[ >]", rendered.split("<tbody>")[0]))
    assert "j2k|&lt;b&gt;`x`*y*_z_[a](b)@0.5" in body  # the label reads back as it was
    generic = tables.markdown_table(pd.DataFrame({"key": [NASTY], "value": ["a|b"]}))
    assert len(_cell_counts(generic)) == 1 and "<b>" not in generic
