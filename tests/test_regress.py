"""CI regression: the deterministic `ci` suite against reports/baselines/ci.csv, and the comparison itself."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from conftest import HANG_GUARD_S, ROOT

from harness.cli import main
from reports import regress

BASELINE = ROOT / "reports" / "baselines" / "ci.csv"


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ci") / "run"
    assert main(["--suite", "ci", "--out", str(out), "--no-progress", "--workers", "2"]) == 0
    return out


def _libraries(run_dir) -> dict[str, str]:
    from harness.store import ResultStore

    store = ResultStore(run_dir / "results.sqlite")
    try:
        return regress.libraries_of(store.provenance())
    finally:
        store.close()


def _check_against_baseline(run_dir, capsys) -> None:
    libraries = _libraries(run_dir)
    chosen = regress.select_baseline(BASELINE, libraries)
    if not regress.same_libraries(chosen, libraries):
        version = libraries.get("openjpeg_version")
        pytest.skip(
            f"no ci baseline for OpenJPEG {version} (results differ between OpenJPEG versions); make one with "
            f"`evaluate.py regress RUN_DIR --baseline 'reports/baselines/ci@openjpeg-{version}.csv' --update`"
        )
    code = main(["regress", str(run_dir), "--baseline", str(BASELINE)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "OK: within tolerances" in text and f"compared {len(pd.read_csv(chosen))} rows" in text


def test_ci_suite_matches_the_committed_baseline(ci_run, capsys):
    """If this fails after an intended change (codec, channel, metric), review the printed diff and run
    `python evaluate.py regress RUN_DIR --baseline reports/baselines/ci.csv --update` (or the
    ``ci@openjpeg-<version>.csv`` file of the OpenJPEG the run used)."""
    _check_against_baseline(ci_run, capsys)


def test_ci_suite_with_the_other_openjpeg_matches_its_baseline(ci_run, tmp_path, capsys):
    """The same suite bound to the other OpenJPEG on this machine (system vs Pillow's wheel copy), in a
    subprocess (glymur binds its library once per process), against that version's baseline."""
    import ctypes.util
    import os
    import subprocess
    import sys

    from harness.openjpeg import _pillow_openjp2

    origin = _libraries(ci_run).get("openjpeg_version")
    candidates = [lib for lib in (_pillow_openjp2(), ctypes.util.find_library("openjp2")) if lib]
    env = dict(os.environ)
    out = tmp_path / "other"
    for lib in candidates:
        env["HARNESS_OPENJP2"] = lib
        cmd = [sys.executable, "evaluate.py", "--suite", "ci", "--out", str(out), "--no-progress", "--fresh"]
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, timeout=HANG_GUARD_S)
        if _libraries(out).get("openjpeg_version") != origin:
            _check_against_baseline(out, capsys)
            return
    pytest.skip(f"only one OpenJPEG version ({origin}) on this machine")


