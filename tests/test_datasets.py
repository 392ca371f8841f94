from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import HANG_GUARD_S, ROOT

from harness.datasets import BundledSamples, DatasetError
from harness.hashing import pixels_sha256


def test_bundled_samples_match_their_card():
    ds = BundledSamples()
    entries = ds.entries()
    assert 8 <= len(entries) <= 12
    total = sum((ROOT / "datasets" / "samples" / e.id).stat().st_size for e in entries)
    assert total < 5 * 2**20
    for e in entries:
        image = ds.load(e)  # verifies the pixel hash
        assert image.dtype == np.uint8 and image.shape == (e.height, e.width, 3) and max(image.shape) <= 512
        assert pixels_sha256(image) == e.sha256


@pytest.fixture
def damaged_samples(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(ROOT / "datasets" / "samples", root / "samples")
    first = sorted((root / "samples").glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:200])  # truncated PNG
    return root


def test_broken_image_is_a_clear_error(damaged_samples):
    ds = BundledSamples(damaged_samples / "samples")
    with pytest.raises(DatasetError, match="cannot read image"):
        for e in ds.entries():
            ds.load(e)


def test_broken_image_stops_the_cli_with_one_line(damaged_samples, tmp_path):
    cmd = [sys.executable, "evaluate.py", "--suite", "demo", "--out", str(tmp_path / "run"), "--no-progress"]
    env = {"HARNESS_DATA_DIR": str(damaged_samples), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert out.returncode == 2
    assert "cannot read image" in out.stderr and "Traceback" not in out.stderr
