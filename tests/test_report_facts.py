"""Facts a report states (issue #24, "wrong or missing facts"): the visual grid shows what the run decoded,
levels carry the units their corruption declares, paired comparisons have named roles and one sign."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import write_suite

from harness.cli import main
from reports import tables


@pytest.fixture(scope="module")
def cropped_run(tmp_path_factory):
    """A run of the fake codec on centre-cropped images (the pixels the codec got are not the file's)."""
    tmp = tmp_path_factory.mktemp("facts")
    suite = write_suite(
        tmp / "s.toml",
        codecs='[[codecs]]\ncodec = "fake"\nlabel = "fake"\n',
        corruptions='[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = { ber = [0.0, 1e-3] }\n',
        seeds=1,
        limit_images=1,
    )
    text = suite.read_text().replace("limit_images = 1\n", 'limit_images = 1\npreprocessing = "center_crop(size=48)"\n')
    suite.write_text(text)
    out = tmp / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    return out


def _grid(run_dir, **kw):
    from harness.store import ResultStore
    from reports.report import grid_rows

    store = ResultStore(run_dir / "results.sqlite")
    try:
        return grid_rows(run_dir, store, tables.prepare(store.cells_frame()), ("psnr",), 30.0, **kw)
    finally:
        store.close()


def test_grid_shows_the_preprocessed_original_and_every_corrupted_decode(cropped_run):
    """Old code: 'original not loadable' for any preprocessing (the OOD and ci_rdeic grids)."""
    (row,) = _grid(cropped_run)
    titles = [t[0] for t in row["tiles"]]
    assert titles[0] == "original"
    original = row["tiles"][0][1]
    assert original is not None and original.shape == (48, 48, 3), row["tiles"][0][2]
    for title, image, caption in row["tiles"][2:]:
        assert image is not None and caption.startswith("psnr"), (title, caption)


def test_grid_shows_decodes_whose_pixels_match_even_when_the_fingerprint_moved(cropped_run, monkeypatch):
    """A fingerprint also covers library versions and code versions that need not change a decode: the tile is
    verified by the decoded pixels' hash against the run's, not hidden (old code: 'codec code or libraries
    changed since the run' on every tile)."""
    import fake_codecs

    monkeypatch.setattr(fake_codecs.FakeCodec, "library_versions", lambda self: {"libfake": "2.0"})
    (row,) = _grid(cropped_run)
    decoded = row["tiles"][2:]
    assert decoded and all(img is not None for _, img, _ in decoded), [c for _, _, c in decoded]


def test_grid_refuses_a_decode_that_no_longer_matches_the_run(cropped_run, monkeypatch):
    """The other side of the check above: a changed decoder is never shown as the run's output."""
    import fake_codecs

    monkeypatch.setattr(fake_codecs.FakeCodec, "library_versions", lambda self: {"libfake": "2.0"})
    original = fake_codecs.FakeCodec.reconstruct
    monkeypatch.setattr(fake_codecs.FakeCodec, "reconstruct", lambda self, *a, **k: 255 - original(self, *a, **k))
    (row,) = _grid(cropped_run)
    for _, image, caption in row["tiles"][2:]:
        assert image is None and "differ" in caption


# -- units: declared once by each corruption, read by tables, axes and the headline -----------------------------
@pytest.mark.parametrize(
    ("corruption", "params", "unit"),
    [
        ("side_noise", {"sigma": 15.0}, "8-bit code values"),
        ("side_occlusion", {"fraction": 0.3, "fill": "gray"}, "share of side-image pixels covered"),
        ("latent_gaussian", {"sigma": 0.5, "unit": "rel", "clamp_min": None, "clamp_max": None}, "clean latent"),
        ("latent_gaussian", {"sigma": 0.5, "unit": "abs", "clamp_min": None, "clamp_max": None}, "latent units"),
        ("bsc", {"ber": 1e-3}, "flip probability per bit"),
    ],
)
def test_level_units_are_the_ones_the_corruption_declares(corruption, params, unit):
    """Old axes: 'σ (latent units)' for side_noise (8-bit levels) and for latent_gaussian with unit = "rel",
    'fraction of latent elements replaced' for side_occlusion (pixels of the side image)."""
    label = tables.axis_label(corruption, params)
    assert unit in label
    if corruption != "latent_gaussian" or params["unit"] == "rel":
        assert "latent units" not in label


def _summary_of(corruption: str, levels: list[dict]) -> pd.DataFrame:
    rows = []
    for i, p in enumerate(levels):
        rows.append(
            {
                "key": f"k{i}",
                "dataset": "d",
                "preprocessing": "none",
                "image_id": "a",
                "image_sha256": "a",
                "codec_label": "c",
                "corruption": corruption,
                "params": json.dumps(p, sort_keys=True),  # the store's form: keys sorted
                "level": ",".join(f"{k}={v}" for k, v in p.items()),
                "scope": "c_latent",
                "replicate": 0,
                "decode_seed": 0,
                "status": "ok",
                "bpp": 0.1,
                "header_bpp": 0.0,
                "bytes_total": 10,
                "bytes_header": 0,
                "codec": "c",
                "fec": None,
                "expected_flips": 0.0,
                "actual_flips": 0,
                "p_error_free": 1.0,
                "metric.psnr": 30.0,
                "metric.clean_psnr": 30.0,
            }
        )
    return tables.summarise(tables.prepare(pd.DataFrame(rows)), ("psnr",))


def test_axes_status_bars_and_headline_name_the_plotted_parameter_with_its_unit(tmp_path, monkeypatch):
    """An OOD run with one latent level: the status bar was labelled 'clamp_max=None' (the first key of the
    sorted parameters) instead of 'sigma=0.1'; the x axis said 'σ (latent units)' for a relative sigma."""
    from reports import plots, terminal

    level = {"sigma": 0.1, "unit": "rel", "clamp_min": None, "clamp_max": None}
    summary = _summary_of("latent_gaussian", [{**level, "sigma": 0.0}, level])
    one = summary[summary["level_value"] == 0.1]
    assert plots._short_labels(one) == ["sigma=0.1"]
    xlabels: list[str] = []
    original = plots._finish_x
    monkeypatch.setattr(
        plots, "_finish_x", lambda ax, log, z, name, lv: xlabels.append(name) or original(ax, log, z, name, lv)
    )
    plots.failure_rate(summary, "sigma", tmp_path)
    plots.quality(summary, ("psnr",), "sigma", tmp_path)
    assert xlabels and all("clean latent's per-channel std" in x and "latent units" not in x for x in xlabels)
    ((title, _),) = terminal.headline_tables(summary)
    assert "sigma in × the clean latent's per-channel std" in title
    assert any("latent_gaussian sigma in × the clean latent" in n for n in tables.summary_notes(summary, ("psnr",)))


# -- paired comparisons: named roles, one sign --------------------------------------------------------------------
def _pair_cells(follower: str, partner: str, follower_options: dict, gain: float) -> pd.DataFrame:
    """Cells of two configs on the same streams; ``follower`` declares paired_with ``partner``. The adapter /
    treatment side is ``gain`` dB better on every image (known by construction: the oracle)."""
    rows = []
    for label, options in ((partner, {}), (follower, follower_options)):
        treated = "adapter" in options if follower_options.get("adapter") else label == partner
        for i, psnr in enumerate([30.0, 31.0, 29.5, 32.0]):
            for ber in (0.0, 1e-3):
                value = psnr - (3.0 if ber else 0.0) + (gain if treated else 0.0) + 0.01 * i * treated
                rows.append(
                    {
                        "key": f"{label}{i}{ber}",
                        "dataset": "astro",
                        "image_sha256": f"img{i}",
                        "image_id": f"img{i}",
                        "codec_label": label,
                        "codec_name": "rdeic-tiny@low",
                        "codec_fingerprint": f"fp-{label}",
                        "codec_config": json.dumps({"steps": 2}),
                        "codec_options": json.dumps(options),
                        "channel": json.dumps({"paired_with": f"fp-{partner}"} if label == follower else {}),
                        "corruption": "bsc",
                        "params": json.dumps({"ber": ber}),
                        "level": f"ber={ber:g}",
                        "scope": "all",
                        "replicate": 0,
                        "decode_seed": 0,
                        "status": "ok",
                        "bpp": 0.2,
                        "bytes_total": 100,
                        "metric.psnr": value,
                    }
                )
    return pd.DataFrame(rows)


def test_an_ood_adapter_following_its_base_is_the_treatment_and_delta_is_treatment_minus_reference():
    """The adapter declares paired_with = base (it reuses the base's draws). Old code took the follower as the
    base: psnr_before held the adapter's value and Δ on astro was −0.12 in paired.csv, +0.12 in
    ood_before_after.md."""
    from reports import ood, paired

    cells = _pair_cells("base+astro", "base", {"adapter": "runs/x/adapters/astro/adapter.safetensors"}, 0.12)
    groups = [{"dataset": "astro", "base": "base", "adapter": "base+astro", "in_distribution": []}]
    for found in (paired.comparisons(cells), paired.comparisons(cells, groups)):
        (c,) = found
        assert (c.reference, c.treatment) == ("base", "base+astro") and "adapter" in c.differs
    (c,) = paired.comparisons(cells, groups)
    table = paired.paired_table(cells, c, ("psnr",))
    row = table[table["level"] == "ber=0.001"].iloc[0]
    base = cells[(cells["codec_label"] == "base") & (cells["level"] == "ber=0.001")]["metric.psnr"].mean()
    assert row["psnr_reference"] == pytest.approx(base)
    assert row["psnr_diff"] == pytest.approx(0.12 + 0.015) and row["psnr_diff_ci_low"] > 0
    assert not any(col.startswith(("ood_", "base", "adapter")) or col.endswith(("_before", "_after")) for col in table)
    # the fine-tune-then-evaluate table of the same cells: the same sign and value
    before_after = ood.before_after(cells, groups, ("psnr",))
    assert before_after.loc[before_after["level"] == "ber=0.001", "psnr_diff"].iloc[0] == pytest.approx(
        row["psnr_diff"]
    )
    ((heading, human),) = paired.human_tables(table)
    assert heading.startswith("base+astro vs base (treatment vs reference") and "Δ = base+astro − base" in heading
    assert human["Δpsnr [95% CI]"].iloc[-1].startswith("+0.135")


def test_an_ablation_following_the_full_model_is_the_reference():
    """ELIC-only (paired_with = the enhanced decoder) and DICM without the side view: the follower is the
    reference, Δ = enhanced − ablation; what differs is read from the configs."""
    from reports import paired

    cells = _pair_cells("elic-only", "ldm", {}, 0.5)
    cells.loc[cells["codec_label"] == "elic-only", "codec_config"] = json.dumps({"steps": 2, "prior": "none"})
    cells.loc[cells["codec_label"] == "ldm", "codec_config"] = json.dumps({"steps": 2, "prior": "dfam"})
    (c,) = paired.comparisons(cells)
    assert (c.reference, c.treatment) == ("elic-only", "ldm") and c.differs == "prior: none → dfam"
    table = paired.paired_table(cells, c, ("psnr",))
    assert (table["psnr_diff"] > 0.49).all()


# -- which model made the numbers ------------------------------------------------------------------------------
def test_every_shareable_output_names_the_codec_as_built(tmp_path):
    """A label that does not name its model (as a suite's ``rdeic`` runs rdeic-tiny@low): summary.md/.csv,
    report.md/.html, the CompressAI JSON and the figures' names carry the registry name and the weights hash
    (old code: only the label, so a tiny model's numbers could be pasted as RDEIC's)."""
    import hashlib

    weights = tmp_path / "w.bin"
    weights.write_bytes(b"tiny weights")
    prefix = hashlib.sha256(b"tiny weights").hexdigest()[:8]  # the oracle: the file itself
    suite = write_suite(
        tmp_path / "s.toml",
        codecs=f'[[codecs]]\ncodec = "fake_weights"\nlabel = "model"\noptions = {{ weights = "{weights}" }}\n',
        corruptions='[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0, 1e-3] }\n',
        seeds=1,
        limit_images=1,
    )
    out = tmp_path / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out), "--no-grid"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert all("fake_weights" in b and prefix in b for b in summary["codec_built"])
    for text in (
        (out / "summary.md").read_text(),
        (out / "report.md").read_text(),
        (out / "report.html").read_text(),
    ):
        assert "fake\\_weights" in text or "fake_weights" in text
        assert prefix in text
    (doc,) = [json.loads(p.read_text()) for p in (out / "compressai").glob("**/*.json")]
    assert "fake_weights" in doc["name"] and prefix in doc["name"] and prefix in doc["description"]
    from harness.store import ResultStore

    store = ResultStore(out / "results.sqlite")
    try:
        names = tables.display_names(store.cells_frame())
    finally:
        store.close()
    assert names == {"model": f"model [fake_weights, weights {prefix}]"}


