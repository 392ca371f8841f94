"""Figures stay legible at every suite size (issue #24): one tick format per axis, no opaque block of
overlapping bands, identical curves visible, one y range per metric, RD axes not squashed by a bound."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reports import plots, tables


@pytest.fixture
def captured(monkeypatch):
    """The figures the plot functions draw, kept open for inspection (instead of saved and closed)."""
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, out_dir, name: figs.append(fig) or [])
    yield figs
    import matplotlib.pyplot as plt

    for f in figs:
        plt.close(f)


def _summary(codecs: list[str], scopes=("all", "payload"), quality=None) -> pd.DataFrame:
    rows = []
    for codec in codecs:
        for scope in scopes:
            for ber in (0.0, 1e-5, 1e-4, 1e-3):
                for i in range(3):
                    fail = ber >= 1e-3 and i < 2
                    q = (quality or {}).get((codec, scope), 30.0)
                    rows.append(
                        {
                            "key": f"{codec}{scope}{ber}{i}",
                            "dataset": "d",
                            "preprocessing": "none",
                            "image_id": f"i{i}",
                            "image_sha256": f"i{i}",
                            "codec_label": codec,
                            "codec": "c",
                            "corruption": "bsc",
                            "params": json.dumps({"ber": ber}),
                            "level": f"ber={ber:g}",
                            "scope": scope,
                            "replicate": 0,
                            "decode_seed": 0,
                            "status": "crash" if fail else "ok",
                            "bpp": 0.2,
                            "header_bpp": 0.0,
                            "bytes_total": 10,
                            "bytes_header": 0,
                            "expected_flips": 0.0,
                            "actual_flips": 0,
                            "p_error_free": 1.0,
                            "fec": None,
                            "metric.psnr": np.nan if fail else q - 1000 * ber,
                            "metric.clean_psnr": q,
                        }
                    )
    return tables.summarise(tables.prepare(pd.DataFrame(rows)), ("psnr",))


def test_log_axis_ticks_have_one_format():
    """Old ticks: '1e-05' beside '0.0001' and '0.001' on one axis."""
    ticks = [1e-5, 1e-4, 1e-3, 5e-3, 1e-2, 0.1]
    assert [plots.tick_label(t, True) for t in ticks] == ["1e-5", "1e-4", "1e-3", "5e-3", "1e-2", "1e-1"]
    assert plots.tick_label(0.5, False) == "0.5"


def test_many_identical_failure_curves_stay_visible_without_an_opaque_block(captured, tmp_path):
    """Nine codecs with the same failure rates: old code drew nine overlapping Wilson bands (one opaque block)
    on top of nine curves at the very same x, each hiding the others."""
    from matplotlib.collections import PolyCollection

    codecs = [f"codec-{i}" for i in range(9)]
    plots.failure_rate(_summary(codecs), "ber", tmp_path)
    (fig,) = captured
    for ax in fig.axes[:2]:
        assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # no bands with this many lines
        xs = [tuple(line.get_xdata()) for line in ax.get_lines() if line.get_label() in codecs]
        assert len(xs) == 9 and len(set(xs)) == 9  # dodged: no line sits exactly on another


def test_panels_of_one_metric_share_their_y_range(captured, tmp_path):
    """Old code: each panel's own range, so 25 dB looked the same height as 35 dB in the next panel."""
    quality = {("a", "all"): 25.0, ("a", "payload"): 35.0}
    plots.quality(_summary(["a"], quality=quality), ("psnr",), "ber", tmp_path)
    (fig,) = captured
    panels = [ax for ax in fig.axes if ax.get_title().startswith("psnr")]
    assert len(panels) == 2 and panels[0].get_ylim() == panels[1].get_ylim()


def test_rd_axes_follow_the_codecs_not_the_bound_nor_tiny_n_intervals(captured, tmp_path):
    """Old code: the VAE-only bound at 4.8 bpp squashed the real codecs; intervals from n = 2 images (±30 dB)
    stretched the y axis to -20...90 dB."""
    rd = pd.DataFrame(
        [
            {"dataset": "d", "curve": "a", "codec": "a@1", "bpp": 0.1, "psnr": 28.0, "psnr_ci_low": -2.0,
             "psnr_ci_high": 58.0, "images": 2},
            {"dataset": "d", "curve": "a", "codec": "a@2", "bpp": 0.2, "psnr": 30.0, "psnr_ci_low": 0.0,
             "psnr_ci_high": 60.0, "images": 2},
            {"dataset": "d", "curve": "vae", "codec": "vae", "bpp": 4.8, "psnr": 31.0, "psnr_ci_low": 1.0,
             "psnr_ci_high": 61.0, "images": 2},
        ]
    )  # fmt: skip
    plots.rd_curves(rd, ("psnr",), tmp_path, bounds=["vae"])
    (fig,) = captured
    ax = fig.axes[0]
    assert ax.get_xlim()[1] < 1.0  # the bound is a reference line, not a point at 4.8 bpp
    lo, hi = ax.get_ylim()
    assert 25.0 < lo < 28.0 and 31.0 < hi < 34.0  # the means (and the bound's level), not the n = 2 intervals


def test_flat_zero_failure_panels_are_named_not_drawn(captured, tmp_path):
    """side_info drew 12 flat 0 % panels: a panel earns its place by showing a comparison."""
    summary = _summary(["a", "b"])
    flat = summary[summary["scope"] == "payload"].assign(failure_rate=0.0, failure_ci_low=0.0, failure_ci_high=0.1)
    summary = pd.concat([summary[summary["scope"] == "all"], flat])
    plots.failure_rate(summary, "ber", tmp_path)
    (fig,) = captured
    drawn = [ax.get_title() for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert drawn == ["bsc, scope all"]
    assert "no failure at any level (not drawn): bsc/payload" in fig._suptitle.get_text()
