"""Persistent, isolated decode workers: the only place corrupted bytes are parsed.

CompressAI's rANS decoder does no bounds checks (a corrupted hyper-latent makes it read past its buffer
and segfault) and OpenJPEG can spend seconds, and gigabytes, on a corrupted header. So ``Codec.parse`` runs
in worker processes that outlive single calls (codec weights load once), each call under limits the worker
applies to itself::

    main thread ──submit──> thread i ──pipe──> worker process i: codec.parse_checked(bytes, size) -> state
                 <─future──          <─pipe───   (or: dies -> crash, over budget -> timeout / invalid_output)

A status must not depend on how busy or how full the machine is, so the limits are the kernel's, per call:

* **CPU time** (``RLIMIT_CPU``): a parse that uses more than ``Limits.cpu_s`` seconds of CPU is killed by
  SIGXCPU and recorded as ``timeout``. CPU time, unlike wall time, barely changes when other jobs share the
  cores. A wall-clock backstop (``Limits.wall_s``, much longer) catches parses that hang without using CPU.
* **Memory** (``RLIMIT_DATA``): a parse may allocate ``Limits.memory_bytes`` beyond what the warm worker
  already holds. Exceeding it fails the allocation inside the worker (never the kernel's OOM killer, which
  picks victims by the state of the whole machine) and is recorded as ``invalid_output`` with error type
  ``MemoryCapExceeded``; the worker then exits and is replaced, so the next call starts with a clean heap.

The codec is built and warmed (``Codec.warm``: weights, CDF tables, native extensions) by a ``load`` request
outside any cell's limits, so a deadline measures parsing only. Workers die with the harness: each sets a
parent-death signal and watches the main process, so ``kill -9`` of the harness leaves no decoder running.
Exceptions never cross the boundary as exceptions: they come back as a status with type and message (made
reproducible: temp-file paths and addresses are replaced). Workers are forked from a forkserver that has
preloaded the codec modules, so a restart after a crash costs milliseconds, not a fresh interpreter.

A parse in a worker computes what the same parse computes in the main process, and on any other machine (the
controls compare the two bit for bit): ``Codec.parse_checked`` runs ``parse`` at the codec's fixed entropy-side
torch thread count (``Codec.entropy_threads``, harness/codecs/base.py), because float reductions split over
another number of threads round differently (measured: RDEIC-tiny's ``y_hat`` differs between 1, 2 and 4
threads on every bundled sample). A plugin that declares no such count parses at the main process's count: each
request carries it and the worker adopts it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import queue
import re
import resource
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from time import perf_counter
from typing import Any

from harness.codecs.base import CodecSpec, DecodedState
from harness.status import Status

#: Seconds (wall) a worker may take to build and warm a codec (load weights) before its first parse.
LOAD_TIMEOUT_S = 600.0
#: Seconds (wall) a worker may take to encode one image under every codec config of its chain (our own images: no
#: CPU or memory limit, only a backstop against a hang).
ENCODE_TIMEOUT_S = 3600.0
#: Default allowance of a parse beyond the warm worker's own memory: this floor plus ``MEMORY_BYTES_PER_PIXEL``
#: per pixel of the decoded output (measured: a JPEG2000 decode of a 512x768 image allocates ~40 MB, the
#: RDEIC-tiny entropy decode of the same ~60 MB; 10-15 GB is what a corrupted SIZ made OpenJPEG allocate).
MEMORY_FLOOR_BYTES = 512 * 2**20
MEMORY_BYTES_PER_PIXEL = 256
#: The error type of a parse that hit its memory cap (status ``invalid_output``).
MEMORY_CAP = "MemoryCapExceeded"

_NO_LIMIT = resource.RLIM_INFINITY
_OOM_TEXT = re.compile(r"(can't|cannot|unable to|failed to) allocate|not enough memory|out of memory", re.I)


@dataclass(frozen=True)
class Limits:
    """What one parse may use. ``cpu_s``: CPU seconds (all threads) before SIGXCPU; ``wall_s``: wall-clock
    backstop for parses that hang without using CPU; ``memory_bytes``: allocations beyond the warm worker's."""

    cpu_s: float
    wall_s: float
    memory_bytes: int

    @classmethod
    def for_image(
        cls,
        cpu_s: float,
        decoded_pixels: int,
        wall_factor: float = 10.0,
        memory_bytes: int | None = None,
    ) -> Limits:
        """Limits of a parse whose output has ``decoded_pixels`` pixels: the memory allowance defaults to
        ``MEMORY_FLOOR_BYTES + MEMORY_BYTES_PER_PIXEL * decoded_pixels``."""
        memory = memory_bytes if memory_bytes is not None else default_memory_bytes(decoded_pixels)
        return cls(cpu_s=cpu_s, wall_s=max(cpu_s * wall_factor, cpu_s + 5.0), memory_bytes=memory)


