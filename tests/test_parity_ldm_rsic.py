"""LDM-RSIC computes what the official code computes (issue #22): stage by stage against the parity kit.

The kit (``../shared/parity/ldm_rsic``, README there) holds what the official mlkk518/LDM-RSIC code (ELIC with
compressai 1.1.5, DiffIRS2, the DDPM) computed on the CPU for one configuration from deterministic generated
weights. The oracle is that code's output, not ours: we generate the same weights with the kit's generator, write
them in the official file layouts (ELIC/train.py's ``{"epoch", "state_dict"}`` with compressai 1.1.x names and
empty CDF buffers; BasicSR's ``{"params", "params_ema"}``), load them through the path a user's checkpoint takes
(``elic_ckpt`` + ``ldm_ckpt``), and compare:

- every stage fed the kit's own inputs (teacher forcing), so a difference is reported at the stage that makes it;
- entropy tables, symbols, indexes and all 11 rANS strings byte for byte; float stages by rel-L2 <= 1e-5; uint8
  images max |diff| <= 1 on <= 1 % of the values (the kit's tolerances);
- once end to end through the public codec API (encode -> bytes -> parse -> reconstruct) with the kit's F_T.

Shapes, slice widths and step counts are read from the kit and the model config, never written here, so the same
test checks another configuration's kit.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")
safetensors_torch = pytest.importorskip("safetensors.torch")

PARITY = Path(__file__).resolve().parents[1].parent / "shared" / "parity"
KIT = PARITY / "ldm_rsic"
if not KIT.is_dir():
    pytest.skip(f"parity kit folder {KIT} is absent", allow_module_level=True)

from harness.codecs.ldm_rsic.bitstream import unpack  # noqa: E402
from harness.codecs.ldm_rsic.codec import LDMRSIC, x_tilde_pixels  # noqa: E402
from harness.codecs.ldm_rsic.elic import squeeze, unsqueeze  # noqa: E402

REL_L2 = 1e-5
LAM = 0.0008  # the kit's configuration (README: "λ 0.0008 options")


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """The kit's weights, checked against its digests, written as the official files (once per session)."""
    sys.path.insert(0, str(PARITY))
    try:
        gen = _load_module("parity_gen_weights", PARITY / "gen_weights.py")
        rules = _load_module("parity_ldm_rsic_weights", KIT / "weights.py")
    finally:
        sys.path.remove(str(PARITY))
    elic_sd, s2_sd = rules.make_state_dicts(seed=0)
    expected = json.loads((KIT / "weights_digest.json").read_text())
    gen.check_digest(elic_sd, expected["elic"])
    gen.check_digest(s2_sd, expected["s2"])
    out = tmp_path_factory.mktemp("ldm_rsic_parity")
    paths = {"elic": out / "elic_checkpoint_best_loss.pth.tar", "s2": out / "net_g_latest.pth"}
    torch.save({"epoch": 0, "state_dict": elic_sd}, paths["elic"])
    torch.save({"params": s2_sd, "params_ema": s2_sd}, paths["s2"])
    return paths


@pytest.fixture(scope="module")
def codec(ckpts) -> LDMRSIC:
    return LDMRSIC(config="official", lam=LAM, elic_ckpt=str(ckpts["elic"]), ldm_ckpt=str(ckpts["s2"]))


@pytest.fixture(scope="module")
def ref() -> dict[str, torch.Tensor]:
    return safetensors_torch.load_file(str(KIT / "reference.safetensors"))


@pytest.fixture(scope="module")
def strings() -> dict[str, bytes]:
    return {p.name[: -len(".bin")]: p.read_bytes() for p in sorted((KIT / "strings").glob("*.bin"))}


@pytest.fixture(scope="module")
def elic(codec):
    return codec.elic()


@pytest.fixture(scope="module")
def s2(codec):
    return codec.s2()


def n_slices(elic) -> int:
    return len(elic.cfg.groups)


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)}, official {tuple(want.shape)}"
    err = rel_l2(got, want)
    assert err <= REL_L2, f"{name}: rel-L2 {err:.3g} > {REL_L2:g} against the official output"


def assert_exact(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)}, official {tuple(want.shape)}"
    diff = int((got.long() != want.long()).sum())
    assert diff == 0, f"{name}: {diff} of {want.numel()} values differ from the official ones"


