"""Issue #16, item 8: the terminal headline fits in 100 columns for a realistic suite."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from reports import tables, terminal
from reports.stats import wilson_interval

LABELS = [
    "rdeic-tiny@low",
    "rdeic-tiny@high",
    "jpeg2000-plain@matched-to-rdeic-tiny@low",
    "jpeg2000-reversible@matched-to-rdeic-tiny@low",
    "jpeg2000-resilient-sop-eph-restart-ERTERM-SEGMARK-nonstrict@matched-to-rdeic-tiny@low-long-label",
    "j2k-tiles-128px-precincts-64px-codeblocks-32px@matched-to-rdeic-tiny@low",
]
BERS = [0.0, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 1e-2]


def _suite_cells(images: int = 3) -> pd.DataFrame:
    """6 codecs x 2 scopes x 9 BER levels x ``images`` images; codec i fails at level j on the first
    min(i + j - 6, images) images (so rates differ across the table)."""
    rows = []
    for i, label in enumerate(LABELS):
        for scope in ("all", "payload"):
            for j, ber in enumerate(BERS):
                for k in range(images):
                    fail = k < max(0, i + j - 6) + (scope == "all" and j == 8)
                    rows.append(
                        {
                            "dataset": "samples",
                            "preprocessing": "none",
                            "image_id": f"i{k}",
                            "image_sha256": f"i{k}",
                            "codec": "c",
                            "codec_label": label,
                            "corruption": "bsc",
                            "scope": scope,
                            "params": json.dumps({"ber": ber}),
                            "level": f"ber={ber:g}",
                            "replicate": 0,
                            "decode_seed": 0,
                            "bytes_total": 100,
                            "bytes_header": 10,
                            "bpp": 0.2,
                            "header_bpp": 0.01,
                            "expected_flips": ber * 800,
                            "actual_flips": 0,
                            "p_error_free": 1.0,
                            "fec": None,
                            "status": "exception" if fail else "ok",
                            "metric.psnr": float("nan") if fail else 25.0,
                            "metric.clean_psnr": float("nan") if fail else 26.0,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return tables.summarise(tables.prepare(_suite_cells()), ("psnr",))


def test_headline_fits_in_100_columns_for_a_realistic_suite(summary):
    assert len(summary) == 108  # the table the CLI used to print whole
    text = terminal.headline(summary, width=100, run_dir="runs/bit_errors")
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    assert len(lines) < 40
    for label in LABELS:  # every codec named in full (legend of numbered columns)
        assert label in text.replace("\n    ", "").replace("\n", "")
    assert text.count("failure % [Wilson 95% CI]") == 2  # one table per scope
    for ber in BERS:
        assert f"\n{ber:g} " in text
    assert lines[-1] == "Full tables: runs/bit_errors/summary.md"  # the report is named once it is written


def test_headline_values_are_the_wilson_intervals(summary):
    frames = dict(terminal.headline_tables(summary))
    frame = frames["bsc (ber in flip probability per bit), scope all: failure % [Wilson 95% CI], 3 cells each"]
    assert list(frame.columns) == ["ber", *sorted(LABELS)]
    assert list(frame["ber"]) == [f"{b:g}" for b in BERS]  # ordered by value
    lo, hi = wilson_interval(3, 3)
    assert frame.iloc[8][LABELS[0]] == f"100 [{100 * lo:.0f}–100]"
    lo, hi = wilson_interval(0, 3)
    assert frame.iloc[0][LABELS[0]] == f"0 [0–{100 * hi:.0f}]"
    assert terminal.rate_text(1 / 30, *wilson_interval(1, 30)) == "3.3 [0.6–17]"


def test_headline_splits_tables_that_do_not_fit_and_takes_cells(summary):
    narrow = terminal.headline(_suite_cells(images=2), width=60)
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert narrow.count("[6]") >= 3  # the legend and each scope's table, split into two column groups
    short = summary[summary["codec"].isin(LABELS[:2])]
    text = terminal.headline(short, width=100)
    assert "rdeic-tiny@high" in text.splitlines()[1] and "Codecs:" not in text  # full labels where they fit
