from __future__ import annotations

import numpy as np
import pytest
import torch

from corruptions.base import CorruptionError
from corruptions.latent_noise import LatentGaussian, MaskReplace


@pytest.fixture
def latent() -> np.ndarray:
    rng = np.random.default_rng(0)
    scales = np.array([0.5, 2.0, 8.0, 1.0])[None, :, None, None]
    return (rng.standard_normal((1, 4, 32, 32)) * scales + 3.0).astype(np.float32)


def test_zero_levels_are_exact_identities(latent):
    rng = np.random.default_rng(1)
    np.testing.assert_array_equal(LatentGaussian(sigma=0.0).corrupt(latent, rng), latent)
    np.testing.assert_array_equal(MaskReplace(fraction=0.0).corrupt(latent, rng), latent)


def test_relative_sigma_scales_with_each_channel_std(latent):
    out = LatentGaussian(sigma=0.5, unit="rel").corrupt(latent, np.random.default_rng(2))
    ratio = (out - latent).std(axis=(0, 2, 3)) / latent.std(axis=(0, 2, 3))
    # each channel: 1024 draws, the sample std of N(0, 0.5^2) has relative SE ~ 1/sqrt(2*1024)
    assert np.all(np.abs(ratio - 0.5) < 4 * 0.5 / np.sqrt(2 * 1024))


def test_absolute_sigma_and_clamp(latent):
    out = LatentGaussian(sigma=1.0, unit="abs", clamp_min=0.0, clamp_max=5.0).corrupt(latent, np.random.default_rng(3))
    assert out.min() >= 0.0 and out.max() <= 5.0 and out.dtype == latent.dtype
    free = LatentGaussian(sigma=1.0, unit="abs").corrupt(latent, np.random.default_rng(3))
    assert abs((free - latent).std() - 1.0) < 4 / np.sqrt(2 * latent.size)


def test_torch_tensors_keep_type_and_dtype(latent):
    t = torch.from_numpy(latent)
    out = LatentGaussian(sigma=0.1).corrupt(t, np.random.default_rng(4))
    assert isinstance(out, torch.Tensor) and out.dtype == t.dtype and out.shape == t.shape
    same = LatentGaussian(sigma=0.1).corrupt(latent, np.random.default_rng(4))
    np.testing.assert_allclose(out.numpy(), same, rtol=0, atol=1e-6)  # same draws on either type


def test_mask_replace_fraction_and_fill(latent):
    rng = np.random.default_rng(5)
    out = MaskReplace(fraction=0.2).corrupt(latent, rng)
    changed = out != latent
    n = latent.size
    assert abs(changed.mean() - 0.2) < 4 * np.sqrt(0.2 * 0.8 / n)
    lo, hi = latent.min(axis=(0, 2, 3), keepdims=True), latent.max(axis=(0, 2, 3), keepdims=True)
    assert np.all((out >= lo) & (out <= hi))
    zeros = MaskReplace(fraction=1.0, fill="zeros").corrupt(latent, rng)
    assert not zeros.any()


def test_bad_parameters():
    with pytest.raises(CorruptionError, match="unit"):
        LatentGaussian(sigma=1.0, unit="percent")
    with pytest.raises(CorruptionError, match="sigma"):
        LatentGaussian(sigma=-1)
    with pytest.raises(CorruptionError, match="fraction"):
        MaskReplace(fraction=1.5)
