"""Adapter fine-tuning of RDEIC on an out-of-distribution training split (METHODOLOGY.md §6).

::

    base codec (frozen: compression module, UNet, VAE, text)  ──  adapter (control module | LoRA | full)
    train split ─ patches ─> stage-2 (or stage-1) objective ─> AdamW on the adapter only ─> checkpoints (resumable)
    val split ─ every N steps: encode -> parse -> reconstruct through the codec itself, real metric ─> best / early stop
    ─> <out>/adapter.safetensors + adapter.json (sidecar: base fingerprint, data record, config, curves, hashes)

Freezing is checked, not assumed: the sha256 of every frozen parameter and buffer is taken before and after
training and must match (the sidecar records both). The validation decodes use the codec's own encode, parse and
reconstruct with a fixed decode seed; early stopping looks at validation only (never at the test split).
Mode ``full`` (compression module trained too) exists for rate–distortion studies only: its results are never
"adapter" results, because the bitstream and the rate change (the flaw of the published OOD numbers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.codecs.rdeic.adapter import MODES, save_adapter

OBJECTIVES = ("stage2", "stage1")
PERCEPTUAL = ("lpips", "ssim", "none")
LORA_TARGETS = {
    # Linear / Conv2d modules whose weights get LoRA factors (names relative to the RDEIC model)
    "control": ("control_model.",),
    "unet_attention": ("model.diffusion_model.",),
    "both": ("control_model.", "model.diffusion_model."),
}


@dataclass(frozen=True)
class FinetuneConfig:
    """Every knob of a fine-tuning run (all of it goes into the sidecar)."""

    mode: str = "control"  # control | lora | full (harness/codecs/rdeic/adapter.py)
    objective: str = "stage2"  # stage2: fixed-step through the sampler + VAE; stage1: relay residual x0 loss
    steps: int = 5000
    lr: float = 2e-5
    batch: int = 4
    patch: int = 256
    sampler_steps: int | None = None  # stage2's S (default: the codec's decode steps)
    w_guide: float = 1.0  # w_g of SPEC §4 (scales every distortion term)
    w_perceptual: float = 0.5  # LPIPS weight relative to pixel MSE (official stage 2: 0.5)
    perceptual: str = "lpips"  # lpips | ssim | none; lpips falls back to 1-SSIM (with a warning) without weights
    w_rate: float = 1.0  # mode full only: weight of bpp + L_vq
    val_every: int = 500
    val_images: int = 8
    val_metric: str = "psnr"
    val_decode_seed: int = 0
    patience: int = 0  # early stopping after this many validations without improvement (0: never)
    seed: int = 231
    lora_rank: int = 4
    lora_alpha: float = 4.0
    lora_targets: str = "control"
    log_every: int = 10
    ckpt_every: int = 100

    def check(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.objective not in OBJECTIVES:
            problems.append(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.perceptual not in PERCEPTUAL:
            problems.append(f"perceptual must be one of {', '.join(PERCEPTUAL)}, got {self.perceptual!r}")
        if self.lora_targets not in LORA_TARGETS:
            problems.append(f"lora_targets must be one of {', '.join(LORA_TARGETS)}, got {self.lora_targets!r}")
        for name in ("steps", "batch", "patch", "val_every", "val_images", "log_every", "ckpt_every", "lora_rank"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1")
        if not self.lr > 0:
            problems.append("lr must be > 0")
        if problems:
            raise ValueError("fine-tuning config: " + "; ".join(problems))


@dataclass
class FinetuneData:
    """Pixels of the training and validation splits, plus what the sidecar records about them."""

    train: list[np.ndarray]
    val: list[tuple[str, np.ndarray]]
    record: dict[str, Any]


# -- freezing -----------------------------------------------------------------------------------------------------
def tensor_digests(model, exclude: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every parameter and buffer not under ``exclude`` (what must stay bit-identical)."""
    import torch

    out = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name.startswith(exclude) or ".lora_" in name:
            continue
        arr = t.detach().cpu().contiguous().view(-1)
        out[name] = hashlib.sha256(arr.view(torch.uint8).numpy().tobytes()).hexdigest()
    return out


