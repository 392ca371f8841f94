"""What the terminal commands print (issue #24, "the headline and the terminal"): 100 columns like the rest,
and the metric check's exit status."""

from __future__ import annotations

from harness.cli import main


def _too_wide(text: str, width: int = 100) -> list[str]:
    """Lines wider than ``width``, except a line that is one unbreakable word (a URL or a path: never cut, it
    must stay usable)."""
    return [ln for ln in text.splitlines() if len(ln) > width and len(ln.split()) > 1]


def test_datasets_list_fits_100_columns_and_cuts_nothing(capsys):
    """Old listing: ~190 columns, licences cut to 20 characters."""
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    assert _too_wide(out) == []
    for name in ("eurosat", "kodak", "samples", "standin_stereo", "folder"):
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    assert "..." not in out.replace("(path = ...)", "")  # nothing truncated (old: licences cut to 17 + "...")


def test_metrics_check_fits_100_columns_and_fails_when_an_asked_metric_cannot_be_computed(
    capsys, tmp_path, monkeypatch
):
    """Old text: 466-character lines."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no weights at all here
    assert main(["metrics", "check"]) == 0  # the question "what can this machine compute" is answered
    out = capsys.readouterr().out
    assert _too_wide(out) == [] and "MISSING lpips" in out and "ok  psnr" in out
    assert str(tmp_path / "empty") in out
    assert main(["metrics", "check", "--metric", "psnr,lpips"]) == 1
    assert main(["metrics", "check", "--metric", "psnr"]) == 0
