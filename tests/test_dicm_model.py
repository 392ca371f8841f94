"""DICM's modules against the official layout (``../shared/dicm/state_dict_manifest.json``), the FlexiblePrior ->
EntropyBottleneck conversion, and the strict loading of official checkpoints (a wrong file is refused in one line)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.codecs.base import CodecError
from harness.codecs.dicm.checkpoint import (
    convert_prior,
    is_entropy_buffer,
    official_shapes,
    our_shapes,
)
from harness.codecs.dicm.config import OFFICIAL, TEST
from harness.codecs.dicm.model import DICMModel

MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "dicm" / "state_dict_manifest.json"


def manifest() -> dict:
    if not MANIFEST.is_file():
        pytest.skip(f"{MANIFEST} is not here (it lives in ../shared beside the repository)")
    return json.loads(MANIFEST.read_text())


def manifest_shapes() -> dict[str, tuple[int, ...]]:
    return {k: tuple(v[0]) for g in manifest()["groups"].values() for k, v in g["keys"].items()}


def test_official_config_matches_the_manifest_key_for_key_after_the_two_conversions():
    shapes = manifest_shapes()
    assert sum(k.startswith("loss_fn_vgg.") for k in shapes) == 38
    kept = {k: v for k, v in shapes.items() if not k.startswith("loss_fn_vgg.")}  # conversion 1: dropped
    assert len(kept) == 708
    # conversion 2, on shape-only (meta) tensors: FlexiblePrior -> compressai EntropyBottleneck
    converted = convert_prior({k: torch.empty(v, device="meta") for k, v in kept.items()})
    converted = {k: tuple(v.shape) for k, v in converted.items()}
    ours = {k: v for k, v in our_shapes(OFFICIAL).items() if not is_entropy_buffer(k)}
    assert sorted(set(converted) ^ set(ours)) == []
    assert {k: v for k, v in ours.items() if converted[k] != v} == {}
    # and the other direction: the official layout our loader expects is exactly the manifest's
    assert official_shapes(OFFICIAL) == kept


def test_official_parameter_counts_match_the_manifest():
    groups = manifest()["groups"]
    with torch.device("meta"):
        m = DICMModel(OFFICIAL)
    assert sum(p.numel() for p in m.denoise_fn.parameters()) == groups["denoise_fn"]["n_params"] == 39_912_707
    for name in ("context_fn", "context_fn_cor", "encode_w"):
        ours = sum(p.numel() for p in getattr(m, name).parameters())
        # the quantiles [C, 1, 3] replace the official _medians [1, C, 1, 1]: + 2 x 256 values
        assert ours - 2 * 256 == groups[name]["n_params"] == 13_714_947


def _flexible_prior_logits(x: torch.Tensor, official: dict[str, torch.Tensor], n_layers: int) -> torch.Tensor:
    """The official density's cumulative logits as BRIEF §3 describes FlexiblePrior (per channel: x -> softplus(W)
    matmul + b, + tanh(a) tanh(.) between layers), written from the official shapes. x: C x N."""
    h = x[..., None]  # C x N x 1
    for i in range(n_layers):
        w = F.softplus(official[f"affine.{i}.weight"][:, 0, 0])  # C x in x out
        h = h @ w + official[f"affine.{i}.bias"][:, 0, 0]  # C x N x out
        if i < n_layers - 1:
            h = h + torch.tanh(official[f"a.{i}"][:, 0, 0]) * torch.tanh(h)
    return h[..., 0]


def test_the_prior_conversion_keeps_the_density_and_solves_the_coding_range():
    gen = torch.Generator().manual_seed(0)
    c, filters = 5, (3, 3, 3)
    dims = (1, *filters, 1)
    official = {}
    for i in range(len(dims) - 1):
        official[f"affine.{i}.weight"] = torch.randn(c, 1, 1, dims[i], dims[i + 1], generator=gen)
        official[f"affine.{i}.bias"] = torch.randn(c, 1, 1, 1, dims[i + 1], generator=gen)
        if i < len(dims) - 2:
            official[f"a.{i}"] = torch.randn(c, 1, 1, 1, dims[i + 1], generator=gen)
    official["_medians"] = torch.randn(1, c, 1, 1, generator=gen)
    ours = convert_prior({f"x.prior.{k}": v for k, v in official.items()})
    from compressai.entropy_models import EntropyBottleneck

    eb = EntropyBottleneck(c, filters=filters)
    eb.load_state_dict({**eb.state_dict(), **{k[len("x.prior.") :]: v for k, v in ours.items()}})
    x = torch.linspace(-6, 6, 41).expand(c, -1)
    want = _flexible_prior_logits(x, official, len(dims) - 1)
    got = eb._logits_cumulative(x[:, None, :], stop_gradient=True)[:, 0]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    q = ours["x.prior.quantiles"]
    torch.testing.assert_close(q[:, 0, 1], official["_medians"].reshape(-1))  # the trained median is kept
    tails = eb._logits_cumulative(q[:, :, [0, 2]], stop_gradient=True)[:, 0]
    target = math.log(2 / 1e-9 - 1)
    torch.testing.assert_close(tails, torch.tensor([-target, target]).expand(c, -1), rtol=1e-4, atol=1e-3)
    eb.update(force=True)  # the converted prior builds its CDF tables
    assert eb._quantized_cdf.numel() > 0


# -- official checkpoints of the small `test` config, written in the official layout ---------------------------------
def official_state(model: DICMModel, lpips: bool = False) -> dict[str, torch.Tensor]:
    """Our model's weights in the official checkpoint layout (the inverse of the loader's conversion)."""
    out = {}
    for key, v in model.state_dict().items():
        if is_entropy_buffer(key):
            continue
        prefix, _, rest = key.partition("prior.")
        if rest.startswith("matrices."):
            out[f"{prefix}prior.affine.{rest.split('.')[1]}.weight"] = v.transpose(1, 2)[:, None, None].clone()
        elif rest.startswith("biases."):
            out[f"{prefix}prior.affine.{rest.split('.')[1]}.bias"] = v[:, None, None, None, :, 0].clone()
        elif rest.startswith("factors."):
            out[f"{prefix}prior.a.{rest.split('.')[1]}"] = v[:, None, None, None, :, 0].clone()
        elif rest == "quantiles":
            out[f"{prefix}prior._medians"] = v[:, 0, 1].reshape(1, -1, 1, 1).clone()
        else:
            out[key] = v.clone()
    if lpips:
        out["loss_fn_vgg.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    return out


@pytest.fixture(scope="module")
def test_model() -> DICMModel:
    m = DICMModel(TEST, seed=3)
    with torch.no_grad():  # a non-trivial median, so the conversion has something to keep
        for comp in m.compressors():
            comp.prior.quantiles[:, 0, 1] = torch.linspace(-0.3, 0.3, comp.prior.quantiles.shape[0])
    return m


def _save(tmp_path: Path, state: dict, name: str = "dicm_0.pt") -> Path:
    path = tmp_path / name
    torch.save({"step": 0, "model": state}, path)
    return path


def test_an_official_checkpoint_loads_strictly_and_decodes_like_the_model_it_came_from(tmp_path, test_model):
    from harness.codecs.dicm.codec import DICM
    from harness.datasets.stereo_synth import stereo_pair

    ckpt = _save(tmp_path, official_state(test_model, lpips=True))  # loss_fn_vgg.* present: dropped
    codec = DICM(config="test", ckpt=str(ckpt))
    loaded = codec.model()
    for key, value in test_model.state_dict().items():
        if not is_entropy_buffer(key) and not key.endswith("quantiles"):
            torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    for ours, orig in zip(loaded.compressors(), test_model.compressors(), strict=True):
        torch.testing.assert_close(ours.prior.quantiles[:, 0, 1], orig.prior.quantiles[:, 0, 1], rtol=0, atol=0)
    for ours in loaded.compressors():  # tables built with update(force=True) for the coders; w is never sent
        assert (ours.prior._quantized_cdf.numel() > 0) == (ours in loaded.coders())
    left, right = stereo_pair(0, 64, 128)
    data = codec.encode(left).data
    out = codec.decode(data, (64, 128), 0, side_info={"stereo": right})
    assert out.shape == (64, 128, 3) and out.dtype == np.uint8
    assert codec.weights_hash() != DICM(config="test", allow_random_weights=True).weights_hash()


def _refusal(tmp_path: Path, state: dict, config: str = "test") -> str:
    from harness.codecs.dicm.codec import DICM

    with pytest.raises(CodecError) as err:
        DICM(config=config, ckpt=str(_save(tmp_path, state))).model()
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_a_wrong_official_file_is_refused_with_the_key_list_in_one_line(tmp_path, test_model):
    good = official_state(test_model)
    missing = dict(good)
    del missing["denoise_fn.final_conv.1.bias"]
    msg = _refusal(tmp_path, missing)
    assert "missing 1 keys, e.g. denoise_fn.final_conv.1.bias" in msg and "config 'test'" in msg
    extra = {**good, "denoise_fn.surprise": torch.zeros(1)}
    assert "unexpected 1 keys, e.g. denoise_fn.surprise" in _refusal(tmp_path, extra)
    wrong = {**good, "denoise_fn.final_conv.1.bias": torch.zeros(4)}
    assert "shape of denoise_fn.final_conv.1.bias is [4] in the file, [3] expected" in _refusal(tmp_path, wrong)
    # a random state dict: every key is reported by count, with examples
    msg = _refusal(tmp_path, {"a.weight": torch.zeros(2), "b.bias": torch.zeros(3)})
    assert "missing" in msg and "unexpected 2 keys, e.g. a.weight, b.bias" in msg
    # the test config's weights given to the tiny config: the message names the config they fit
    assert "they are weights for config 'test'" in _refusal(tmp_path, good, config="tiny")


def test_a_checkpoint_trained_with_another_schedule_is_refused(tmp_path, test_model):
    state = official_state(test_model)
    state["train_betas"] = state["train_betas"] * 2
    assert "another noise schedule" in _refusal(tmp_path, state)


def test_files_that_are_not_checkpoints_are_refused_in_one_line(tmp_path):
    from harness.codecs.dicm.codec import DICM

    junk = tmp_path / "dicm_0.pt"
    junk.write_bytes(b"\x00\x01 not a checkpoint" * 10)
    with pytest.raises(CodecError) as err:
        DICM(config="test", ckpt=str(junk))
    assert ("\n" not in str(err.value) and "DICM" in str(err.value)) or "weights" in str(err.value)
    torch.save({"step": 3, "optimizer": 1}, tmp_path / "no_model.pt")
    with pytest.raises(CodecError, match="holds no state dict of tensors"):
        DICM(config="test", ckpt=str(tmp_path / "no_model.pt")).model()
    with pytest.raises(CodecError, match="No official weights are published"):
        DICM(config="official")


@pytest.mark.parametrize("pred_mode", ["noise", "x"])
def test_ddim_with_an_oracle_network_lands_on_the_image_in_either_prediction_mode(pred_mode):
    """DDIM (η = 0) with a network that knows x0: an x̂₀-predictor returns it, an ε-predictor returns the noise
    the current x_t holds. Either way every step keeps x_t on x0's trajectory and the last step returns x0."""
    import dataclasses

    from harness.codecs.dicm.diffusion import alphas_cumprod, ddim_sample, ddim_timesteps, init_noise

    cfg = dataclasses.replace(TEST.diffusion, pred_mode=pred_mode)
    x0 = torch.linspace(-0.9, 0.9, 2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    ac, ts = alphas_cumprod(cfg), ddim_timesteps(cfg, 5)
    seen = []

    def oracle(x_t: torch.Tensor, tin: torch.Tensor) -> torch.Tensor:
        a = float(ac[int(ts[len(ts) - 1 - len(seen)])])
        eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1.0 - a)  # the noise x_t holds at this step
        seen.append(eps)
        return x0 if pred_mode == "x" else eps

    out = ddim_sample(oracle, init_noise(tuple(x0.shape), 7, cfg.init_gamma), cfg, 5, time_input="t")
    assert len(seen) == 5
    for eps in seen[1:]:  # η = 0: each step moves x_t along x0's trajectory with the same noise
        torch.testing.assert_close(eps, seen[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="pred_mode"):
        dataclasses.replace(TEST.diffusion, pred_mode="v")
