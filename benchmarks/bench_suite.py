"""Harness overhead, work avoided and local worker scaling, on JPEG2000 cells of ``bit_errors`` (issue #17, 1 3 6).

The same cells run four ways, each in a fresh process (imports done before the clock starts, the same for all):

* ``harness`` with 2 workers: ``harness.runner.run`` (plan, encode phase, controls, isolated parses in 2 persistent
  workers, trusted half + metrics + SQLite in the main process);
* ``bare`` with 2 lanes: the same cells' work with no harness: encode once per (image, codec config) and decode it
  clean, then per cell the same channel draw (the cell's own RNG), identical streams decoded once, ``codec.parse``
  + ``decode_state`` + the same metrics in-process; no isolation, no controls, no store. Two lanes are two forked
  processes fed (image, codec config) groups, i.e. the best a plain script could do on 2 cores;
* ``harness`` with 1 worker and ``bare`` with 1 lane (a plain loop), for scaling.

Ratios: overhead = harness(2 workers) / bare(2 lanes), the target is <= 1.10; both use the same cores for the same
work, so a parse in a worker overlapping main-process work cannot make the ratio look better than it is (the old
figure, Σ(codec + metric seconds) against wall, could go below zero: it is printed too, to show why it was
dropped). Scaling efficiency = t(1) / (2 t(2)) for the harness (target >= 0.85) and, as the reference of what this
machine gives right now, for the bare loop. Work avoided: decodes performed / cells of the harness run. The bare
loop's cell statuses and output hashes are compared with the harness's store (they must agree). Beside wall time,
each variant counts the CPU seconds of all its processes (the harness's decode workers and forkserver are read
from /proc; the bare lanes are reaped children): on cores shared with other jobs, the CPU ratio measures the
harness's extra work whatever share of the cores each run got.

    .venv/bin/python benchmarks/bench_suite.py                       # all four, 3 seeds, 10 images (~4-6 min)
    .venv/bin/python benchmarks/bench_suite.py --seeds 1 --limit-images 4
    .venv/bin/python benchmarks/bench_suite.py --variant harness --workers 2 --out /tmp/h2 --json h2.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common

#: The JPEG2000 configurations of ``bit_errors`` that do not depend on RDEIC (every one but ``j2k-plain@rdeic``).
JPEG2000_LABELS = (
    "j2k-plain@0.25bpp",
    "j2k-reversible",
    "j2k-resilient",
    "j2k-resilient-nonstrict",
    "j2k-layers",
    "j2k-tiles",
)


def _options(args: argparse.Namespace, out: Path, workers: int) -> Any:
    from harness.config import load_suite
    from harness.planning import RunOptions

    return RunOptions(
        suite=load_suite(args.suite),
        out=out,
        codecs=tuple(c for c in args.codecs.split(",") if c),
        limit_images=args.limit_images,
        seeds=args.seeds,
        workers=workers,
        fresh=True,
        progress=False,
        device=args.device,
        batch_size=args.batch_size,
    )


# -- the harness ------------------------------------------------------------------------------------------------
def run_harness(args: argparse.Namespace) -> dict[str, Any]:
    """``harness.runner.run`` with its phases timed (wrappers installed here; the harness is not modified)."""
    import harness.runner as runner
    from harness.artifacts import ArtifactSource

    phases: dict[str, float] = Counter()
    phases_cpu: dict[str, float] = Counter()  # CPU seconds of the main process alone (all its threads)
    progress: list[Any] = []

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                out = fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - t0
                phases_cpu[name] += time.process_time() - c0
            if name == "execution":
                progress.append(out)
            return out

        return wrapper

    runner.run_controls = timed("controls", runner.run_controls)
    runner.execute_local = timed("execution", runner.execute_local)
    ArtifactSource.prepare = timed("encode", ArtifactSource.prepare)
    # CPU of the decode workers: children of the forkserver, so not in this process's RUSAGE_CHILDREN; read from
    # /proc just before the pool closes them (plus the forkserver's own)
    from harness.workers import WorkerPool

    helper_cpu = {"workers": 0.0, "forkserver": 0.0}
    close = WorkerPool.close

    def counted_close(pool: Any) -> None:
        helper_cpu["workers"] += sum(common.proc_cpu(w._proc.pid) for w in pool._workers if w._proc is not None)
        close(pool)

    WorkerPool.close = counted_close
    out = Path(args.out)
    opts = _options(args, out, args.workers)
    cpu0 = common.cpu_now()
    with common.quiet_warnings(), common.Meter() as meter:
        result = runner.run(opts)
    from multiprocessing import forkserver

    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
    helper_cpu["forkserver"] = common.proc_cpu(pid) if pid else 0.0
    cpu_s = common.cpu_now() - cpu0 + helper_cpu["workers"] + helper_cpu["forkserver"]
    p = progress[0] if progress else None
    db = sqlite3.connect(out / "results.sqlite")
    (parse_s, reconstruct_s, metrics_s) = db.execute(
        "SELECT SUM(COALESCE(parse_s,0)), SUM(COALESCE(reconstruct_s,0)), SUM(COALESCE(metrics_s,0)) FROM decodes"
    ).fetchone()
    (corrupt_s,) = db.execute("SELECT SUM(COALESCE(corrupt_s,0)) FROM cells").fetchone()
    (encode_s,) = db.execute(
        "SELECT SUM(e) FROM (SELECT MAX(encode_s) AS e FROM cells GROUP BY codec_fingerprint, image_sha256)"
    ).fetchone()
    statuses = dict(db.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())
    per_codec = {
        label: {"cells": n, "decodes": n - memoised}
        for label, n, memoised in db.execute(
            "SELECT codec_label, COUNT(*), SUM(memoised) FROM cells GROUP BY codec_label ORDER BY codec_label"
        )
    }
    db.close()
    work = (parse_s or 0) + (reconstruct_s or 0) + (metrics_s or 0) + (encode_s or 0)
    return {
        "variant": "harness",
        "suite": args.suite,
        "codecs": args.codecs or "all",
        "limit_images": args.limit_images,
        "seeds": args.seeds,
        "device": args.device,
        "workers": args.workers,
        **meter.as_dict(),
        "run_seconds": result.seconds,
        "cpu_s": cpu_s,
        "cpu_s_of_workers": helper_cpu["workers"],
        "cpu_s_of_forkserver": helper_cpu["forkserver"],
        "phases_s": dict(phases),
        "phases_main_cpu_s": dict(phases_cpu),
        "cells": result.computed,
        "decodes": result.decodes,
        "memo_hits": result.memo_hits,
        "worker_restarts": result.worker_restarts,
        "statuses": statuses,
        "per_codec": per_codec,
        "store_work_s": {
            "parse": parse_s,
            "reconstruct": reconstruct_s,
            "metrics": metrics_s,
            "encode": encode_s,
            "corrupt": corrupt_s,
            "sum_codec_metric": work,
        },
        "progress": None
        if p is None
        else {"decodes": p.decodes, "memo_hits": p.memo_hits, "reconstruct_s": p.reconstruct_s, "wall_s": p.wall_s},
        "peak_rss_gib_main": common.peak_rss_gib(),
    }


# -- the bare loop ----------------------------------------------------------------------------------------------
_PLAN: Any = None  # set before forking the lanes: children inherit it
_GROUPS: dict[str, list[Any]] = {}  # encode key -> its cells, in plan order
_ART: dict[str, tuple[Any, Any, dict[int, Any], dict[int, dict[str, float]]]] = {}  # encode key -> artifacts


def _encode_image(index: int) -> dict[str, tuple[Any, Any, dict[int, Any], dict[int, dict[str, float]]]]:
    """Encode one image under every codec config (rate references first) and decode each stream clean."""
    import numpy as np

    from harness.cells import encode_key

    plan = _PLAN
    ds, entry, prep = plan.chosen[index]
    original = ds.load(entry)
    streams: dict[str, Any] = {}
    out = {}
    order = sorted(plan.codecs, key=lambda label: label in plan.rate_refs)  # references before rate-matched ones
    for label in order:
        codec = plan.codecs[label]
        ref = plan.rate_refs.get(label)
        if ref is None:
            bitstream = codec.encode(original)
        else:
            bitstream = codec.encode_at_rate(original, 8.0 * len(streams[ref].data) / (entry.height * entry.width))
        streams[label] = bitstream
        clean, clean_metrics = {}, {}
        for seed in plan.decode_seeds:
            image = codec.decode(bitstream.data, (entry.height, entry.width), seed)
            clean[seed] = np.ascontiguousarray(image[: entry.height, : entry.width])
            clean_metrics[seed] = {name: m(clean[seed], original) for name, m in plan.metrics.items()}
        key = encode_key(entry.sha256, entry.height, entry.width, prep, plan.fingerprints[label])
        out[key] = (original, bitstream, clean, clean_metrics)
    return out


def _run_group(encode_key: str) -> tuple[list[tuple[str, str, str | None, str | None]], int]:
    """Every cell of one (image, codec config): channel, identical streams decoded once, parse + reconstruct +
    metrics in this process. Returns (cell key, status, output pixels sha256, error) per cell and the decodes run."""
    from harness.cells import decode_key
    from harness.channel import Channel
    from harness.codecs.base import InvalidOutput
    from harness.hashing import pixels_sha256, sha256_bytes

    plan = _PLAN
    original, bitstream, clean, _clean_metrics = _ART[encode_key]
    channel = Channel()
    memo: dict[str, tuple[str, str | None, str | None]] = {}
    rows = []
    decodes = 0
    for cell in _GROUPS[encode_key]:
        codec = plan.codecs[plan.label_of(cell.codec_fingerprint)]
        corruption = plan.corruption_of(cell)
        tx = channel.transmit(cell, bitstream, corruption)
        latent = cell.key if corruption.acts_on == "latent" else None
        dkey = decode_key(
            cell.codec_fingerprint, sha256_bytes(tx.data), cell.decode_seed, cell.image_sha256, latent, cell.metrics
        )
        if dkey not in memo:
            if tx.data == bitstream.data and latent is None:  # the clean stream: its decode is already there
                image = clean[cell.decode_seed]
                memo[dkey] = ("ok", pixels_sha256(image), None)
            else:
                decodes += 1
                hook = corruption.hook_for(cell.scope, cell.rng()) if latent is not None else None
                try:
                    state = codec.parse(tx.data, (cell.height, cell.width))
                    image = codec.decode_state(state, cell.decode_seed, hook, size=(cell.height, cell.width))
                    image = image[: cell.height, : cell.width]
                    for m in plan.metrics.values():
                        m(image, original)
                        m(image, clean[cell.decode_seed])
                    memo[dkey] = ("ok", pixels_sha256(image), None)
                except InvalidOutput as exc:
                    memo[dkey] = ("invalid_output", None, f"InvalidOutput: {str(exc)[:200]}")
                except Exception as exc:
                    memo[dkey] = ("exception", None, f"{type(exc).__name__}: {str(exc)[:200]}")
        rows.append((cell.key, *memo[dkey]))
    return rows, decodes


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    global _PLAN
    from harness.planning import make_plan

    plan = make_plan(_options(args, Path(args.out), 1))  # the cells a plain script would loop over (not timed)
    for cell in plan.cells:
        _GROUPS.setdefault(cell.encode_key, []).append(cell)
    _PLAN = plan
    rows: list[tuple[str, str, str | None, str | None]] = []
    decodes = 0
    cpu0 = common.cpu_now()
    with common.quiet_warnings(), common.Meter() as meter:
        t0 = time.perf_counter()
        if args.lanes <= 1:
            for i in range(len(plan.chosen)):
                _ART.update(_encode_image(i))
            encode_s = time.perf_counter() - t0
            for key in _GROUPS:
                part, n = _run_group(key)
                rows.extend(part)
                decodes += n
        else:
            ctx = mp.get_context("fork")
            with ctx.Pool(args.lanes) as pool:
                for part in pool.imap_unordered(_encode_image, range(len(plan.chosen))):
                    _ART.update(part)
            encode_s = time.perf_counter() - t0
            with ctx.Pool(args.lanes) as pool:  # forked after the encode phase: the lanes inherit its artifacts
                for part, n in pool.imap_unordered(_run_group, list(_GROUPS), chunksize=1):
                    rows.extend(part)
                    decodes += n
    cpu_s = common.cpu_now() - cpu0  # the lanes are this process's children, waited for: counted
    return {
        "variant": "bare",
        "lanes": args.lanes,
        **meter.as_dict(),
        "cpu_s": cpu_s,
        "encode_phase_s": encode_s,
        "cells": len(rows),
        "decodes": decodes,
        "statuses": dict(Counter(r[1] for r in rows)),
        "rows": rows,
    }


# -- orchestration ----------------------------------------------------------------------------------------------
def _child(args: argparse.Namespace, variant: str, n: int, out: Path, json_path: Path) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--variant",
        variant,
        "--workers" if variant == "harness" else "--lanes",
        str(n),
        "--out",
        str(out),
        "--json",
        str(json_path),
        "--suite",
        args.suite,
        "--codecs",
        args.codecs,
        "--seeds",
        str(args.seeds),
    ]
    if args.limit_images:
        cmd += ["--limit-images", str(args.limit_images)]
    done = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} x{n} failed: {done.stderr.strip()[-2000:]}")
    return json.loads(json_path.read_text())


def _compare(rows: list[list[Any]], run_dir: Path) -> dict[str, Any]:
    """Bare rows against the harness store: same status and the same output pixels, cell by cell; the cells that
    differ are listed (what the harness recorded and what the bare loop got)."""
    db = sqlite3.connect(run_dir / "results.sqlite")
    stored = {
        row[0]: row[1:]
        for row in db.execute(
            "SELECT c.key, c.status, d.output_sha256, c.codec_label, c.image_id, c.level, c.scope, c.replicate, "
            "c.error_type, c.error_message FROM cells c JOIN decodes d ON c.decode_key = d.decode_key"
        )
    }
    db.close()
    differ = []
    for key, status, sha, error in rows:
        got = stored.get(key)
        if got is None or got[:2] != (status, sha):
            differ.append(
                {
                    "cell": None if got is None else f"{got[2]} {got[3]} {got[4]} {got[5]} replicate {got[6]}",
                    "harness": None if got is None else f"{got[0]}: {got[7] or ''} {(got[8] or '')[:160]}".strip(),
                    "bare": f"{status}: {error or ''}".strip(),
                }
            )
    return {
        "cells": len(rows),
        "same_status_and_pixels": len(rows) - len(differ),
        "missing_in_store": sum(k not in stored for k, *_ in rows),
        "differ": differ[:10],
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """The four variants, in rounds of harness 2, bare 2, harness 1, bare 1 (a change of load hits all alike);
    each ratio uses the fastest round of each variant (the one least disturbed by other jobs)."""
    rounds: dict[str, list[dict[str, Any]]] = {}
    check: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
        t = Path(tmp)
        for r in range(args.rounds):
            for variant, n in (("harness", 2), ("bare", 2), ("harness", 1), ("bare", 1)):
                name = f"{variant}_{n}"
                print(f"  round {r + 1}: {name} (load {common.loadavg()}) ...", flush=True)
                res = _child(args, variant, n, t / f"{name}_{r}", t / f"{name}_{r}.json")
                print(f"    {res['wall_s']:.1f} s, {res['cells']} cells", flush=True)
                if variant == "bare" and r == 0:
                    check[name] = _compare(res["rows"], t / "harness_2_0")
                res.pop("rows", None)
                rounds.setdefault(name, []).append(res)
    results = {name: min(runs, key=lambda x: x["wall_s"]) for name, runs in rounds.items()}
    h2, h1, b2, b1 = (results[k] for k in ("harness_2", "harness_1", "bare_2", "bare_1"))
    work = h2["store_work_s"]["sum_codec_metric"]
    return {
        "suite": args.suite,
        "codecs": args.codecs,
        "seeds": args.seeds,
        "limit_images": args.limit_images,
        "rounds": args.rounds,
        "cells": h2["cells"],
        "overhead_ratio": h2["wall_s"] / b2["wall_s"],
        "overhead_ratio_1": h1["wall_s"] / b1["wall_s"],
        "cpu_overhead_ratio": h2["cpu_s"] / b2["cpu_s"],
        "cpu_overhead_ratio_1": h1["cpu_s"] / b1["cpu_s"],
        "cpu_2_over_1_workers": h2["cpu_s"] / h1["cpu_s"],
        "cpu_2_over_1_lanes": b2["cpu_s"] / b1["cpu_s"],
        "overhead_ratio_execution_only": (h2["phases_s"]["controls"] + h2["phases_s"]["execution"])
        / (b2["wall_s"] - b2["encode_phase_s"]),
        "old_figure_outside_work_pct": 100 * (1 - work / h2["wall_s"]),
        "decodes": h2["decodes"],
        "memo_hits": h2["memo_hits"],
        "decodes_per_cell": h2["decodes"] / h2["cells"],
        "efficiency_harness": h1["wall_s"] / (2 * h2["wall_s"]),
        "efficiency_harness_execution": _exec(h1) / (2 * _exec(h2)),
        "efficiency_bare": b1["wall_s"] / (2 * b2["wall_s"]),
        "bare_matches_store": check,
        "walls_per_round": {name: [x["wall_s"] for x in runs] for name, runs in rounds.items()},
        "runs": results,
    }


def _exec(run: dict[str, Any]) -> float:
    """Seconds of a harness run's controls + execution: the part the workers take part in."""
    return run["phases_s"]["controls"] + run["phases_s"]["execution"]


