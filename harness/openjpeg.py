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

That folder belongs to one environment and one library (:func:`config_home`: its name hashes the Python
environment's prefix and the library path), so its file only ever holds that path: two checkouts on one machine
never share it (before, one file per user under the temp folder was rewritten by whichever checkout imported
last, and a fresh clone reported the other checkout's ``libopenjp2`` while it raced). glymur reads a
``glymurrc`` in the current folder before ours, so after the import the harness checks which library glymur
actually loaded and refuses, in one line, one it did not choose.
"""

from __future__ import annotations

import ctypes.util
import glob
import hashlib
import os
import sys
import tempfile
from functools import cache
from pathlib import Path
from types import ModuleType

from harness.codecs.base import CodecUnusable


class OpenJPEGUnavailable(CodecUnusable):
    """No usable OpenJPEG (none found, too old, or glymur bound to another library than the one chosen): the
    JPEG2000 codecs cannot run, and the CLI says so in one line (exit 2)."""


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


def config_home(path: str) -> Path:
    """The ``XDG_CONFIG_HOME`` whose ``glymur/glymurrc`` names ``path``: one folder per (Python environment,
    library path, user) under the temp folder, so nothing in it is shared with another checkout or another
    library, and its content is a function of its name (concurrent writers write the same bytes)."""
    digest = hashlib.sha256(f"{sys.prefix}\0{path}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"harness-glymur-{os.getuid()}-{digest}"


def write_config(path: str) -> Path:
    """Write (atomically, only when missing or different) the glymurrc naming ``path``; returns its config home."""
    home = config_home(path)
    rc = home / "glymur" / "glymurrc"
    text = f"[library]\nopenjp2: {path}\n"
    if not rc.is_file() or rc.read_text() != text:
        rc.parent.mkdir(parents=True, exist_ok=True)
        tmp = rc.with_name(f"glymurrc.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, rc)
    return home


def loaded_openjp2(glymur: ModuleType) -> str:
    """The path (or soname) glymur's OpenJPEG handle was opened with ("" when it loaded none)."""
    return str(getattr(glymur.lib.openjp2.OPENJP2, "_name", "") or "")


@cache
def import_glymur() -> ModuleType:
    """Import glymur bound to a working OpenJPEG (>= 2.4) chosen by :func:`locate_openjp2`, or raise
    :class:`OpenJPEGUnavailable` (no library, too old, or glymur bound to another one than chosen)."""
    path, origin = locate_openjp2()
    if "glymur" in sys.modules:
        glymur = sys.modules["glymur"]
    else:
        saved = os.environ.get("XDG_CONFIG_HOME")
        os.environ["XDG_CONFIG_HOME"] = str(write_config(path))
        try:
            import glymur
        finally:
            if saved is None:
                os.environ.pop("XDG_CONFIG_HOME", None)
            else:
                os.environ["XDG_CONFIG_HOME"] = saved
    loaded = loaded_openjp2(glymur)
    if loaded != str(Path(path)):
        cwd_rc = Path.cwd() / "glymurrc"
        why = f"{cwd_rc} (glymur reads it first) names it" if cwd_rc.is_file() else "glymur was imported before"
        raise OpenJPEGUnavailable(
            f"glymur loaded OpenJPEG from {loaded or 'nowhere'}, not the {origin} library {path} the harness chose: "
            f"{why}; remove that, or set HARNESS_OPENJP2 to the library you want"
        )
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
