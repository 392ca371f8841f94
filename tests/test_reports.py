"""Tables (conditional quality, intervals, thresholds, RD/BD-rate), plots and the HTML/Markdown report."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import HANG_GUARD_S, write_suite

from harness.cli import main
from reports import regress, tables
from reports.stats import wilson_interval


def _cells(rows: list[dict]) -> pd.DataFrame:
    """A minimal cells frame as ResultStore.cells_frame() returns it."""
    base = {
        "dataset": "d",
        "image_id": "a.png",
        "codec": "c",
        "codec_label": "c@1bpp",
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
        row["params"] = json.dumps({"ber": row.pop("ber")})
        row["level"] = f"ber={json.loads(row['params'])['ber']:g}"
        row.setdefault("image_sha256", row["image_id"])
        out.append(row)
    return pd.DataFrame(out)


def test_quality_is_conditional_on_ok_and_failures_have_wilson_intervals():
    cells = _cells(
        [
            {"ber": 1e-3, "image_id": "a", "status": "ok", "metric.psnr": 30.0, "metric.clean_psnr": 30.5}
            | {"metric.psnr_vs_clean": 40.0},  # 9.5 dB above clean's 30.5: within 1 dB of the clean decode
            {"ber": 1e-3, "image_id": "b", "status": "ok", "metric.psnr": 20.0, "metric.clean_psnr": 32.0}
            | {"metric.psnr_vs_clean": 21.0},
            {"ber": 1e-3, "image_id": "c", "status": "crash", "metric.psnr": np.nan, "metric.clean_psnr": np.nan},
            {"ber": 1e-3, "image_id": "d", "status": "exception", "metric.psnr": np.nan, "metric.clean_psnr": np.nan},
        ]
    )
    s = tables.summarise(tables.prepare(cells), ("psnr",)).iloc[0]
    assert (s["cells"], s["images"], s["ok"], s["crash"], s["exception"], s["n_ok"]) == (4, 4, 2, 1, 1, 2)
    assert s["failure_rate"] == 0.5
    assert (s["failure_ci_low"], s["failure_ci_high"]) == pytest.approx(wilson_interval(2, 4))
    assert s["psnr"] == 25.0 and s["psnr_n"] == 2  # failures are not averaged in
    assert s["psnr_drop"] == pytest.approx((0.5 + 12.0) / 2)
    assert s["within_1db_of_clean"] == 0.5 and s["drop_within_1db"] == 0.5
    assert s["bytes_total"] == 100 and s["header_bpp"] == 0.1


def test_metric_without_values_is_reported_as_not_computed():
    cells = _cells([{"ber": 0.0, "status": "ok", "metric.psnr": 30.0, "metric.clean_psnr": 30.0}])
    cells["metric.lpips"] = np.nan  # weights were missing
    table = tables.summarise(tables.prepare(cells), ("psnr", "lpips"))
    assert table.loc[0, "lpips_n"] == 0 and math.isnan(table.loc[0, "lpips"])
    assert tables.computed_metrics(table, ("psnr", "lpips")) == ("psnr",)
    assert "lpips" in tables.not_computed_note(table, ("psnr", "lpips"))
    assert "lpips (ok)" not in tables.to_markdown(table, ("psnr", "lpips"))


def _level_rows(ber: float, n: int, failures: int, drop: float) -> list[dict]:
    rows = []
    for i in range(n):
        ok = i >= failures
        rows.append(
            {
                "ber": ber,
                "image_id": f"i{i}",
                "status": "ok" if ok else "exception",
                "metric.psnr": 30.0 - drop if ok else np.nan,
                "metric.clean_psnr": 30.0 if ok else np.nan,
            }
        )
    return rows


def test_threshold_is_the_last_level_before_the_first_failing_one():
    cells = _cells(
        _level_rows(0.0, 200, 0, 0.0)
        + _level_rows(1e-5, 200, 1, 0.5)  # 0.5% failures, 0.5 dB: passes
        + _level_rows(1e-4, 200, 1, 1.5)  # quality drop too large: stops here
        + _level_rows(1e-3, 200, 0, 0.0)  # passes again, but after a failing level: not counted
    )
    summary = tables.summarise(tables.prepare(cells), ("psnr",))
    t = tables.threshold_table(summary).iloc[0]
    assert t["threshold_level"] == "ber=1e-05" and t["threshold_value"] == 1e-5
    assert t["first_failing_level"] == "ber=0.0001" and "psnr drop 1.50" in t["why"]
    assert t["failure_ci_high"] == pytest.approx(wilson_interval(1, 200)[1])
    many_failures = _cells(_level_rows(0.0, 100, 2, 0.0))
    t2 = tables.threshold_table(tables.summarise(tables.prepare(many_failures), ("psnr",))).iloc[0]
    assert t2["threshold_level"].startswith("none") and "failure 2.0%" in t2["why"]


def test_rd_summary_and_bd_rate():
    rows = []
    for label, bpp, q in [("a@1", 0.5, 28.0), ("a@2", 1.0, 31.0), ("a@3", 2.0, 34.0), ("a@4", 4.0, 37.0)]:
        for img in ("x", "y"):
            rows.append(
                {
                    "ber": 0.0,
                    "codec_label": label,
                    "image_id": img,
                    "bpp": bpp,
                    "status": "ok",
                    "metric.psnr": q,
                    "metric.clean_psnr": q,
                }
            )
            # the same quality at half the rate: BD-rate of b against a is -50%
            rows.append({**rows[-1], "codec_label": "b@" + label[2:], "bpp": bpp / 2})
    rd = tables.rd_summary(_cells(rows), ("psnr",))
    assert set(rd["curve"]) == {"a", "b"} and (rd["images"] == 2).all()
    bd = tables.bd_rates(rd, "psnr")
    assert len(bd) == 1 and bd.loc[0, "anchor"] == "a" and bd.loc[0, "test"] == "b"
    assert bd.loc[0, "bd_rate_pct"] == pytest.approx(-50.0, abs=0.5)
    assert bd.loc[0, "bd_quality"] > 0 and bd.loc[0, "bd_quality_unit"] == "dB"  # BD-PSNR beside BD-rate
    one_point, notes = tables.bd_table(rd[rd["codec"].isin(["a@1", "a@2", "b@1"])], ("psnr",))
    assert one_point.empty and len(notes) == 1 and "two usable rate points" in notes[0] and "b (d" in notes[0]


def test_level_value_and_axis():
    assert tables.level_value('{"ber": 0.001}') == 0.001 and tables.level_axis({"ber": 0.001}) == "ber"
    assert tables.level_value({"sigma_rel": 0.5, "hook": "y"}) == 0.5
    assert math.isnan(tables.level_value({"hook": "y"}))


def test_write_summary_writes_parquet_and_per_image(tmp_path):
    pytest.importorskip("pyarrow")
    cells = _cells(_level_rows(0.0, 3, 0, 0.0))
    tables.write_summary(tmp_path, cells, ("psnr",), "t")
    assert pd.read_parquet(tmp_path / "summary.parquet").loc[0, "cells"] == 3
    assert len(pd.read_csv(tmp_path / "per_image.csv")) == 3


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A real run whose codec label needs HTML escaping; the report is written by the suite run itself."""
    tmp = tmp_path_factory.mktemp("rep")
    label = 'j2k <b>&"x"@0.5bpp'
    suite = write_suite(
        tmp / "s.toml",
        codecs=f"[[codecs]]\ncodec = \"jpeg2000\"\nlabel = '{label}'\noptions = {{ target_bpp = 0.5 }}\n",
        corruptions='[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0, 1e-4, 1e-3] }\n',
        seeds=2,
        limit_images=2,
    )
    out = tmp / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    return out, label


