"""``evaluate.py finetune``: fine-tune an RDEIC adapter on one dataset's training split (harness/train/finetune.py).

::

    python evaluate.py finetune --codec rdeic-tiny@low --dataset standin_astro --steps 200 --out adapters/astro
    python evaluate.py finetune --codec rdeic --sd-ckpt v2-1_512-ema-pruned.ckpt --rdeic-ckpt rdeic_2_step2.ckpt \\
        --dataset eurosat --train-split train --val-split validation --preprocessing "resize(short=256)" \\
        --steps 5000 --lr 2e-5 --device cuda --out adapters/eurosat

Without ``--train-split`` the dataset is partitioned (seeded, per class: ``--partition 0.6,0.2,0.2``) into
train / val / test; the test part is what ``--suite ood_finetune`` evaluates on, and is never read here.
The adapter is ``<out>/adapter.safetensors`` + ``<out>/adapter.json``; use it with the codec option ``adapter``.
Rerunning the command resumes from the last checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _partition(text: str) -> dict[str, float]:
    try:
        train, val, test = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three fractions train,val,test, got {text!r}") from None
    return {"train": train, "val": val, "test": test}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.train.finetune import LORA_TARGETS, OBJECTIVES, PERCEPTUAL, FinetuneConfig

    d = FinetuneConfig()
    parser.add_argument("--codec", required=True, help="codec preset (rdeic-tiny@low) or rdeic with checkpoints")
    parser.add_argument("--dataset", required=True, help="registered dataset name (evaluate.py datasets list)")
    parser.add_argument("--path", help="local copy of the dataset (folder, zip, parquet, HDF5)")
    parser.add_argument("--train-split", help="official training split (default: a seeded partition)")
    parser.add_argument("--val-split", help="official validation split (with --train-split)")
    parser.add_argument("--partition", type=_partition, default=None, help="train,val,test fractions (0.6,0.2,0.2)")
    parser.add_argument("--partition-seed", type=int, default=0)
    parser.add_argument("--preprocessing", help="preprocessing policy (default: the dataset card's)")
    parser.add_argument("--limit-images", type=int, help="seeded, stratified subset of N images per split")
    parser.add_argument("--out", type=Path, required=True, help="output folder (adapter, sidecar, checkpoints)")
    parser.add_argument("--mode", default=d.mode, choices=["control", "lora", "full"])
    parser.add_argument("--objective", default=d.objective, choices=OBJECTIVES)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--batch", type=int, default=d.batch)
    parser.add_argument("--patch", type=int, default=d.patch)
    parser.add_argument("--perceptual", default=d.perceptual, choices=PERCEPTUAL)
    parser.add_argument("--val-every", type=int, default=d.val_every)
    parser.add_argument("--val-images", type=int, default=d.val_images)
    parser.add_argument("--val-metric", default=d.val_metric)
    parser.add_argument("--patience", type=int, default=d.patience, help="early stop after N worse validations")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--lora-rank", type=int, default=d.lora_rank)
    parser.add_argument("--lora-targets", default=d.lora_targets, choices=list(LORA_TARGETS))
    parser.add_argument("--device", help="codec device (cuda for the official model)")
    parser.add_argument("--rdeic-ckpt", help="official RDEIC checkpoint (codec option rdeic_ckpt)")
    parser.add_argument("--sd-ckpt", help="SD 2.1 checkpoint (codec option sd_ckpt)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from harness.cli import UsageError
    from harness.config import DatasetConfig
    from harness.datasets.partition import Partition
    from harness.ood import FinetuneSpec, OODDataset, finetune_one
    from harness.train.finetune import FinetuneConfig

    if bool(args.train_split) != bool(args.val_split):
        raise UsageError("give both --train-split and --val-split, or neither (then the dataset is partitioned)")
    if args.train_split and args.partition:
        raise UsageError("--partition is for datasets without official splits; drop it or the split flags")
    cfg = FinetuneConfig(
        mode=args.mode,
        objective=args.objective,
        steps=args.steps,
        lr=args.lr,
        batch=args.batch,
        patch=args.patch,
        perceptual=args.perceptual,
        val_every=args.val_every,
        val_images=args.val_images,
        val_metric=args.val_metric,
        patience=args.patience,
        seed=args.seed,
        lora_rank=args.lora_rank,
        lora_targets=args.lora_targets,
    )
    try:
        cfg.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    base = DatasetConfig(
        name=args.dataset, preprocessing=args.preprocessing, limit_images=args.limit_images, path=args.path
    )
    if args.train_split:
        ood = OODDataset(base, {"train": args.train_split, "val": args.val_split, "test": "test"})
    else:
        fractions = args.partition or {"train": 0.6, "val": 0.2, "test": 0.2}
        partition = Partition.from_table({**fractions, "take": "train", "seed": args.partition_seed})
        ood = OODDataset(dataclasses.replace(base, partition=partition))
    options = {k: v for k, v in (("rdeic_ckpt", args.rdeic_ckpt), ("sd_ckpt", args.sd_ckpt), ("device", args.device))
               if v}  # fmt: skip
    spec = FinetuneSpec(args.codec, args.codec, options, cfg, (ood,), ())
    out = args.out
    from harness.console import routed_warnings

    with routed_warnings(out):  # library warnings to <out>/warnings.log, ours on one line: as suite runs do
        sidecar = finetune_one(spec, ood, seed=0, out=out.parent, progress=not args.no_progress, folder=out)
    best = sidecar.get("best") or {}
    print(
        f"adapter: {out / 'adapter.safetensors'} (mode {sidecar['mode']}, {sidecar['trainable_parameters']:,} "
        f"trainable of {sidecar['total_parameters']:,} parameters, {sidecar['steps_run']} steps, best validation "
        f"{cfg.val_metric} {best.get('value', float('nan')):.3f} at step {best.get('step')}; step 0 = the base)"
    )
    print(f'use it: options = {{ adapter = "{out / "adapter.safetensors"}" }} on the same base codec')
    return 0
