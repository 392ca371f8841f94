"""Make OpenJPEG available to glymur without root, and say which library served a run.

A fresh machine has no libopenjp2: glymur then imports silently and fails on every read/write. We use the
copy bundled in Pillow's wheel (``pillow.libs/libopenjp2-*.so*``) first: it comes with the pip-installed
environment, so every machine that installs the project decodes with the same OpenJPEG, whatever apt has
put on it (installing Chromium pulls Debian's 2.5.0, and 2.5.0 vs 2.5.4 changes how corrupted streams
decode). ``HARNESS_OPENJP2=system`` selects the system library found by ``ctypes.util.find_library``
instead, and ``HARNESS_OPENJP2=/path/to/libopenjp2.so`` any other; the choice is recorded with every run
and is part of the JPEG2000 codec fingerprint. glymur reads its library path from a ``glymurrc`` found through
``XDG_CONFIG_HOME`` at import time, so we write one in a private folder and point ``XDG_CONFIG_HOME`` at it
only while importing glymur. (Swapping glymur's library handle after import aborts the process.)
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType


class OpenJPEGUnavailable(RuntimeError):
    pass


def _pillow_openjp2() -> str | None:
    try:
        import PIL
    except ImportError:
        return None
    site = Path(PIL.__file__).resolve().parent.parent
    found = sorted(glob.glob(str(site / "pillow.libs" / "libopenjp2*.so*")))
    return found[0] if found else None


def locate_openjp2() -> tuple[str, str]:
    """(path or soname, origin) of the OpenJPEG library to use; origin is ``system`` or ``pillow``."""
    choice = os.environ.get("HARNESS_OPENJP2", "")
    if choice and choice != "system":
        return choice, "HARNESS_OPENJP2"
    bundled = None if choice == "system" else _pillow_openjp2()
    if bundled:
        return bundled, "pillow"
    system = ctypes.util.find_library("openjp2")
    if system:
        return system, "system"
    raise OpenJPEGUnavailable(
        "no OpenJPEG library found: install Pillow (whose wheel bundles one) or Debian's libopenjp2-7 "
        "(then HARNESS_OPENJP2=system), or set HARNESS_OPENJP2=/path/to/libopenjp2.so"
    )


@cache
def import_glymur() -> ModuleType:
    """Import glymur bound to a working OpenJPEG (>= 2.4), or raise :class:`OpenJPEGUnavailable`."""
    if "glymur" in sys.modules:
        glymur = sys.modules["glymur"]
    else:
        path, origin = locate_openjp2()
        if origin == "system":
            import glymur
        else:
            config_home = Path(tempfile.gettempdir()) / f"harness-glymur-{os.getuid()}"
            (config_home / "glymur").mkdir(parents=True, exist_ok=True)
            rc = config_home / "glymur" / "glymurrc"
            text = f"[library]\nopenjp2: {path}\n"
            if not rc.exists() or rc.read_text() != text:
                tmp = rc.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(text)
                os.replace(tmp, rc)
            saved = os.environ.get("XDG_CONFIG_HOME")
            os.environ["XDG_CONFIG_HOME"] = str(config_home)
            try:
                import glymur
            finally:
                if saved is None:
                    os.environ.pop("XDG_CONFIG_HOME", None)
                else:
                    os.environ["XDG_CONFIG_HOME"] = saved
    version = openjpeg_version(glymur)
    if tuple(int(p) for p in version.split(".")[:2]) < (2, 4):
        raise OpenJPEGUnavailable(f"glymur loaded OpenJPEG {version}; >= 2.4 is required ({locate_openjp2()[0]})")
    return glymur


def openjpeg_version(glymur: ModuleType) -> str:
    return str(glymur.version.openjpeg_version)


def openjpeg_info() -> dict[str, str]:
    """Version and on-disk path of the loaded OpenJPEG, for provenance."""
    glymur = import_glymur()
    lib = glymur.lib.openjp2.OPENJP2
    return {
        "openjpeg_version": openjpeg_version(glymur),
        "openjpeg_path": str(getattr(lib, "_name", "")),
        "openjpeg_origin": locate_openjp2()[1],
        "glymur_version": str(glymur.__version__),
    }


if __name__ == "__main__":  # `python -m harness.openjpeg`: used by the Makefile as a set-up check
    for key, value in openjpeg_info().items():
        print(f"{key}: {value}")
