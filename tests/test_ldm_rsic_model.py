"""LDM-RSIC's networks: the official config equals the official state-dict manifest key for key and shape for
shape, official-style files load strictly (and wrong ones are refused in one line), the sampler is the code's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import CodecError  # noqa: E402
from harness.codecs.ldm_rsic import checkpoint as ck  # noqa: E402
from harness.codecs.ldm_rsic.config import OFFICIAL, TEST, TINY  # noqa: E402
from harness.codecs.ldm_rsic.elic import ELIC  # noqa: E402
from harness.codecs.ldm_rsic.men import S2, schedule  # noqa: E402

MANIFEST = ROOT.parent / "shared" / "ldm_rsic" / "state_dict_manifest.json"


def _manifest_group(prefix: str) -> dict[str, tuple[int, ...]]:
    groups = json.loads(MANIFEST.read_text())["groups"]
    out: dict[str, tuple[int, ...]] = {}
    for name, g in groups.items():
        if name.startswith(prefix) and "after_update" not in name:
            out.update({k: tuple(v[0]) for k, v in g["keys"].items()})
    return out


@pytest.mark.skipif(not MANIFEST.is_file(), reason="../shared/ldm_rsic/state_dict_manifest.json not present")
def test_official_config_equals_the_manifest_key_for_key_and_shape_for_shape():
    with torch.device("meta"):
        elic, s2 = ELIC(OFFICIAL.elic), S2(OFFICIAL.men)
    # S2 (params_ema): 539 keys, including the diffusion.* repeats and the 12 schedule buffers
    ours = {k: tuple(v.shape) for k, v in s2.state_dict().items()}
    assert ours == _manifest_group("s2.")
    assert len(ours) == 539
    # ELIC as trained (compressai 1.1.5 names, CDF buffers empty): equal after the loader's renaming
    manifest = _manifest_group("elic.")
    renamed, naming = ck.rename_entropy_bottleneck({k: torch.empty(s) for k, s in manifest.items()})
    assert "1.1.x" in naming and len(manifest) == 384
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {k: tuple(v.shape) for k, v in elic.state_dict().items()}
    # after update(force=True): exactly the 7 CDF buffers change shape (the widths of _quantized_cdf by rank only)
    after = json.loads(MANIFEST.read_text())["groups"]["elic.after_update.cdf_buffers"]["keys"]
    assert set(after) == set(ELIC.CDF_BUFFERS)
    elic_cpu = ELIC(TEST.elic)
    elic_cpu.update(force=True)
    gc = elic_cpu.gaussian_conditional
    assert tuple(gc._quantized_cdf.shape) == tuple(after["gaussian_conditional._quantized_cdf"][0])
    assert tuple(gc.scale_table.shape) == (64,)
    # and what the codec checks a file against is the same module tree
    assert ck.key_problems(ours, {k: tuple(v.shape) for k, v in s2.state_dict().items()}) is None


def test_schedule_is_the_official_four_step_one():
    sched = schedule(OFFICIAL.men)
    assert np.allclose(sched["betas"].numpy(), [0.1, 0.294286, 0.590952, 0.99], atol=1e-5)
    assert np.allclose(sched["alphas_cumprod"].numpy(), [0.9, 0.635143, 0.259804, 0.002598], atol=1e-5)
    assert (
        float(sched["posterior_mean_coef1"][0]) == pytest.approx(1.0) and float(sched["posterior_mean_coef2"][0]) == 0
    )


def test_sampler_is_deterministic_given_the_start_noise_and_returns_x0_at_the_last_step():
    s2 = S2(TEST.men).eval()
    d = s2.condition(torch.rand(2, 3, 64, 64))
    start = torch.randn(2, 16, TEST.men.token_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        a, b = s2.diffusion.sample(d, start), s2.diffusion.sample(d, start.clone())
        assert torch.equal(a, b)
        # the chain by hand: x0-prediction, posterior mean, no added noise
        x = start
        dm = s2.diffusion
        for t in (3, 2, 1, 0):
            x0 = s2.denoise(x, torch.full((2,), t), d)
            x = dm.posterior_mean_coef1[t] * x0 + dm.posterior_mean_coef2[t] * x
        assert torch.allclose(a, x)
        assert s2.diffusion.sample(d, start, steps=2).shape == a.shape  # the DDIM subset (a deviation)


def test_men_geometry_is_fixed_by_the_dfam():
    s2 = S2(TEST.men).eval()
    prior = torch.zeros(1, 16, TEST.men.token_dim)
    with torch.no_grad():
        assert s2.G(torch.rand(1, 3, 64, 64), prior).shape == (1, 3, 64, 64)
        assert s2.G(torch.rand(1, 3, 128, 128), None).shape == (1, 3, 128, 128)  # w/o DFAM: any multiple of 8
        with pytest.raises(ValueError, match="native size"):
            s2.G(torch.rand(1, 3, 128, 128), prior)
    assert OFFICIAL.men.native_size == 256 and TINY.men.native_size == 64


def _official_files(tmp_path, old_names: bool = True):
    """A synthetic pair of official-style files of the ``test`` config: a compressai-style ELIC checkpoint
    (1.1.x entropy-bottleneck names, empty CDF buffers, optimizer state beside) and a BasicSR S2 dict."""
    torch.manual_seed(5)
    elic, s2 = ELIC(TEST.elic), S2(TEST.men)
    state = {}
    for k, v in elic.state_dict().items():
        if old_names and k.startswith("entropy_bottleneck.") and k.split(".")[1] in ("matrices", "biases", "factors"):
            kind, i = k.split(".")[1:]
            k = f"entropy_bottleneck._{ {'matrices': 'matrix', 'biases': 'bias', 'factors': 'factor'}[kind] }{i}"
        state[k] = v.clone()
    for k in ELIC.CDF_BUFFERS:
        state[k] = torch.zeros(0, dtype=state[k].dtype)
    torch.save({"epoch": 3, "state_dict": state, "loss": 1.0}, tmp_path / "checkpoint_best_loss.pth.tar")
    s2_state = {k: v.clone() for k, v in s2.state_dict().items()}
    torch.save({"params": s2_state, "params_ema": s2_state}, tmp_path / "net_g_latest.pth")
    return elic, s2, tmp_path / "checkpoint_best_loss.pth.tar", tmp_path / "net_g_latest.pth"


def test_official_style_files_load_strictly(tmp_path):
    from harness.codecs.ldm_rsic.codec import LDMRSIC

    elic, s2, elic_path, s2_path = _official_files(tmp_path)
    codec = LDMRSIC(config="test", elic_ckpt=str(elic_path), ldm_ckpt=str(s2_path), geometry="tiled")
    loaded = codec.elic().state_dict()
    for k, v in elic.state_dict().items():
        if k not in ELIC.CDF_BUFFERS:
            assert torch.equal(loaded[k], v), k
    assert any("1.1.x" in n for n in codec.load_notes)
    got = codec.s2().state_dict()
    assert all(torch.equal(got[k], v) for k, v in s2.state_dict().items())
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert codec.decode(codec.encode(image).data, (64, 64)).shape == (64, 64, 3)


def test_a_wrong_or_random_file_is_refused_in_one_line_listing_keys(tmp_path):
    from harness.codecs.ldm_rsic.codec import LDMRSIC

    _, s2, elic_path, _ = _official_files(tmp_path)
    # an S2 file of another architecture (the official one would not fit `test` either): keys listed, one line
    bad = {k: v for k, v in s2.state_dict().items() if not k.startswith("G.latent.him")}
    bad["G.extra.weight"] = torch.zeros(3)
    torch.save({"params_ema": bad}, tmp_path / "wrong.pth")
    codec = LDMRSIC(config="test", elic_ckpt=str(elic_path), ldm_ckpt=str(tmp_path / "wrong.pth"))
    with pytest.raises(CodecError) as err:
        codec.s2()
    msg = str(err.value)
    assert "\n" not in msg and "missing" in msg and "G.latent.him" in msg
    assert "unexpected 1 keys, e.g. G.extra.weight" in msg
    # a file of random bytes, and an ELIC checkpoint given as the S2 file
    (tmp_path / "random.pth").write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(CodecError, match="cannot be read"):
        LDMRSIC(config="test", elic_ckpt=str(tmp_path / "random.pth"), enhance=False).elic()
    with pytest.raises(CodecError, match=r"holds no state dict .*'params_ema' / 'params'"):
        LDMRSIC(config="test", elic_ckpt=str(elic_path), ldm_ckpt=str(elic_path)).s2()
    torch.save(
        torch.load(elic_path, weights_only=True)["state_dict"], tmp_path / "updated.pth"
    )  # updata.py's bare dict
    with pytest.raises(CodecError, match=r"missing \d+ keys, .*; unexpected \d+ keys, e\.g\. ParamAggregation"):
        LDMRSIC(config="test", elic_ckpt=str(elic_path), ldm_ckpt=str(tmp_path / "updated.pth")).s2()
    # repeated diffusion.* tensors that disagree with what they repeat
    state = {k: v.clone() for k, v in s2.state_dict().items()}
    state["diffusion.model.resmlp.0.bias"] += 1
    torch.save({"params_ema": state}, tmp_path / "inconsistent.pth")
    with pytest.raises(CodecError, match=r"differs from denoise\.resmlp\.0\.bias"):
        LDMRSIC(config="test", elic_ckpt=str(elic_path), ldm_ckpt=str(tmp_path / "inconsistent.pth")).s2()


def test_missing_weights_say_what_and_where():
    from harness.codecs.ldm_rsic.codec import LDMRSIC

    with pytest.raises(CodecError) as err:
        LDMRSIC()
    msg = str(err.value)
    for needle in ("elic_ckpt", "ldm_ckpt", "checkpoint_best_loss.pth.tar", "net_g_latest.pth", "ldm-rsic-tiny"):
        assert needle in msg
    with pytest.raises(CodecError, match="enhance = false"):
        LDMRSIC(elic_ckpt=__file__)


def test_x_tilde_is_the_png_the_official_pipeline_writes():
    """Between ELIC and S2 the official code stores x_tilde with ``torchvision.utils.save_image`` (x * 255 + 0.5,
    truncated): values at k + 0.5 go up, where round-half-to-even would send every even k's down. The oracle is
    torchvision itself, writing and re-reading the PNG."""
    import io

    from PIL import Image

    torchvision = pytest.importorskip("torchvision")
    from harness.codecs.ldm_rsic.codec import x_tilde_pixels

    halves = torch.arange(256, dtype=torch.float32).add(0.5).div(255.0).clamp(0, 1)
    x = torch.cat([halves, torch.rand(256 * 3 - 256, generator=torch.Generator().manual_seed(0))]).reshape(1, 3, 16, 16)
    buf = io.BytesIO()
    torchvision.utils.save_image(x, buf, format="png")
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    got = x_tilde_pixels(x.numpy())[0].transpose(1, 2, 0)
    assert np.array_equal(got.astype(np.uint8), want) and got.dtype == np.float32