def report(s: dict[str, Any]) -> None:
    r = s["runs"]
    print(
        f"suite {s['suite']} ({s['codecs']}), {s['seeds']} seeds, images: {s['limit_images'] or 'all'}: "
        f"{s['cells']} cells"
    )
    for name in ("harness_2", "bare_2", "harness_1", "bare_1"):
        x = r[name]
        busy = x["machine_cpu_busy"]
        extra = f"phases {', '.join(f'{k} {v:.1f} s' for k, v in x['phases_s'].items())}" if "phases_s" in x else ""
        print(
            f"  {name:10s} {x['wall_s']:7.1f} s  CPU {x['cpu_s']:7.1f} s  machine CPU busy {100 * (busy or 0):3.0f}%  "
            f"load {x['load_before']} -> {x['load_after']}  {extra}"
        )
    print(
        f"1. overhead: harness (2 workers) / bare loop (2 lanes) = {s['overhead_ratio']:.3f}  (target <= 1.10); "
        f"1 worker / 1 lane = {s['overhead_ratio_1']:.3f}"
    )
    print(f"   controls + execution only (encode phases left out): {s['overhead_ratio_execution_only']:.3f}")
    print(
        f"   CPU seconds, harness / bare: {s['cpu_overhead_ratio']:.3f} with 2 workers vs 2 lanes, "
        f"{s['cpu_overhead_ratio_1']:.3f} with 1 vs 1"
    )
    print(
        f"   old figure (1 - Σ codec+metric / wall, 2 workers): {s['old_figure_outside_work_pct']:.0f}% (not a measure)"
    )
    print(
        f"3. work avoided: {s['decodes']} decodes for {s['cells']} cells = {s['decodes_per_cell']:.3f} per cell "
        f"({s['memo_hits']} memo hits)"
    )
    print(
        f"6. scaling 1 -> 2 workers: efficiency t1/(2 t2) = {s['efficiency_harness']:.3f} (target >= 0.85; "
        f"controls + execution only: {s['efficiency_harness_execution']:.3f}); bare loop on this machine now: "
        f"{s['efficiency_bare']:.3f}"
    )
    for name, c in s["bare_matches_store"].items():
        print(f"   {name}: {c['same_status_and_pixels']} of {c['cells']} cells match the harness store")
        for d in c["differ"]:
            print(f"     differs: {d['cell']}: harness {d['harness']!r}, bare {d['bare']!r}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("all", "harness", "bare"), default="all")
    ap.add_argument("--suite", default="bit_errors")
    ap.add_argument("--codecs", default=",".join(JPEG2000_LABELS), help="codec labels (comma-separated)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1, help="repeat the four runs; ratios use each one's fastest")
    ap.add_argument("--limit-images", type=int)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--device")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--out", help="run directory of a single variant (default: a temporary one)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if args.variant == "all":
        result = run_all(args)
        report(result)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-suite-") as tmp:
            args.out = args.out or str(Path(tmp) / "run")  # the run directory (a temporary one by default)
            result = run_harness(args) if args.variant == "harness" else run_bare(args)
        printable = {k: v for k, v in result.items() if k != "rows"}
        if not args.json:
            print(json.dumps(printable, indent=2, default=str))
        elif args.variant == "harness":
            print(
                f"{result['cells']} cells, {result['decodes']} decodes ({result['memo_hits']} memo hits) in "
                f"{result['wall_s']:.1f} s; per codec: {json.dumps(result['per_codec'])}"
            )
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
