"""The RDEIC plugin: registration without torch, weights handling, hooks, invalid latents, the runner."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import HANG_GUARD_S, ROOT, write_suite

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import CodecError, InvalidOutput, check_output, create_codec  # noqa: E402
from harness.codecs.rdeic.codec import RDEIC, padded_bpp  # noqa: E402


def _image(h: int = 70, w: int = 90) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 3 % 256, yy * 3 % 256, (xx * yy) % 256], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def codec():
    return create_codec("rdeic", config="test", allow_random_weights=True, z_coding="fixed_length")


def test_registry_lists_rdeic_without_importing_torch():
    code = (
        "import sys; from harness.registry import CODECS; "
        "assert 'rdeic' in CODECS.names(); CODECS.target('rdeic'); "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_missing_weights_message_names_files_and_options(tmp_path):
    with pytest.raises(CodecError) as err:
        RDEIC()
    msg = str(err.value)
    for needle in ("v2-1_512-ema-pruned.ckpt", "rdeic_2_step2.ckpt", "sd_ckpt", "rdeic_ckpt", "--sd-ckpt"):
        assert needle in msg
    with pytest.raises(CodecError, match="both sd_ckpt and rdeic_ckpt"):
        RDEIC(sd_ckpt=str(tmp_path / "x.ckpt"))
    with pytest.raises(CodecError, match="no file at"):
        RDEIC(sd_ckpt=str(tmp_path / "a.ckpt"), rdeic_ckpt=str(tmp_path / "b.ckpt"))
    with pytest.raises(CodecError, match="z_coding"):
        RDEIC(allow_random_weights=True, z_coding="zip")


def test_decode_shape_hooks_and_determinism(codec):
    image = _image()
    bs = codec.encode(image)
    assert codec.decoded_shape(70, 90) == (128, 128, 3)
    assert padded_bpp(len(bs.data), 70, 90) == 8 * len(bs.data) / (128 * 128)
    state = codec.parse(bs.data, image.shape[:2])
    seen = []

    def hook(name, arr):
        seen.append((name, arr.shape))
        return arr

    a = codec.decode_state(state, 5, hook)
    assert [n for n, _ in seen] == ["y_hat", "c_latent", "guide_hint"]
    assert check_output(a, codec.decoded_shape(70, 90)) is None
    assert np.array_equal(a, codec.decode_state(state, 5))
    assert {"synthesis_s", "vae_decode_s", "reconstruct_s", "step_0_t299_s", "step_1_t0_s"} <= set(codec.last_timings)
    batch = codec.reconstruct_batch([state, state], [5, 6])
    # batching changes float summation order (not bit-identical), never the noise: within a few uint8 steps
    single6 = codec.decode_state(state, 6)
    assert np.abs(batch[0].astype(int) - a).max() <= 2 and np.abs(batch[1].astype(int) - single6).max() <= 2
    assert np.abs(single6.astype(int) - a).max() > 2  # the seeds do differ


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e6])
@pytest.mark.parametrize("where", ["y_hat", "c_latent", "guide_hint"])
def test_absurd_latents_are_invalid_output_before_diffusion(codec, bad, where):
    state = codec.parse(codec.encode(_image()).data, (70, 90))

    def hook(name, arr):
        if name == where:
            arr = arr.copy()
            arr.flat[0] = bad
        return arr

    with pytest.raises(InvalidOutput, match=f"(non-finite values .NaN/inf. in|{where} reaches) "):
        codec.decode_state(state, 0, hook)


def test_fingerprint_ignores_paths_but_not_options():
    a = RDEIC(config="test", allow_random_weights=True)
    b = RDEIC(config="test", allow_random_weights=True, text_cache="/tmp/elsewhere.safetensors")
    c = RDEIC(config="test", allow_random_weights=True, steps=5)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.spec().options["text_cache"] is None and b.spec().options["text_cache"]
    assert set(a.library_versions()) == {"torch", "compressai", "torchac"}


def _split_official(state: dict) -> tuple[dict, dict]:
    """A synthetic pair of official-style files: SD part (+ model_ema) and RDEIC part (+ perceptual_loss)."""
    trained = ("control_model.", "preprocess_model.")
    sd = {k: v.clone() for k, v in state.items() if not k.startswith(trained) and k != "logvar"}
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(10, dtype=torch.int32)
    cc = {k: v.clone() for k, v in state.items() if k.startswith(trained)}
    for n in ("_offset", "_quantized_cdf", "_cdf_length", "scale_table"):
        key = f"preprocess_model.gaussian_conditional.{n}"
        cc[key] = torch.zeros(0, dtype=cc[key].dtype)  # empty, as in the official files
    cc["perceptual_loss.lin0.model.1.weight"] = torch.zeros(1, 64, 1, 1)
    return sd, cc


def test_official_checkpoint_pair_and_safetensors_load_strictly(tmp_path):
    from harness.codecs.rdeic.checkpoint import save_safetensors
    from harness.codecs.rdeic.config import TEST
    from harness.codecs.rdeic.model import RDEICModel

    ref = RDEICModel(TEST, seed=11).eval()
    sd, cc = _split_official(ref.state_dict())
    torch.save({"state_dict": sd, "global_step": 7}, tmp_path / "v2-1_512-ema-pruned.ckpt")
    torch.save({"state_dict": cc}, tmp_path / "rdeic_2_step2.ckpt")
    codec = RDEIC(
        config="test",
        sd_ckpt=str(tmp_path / "v2-1_512-ema-pruned.ckpt"),
        rdeic_ckpt=str(tmp_path / "rdeic_2_step2.ckpt"),
        z_coding="fixed_length",
    )
    model = codec.model()
    notes = " ".join(codec.load_notes)
    assert "logvar" in notes and "model_ema" in notes and "beyond control_model" in notes
    got = model.state_dict()
    for k, v in ref.state_dict().items():
        if "gaussian_conditional._" not in k and not k.endswith("gaussian_conditional.scale_table"):
            assert torch.equal(got[k], v), k
    assert (
        got["preprocess_model.gaussian_conditional._quantized_cdf"].shape == (64, 3133)
        or got["preprocess_model.gaussian_conditional._quantized_cdf"].shape[0] == 64
    )
    image = _image()
    bs = codec.encode(image)
    decoded = codec.decode(bs.data, image.shape[:2], 0)
    assert (tmp_path / "v2-1_512-ema-pruned.ckpt.empty_prompt.safetensors").exists()  # text cache written

    # a fresh codec finds the cache and does not build the text tower
    again = RDEIC(
        config="test", sd_ckpt=codec.options.sd_ckpt, rdeic_ckpt=codec.options.rdeic_ckpt, z_coding="fixed_length"
    )
    assert not hasattr(again.model(), "cond_stage_model")
    assert np.array_equal(again.decode(bs.data, image.shape[:2], 0), decoded)

    # a decode worker builds the compression module alone, from the RDEIC file only
    worker = RDEIC(
        config="test", sd_ckpt=codec.options.sd_ckpt, rdeic_ckpt=codec.options.rdeic_ckpt, z_coding="fixed_length"
    )
    size = image.shape[:2]
    assert np.array_equal(worker.parse(bs.data, size)["y_hat"], codec.parse(bs.data, size)["y_hat"])
    assert worker._model is None

    merged = tmp_path / "rdeic_test.safetensors"
    save_safetensors(model.state_dict(), merged)
    st = RDEIC(config="test", weights=str(merged), z_coding="fixed_length")
    assert st.encode(image).data == bs.data
    assert np.array_equal(st.decode(bs.data, image.shape[:2], 0), decoded)


@pytest.mark.slow
def test_runs_through_the_harness_runner(tmp_path):
    from harness.config import load_suite
    from harness.runner import RunOptions, run

    codecs = (
        '[[codecs]]\ncodec = "rdeic"\nlabel = "rdeic-test"\n'
        'options = { config = "test", allow_random_weights = true, z_coding = "torchac" }\n'
    )
    corr = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["y", "z", "header"]\ngrid = { ber = [0.0, 0.05] }'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=corr, seeds=1, limit_images=1, timeout_s=60)
    result = run(RunOptions(suite=load_suite(str(suite)), out=tmp_path / "run", workers=1, progress=False))
    assert result.computed == 6
    from harness.store import ResultStore

    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells = store.cells_frame()
    finally:
        store.close()
    assert set(cells.loc[cells["level"] == "ber=0", "status"]) == {"ok"}
    assert set(cells["status"]) <= {"ok", "exception", "crash", "timeout", "invalid_output"}


def test_weight_flags_join_or_update_rdeic_configs():
    from harness.codecs.rdeic.flags import with_weight_flags
    from harness.config import load_suite

    suite = load_suite("burst_errors")  # JPEG2000 only
    assert with_weight_flags(suite, None, None) is suite
    added = with_weight_flags(suite, "/w/rdeic_2_step2.ckpt", "/w/v2-1_512-ema-pruned.ckpt")
    rdeic = [c for c in added.codecs if c.codec == "rdeic"]
    assert len(rdeic) == 1 and rdeic[0].label == "rdeic"
    assert rdeic[0].options == {"rdeic_ckpt": "/w/rdeic_2_step2.ckpt", "sd_ckpt": "/w/v2-1_512-ema-pruned.ckpt"}
    again = with_weight_flags(added, "/x/r.ckpt", None)
    assert [c.options["rdeic_ckpt"] for c in again.codecs if c.codec == "rdeic"] == ["/x/r.ckpt"]


def test_stages_compose_to_reconstruct(codec):
    from harness.codecs.rdeic.codec import to_uint8
    from harness.codecs.rdeic.sampler import GeneratorNoise

    state = codec.parse(codec.encode(_image()).data, (70, 90))
    m = codec.model()
    guide, c = m.preprocess_model.synthesis(torch.from_numpy(state["y_hat"]))
    x0 = m.relay(c, guide, m.cond_stage_model.encode_empty(), 2, GeneratorNoise(9))
    manual = to_uint8(m.decode_latent(x0))[0]
    assert np.array_equal(manual, codec.decode_state(state, 9))


_SD = os.environ.get("RDEIC_SD_CKPT")
_CC = os.environ.get("RDEIC_CKPT")


@pytest.mark.slow
@pytest.mark.skipif(
    not (_SD and _CC),
    reason="real weights absent: set RDEIC_SD_CKPT=.../v2-1_512-ema-pruned.ckpt and RDEIC_CKPT=.../rdeic_2_step2.ckpt",
)
def test_official_checkpoints_load_strictly_and_round_trip():
    from PIL import Image

    codec = RDEIC(sd_ckpt=_SD, rdeic_ckpt=_CC)
    codec.model()  # strict: raises listing missing/unexpected keys otherwise
    image = np.asarray(Image.open(ROOT / "datasets" / "samples" / "flower.png").convert("RGB"))
    bs = codec.encode(image)
    out = codec.decode(bs.data, image.shape[:2], 0)[: image.shape[0], : image.shape[1]]
    mse = np.mean((out.astype(float) - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > codec.clean_psnr_floor_db
    assert 8 * len(bs.data) / image.shape[0] / image.shape[1] < 1.0  # an extreme-compression codec


@pytest.mark.slow
def test_latent_corruptions_act_at_rdeic_hooks_through_the_runner(tmp_path):
    """Plumbing only (random weights, no number is reported): each hook really receives the corruption, and
    the per-stage timings and padded-pixel bpp reach the store."""
    import json

    from harness.config import load_suite
    from harness.runner import RunOptions, run
    from harness.store import ResultStore

    codecs = (
        '[[codecs]]\ncodec = "rdeic"\nlabel = "rdeic-test"\n'
        'options = { config = "test", allow_random_weights = true, z_coding = "fixed_length" }\n'
    )
    corr = (
        '[[corruptions]]\ncorruption = "latent_gaussian"\nscopes = ["*"]\ngrid = { sigma = [0.0, 1.0], unit = ["rel"] }'
    )
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=corr, seeds=1, limit_images=1, timeout_s=60)
    run(RunOptions(suite=load_suite(str(suite)), out=tmp_path / "run", workers=1, progress=False))
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells = store.cells_frame()
        timings = [json.loads(t) for (t,) in store._db.execute("SELECT timings FROM decodes")]
    finally:
        store.close()
    assert set(cells["scope"]) == {"y_hat", "c_latent", "guide_hint"} and set(cells["status"]) == {"ok"}
    zero, noisy = cells[cells["level"].str.startswith("sigma=0,")], cells[cells["level"].str.startswith("sigma=1,")]
    assert (zero["metric.psnr_vs_clean"] == float("inf")).all()  # sigma 0 is an exact identity at every hook
    assert (noisy["metric.psnr_vs_clean"] < float("inf")).all()  # sigma 1 changes the decode at every hook
    assert (cells["padded_bpp"] <= cells["bpp"]).all() and (cells["bits_exposed"] == 0).all()
    assert all("entropy_decode_s" in t and len(t) > 2 for t in timings)


def test_bit_errors_runs_the_official_rdeic_when_given_else_rdeic_tiny(monkeypatch):
    """The users' own command, `evaluate.py --suite bit_errors`, ran six JPEG2000 configs and no RDEIC."""
    from harness.codecs.rdeic.flags import resolve_auto
    from harness.config import load_suite

    monkeypatch.delenv("RDEIC_CKPT", raising=False)
    monkeypatch.delenv("RDEIC_SD_CKPT", raising=False)
    suite = load_suite("bit_errors")
    tiny, note = resolve_auto(suite, None, None)
    by_label = {c.label: c for c in tiny.codecs}
    assert by_label["rdeic"].codec == "rdeic-tiny@low" and "rdeic-tiny@low" in note
    assert by_label["j2k-plain@rdeic"].match_rate_of == "rdeic"  # JPEG2000 at RDEIC's rate, image by image
    assert by_label["rdeic-vae-only"].codec == "rdeic-vae-tiny" and by_label["rdeic-vae-only"].clean_only
    official, note = resolve_auto(suite, "/w/rdeic_2_step2.ckpt", "/w/v2-1_512-ema-pruned.ckpt")
    by_label = {c.label: c for c in official.codecs}
    assert by_label["rdeic"].codec == "rdeic" and by_label["rdeic"].options["rdeic_ckpt"] == "/w/rdeic_2_step2.ckpt"
    assert by_label["rdeic-vae-only"].codec == "rdeic-vae" and "official model" in note
