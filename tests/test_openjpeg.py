from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import openjpeg


def test_prefers_pillows_bundled_library_over_the_system_one(monkeypatch):
    monkeypatch.delenv("HARNESS_OPENJP2", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libopenjp2.so.7")
    path, origin = openjpeg.locate_openjp2()
    assert origin == "pillow" and "pillow.libs" in path and "libopenjp2" in path


def test_system_library_only_when_asked(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libopenjp2.so.7")
    monkeypatch.setenv("HARNESS_OPENJP2", "system")
    assert openjpeg.locate_openjp2() == ("libopenjp2.so.7", "system")
    monkeypatch.setenv("HARNESS_OPENJP2", "/opt/x/libopenjp2.so")
    assert openjpeg.locate_openjp2() == ("/opt/x/libopenjp2.so", "HARNESS_OPENJP2")


def test_loaded_library_is_recorded():
    info = openjpeg.openjpeg_info()
    major, minor = (int(p) for p in info["openjpeg_version"].split(".")[:2])
    assert (major, minor) >= (2, 4)
    assert "libopenjp2" in info["openjpeg_path"] and info["openjpeg_origin"] in {"system", "pillow"}


# -- each environment binds its own library ------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
REPORT = "from harness.openjpeg import openjpeg_info; print(openjpeg_info()['openjpeg_path'])"


def _library_copies(tmp_path: Path) -> tuple[str, str]:
    """Two copies of the bundled OpenJPEG in two folders: two checkouts' libraries, told apart by path."""
    bundled = openjpeg._pillow_openjp2()
    assert bundled is not None, "Pillow's wheel bundles libopenjp2"
    copies = []
    for name in ("checkout_a", "checkout_b"):
        (tmp_path / name).mkdir()
        copies.append(str(shutil.copy(bundled, tmp_path / name / Path(bundled).name)))
    return copies[0], copies[1]


def _start(library: str, tmp: Path, cwd: Path) -> subprocess.Popen:
    """``python -c REPORT`` with ``HARNESS_OPENJP2=library``; every process shares one temp folder (one user on
    one machine)."""
    env = {**os.environ, "HARNESS_OPENJP2": library, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.Popen(
        [sys.executable, "-c", REPORT], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_checkouts_importing_at_once_each_load_their_own_library(tmp_path):
    """Before: one glymurrc per user under the temp folder, rewritten by every import, so a process could read
    the other checkout's path between its own write and glymur's read. Now each library has its own folder."""
    lib_a, lib_b = _library_copies(tmp_path)
    (tmp_path / "tmp").mkdir()
    wanted = [lib_a, lib_b] * 4
    procs = [_start(lib, tmp_path / "tmp", tmp_path) for lib in wanted]
    loaded = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)  # a hang guard far above the ~1 s an import takes
        assert proc.returncode == 0, err
        loaded.append(out.strip())
    assert loaded == wanted
    homes = {openjpeg.config_home(lib_a), openjpeg.config_home(lib_b)}
    assert len(homes) == 2  # two configs in two folders


def test_a_config_folder_only_ever_names_its_own_library(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    lib_a, lib_b = _library_copies(tmp_path)
    home_a = openjpeg.write_config(lib_a)
    openjpeg.write_config(lib_b)  # another checkout writes its own
    assert (home_a / "glymur" / "glymurrc").read_text() == f"[library]\nopenjp2: {lib_a}\n"
    assert openjpeg.config_home(lib_a) == home_a and home_a.parent == tmp_path


def test_a_glymurrc_in_the_current_folder_is_refused_not_followed(tmp_path):
    """glymur reads ./glymurrc before any other configuration: it must not silently bind another library."""
    lib_a, lib_b = _library_copies(tmp_path)
    (tmp_path / "glymurrc").write_text(f"[library]\nopenjp2: {lib_b}\n")
    (tmp_path / "tmp").mkdir()
    proc = _start(lib_a, tmp_path / "tmp", tmp_path)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0 and lib_b not in out, (out, err)
    assert "OpenJPEGUnavailable" in err and "glymurrc" in err and lib_a in err
