"""Isolation overhead on JPEG2000 parses, measured in one run (ratios are what matter, not seconds) (issue #17, 2).

Compares, on the same byte strings (clean and BSC-corrupted JPEG2000 streams of the bundled samples):
  * in-process ``codec.parse(data, size)`` (no isolation: the floor),
  * the persistent worker path the runner uses (``IsolatedWorker.parse(spec, data, size, limits)``, one worker,
    calls in sequence: pipe round trip, per-call rlimits, pickled state back),
  * one fresh process per cell (a spawned interpreter per parse: the naive isolation).
The three are interleaved stream by stream, so a change in the machine's load hits them alike; besides the wall
time of each call, the CPU seconds of every process involved are counted (this process, the persistent worker read
from /proc, the per-cell processes once reaped). Targets (issue 3): persistent <= 1.3x in-process,
process-per-cell >= 20x slower than persistent.

    .venv/bin/python benchmarks/bench_workers.py [--cells 200] [--fresh-cells 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import statistics
import time
from typing import Any

import common
import numpy as np

from corruptions.bsc import BinarySymmetricChannel
from harness.codecs.base import create_codec
from harness.datasets import create_dataset
from harness.status import Status
from harness.workers import IsolatedWorker, Limits

LIMITS = Limits(cpu_s=60.0, wall_s=600.0, memory_bytes=2**30)


def make_streams(n: int, ber: float) -> tuple[Any, list[tuple[bytes, tuple[int, int]]]]:
    codec = create_codec("jpeg2000", target_bpp=0.25)
    ds = create_dataset("samples")
    rng = np.random.default_rng(0)
    channel = BinarySymmetricChannel(ber=ber)
    images = [ds.load(e) for e in ds.entries()]
    encoded = [(codec.encode(im), im.shape[:2]) for im in images]
    streams: list[tuple[bytes, tuple[int, int]]] = []
    while len(streams) < n:
        for bs, size in encoded:
            streams.append((channel.apply(bs.data, bs.ranges("payload"), rng).data, size))
    return codec, streams[:n]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--fresh-cells", type=int, default=20, help="process-per-cell calls (each spawns Python)")
    ap.add_argument("--ber", type=float, default=1e-5, help="BSC flip probability on the payload")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    codec, streams = make_streams(args.cells, args.ber)
    spec = codec.spec()

    def in_process(item: tuple[bytes, tuple[int, int]]) -> None:
        with contextlib.suppress(Exception):  # corrupted streams raise; the time still counts
            codec.parse(*item)

    spawn = mp.get_context("spawn")

    def fresh_process(item: tuple[bytes, tuple[int, int]]) -> None:
        w = IsolatedWorker(spawn)
        try:
            assert w.parse(spec, *item, LIMITS).status in tuple(Status)
        finally:
            w.close()

    worker = IsolatedWorker()
    times: dict[str, list[float]] = {"in_process": [], "persistent": [], "process_per_cell": []}
    cpu: dict[str, float] = dict.fromkeys(times, 0.0)  # CPU seconds of every process involved, summed
    with common.quiet_warnings(), common.Meter() as meter:
        worker.parse(spec, *streams[0], LIMITS)  # warm: process started, codec built (as WorkerPool.warm does)
        in_process(streams[0])
        worker_cpu0 = common.proc_cpu(worker._proc.pid)
        for i, item in enumerate(streams):
            variants = [("in_process", in_process), ("persistent", lambda d: worker.parse(spec, *d, LIMITS))]
            if i < args.fresh_cells:
                variants.append(("process_per_cell", fresh_process))
            for name, fn in variants[i % 2 :] + variants[: i % 2]:  # alternate who goes first
                c0 = common.cpu_now()  # this process + waited children (the spawned per-cell processes)
                t0 = time.perf_counter()
                fn(item)
                times[name].append(time.perf_counter() - t0)
                cpu[name] += common.cpu_now() - c0
        cpu["persistent"] += common.proc_cpu(worker._proc.pid) - worker_cpu0  # the worker only ran those calls
        worker.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_per_call = {k: cpu[k] / max(len(times[k]), 1) for k in times}
    result = {
        "streams": len(streams),
        "ber": args.ber,
        "fresh_cells": min(args.fresh_cells, len(streams)),
        "median_s": med,
        "mean_s": {k: statistics.fmean(v) for k, v in times.items()},
        "cpu_s_per_call": cpu_per_call,
        "persistent_over_in_process": med["persistent"] / med["in_process"],
        "per_cell_over_persistent": med["process_per_cell"] / med["persistent"],
        "cpu_persistent_over_in_process": cpu_per_call["persistent"] / cpu_per_call["in_process"],
        "cpu_per_cell_over_persistent": cpu_per_call["process_per_cell"] / cpu_per_call["persistent"],
        **meter.as_dict(),
    }
    print(f"JPEG2000 parse, {len(streams)} streams (clean/BSC {args.ber:g} on the payload), median per cell:")
    print(f"  in-process          {med['in_process'] * 1e3:8.2f} ms")
    print(
        f"  persistent worker   {med['persistent'] * 1e3:8.2f} ms   ratio to in-process: "
        f"{result['persistent_over_in_process']:5.2f}x  (target <= 1.3x)"
    )
    print(f"  process per cell    {med['process_per_cell'] * 1e3:8.2f} ms   ({result['fresh_cells']} cells)")
    print(f"  process-per-cell / persistent: {result['per_cell_over_persistent']:6.1f}x  (target >= 20x)")
    print(
        "  CPU per call (all processes involved): "
        + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in cpu_per_call.items())
        + f"; persistent / in-process {result['cpu_persistent_over_in_process']:.2f}x, "
        f"per-cell / persistent {result['cpu_per_cell_over_persistent']:.0f}x"
    )
    print(f"  machine CPU busy {100 * (meter.busy_share or 0):.0f}%, load {meter.load_before} -> {meter.load_after}")
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
