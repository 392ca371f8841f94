"""harness.train: exact freezing, a short run that lowers the loss, checkpoint write + resume (bit-identical)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.rdeic.config import TEST  # noqa: E402
from harness.codecs.rdeic.model import RDEICModel  # noqa: E402
from harness.train import stages  # noqa: E402
from harness.train.data import PatchSampler  # noqa: E402
from harness.train.loop import Stage, StageConfig  # noqa: E402


def _images(n: int = 3, size: int = 96) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        yy, xx = np.mgrid[0:size, 0:size]
        base = np.stack([xx * (2 + i), yy * (3 + i), (xx + yy) * 2], axis=-1) % 256
        out.append(np.clip(base + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8))
    return out


def _model() -> RDEICModel:
    return RDEICModel(TEST, seed=0)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_stage1_step_leaves_frozen_parameters_bit_identical(tmp_path):
    torch.manual_seed(0)
    model = _model()
    stages.zero_init_control(model)
    ctx = model.cond_stage_model.encode_empty()
    data = PatchSampler(_images(), 64, seed=1, scales=(1.0,))
    before = _snapshot(model)
    cfg = StageConfig("stage1", steps=2, lr=1e-3, warmup=1, log_every=1, ckpt_every=10)
    trainable = ("control_model.", "preprocess_model.")
    Stage(
        cfg,
        model,
        trainable,
        lambda step: stages.stage1_loss(model, data.batch(2), ctx, 8.0, 1.0, None, step),
        tmp_path,
        progress=False,
    ).run()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = [k for k in before if not k.startswith(trainable)]
    assert frozen and not (changed & set(frozen)), sorted(changed & set(frozen))[:5]
    assert any(k.startswith("control_model.") for k in changed)
    assert any(k.startswith("preprocess_model.") for k in changed)
    assert all(not p.requires_grad for n, p in model.named_parameters() if not n.startswith(trainable))


def test_stage2_step_freezes_unet_and_vae_exactly(tmp_path):
    torch.manual_seed(0)
    model = _model()
    ctx = model.cond_stage_model.encode_empty()
    data = PatchSampler(_images(), 64, seed=2, scales=(1.0,))
    before = _snapshot(model)
    cfg = StageConfig("stage2", steps=1, lr=1e-3, warmup=1, log_every=1)
    trainable = ("control_model.", "preprocess_model.")
    Stage(
        cfg,
        model,
        trainable,
        lambda step: stages.stage2_loss(model, data.batch(1), ctx, 100.0, 8.0, 1.0, 2, None, step),
        tmp_path,
        progress=False,
    ).run()
    after = model.state_dict()
    for prefix in ("model.", "first_stage_model.", "cond_stage_model."):
        keys = [k for k in before if k.startswith(prefix)]
        assert keys and all(torch.equal(before[k], after[k]) for k in keys), prefix


def test_short_vae_run_decreases_loss_and_writes_csv(tmp_path):
    torch.manual_seed(0)
    model = _model()
    data = PatchSampler(_images(), 32, seed=3, scales=(1.0,))
    fixed = data.batch(4)
    cfg = StageConfig("stage0_vae", steps=30, lr=2e-3, warmup=2, log_every=5, ckpt_every=10)
    first = float(stages.vae_loss(model, fixed)[0].detach())
    summary = Stage(
        cfg, model, ("first_stage_model.",), lambda step: stages.vae_loss(model, fixed), tmp_path, progress=False
    ).run()
    last = float(stages.vae_loss(model, fixed)[0].detach())
    assert last < 0.7 * first, (first, last)
    rows = list(csv.DictReader((tmp_path / "stage0_vae" / "metrics.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20, 25, 30]
    assert {"loss", "mse", "psnr_db", "lr", "elapsed_s"} <= set(rows[0])
    assert summary["steps"] == 30 and (tmp_path / "stage0_vae" / "done.json").is_file()


def _unet_stage(model, data, ctx, out, steps):
    cfg = StageConfig("stage0_unet", steps=steps, lr=1e-3, warmup=1, log_every=1, ckpt_every=3, seed=5)
    return Stage(
        cfg,
        model,
        ("model.diffusion_model.",),
        lambda step: stages.unet_loss(model, data.batch(2), ctx),
        out,
        samplers={"patches": data},
        progress=False,
    )


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """6 steps in one go == 3 steps, a fresh process state, then resume to 6 (model, optimizer, RNG, data)."""
    ctx = _model().cond_stage_model.encode_empty()
    straight = _model()
    _unet_stage(straight, PatchSampler(_images(), 32, seed=4, scales=(1.0,)), ctx, tmp_path / "a", 6).run()

    first = _model()
    stage = _unet_stage(first, PatchSampler(_images(), 32, seed=4, scales=(1.0,)), ctx, tmp_path / "b", 6)
    inner = stage.loss_fn

    def killed_at_step_4(step):
        if step == 4:
            raise KeyboardInterrupt
        return inner(step)

    stage.loss_fn = killed_at_step_4
    with pytest.raises(KeyboardInterrupt):
        stage.run()
    assert not (tmp_path / "b" / "stage0_unet" / "done.json").exists()
    state = json.loads((tmp_path / "b" / "stage0_unet" / "state.json").read_text())
    assert state["step"] == 3
    torch.manual_seed(999)  # a different process-wide RNG: the checkpoint must restore it
    resumed = _model()
    _unet_stage(resumed, PatchSampler(_images(), 32, seed=4, scales=(1.0,)), ctx, tmp_path / "b", 6).run()

    a, b = straight.state_dict(), resumed.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = list(csv.DictReader((tmp_path / "b" / "stage0_unet" / "metrics.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_finished_stage_is_skipped_and_reloaded(tmp_path):
    ctx = _model().cond_stage_model.encode_empty()
    trained = _model()
    _unet_stage(trained, PatchSampler(_images(), 32, seed=4, scales=(1.0,)), ctx, tmp_path, 2).run()
    fresh = _model()
    stage = _unet_stage(fresh, PatchSampler(_images(), 32, seed=4, scales=(1.0,)), ctx, tmp_path, 2)
    stage.loss_fn = lambda step: (_ for _ in ()).throw(AssertionError("a finished stage must not train again"))
    stage.run()
    for k, v in trained.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_compression_forward_matches_the_entropy_coder():
    """The training forward's ŷ equals what the rANS coder reproduces (same checkerboard, same rounding)."""
    torch.manual_seed(0)
    model = _model()
    comp = model.preprocess_model.eval()
    comp.update(force=True)
    h = model.encode_feature(torch.rand(1, 3, 64, 64))
    with torch.no_grad():
        out = stages.compression_forward(comp, h, 64 * 64)
        y = comp.analysis(h)
        hp = comp.hyper_params(comp.hyper_indices(y))
        _, y_hat_coded = comp.code_y(y, hp)
        y_hat_eval = comp.forward_quantized(h)["y_hat"]
    torch.testing.assert_close(y_hat_eval, y_hat_coded)
    _, c = comp.synthesis(y_hat_coded)
    torch.testing.assert_close(out["c_latent"], c, rtol=1e-5, atol=1e-5)
    assert float(out["bpp"]) > 0


