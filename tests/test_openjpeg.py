from __future__ import annotations

import ctypes.util

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
