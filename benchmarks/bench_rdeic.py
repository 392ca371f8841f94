"""What an RDEIC decode costs per stage, batch 1 vs B, fp32 vs bf16: random weights (timing only) (issue #17, 5).

    .venv/bin/python benchmarks/bench_rdeic.py --config tiny --plan 256:1,8 --precisions fp32,bf16 --repeats 3
    .venv/bin/python benchmarks/bench_rdeic.py --config official --plan "256:1 128:1,8"        # CPU: minutes
    .venv/bin/python benchmarks/bench_rdeic.py --config official --plan 512x768:1,8 --device cuda \\
        --precisions fp32,bf16                                                                   # on a GPU

Per image size of the plan, one stream is encoded and entropy-decoded (``codec.parse``: the part the isolated
workers run, on the CPU); its state is then reconstructed B times in one stacked batch (``codec.decode_batch(...,
stack=True)``, each item with its own seed) and ``codec.last_timings`` gives synthesis, each denoising step and the
VAE decode. Per-image figures divide by B. On the CPU every stage is timed in CPU seconds too (the codec's clock is
swapped for this process's CPU clock while it decodes; each reading is logged with the wall clock beside it), since
wall time on shared cores mostly measures the other jobs. torch's OpenMP threads wait passively by default here
(``--omp-wait-policy``): with libgomp's default, a thread spins while it waits for a sibling that another job has
descheduled, which made decodes many times slower on 2 busy cores. Random weights cost the same arithmetic as the
real ones; their images and bpp mean nothing. ``precision`` is autocast, which the codec enables on CUDA only: on
the CPU a bf16 codec computes in fp32 (measured when asked, and labelled so). Prints one JSON object (or
``--json PATH``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from typing import Any

import common
import numpy as np

#: RDEIC paper, Table I: RDEIC-2 (2 denoising steps) on one RTX 4090, seconds per image (Kodak, 768x512).
PAPER_TABLE_I = {"denoising_s": 0.173, "encoder_s": 0.119, "other_s": 0.198, "gpu": "RTX 4090"}
#: The figure issue #17 asks for on one H100/H200: official 512x768 decodes per second, batched, bf16.
H100_TARGET_DECODES_PER_S = 10.0


def test_image(height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class DualClock:
    """Stands in for the ``time`` module of the RDEIC codec and sampler while a CPU decode runs: their
    ``perf_counter()`` returns this process's CPU time, and every reading is logged with the wall clock beside it,
    so each stage's interval in ``last_timings`` (CPU seconds) is matched back to its wall seconds."""

    def __init__(self) -> None:
        self.log: list[tuple[float, float]] = []  # (cpu, wall) per reading

    def perf_counter(self) -> float:
        cpu = time.process_time()
        self.log.append((cpu, time.perf_counter()))
        return cpu

    def wall_of(self, cpu_interval: float) -> float | None:
        for j, (cj, wj) in enumerate(self.log):
            for ci, wi in self.log[:j]:
                if cj - ci == cpu_interval:  # the same floats the codec subtracted
                    return wj - wi
        return None


@contextlib.contextmanager
def cpu_clock_in_codec(enabled: bool):
    import harness.codecs.rdeic.codec as codec_module
    import harness.codecs.rdeic.sampler as sampler_module

    clock = DualClock()
    if enabled:
        codec_module.time = sampler_module.time = clock  # type: ignore[assignment]
    try:
        yield clock
    finally:
        codec_module.time = sampler_module.time = time


def _stages(timings: dict[str, float], b: int) -> dict[str, Any]:
    """Per-image seconds of each stage of a batch of ``b`` (from ``last_timings``-style keys)."""
    steps = {k: v / b for k, v in timings.items() if k.startswith("step_") and v is not None}
    return {
        "denoising": sum(steps.values()),
        "steps": steps,
        "synthesis": (timings.get("synthesis_s") or 0.0) / b,
        "vae_decode": (timings.get("vae_decode_s") or 0.0) / b,
        "reconstruct": (timings.get("reconstruct_s") or 0.0) / b,
    }