# -- BD numbers only where the curves overlap enough (#23) --------------------------------------------------------
def _rd(points: dict[str, list[tuple[float, float]]]) -> pd.DataFrame:
    rows = []
    for curve, pts in points.items():
        for i, (bpp, psnr) in enumerate(pts):
            rows.append({"dataset": "d", "curve": curve, "codec": f"{curve}@{i}", "bpp": bpp, "psnr": psnr})
    return pd.DataFrame(rows)


def test_bd_numbers_from_curves_overlapping_on_a_sliver_are_not_given():
    """Old code printed a BD-rate from curves whose PSNR ranges overlap on 1 % (0.1 of 10 dB), an ordinary
    number with the package's warning silenced."""
    rd = _rd({"a": [(0.1, 20.0), (0.2, 25.0), (0.4, 30.0)], "b": [(0.5, 29.9), (1.0, 35.0), (2.0, 40.0)]})
    bd, _ = tables.bd_table(rd, ("psnr",))
    row = bd.iloc[0]
    assert row["quality_overlap"] == pytest.approx(0.1 / 10.1)
    assert math.isnan(row["bd_rate_pct"]) and "overlap on 1%" in row["note"] and "below the 50%" in row["note"]
    assert math.isnan(row["bd_quality"]) and "bpp ranges do not overlap" in row["note"]
    # the same curve at half the rate: full overlap, the known answer -50 %
    rd = _rd({"a": [(0.1, 20.0), (0.2, 25.0), (0.4, 30.0)], "b": [(0.05, 20.0), (0.1, 25.0), (0.2, 30.0)]})
    row = tables.bd_table(rd, ("psnr",))[0].iloc[0]
    assert row["quality_overlap"] == 1.0 and row["bd_rate_pct"] == pytest.approx(-50.0, abs=0.5)


def test_provenance_leads_with_what_a_reader_needs_and_folds_the_rest():
    """Old table: 150 rows in store order, 27 clean_parse_cpu_s.<sha256> float rows among the facts."""
    from reports.report import provenance_rows, split_provenance

    prov = {
        "clean_parse_cpu_s": json.dumps({f"{i:064x}": 0.01 * i for i in range(27)}),
        "argv": json.dumps(["evaluate.py", "--suite", "x"]),
        "git_commit": "abc123",
        "suite_name": "x",
        "packages": json.dumps({"torch": "2.4", "numpy": "2.0"}),
        "datasets": json.dumps([{"name": "samples", "version": "1"}]),
    }
    lead, rest = split_provenance(provenance_rows(prov)[0])
    assert list(lead["key"][:2]) == ["suite_name", "git_commit"]
    assert {"packages.torch", "datasets[0].name"} <= set(lead["key"])
    assert not lead["key"].str.startswith(("clean_parse_cpu_s", "argv")).any()
    assert (rest["key"].str.startswith("clean_parse_cpu_s")).sum() == 27
