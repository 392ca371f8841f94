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
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

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
            say(f"evaluate.py: warning: {message}")
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


def say(line: str, file: TextIO | None = None) -> None:
    """Print one line (stderr by default) without landing on a progress bar's line: a live bar is cleared,
    the line printed, the bar redrawn below it (tqdm's ``write``); no bar, a plain print."""
    file = file if file is not None else sys.stderr
    try:
        from tqdm import tqdm

        tqdm.write(line, file=file)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(line, file=file)


#: Seconds between two progress lines when the output is not a terminal (a log file, CI, a pipe).
PLAIN_EVERY_S = 30.0


class PlainProgress:
    """Progress for output that is not a terminal: plain lines (``desc: 12/48 cell (25%), 31 s; ok=10``), one at
    most every ``every_s`` seconds and one at the end, never ``\\r`` frames that a log file keeps as one long line.
    The interface tqdm's bars offer to the runner: ``update``, ``set_postfix``, ``close``, context manager."""

    def __init__(
        self, total: int, desc: str, unit: str, file: TextIO | None = None, every_s: float = PLAIN_EVERY_S
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.file = file if file is not None else sys.stderr
        self.every_s = every_s
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self.started = self.last = time.monotonic()
        self.closed = False

    def _line(self) -> str:
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        post = "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items()) if self.postfix else ""
        elapsed = time.monotonic() - self.started
        return f"{self.desc}: {self.n}/{self.total} {self.unit}{share}, {elapsed:.0f} s{post}"

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s and self.n < self.total:
            self.last = now
            print(self._line(), file=self.file, flush=True)

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True) -> None:
        self.postfix = dict(values or {})

    def close(self) -> None:
        if not self.closed and self.total:
            print(self._line(), file=self.file, flush=True)
        self.closed = True

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, file: TextIO | None = None) -> Any:
    """A progress display for ``total`` steps: tqdm's bar (100 columns) when ``file`` (stderr) is a terminal,
    :class:`PlainProgress` lines when it is not, nothing shown when not ``enabled`` (``--no-progress``)."""
    from tqdm import tqdm

    file = file if file is not None else sys.stderr
    if not enabled:
        return tqdm(total=total, disable=True)
    if not (hasattr(file, "isatty") and file.isatty()):
        return PlainProgress(total, desc, unit, file)
    return tqdm(total=total, desc=desc, unit=unit, smoothing=0.05, ncols=100, file=file)
