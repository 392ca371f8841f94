"""DICM's training objective (BRIEF §4) as a loss function for ``harness.train.loop.Stage``, and the stereo
training data.

Per batch of (primary x, side s) pairs in [-1, 1]::

    ctx, bits_x = context_fn(x)        (straight-through rounded y_hat -> pyramid; noise-relaxed bits)
    w,   bits_w = encode_w(s)          (+ N(0, w_noise_std) in training, as the official model.py does)
    w := 0 for a fraction ``w_drop`` of the batch (see below)
    t ~ U{0..T-1}, x_t = sqrt(ab_t) x + sqrt(1 - ab_t) eps, out = UNet(x_t, t / T, ctx + w)
    pred_mode "noise" (official): x0_hat = clamp((x_t - sqrt(1 - ab_t) out) / sqrt(ab_t), -1, 1), target = eps
    pred_mode "x" (tiny):         x0_hat = clamp(out, -1, 1),                                     target = x
    L = (1 - alpha) |target - out|_1 + alpha * aux(x0_hat, x) + beta * (bpp_x + bpp_w)
        + ctx_weight * (|ctx[0] - x|_1 + |w[0] - s|_1)

``aux`` is L1 here (BRIEF §5: the LPIPS-VGG weights cannot be downloaded offline). The factorized priors' medians
stay at their initial 0 (the quantisation offset of z; any fixed offset codes equally well) instead of being
learned by the official median loss, whose step per iteration is the learning rate (far too slow for a few
thousand steps); their coding range (lower/upper quantiles) is solved once at export (``tails_for``).

Two differences from the official objective, stated rather than hidden. The ``ctx_weight`` term (0 officially):
the first pyramid level (3 channels, full resolution) of each compressor is also asked to reconstruct its input,
which a few thousand CPU steps need to keep the latents informative. And the official loss also runs a second chain
that reconstructs the side image from its own compressor (``context_fn_cor``) *without* w, which is how its
shared UNet learns to decode without side information. The tiny recipe gets that ability at no extra cost by
zeroing w for a random ``w_drop`` share of each batch ("DICM without w" is then the same model with w = 0).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from harness.codecs.dicm.model import DICMModel


class StereoPairPool:
    """A fixed pool of generated training pairs (seeds ``first_seed ..``), sampled as random same-window crops
    of both views with a random horizontal flip and a random swap of which view is primary (so the model sees
    both disparity directions, like KITTI's alternate lists). ``state()``/``load_state()`` carry the RNG so a
    resumed run draws the same batches."""

    def __init__(self, views: np.ndarray, crop: tuple[int, int], seed: int) -> None:
        """``views``: uint8 N x 2 x H x W x 3 (primary, side) pairs; ``crop``: (h, w) of each training crop."""
        self.views = views
        self.crop = crop
        self.rng = np.random.default_rng(seed)

    @staticmethod
    def generate(count: int, height: int, width: int, first_seed: int) -> np.ndarray:
        """N x 2 x H x W x 3 uint8 (left, right) views of the generated scenes ``first_seed ..``."""
        from harness.datasets.stereo_synth import stereo_pair

        return np.stack([np.stack(stereo_pair(first_seed + i, height, width)) for i in range(count)])

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, side): two float tensors B x 3 x h x w in [-1, 1]."""
        ch, cw = self.crop
        n, _, h, w, _ = self.views.shape
        out = np.empty((2, size, ch, cw, 3), dtype=np.uint8)
        for i in range(size):
            k = int(self.rng.integers(0, n))
            y = int(self.rng.integers(0, h - ch + 1))
            x = int(self.rng.integers(0, w - cw + 1))
            pair = self.views[k, :, y : y + ch, x : x + cw]
            if self.rng.random() < 0.5:
                pair = pair[:, :, ::-1]
            if self.rng.random() < 0.5:
                pair = pair[::-1]
            out[:, i] = pair
        t = torch.from_numpy(out).permute(0, 1, 4, 2, 3).float().div_(127.5).sub_(1.0).contiguous()
        return t[0], t[1]

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def load_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def dicm_loss(
    model: DICMModel,
    x: torch.Tensor,
    side: torch.Tensor,
    alpha: float,
    beta: float,
    w_drop: float,
    w_noise_std: float,
    ctx_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, Any]]:
    b = x.shape[0]
    n_pixels = x.shape[2] * x.shape[3]
    ox = model.context_fn.forward_train(x)
    ow = model.encode_w.forward_train(side)
    keep = (torch.rand(b) >= w_drop).float().view(b, 1, 1, 1)
    context = [
        c + keep * (w + w_noise_std * torch.randn_like(w)) for c, w in zip(ox["pyramid"], ow["pyramid"], strict=True)
    ]
    T = model.cfg.diffusion.timesteps
    t = torch.randint(0, T, (b,))
    eps = torch.randn_like(x)
    sa = model.train_sqrt_alphas_cumprod[t].view(b, 1, 1, 1)
    s1 = model.train_sqrt_one_minus_alphas_cumprod[t].view(b, 1, 1, 1)
    x_t = sa * x + s1 * eps
    out = model.denoise_fn(x_t, t.float() / T, context)
    if model.cfg.diffusion.pred_mode == "x":  # the UNet predicts x0 itself: the prediction loss is on x
        x0_hat = out.clamp(-1.0, 1.0)
        l_pred = F.l1_loss(out, x)
    else:
        x0_hat = ((x_t - s1 * out) / sa).clamp(-1.0, 1.0)
        l_pred = F.l1_loss(out, eps)
    l_aux = F.l1_loss(x0_hat, x)
    bpp_x = ox["bits"].mean() / n_pixels
    bpp_w = ow["bits"].mean() / n_pixels
    # the pyramids' first level is a 3-channel full-resolution image: asking it to reconstruct its input keeps
    # both latents informative from the first step (without it the rate term empties them before the UNet has
    # learned to read its context: measured, 0.04 bpp and no use of w after 160 steps)
    l_ctx = F.l1_loss(ox["pyramid"][0], x) + F.l1_loss(ow["pyramid"][0], side)
    loss = (1 - alpha) * l_pred + alpha * l_aux + beta * (bpp_x + bpp_w) + ctx_weight * l_ctx
    with torch.no_grad():
        mse = float(F.mse_loss(x0_hat, x))
    return loss, {
        "l_pred": float(l_pred.detach()),
        "l_x0": float(l_aux.detach()),
        "psnr_x0_db": 10 * math.log10(4.0 / max(mse, 1e-12)),
        "bpp_x": float(bpp_x.detach()),
        "bpp_w": float(bpp_w.detach()),
        "l_ctx": float(l_ctx.detach()),
    }


def describe_loss(alpha: float, beta: float, w_drop: float, w_noise_std: float, ctx_weight: float) -> str:
    return (
        f"(1-{alpha})*L1(prediction, target) + {alpha}*L1(x0_hat, x) + {beta}*(bpp_x + bpp_w) + "
        f"{ctx_weight}*(L1(ctx[0], x) + L1(w[0], side)); "
        f"w zeroed for {w_drop:.0%} of each batch; w + N(0, {w_noise_std}^2)"
    )
