"""Every report kind in a real browser (issue #24): Debian's headless Chromium, started by the test (skipped in
one line where it cannot start). Checked: every image decodes, no script error, nothing wider than a 1400 px
window (wide tables scroll inside their box). A screenshot of each page is kept under ``report/`` to look at."""

from __future__ import annotations

import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import write_suite

from harness.cli import main

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]  # fmt: skip
WIDTH = 1400
#: Records script errors, decoded images and the page's overflow beyond the window as <body> attributes.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error',
  e => window.__errors.push(String(e.message || ('failed to load ' + e.target.src))), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  const b = document.body;
  b.setAttribute('data-images', ok + '/' + imgs.length);
  b.setAttribute('data-errors', JSON.stringify(window.__errors));
  b.setAttribute('data-overflow', String(document.documentElement.scrollWidth - window.innerWidth));
});
</script>"""


@pytest.fixture(scope="session")
def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no headless Chromium here (Debian: apt-get install -y chromium)")
    try:
        subprocess.run([found, "--version"], capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"chromium does not start: {exc}")
    return found


def _chromium(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},1000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # a hang guard, far above the work


def _suite(tmp: Path, kind: str) -> Path:
    bsc = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all", "payload"]\ngrid = { ber = [0.0, 1e-4, 1e-3] }\n'
    latent = '[[corruptions]]\ncorruption = "fake_latent_noise"\nscopes = ["image"]\ngrid = { amp = [0, 4, 40] }\n'
    codecs = {
        "bit_errors": '[[codecs]]\ncodec = "jpeg2000"\nlabel = "j2k@0.5bpp"\noptions = { target_bpp = 0.5 }\n'
        '[[codecs]]\ncodec = "j2k-resilient"\nlabel = "j2k-resilient-nonstrict-with-a-long-label"\n'
        'options = { strict = false }\nmatch_rate_of = "j2k@0.5bpp"\n',
        "paired_latent": '[[codecs]]\ncodec = "fake"\nlabel = "full"\n'
        '[[codecs]]\ncodec = "fake"\nlabel = "ablation"\noptions = { sleep_s = 0.01 }\npaired_with = "full"\n',
    }[kind]
    corruptions = bsc if kind == "bit_errors" else latent + bsc
    return write_suite(tmp / f"{kind}.toml", codecs=codecs, corruptions=corruptions, seeds=2, limit_images=2, name=kind)


@pytest.fixture(scope="module", params=["bit_errors", "paired_latent"])
def report_page(request, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp(request.param)
    out = tmp / "run"
    assert main(["--suite", str(_suite(tmp, request.param)), "--out", str(out), "--no-progress"]) == 0
    return out / "report.html"


def test_every_report_kind_renders_without_broken_images_errors_or_overflow(report_page, browser, tmp_path):
    probe = tmp_path / "probe.html"
    probe.write_text(report_page.read_text().replace("<head>", "<head>" + PROBE, 1))
    run = _chromium(browser, tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = {k: re.search(rf'data-{k}="([^"]*)"', run.stdout) for k in ("images", "errors", "overflow")}
    assert all(found.values()), f"the probe did not run: {run.stderr[-2000:]}"
    loaded, total = map(int, found["images"].group(1).split("/"))
    assert total >= 4 and loaded == total, found["images"].group(1)
    assert json.loads(html_lib.unescape(found["errors"].group(1))) == []
    assert int(found["overflow"].group(1)) <= 0, f"the page is {found['overflow'].group(1)} px wider than the window"
    shot = report_page.parent / "report" / "screenshot.png"
    _chromium(browser, tmp_path, f"--screenshot={shot}", report_page.as_uri())
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