def assert_image(name: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == np.uint8, f"{name}: {got.shape} {got.dtype}"
    d = np.abs(got.astype(np.int16) - want.astype(np.int16))
    frac = float((d > 0).mean())
    assert int(d.max()) <= 1 and frac <= 0.01, f"{name}: max |diff| {int(d.max())}, {frac:.2%} of values differ"


def x_in(ref) -> torch.Tensor:
    return ref["x_u8"].permute(2, 0, 1)[None].float() / 255.0


def lq(ref) -> torch.Tensor:
    return ref["x_tilde_u8"].permute(2, 0, 1)[None].float() / 255.0


def y_hat_slice(ref, elic, i: int) -> torch.Tensor:
    return ref["y_hat"].split(list(elic.cfg.groups), dim=1)[i]


def cc_out(ref, i: int) -> torch.Tensor | None:
    return ref[f"cc.s{i}.out"] if i else None


# -- ELIC: tables and analysis --------------------------------------------------------------------------------------
def test_entropy_bottleneck_tables(elic, ref):
    eb = elic.entropy_bottleneck
    assert_exact("eb._quantized_cdf", eb._quantized_cdf, ref["eb._quantized_cdf"])
    assert_exact("eb._offset", eb._offset, ref["eb._offset"])
    assert_exact("eb._cdf_length", eb._cdf_length, ref["eb._cdf_length"])


def test_gaussian_tables(elic):
    import hashlib

    want = json.loads((KIT / "stages.json").read_text())["bitstream"]["gc_quantized_cdf_sha256"]
    cdf = elic.gaussian_conditional._quantized_cdf.to(torch.int32).contiguous().numpy()
    assert hashlib.sha256(cdf.tobytes()).hexdigest()[:16] == want


@torch.no_grad()
def test_g_a(elic, ref):
    assert_close("y", elic.g_a(x_in(ref)), ref["y"])


@torch.no_grad()
def test_h_a(elic, ref):
    assert_close("z", elic.h_a(ref["y"]), ref["z"])


@torch.no_grad()
def test_z_coding(elic, ref, strings):
    eb = elic.entropy_bottleneck
    assert_exact("z_medians", eb._get_medians(), ref["z_medians"])
    assert_exact("z_symbols", eb.quantize(ref["z"], "symbols", eb._get_medians()), ref["z_symbols"])
    assert eb.compress(ref["z"])[0] == strings["z"], "z string differs from the official one"
    z_hat = elic.decode_z(strings["z"], tuple(ref["z"].shape[-2:]))
    assert_close("z_hat_enc (decoded from the official z string)", z_hat, ref["z_hat_enc"])


@torch.no_grad()
def test_h_s(elic, ref):
    assert_close("hs_out_enc", elic.h_s(ref["z_hat_enc"]), ref["hs_out_enc"])


# -- ELIC: the slice loop, one slice and one half at a time -----------------------------------------------------------
@torch.no_grad()
def test_channel_context(elic, ref):
    done = list(ref["y_hat"].split(list(elic.cfg.groups), dim=1))
    assert elic.channel_context(0, done) is None
    for i in range(1, n_slices(elic)):
        assert_close(f"cc.s{i}.out", elic.channel_context(i, done), ref[f"cc.s{i}.out"])


@pytest.mark.parametrize("half", ["a", "n"])
@torch.no_grad()
def test_param_aggregation(elic, ref, half):
    for i in range(n_slices(elic)):
        want = ref[f"pa.s{i}.{half}.out"]
        ctx = torch.zeros_like(want) if half == "a" else ref[f"ctx.s{i}.out"]
        means, scales = elic.entropy_parameters(i, ctx, cc_out(ref, i), ref["hs_out_enc"])
        assert_close(f"pa.s{i}.{half}.out (means, scales)", torch.cat([means, scales], dim=1), want)


@pytest.mark.parametrize("half", ["a", "n"])
@torch.no_grad()
def test_squeeze_indexes_symbols(elic, ref, half):
    gc = elic.gaussian_conditional
    anchor = half == "a"
    y_slices = ref["y"].split(list(elic.cfg.groups), dim=1)
    for i in range(n_slices(elic)):
        means, scales = ref[f"pa.s{i}.{half}.out"].chunk(2, dim=1)
        pre = f"gc.s{i}.{half}"
        y_sq, m_sq = squeeze(y_slices[i], anchor), squeeze(means, anchor)
        assert_exact(f"{pre}.y (the {'anchor' if anchor else 'non-anchor'} positions)", y_sq, ref[f"{pre}.y"])
        assert_close(f"{pre}.means", m_sq, ref[f"{pre}.means"])
        assert_exact(f"{pre}.indexes", gc.build_indexes(squeeze(scales, anchor)), ref[f"{pre}.indexes"])
        assert_exact(f"{pre}.symbols", gc.quantize(y_sq, "symbols", m_sq), ref[f"{pre}.symbols"])


@pytest.mark.parametrize("half", ["a", "n"])
@torch.no_grad()
def test_y_strings(elic, ref, strings, half):
    for i in range(n_slices(elic)):
        pre = f"gc.s{i}.{half}"
        got = elic.encode_symbols(ref[f"{pre}.symbols"], ref[f"{pre}.indexes"])
        assert got == strings[f"y.s{i}.{half}"], f"string y.s{i}.{half} differs from the official one"
        q = elic.decode_symbols(strings[f"y.s{i}.{half}"], ref[f"{pre}.indexes"])
        dec = elic.gaussian_conditional.dequantize(q, ref[f"{pre}.means"])
        assert_close(f"{pre}.quantized_dec", dec, ref[f"{pre}.quantized_dec"])


@torch.no_grad()
def test_context_prediction(elic, ref):
    for i in range(n_slices(elic)):
        ctx_in = unsqueeze(ref[f"gc.s{i}.a.quantized_dec"], True)
        assert_exact(f"ctx.s{i}.in (anchors in place)", ctx_in, ref[f"ctx.s{i}.in"])
        assert_close(f"ctx.s{i}.out", elic.context_prediction[i](ref[f"ctx.s{i}.in"]), ref[f"ctx.s{i}.out"])


@torch.no_grad()
def test_decode_y_from_official_strings(elic, ref, strings):
    ys = [strings[f"y.s{i}.{h}"] for i in range(n_slices(elic)) for h in ("a", "n")]
    y_hat, _ = elic.decode_y(ys, ref["z_hat_enc"])
    assert_close("y_hat (decoded from the official strings)", y_hat, ref["y_hat"])


@torch.no_grad()
def test_g_s_and_x_tilde(elic, ref):
    assert_close("g_s_out", elic.g_s(ref["y_hat"]), ref["g_s_out"])
    x = x_tilde_pixels(ref["g_s_out"].clamp(0, 1).numpy())
    got = x[0].transpose(1, 2, 0).astype(np.uint8)
    assert_exact("x_tilde_u8 (the stored PNG)", torch.from_numpy(got), ref["x_tilde_u8"])


# -- S2: condition, sampler, MEN ------------------------------------------------------------------------------------
@torch.no_grad()
def test_condition(s2, ref):
    assert_close("cond_tokens", s2.condition(lq(ref)), ref["cond_tokens"])


def sampler_steps(ref) -> list[int]:
    steps = (int(k.split(".")[1][1:]) for k in ref if k.startswith("ddpm.") and k.endswith(".x_in"))
    return sorted(steps, reverse=True)


@torch.no_grad()
def test_sampler_steps(s2, ref):
    steps = sampler_steps(ref)
    assert steps == list(reversed(range(s2.diffusion.timesteps))), f"kit steps {steps}"
    assert_exact("ddpm start = noise.F_T", ref[f"ddpm.t{steps[0]}.x_in"], ref["noise.F_T"])
    for t in steps:
        tt = torch.full((1,), t, dtype=torch.long)
        x0 = s2.denoise(ref[f"ddpm.t{t}.x_in"], tt, ref["cond_tokens"])
        assert_close(f"ddpm.t{t}.x0_pred", x0, ref[f"ddpm.t{t}.x0_pred"])
        out = s2.diffusion.posterior_mean(ref[f"ddpm.t{t}.x0_pred"], ref[f"ddpm.t{t}.x_in"], t)
        assert_close(f"ddpm.t{t}.x_out", out, ref[f"ddpm.t{t}.x_out"])
    assert_close("prior_in_G", s2.diffusion.sample(ref["cond_tokens"], ref["noise.F_T"]), ref["prior_in_G"])


@torch.no_grad()
def test_men_levels(s2, ref):
    seen: dict[str, torch.Tensor] = {}
    hook = s2.G.down3_4.register_forward_hook(lambda m, i, o: seen.__setitem__("down3_4", o))
    try:
        sr = s2.G(lq(ref), ref["prior_in_G"])
    finally:
        hook.remove()
    assert_close("G.down3_4", seen["down3_4"], ref["G.down3_4"])
    assert_close("G.latent (fed G.down3_4)", s2.G.latent(ref["G.down3_4"], ref["prior_in_G"]), ref["G.latent"])
    assert_close("sr", sr, ref["sr"])


def test_output_image(ref):
    from harness.codecs.base import to_output

    got = to_output((ref["sr"].clamp(0, 1) * 255)[0].permute(1, 2, 0).numpy(), "round")
    assert_image("image_uint8 from the official sr", got, ref["image_uint8"].numpy())


# -- end to end through the public API ------------------------------------------------------------------------------
def test_end_to_end(codec, ref, strings):
    image = ref["x_u8"].numpy()
    data = codec.encode(image).data
    box = unpack(data)
    names = ["z"] + [f"y.s{i}.{h}" for i in range(len(box.y_strings) // 2) for h in ("a", "n")]
    got = dict(zip(names, [box.z_string, *box.y_strings], strict=True))
    differ = [n for n in names if got[n] != strings[n]]
    assert not differ, f"encode: strings {differ} differ from the official ones"
    enhancer = codec.enhancer()
    enhancer.start_noise = lambda n_tiles, seed: ref["noise.F_T"].expand(n_tiles, -1, -1).clone()
    out = codec.decode(data, image.shape[:2], decode_seed=0)
    assert_image("decoded image (encode -> bytes -> parse -> reconstruct)", out, ref["image_uint8"].numpy())
