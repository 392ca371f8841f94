"""Persistent, isolated decode workers: the only place corrupted bytes are parsed.

CompressAI's rANS decoder does no bounds checks (a corrupted hyper-latent makes it read past its buffer
and segfault) and OpenJPEG can spend seconds on a corrupted header. So ``Codec.parse`` runs in worker
processes that outlive single calls (codec weights load once), each call with a deadline::

    main thread ──submit──> thread i ──pipe──> worker process i: codec.parse(bytes) -> state
                 <─future──          <─pipe───   (or: dies -> crash, silent past deadline -> timeout)

A worker that dies is reported as ``crash`` (with its signal) and replaced; one that misses its deadline
is killed, reported as ``timeout`` and replaced. Exceptions never cross the boundary as exceptions: they
come back as a status with type and message. Workers are forked from a forkserver that has preloaded the
codec modules, so a restart after a crash costs milliseconds, not a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import queue
import signal
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any

from harness.codecs.base import CodecSpec, DecodedState
from harness.status import Status

#: Seconds a worker may take to build a codec (load weights) before the first parse.
LOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class ParseOutcome:
    status: Status
    state: DecodedState | None
    error_type: str | None = None
    error_message: str | None = None
    parse_s: float = 0.0  # time inside codec.parse, measured in the worker
    wall_s: float = 0.0  # round trip seen by the caller (parse + transfer + isolation overhead)


def _spec_key(spec: CodecSpec) -> str:
    return spec.target + "|" + json.dumps(spec.options, sort_keys=True)


def _worker_main(conn: Connection) -> None:
    """Loop of a worker process: ('load', spec) and ('parse', key, bytes) requests, one reply each."""
    from harness.registry import import_target

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    codecs: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # parent went away (even kill -9): leave quietly
            return
        if msg is None:
            return
        t0 = perf_counter()
        try:
            if msg[0] == "load":
                spec: CodecSpec = msg[1]
                key = _spec_key(spec)
                if key not in codecs:
                    codecs[key] = import_target(spec.target)(**spec.options)
                reply: tuple = ("ok", None, None, None, perf_counter() - t0)
            else:
                _, key, data = msg
                state = codecs[key].parse(data)
                reply = ("ok", state, None, None, perf_counter() - t0)
        except Exception as exc:  # every decoder failure becomes a status, by design
            reply = ("exception", None, type_name(exc), str(exc)[:2000], perf_counter() - t0)
        try:
            conn.send(reply)
        except Exception as exc:  # e.g. a state that cannot be pickled
            conn.send(("exception", None, type_name(exc), f"cannot return state: {exc}"[:2000], reply[4]))


def type_name(exc: BaseException) -> str:
    """``ValueError`` for builtins, ``glymur.lib.openjp2.OpenJPEGLibraryError`` style otherwise."""
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


def _describe_exit(code: int | None) -> tuple[str, str]:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return name, f"decode worker killed by {name}"
    return "WorkerExit", f"decode worker exited with code {code}"


def default_context() -> mp.context.BaseContext:
    return mp.get_context("forkserver" if sys.platform.startswith("linux") else "spawn")


class IsolatedWorker:
    """One worker process and its pipe. Not thread-safe: the pool hands it to one thread at a time."""

    def __init__(self, ctx: mp.context.BaseContext | None = None) -> None:
        self._ctx = ctx or default_context()
        self._proc: Any = None
        self._conn: Connection | None = None
        self._loaded: set[str] = set()
        self.starts = 0

    def _start(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child,), daemon=True, name="harness-decode")
        proc.start()
        child.close()
        self._proc, self._conn, self._loaded = proc, parent, set()
        self.starts += 1

    def _reap(self) -> int | None:
        """Make sure the process is gone; return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        proc.join(timeout=2.0)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5.0)
        code = proc.exitcode
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn, self._loaded = None, None, set()
        return code

    def _request(self, msg: tuple, timeout_s: float) -> ParseOutcome:
        t0 = perf_counter()
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self._reap()
            self._start()
        assert self._conn is not None
        try:
            self._conn.send(msg)
            ready = self._conn.poll(timeout_s)
            if ready:
                status, state, etype, emsg, inner_s = self._conn.recv()
                return ParseOutcome(Status(status), state, etype, emsg, inner_s, perf_counter() - t0)
        except (EOFError, OSError):  # died mid-call: pipe closed under us
            etype, emsg = _describe_exit(self._reap())
            return ParseOutcome(Status.CRASH, None, etype, emsg, 0.0, perf_counter() - t0)
        self._proc.kill()
        self._reap()
        return ParseOutcome(
            Status.TIMEOUT,
            None,
            "Timeout",
            f"no reply within {timeout_s:g} s; worker killed",
            0.0,
            perf_counter() - t0,
        )

    def parse(self, spec: CodecSpec, data: bytes, timeout_s: float) -> ParseOutcome:
        key = _spec_key(spec)
        if key not in self._loaded:
            loaded = self._request(("load", spec), LOAD_TIMEOUT_S)
            if loaded.status is not Status.OK:
                return loaded
            self._loaded.add(key)
        return self._request(("parse", key, data), timeout_s)

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._reap()


class WorkerPool:
    """``n`` persistent workers behind a thread pool; ``submit`` returns a future of a ParseOutcome."""

    def __init__(self, n: int, timeout_s: float, preload: tuple[str, ...] = ()) -> None:
        if n < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.timeout_s = timeout_s
        ctx = default_context()
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(["harness.workers", *preload])
        self._workers = [IsolatedWorker(ctx) for _ in range(n)]
        self._idle: queue.SimpleQueue[IsolatedWorker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._executor = ThreadPoolExecutor(n, thread_name_prefix="harness-decode")
        self._lock = threading.Lock()

    def _run(self, spec: CodecSpec, data: bytes) -> ParseOutcome:
        worker = self._idle.get()
        try:
            return worker.parse(spec, data, self.timeout_s)
        finally:
            self._idle.put(worker)

    def submit(self, spec: CodecSpec, data: bytes) -> Future[ParseOutcome]:
        return self._executor.submit(self._run, spec, data)

    @property
    def restarts(self) -> int:
        return sum(max(w.starts - 1, 0) for w in self._workers)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        for w in self._workers:
            w.close()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