def test_latent_normalisation_is_exact_for_the_decoder():
    torch.manual_seed(0)
    model = _model()
    x = torch.rand(2, 3, 64, 64)
    vae = model.first_stage_model
    with torch.no_grad():
        mean0, _ = stages.posterior(vae, x * 2 - 1)
        rec0 = vae.decode(mean0)
        k = stages.normalise_latent_scale(model, x)
        mean1, _ = stages.posterior(vae, x * 2 - 1)
        rec1 = vae.decode(mean1)
    assert float((mean1 * model.cfg.diffusion.scale_factor).pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(mean1, mean0 * k, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rec1, rec0, rtol=1e-3, atol=1e-4)


def test_relay_sampler_with_gradients_matches_inference_sampler():
    torch.manual_seed(0)
    model = _model()
    ctx = model.cond_stage_model.encode_empty()
    c = torch.randn(1, TEST.unet.in_channels, 8, 8)
    hint = torch.randn(1, TEST.compression.N, 8, 8)
    torch.manual_seed(7)
    with torch.no_grad():
        trained = stages.relay_sample_train(model, c, hint, ctx, steps=2)
    torch.manual_seed(7)

    def noise(shape, purpose):  # the training sampler draws no discarded sample: start, then one per step
        if purpose == "discard":
            return torch.zeros(shape)
        return torch.randn(shape)

    ref = model.relay(c, hint, ctx, 2, noise)
    torch.testing.assert_close(trained, ref, rtol=1e-5, atol=1e-5)
