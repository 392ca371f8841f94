"""The LDM-RSIC-tiny recipe: ``python -m harness.train.ldm_rsic_tiny --out weights/ldm-rsic-tiny``.

Trains the ``tiny`` config (``harness/codecs/ldm_rsic/config.py``) on CPU from offline remote-sensing STAND-INS
(procedural overhead scenes, ``harness.datasets.remote_sensing.overhead_scene`` with ``TRAIN_SEEDS``, and hillshaded
renders of matplotlib's ``jacksboro_fault_dem.npz``; never EuroSAT, never the held-out ``TEST_SEEDS`` nor
``topobathy.npz``), with the shared resumable loop (``harness/train/loop.py``)::

    elic            ELIC-tiny, loss λ·255²·MSE + bpp (+ the entropy bottleneck's aux loss), 128 px patches
    (pairs)         (x, x_tilde) with x_tilde = the real coded decode, rounded to uint8 (the official PNG round trip)
    s1              MEN + stage-I LRM (fed x_tilde and x), L1(MEN(x_tilde, LRM(x_tilde, x)), x); 64 px tiles
    s2_encoder      condition encoder + denoiser: 4-step chain from q_sample(F, T-1), L1(F_hat, F), F = LRM output
    s2_joint        MEN + condition + denoiser: L1(MEN(x_tilde, F_hat), x) + L1(F_hat, F)
    (j2k pairs)     JPEG2000 (9/7, one layer) decodes at 0.6 / 1.0 / 1.6 x ELIC-tiny's mean training bpp
    j2k_joint       JPEG2000*'s MEN: the s2_joint objective on JPEG2000 decodes, started from the ELIC MEN

then writes ``ldm-rsic-tiny.safetensors`` (``elic.*`` + ``s2.*``; parameters fp16, buffers as they are, the CDF
tables rebuilt), ``j2k-men-tiny.safetensors`` (``s2.*``) and ``recipe.json``. Deviations from the official recipe
(stated in the model card): stage I keeps the prior (the paper, not the code's prior-free S1, brief §6.1), the
stage-II target is the LRM output the stage-I MEN consumed (the paper; the code uses pre-MLP tokens, §6.2), S2's MEN
starts from S1's, AdamW with cosine decay and minutes instead of days, the tiny MEN has a global residual.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while they wait made a training step 10-30x slower on 2 cores shared with other jobs
# (measured: 20-47 s vs 1.4 s per ELIC step at load ~7); passive waiting changes scheduling only, not the numbers.
# Must be set before torch (and its OpenMP runtime) is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from harness.train import recipe_cli
from harness.train.loop import Stage, StageConfig

WEIGHTS_FILE = "ldm-rsic-tiny.safetensors"
J2K_FILE = "j2k-men-tiny.safetensors"


@dataclass
class Recipe:
    seed: int = 518
    threads: int = 2
    lam_index: int = 2  # LAMBDAS[2] = 0.0032
    elic_steps: int = 1000
    elic_batch: int = 4
    elic_patch: int = 128
    elic_lr: float = 4e-4
    men_patch: int = 64  # = the tiny MEN's native size (K = 1)
    s1_steps: int = 600
    s1_batch: int = 8
    s1_lr: float = 1e-3
    s2e_steps: int = 200
    s2e_batch: int = 8
    s2e_lr: float = 1e-3
    s2j_steps: int = 400
    s2j_batch: int = 8
    s2j_lr: float = 3e-4
    j2k_steps: int = 300
    j2k_batch: int = 8
    j2k_lr: float = 3e-4
    j2k_rate_factors: tuple[float, ...] = (0.6, 1.0, 1.6)

    def scaled(self, factor: float) -> Recipe:
        """The same recipe with every step count multiplied (``--scale 0.01`` for a smoke run)."""
        out = Recipe(**asdict(self))
        for name in ("elic_steps", "s1_steps", "s2e_steps", "s2j_steps", "j2k_steps"):
            setattr(out, name, max(2, round(getattr(self, name) * factor)))
        return out


_log = recipe_cli.log


def _ckpt_every(steps: int) -> int:
    return max(10, min(100, steps // 5))


# -- data -----------------------------------------------------------------------------------------------------
def terrain_renders() -> list[tuple[str, np.ndarray]]:
    """Hillshaded renders of ``jacksboro_fault_dem.npz`` under light directions and colour maps other than the
    ``standin_terrain`` rendering (azimuth 315°, gist_earth); topobathy.npz stays held out."""
    import matplotlib
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    path = Path(matplotlib.get_data_path()) / "sample_data" / "jacksboro_fault_dem.npz"
    with np.load(path) as npz:
        z = npz["elevation"].astype(np.float64)
    out = []
    for az, cmap in ((45, "terrain"), (135, "gist_earth"), (225, "YlGn")):
        rgba = LightSource(azdeg=az, altdeg=45).shade(z, cmap=colormaps[cmap], vert_exag=0.05)
        out.append((f"jacksboro_az{az}_{cmap}", np.rint(np.clip(rgba[..., :3], 0, 1) * 255).astype(np.uint8)))
    return out


def training_images() -> list[tuple[str, np.ndarray]]:
    from harness.datasets.remote_sensing import TEST_SEEDS, TRAIN_SEEDS, overhead_scene

    if set(TRAIN_SEEDS) & set(TEST_SEEDS):
        raise RuntimeError("a held-out stand-in seed is among the training seeds")
    return [(f"overhead_{s}", overhead_scene(s)) for s in TRAIN_SEEDS] + terrain_renders()


def crop64(image: np.ndarray) -> np.ndarray:
    """Centre crop to multiples of 64 (whole ELIC padding units: no padding in the training pairs)."""
    h, w = image.shape[:2]
    hh, ww = h // 64 * 64, w // 64 * 64
    top, left = (h - hh) // 2, (w - ww) // 2
    return np.ascontiguousarray(image[top : top + hh, left : left + ww])


class PairSampler:
    """Seeded aligned crops of (x, x_tilde) pairs with horizontal/vertical flips, as float tensors in [0, 1].
    ``state`` / ``load_state`` carry the generator (a resumed run draws what an unbroken one would)."""

    def __init__(self, pairs: list[tuple[np.ndarray, np.ndarray]], patch: int, seed: int) -> None:
        self.pairs = [p for p in pairs if min(p[0].shape[:2]) >= patch]
        self.patch = patch
        area = np.array([p[0].shape[0] * p[0].shape[1] for p in self.pairs], np.float64)
        self.weights = area / area.sum()
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.patch
        xs = np.empty((size, p, p, 3), np.uint8)
        ts = np.empty((size, p, p, 3), np.uint8)
        for i in range(size):
            x, t = self.pairs[int(self.rng.choice(len(self.pairs), p=self.weights))]
            y0 = int(self.rng.integers(0, x.shape[0] - p + 1))
            x0 = int(self.rng.integers(0, x.shape[1] - p + 1))
            a, b = x[y0 : y0 + p, x0 : x0 + p], t[y0 : y0 + p, x0 : x0 + p]
            if self.rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            if self.rng.random() < 0.5:
                a, b = a[::-1], b[::-1]
            xs[i], ts[i] = a, b

        def tensor(arr: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()

        return tensor(xs), tensor(ts)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


# -- the model being trained ----------------------------------------------------------------------------------
class Trainee(nn.Module):
    """ELIC, the S2 network, the stage-I LRM (6-channel condition encoder) and JPEG2000*'s S2 network."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        from harness.codecs.ldm_rsic.config import TINY
        from harness.codecs.ldm_rsic.elic import ELIC
        from harness.codecs.ldm_rsic.men import S2, ConditionEncoder

        torch.manual_seed(seed)
        self.elic = ELIC(TINY.elic)
        self.s2 = S2(TINY.men)
        self.lrm = ConditionEncoder(TINY.men, 2)
        self.j2k = S2(TINY.men)
        for s2 in (self.s2, self.j2k):
            init_men(s2)


