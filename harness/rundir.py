"""One run at a time per run directory: an exclusive lock on ``<out>/.lock`` naming who holds it.

Two runs writing one directory would interleave their cells and fail on duplicate keys half-way; the second
is refused at once instead, with the holder's pid, host and start time. The lock is ``flock`` on an open file,
so the kernel releases it when the holder dies (even ``kill -9``): a stale lock file never blocks a resume.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used (the CLI says why in one line, exit 2)."""


class RunDirectoryBusy(RunDirectoryError):
    """Another process holds the run directory."""


class NotARunDirectory(RunDirectoryError):
    """``--out`` (or a folder above it) is an existing file."""


def make_run_directory(out: Path) -> None:
    """Create ``out`` (and its parents) or raise :class:`NotARunDirectory` when a file stands in the way."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [Path(out), *Path(out).parents] if p.exists() and not p.is_dir()), Path(out))
        raise NotARunDirectory(
            f"--out {out}: {blocker} is a file, not a folder; give a folder for the run (it is created if missing)"
        ) from None


class RunDirectory:
    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self._fh = None

    def __enter__(self) -> RunDirectory:
        make_run_directory(self.out)
        path = self.out / ".lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read() or "{}")
            except ValueError:
                holder = {}
            fh.close()
            who = ", ".join(f"{k} {v}" for k, v in holder.items()) or "another process"
            raise RunDirectoryBusy(
                f"run directory {self.out} is in use ({who}); wait for that run to end or give another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": datetime.now(UTC).isoformat()}))
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