def test_suite_run_writes_the_report(small_run):
    out, label = small_run
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert label not in page and "j2k &lt;b&gt;&amp;&quot;x&quot;@0.5bpp" in page  # escaped, never raw
    assert page.count('src="data:image/png;base64,') >= 4  # self-contained: figures embedded
    assert "<h2>Provenance</h2>" in page and "openjpeg" in page.lower()
    for name in ("failure_rate", "quality", "status", "rd", "grid"):
        assert (out / "report" / f"{name}.png").stat().st_size > 1000
        assert (out / "report" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    md = (out / "report.md").read_text()
    assert "## Summary" in md and "![grid](report/grid.png)" in md
    for name in ("summary", "per_image", "rd", "bd_rate", "threshold"):
        assert (out / "report" / f"{name}.csv").is_file()


def test_report_leads_with_headline_and_figures_then_tables_and_readable_provenance(small_run):
    import re

    out, _ = small_run
    page = (out / "report.html").read_text()
    heads = ["<h2>Headline", "<h2>Figures</h2>", "<h2>Summary</h2>", "<h2>Threshold", "<h2>Provenance</h2>"]
    order = [page.index(h) for h in heads]
    assert order == sorted(order)  # old code: no headline, figures after every table
    assert page.index("<img ") < page.index("<h2>Summary</h2>")
    assert page[page.index("<h2>Summary</h2>") :].startswith('<h2>Summary</h2><div class="scroll"><table')
    prov = page[page.index("<h2>Provenance</h2>") :].split("</table>")[0]
    values = re.findall(r"<td>(.*?)</td>", prov, re.S)
    assert values and not any(v.lstrip().startswith(("{", "[{", "[&quot;")) for v in values)  # no JSON blobs
    assert "packages.numpy" in prov and "datasets[0].name" in prov and "datasets[0].images[0].sha256" in prov
    md = (out / "report.md").read_text()
    assert md.index("## Headline") < md.index("## Figure: failure_rate") < md.index("## Summary")
    assert "<b>" not in md and 'j2k &lt;b&gt;&amp;"x"@0.5bpp' in md  # escaped in Markdown as in HTML
    files = list((out / "compressai").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["results"]["bpp"]


def test_grid_redecodes_exactly_what_the_run_decoded(small_run):
    """Every re-decoded cell reproduces the run's corrupted stream hash and the decoded pixels' hash."""
    from harness.store import ResultStore
    from reports.redecode import Redecoder

    out, _ = small_run
    store = ResultStore(out / "results.sqlite")
    try:
        cells = store.cells_frame()
        with Redecoder(out, store) as rd:
            results = [(row, rd.decode(row)) for row in cells.to_dict("records")]
    finally:
        store.close()
    assert any(row["actual_flips"] > 0 for row, _ in results)
    for row, got in results:
        if row["status"] == "ok":
            assert got.note == "ok" and got.image is not None, got.note
            assert got.image.shape == (row["height"], row["width"], 3)
        else:
            assert got.image is None and "reproduced" not in got.note


def test_report_command(small_run, capsys):
    out, _ = small_run
    (out / "report.html").unlink()
    assert main(["report", str(out), "--no-grid"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert (out / "report.html").read_text().count("<img ") == 4  # no grid
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").read_text().count("<img ") == 5
    assert main(["report", str(out / "nothing")]) == 2


def test_report_command_adds_labelled_failure_imputed_columns_only_when_asked(small_run, capsys):
    out, _ = small_run
    assert (
        main(["report", str(out), "--no-grid", "--impute", "worst_ok", "--impute", "psnr=0", "--impute", "grey"]) == 0
    )
    page = (out / "report.html").read_text()
    assert "psnr incl. failures (failed = mid-grey image)" in page
    assert "psnr incl. failures (failed = worst ok decode of the image)" in page
    assert "psnr incl. failures (failed = 0)" in page and "not the default summary" in page
    assert main(["report", str(out), "--impute", "zero"]) == 2
    assert "unknown imputation policy" in capsys.readouterr().err
    assert main(["report", str(out)]) == 0  # back to the default report for the browser tests
    assert "psnr incl. failures" not in (out / "report.html").read_text()


def test_summary_rows_are_per_dataset_and_preprocessing(tmp_path):
    rows = []
    for dataset, prep, psnr in [("d1", "none", 30.0), ("d2", "none", 20.0), ("d2", "pad64", 10.0)]:
        for r in _level_rows(0.0, 3, 0, 0.0) + _level_rows(1e-3, 3, 1, 2.0):
            rows.append({**r, "dataset": dataset, "preprocessing": prep, "image_id": f"{dataset}{r['image_id']}"})
            if r["status"] == "ok":
                rows[-1]["metric.psnr"] = psnr - (2.0 if r["ber"] else 0.0)
                rows[-1]["metric.clean_psnr"] = psnr
    cells = tables.prepare(_cells(rows))
    summary = tables.summarise(cells, ("psnr",))
    assert len(summary) == 6  # 3 (dataset, preprocessing) pairs x 2 levels, never pooled
    clean = summary[summary["level_value"] == 0].set_index(["dataset", "preprocessing"])["psnr"]
    assert clean.to_dict() == {("d1", "none"): 30.0, ("d2", "none"): 20.0, ("d2", "pad64"): 10.0}
    human = tables.human_table(summary, ("psnr",))
    assert list(human.columns[:3]) == ["dataset", "preprocessing", "codec"]
    assert len(tables.threshold_table(summary)) == 3
    view = regress.regression_view(summary, ("psnr",))
    assert list(view.columns[:3]) == ["dataset", "preprocessing", "codec"] and len(view) == 6
    rd = tables.rd_summary(cells, ("psnr",))
    assert len(rd) == 3 and {"dataset", "preprocessing"} <= set(rd.columns)
    from reports import plots

    for figure in (plots.failure_rate(summary, "ber", tmp_path), plots.status_composition(summary, tmp_path)):
        assert figure[0].stat().st_size > 1000
    assert plots.rd_curves(rd, ("psnr",), tmp_path)[0].is_file()


# -- a real browser --------------------------------------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Injected into a copy of the report: records script errors and console.error calls, and how many images
#: decoded (naturalWidth > 0), as attributes of <body> that --dump-dom prints.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error',
  e => window.__errors.push(String(e.message || ('failed to load ' + e.target.src))), true);
const _ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); _ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
  document.body.setAttribute('data-errors', JSON.stringify(window.__errors));
});
</script>"""


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium; installed with apt-get when missing (root), else the test is skipped saying why."""
    import os
    import shutil
    import subprocess

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("no chromium, and it cannot be installed here (needs apt-get as root: apt-get install chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "install", "-y", "chromium"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "chromium"],
    ):
        try:
            subprocess.run(cmd, env=env, capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            break
        if (found := shutil.which("chromium")) is not None:
            return found
    pytest.skip("chromium is not installed and `apt-get install -y chromium` did not install it")


def _browse(chromium: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    import subprocess

    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_GUARD_S)


def _probe(chromium: str, page: Path, tmp_path) -> tuple[str, list[str], str]:
    import html as html_lib
    import re

    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("<head>", "<head>" + PROBE, 1))
    run = _browse(
        chromium,
        tmp_path,
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    )
    images = re.search(r'data-images="([^"]*)"', run.stdout)
    errors = re.search(r'data-errors="([^"]*)"', run.stdout)
    assert images and errors, f"the probe did not run: {run.stderr[-2000:]}"
    console = [ln for ln in run.stderr.splitlines() if ":CONSOLE" in ln]
    return images.group(1), json.loads(html_lib.unescape(errors.group(1))), "\n".join(console)