def init_men(s2: nn.Module) -> None:
    """Our initialisation (not part of the architecture): the output conv at zero, so that with the tiny config's
    global residual the MEN starts as the identity; FiLM scales at 1 (x * Linear(p) starts as x)."""
    nn.init.zeros_(s2.G.output.weight)
    for name, module in s2.named_modules():
        if name.endswith("ffn") and hasattr(module, "ln1"):
            nn.init.zeros_(module.ln1.weight)
            nn.init.ones_(module.ln1.bias)
            nn.init.zeros_(module.ln2.weight)
            nn.init.zeros_(module.ln2.bias)


AUX_WEIGHT = 1e-3


def elic_loss(model: Trainee, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, dict[str, float]]:
    out = model.elic.forward_train(x)
    mse = torch.mean((out["x_hat"] - x) ** 2)
    bpp = out["bits"] / (x.shape[0] * x.shape[2] * x.shape[3])
    # the aux loss only reaches the entropy bottleneck's quantiles; scaled down so that it does not dominate the
    # shared gradient-norm clip (Adam's step size does not depend on the scale)
    loss = lam * 255**2 * mse + bpp + AUX_WEIGHT * out["aux"]
    psnr = -10 * torch.log10(mse.detach().clamp_min(1e-10))
    return loss, {"bpp": float(bpp.detach()), "psnr": float(psnr), "aux": float(out["aux"].detach())}