def test_ci_suite_is_deterministic(ci_run, tmp_path, capsys):
    """A second, fresh run of the suite gives the same regression view (what the baseline relies on)."""
    base = tmp_path / "first.csv"
    assert main(["regress", str(ci_run), "--baseline", str(base), "--update"]) == 0
    again = tmp_path / "again"
    assert main(["--suite", "ci", "--out", str(again), "--no-progress", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["regress", str(again), "--baseline", str(base)]) == 0, capsys.readouterr().out


RDEIC_BASELINE = ROOT / "reports" / "baselines" / "ci_rdeic.csv"


def test_ci_rdeic_suite_matches_its_baseline(tmp_path, capsys):
    """RDEIC-tiny (float CPU inference + entropy coding) under bit errors and latent noise, against its own
    baseline. OpenJPEG plays no part in these rows, so one baseline serves every OpenJPEG version. If this fails
    after an intended change (RDEIC code, RDEIC-tiny weights), review the diff and rerun with ``--update``."""
    out = tmp_path / "rdeic"
    assert main(["--suite", "ci_rdeic", "--out", str(out), "--no-progress", "--workers", "2"]) == 0
    capsys.readouterr()
    code = main(["regress", str(out), "--baseline", str(RDEIC_BASELINE)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert f"compared {len(pd.read_csv(RDEIC_BASELINE))} rows" in text and "OK: within tolerances" in text
    base = pd.read_csv(RDEIC_BASELINE)
    assert set(base["codec"]) == {"rdeic-tiny@low"} and {"bsc", "latent_gaussian"} <= set(base["corruption"])
    assert {"y_hat", "c_latent", "guide_hint", "all", "payload"} <= set(base["scope"])
    assert (base["failure_rate"] > 0).any()  # the failure paths are pinned too, not only quality


def _baseline() -> pd.DataFrame:
    return regress.read_baseline(BASELINE)


def test_tolerances_are_stated_per_column():
    assert regress.tolerance("ok") == 0 and regress.tolerance("bytes_total") == 0 and regress.tolerance("psnr_n") == 0
    assert regress.tolerance("psnr") == regress.DB_TOL == 1e-3
    assert regress.tolerance("ssim") == regress.OTHER_TOL


def test_compare_flags_metric_drift_beyond_tolerance_only():
    base = _baseline()
    run = base.copy()
    run.loc[0, "psnr"] += 0.0005  # within 1e-3 dB
    assert regress.compare(run, base).ok
    run.loc[1, "psnr"] += 0.01
    result = regress.compare(run, base)
    assert not result.ok and len(result.regressions) == 1
    assert "psnr" in result.regressions[0] and "Δ +0.01" in result.regressions[0]
    assert "FAILED: 1 difference" in result.text()


def test_compare_is_exact_for_counts_and_bytes_and_sees_missing_rows():
    base = _baseline()
    run = base.copy()
    run.loc[2, "exception"] += 1
    run.loc[3, "bytes_total"] += 1
    result = regress.compare(run.drop(index=5), base)
    text = "\n".join(result.regressions)
    assert "exception" in text and "bytes_total" in text and "row missing" in text
    extra = pd.concat([base, base.iloc[[0]].assign(level="ber=0.5")], ignore_index=True)
    more = regress.compare(extra, base)
    assert more.ok and any("new row" in n for n in more.notes)


def test_regress_exits_nonzero_and_update_rewrites_with_a_diff(ci_run, tmp_path, capsys):
    baseline = tmp_path / "ci.csv"
    shutil.copy(BASELINE, baseline)
    tampered = pd.read_csv(baseline)
    tampered.loc[0, "ok"] += 1
    tampered.to_csv(baseline, index=False)
    assert main(["regress", str(ci_run), "--baseline", str(baseline)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    assert main(["regress", str(ci_run), "--baseline", str(baseline), "--update"]) == 0
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "baseline rewritten" in out  # the diff is shown before rewriting
    assert main(["regress", str(ci_run), "--baseline", str(baseline)]) == 0
    assert main(["regress", str(ci_run), "--baseline", str(tmp_path / "none.csv")]) == 2


def test_other_library_versions_are_named_in_the_output(tmp_path):
    baseline = tmp_path / "ci.csv"
    regress.write_libraries(baseline, {"openjpeg_version": "2.5.0", "glymur_version": "0.14.8"})
    notes = regress.library_notes(baseline, {"openjpeg_version": "2.5.3", "glymur_version": "0.14.8"})
    assert len(notes) == 1 and "'2.5.0'" in notes[0] and "'2.5.3'" in notes[0]
    assert regress.library_notes(tmp_path / "other.csv", {}) == []


def test_a_baseline_records_only_the_libraries_of_its_codecs():
    prov = {"openjpeg_version": "2.5.4", "glymur_version": "0.14.8", "python": "3.11"}
    assert regress.libraries_of(prov, {"jpeg2000", "rdeic"}) == {
        "openjpeg_version": "2.5.4",
        "glymur_version": "0.14.8",
    }
    assert regress.libraries_of(prov, {"rdeic"}) == {}  # RDEIC rows do not depend on OpenJPEG
    assert regress.libraries_of(prov) == regress.libraries_of(prov, {"jpeg2000"})
