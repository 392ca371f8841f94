"""The DICM codec plugin: the side-information contract (a trusted side image passed to reconstruct, None =
missing), hooks, determinism, padding, options, and the shipped DICM-tiny (random weights only for plumbing)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import CodecError, InvalidOutput, create_codec

SIZE = (64, 128)


@pytest.fixture(scope="module")
def codec():
    from harness.codecs.dicm.codec import DICM

    return DICM(config="test", allow_random_weights=True, steps=2)


@pytest.fixture(scope="module")
def pair():
    from harness.datasets.stereo_synth import stereo_pair

    return stereo_pair(2, *SIZE)


@pytest.fixture(scope="module")
def state(codec, pair):
    return codec.parse_checked(codec.encode(pair[0]).data, SIZE)


def test_declares_side_information_hooks_and_segments(codec):
    assert codec.side_info == ("stereo",)
    assert codec.hooks == ("y_hat", "z_hat", "ctx_pyramid", "w_pyramid", "init_noise")
    assert codec.segments == ("z", "y")
    assert codec.config()["steps"] == 2
    assert "weights" not in codec.config() and "ckpt" not in codec.config()


def test_side_information_is_required_and_none_means_missing(codec, state, pair):
    with pytest.raises(ValueError, match="needs decoder-side information"):
        codec.decode_state(state, 0, size=SIZE)
    with_side = codec.decode_state(state, 0, size=SIZE, side_info={"stereo": pair[1]})
    missing = codec.decode_state(state, 0, size=SIZE, side_info={"stereo": None})
    assert with_side.shape == missing.shape == (64, 128, 3) and with_side.dtype == np.uint8
    assert not np.array_equal(with_side, missing)
    # the same inputs decode identically; another decode seed gives another decode
    assert np.array_equal(with_side, codec.decode_state(state, 0, size=SIZE, side_info={"stereo": pair[1]}))
    assert not np.array_equal(with_side, codec.decode_state(state, 1, size=SIZE, side_info={"stereo": pair[1]}))


def test_a_side_image_of_another_size_or_type_is_refused(codec, state, pair):
    with pytest.raises(ValueError, match="does not match the primary image"):
        codec.decode_state(state, 0, size=SIZE, side_info={"stereo": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(ValueError, match="uint8 H x W x 3"):
        codec.decode_state(state, 0, size=SIZE, side_info={"stereo": pair[1].astype(np.float32)})


def test_hooks_see_every_point_and_an_identity_hook_changes_nothing(codec, state, pair):
    seen: list[tuple[str, tuple]] = []

    def spy(name, arr):
        seen.append((name, np.shape(arr)))
        return arr

    side = {"stereo": pair[1]}
    clean = codec.decode_state(state, 0, size=SIZE, side_info=side)
    assert np.array_equal(clean, codec.decode_state(state, 0, spy, size=SIZE, side_info=side))
    names = [n for n, _ in seen]
    assert names[:2] == ["z_hat", "y_hat"] and names[-1] == "init_noise"
    levels = len(codec.model_config.compressor.pyramid_channels)
    assert names.count("ctx_pyramid") == names.count("w_pyramid") == levels
    assert [s[1] for n, s in seen if n == "ctx_pyramid"] == list(codec.model_config.compressor.pyramid_channels)


@pytest.mark.parametrize("point", ["y_hat", "z_hat", "ctx_pyramid", "w_pyramid", "init_noise"])
def test_corrupting_a_hook_point_changes_the_decode(codec, state, pair, point):
    def noisy(name, arr):
        return arr + 0.5 if name == point else arr

    side = {"stereo": pair[1]}
    clean = codec.decode_state(state, 0, size=SIZE, side_info=side)
    assert not np.array_equal(clean, codec.decode_state(state, 0, noisy, size=SIZE, side_info=side))


def test_absurd_latents_are_invalid_output_before_any_network(codec, state, pair):
    bad = {**state, "y_hat": state["y_hat"] * 0 + 1e9}
    with pytest.raises(InvalidOutput, match="beyond the bound"):
        codec.decode_state(bad, 0, size=SIZE, side_info={"stereo": pair[1]})
    nan = {**state, "z_hat": state["z_hat"] * np.nan}
    with pytest.raises(InvalidOutput, match="non-finite"):
        codec.decode_state(nan, 0, size=SIZE, side_info={"stereo": pair[1]})


def test_odd_sizes_are_padded_and_the_side_image_with_them(codec):
    from harness.datasets.stereo_synth import stereo_pair

    left, right = stereo_pair(3, 64, 128)
    left, right = left[:50, :90], right[:50, :90]
    data = codec.encode(left).data
    out = codec.decode(data, (50, 90), 0, side_info={"stereo": right})
    assert out.shape == codec.decoded_shape(50, 90) == (64, 128, 3)
    assert codec.max_state_bytes((50, 90)) == codec.max_state_bytes(SIZE)


def test_a_fresh_codec_from_the_spec_parses_identically(codec, pair):
    from harness.registry import import_target

    spec = codec.spec()
    twin = import_target(spec.target)(**spec.options)
    assert twin.fingerprint() == codec.fingerprint()
    data = codec.encode(pair[0]).data
    twin.warm()  # the worker's path: context_fn alone, no UNet
    assert twin._model is None
    a, b = codec.parse(data, SIZE), twin.parse(data, SIZE)
    assert np.array_equal(a["y_hat"], b["y_hat"])


@pytest.mark.parametrize(
    "options, match",
    [
        ({"config": "huge"}, "unknown config"),
        ({"steps": 0}, "steps must be in"),
        ({"time_input": "sometimes"}, "time_input must be one of"),
        ({"rate_index": 300}, "rate_index is a byte"),
        ({"rounding": "up"}, "rounding must be"),
        ({"colour": 1}, "colour"),
    ],
)
def test_bad_options_fail_in_one_line(options, match):
    from harness.codecs.dicm.codec import DICM

    with pytest.raises(CodecError, match=match):
        DICM(**{"config": "test", "allow_random_weights": True, **options})


def test_the_shipped_preset_is_registered_with_its_weights():
    from harness.registry import CODECS, Preset

    preset = CODECS.get("dicm@tiny")
    assert isinstance(preset, Preset) and preset.codec == "dicm" and preset.options["config"] == "tiny"
    from pathlib import Path

    weights = Path(preset.options["weights"])
    assert weights.is_file() and weights.stat().st_size <= 20_000_000


@pytest.mark.slow
def test_dicm_tiny_decodes_the_standin_above_its_floor_with_true_side_info():
    """The shipped weights, two held-out stand-in pairs (never trained on): a clean decode with the true side view
    beats the same stream decoded without side information, and the file's bits stay near the estimate."""
    from harness.datasets import create_dataset
    from harness.metrics import PSNR

    codec = create_codec("dicm@tiny")
    ds = create_dataset("standin_stereo", count=2)
    psnr = PSNR()
    for entry in ds.index():
        image, side = ds.load(entry), ds.load_side(entry, "stereo")
        stream, report = codec.encode_with_report(image)
        assert 0.9 < report["payload_over_estimate"] < 1.15, report
        true = codec.decode(stream.data, SIZE, 0, side_info={"stereo": side})
        missing = codec.decode(stream.data, SIZE, 0, side_info={"stereo": None})
        assert psnr(image, true) > codec.clean_psnr_floor_db
        assert psnr(image, true) > psnr(image, missing)


@pytest.mark.slow
def test_ci_dicm_suite_matches_its_baseline(tmp_path, capsys):
    """DICM-tiny with and without its side view under bit errors and three side-information degradations,
    against the committed baseline. After an intended change, review the diff and rerun with ``--update``."""
    import pandas as pd
    from conftest import ROOT

    from harness.cli import main

    baseline = ROOT / "reports" / "baselines" / "ci_dicm.csv"
    out = tmp_path / "dicm"
    assert main(["--suite", "ci_dicm", "--out", str(out), "--no-progress", "--workers", "2"]) == 0
    capsys.readouterr()
    code = main(["regress", str(out), "--baseline", str(baseline)])
    text = capsys.readouterr().out
    assert code == 0, text
    base = pd.read_csv(baseline)
    assert f"compared {len(base)} rows" in text and "OK: within tolerances" in text
    assert set(base["codec"]) == {"dicm@tiny", "dicm@tiny-no-side"}
    assert {"side_noise", "side_shift", "side_missing", "bsc"} <= set(base["corruption"])
