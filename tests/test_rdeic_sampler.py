"""Relay residual sampler: draw order, arithmetic against a float64 reference, guidance, determinism."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.codecs.rdeic.config import OFFICIAL  # noqa: E402
from harness.codecs.rdeic.sampler import GeneratorNoise, RecordedNoise, relay_sample  # noqa: E402
from harness.codecs.rdeic.schedule import SpacedSchedule, alphas_cumprod, root_buffers  # noqa: E402

D = OFFICIAL.diffusion
SHAPE = (1, 4, 3, 5)


def _buffers():
    b = root_buffers(D)
    return {k: torch.from_numpy(b[k]) for k in ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")}


def _linear_eps(x, t, hint):
    return 0.3 * x + (0.0 if hint is None else 0.1 * hint) + t.float().view(-1, 1, 1, 1) * 1e-3


@pytest.mark.parametrize("steps", [2, 5])
def test_draw_order_timesteps_and_arithmetic(steps):
    g = torch.Generator().manual_seed(0)
    draws = [torch.randn(SHAPE, generator=g) for _ in range(steps + 2)]
    noise = RecordedNoise([d.clone() for d in draws])
    c, hint = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    seen = []

    def eps(x, t, h):
        seen.append(int(t[0]))
        return _linear_eps(x, t, h)

    out = relay_sample(eps, c, hint, _buffers(), D, steps, noise)
    sched = SpacedSchedule.build(D, steps)
    assert seen == list(sched.timesteps)[::-1]  # original timesteps, 299 first
    assert noise.used == ["discard", "start", *[f"step:{k}" for k in range(steps - 1, -1, -1)]]  # S + 2 draws

    # float64 reference of SPEC §2.6
    ac = alphas_cumprod(D)
    x = np.sqrt(ac[299]) * c.double().numpy() + np.sqrt(1 - ac[299]) * draws[1].double().numpy()
    for n, k in enumerate(range(steps - 1, -1, -1)):
        e = _linear_eps(torch.from_numpy(x), torch.tensor([sched.timesteps[k]]), hint.double()).numpy()
        x0 = x / np.sqrt(sched.alphas_cumprod[k]) - np.sqrt(1 / sched.alphas_cumprod[k] - 1) * e
        mu = sched.posterior_mean_coef1[k] * x0 + sched.posterior_mean_coef2[k] * x
        x = mu + (k > 0) * np.sqrt(sched.posterior_variance[k]) * draws[2 + n].double().numpy()
    np.testing.assert_allclose(out.numpy(), x, rtol=1e-5, atol=1e-5)


def test_start_point_uses_float32_buffers():
    b = _buffers()
    c = torch.randn(SHAPE)
    draws = [torch.randn(SHAPE) for _ in range(4)]
    calls = []

    def eps(x, t, h):
        calls.append(x.clone())
        return torch.zeros_like(x)

    relay_sample(eps, c, c, b, D, 2, RecordedNoise(draws))
    expected = b["sqrt_alphas_cumprod"][299] * c + b["sqrt_one_minus_alphas_cumprod"][299] * draws[1]
    assert torch.equal(calls[0], expected)


def test_guidance_runs_the_plain_unet_too():
    hints = []

    def eps(x, t, h):
        hints.append(h is None)
        return _linear_eps(x, t, h)

    c = torch.randn(SHAPE)
    relay_sample(eps, c, c, _buffers(), D, 2, GeneratorNoise(0), guidance=1.0)
    assert hints == [False, False]
    hints.clear()
    relay_sample(eps, c, c, _buffers(), D, 2, GeneratorNoise(0), guidance=2.0)
    assert hints == [False, True, False, True]


def test_seeded_noise_is_deterministic_and_matches_the_global_seed_order():
    c = torch.randn(SHAPE)
    a = relay_sample(_linear_eps, c, c, _buffers(), D, 5, GeneratorNoise(231))
    b = relay_sample(_linear_eps, c, c, _buffers(), D, 5, GeneratorNoise(231))
    assert torch.equal(a, b)
    assert not torch.equal(a, relay_sample(_linear_eps, c, c, _buffers(), D, 5, GeneratorNoise(232)))
    # seed-exact mode: the same draws as the official global RNG after seed_everything(231) on the CPU
    torch.manual_seed(231)
    official = [torch.randn(SHAPE) for _ in range(7)]
    g = GeneratorNoise(231)
    assert all(torch.equal(o, g(SHAPE, "x")) for o in official)
