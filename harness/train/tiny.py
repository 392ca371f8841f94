"""The RDEIC-tiny recipe: ``python -m harness.train.tiny --out weights/rdeic-tiny``.

Trains every stage of the ``tiny`` config on CPU from patches of the bundled samples (minus the held-out
ones, ``harness.train.data.HELD_OUT``) and matplotlib's grace_hopper.jpg:

    stage0_vae   KL autoencoder (64 px patches)                       shared by every rate point
    stage0_vae_decoder  decoder-only fine-tuning on 256 px crops (encoder, hence the latent space, fixed)
    stage0_unet  latent-diffusion UNet, fixed empty-prompt context    shared
    <rate>/stage1  compression + control, relay residual + rate loss  UNet and VAE frozen
    <rate>/stage2  fixed-step (S=2) fine-tuning through the sampler and the VAE decode

then writes one merged ``rdeic-tiny-<rate>.safetensors`` per rate point (parameters stored as fp16, buffers in
their own dtype; the codec loads them into fp32) and ``recipe.json`` (every hyper-parameter, wall times).
Every stage is resumable: rerunning the command continues where it stopped and skips finished stages.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.train import recipe_cli
from harness.train.loop import Stage, StageConfig


@dataclass(frozen=True)
class RatePoint:
    name: str
    w_rate: float  # λ: weight of bpp + L_vq (distortion weights are shared)


@dataclass
class Recipe:
    seed: int = 231  # the official training seed (SPEC §4)
    threads: int = 2
    vae_steps: int = 2500
    vae_batch: int = 16
    vae_patch: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    dec_steps: int = 300  # decoder-only fine-tuning on large crops (after the latent normalisation)
    dec_batch: int = 4
    dec_patch: int = 256
    dec_lr: float = 3e-4
    unet_steps: int = 600
    unet_batch: int = 16
    unet_patch: int = 128
    unet_lr: float = 3e-4
    s1_steps: int = 1000
    s1_batch: int = 8
    s1_patch: int = 128
    s1_lr: float = 2e-4
    w_guide: float = 8.0
    s2_steps: int = 400
    s2_batch: int = 4
    s2_patch: int = 128
    s2_lr: float = 5e-5
    s2_sampler_steps: int = 2
    w_pixel: float = 100.0
    rates: tuple[RatePoint, ...] = field(default_factory=lambda: (RatePoint("low", 2.0), RatePoint("high", 0.5)))

    def scaled(self, factor: float) -> Recipe:
        """The same recipe with every step count multiplied (``--scale 0.01`` for a smoke run)."""
        out = Recipe(**{**asdict(self), "rates": self.rates})
        for name in ("vae_steps", "dec_steps", "unet_steps", "s1_steps", "s2_steps"):
            setattr(out, name, max(2, round(getattr(self, name) * factor)))
        return out


_log = recipe_cli.log


def build_model(seed: int):
    from harness.codecs.rdeic.config import TINY
    from harness.codecs.rdeic.model import RDEICModel

    return RDEICModel(TINY, seed=seed)


def _ckpt_every(steps: int) -> int:
    return max(10, min(100, steps // 5))


def train_stage0(recipe: Recipe, out: Path, model, progress: bool = True) -> dict:
    """Autoencoder, latent-scale normalisation, UNet. Leaves ``model`` holding the stage-0 weights."""
    from safetensors.torch import load_file, save_file

    from harness.train import data, stages

    images = data.training_images()
    vae_data = data.PatchSampler(images, recipe.vae_patch, seed=recipe.seed)
    cfg = StageConfig(
        "stage0_vae",
        recipe.vae_steps,
        recipe.vae_lr,
        seed=recipe.seed,
        ckpt_every=_ckpt_every(recipe.vae_steps),
        extra={"batch": recipe.vae_batch, "patch": recipe.vae_patch, "kl_weight": recipe.kl_weight},
    )
    summary = {}
    stages.init_vae_posterior(model)  # (a resumed or finished stage overwrites it with its checkpoint)
    summary["stage0_vae"] = Stage(
        cfg,
        model,
        ("first_stage_model.",),
        lambda step: stages.vae_loss(model, vae_data.batch(recipe.vae_batch), recipe.kl_weight),
        out,
        samplers={"patches": vae_data},
        progress=progress,
    ).run()
    norm_file = out / "stage0_vae" / "normalised.safetensors"
    if norm_file.is_file():
        state = load_file(str(norm_file))
        model.first_stage_model.load_state_dict(state)
        k = json.loads((out / "stage0_vae" / "latent_scale.json").read_text())["k"]
    else:
        probe = data.PatchSampler(images, 128, seed=recipe.seed + 1).batch(32)
        k = stages.normalise_latent_scale(model, probe)
        save_file({n: v.contiguous() for n, v in model.first_stage_model.state_dict().items()}, str(norm_file))
        (out / "stage0_vae" / "latent_scale.json").write_text(json.dumps({"k": k}))
    summary["latent_rescale_k"] = k
    _log(f"stage0_vae: latent rescaled by k = {k:.4g}")

    dec_data = data.PatchSampler(images, recipe.dec_patch, seed=recipe.seed + 5, scales=(1.0, 0.75))
    cfg = StageConfig(
        "stage0_vae_decoder",
        recipe.dec_steps,
        recipe.dec_lr,
        seed=recipe.seed + 5,
        ckpt_every=_ckpt_every(recipe.dec_steps),
        extra={"batch": recipe.dec_batch, "patch": recipe.dec_patch},
    )
    summary["stage0_vae_decoder"] = Stage(
        cfg,
        model,
        ("first_stage_model.decoder.", "first_stage_model.post_quant_conv."),
        lambda step: stages.vae_decoder_loss(model, dec_data.batch(recipe.dec_batch)),
        out,
        samplers={"patches": dec_data},
        progress=progress,
    ).run()

    context = model.cond_stage_model.encode_empty().detach()
    unet_data = data.PatchSampler(images, recipe.unet_patch, seed=recipe.seed + 2)
    cfg = StageConfig(
        "stage0_unet",
        recipe.unet_steps,
        recipe.unet_lr,
        seed=recipe.seed + 2,
        ckpt_every=_ckpt_every(recipe.unet_steps),
        extra={"batch": recipe.unet_batch, "patch": recipe.unet_patch},
    )
    summary["stage0_unet"] = Stage(
        cfg,
        model,
        ("model.diffusion_model.",),
        lambda step: stages.unet_loss(model, unet_data.batch(recipe.unet_batch), context),
        out,
        samplers={"patches": unet_data},
        progress=progress,
    ).run()
    return summary


def train_rate_point(
    recipe: Recipe, rp: RatePoint, out: Path, stage0_state: dict, export_dir: Path, progress: bool = True
) -> dict:
    from harness.train import data, stages

    model = build_model(recipe.seed)
    model.load_state_dict(stage0_state, strict=True)
    stages.zero_init_control(model)
    context = model.cond_stage_model.encode_empty().detach()
    images = data.training_images()
    rp_dir = out / rp.name
    summary = {}

    s1_data = data.PatchSampler(images, recipe.s1_patch, seed=recipe.seed + 3)
    keeper = stages.CodebookKeeper(model.preprocess_model, seed=recipe.seed)
    cfg = StageConfig(
        "stage1",
        recipe.s1_steps,
        recipe.s1_lr,
        seed=recipe.seed + 3,
        ckpt_every=_ckpt_every(recipe.s1_steps),
        extra={"batch": recipe.s1_batch, "patch": recipe.s1_patch, "w_guide": recipe.w_guide, "w_rate": rp.w_rate},
    )
    trainable = ("control_model.", "preprocess_model.")
    summary["stage1"] = Stage(
        cfg,
        model,
        trainable,
        lambda step: stages.stage1_loss(
            model, s1_data.batch(recipe.s1_batch), context, recipe.w_guide, rp.w_rate, keeper, step
        ),
        rp_dir,
        samplers={"patches": s1_data, "codebook": keeper},
        progress=progress,
    ).run()

    s2_data = data.PatchSampler(images, recipe.s2_patch, seed=recipe.seed + 4)
    keeper2 = stages.CodebookKeeper(model.preprocess_model, seed=recipe.seed + 1)
    keeper2.initialised = True  # continue from stage 1's codebook
    cfg = StageConfig(
        "stage2",
        recipe.s2_steps,
        recipe.s2_lr,
        warmup=5,
        seed=recipe.seed + 4,
        ckpt_every=_ckpt_every(recipe.s2_steps),
        extra={
            "batch": recipe.s2_batch,
            "patch": recipe.s2_patch,
            "sampler_steps": recipe.s2_sampler_steps,
            "w_pixel": recipe.w_pixel,
            "w_guide": recipe.w_guide,
            "w_rate": rp.w_rate,
        },
    )
    summary["stage2"] = Stage(
        cfg,
        model,
        trainable,
        lambda step: stages.stage2_loss(
            model,
            s2_data.batch(recipe.s2_batch),
            context,
            recipe.w_pixel,
            recipe.w_guide,
            rp.w_rate,
            recipe.s2_sampler_steps,
            keeper2,
            step,
        ),
        rp_dir,
        samplers={"patches": s2_data, "codebook": keeper2},
        progress=progress,
    ).run()
    export(model, export_dir / f"rdeic-tiny-{rp.name}.safetensors")
    return summary


def export(model, path: Path) -> None:
    """The merged state dict (official key names), parameters as fp16, buffers unchanged, CDF tables rebuilt."""
    from harness.codecs.rdeic.checkpoint import save_safetensors

    model.preprocess_model.update(force=True)
    params = {n for n, _ in model.named_parameters()}
    state = {}
    for k, v in model.state_dict().items():
        state[k] = v.detach().half() if k in params and v.is_floating_point() else v.detach()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, path)


def main(argv: list[str] | None = None) -> int:
    ap = recipe_cli.parser("harness.train.tiny", __doc__, "weights/rdeic-tiny")
    ap.add_argument("--rates", default=None, help="comma list of rate-point names to train (default: all)")
    args = ap.parse_args(argv)
    recipe, out, work = recipe_cli.setup(Recipe(), args)
    out.mkdir(parents=True, exist_ok=True)
    clock = recipe_cli.Clock()
    _log(f"RDEIC-tiny recipe -> {out} (checkpoints in {work}), {recipe.threads} threads")
    model = build_model(recipe.seed)
    summary = {"stage0": train_stage0(recipe, work, model, progress=not args.no_progress)}
    stage0_state = {k: v.clone() for k, v in model.state_dict().items()}
    wanted = set(args.rates.split(",")) if args.rates else {rp.name for rp in recipe.rates}
    for rp in recipe.rates:
        if rp.name in wanted:
            _log(f"rate point {rp.name} (w_rate = {rp.w_rate})")
            summary[rp.name] = train_rate_point(recipe, rp, work, stage0_state, out, progress=not args.no_progress)
    from harness.train import data

    recipe_cli.write_record(
        out, "harness.train.tiny", argv, recipe, summary, clock,
        config="tiny",
        held_out=list(data.HELD_OUT),
        training_images=[
            {"name": im.name, "source": im.source, "licence": im.licence, "shape": list(im.pixels.shape)}
            for im in data.training_images()
        ],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
