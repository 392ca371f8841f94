"""The DICM-tiny recipe: ``python -m harness.train.dicm_tiny --out weights/dicm-tiny``.

Trains the ``tiny`` config (harness/codecs/dicm/config.py) on CPU from generated stereo pairs
(harness/datasets/stereo_synth.py, seeds >= 1,000,000; the ``standin_stereo`` dataset uses seeds from 0, so its
pairs are never trained on), in one resumable stage of ``harness.train.loop.Stage``:

    pool      ``pool_pairs`` pairs of 64 x 128, generated once (seeded), cached in <work>/pool.npz
    stage     context_fn + encode_w + UNet together, the objective of harness/train/dicm_stages.py

then writes ``dicm-tiny.safetensors`` (fp32, CDF tables built) and ``recipe.json`` (every hyper-parameter, the
wall time, torch version). Rerunning the command resumes where it stopped and skips a finished stage; an
uninterrupted run is deterministic on one machine (same torch, same thread count).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from harness.train import recipe_cli
from harness.train.dicm_stages import StereoPairPool, describe_loss
from harness.train.loop import Stage, StageConfig

WEIGHTS_FILE = "dicm-tiny.safetensors"
TRAIN_FIRST_SEED = 1_000_000


@dataclass
class Recipe:
    seed: int = 20261130
    threads: int = 1  # one thread: on the shared 2-core machine two threads thrash under load (measured)
    pool_pairs: int = 1024
    pool_height: int = 64
    pool_width: int = 128
    crop_height: int = 64
    crop_width: int = 64
    steps: int = 2000
    batch: int = 8
    lr: float = 3e-4
    warmup: int = 50
    alpha: float = 0.5  # weight of the L1 on x0_hat (official: 0.9, on LPIPS)
    beta: float = 0.002  # rate weight on bpp_x + bpp_w
    ctx_weight: float = 1.0  # L1 of each pyramid's first level against its input (0 officially; see dicm_stages)
    w_drop: float = 0.15  # share of each batch trained with w = 0 ("DICM without w")
    #: std of the noise added to w in training: the official model.py's sqrt(0.001) (0.001 until issue #22)
    w_noise_std: float = 0.001**0.5

    def scaled(self, factor: float) -> Recipe:
        """The same recipe with the step count multiplied (``--scale 0.01``: a smoke run)."""
        out = Recipe(**asdict(self))
        out.steps = max(2, round(self.steps * factor))
        out.warmup = min(self.warmup, max(1, out.steps // 10))
        out.pool_pairs = max(8, min(self.pool_pairs, round(self.pool_pairs * factor * 4)))
        return out


_log = recipe_cli.log


def build_model(seed: int):
    from harness.codecs.dicm.config import TINY
    from harness.codecs.dicm.model import DICMModel

    return DICMModel(TINY, seed=seed)


def pool(recipe: Recipe, work: Path) -> StereoPairPool:
    """The training pairs, generated once and cached (the generator is deterministic; the cache saves ~1 min)."""
    cache = work / "pool.npz"
    key = f"{recipe.pool_pairs}x{recipe.pool_height}x{recipe.pool_width}@{TRAIN_FIRST_SEED}"
    views = None
    if cache.is_file():
        with np.load(cache) as npz:
            if str(npz["key"]) == key:
                views = npz["views"]
    if views is None:
        views = StereoPairPool.generate(recipe.pool_pairs, recipe.pool_height, recipe.pool_width, TRAIN_FIRST_SEED)
        work.mkdir(parents=True, exist_ok=True)
        np.savez(cache, views=views, key=np.array(key))
    return StereoPairPool(views, (recipe.crop_height, recipe.crop_width), recipe.seed + 1)


def train(recipe: Recipe, work: Path, progress: bool = True) -> tuple[object, dict]:
    from harness.train.dicm_stages import dicm_loss

    model = build_model(recipe.seed)
    t0 = time.perf_counter()
    data = pool(recipe, work)
    _log(f"training pool: {data.views.shape[0]} pairs ({time.perf_counter() - t0:.0f} s)")
    cfg = StageConfig(
        "stage",
        recipe.steps,
        recipe.lr,
        warmup=recipe.warmup,
        seed=recipe.seed,
        log_every=25,
        ckpt_every=max(10, min(250, recipe.steps // 10)),
        extra={k: v for k, v in asdict(recipe).items() if k not in ("steps", "lr", "warmup", "seed")},
    )

    def loss_fn(step: int):
        x, side = data.batch(recipe.batch)
        return dicm_loss(
            model, x, side, recipe.alpha, recipe.beta, recipe.w_drop, recipe.w_noise_std, recipe.ctx_weight
        )

    summary = Stage(
        cfg,
        model,
        ("denoise_fn.", "context_fn.", "encode_w."),
        loss_fn,
        work,
        samplers={"pairs": data},
        progress=progress,
    ).run()
    return model, summary


def export(model, path: Path, recipe: Recipe) -> None:
    """Every tensor of the state dict in fp32, with the coders' coding ranges solved and CDF tables built
    (``encode_w`` codes nothing: its tables stay empty)."""
    from safetensors.torch import save_file

    from harness.codecs.dicm.checkpoint import tails_for

    with torch.no_grad():
        for comp in model.coders():  # the coding range of z: solved on the trained density, median kept
            comp.prior.quantiles.copy_(tails_for(comp.prior, comp.prior.quantiles[:, :, 1:2].detach()))
    model.update(force=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": "tiny", "recipe": json.dumps(asdict(recipe), sort_keys=True), "torch": torch.__version__}
    save_file(state, str(path), metadata=meta)


def main(argv: list[str] | None = None) -> int:
    args = recipe_cli.parser("harness.train.dicm_tiny", __doc__, "weights/dicm-tiny").parse_args(argv)
    recipe, out, work = recipe_cli.setup(Recipe(), args)
    out.mkdir(parents=True, exist_ok=True)
    clock = recipe_cli.Clock()
    _log(f"DICM-tiny recipe -> {out} (checkpoints in {work}), {recipe.threads} threads, {recipe.steps} steps")
    model, summary = train(recipe, work, progress=not args.no_progress)
    export(model, out / WEIGHTS_FILE, recipe)
    recipe_cli.write_record(
        out, "harness.train.dicm_tiny", argv, recipe, summary, clock,
        config="tiny",
        loss=describe_loss(recipe.alpha, recipe.beta, recipe.w_drop, recipe.w_noise_std, recipe.ctx_weight),
        training_data=(
            f"{recipe.pool_pairs} generated pairs (harness/datasets/stereo_synth.py, seeds {TRAIN_FIRST_SEED}.."
            f"{TRAIN_FIRST_SEED + recipe.pool_pairs - 1}) of {recipe.pool_height}x{recipe.pool_width}, random "
            f"{recipe.crop_height}x{recipe.crop_width} crops, flips and view swaps"
        ),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