def digest_of(digests: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


# -- the objective --------------------------------------------------------------------------------------------------
class Perceptual:
    """LPIPS (AlexNet, pyiqa, differentiable) when its weights are present; else 1 - SSIM, said once."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.note = ""
        self.fn = None
        if kind == "lpips":
            from harness.metrics import weights as w

            missing = w.problems((w.ALEXNET, w.LPIPS_ALEX))
            if missing:
                self.kind = "ssim"
                self.note = (
                    "LPIPS weights missing ("
                    + "; ".join(missing)
                    + "): the perceptual term is 1 - SSIM instead. "
                    + w.how_to_provide((w.ALEXNET, w.LPIPS_ALEX))
                )
                warnings.warn(self.note, stacklevel=2)
            else:
                import pyiqa

                self.fn = pyiqa.create_metric("lpips", device="cpu", as_loss=True)
        self.name = {"lpips": "lpips_alex", "ssim": "1-ssim (substitute)", "none": "none"}[self.kind]

    def __call__(self, x, y):
        """x, y in [0, 1], B x 3 x H x W."""
        if self.kind == "none":
            return x.new_zeros(())
        if self.kind == "lpips":
            return self.fn(x, y).mean()
        from pytorch_msssim import ssim

        return 1.0 - ssim(x, y, data_range=1.0, size_average=True, win_size=min(11, (min(x.shape[2:]) // 2) * 2 - 1))

    def describe(self) -> dict[str, str]:
        return {"term": self.name, "note": self.note}


def adapter_loss(model, images, context, cfg: FinetuneConfig, perceptual: Perceptual, sampler_steps: int, keeper, step):
    """SPEC §4's objectives with only the adapter trainable (mode full: plus the compression module and its rate):

    stage2: w_g·(MSE_pixel + w_p·perceptual) [+ w_b·(bpp + L_vq)], through the S-step sampler and the VAE decode;
    stage1: w_g·MSE(x̂₀, x₀) at t ~ U{0..299} on the relay residual path [+ w_b·(bpp + L_vq)].
    MSE(c_latent, x₀) is logged: with the compression module frozen it carries no gradient."""
    import torch
    import torch.nn.functional as F

    from harness.codecs.rdeic.schedule import relay_lambda
    from harness.train import stages

    trains_compression = cfg.mode == "full"
    x0 = stages.scaled_latent(model, images)
    with torch.no_grad():
        h = model.encode_feature(images)
    with torch.set_grad_enabled(trains_compression):
        out = stages.compression_forward(model.preprocess_model, h, images.shape[2] * images.shape[3])
    if keeper is not None:
        keeper.observe(step, out["z"], out["indices"])
    c, hint = out["c_latent"], out["guide_hint"]
    b = images.shape[0]
    metrics: dict[str, float] = {"c_mse": float(F.mse_loss(c, x0).detach()), "bpp": float(out["bpp"].detach())}
    if cfg.objective == "stage2":
        x = stages.relay_sample_train(model, c, hint, context, sampler_steps)
        decoded = model.first_stage_model.decode(x / model.cfg.diffusion.scale_factor)
        l_pix = F.mse_loss(decoded, images * 2 - 1)
        l_perc = perceptual(((decoded + 1) / 2).clamp(0, 1), images)
        loss = cfg.w_guide * (l_pix + cfg.w_perceptual * l_perc)
        metrics.update(pix_mse=float(l_pix.detach()), perceptual=float(l_perc.detach()))
        metrics["psnr_db"] = 10 * math.log10(4.0 / max(metrics["pix_mse"], 1e-12))
    else:
        cfg_d = model.cfg.diffusion
        t = torch.randint(0, cfg_d.used_timesteps, (b,))
        eps_tilde = torch.randn_like(x0) + (c - x0) / relay_lambda(cfg_d)
        x_t = (
            model.sqrt_alphas_cumprod[t].view(b, 1, 1, 1) * x0
            + model.sqrt_one_minus_alphas_cumprod[t].view(b, 1, 1, 1) * eps_tilde
        )
        eps_hat = model.control_model(model.unet, x_t, hint, t, context.expand(b, -1, -1))
        x0_hat = (
            model.sqrt_recip_alphas_cumprod[t].view(b, 1, 1, 1) * x_t
            - model.sqrt_recipm1_alphas_cumprod[t].view(b, 1, 1, 1) * eps_hat
        )
        l_x0 = F.mse_loss(x0_hat, x0)
        loss = cfg.w_guide * l_x0
        metrics["x0_mse"] = float(l_x0.detach())
    if trains_compression:
        loss = loss + cfg.w_guide * F.mse_loss(c, x0) + cfg.w_rate * (out["bpp"] + out["l_vq"])
    return loss, metrics


# -- validation -----------------------------------------------------------------------------------------------------
class Validator:
    """Decodes the fixed validation images through the codec every ``val_every`` steps and keeps the best
    adapter (by the validation metric only). Its history travels in the stage checkpoint (resumable)."""

    def __init__(self, codec, images: list[tuple[str, np.ndarray]], cfg: FinetuneConfig, save_best, out_dir: Path):
        from harness.metrics import create_metric

        self.codec = codec
        self.images = images
        self.cfg = cfg
        self.metric = create_metric(cfg.val_metric)
        if not self.metric.available:
            raise ValueError(f"validation metric {cfg.val_metric!r} cannot be computed here (weights missing?)")
        self.higher_better = bool(getattr(self.metric, "higher_better", True))
        self.save_best = save_best
        self.out_dir = out_dir
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.bad = 0
        self._streams: list[bytes] | None = None

    def state(self) -> dict:
        return {"history": self.history, "best": self.best, "bad": self.bad}

    def load_state(self, state: dict) -> None:
        self.history, self.best, self.bad = list(state["history"]), state["best"], int(state["bad"])

    def evaluate(self, step: int) -> dict[str, float]:
        import torch

        codec = self.codec
        model = codec.model()
        was_training = model.training
        model.eval()
        if self.cfg.mode == "full":  # the rate changes: fresh tables, fresh streams every time
            model.preprocess_model.update(force=True)
            self._streams = None
        if self._streams is None:
            with torch.no_grad():
                self._streams = [codec.encode(img).data for _, img in self.images]
        values, bpps = [], []
        with torch.no_grad():
            for (_, img), data in zip(self.images, self._streams, strict=True):
                out = codec.decode(data, img.shape[:2], self.cfg.val_decode_seed)[: img.shape[0], : img.shape[1]]
                values.append(float(self.metric(np.ascontiguousarray(out), img)))
                bpps.append(8.0 * len(data) / (img.shape[0] * img.shape[1]))
        model.train(was_training)
        row = {"step": step, self.cfg.val_metric: float(np.mean(values)), "bpp": float(np.mean(bpps))}
        self.history.append(row)
        self._write_curve()
        value = row[self.cfg.val_metric]
        better = self.best is None or (value > self.best["value"] if self.higher_better else value < self.best["value"])
        if better:
            self.best = {"step": step, "value": value}
            self.bad = 0
            self.save_best()
        else:
            self.bad += 1
        return row

    def _write_curve(self) -> None:
        import csv

        path = self.out_dir / "validation.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(self.history[0]))
            w.writeheader()
            w.writerows(self.history)

    def after_step(self, done: int) -> bool:
        if done % self.cfg.val_every and done != self.cfg.steps:
            return False
        self.evaluate(done)
        return bool(self.cfg.patience) and self.bad >= self.cfg.patience


# -- LoRA (peft) ----------------------------------------------------------------------------------------------------
def inject_lora(model, cfg: FinetuneConfig) -> list[str]:
    """peft LoRA layers on every Linear/Conv2d under the chosen prefixes (attention projections only in the UNet);
    returns the wrapped module names."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise RuntimeError("mode 'lora' needs peft: pip install '.[lora]'") from None
    import torch

    prefixes = LORA_TARGETS[cfg.lora_targets]
    names = []
    for name, module in model.named_modules():
        if not name.startswith(prefixes) or not isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            continue
        if name.startswith("model.diffusion_model.") and not any(p in name for p in (".to_q", ".to_k", ".to_v")):
            continue  # UNet: attention projections only (the usual LoRA target)
        if any(z in name for z in ("zero_convs", "middle_block_out")):
            continue  # zero-initialised injection convs: B A on a zero weight stays a plain delta; keep them full
        names.append(name)
    if not names:
        raise ValueError(f"LoRA: no Linear/Conv2d module under {prefixes}")
    inject_adapter_in_model(
        LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=names, lora_dropout=0.0), model
    )
    return names


