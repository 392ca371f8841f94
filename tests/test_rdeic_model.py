"""RDEIC architecture: the official state-dict tree, schedule constants, small-config stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from harness.codecs.rdeic import schedule  # noqa: E402
from harness.codecs.rdeic.config import OFFICIAL, TEST, TINY  # noqa: E402
from harness.codecs.rdeic.model import RDEICModel  # noqa: E402

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "rdeic" / "state_dict_manifest.json"


@pytest.fixture(scope="module")
def official_meta():
    with torch.device("meta"):
        return RDEICModel(OFFICIAL)


@pytest.mark.skipif(not MANIFEST.exists(), reason=f"manifest not found at {MANIFEST}")
def test_official_state_dict_equals_manifest(official_meta):
    manifest = json.loads(MANIFEST.read_text())
    expected = {k: list(v) for k, v in manifest["keys"].items()}
    got = {k: list(v.shape) for k, v in official_meta.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []  # missing
    assert sorted(set(got) - set(expected)) == []  # extra
    assert {k: got[k] for k in expected if got[k] != expected[k]} == {}
    assert len(got) == manifest["meta"]["total_keys"] == 1913
    for key, dtype in manifest["meta"]["non_float32_keys"].items():
        assert str(official_meta.state_dict()[key].dtype) == dtype


@pytest.mark.skipif(not MANIFEST.exists(), reason=f"manifest not found at {MANIFEST}")
def test_official_parameter_counts_per_component(official_meta):
    groups = json.loads(MANIFEST.read_text())["prefix_groups"]
    for prefix, group in groups.items():
        if not prefix.endswith("."):
            continue
        module = official_meta.get_submodule(prefix[:-1])
        assert sum(p.numel() for p in module.parameters()) == group["num_parameters"], prefix
    assert sum(p.numel() for p in official_meta.parameters()) == 1_380_265_172


def test_schedule_constants_from_spec():
    d = OFFICIAL.diffusion
    ac = schedule.alphas_cumprod(d)
    assert ac[0] == pytest.approx(0.99915, abs=1e-9)
    assert ac[299] == pytest.approx(0.592183, abs=5e-7)
    assert np.sqrt(ac[299]) == pytest.approx(0.769534, abs=5e-7)
    assert schedule.relay_lambda(d) == pytest.approx(0.829860, abs=5e-7)
    # sqrt(1 - ab)/λ = sqrt(ab): the training forward process at t=299 is the inference start point
    assert np.sqrt(1 - ac[299]) / schedule.relay_lambda(d) == pytest.approx(np.sqrt(ac[299]), rel=1e-12)
    assert schedule.space_timesteps(300, 2) == [0, 299]
    assert schedule.space_timesteps(300, 5) == [0, 75, 150, 224, 299]
    s2 = schedule.SpacedSchedule.build(d, 2)
    assert s2.posterior_variance[1] == pytest.approx(8.4895e-4, abs=5e-8)
    s5 = schedule.SpacedSchedule.build(d, 5)
    np.testing.assert_allclose(s5.posterior_variance, [0, 8.412e-4, 0.045931, 0.081926, 0.120397], atol=5e-7)
    # at k = 0 the update returns the x0 predicted at t = 0 exactly
    assert s5.posterior_mean_coef1[0] == 1.0 and s5.posterior_mean_coef2[0] == 0.0


def test_root_buffers_are_float32_and_consistent():
    buf = schedule.root_buffers(OFFICIAL.diffusion)
    assert list(buf) == list(schedule.ROOT_BUFFER_NAMES)
    assert all(v.dtype == np.float32 and v.shape == (1000,) for v in buf.values())
    assert buf["sqrt_alphas_cumprod"][299] == np.float32(np.sqrt(schedule.alphas_cumprod(OFFICIAL.diffusion)[299]))
    assert not buf["logvar"].any()


@pytest.fixture(scope="module")
def test_model():
    return RDEICModel(TEST, seed=3).eval()


def test_stage_shapes_follow_the_spec_table(test_model):
    m = test_model
    m.preprocess_model.update()
    x = torch.rand(1, 3, 128, 64)
    h = m.encode_feature(x)
    assert h.shape == (1, TEST.vae.feature_channels, 16, 8)
    out = m.preprocess_model.forward_quantized(h)
    assert out["y"].shape == (1, TEST.compression.M, 8, 4)
    assert out["indices"].shape == (1, 2, 1)
    assert out["guide_hint"].shape == (1, TEST.compression.N, 16, 8)
    assert out["c_latent"].shape == (1, 4, 16, 8)
    ctx = m.cond_stage_model.encode_empty()
    assert ctx.shape == (1, 77, TEST.text.width)
    t = torch.tensor([299])
    eps = m.eps(out["c_latent"], t, ctx, out["guide_hint"])
    assert eps.shape == (1, 4, 16, 8) and torch.isfinite(eps).all()
    assert m.decode_latent(eps).shape == (1, 3, 128, 64)


def test_control_with_zeroed_injections_is_the_plain_unet(test_model):
    m = RDEICModel(TEST, seed=4).eval()
    for name, p in m.control_model.named_parameters():
        if "zero_convs" in name or "middle_block_out" in name:
            p.data.zero_()
    x, hint = torch.randn(1, 4, 8, 8), torch.randn(1, TEST.control.hint_channels, 8, 8)
    ctx = m.cond_stage_model.encode_empty()
    t = torch.tensor([5])
    torch.testing.assert_close(m.eps(x, t, ctx, hint), m.eps(x, t, ctx, None), rtol=0, atol=0)


def test_empty_prompt_tokens_and_cache(tmp_path, test_model):
    from harness.codecs.rdeic.text import empty_prompt_embedding, empty_prompt_tokens

    tok = empty_prompt_tokens()
    assert tok[0, :3].tolist() == [49406, 49407, 0] and int(tok[0, 2:].abs().sum()) == 0
    calls = []

    def build():
        calls.append(1)
        return test_model.cond_stage_model

    path = tmp_path / "ctx.safetensors"
    first = empty_prompt_embedding(path, build, "k1")
    second = empty_prompt_embedding(path, build, "k1")
    assert len(calls) == 1 and torch.equal(first, second)
    empty_prompt_embedding(path, build, "k2")  # other weights: recomputed
    assert len(calls) == 2


def test_tiny_config_builds_and_runs_every_stage():
    m = RDEICModel(TINY, seed=0).eval()
    m.preprocess_model.update()
    out = m.preprocess_model.forward_quantized(m.encode_feature(torch.rand(1, 3, 64, 64)))
    ctx = m.cond_stage_model.encode_empty()
    eps = m.eps(out["c_latent"], torch.tensor([299]), ctx, out["guide_hint"])
    assert eps.shape == (1, TINY.unet.out_channels, 8, 8) and m.decode_latent(eps).shape == (1, 3, 64, 64)
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params < 60_000_000  # small enough for CPU sweeps
