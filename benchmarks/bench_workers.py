"""Isolation overhead on JPEG2000 cells, measured in one run (ratios are what matter, not seconds).

Compares, on the same byte strings (clean and BSC-corrupted JPEG2000 streams of the bundled samples):
  * in-process ``codec.parse`` (no isolation: the floor),
  * the persistent worker path the runner uses (one worker, calls in sequence),
  * one fresh process per cell (spawned interpreter per decode: the naive isolation).
Then runs a real suite with one worker and reports the share of its wall time spent outside codec and
metric work. Targets (issue 3): persistent <= 1.3x in-process, >= 20x faster than process-per-cell.

    python benchmarks/bench_workers.py [--cells 200] [--fresh-cells 20]
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from corruptions.bsc import BinarySymmetricChannel
from harness.codecs.base import create_codec
from harness.config import load_suite
from harness.datasets import create_dataset
from harness.runner import RunOptions, run
from harness.status import Status
from harness.workers import IsolatedWorker, Limits

LIMITS = Limits(cpu_s=60.0, wall_s=600.0, memory_bytes=2**30)


def make_streams(n: int) -> tuple[object, list[tuple[bytes, tuple[int, int]]]]:
    codec = create_codec("jpeg2000", target_bpp=0.25)
    ds = create_dataset("samples")
    rng = np.random.default_rng(0)
    channel = BinarySymmetricChannel(ber=1e-5)
    streams = []
    images = [ds.load(e) for e in ds.entries()]
    encoded = [(codec.encode(im), im.shape[:2]) for im in images]
    while len(streams) < n:
        for bs, size in encoded:
            streams.append((channel.apply(bs.data, bs.ranges("payload"), rng).data, size))
    return codec, streams[:n]


def per_call(fn, streams: list[bytes]) -> float:
    """Median seconds per call (median resists the odd slow corrupted decode)."""
    times = []
    for data in streams:
        t0 = time.perf_counter()
        fn(data)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=200)
    ap.add_argument("--fresh-cells", type=int, default=20)
    args = ap.parse_args(argv)
    codec, streams = make_streams(args.cells)

    def in_process(data: bytes) -> None:
        with contextlib.suppress(Exception):  # corrupted streams raise; the time still counts
            codec.parse(*data)

    worker = IsolatedWorker()
    worker.parse(codec.spec(), *streams[0], LIMITS)  # warm: process started, codec built
    t_in = per_call(in_process, streams)
    t_persist = per_call(lambda d: worker.parse(codec.spec(), *d, LIMITS), streams)
    worker.close()

    spawn = mp.get_context("spawn")

    def fresh_process(data: bytes) -> None:
        w = IsolatedWorker(spawn)
        try:
            assert w.parse(codec.spec(), *data, LIMITS).status in tuple(Status)
        finally:
            w.close()

    t_fresh = per_call(fresh_process, streams[: args.fresh_cells])

    print(f"JPEG2000 parse, {len(streams)} streams (clean/BSC 1e-5 payload), median seconds per cell:")
    print(f"  in-process          {t_in * 1e3:8.2f} ms")
    ratio = t_persist / t_in
    print(f"  persistent worker   {t_persist * 1e3:8.2f} ms   ratio to in-process: {ratio:5.2f}x  (target <= 1.3x)")
    print(f"  process per cell    {t_fresh * 1e3:8.2f} ms   ({args.fresh_cells} cells)")
    print(f"  process-per-cell / persistent: {t_fresh / t_persist:6.1f}x  (target >= 20x)")

    with tempfile.TemporaryDirectory() as tmp:
        suite = load_suite("demo")
        t0 = time.perf_counter()
        run(RunOptions(suite=suite, out=Path(tmp), workers=1, progress=False))
        wall = time.perf_counter() - t0
        con = sqlite3.connect(Path(tmp) / "results.sqlite")
        (work,) = con.execute(
            "SELECT SUM(COALESCE(parse_s,0)+COALESCE(reconstruct_s,0)+COALESCE(metrics_s,0)) FROM decodes"
        ).fetchone()
        (encode,) = con.execute(
            "SELECT SUM(e) FROM (SELECT MAX(encode_s) AS e FROM cells GROUP BY codec_fingerprint, image_sha256)"
        ).fetchone()
        (n_cells,) = con.execute("SELECT COUNT(*) FROM cells").fetchone()
        con.close()
    codec_metric = work + encode
    print(
        f"suite 'demo' with 1 worker: {n_cells} cells in {wall:.2f} s; codec+metric work {codec_metric:.2f} s "
        f"(encode {encode:.2f} s); outside it: {100 * (1 - codec_metric / wall):.0f}% of wall time "
        "(includes start-up, planning, controls' in-process clean decodes, SQLite commits and IPC)"
    )


if __name__ == "__main__":
    main()