def chain(s2: nn.Module, cond: torch.Tensor, target: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Training chain (brief §4): F_T = q_sample(F, T-1), then all T reverse steps with gradients."""
    d = s2.diffusion
    x = d.q_sample(target, d.timesteps - 1, noise)
    return d.sample(cond, x)


def _men_terms(model: Trainee, s2: nn.Module, x: torch.Tensor, xt: torch.Tensor, joint: bool):
    with torch.no_grad():
        target = model.lrm(torch.cat([xt, x], dim=1))
    f_hat = chain(s2, s2.condition(xt), target, torch.randn_like(target))
    l_prior = (f_hat - target).abs().mean()
    if not joint:
        return l_prior, {"l_prior": float(l_prior)}
    out = s2.G(xt, f_hat)
    l_pix = (out - x).abs().mean()
    return l_pix + l_prior, {"l_pix": float(l_pix), "l_prior": float(l_prior), **_gain(out, x, xt)}


def _gain(out: torch.Tensor, x: torch.Tensor, xt: torch.Tensor) -> dict[str, float]:
    """PSNR gain of the (clamped) MEN output over its input on this batch, dB."""
    with torch.no_grad():
        mse_out = torch.mean((out.clamp(0, 1) - x) ** 2).clamp_min(1e-10)
        mse_in = torch.mean((xt - x) ** 2).clamp_min(1e-10)
    return {"gain_db": float(10 * torch.log10(mse_in / mse_out))}


def s1_loss(model: Trainee, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    out = model.s2.G(xt, model.lrm(torch.cat([xt, x], dim=1)))
    loss = (out - x).abs().mean()
    return loss, {"l_pix": float(loss), **_gain(out, x, xt)}


# -- pairs --------------------------------------------------------------------------------------------------
def elic_pairs(model: Trainee, images: list[tuple[str, np.ndarray]]) -> tuple[list, float]:
    """(x, x_tilde uint8) through the real coder (compress: y_hat is the decoder's), and the mean bpp."""
    model.elic.update(force=True)
    model.elic.eval()
    pairs, bpps = [], []
    for _, img in images:
        x = crop64(img)
        t = torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255.0
        strings, _, y_hat = model.elic.compress(t)
        with torch.no_grad():
            xt = model.elic.synthesis(y_hat)
        xt8 = np.rint(xt[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        pairs.append((x, xt8))
        bpps.append(8 * sum(len(s) for s in strings) / (x.shape[0] * x.shape[1]))
    model.elic.train()
    return pairs, float(np.mean(bpps))


def j2k_pairs(images: list[tuple[str, np.ndarray]], bpp: float, factors: tuple[float, ...]) -> list:
    from harness.codecs.base import create_codec

    pairs = []
    for f in factors:
        codec = create_codec("jpeg2000", target_bpp=round(bpp * f, 4))
        for _, img in images:
            x = crop64(img)
            pairs.append((x, codec.decode(codec.encode(x).data, x.shape[:2])))
    return pairs


def _save_pairs(path: Path, pairs: list, extra: dict) -> None:
    arrays = {f"x{i}": p[0] for i, p in enumerate(pairs)} | {f"t{i}": p[1] for i, p in enumerate(pairs)}
    np.savez(path, **arrays, meta=np.array(json.dumps(extra)))


def _load_pairs(path: Path) -> tuple[list, dict]:
    with np.load(path) as npz:
        n = sum(1 for k in npz.files if k.startswith("x"))
        return [(npz[f"x{i}"], npz[f"t{i}"]) for i in range(n)], json.loads(str(npz["meta"]))


# -- export ---------------------------------------------------------------------------------------------------
def half_params(module: nn.Module, prefix: str, skip: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """State dict under ``prefix``: parameters as fp16, buffers in their own dtype; keys under ``skip`` dropped."""
    params = {n for n, _ in module.named_parameters()}
    out = {}
    for k, v in module.state_dict().items():
        if k.startswith(skip):
            continue
        out[prefix + k] = v.detach().half() if k in params and v.is_floating_point() else v.detach()
    return out


#: the S2 keys repeating condition/denoise tensors (``diffusion.model.*``, ``diffusion.condition.*``): not stored
S2_DUPLICATES = ("diffusion.model.", "diffusion.condition.")


def export(model: Trainee, out: Path) -> dict[str, str]:
    from harness.codecs.rdeic.checkpoint import file_sha256, save_safetensors

    model.elic.update(force=True)
    state = half_params(model.elic, "elic.") | half_params(model.s2, "s2.", S2_DUPLICATES)
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(state, out / WEIGHTS_FILE)
    save_safetensors(half_params(model.j2k, "s2.", S2_DUPLICATES), out / J2K_FILE)
    return {name: file_sha256(out / name) for name in (WEIGHTS_FILE, J2K_FILE)}


# -- the recipe -----------------------------------------------------------------------------------------------
def train(recipe: Recipe, out: Path, work: Path, progress: bool = True) -> dict:
    from harness.codecs.ldm_rsic.config import LAMBDAS
    from harness.train.data import PatchSampler

    lam = LAMBDAS[recipe.lam_index]
    model = Trainee(recipe.seed)
    images = training_images()
    summary: dict = {}
    patches = PatchSampler([im for _, im in images], recipe.elic_patch, seed=recipe.seed, scales=(1.0, 0.5))
    cfg = StageConfig(
        "elic",
        recipe.elic_steps,
        recipe.elic_lr,
        warmup=50,
        seed=recipe.seed,
        ckpt_every=_ckpt_every(recipe.elic_steps),
        extra={"batch": recipe.elic_batch, "patch": recipe.elic_patch, "lambda": lam},
    )
    summary["elic"] = Stage(
        cfg,
        model,
        ("elic.",),
        lambda step: elic_loss(model, patches.batch(recipe.elic_batch), lam),
        work,
        samplers={"patches": patches},
        progress=progress,
    ).run()

    pairs_file = work / "pairs_elic.npz"
    if pairs_file.is_file():
        pairs, meta = _load_pairs(pairs_file)
    else:
        pairs, bpp = elic_pairs(model, images)
        meta = {"mean_bpp": bpp}
        _save_pairs(pairs_file, pairs, meta)
    summary["elic_training_mean_bpp"] = meta["mean_bpp"]
    _log(f"ELIC-tiny pairs: {len(pairs)} images, mean bpp {meta['mean_bpp']:.4f}")

    def men_stage(name, steps, lr, batch, prefixes, loss, sampler, seed_offset):
        cfg = StageConfig(
            name, steps, lr, seed=recipe.seed + seed_offset, ckpt_every=_ckpt_every(steps),
            extra={"batch": batch, "patch": recipe.men_patch},
        )  # fmt: skip
        return Stage(
            cfg, model, prefixes, lambda step: loss(*sampler.batch(batch)), work,
            samplers={"pairs": sampler}, progress=progress,
        ).run()  # fmt: skip

    def sampler(p: list, offset: int) -> PairSampler:
        return PairSampler(p, recipe.men_patch, seed=recipe.seed + offset)

    summary["s1"] = men_stage(
        "s1", recipe.s1_steps, recipe.s1_lr, recipe.s1_batch, ("lrm.", "s2.G."),
        lambda x, xt: s1_loss(model, x, xt), sampler(pairs, 1), 1,
    )  # fmt: skip
    summary["s2_encoder"] = men_stage(
        "s2_encoder", recipe.s2e_steps, recipe.s2e_lr, recipe.s2e_batch, ("s2.condition.", "s2.denoise."),
        lambda x, xt: _men_terms(model, model.s2, x, xt, False), sampler(pairs, 2), 2,
    )  # fmt: skip
    summary["s2_joint"] = men_stage(
        "s2_joint", recipe.s2j_steps, recipe.s2j_lr, recipe.s2j_batch, ("s2.G.", "s2.condition.", "s2.denoise."),
        lambda x, xt: _men_terms(model, model.s2, x, xt, True), sampler(pairs, 3), 3,
    )  # fmt: skip

    pairs_file = work / "pairs_j2k.npz"
    if pairs_file.is_file():
        jpairs, _ = _load_pairs(pairs_file)
    else:
        jpairs = j2k_pairs(images, meta["mean_bpp"], recipe.j2k_rate_factors)
        _save_pairs(pairs_file, jpairs, {"rates": [meta["mean_bpp"] * f for f in recipe.j2k_rate_factors]})
    model.j2k.load_state_dict(model.s2.state_dict())  # a resumed or finished stage overwrites it
    summary["j2k_joint"] = men_stage(
        "j2k_joint", recipe.j2k_steps, recipe.j2k_lr, recipe.j2k_batch, ("j2k.G.", "j2k.condition.", "j2k.denoise."),
        lambda x, xt: _men_terms(model, model.j2k, x, xt, True), sampler(jpairs, 4), 4,
    )  # fmt: skip
    summary["files_sha256"] = export(model, out)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = recipe_cli.parser("harness.train.ldm_rsic_tiny", __doc__, "weights/ldm-rsic-tiny").parse_args(argv)
    recipe, out, work = recipe_cli.setup(Recipe(), args)
    work.mkdir(parents=True, exist_ok=True)
    clock = recipe_cli.Clock()
    _log(f"LDM-RSIC-tiny recipe -> {out} (checkpoints in {work}), {recipe.threads} threads")
    summary = train(recipe, out, work, progress=not args.no_progress)
    recipe_cli.write_record(
        out, "harness.train.ldm_rsic_tiny", argv, recipe, summary, clock,
        config="tiny",
        training_images=[{"name": name, "shape": list(img.shape)} for name, img in training_images()],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