def default_memory_bytes(decoded_pixels: int) -> int:
    return MEMORY_FLOOR_BYTES + MEMORY_BYTES_PER_PIXEL * int(decoded_pixels)


@dataclass(frozen=True)
class ParseOutcome:
    status: Status
    state: DecodedState | None
    error_type: str | None = None
    error_message: str | None = None
    parse_s: float = 0.0  # time inside codec.parse, measured in the worker
    wall_s: float = 0.0  # round trip seen by the caller (parse + transfer + isolation overhead)
    cpu_s: float = 0.0  # CPU seconds (all threads) the parse used, measured in the worker


def _spec_key(spec: CodecSpec) -> str:
    return spec.target + "|" + json.dumps(spec.options, sort_keys=True)


def reproducible(message: str) -> str:
    """A stored message must be the same on every run: temp-file paths and memory addresses are replaced."""
    tmp = re.escape(tempfile.gettempdir().rstrip("/"))
    message = re.sub(tmp + r"/[^\s'\":,)]+", "<tmpfile>", message)
    return re.sub(r"0x[0-9a-fA-F]{6,}", "0x…", message)


def _data_bytes() -> int:
    """The process's private writable memory (what ``RLIMIT_DATA`` limits), from /proc."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _set_limits(cpu_s: float | None, memory_bytes: int | None) -> None:
    """Soft limits for the parse about to run (None: lift them). The hard limits stay unlimited, so the next
    call can raise the soft ones again."""
    cpu = _NO_LIMIT if cpu_s is None else max(1, math.ceil(_cpu_used() + cpu_s))
    data = _NO_LIMIT if memory_bytes is None else _data_bytes() + memory_bytes
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, _NO_LIMIT))
    resource.setrlimit(resource.RLIMIT_DATA, (data, _NO_LIMIT))


def _die_with_parent(main_pid: int) -> None:
    """A worker must not outlive the harness (a SIZ bomb went on from 348 MB to 4.1 GB after ``kill -9``):
    the kernel kills it when its parent (the forkserver) exits, and a thread watches the main process."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before the signal was armed
        os._exit(0)

    def watch() -> None:
        while True:
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True, name="harness-watch-parent").start()