def test_report_renders_in_chromium(small_run, chromium, tmp_path):
    out, _ = small_run
    images, errors, console = _probe(chromium, out / "report.html", tmp_path)
    loaded, total = map(int, images.split("/"))
    assert total >= 5 and loaded == total, images  # every figure decodes
    assert errors == [] and console == "", (errors, console)
    shot = out / "report" / "screenshot.png"
    _browse(
        chromium,
        tmp_path,
        "--hide-scrollbars",
        "--window-size=1400,2400",
        f"--screenshot={shot}",
        (out / "report.html").as_uri(),
    )
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (2400, 1400) and pixels.std() > 10


def test_browser_probe_catches_broken_images_and_errors(small_run, chromium, tmp_path):
    """The check above can fail: a broken image and a script error are seen."""
    out, _ = small_run
    bad = tmp_path / "bad.html"
    bad.write_text(
        (out / "report.html")
        .read_text()
        .replace("<body>", '<body><img src="data:image/png;base64,AAAA"><script>noSuchFunction()</script>', 1)
    )
    images, errors, console = _probe(chromium, bad, tmp_path)
    loaded, total = map(int, images.split("/"))
    assert loaded == total - 1
    assert any("noSuchFunction" in e for e in errors) and "noSuchFunction" in console


def test_grid_keeps_to_its_time_budget(small_run):
    from harness.store import ResultStore
    from reports.report import grid_rows

    out, _ = small_run
    store = ResultStore(out / "results.sqlite")
    try:
        cells = tables.prepare(store.cells_frame())
        rows = grid_rows(out, store, cells, ("psnr",), 30.0, budget_s=0.0)
    finally:
        store.close()
    decoded = [t for r in rows for t in r["tiles"][2:]]
    assert decoded and all(img is None and "budget" in caption for _, img, caption in decoded)