def _decode(codec: Any, state: Any, size: tuple[int, int], b: int, device: str) -> dict[str, Any]:
    """One stacked reconstruct of ``b`` copies of ``state`` (seeds 0..b-1), timed per stage: wall seconds, and on
    the CPU also CPU seconds (the work done, whatever share of the cores other jobs leave)."""
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    with cpu_clock_in_codec(not cuda) as clock:
        c = time.process_time()
        t = time.perf_counter()
        decoded = codec.decode_batch([state] * b, list(range(b)), [None] * b, size, stack=True)
        _sync(device)
        wall = time.perf_counter() - t
        cpu = time.process_time() - c
    timings = {k: v for k, v in codec.last_timings.items() if k.endswith("_s") and k != "entropy_decode_s"}
    row: dict[str, Any] = {
        "batch": b,
        "stacked": (int(codec.last_timings.get("batch", 1)) == b) if b > 1 else "n/a (one item)",
        "wall_s": wall,
        "decodes_per_s": b / wall,  # reconstruct only: entropy decoding runs beside it, in the workers
        "failed_items": [type(d).__name__ for d in decoded if isinstance(d, Exception)],
        "peak_rss_gib_so_far": common.peak_rss_gib(),
    }
    if cuda:
        row["per_image_wall_s"] = _stages(timings, b)
        row["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:  # last_timings hold CPU seconds here; their wall seconds come from the clock's log
        row["cpu_s"] = cpu
        row["per_image_cpu_s"] = _stages(timings, b)
        row["per_image_wall_s"] = _stages({k: clock.wall_of(v) for k, v in timings.items()}, b)
    row["per_image_wall_s"]["reconstruct"] = wall / b
    return row


def _timed(fn: Any, repeats: int) -> tuple[Any, float, float]:
    """(result, least wall seconds, least CPU seconds) over ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return out, min(walls), min(cpus)


def measure(args: argparse.Namespace, precision: str) -> list[dict[str, Any]]:
    """Every (size, batches) entry of the plan with one codec of this precision (its model built once)."""
    from harness.codecs.rdeic.codec import RDEIC

    codec = RDEIC(
        config=args.config,
        allow_random_weights=True,
        steps=args.steps,
        device=args.device,
        precision=precision,
        z_coding=args.z_coding,
        attention=args.attention,
    )
    cuda = args.device.startswith("cuda")
    t = time.perf_counter()
    codec.model()
    codec.context()
    codec.warm()  # the compression module's tables and torchac's compiled extension, as a decode worker does
    build_s = time.perf_counter() - t
    runs = []
    for height, width, batches in args.plan:
        out: dict[str, Any] = {
            "precision": precision,
            "computes_in": precision
            if cuda or precision == "fp32"
            else f"{precision} asked, fp32 run (autocast: CUDA only)",
            "height": height,
            "width": width,
            "build_s": build_s,
        }
        image = test_image(height, width)
        size = image.shape[:2]

        def encode(image: np.ndarray = image) -> Any:
            bs = codec.encode(image)
            _sync(args.device)
            return bs

        bs, out["encode_s"], out["encode_cpu_s"] = _timed(encode, args.repeats)
        out["file_bytes"] = len(bs.data)
        # per image, on the CPU (in the harness: the isolated workers, beside the reconstructs)
        state, out["entropy_decode_s"], out["entropy_decode_cpu_s"] = _timed(
            lambda bs=bs, size=size: codec.parse(bs.data, size), args.repeats
        )
        if args.warmup:
            codec.decode_state(state, 0, size=size)  # kernels, allocator: not timed
        out["batches"] = {}
        for b in batches:
            best: dict[str, Any] | None = None
            for _ in range(args.repeats):  # keep the least disturbed repeat (CPU seconds on the CPU, wall on a GPU)
                row = _decode(codec, state, size, b, args.device)
                key = "wall_s" if cuda else "cpu_s"
                if best is None or row[key] < best[key]:
                    best = row
            assert best is not None
            best["repeats"] = args.repeats
            out["batches"][str(b)] = best
            w = best["per_image_wall_s"]
            line = (
                f"  {args.config} {height}x{width} {precision} batch {b}: {best['wall_s']:.2f} s wall "
                f"({w['reconstruct']:.3f} s/image: denoising {w['denoising']:.3f}, VAE {w['vae_decode']:.3f}, "
                f"synthesis {w['synthesis']:.3f})"
            )
            if not cuda:
                c = best["per_image_cpu_s"]
                line += (
                    f"; CPU s/image {best['cpu_s'] / b:.3f} (denoising {c['denoising']:.3f}, VAE "
                    f"{c['vae_decode']:.3f}, synthesis {c['synthesis']:.3f})"
                )
            print(line + f", stacked={best['stacked']}", flush=True)
        first = out["batches"][str(batches[0])]
        for clock in ("wall", "cpu"):
            per = first.get(f"per_image_{clock}_s")
            if per is None:
                continue
            suffix = "_s" if clock == "wall" else "_cpu_s"
            out[f"vs_paper_table_i_{clock}"] = {  # per image, at the first batch size (the paper's: 1)
                "denoising_s": per["denoising"],
                "encoder_s": out["encode" + suffix],
                "other_s": out["entropy_decode" + suffix] + per["synthesis"] + per["vae_decode"],
            }
        runs.append(out)
    return runs


def parse_plan(text: str) -> list[tuple[int, int, list[int]]]:
    """``"256:1 128x192:1,8"`` -> [(256, 256, [1]), (128, 192, [1, 8])]."""
    plan = []
    for entry in text.split():
        size, _, batches = entry.partition(":")
        h, _, w = size.partition("x")
        plan.append((int(h), int(w or h), [int(b) for b in (batches or "1").split(",")]))
    return plan


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="official", choices=("official", "tiny", "test"))
    p.add_argument(
        "--plan",
        default="256:1,8",
        help="image sizes and the batch sizes (stacked path) of each: 'SIDE[xWIDTH]:B,B ...', e.g. '256:1 128:1,8'",
    )
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--precisions", default="fp32", help="fp32,bf16,fp16 (autocast: CUDA only)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--z-coding", default="torchac")
    p.add_argument("--attention", default="auto", choices=("auto", "math", "sdpa"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--omp-wait-policy",
        default="PASSIVE",
        choices=("PASSIVE", "ACTIVE", "default"),
        help="OMP_WAIT_POLICY for torch's OpenMP threads (default: leave the environment as it is)",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed decodes per batch size (the fastest is kept)")
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=True, help="one untimed decode first")
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.plan = parse_plan(args.plan)
    if args.omp_wait_policy != "default":  # read by libgomp when torch loads it: set before the import
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "config": args.config,
        "plan": [f"{h}x{w}: batches {','.join(map(str, bs))}" for h, w, bs in args.plan],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (libgomp's default: threads spin a while)"),
        "steps": args.steps,
        "device": args.device,
        "attention": args.attention,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "weights": "random (timing only)",
        "paper_table_i": PAPER_TABLE_I,
        "h100_target_decodes_per_s": H100_TARGET_DECODES_PER_S,
        "runs": [],
    }
    if args.device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    with common.quiet_warnings(), common.Meter() as meter:
        for precision in args.precisions.split(","):
            result["runs"].extend(measure(args, precision))
    result.update(meter.as_dict())
    result["peak_rss_gib"] = common.peak_rss_gib()
    if not args.json:
        print(json.dumps(result, indent=2))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
