"""Issue #16, item 9: figures (axis limits, units, one colour per codec, legends outside, RD axis) and the
OOD report parts (no empty loss panel, levels by value, best step 0 said plainly)."""

from __future__ import annotations

import json
import math

import matplotlib.colors as mcolors
import pandas as pd
import pytest

from reports import ood, plots, tables


def _cells() -> pd.DataFrame:
    """Codecs a, b, c; scope 'payload' has no codec a (so a per-panel colour cycle would shift b's colour).
    At ber=1e-3 codec b has n = 2 ok decodes far apart (a huge t band)."""
    rows = []
    spec = {"all": ("a", "b", "c"), "payload": ("b", "c")}
    for scope, codecs in spec.items():
        for codec in codecs:
            for ber in (0.0, 1e-5, 1e-4, 1e-3, 1e-2):
                for img in range(6):
                    fail = ber == 1e-3 and codec == "b" and img >= 2
                    psnr = 30.0 - 1000 * ber
                    if ber == 1e-3 and codec == "b":
                        psnr = (10.0, 30.0)[img % 2]
                    rows.append(
                        {
                            "dataset": "d",
                            "preprocessing": "none",
                            "image_id": f"i{img}",
                            "image_sha256": f"i{img}",
                            "codec": codec,
                            "codec_label": codec,
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
                            "expected_flips": 1.0,
                            "actual_flips": 1,
                            "p_error_free": 0.5,
                            "fec": None,
                            "status": "crash" if fail else "ok",
                            "metric.psnr": math.nan if fail else psnr,
                            "metric.clean_psnr": math.nan if fail else 30.0,
                        }
                    )
    return pd.DataFrame(rows)


@pytest.fixture
def figures(monkeypatch):
    """Figures as drawn (plots.save is replaced: nothing written, the figure kept)."""
    kept = {}

    def keep(fig, out_dir, name):
        kept[name] = fig
        return []

    monkeypatch.setattr(plots, "save", keep)
    return kept


