"""What reaches the terminal: progress, the headline and our own one-line warnings; library noise goes to a
file in the run directory (``warnings.log``), never lost and never in the way.

Libraries imported by a run (torch, compressai, torchvision, pyiqa) warn about deprecations and CUDA at import
time, in the harness and in every decode worker; a person reading the run at 100 columns needs none of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: Folders whose warnings are ours: shown as ``evaluate.py: warning: <message>`` on one line.
ROOT = Path(__file__).resolve().parent.parent
OURS = tuple(ROOT / name for name in ("harness", "corruptions", "reports"))
#: Library loggers whose warnings go to the file (torch's extension loader says "No CUDA runtime is found").
LIBRARY_LOGGERS = ("torch", "torch.utils.cpp_extension", "compressai", "pyiqa", "datasets", "huggingface_hub")


class _LogFile(logging.Handler):
    """Appends to the run's warnings.log; a file that cannot be written never breaks the run."""

    def __init__(self, path: Path) -> None:
        super().__init__(logging.WARNING)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        _append(self.path, f"{record.levelname} {record.name}: {record.getMessage()}")


def _append(path: Path, line: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.write(line + "\n")
    except OSError:
        pass


@contextlib.contextmanager
def routed_warnings(run_dir: Path) -> Iterator[Path]:
    """Within the block: our warnings to stderr as one line each; every other warning (and library loggers'
    warnings) appended to ``run_dir/warnings.log``; child processes (decode workers, their forkserver) inherit
    an ignore filter. Everything is restored on exit."""
    log = Path(run_dir) / "warnings.log"

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if any(Path(filename).resolve().is_relative_to(d) for d in OURS):
            print(f"evaluate.py: warning: {message}", file=sys.stderr)
        else:
            _append(log, f"{category.__name__} at {filename}:{lineno}: {message}")

    saved_show, saved_env = warnings.showwarning, os.environ.get("PYTHONWARNINGS")
    handler = _LogFile(log)
    loggers = [logging.getLogger(name) for name in LIBRARY_LOGGERS]
    saved_propagate = [lg.propagate for lg in loggers]
    warnings.showwarning = show
    os.environ["PYTHONWARNINGS"] = "ignore"  # decode workers report statuses, not warnings
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        yield log
    finally:
        warnings.showwarning = saved_show
        if saved_env is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved_env
        for lg, propagate in zip(loggers, saved_propagate, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate
