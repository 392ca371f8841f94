"""The VAE-only row (``rdeic-vae``): RDEIC's autoencoder with no compression bounds what RDEIC can reach."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from harness.codecs.base import CodecError, InvalidOutput, create_codec
from harness.codecs.rdeic.vae_only import HEADER, RDEICVAE, describe_bpp

TINY_LOW = ROOT / "weights" / "rdeic-tiny" / "rdeic-tiny-low.safetensors"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    """A held-out image (never trained on: MODEL_CARD.md), the 256² crop bundled with the tiny weights."""
    return np.asarray(Image.open(ROOT / "weights" / "rdeic-tiny" / "heldout" / "chelsea.png").convert("RGB"))


@pytest.fixture(scope="module")
def vae() -> RDEICVAE:
    return create_codec("rdeic-vae", config="tiny", weights=str(TINY_LOW))


def test_registered_next_to_rdeic_and_listed_without_torch():
    import subprocess
    import sys

    code = "import sys, harness.cli as c; print(c.list_everything()); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "rdeic-vae" in out and out.strip().endswith("False")


def test_clean_psnr_bounds_rdeic_tiny_on_a_128_crop(vae, chelsea):
    """The bound: the autoencoder alone reaches at least what RDEIC-tiny (which decodes through it) reaches."""
    crop = chelsea[64:192, 64:192]
    size = crop.shape[:2]
    bound = _psnr(vae.decode(vae.encode(crop).data, size, 0)[:128, :128], crop)
    rdeic = create_codec("rdeic-tiny@low", z_coding="fixed_length")  # z coding is lossless: same decode
    got = _psnr(rdeic.decode(rdeic.encode(crop).data, size, 0)[:128, :128], crop)
    assert bound >= got, (bound, got)
    assert bound > 20 and got > 15


def test_matches_the_model_cards_vae_only_number(vae, chelsea):
    """MODEL_CARD.md: "VAE encode -> decode alone gives 25.01 dB on chelsea" (256² held-out crop)."""
    out = vae.decode(vae.encode(chelsea).data, chelsea.shape[:2], 0)
    assert out.dtype == np.uint8 and out.shape == (256, 256, 3)
    assert abs(_psnr(out, chelsea) - 25.01) < 0.05


def test_file_is_a_header_and_the_raw_float32_latent(vae, chelsea):
    image = np.ascontiguousarray(chelsea[:100, :70])  # padded to 128 x 128: a 16 x 16 latent of 8 channels
    bs = vae.encode(image)
    assert len(bs.data) == HEADER.size + 4 * 8 * 16 * 16
    assert bs.segments["header"] == ((0, HEADER.size),) and bs.segments["payload"] == ((HEADER.size, len(bs.data)),)
    assert 8 * len(bs.data) / (100 * 70) == pytest.approx(describe_bpp(100, 70, 8))
    state = vae.parse(bs.data, (100, 70))
    assert state["latent"].shape == (1, 8, 16, 16) and state["latent"].dtype == np.float32
    assert vae.decoded_shape(100, 70) == (128, 128, 3)
    first = vae.decode_state(state, 0, size=(100, 70))
    assert first.shape == (128, 128, 3) and np.array_equal(first, vae.decode_state(state, 7, size=(100, 70)))


def _with(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (lambda d: b"XVAE" + d[4:], "not an rdeic-vae latent file"),
        (lambda d: _with(d, 5, "<B", 2), "bytes per value"),
        (lambda d: _with(d, 6, "<H", 4), "header declares a 4 x 8 x 8 latent"),
        (lambda d: _with(d, 8, "<H", 9), "is stored as 8 x 8 x 8"),
        (lambda d: _with(_with(d, 8, "<H", 60000), 10, "<H", 60000), "outside 1.."),
        (lambda d: _with(d, 8, "<H", 0), "outside 1.."),
        (lambda d: d[:-1], "payload of"),
        (lambda d: d + b"\0", "payload of"),
        (lambda d: d[:7], "shorter than the 12-byte header"),
    ],
)
def test_parse_refuses_a_corrupted_header_before_allocating(vae, chelsea, corrupt, fragment):
    data = vae.encode(np.ascontiguousarray(chelsea[:64, :64])).data
    with pytest.raises(InvalidOutput, match=fragment):
        vae.parse(corrupt(data), (64, 64))


def test_parse_refuses_a_header_for_another_image_size(vae, chelsea):
    data = vae.encode(np.ascontiguousarray(chelsea[:64, :64])).data
    assert vae.parse(data, (60, 50))["latent"].shape == (1, 8, 8, 8)  # same padded grid: fine
    with pytest.raises(InvalidOutput, match="a 128 x 64 image with config 'tiny' is stored as 8 x 16 x 8"):
        vae.parse(data, (128, 64))


def test_nan_and_absurd_latents_are_invalid_output_and_the_hook_sees_the_latent(vae, chelsea):
    data = bytearray(vae.encode(np.ascontiguousarray(chelsea[:64, :64])).data)
    struct.pack_into("<f", data, HEADER.size, float("nan"))
    with pytest.raises(InvalidOutput, match="non-finite"):
        vae.decode(bytes(data), (64, 64), 0)
    state = vae.parse(vae.encode(np.ascontiguousarray(chelsea[:64, :64])).data, (64, 64))
    seen = []

    def hook(name, arr):
        seen.append((name, arr.shape))
        return arr * 1e6

    with pytest.raises(InvalidOutput, match="beyond the bound"):
        vae.reconstruct(state, 0, hook)
    assert seen == [("latent", (1, 8, 8, 8))]


def test_options_and_weights_are_rdeics(tmp_path):
    with pytest.raises(CodecError, match="RDEIC weights missing"):
        RDEICVAE(config="tiny")
    with pytest.raises(CodecError, match="give sd_ckpt"):
        RDEICVAE(config="tiny", rdeic_ckpt=str(TINY_LOW))
    with pytest.raises(CodecError, match="not both"):
        RDEICVAE(config="tiny", weights=str(TINY_LOW), sd_ckpt=str(TINY_LOW))
    with pytest.raises(CodecError, match="unknown config"):
        RDEICVAE(config="huge", allow_random_weights=True)
    junk = tmp_path / "v2-1_512-ema-pruned.ckpt"
    junk.write_bytes(b"\x13" * 100)
    with pytest.raises(CodecError, match="not a PyTorch checkpoint or a safetensors file"):
        RDEICVAE(config="tiny", sd_ckpt=str(junk))
    a, b = RDEICVAE(config="tiny", weights=str(TINY_LOW)), RDEICVAE(config="tiny", weights=str(TINY_LOW), device="cpu")
    assert a.fingerprint() == b.fingerprint() and "weights" not in a.config()
    assert RDEICVAE(config="tiny", weights=str(TINY_LOW), rounding="round").fingerprint() != a.fingerprint()


def test_official_pair_reads_the_vae_of_the_sd_file_as_rdeic_does(tmp_path):
    """With sd_ckpt (+ rdeic_ckpt) the VAE tensors are RDEIC's own (same merge order), and the decode equals
    RDEIC's model's ``decode_latent`` on the same latent."""
    from harness.codecs.rdeic.codec import to_pixel_values
    from harness.codecs.rdeic.config import TEST
    from harness.codecs.rdeic.model import RDEICModel

    ref = RDEICModel(TEST, seed=3).eval()
    state = ref.state_dict()
    sd = {k: v for k, v in state.items() if not k.startswith(("control_model.", "preprocess_model."))}
    cc = {k: v for k, v in state.items() if k.startswith(("control_model.", "preprocess_model."))}
    torch.save({"state_dict": sd}, tmp_path / "sd.ckpt")
    torch.save({"state_dict": cc}, tmp_path / "cc.ckpt")
    codec = RDEICVAE(config="test", sd_ckpt=str(tmp_path / "sd.ckpt"), rdeic_ckpt=str(tmp_path / "cc.ckpt"))
    for k, v in codec.vae().state_dict().items():
        assert torch.equal(v, state["first_stage_model." + k]), k
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    latent = codec.parse(codec.encode(image).data, (64, 64))["latent"]
    with torch.no_grad():
        expected = to_pixel_values(ref.decode_latent(torch.from_numpy(latent)))[0]
    assert np.array_equal(codec.reconstruct({"latent": latent}, 0), expected)
    random = RDEICVAE(config="test", allow_random_weights=True)
    assert random.clean_psnr_floor_db == -np.inf and random.weights_hash() != codec.weights_hash()


@pytest.mark.slow
def test_through_the_runner_header_corruption_is_invalid_output(tmp_path):
    from harness.cli import main
    from harness.store import ResultStore

    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "vae"\nseed = 7\nseeds = 2\nmetrics = ["psnr"]\ntimeout_s = 60\n'
        '[[datasets]]\nname = "samples"\nlimit_images = 1\npreprocessing = "center_crop(size=64)"\n'
        f'[[codecs]]\ncodec = "rdeic-vae"\nlabel = "vae"\noptions = {{ config = "tiny", weights = "{TINY_LOW}" }}\n'
        '[[corruptions]]\ncorruption = "bsc"\nscopes = ["header", "payload"]\ngrid = { ber = [0.0, 0.2] }\n'
    )
    assert main(["--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress", "--workers", "1"]) == 0
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells = store.cells_frame()
    finally:
        store.close()
    assert set(cells.loc[cells["level"] == "ber=0", "status"]) == {"ok"}
    header = cells[(cells["scope"] == "header") & (cells["level"] != "ber=0")]
    assert set(header["status"]) == {"invalid_output"}
