"""Official-size RDEIC decodes per second on one GPU, with PSNR + MS-SSIM (RGB), and the GPU's idle share (issue #25).

    .venv/bin/python benchmarks/bench_gpu.py                                   # official, 512x768, bf16, cuda
    .venv/bin/python benchmarks/bench_gpu.py --config tiny --device cpu --images 4 --batch 2 --size 128x128

What runs, per batch of ``--batch`` parsed states (``--images`` distinct test images, encoded and entropy-decoded once
on the CPU beforehand, as the harness's isolated workers do):

    device:  RDEIC.decode_batch(stack=True)  (synthesis, the sampler's steps, the VAE; per-item seeds)
             -> uint8 outputs back on the device -> PSNR and pytorch_msssim MS-SSIM (RGB, data range 255),
                batched, against the originals kept on the device
    host:    a background thread hashes the outputs and collects the figures of the previous batch, so the
             device gets the next batch at once

**Images/s** = images decoded and measured / wall seconds of the loop (after one untimed warm-up batch).
**GPU idle share** (CUDA only) = 1 - (sum over batches of the elapsed time between a CUDA event recorded before the
batch's first kernel and one after its last) / (elapsed time from the first event to the last): the share of the
loop during which the device had no batch in flight, measured by the device's own clock (not host timers, which
would count CPU synthesis or metrics as GPU-busy). Random weights of the official shapes cost the same arithmetic as
the real ones; their images and figures mean nothing. Target (issue #25): >= 10 images/s and idle < 20 % on one
H100/H200 with ``--config official --precision bf16`` at 512x768.

Prints one JSON object (``--json PATH`` writes it too): device, versions, images/s, idle share, per-batch seconds,
and every item's PSNR / MS-SSIM and output hash (what tests/test_throughput_gpu_path.py checks on the CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import common
import numpy as np

TARGET_IMAGES_PER_S = 10.0
TARGET_IDLE_SHARE = 0.20


def test_images(n: int, height: int, width: int) -> list[np.ndarray]:
    """``n`` distinct smooth uint8 test images (gradients and rings; seeded, no files needed)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    out = []
    for i in range(n):
        r = np.sin((xx + 7 * i) / (9 + i)) + np.cos((yy - 5 * i) / (13 + i))
        rgb = np.stack([r, np.sin(r + i), np.cos(2 * r - i)], axis=-1)
        out.append(((rgb - rgb.min()) / (np.ptp(rgb) + 1e-9) * 255).astype(np.uint8))
    return out


def device_metrics(outputs: Any, originals: Any) -> tuple[Any, Any]:
    """PSNR (dB) and MS-SSIM (RGB, data range 255, pytorch_msssim as CompressAI) of B outputs against B originals,
    both uint8 B x H x W x 3 tensors on one device; returns two float64 tensors of B values on that device."""
    import torch
    from pytorch_msssim import ms_ssim

    x = outputs.permute(0, 3, 1, 2).float()
    y = originals.permute(0, 3, 1, 2).float()
    mse = ((x.double() - y.double()) ** 2).mean(dim=(1, 2, 3))
    psnr = torch.where(mse > 0, 10 * torch.log10(255.0**2 / mse), torch.full_like(mse, float("inf")))
    return psnr, ms_ssim(x, y, data_range=255, size_average=False).double()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from harness.codecs.rdeic.codec import RDEIC

    height, width = args.height, args.width
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    steps = {"steps": args.steps} if args.steps else {}
    if args.preset:  # a registered config with its weights (the CPU correctness test: rdeic-tiny@low)
        from harness.codecs.base import create_codec

        codec = create_codec(args.preset, device=args.device, precision=args.precision, **steps)
    else:
        codec = RDEIC(
            config=args.config, allow_random_weights=True, device=args.device, precision=args.precision, **steps
        )
    codec.model()
    codec.context()
    codec.warm()
    images = test_images(args.images, height, width)
    states = [codec.parse_checked(codec.encode_stream(im).data, (height, width)) for im in images]
    originals = torch.from_numpy(np.stack(images)).to(dev)
    order = [i % len(images) for i in range(args.batches * args.batch)]
    batches = [order[k : k + args.batch] for k in range(0, len(order), args.batch)]
    host = ThreadPoolExecutor(1, thread_name_prefix="bench-gpu-host")
    items: list[dict[str, Any]] = []

    def finish(idx: list[int], outs: list[np.ndarray], psnr: Any, msssim: Any, seeds: list[int]) -> None:
        """Host stage (background thread): copies, hashes, figures."""
        p, m = psnr.cpu().numpy(), msssim.cpu().numpy()
        for j, i in enumerate(idx):
            items.append(
                {
                    "image": i,
                    "seed": seeds[j],
                    "psnr": float(p[j]),
                    "ms_ssim_rgb": float(m[j]),
                    "sha256": hashlib.sha256(np.ascontiguousarray(outs[j][:height, :width]).tobytes()).hexdigest(),
                }
            )

    def one_batch(n: int, idx: list[int], events: list[Any] | None) -> Any:
        seeds = [n * args.batch + j for j in range(len(idx))]
        if events is not None:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
        outs = codec.decode_batch([states[i] for i in idx], seeds, [None] * len(idx), (height, width), stack=True)
        bad = [o for o in outs if isinstance(o, Exception)]
        if bad:
            raise RuntimeError(f"a clean stream failed to decode: {bad[0]}")
        cropped = torch.from_numpy(np.stack([o[:height, :width] for o in outs])).to(dev, non_blocking=True)
        psnr, msssim = device_metrics(cropped, originals[idx])
        if events is not None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            events.append((start, end))
        return host.submit(finish, idx, outs, psnr, msssim, seeds)

    # warm-up, not timed (kernels, allocator, cudnn choices); its seeds come after the timed ones
    one_batch(len(batches), batches[0], None).result()
    items.clear()
    events: list[Any] | None = [] if cuda else None
    pending = []
    t0 = time.perf_counter()
    for n, idx in enumerate(batches):
        pending.append(one_batch(n, idx, events))
    for f in pending:
        f.result()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    host.shutdown()
    idle = None
    if events:
        span = events[0][0].elapsed_time(events[-1][1])
        busy = sum(s.elapsed_time(e) for s, e in events)
        idle = max(0.0, 1.0 - busy / span) if span > 0 else None
    n_images = len(items)
    return {
        "config": args.preset or args.config,
        "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "precision": args.precision,
        "computes_in": args.precision if cuda or args.precision == "fp32" else "fp32 (autocast is CUDA-only)",
        "size": [height, width],
        "batch": args.batch,
        "images": n_images,
        "wall_s": wall,
        "images_per_s": n_images / wall,
        "gpu_idle_share": idle,
        "targets": {"images_per_s": TARGET_IMAGES_PER_S, "gpu_idle_share_below": TARGET_IDLE_SHARE},
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
        "weights": args.preset or ("random, official shapes (timing only)" if args.config == "official" else "random"),
        "load": common.loadavg(),
        "items": sorted(items, key=lambda x: x["seed"]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="official", choices=("official", "tiny", "test"))
    ap.add_argument("--preset", help="a registered RDEIC config with its weights instead of random weights")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="bf16", choices=("fp32", "fp16", "bf16"))
    ap.add_argument("--size", default="512x768", help="HxW of the test images")
    ap.add_argument("--images", type=int, default=8, help="distinct test images (encoded and parsed once)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=8, help="timed batches (after one warm-up batch)")
    ap.add_argument("--steps", type=int, default=0, help="denoising steps (0: the config's own)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    with common.quiet_warnings():
        result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "items"}, indent=1))
    common.write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
