"""What produced a run (METHODOLOGY.md §8): versions, native libraries, git commit, host, suite file."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

PACKAGES = (
    "numpy",
    "pillow",
    "glymur",
    "scipy",
    "pandas",
    "torch",
    "torchvision",
    "compressai",
    "pyiqa",
    "reedsolo",
    "datasets",
    "pyarrow",
    "codec-robustness-harness",
)


def package_versions() -> dict[str, str]:
    """Installed versions, read from metadata (no imports: torch stays unloaded)."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit(repo: Path | None = None) -> str:
    repo = repo or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown (git unavailable)"
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def collect(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from harness.openjpeg import OpenJPEGUnavailable, openjpeg_info

    try:
        openjpeg: dict[str, str] = openjpeg_info()
    except OpenJPEGUnavailable as exc:
        openjpeg = {"openjpeg_error": str(exc)}
    info: dict[str, Any] = {
        "packages": package_versions(),
        **openjpeg,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
    }
    info.update(extra or {})
    return info


def devices(codecs: dict[str, Any]) -> dict[str, Any]:
    """Where each codec config reconstructs (its ``device`` option; ``cpu`` for codecs without one) and, when
    torch is loaded, the accelerators this process can see: the device is recorded as it was, never assumed.
    ``entropy_threads``: the fixed torch thread count of each config's encode and parse (None: no torch there;
    harness/codecs/base.py); ``torch_threads``: what reconstruct ran with; ``cpu_capability``: the SIMD kernels
    torch dispatched to (another one may round the entropy side's floats differently even at a fixed count)."""
    out: dict[str, Any] = {"codecs": {label: str(getattr(c.options, "device", "cpu")) for label, c in codecs.items()}}
    out["entropy_threads"] = {label: getattr(c, "entropy_threads", None) for label, c in codecs.items()}
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            cuda = torch.cuda.is_available()
            out["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
            out["torch_threads"] = torch.get_num_threads()
            out["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
        except Exception as exc:  # a broken driver must not stop provenance
            out["cuda_error"] = str(exc)
    return out
