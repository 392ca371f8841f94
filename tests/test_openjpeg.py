from __future__ import annotations

import ctypes.util

from harness import openjpeg


def test_falls_back_to_pillows_bundled_library(monkeypatch):
    monkeypatch.delenv("HARNESS_OPENJP2", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    path, origin = openjpeg.locate_openjp2()
    assert origin == "pillow" and "libopenjp2" in path


def test_loaded_library_is_recorded():
    info = openjpeg.openjpeg_info()
    major, minor = (int(p) for p in info["openjpeg_version"].split(".")[:2])
    assert (major, minor) >= (2, 4)
    assert "libopenjp2" in info["openjpeg_path"] and info["openjpeg_origin"] in {"system", "pillow"}