def lora_tensors(model, names: list[str]) -> dict[str, Any]:
    """peft's factors under our format: ``<module>.weight.lora_A`` [r, in·k·k], ``.lora_B`` [out, r]."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        mod = modules[name]
        a, b = mod.lora_A["default"].weight, mod.lora_B["default"].weight
        out[f"{name}.weight.lora_A"] = a.detach().reshape(a.shape[0], -1).clone()
        out[f"{name}.weight.lora_B"] = b.detach().reshape(b.shape[0], -1).clone()
    return out


# -- the run --------------------------------------------------------------------------------------------------------
def _trainable_tensors(model, mode: str, lora_names: list[str] | None) -> dict[str, Any]:
    if mode == "lora":
        return lora_tensors(model, lora_names or [])
    prefixes = MODES[mode]
    state = model.state_dict()
    return {k: v.detach().clone() for k, v in state.items() if k.startswith(prefixes)}


def finetune(
    codec,
    data: FinetuneData,
    cfg: FinetuneConfig,
    out_dir: str | Path,
    base: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``codec``'s model in place and write ``<out_dir>/adapter.safetensors`` (+ sidecar); returns the
    sidecar. ``base`` describes the base codec (name, options, fingerprint). Rerunning resumes; a finished run is
    returned as is."""
    import torch
    from safetensors.torch import load_file, save_file

    from harness.train import stages
    from harness.train.data import PatchSampler
    from harness.train.loop import Stage, StageConfig, freeze_except

    cfg.check()
    out = Path(out_dir)
    adapter_path = out / "adapter.safetensors"
    if (out / "adapter.json").is_file() and adapter_path.is_file():
        return json.loads((out / "adapter.json").read_text())
    if codec.adapter_record is not None:
        raise ValueError("fine-tune a base codec, not one that already has an adapter")
    model = codec.model()
    if any(p.device.type != "cpu" for p in model.preprocess_model.parameters()):
        raise ValueError("the compression module must stay on the CPU")
    context = codec.context().detach()
    sampler_steps = cfg.sampler_steps or codec.options.steps
    trainable = MODES[cfg.mode] if cfg.mode != "lora" else ()
    lora_names = None
    if cfg.mode == "lora":
        lora_names = inject_lora(model, cfg)
    frozen_before = tensor_digests(model, exclude=trainable)
    perceptual = Perceptual(cfg.perceptual if cfg.objective == "stage2" else "none")
    patches = PatchSampler(data.train, cfg.patch, seed=cfg.seed)
    keeper = None
    if cfg.mode == "full":
        keeper = stages.CodebookKeeper(model.preprocess_model, seed=cfg.seed)
        keeper.initialised = True  # continue from the base codebook

    def named_parameters():
        if cfg.mode == "lora":
            for _, p in model.named_parameters():
                p.requires_grad_(False)
            named = [(n, p) for n, p in model.named_parameters() if ".lora_" in n]
            for _, p in named:
                p.requires_grad_(True)
            return named
        return freeze_except(model, trainable)

    train_dir = out / "train"
    best_path = train_dir / "best.safetensors"

    def save_best() -> None:
        train_dir.mkdir(parents=True, exist_ok=True)
        tensors = _trainable_tensors(model, cfg.mode, lora_names)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(best_path) + ".tmp")
        Path(str(best_path) + ".tmp").replace(best_path)

    def loss_fn(step: int):
        return adapter_loss(model, patches.batch(cfg.batch), context, cfg, perceptual, sampler_steps, keeper, step)

    validator = Validator(codec, data.val[: cfg.val_images], cfg, save_best, train_dir)
    stage_cfg = StageConfig(
        "adapter",
        cfg.steps,
        cfg.lr,
        warmup=min(20, max(1, cfg.steps // 10)),
        min_lr_ratio=1.0,  # constant after warm-up, as the official fine-tuning (no scheduler)
        log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every,
        seed=cfg.seed,
        extra={k: v for k, v in asdict(cfg).items() if k not in ("steps", "lr", "seed")},
    )
    stage = Stage(
        stage_cfg,
        model,
        trainable or ("control_model.",),
        loss_fn,
        train_dir,
        samplers={"patches": patches, "validation": validator},
        saved_prefixes=trainable or None,
        saved_filter=(lambda k: ".lora_" in k) if cfg.mode == "lora" else None,
        progress=progress,
        after_step=validator.after_step,
        named_parameters=named_parameters,
    )
    if stage.is_done():  # trained, killed before the adapter was written: the history is in the checkpoint
        validator.load_state(json.loads((stage.dir / "state.json").read_text())["samplers"]["validation"])
    elif not (stage.dir / "state.json").is_file():  # step 0: the base itself is the first candidate
        validator.evaluate(0)
    t0 = time.perf_counter()
    summary = stage.run()
    wall = time.perf_counter() - t0
    frozen_after = tensor_digests(model, exclude=trainable)
    changed = sorted(k for k in frozen_before if frozen_after.get(k) != frozen_before[k])
    if changed:
        raise AssertionError(f"frozen tensors changed during fine-tuning: {changed[:5]} ({len(changed)} in all)")
    trained = named_parameters()
    n_trainable = int(sum(p.numel() for _, p in trained))
    n_total = int(sum(p.numel() for n, p in model.named_parameters() if ".lora_" not in n))
    # the best validation step (step 0 = the base, when nothing improved); in mode full its entropy tables are the
    # ones the validator rebuilt with update(force=True) just before measuring (and saving) that step
    best = load_file(str(best_path))
    sidecar = {
        "mode": cfg.mode,
        "objective": cfg.objective,
        "base": base,
        "data": data.record,
        "config": asdict(cfg),
        "sampler_steps": sampler_steps,
        "perceptual": perceptual.describe(),
        "steps_run": summary["steps"],
        "stopped_early": summary.get("stopped_early", False),
        "best": validator.best,
        "validation": validator.history,
        "last_train_metrics": summary.get("last", {}),
        "train_wall_s": round(summary.get("elapsed_s", wall), 1),
        "trainable_parameters": n_trainable,
        "total_parameters": n_total,
        "frozen": {
            "tensors": len(frozen_before),
            "sha256_before": digest_of(frozen_before),
            "sha256_after": digest_of(frozen_after),
        },
        "lora": (
            {"scale": cfg.lora_alpha / cfg.lora_rank, "rank": cfg.lora_rank, "modules": lora_names}
            if cfg.mode == "lora"
            else None
        ),
        "bitstream_preserving": cfg.mode != "full",
        "torch": torch.__version__,
        "python": sys.version.split()[0],
    }
    return save_adapter(adapter_path, best, sidecar)  # the sidecar is <out>/adapter.json


def config_from(raw: dict[str, Any]) -> FinetuneConfig:
    """A FinetuneConfig from a TOML/CLI table (unknown keys are an error naming the known ones)."""
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown fine-tuning option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    cfg = FinetuneConfig(**raw)
    cfg.check()
    return cfg
