"""What one RDEIC decode costs: time per stage and peak memory, random weights (timing only, never quality).

    .venv/bin/python benchmarks/bench_rdeic.py                        # official config, CPU, 512x512, S=2
    .venv/bin/python benchmarks/bench_rdeic.py --device cuda --precision fp16 --steps 5

Prints one JSON object: build, encode, entropy decode (parse), synthesis, each denoising step, VAE decode,
total decode seconds, bytes written, peak RSS (and peak CUDA memory on a GPU). Random weights give the same
arithmetic cost as the real ones; their images and bpp mean nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="official")
    p.add_argument("--size", type=int, default=512, help="square image side in pixels")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--z-coding", default="torchac")
    p.add_argument("--attention", default="auto", choices=("auto", "math", "sdpa"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)

    import torch

    from harness.codecs.rdeic.codec import RDEIC

    if args.threads:
        torch.set_num_threads(args.threads)
    codec = RDEIC(
        config=args.config,
        allow_random_weights=True,
        steps=args.steps,
        device=args.device,
        precision=args.precision,
        z_coding=args.z_coding,
        attention=args.attention,
    )
    yy, xx = np.mgrid[0 : args.size, 0 : args.size]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    out: dict = {
        "config": args.config,
        "size": args.size,
        "steps": args.steps,
        "device": args.device,
        "precision": args.precision,
        "attention": args.attention,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "host": platform.node(),
        "weights": "random (timing only)",
    }
    if args.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    t = time.perf_counter()
    codec.model()
    codec.context()
    out["build_s"] = time.perf_counter() - t
    t = time.perf_counter()
    bs = codec.encode(image)
    out["encode_s"] = time.perf_counter() - t
    out["file_bytes"] = len(bs.data)
    codec.decode(bs.data, image.shape[:2], 0)  # warm-up (kernels, allocator), not timed
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    state = codec.parse(bs.data, image.shape[:2])
    out["entropy_decode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    codec.decode_state(state, 0)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2**30
    out["reconstruct_s"] = time.perf_counter() - t
    out["stages_s"] = {k: v for k, v in codec.last_timings.items() if k != "entropy_decode_s"}
    out["decode_total_s"] = out["entropy_decode_s"] + out["reconstruct_s"]
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
