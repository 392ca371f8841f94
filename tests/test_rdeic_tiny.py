"""RDEIC-tiny: the shipped weights load through the registry presets, stay within the size budget, and decode a
held-out bundled image to the model card's PSNR (weights/rdeic-tiny/reference.json) within 0.5 dB."""

from __future__ import annotations

import json
import math

import pytest
from conftest import ROOT

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import create_codec  # noqa: E402
from harness.registry import CODECS, TINY_WEIGHTS  # noqa: E402

WEIGHTS = ROOT / "weights" / "rdeic-tiny"
REFERENCE = WEIGHTS / "reference.json"
RATES = ("low", "high")


def test_presets_point_at_the_shipped_weights():
    assert WEIGHTS.resolve() == TINY_WEIGHTS
    for rate in RATES:
        preset = CODECS.get(f"rdeic-tiny@{rate}")
        assert preset.codec == "rdeic" and preset.options["config"] == "tiny"
        assert preset.options["weights"] == str(WEIGHTS.resolve() / f"rdeic-tiny-{rate}.safetensors")


def test_shipped_weights_fit_the_budget_and_load_strictly():
    from harness.codecs.rdeic.checkpoint import read_state_dict
    from harness.codecs.rdeic.config import TINY
    from harness.codecs.rdeic.model import RDEICModel

    files = [WEIGHTS / f"rdeic-tiny-{rate}.safetensors" for rate in RATES]
    assert all(f.is_file() for f in files), "run python -m harness.train.tiny --out weights/rdeic-tiny"
    assert sum(f.stat().st_size for f in files) <= 40 * 1024 * 1024
    with torch.device("meta"):
        expected = RDEICModel(TINY).state_dict()
    state = read_state_dict(files[0])
    assert set(state) == set(expected)
    shared = ("model.", "first_stage_model.", "cond_stage_model.")  # stage 0 is shared by the rate points
    other = read_state_dict(files[1])
    for k, v in state.items():
        if k.startswith(shared):
            assert torch.equal(v, other[k]), k


def test_heldout_decode_reaches_the_model_card_psnr():
    """chelsea.png (held out: never trained on), 256 x 256 centre crop, 2 steps, decode seed 0."""
    from harness.train.evaluate import heldout_crops, measure

    ref = json.loads(REFERENCE.read_text())
    name, crop = next((n, a) for n, a in heldout_crops() if n == "chelsea.png")
    torch.set_num_threads(2)
    for rate in RATES:
        want = ref["images"][name][f"{rate}@2"]
        got = measure(WEIGHTS, rate, 2, crop, seed=ref["decode_seed"])
        assert math.isfinite(got["psnr"])
        assert abs(got["psnr"] - want["psnr"]) <= 0.5, (rate, got, want)
        assert got["bpp"] == pytest.approx(want["bpp"], rel=0.02), (rate, got, want)


def test_preset_codec_round_trips_a_small_image():
    import numpy as np

    codec = create_codec("rdeic-tiny@low")
    assert not codec.random_weights
    yy, xx = np.mgrid[0:64, 0:64]
    image = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)
    out = codec.decode(codec.encode(image).data, image.shape[:2], 0)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
