"""RDEIC's training objectives (SPEC §4), as loss functions for ``harness.train.loop.Stage``.

* stage 0a ``vae``: the KL autoencoder (tiny model only: there is no pretrained SD here). MSE in [-1, 1] plus a
  small KL term; afterwards ``normalise_latent_scale`` rescales the latent exactly so that
  ``scale_factor x latent`` has unit std (the role 0.18215 plays for SD's VAE).
* stage 0b ``unet``: latent diffusion (ε-prediction) with the fixed empty-prompt context, t ~ U{0..299}
  (the only timesteps the relay sampler visits).
* stage 1: relay residual objective + rate loss; trains ``control_model`` + ``preprocess_model``; UNet and VAE frozen.
  ε̃ = ε + (c − x₀)/λ, x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε̃, t ~ U{0..299};
  L = w_g·MSE(x̂₀, x₀) + w_g·MSE(c, x₀) + w_b·bpp + w_b·L_vq.
* stage 2: fixed-step fine-tuning: the S-step spaced sampler from t = 299 with gradients, then the (frozen,
  gradient-carrying) VAE decode; L = w_p·MSE_pixel + w_g·MSE(c, x₀) + w_b·bpp + w_b·L_vq (no LPIPS: its
  AlexNet weights cannot be downloaded here).

The training forward of the compression module (``compression_forward``) mirrors ``Compression._slices``:
same checkerboard, same slice order, symbols round(y − μ) (straight-through gradient) so ŷ equals the
entropy-coded ŷ; the rate uses noise-relaxed Gaussian likelihoods (compressai's training mode).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from harness.codecs.rdeic.compression import Compression, anchor_mask
from harness.codecs.rdeic.model import RDEICModel
from harness.codecs.rdeic.schedule import SpacedSchedule, relay_lambda, relay_start_index


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x) - x).detach() + x


def posterior(vae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x in [-1, 1] -> (mean, logvar) of the KL posterior (unscaled latent)."""
    mean, logvar = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
    return mean, logvar.clamp(-30.0, 20.0)


def sample_posterior(vae, x: torch.Tensor) -> torch.Tensor:
    mean, logvar = posterior(vae, x)
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


# -- stage 0a: autoencoder -------------------------------------------------------------------------------------
@torch.no_grad()
def init_vae_posterior(model: RDEICModel, logvar: float = -8.0) -> None:
    """Start the posterior nearly deterministic (logvar bias = ``logvar``): with the small KL weight the VAE
    ends there anyway, and unit-variance sampling noise at step 0 slows the first thousand steps a lot."""
    qc = model.first_stage_model.quant_conv
    e = qc.out_channels // 2
    qc.bias[e:] = logvar