def test_grid_budget_counts_recorded_decode_seconds_not_the_clock(small_run, monkeypatch):
    """#23: the grid's content must not depend on the load while the report is written. A clock that jumps an
    hour per reading (a report written on a starved machine) still re-decodes every tile whose recorded decode
    seconds fit the budget; the old wall-clock budget left them all out."""
    import itertools
    import time

    from harness.store import ResultStore
    from reports.report import grid_rows

    ticks = itertools.count(0.0, 3600.0)
    monkeypatch.setattr(time, "perf_counter", lambda: next(ticks))
    out, _ = small_run
    store = ResultStore(out / "results.sqlite")
    try:
        cells = tables.prepare(store.cells_frame())
        rows = grid_rows(out, store, cells, ("psnr",), 30.0)
    finally:
        store.close()
    decoded = [t for r in rows for t in r["tiles"][2:]]
    assert decoded and not [caption for _, _, caption in decoded if "budget" in caption]


def test_levels_with_other_varying_parameters_form_separate_series():
    params = [{"ber": b, "mean_burst_bits": m, "burst_density": 1.0} for b in (0.0, 1e-3) for m in (8, 64)]
    assert tables.varying_label(params) == ["mean_burst_bits=8", "mean_burst_bits=64"] * 2
    assert tables.varying_label([{"ber": 0.0}, {"ber": 1e-3}]) == ["", ""]
    rows = []
    for p in params:
        rows += [{"ber": p["ber"], "status": "ok", "metric.psnr": 30.0, "metric.clean_psnr": 30.0}]
    cells = _cells(rows)
    cells["params"] = [json.dumps(p) for p in params]
    cells["level"] = [f"ber={p['ber']:g},mean_burst_bits={p['mean_burst_bits']}" for p in params]
    t = tables.threshold_table(tables.summarise(tables.prepare(cells), ("psnr",)))
    assert len(t) == 2 and set(t["threshold_value"]) == {1e-3}  # one walk per burst length
