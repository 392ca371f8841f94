"""The repository layout promises of the walking skeleton."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_import_datasets_from_repo_root_is_hugging_face():
    # Run from the repo root, where a local `datasets/` folder exists and '' is first on sys.path.
    code = "import datasets, sys; print(datasets.__file__); print(hasattr(datasets, 'load_dataset'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    path, has_loader = out.stdout.split()
    assert (ROOT / "datasets").is_dir()
    assert "site-packages" in path and not path.startswith(str(ROOT / "datasets"))
    assert has_loader == "True"


def test_datasets_folder_is_data_only():
    assert not list((ROOT / "datasets").rglob("__init__.py"))
    assert not list((ROOT / "datasets").rglob("*.py"))


def test_listing_does_not_import_torch():
    code = "import sys; from harness.cli import main; main(['--list']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "jpeg2000" in out.stdout and "bsc" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"
