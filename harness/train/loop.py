"""A small, resumable training loop shared by every stage (and, later, by adapter fine-tuning).

One stage = one folder ``<out>/<stage>/``::

    checkpoint.safetensors   model state of the modules the stage touches + optimizer moments + torch RNG
    state.json               step, seed, hyper-parameters, the data sampler's RNG, elapsed seconds
    metrics.csv              one row per logged step (step, elapsed_s, lr, loss, stage metrics)
    done.json                written last: the stage is complete (a rerun skips it and loads its weights)

AdamW only over the parameters named trainable; everything else gets ``requires_grad = False``, so a frozen
parameter is bit-identical after any number of steps (tests/test_train_loop.py checks it).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: ``loss_fn(step) -> (loss, {metric: float})``: draws its own batch (from a sampler registered with the stage).
LossFn = Callable[[int], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class StageConfig:
    name: str
    steps: int
    lr: float
    weight_decay: float = 0.01  # AdamW's PyTorch default (SPEC §4)
    warmup: int = 20
    min_lr_ratio: float = 0.1  # cosine decay to lr * this at the last step
    grad_clip: float = 1.0
    log_every: int = 10
    ckpt_every: int = 100
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in state.json (loss weights, batch size...)

    def lr_at(self, step: int) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(1, self.steps - self.warmup)
        frac = min(1.0, (step - self.warmup) / span)
        return self.lr * (self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def freeze_except(model: nn.Module, trainable_prefixes: tuple[str, ...]) -> list[tuple[str, nn.Parameter]]:
    """requires_grad only for parameters under ``trainable_prefixes``; returns those (name, parameter) pairs."""
    out = []
    for name, p in model.named_parameters():
        train = name.startswith(trainable_prefixes)
        p.requires_grad_(train)
        if train:
            out.append((name, p))
    if not out:
        raise ValueError(f"no parameter under {trainable_prefixes}")
    return out


def _optimizer_tensors(opt: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    out = {}
    params = opt.param_groups[0]["params"]
    for name, p in zip(names, params, strict=True):
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq", "step"):
            if k in st:
                v = st[k]
                out[f"optim.{name}.{k}"] = v if torch.is_tensor(v) else torch.tensor(float(v))
    return out


def _load_optimizer(opt: torch.optim.Optimizer, names: list[str], tensors: dict[str, torch.Tensor]) -> None:
    params = opt.param_groups[0]["params"]
    for name, p in zip(names, params, strict=True):
        st = {
            k: tensors[f"optim.{name}.{k}"].clone()
            for k in ("exp_avg", "exp_avg_sq", "step")
            if f"optim.{name}.{k}" in tensors
        }
        if st:
            opt.state[p] = st


class Stage:
    """Runs ``cfg.steps`` AdamW steps of ``loss_fn`` on the trainable parameters of ``model``, resumably."""

    def __init__(
        self,
        cfg: StageConfig,
        model: nn.Module,
        trainable_prefixes: tuple[str, ...],
        loss_fn: LossFn,
        out_dir: str | os.PathLike,
        samplers: dict[str, Any] | None = None,
        saved_prefixes: tuple[str, ...] | None = None,
        progress: bool = True,
        after_step: Callable[[int], bool] | None = None,
        saved_filter: Callable[[str], bool] | None = None,
        named_parameters: Callable[[], list[tuple[str, nn.Parameter]]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.trainable_prefixes = trainable_prefixes
        self.loss_fn = loss_fn
        self.dir = Path(out_dir) / cfg.name
        self.samplers = samplers or {}
        self.saved_prefixes = saved_prefixes or trainable_prefixes
        self.progress = progress
        #: called with the number of steps done after each step (validation); returning True stops early
        self.after_step = after_step
        #: which state-dict keys a checkpoint holds (default: those under saved_prefixes)
        self.saved_filter = saved_filter or (lambda k: k.startswith(self.saved_prefixes))
        #: the trainable parameters, when not simply "everything under trainable_prefixes" (LoRA factors)
        self.named_parameters = named_parameters

    # -- files ----------------------------------------------------------------------------------------------
    @property
    def done_path(self) -> Path:
        return self.dir / "done.json"

    def is_done(self) -> bool:
        return self.done_path.is_file()

    def _model_state(self) -> dict[str, torch.Tensor]:
        return {f"model.{k}": v.detach().clone() for k, v in self.model.state_dict().items() if self.saved_filter(k)}

    def save(self, step: int, opt: torch.optim.Optimizer, names: list[str], elapsed: float) -> None:
        from safetensors.torch import save_file

        self.dir.mkdir(parents=True, exist_ok=True)
        tensors = self._model_state()
        tensors.update(_optimizer_tensors(opt, names))
        tensors["rng.torch"] = torch.get_rng_state()
        tmp = self.dir / "checkpoint.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.dir / "checkpoint.safetensors")
        state = {
            "stage": self.cfg.name,
            "step": step,
            "elapsed_s": elapsed,
            "config": asdict(self.cfg),
            "trainable_prefixes": list(self.trainable_prefixes),
            "samplers": {k: s.state() for k, s in self.samplers.items()},
        }
        tmp_json = self.dir / "state.json.tmp"
        tmp_json.write_text(json.dumps(state, indent=1, default=_json_default))
        os.replace(tmp_json, self.dir / "state.json")

    def load(self, opt: torch.optim.Optimizer | None, names: list[str] | None) -> tuple[int, float]:
        """Restore the last checkpoint if any; returns (step, elapsed seconds)."""
        from safetensors.torch import load_file

        ckpt = self.dir / "checkpoint.safetensors"
        if not ckpt.is_file():
            return 0, 0.0
        tensors = load_file(str(ckpt))
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        missing = self.model.load_state_dict(model_state, strict=False)
        if missing.unexpected_keys:
            raise RuntimeError(f"{ckpt}: unexpected keys {missing.unexpected_keys[:4]}")
        state = json.loads((self.dir / "state.json").read_text())
        if opt is not None and names is not None:
            _load_optimizer(opt, names, tensors)
            if "rng.torch" in tensors:
                torch.set_rng_state(tensors["rng.torch"])
            for k, s in self.samplers.items():
                if k in state.get("samplers", {}):
                    s.load_state(_restore_json(state["samplers"][k]))
        return int(state["step"]), float(state.get("elapsed_s", 0.0))

    # -- the loop -------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.is_done():
            self.load(None, None)
            freeze_except(self.model, self.trainable_prefixes)
            return json.loads(self.done_path.read_text())
        torch.manual_seed(cfg.seed)
        named = freeze_except(self.model, self.trainable_prefixes)
        if self.named_parameters is not None:
            named = self.named_parameters()
        names = [n for n, _ in named]
        opt = torch.optim.AdamW([p for _, p in named], lr=cfg.lr, weight_decay=cfg.weight_decay)
        start, elapsed0 = self.load(opt, names)
        self.dir.mkdir(parents=True, exist_ok=True)
        csv_path = self.dir / "metrics.csv"
        rows = _read_csv(csv_path, keep_until=start)
        t0 = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(
                total=cfg.steps,
                initial=start,
                desc=cfg.name,
                file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 30.0,
                dynamic_ncols=True,
            )
        last: dict[str, float] = {}
        stopped_at = None
        for step in range(start, cfg.steps):
            lr = cfg.lr_at(step)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, metrics = self.loss_fn(step)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.name}: non-finite loss at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for _, p in named], cfg.grad_clip)
            opt.step()
            last = {"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}}
            done_steps = step + 1
            if done_steps % cfg.log_every == 0 or done_steps == cfg.steps:
                rows.append(
                    {"step": done_steps, "elapsed_s": round(elapsed0 + time.perf_counter() - t0, 2), "lr": lr, **last}
                )
                _write_csv(csv_path, rows)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:4]}, refresh=False)
            if self.after_step is not None and self.after_step(done_steps) and done_steps < cfg.steps:
                stopped_at = done_steps
                break
            if done_steps % cfg.ckpt_every == 0 and done_steps < cfg.steps:
                self.save(done_steps, opt, names, elapsed0 + time.perf_counter() - t0)
        if bar is not None:
            bar.close()
        elapsed = elapsed0 + time.perf_counter() - t0
        self.save(stopped_at or cfg.steps, opt, names, elapsed)
        summary = {
            "stage": cfg.name,
            "steps": stopped_at or cfg.steps,
            "elapsed_s": round(elapsed, 1),
            "last": last,
            "stopped_early": stopped_at is not None,
        }
        self.done_path.write_text(json.dumps(summary, indent=1))
        return summary


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _restore_json(obj: Any) -> Any:
    return obj


def _read_csv(path: Path, keep_until: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [row for row in csv.DictReader(fh) if int(row["step"]) <= keep_until]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        for k in row:
            if k not in fields:
                fields.append(k)
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