def _line_colours(fig) -> dict[str, set[str]]:
    colours: dict[str, set[str]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                colours.setdefault(line.get_label(), set()).add(mcolors.to_hex(line.get_color()))
    return colours


def test_quality_axis_is_clipped_to_the_data_and_small_n_is_labelled(figures, tmp_path):
    summary = tables.summarise(tables.prepare(_cells()), ("psnr",))
    row = summary[(summary["codec"] == "b") & (summary["level"] == "ber=0.001") & (summary["scope"] == "all")]
    assert row["psnr_n"].iloc[0] == 2 and row["psnr_ci_low"].iloc[0] < -40  # the band that stretched the axis
    plots.quality(summary, ("psnr",), "ber", tmp_path)
    fig = figures["quality"]
    for ax in fig.axes:
        low, high = ax.get_ylim()
        assert low > 5 and high < 40, (low, high)  # old code: about -60 .. 100
        assert "dB" in ax.get_ylabel()
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "n=2" in texts
    assert fig.legends and all(ax.get_legend() is None for ax in fig.axes)  # one legend, outside the panels


def test_one_colour_per_codec_across_panels_and_figures(figures, tmp_path):
    summary = tables.summarise(tables.prepare(_cells()), ("psnr",))
    colours = plots.codec_colours(summary["codec"])
    plots.failure_rate(summary, "ber", tmp_path, colours)
    plots.quality(summary, ("psnr",), "ber", tmp_path, colours)
    seen = [_line_colours(figures["failure_rate"]), _line_colours(figures["quality"])]
    for codec in ("a", "b", "c"):
        found = set().union(*(s.get(codec, set()) for s in seen))
        assert found == {colours[codec]}, (codec, found)  # old code: b changes colour in the second panel
    ax = figures["failure_rate"].axes[0]
    assert "per bit" in ax.get_xlabel() and "%" in ax.get_ylabel()
    assert all(label.get_rotation() == 45 for label in ax.get_xticklabels())  # 5 ticks: rotated, no overlap


def test_rd_axis_units_log_scale_and_lossless_points(figures, tmp_path):
    rd = pd.DataFrame(
        {
            "dataset": "d",
            "curve": ["a", "a", "a", "b", "b"],
            "codec": ["a@1", "a@2", "a@3", "b@1", "b@2"],
            "images": 2,
            "bpp": [0.05, 0.5, 4.0, 0.1, 1.0],
            "psnr": [25.0, 30.0, math.inf, 26.0, 31.0],
        }
    )
    rd["psnr_ci_low"] = rd["psnr"] - 0.5
    rd["psnr_ci_high"] = rd["psnr"] + 0.5
    plots.rd_curves(rd, ("psnr",), tmp_path)
    ax = figures["rd"].axes[0]
    assert ax.get_xscale() == "log" and "bpp" in ax.get_xlabel() and "(dB)" in ax.get_ylabel()
    assert "lossless (not drawn): a@3" in ax.get_title()
    assert ax.get_ylim()[1] < 40


# -- OOD ---------------------------------------------------------------------------------------------------------------
def test_ood_levels_are_ordered_by_value_and_best_step_zero_is_said_plainly():
    table = pd.DataFrame(
        {
            "ood_dataset": "astro",
            "evaluated": "astro",
            "role": "OOD test",
            "corruption": "bsc",
            "scope": "all",
            "level": ["ber=0.001", "ber=0.0001", "ber=0"],
            "images": 2,
            "pairs_both_ok": 2,
            "failure_rate_before": 0.0,
            "failure_rate_after": 0.0,
            "bpp_before": 0.1,
            "bpp_after": 0.1,
        }
    )
    human = ood.human_table(table, ())
    assert list(human["level"]) == ["ber=0", "ber=0.0001", "ber=0.001"]  # old code: CSV order
    text = ood.best_step_text({"best": {"step": 0, "value": 19.5}})
    assert text.startswith("step 0 = base") and "did not improve validation" in text
    assert ood.best_step_text({"best": {"step": 50, "value": 20.1}}) == "step 50 (20.1)"
    sidecar = {"best": {"step": 0, "value": 19.5}, "mode": "control", "frozen": {"sha256_before": 1, "sha256_after": 1}}
    adapters = ood.adapters_table([{"dataset": "astro", "sidecar": sidecar}])
    assert adapters.loc[0, "best validation step"].startswith("step 0 = base")


def test_ood_training_curves_without_a_loss_log_have_no_empty_panel(tmp_path):
    train = tmp_path / "astro" / "train"
    train.mkdir(parents=True)
    pd.DataFrame({"step": [0, 25, 50], "psnr": [19.5, 19.4, 19.3]}).to_csv(train / "validation.csv", index=False)
    groups = [{"dataset": "astro", "adapter_path": str(tmp_path / "astro" / "adapter.safetensors")}]
    groups[0]["sidecar"] = {"best": {"step": 0, "value": 19.5}}
    import matplotlib.pyplot as plt

    drawn = {}
    real_close = plt.close

    def close(fig=None):
        if fig is not None and hasattr(fig, "axes"):
            drawn["fig"] = fig
        return real_close(fig)

    plt.close = close
    try:
        paths = ood.training_curves(groups, tmp_path, tmp_path / "report")
    finally:
        plt.close = real_close
    assert paths and paths[0].is_file()
    fig = drawn["fig"]
    assert len(fig.axes) == 1  # old code: an empty "adapter training loss" panel beside it
    assert fig.axes[0].get_ylabel() == "validation psnr (dB)"
    label = fig.get_supxlabel()
    assert "no training loss logged" in label and "step 0 = base" in label


def test_bit_errors_with_the_true_and_a_missing_side_view_are_two_lines_and_two_status_panels(tmp_path):
    """Issue #19: a [[side_info]] entry crossed with BSC gives, per BER, cells decoded with the true side view and
    cells decoded without it. Pooled into one line they would draw two points per level (or average them)."""
    cells = _cells()
    cells = cells[cells["codec"] == "c"]
    true = cells.assign(side=json.dumps({"kind": "stereo"}))
    missing = cells.assign(
        side=json.dumps({"kind": "stereo", "degradation": {"name": "side_missing", "params": {"probability": 1.0}}}),
        **{"metric.psnr": cells["metric.psnr"] - 3.0},
    )
    cells = pd.concat([true, missing], ignore_index=True)
    summary = tables.summarise(tables.prepare(cells), ("psnr",))
    assert summary["side"].nunique() == 2, summary["side"].unique()
    panel = summary[summary["scope"] == "all"]
    lines = plots._lines(panel, plots._variant_keys(summary))
    assert len(lines) == 2 and all(len(rows) == rows["level_value"].nunique() for _, _, rows in lines)
    assert {variant.split(": ")[0] for _, variant, _ in lines} == {"side"}
    assert len(plots.status_composition(summary, tmp_path)) >= 1
    # the same kind in the tables and the regression baseline: the side view is a key wherever FEC is one
    from reports import regress

    assert len(tables.threshold_table(summary)) == 2 * summary["scope"].nunique()
    assert "side view" in tables.human_table(summary, ("psnr",)).columns
    view = regress.regression_view(summary, ("psnr",))
    keys = [k for k in [*regress.KEYS, *regress.VARIANT_KEYS] if k in view]
    assert "side" in keys and not view.duplicated(subset=keys).any()
