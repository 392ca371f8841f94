"""Progress and warnings on the terminal (issue #24): plain lines where the output is not a terminal, and our
warnings never printed onto a live bar's line."""

from __future__ import annotations

import io
import warnings

import pandas as pd

from harness import console


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_without_a_terminal_is_plain_lines_without_carriage_returns():
    """Old code: tqdm wrote its \\r frames into non-TTY logs (one endless line per phase)."""
    log = io.StringIO()
    with console.progress_bar(4, "suite", "cell", file=log) as bar:
        for _ in range(4):
            bar.update(1)
            bar.set_postfix({"ok": 3, "crash": 1}, refresh=False)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    assert text.splitlines()[-1].startswith("suite: 4/4 cell (100%)") and "ok=3 crash=1" in text.splitlines()[-1]
    periodic = io.StringIO()
    bar = console.PlainProgress(3, "encode", "image", periodic, every_s=0.0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert [ln.split(",")[0] for ln in periodic.getvalue().splitlines()] == [
        "encode: 1/3 image (33%)",
        "encode: 2/3 image (67%)",
        "encode: 3/3 image (100%)",
    ]


def test_a_terminal_gets_a_bar_and_no_progress_means_nothing():
    term = _Terminal()
    with console.progress_bar(2, "suite", "cell", file=term) as bar:
        bar.update(2)
    assert "\r" in term.getvalue() and "2/2" in term.getvalue()
    quiet = io.StringIO()
    with console.progress_bar(2, "suite", "cell", enabled=False, file=quiet) as bar:
        bar.update(2)
    assert quiet.getvalue() == ""


def test_our_warning_is_printed_on_its_own_line_not_onto_the_bar(tmp_path, capsys):
    """Old code: print() to stderr while a bar was drawn left '…28.72s/image]evaluate.py: warning: …' on one line."""
    import sys

    from tqdm import tqdm

    with console.routed_warnings(tmp_path), tqdm(total=10, file=sys.stderr, ncols=80, mininterval=0) as bar:
        bar.update(3)
        warnings.warn_explicit("image x skipped", UserWarning, str(console.ROOT / "harness" / "runner.py"), 1)
        bar.update(3)
    err = capsys.readouterr().err
    lines = [seg for line in err.split("\n") for seg in line.split("\r")]
    assert "evaluate.py: warning: image x skipped" in lines  # a line of its own, the bar cleared before it


def test_finetune_routes_library_warnings_to_its_warnings_log(tmp_path, monkeypatch, capsys):
    """Old code: `finetune` printed raw library warnings (torch's FutureWarning with its source line) on the
    terminal, unlike suite runs, which route them to warnings.log."""
    import harness.ood
    from harness.cli import main

    def fake_finetune(spec, ood, seed, out, progress, folder):
        warnings.warn_explicit("`torch.jit.script` is deprecated", FutureWarning, "/site-packages/torch/jit/x.py", 9)
        warnings.warn_explicit("LPIPS weights missing", UserWarning, str(console.ROOT / "harness" / "x.py"), 1)
        return {"mode": "control", "trainable_parameters": 1, "total_parameters": 2, "steps_run": 0, "best": {}}

    monkeypatch.setattr(harness.ood, "finetune_one", fake_finetune)
    out = tmp_path / "astro"
    argv = ["finetune", "--codec", "rdeic-tiny@low", "--dataset", "standin_astro", "--steps", "1", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main([*argv, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "FutureWarning" not in err and "torch.jit" not in err
    assert "evaluate.py: warning: LPIPS weights missing" in err
    assert "torch.jit.script` is deprecated" in (out / "warnings.log").read_text()


def test_the_headline_does_not_point_to_a_report_not_yet_written_and_the_report_says_its_phases(tmp_path, capsys):
    """Old code: the headline printed 'report: report.html' before the file existed, then the report phase was
    silent for minutes."""
    from conftest import write_suite

    from harness.cli import main
    from reports import terminal

    suite = write_suite(
        tmp_path / "s.toml",
        codecs='[[codecs]]\ncodec = "fake"\nlabel = "fake"\n',
        corruptions='[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0, 1e-3] }\n',
        seeds=1,
        limit_images=1,
    )
    out = tmp_path / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    captured = capsys.readouterr()
    before_report = captured.out.split("Report:")[0]
    assert "report.html" not in before_report  # named only once written
    assert f"Report:  {out / 'report.html'}" in captured.out and (out / "report.html").is_file()
    phases = [ln for ln in captured.err.splitlines() if ln.startswith("report: ")]
    assert phases[0].startswith("report: tables of") and phases[-1] == "report: writing report.md and report.html"
    assert "report.html" not in terminal.headline(pd.read_csv(out / "summary.csv"), ("psnr",))