def vae_loss(model: RDEICModel, images: torch.Tensor, kl_weight: float = 1e-6) -> tuple[torch.Tensor, dict]:
    vae = model.first_stage_model
    x = images * 2 - 1
    mean, logvar = posterior(vae, x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    rec = vae.decode(z)
    mse = F.mse_loss(rec, x)
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()
    psnr = 10 * math.log10(4.0 / max(float(mse.detach()), 1e-12))  # [-1, 1] range: peak-to-peak 2
    return mse + kl_weight * kl, {"mse": float(mse.detach()), "kl": float(kl.detach()), "psnr_db": psnr}


def vae_decoder_loss(model: RDEICModel, images: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Decoder-only fine-tuning on larger crops (encoder frozen, so the latent space stays the same): the
    GroupNorm statistics of a decoder trained on 64 px patches do not carry over to whole images."""
    vae = model.first_stage_model
    x = images * 2 - 1
    with torch.no_grad():
        mean, _ = posterior(vae, x)
    mse = F.mse_loss(vae.decode(mean), x)
    psnr = 10 * math.log10(4.0 / max(float(mse.detach()), 1e-12))
    return mse, {"mse": float(mse.detach()), "psnr_db": psnr}


@torch.no_grad()
def normalise_latent_scale(model: RDEICModel, images: torch.Tensor) -> float:
    """Rescale the VAE latent exactly (quant_conv x k, post_quant_conv x 1/k) so that ``scale_factor x mean``
    has unit RMS on ``images`` (in [0, 1]); returns k. Reconstructions are unchanged (up to float rounding)."""
    vae = model.first_stage_model
    mean, _ = posterior(vae, images * 2 - 1)
    rms = float((mean * model.cfg.diffusion.scale_factor).pow(2).mean().sqrt())
    k = 1.0 / rms
    e = mean.shape[1]
    vae.quant_conv.weight[:e] *= k
    vae.quant_conv.bias[:e] *= k
    vae.quant_conv.bias[e:] += 2 * math.log(k)
    vae.post_quant_conv.weight /= k
    return k


# -- stage 0b: latent diffusion UNet ---------------------------------------------------------------------------
def scaled_latent(model: RDEICModel, images: torch.Tensor) -> torch.Tensor:
    """x₀ = scale_factor x posterior sample (no gradient: the VAE is frozen from here on)."""
    with torch.no_grad():
        return sample_posterior(model.first_stage_model, images * 2 - 1) * model.cfg.diffusion.scale_factor


def unet_loss(model: RDEICModel, images: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, dict]:
    x0 = scaled_latent(model, images)
    b = x0.shape[0]
    t = torch.randint(0, model.cfg.diffusion.used_timesteps, (b,))
    noise = torch.randn_like(x0)
    sa = model.sqrt_alphas_cumprod[t].view(b, 1, 1, 1)
    s1 = model.sqrt_one_minus_alphas_cumprod[t].view(b, 1, 1, 1)
    pred = model.unet(sa * x0 + s1 * noise, t, context.expand(b, -1, -1))
    loss = F.mse_loss(pred, noise)
    return loss, {"eps_mse": float(loss.detach())}


# -- the compression module's training forward -----------------------------------------------------------------
def compression_forward(comp: Compression, h: torch.Tensor, n_pixels: int) -> dict[str, torch.Tensor]:
    """Training forward: y, VQ hyper-latent (straight-through), checkerboard ŷ (straight-through rounding),
    noise-relaxed rate in bits per pixel of ``n_pixels`` (per image), guide_hint and c_latent."""
    gc = comp.gaussian_conditional
    y = comp.analysis(h)
    z = comp.hyper_enc(y)
    idx = comp.quantize.indices(z.detach())
    z_q = comp.quantize.lookup(idx)
    l_vq = 0.25 * F.mse_loss(z, z_q.detach()) + F.mse_loss(z_q, z.detach())
    hp = comp.hyper_dec(z + (z_q - z).detach())
    anchor = anchor_mask(y.shape[2], y.shape[3], y.device)
    non_anchor = ~anchor
    done: list[torch.Tensor] = []
    bits = y.new_zeros(())
    for i, (c, ys) in enumerate(zip(comp.cfg.slice_ch, y.split(list(comp.cfg.slice_ch), dim=1), strict=True)):
        ctx_ch = comp.channel_context[i](torch.cat(done, dim=1)) if i else None
        inp = torch.cat([ctx_ch, hp], dim=1) if i else hp
        s_a, m_a = comp.entropy_parameters_anchor[i](inp).split(c, dim=1)
        y_a = (ste_round(ys - m_a) + m_a) * anchor
        ctx_sp = comp.local_context[i](y_a)
        inp = torch.cat([ctx_sp, ctx_ch, hp], dim=1) if i else torch.cat([ctx_sp, hp], dim=1)
        s_n, m_n = comp.entropy_parameters_nonanchor[i](inp).split(c, dim=1)
        y_n = (ste_round(ys - m_n) + m_n) * non_anchor
        scales = torch.where(anchor, s_a, s_n)
        means = torch.where(anchor, m_a, m_n)
        noisy = ys + (torch.rand_like(ys) - 0.5)
        lik = gc.likelihood_lower_bound(gc._likelihood(noisy, scales, means))
        bits = bits - torch.log2(lik).sum()
        done.append(y_a + y_n)
    y_hat = torch.cat(done, dim=1)
    guide_hint, c_latent = comp.synthesis(y_hat)
    bpp = bits / (y.shape[0] * n_pixels)
    return {"y": y, "z": z, "indices": idx, "l_vq": l_vq, "bpp": bpp, "guide_hint": guide_hint, "c_latent": c_latent}


class CodebookKeeper:
    """Initialises the VQ codebook from encoder outputs and re-seeds unused entries (CVQ-VAE's idea, simplified):
    every ``every`` steps, codes not chosen since the last check are replaced by random recent z vectors."""

    def __init__(self, comp: Compression, every: int = 50, seed: int = 0) -> None:
        self.comp = comp
        self.every = every
        self.used = torch.zeros(comp.cfg.codebook_size, dtype=torch.bool)
        self.recent: list[torch.Tensor] = []
        self.gen = torch.Generator().manual_seed(seed)
        self.initialised = False

    def state(self) -> dict:
        return {"gen": self.gen.get_state().tolist()}

    def load_state(self, state: dict) -> None:
        self.gen.set_state(torch.tensor(state["gen"], dtype=torch.uint8))
        self.initialised = True

    @torch.no_grad()
    def observe(self, step: int, z: torch.Tensor, idx: torch.Tensor) -> float:
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        self.recent = [flat, *self.recent][:8]
        weight = self.comp.quantize.embedding.weight
        if not self.initialised:
            if step == 0:  # a fresh stage: codebook = noisy copies of z vectors (not the tiny uniform init)
                pool = torch.cat(self.recent)
                pick = torch.randint(0, pool.shape[0], (weight.shape[0],), generator=self.gen)
                noise = torch.randn(weight.shape, generator=self.gen) * pool.std(0, keepdim=True) * 0.1
                weight.copy_(pool[pick] + noise)
            self.initialised = True
        self.used[idx.reshape(-1).unique()] = True
        usage = float(self.used.float().mean())
        if (step + 1) % self.every == 0:
            dead = (~self.used).nonzero().flatten()
            if dead.numel():
                pool = torch.cat(self.recent)
                pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=self.gen)
                noise = torch.randn(dead.numel(), weight.shape[1], generator=self.gen) * pool.std(0) * 0.1
                weight[dead] = pool[pick] + noise
            self.used.zero_()
        return usage


def zero_init_control(model: RDEICModel) -> None:
    """ControlNet-style start: the injection convs are zero, so UNet + control == the UNet at step 0."""
    cm = model.control_model
    for seq in [*cm.enc_zero_convs_out, cm.middle_block_out, *cm.dec_zero_convs_out]:
        for p in seq.parameters():
            torch.nn.init.zeros_(p)


# -- stage 1 ---------------------------------------------------------------------------------------------------
def stage1_loss(
    model: RDEICModel,
    images: torch.Tensor,
    context: torch.Tensor,
    w_guide: float,
    w_rate: float,
    keeper: CodebookKeeper | None = None,
    step: int = 0,
) -> tuple[torch.Tensor, dict]:
    cfg = model.cfg.diffusion
    b = images.shape[0]
    x0 = scaled_latent(model, images)
    with torch.no_grad():
        h = model.encode_feature(images)
    out = compression_forward(model.preprocess_model, h, images.shape[2] * images.shape[3])
    usage = keeper.observe(step, out["z"], out["indices"]) if keeper is not None else float("nan")
    c = out["c_latent"]
    lam = relay_lambda(cfg)
    t = torch.randint(0, cfg.used_timesteps, (b,))
    eps = torch.randn_like(x0)
    eps_tilde = eps + (c - x0) / lam
    sa = model.sqrt_alphas_cumprod[t].view(b, 1, 1, 1)
    s1 = model.sqrt_one_minus_alphas_cumprod[t].view(b, 1, 1, 1)
    x_t = sa * x0 + s1 * eps_tilde
    eps_hat = model.control_model(model.unet, x_t, out["guide_hint"], t, context.expand(b, -1, -1))
    x0_hat = (
        model.sqrt_recip_alphas_cumprod[t].view(b, 1, 1, 1) * x_t
        - model.sqrt_recipm1_alphas_cumprod[t].view(b, 1, 1, 1) * eps_hat
    )
    l_x0 = F.mse_loss(x0_hat, x0)
    l_c = F.mse_loss(c, x0)
    loss = w_guide * (l_x0 + l_c) + w_rate * (out["bpp"] + out["l_vq"])
    return loss, {
        "x0_mse": float(l_x0.detach()),
        "c_mse": float(l_c.detach()),
        "bpp": float(out["bpp"].detach()),
        "l_vq": float(out["l_vq"].detach()),
        "code_use": usage,
    }


# -- stage 2 ---------------------------------------------------------------------------------------------------
def relay_sample_train(
    model: RDEICModel, c: torch.Tensor, hint: torch.Tensor, context: torch.Tensor, steps: int
) -> torch.Tensor:
    """The S-step relay sampler of ``sampler.relay_sample`` with gradients (same coefficients, same order)."""
    cfg = model.cfg.diffusion
    sched = SpacedSchedule.build(cfg, steps)
    t0 = relay_start_index(cfg)
    b = c.shape[0]
    x = model.sqrt_alphas_cumprod[t0] * c + model.sqrt_one_minus_alphas_cumprod[t0] * torch.randn_like(c)
    ctx = context.expand(b, -1, -1)

    def f32(arr, k: int) -> torch.Tensor:
        return torch.tensor(arr[k], dtype=torch.float64).float()

    for k in range(len(sched.timesteps) - 1, -1, -1):
        t = torch.full((b,), sched.timesteps[k], dtype=torch.long)
        e = model.control_model(model.unet, x, hint, t, ctx)
        x0 = f32(sched.sqrt_recip_alphas_cumprod, k) * x - f32(sched.sqrt_recipm1_alphas_cumprod, k) * e
        mean = f32(sched.posterior_mean_coef1, k) * x0 + f32(sched.posterior_mean_coef2, k) * x
        x = mean + (torch.sqrt(f32(sched.posterior_variance, k)) * torch.randn_like(x) if k else 0.0)
    return x


def stage2_loss(
    model: RDEICModel,
    images: torch.Tensor,
    context: torch.Tensor,
    w_pixel: float,
    w_guide: float,
    w_rate: float,
    steps: int,
    keeper: CodebookKeeper | None = None,
    step: int = 0,
) -> tuple[torch.Tensor, dict]:
    x0 = scaled_latent(model, images)
    with torch.no_grad():
        h = model.encode_feature(images)
    out = compression_forward(model.preprocess_model, h, images.shape[2] * images.shape[3])
    usage = keeper.observe(step, out["z"], out["indices"]) if keeper is not None else float("nan")
    x = relay_sample_train(model, out["c_latent"], out["guide_hint"], context, steps)
    decoded = model.first_stage_model.decode(x / model.cfg.diffusion.scale_factor)
    l_pix = F.mse_loss(decoded, images * 2 - 1)
    l_c = F.mse_loss(out["c_latent"], x0)
    loss = w_pixel * l_pix + w_guide * l_c + w_rate * (out["bpp"] + out["l_vq"])
    psnr = 10 * math.log10(4.0 / max(float(l_pix.detach()), 1e-12))
    return loss, {
        "pix_mse": float(l_pix.detach()),
        "psnr_db": psnr,
        "c_mse": float(l_c.detach()),
        "bpp": float(out["bpp"].detach()),
        "code_use": usage,
    }


def describe_losses() -> dict[str, Any]:
    return {
        "stage0_vae": "MSE(decoded, x) in [-1,1] + kl_weight * KL",
        "stage0_unet": "MSE(eps_hat, eps), t ~ U{0..used_timesteps-1}, fixed empty-prompt context",
        "stage1": "w_g*(MSE(x0_hat, x0) + MSE(c, x0)) + w_b*(bpp + L_vq)",
        "stage2": "w_p*MSE_pixel + w_g*MSE(c, x0) + w_b*(bpp + L_vq), S-step sampler with gradients",
    }