def torch_threads() -> int | None:
    """The torch intra-op thread count of this process (None when torch was never imported here)."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _same_threads(threads: int | None) -> None:
    """Adopt the main process's torch thread count: what a codec without a fixed entropy-side count parses at
    (see the module docstring). A worker whose codec never imported torch (JPEG2000) is left alone."""
    torch = sys.modules.get("torch")
    if threads is not None and torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _encode_chain(codecs: dict[str, Any], chain: list[tuple[str, int | None, float | None]], image: Any) -> dict:
    """Encode ``image`` (uint8 H x W x 3) under each (codec key, index of its rate reference in the chain, target
    bpp) in order; a rate-matched entry takes its reference's bpp (8 x bytes / (H x W)) from the chain, or the
    given target when its reference was cached. Stops at the first refusal: ``{"streams": [(bytes, segments,
    resolved, seconds)], "error": None or (kind, type, message)}``, kind ``unusable`` / ``refused`` / ``failed``."""
    from harness.codecs.base import CodecError, CodecUnusable

    h, w = image.shape[:2]
    streams: list[tuple[bytes, dict, dict, float]] = []
    for key, ref, target in chain:
        if ref is not None:
            target = 8.0 * len(streams[ref][0]) / (h * w)
        t0 = perf_counter()
        try:
            bitstream = codecs[key].encode_stream(image, target)
        except CodecError as exc:
            kind = "unusable" if isinstance(exc, CodecUnusable) else "refused"
            return {"streams": streams, "error": (kind, type_name(exc), str(exc))}
        except Exception as exc:
            return {"streams": streams, "error": ("failed", type_name(exc), reproducible(str(exc))[:2000])}
        resolved = {} if target is None else {"target_bpp": target}
        streams.append((bitstream.data, bitstream.segments_json(), resolved, perf_counter() - t0))
    return {"streams": streams, "error": None}


def _worker_main(conn: Connection, main_pid: int) -> None:
    """Loop of a worker process: ('load', spec), ('parse', key, bytes, size, cpu_s, memory_bytes, threads) and
    ('encode', chain, image) requests, one reply each: (status, state, error type, message, seconds, CPU seconds)."""
    from harness.codecs.base import InvalidOutput
    from harness.registry import import_target

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSEGV / SIGXCPU leave no core files behind
    _die_with_parent(main_pid)
    codecs: dict[str, Any] = {}
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # parent went away (even kill -9): leave quietly
            return
        if msg is None:
            return
        t0, c0 = perf_counter(), _cpu_used()
        exit_after = False
        try:
            if msg[0] == "load":
                spec: CodecSpec = msg[1]
                key = _spec_key(spec)
                if key not in codecs:
                    codec = import_target(spec.target)(**spec.options)
                    with codec.entropy_side():  # torch and its thread pool load here, outside any parse's limits
                        codec.warm()
                    codecs[key] = codec
                reply: tuple = ("ok", None, None, None)
            elif msg[0] == "encode":  # trusted: the harness's own images, no limits (issue #25: encode off main)
                reply = ("ok", _encode_chain(codecs, msg[1], msg[2]), None, None)
            else:
                _, key, data, size, cpu_s, memory_bytes, threads = msg
                _same_threads(threads)
                _set_limits(cpu_s, memory_bytes)
                try:
                    state = codecs[key].parse_checked(data, tuple(size))
                finally:
                    _set_limits(None, None)
                reply = ("ok", state, None, None)
        except InvalidOutput as exc:
            reply = (Status.INVALID_OUTPUT.value, None, "InvalidOutput", reproducible(str(exc))[:2000])
        except Exception as exc:  # every decoder failure becomes a status, by design
            _set_limits(None, None)
            if isinstance(exc, MemoryError) or _OOM_TEXT.search(str(exc)):
                cap = msg[5] / 2**20 if msg[0] == "parse" else 0
                text = f"allocation failed under the decode worker's memory cap ({cap:.0f} MiB over its baseline)"
                reply = (Status.INVALID_OUTPUT.value, None, MEMORY_CAP, f"{text}: {reproducible(str(exc))[:500]}")
                exit_after = True  # start the next call with a clean heap
            else:
                reply = (Status.EXCEPTION.value, None, type_name(exc), reproducible(str(exc))[:2000])
        timing = (perf_counter() - t0, _cpu_used() - c0)
        try:
            try:
                conn.send((*reply, *timing))
            except (EOFError, OSError):
                raise
            except Exception as exc:  # e.g. a state that cannot be pickled
                conn.send(("exception", None, type_name(exc), f"cannot return state: {exc}"[:2000], *timing))
        except (EOFError, OSError):  # the parent went away mid-call (kill -9): leave quietly, no traceback
            os._exit(0)
        if exit_after:
            os._exit(0)


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
        proc = self._ctx.Process(target=_worker_main, args=(child, os.getpid()), daemon=True, name="harness-decode")
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

    def _request(self, msg: tuple, wall_s: float, cpu_s: float | None = None) -> ParseOutcome:
        t0 = perf_counter()
        if self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                self._reap()
            self._start()
        assert self._conn is not None
        try:
            self._conn.send(msg)
            if self._conn.poll(wall_s):
                status, state, etype, emsg, inner_s, used_cpu = self._conn.recv()
                if status != Status.OK.value and etype == MEMORY_CAP:
                    self._reap()  # it exits after replying
                return ParseOutcome(Status(status), state, etype, emsg, inner_s, perf_counter() - t0, used_cpu)
        except (EOFError, OSError):  # died mid-call: pipe closed under us
            code = self._reap()
            if code == -signal.SIGXCPU and cpu_s is not None:
                return ParseOutcome(
                    Status.TIMEOUT,
                    None,
                    "Timeout",
                    f"used more than its CPU-time budget of {cpu_s:g} s; worker killed",
                    0.0,
                    perf_counter() - t0,
                    cpu_s,
                )
            etype, emsg = _describe_exit(code)
            return ParseOutcome(Status.CRASH, None, etype, emsg, 0.0, perf_counter() - t0)
        self._proc.kill()
        self._reap()
        return ParseOutcome(
            Status.TIMEOUT,
            None,
            "Timeout",
            f"no reply within {wall_s:g} s of wall time (the wall-clock backstop); worker killed",
            0.0,
            perf_counter() - t0,
        )

    def load(self, spec: CodecSpec) -> ParseOutcome:
        """Build and warm the codec in the worker (outside any cell's limits); a no-op when it is loaded."""
        key = _spec_key(spec)
        if key in self._loaded and self._proc is not None and self._proc.is_alive():
            return ParseOutcome(Status.OK, None)
        loaded = self._request(("load", spec), LOAD_TIMEOUT_S)
        if loaded.status is Status.OK:
            self._loaded.add(key)
        return loaded

    def encode(self, specs: list[CodecSpec], refs: list[int | None], targets: list[float | None], image: Any):
        """Encode ``image`` under each spec in order, in this worker (see :func:`_encode_chain`; ``refs[i]``: the
        chain index of entry i's rate reference, ``targets[i]``: its target bpp when the reference was cached).
        Returns a ParseOutcome whose ``state`` is the chain's result (or a load failure / crash status)."""
        for spec in {_spec_key(s): s for s in specs}.values():
            loaded = self.load(spec)
            if loaded.status is not Status.OK:
                return loaded
        chain = [(_spec_key(s), r, t) for s, r, t in zip(specs, refs, targets, strict=True)]
        return self._request(("encode", chain, image), ENCODE_TIMEOUT_S)

    def parse(self, spec: CodecSpec, data: bytes, size: tuple[int, int], limits: Limits) -> ParseOutcome:
        """Parse ``data`` (an original of ``size`` = (height, width)) under ``limits``."""
        loaded = self.load(spec)
        if loaded.status is not Status.OK:
            return loaded
        msg = ("parse", _spec_key(spec), data, tuple(size), limits.cpu_s, limits.memory_bytes, torch_threads())
        return self._request(msg, limits.wall_s, limits.cpu_s)

    def close(self) -> None:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        self._reap()


class WorkerPool:
    """``n`` persistent workers behind a thread pool; ``submit`` returns a future of a ParseOutcome."""

    def __init__(self, n: int, preload: tuple[str, ...] = ()) -> None:
        if n < 1:
            raise ValueError("a worker pool needs at least one worker")
        ctx = default_context()
        if ctx.get_start_method() == "forkserver":
            ctx.set_forkserver_preload(["harness.workers", *preload])
        self._workers = [IsolatedWorker(ctx) for _ in range(n)]
        self._idle: queue.SimpleQueue[IsolatedWorker] = queue.SimpleQueue()
        for w in self._workers:
            self._idle.put(w)
        self._executor = ThreadPoolExecutor(n, thread_name_prefix="harness-decode")

    def _run(self, spec: CodecSpec, data: bytes, size: tuple[int, int], limits: Limits) -> ParseOutcome:
        worker = self._idle.get()
        try:
            return worker.parse(spec, data, size, limits)
        finally:
            self._idle.put(worker)

    def submit(self, spec: CodecSpec, data: bytes, size: tuple[int, int], limits: Limits) -> Future[ParseOutcome]:
        return self._executor.submit(self._run, spec, data, size, limits)

    def submit_encode(
        self, specs: list[CodecSpec], refs: list[int | None], targets: list[float | None], image: Any
    ) -> Future[ParseOutcome]:
        """One image's encode chain on the next free worker (:meth:`IsolatedWorker.encode`)."""

        def run() -> ParseOutcome:
            worker = self._idle.get()
            try:
                return worker.encode(specs, refs, targets, image)
            finally:
                self._idle.put(worker)

        return self._executor.submit(run)

    def warm(self, specs: list[CodecSpec]) -> list[ParseOutcome]:
        """Start every worker and build each codec in it (outside any deadline); returns failed loads."""

        def load_all(worker: IsolatedWorker) -> list[ParseOutcome]:
            return [o for o in (worker.load(s) for s in specs) if o.status is not Status.OK]

        taken = [self._idle.get() for _ in self._workers]
        try:
            futures = [self._executor.submit(load_all, w) for w in taken]
            return [o for f in futures for o in f.result()]
        finally:
            for w in taken:
                self._idle.put(w)

    @property
    def size(self) -> int:
        return len(self._workers)

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
