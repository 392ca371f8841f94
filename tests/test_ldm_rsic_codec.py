"""The LDM-RSIC plugins: registration without torch, hooks per configuration, seeded determinism, the geometry
policy, JPEG2000* sharing JPEG2000's bits, and the runner (isolated parse of fuzzed streams, classified)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import HANG_GUARD_S, ROOT, write_suite

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.codecs.base import CodecError, InvalidOutput, create_codec  # noqa: E402
from harness.codecs.ldm_rsic.codec import J2KMEN, LDMRSIC  # noqa: E402


def _image(h: int = 64, w: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 3 % 256, yy * 3 % 256, (xx * yy) % 256], axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def codec():
    return LDMRSIC(config="test", allow_random_weights=True)


def test_registry_lists_ldm_rsic_without_importing_torch():
    code = (
        "import sys; from harness.registry import CODECS, DATASETS; "
        "assert {'ldm-rsic', 'elic', 'j2k+men', 'ldm-rsic-tiny', 'elic-tiny', 'j2k+men-tiny'} <= set(CODECS.names()); "
        "assert {'dota', 'ucmerced', 'standin_overhead'} <= set(DATASETS.names()); "
        "CODECS.target('ldm-rsic'); CODECS.target('j2k+men'); "
        "assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_hooks_in_order_and_seeded_determinism(codec):
    state = codec.parse(codec.encode(_image()).data, (64, 64))
    seen = []

    def hook(name, arr):
        seen.append((name, arr.shape))
        return arr

    a = codec.decode_state(state, 3, hook, size=(64, 64))
    assert [n for n, _ in seen] == list(codec.hooks) == ["z_hat", "y_hat", "x_tilde", "cond_tokens", "prior"]
    assert dict(seen)["x_tilde"] == (1, 3, 64, 64) and dict(seen)["prior"] == (1, 16, 16)
    assert np.array_equal(a, codec.decode_state(state, 3, size=(64, 64)))
    assert {"elic_synthesis_s", "condition_s", "sampler_s", "men_s", "entropy_decode_s"} <= set(codec.last_timings)
    hooks = {n: [] for n in ("p3", "p4")}
    codec.decode_state(state, 3, lambda n, x: hooks["p3"].append(x) or x if n == "prior" else x, size=(64, 64))
    codec.decode_state(state, 4, lambda n, x: hooks["p4"].append(x) or x if n == "prior" else x, size=(64, 64))
    assert not np.array_equal(hooks["p3"][0], hooks["p4"][0])  # the decode seed draws the sampler's start


def test_hooks_follow_the_configuration():
    assert LDMRSIC(config="test", allow_random_weights=True, enhance=False).hooks == ("z_hat", "y_hat", "x_tilde")
    assert LDMRSIC(config="test", allow_random_weights=True, prior="none").hooks == ("z_hat", "y_hat", "x_tilde")
    assert J2KMEN(config="test", allow_random_weights=True).hooks == ("x_tilde", "cond_tokens", "prior")


def test_enhance_false_is_elic_alone_with_the_same_bits(codec):
    elic = LDMRSIC(config="test", allow_random_weights=True, enhance=False)
    bits = codec.encode(_image())
    assert elic.encode(_image()).data == bits.data
    state = elic.parse(bits.data, (64, 64))
    x = elic.x_tilde(state, (64, 64), None)
    assert np.array_equal(elic.decode_state(state, 0, size=(64, 64)), x[0].transpose(1, 2, 0).astype(np.uint8))
    assert codec.fingerprint() != elic.fingerprint()


@pytest.mark.parametrize("where", ["z_hat", "y_hat", "cond_tokens", "prior"])
@pytest.mark.parametrize("bad", [np.nan, 1e9])
def test_absurd_latents_are_invalid_output(codec, where, bad):
    state = codec.parse(codec.encode(_image()).data, (64, 64))

    def hook(name, arr):
        if name == where:
            arr = arr.copy()
            arr.flat[0] = bad
        return arr

    with pytest.raises(InvalidOutput, match=f"{where}"):
        codec.decode_state(state, 0, hook, size=(64, 64))


def test_x_tilde_hook_acts_in_pixels_and_is_requantised(codec):
    state = codec.parse(codec.encode(_image()).data, (64, 64))
    got = []

    def hook(name, arr):
        if name == "x_tilde":
            return arr + 0.4  # rounds back: no change
        if name == "cond_tokens":
            got.append(arr)
        return arr

    codec.decode_state(state, 0, hook, size=(64, 64))
    ref = []
    codec.decode_state(state, 0, lambda n, a: ref.append(a) or a if n == "cond_tokens" else a, size=(64, 64))
    assert np.array_equal(got[0], ref[0])


def test_faithful_geometry_refuses_other_sizes_in_one_line_and_tiled_runs(codec):
    with pytest.raises(CodecError) as err:
        codec.encode(_image(70, 90))
    msg = str(err.value)
    assert "\n" not in msg and "center_crop(size=64)" in msg and 'geometry = "tiled"' in msg
    tiled = LDMRSIC(config="test", allow_random_weights=True, geometry="tiled")
    out = tiled.decode(tiled.encode(_image(70, 90)).data, (70, 90), 0)
    assert out.shape == (70, 90, 3) and out.dtype == np.uint8


def test_j2k_men_has_jpeg2000s_bits_and_matches_rates():
    j = J2KMEN(config="test", allow_random_weights=True, j2k="j2k-plain", j2k_options={"target_bpp": 0.8})
    plain = create_codec("j2k-plain", target_bpp=0.8)
    image = _image()
    assert j.encode(image).data == plain.encode(image).data
    assert j.encode_at_rate(image, 1.0).data == plain.encode_at_rate(image, 1.0).data
    assert j.config()["j2k_resolved"] == plain.config() and j.fingerprint() != plain.fingerprint()
    out = j.decode(j.encode(image).data, (64, 64), 0)
    assert out.shape == (64, 64, 3)
    with pytest.raises(CodecError, match="men_weights"):
        J2KMEN(config="test")
    with pytest.raises(CodecError, match="JPEG2000 configuration"):
        J2KMEN(config="test", allow_random_weights=True, j2k="ldm-rsic", j2k_options={"allow_random_weights": True})


def test_options_are_checked():
    for bad in ({"lam": 0.5}, {"prior": "zero"}, {"geometry": "tile"}, {"steps": 9}, {"config": "huge"}):
        with pytest.raises(CodecError):
            LDMRSIC(allow_random_weights=True, **bad)


@pytest.mark.slow
def test_fuzzed_streams_run_isolated_and_are_classified(tmp_path):
    """Plumbing (random weights, no number reported): bit errors on every declared scope and latent noise on
    every hook go through the isolated workers; each cell gets exactly one status of the taxonomy."""
    from conftest import stored_cells

    from harness.config import load_suite
    from harness.runner import RunOptions, run

    codecs = (
        '[[codecs]]\ncodec = "ldm-rsic"\nlabel = "ldm"\n'
        'options = { config = "test", allow_random_weights = true, geometry = "tiled" }\n'
        '[[codecs]]\ncodec = "ldm-rsic"\nlabel = "elic"\npaired_with = "ldm"\n'
        'options = { config = "test", allow_random_weights = true, geometry = "tiled", enhance = false }\n'
    )
    corr = (
        '[[corruptions]]\ncorruption = "bsc"\nscopes = ["header", "z", "y.s0.a", "y.s4.n"]\n'
        "grid = { ber = [0.0, 0.02] }\n"
        '[[corruptions]]\ncorruption = "latent_gaussian"\nscopes = ["*"]\ngrid = { sigma = [0.0, 1.0] }'
    )
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=corr, seeds=1, limit_images=1, timeout_s=60)
    text = suite.read_text().replace('name = "samples"\n', 'name = "samples"\npreprocessing = "center_crop(size=64)"\n')
    suite.write_text(text)
    run(RunOptions(suite=load_suite(str(suite)), out=tmp_path / "run", workers=1, progress=False))
    cells = stored_cells(tmp_path / "run")
    assert set(cells["status"]) <= {"ok", "exception", "crash", "timeout", "invalid_output"}
    assert set(cells.loc[cells["level"].isin(["ber=0", "sigma=0,unit=rel"]), "status"]) == {"ok"}
    assert len(set(cells["status"])) > 1  # the damaged header / strings are refused, classified
    assert {"y.s0.a", "y.s4.n", "z", "header", "prior", "cond_tokens", "z_hat", "x_tilde"} <= set(cells["scope"])
    elic = cells[cells["codec_label"] == "elic"]
    assert not ({"prior", "cond_tokens"} & set(elic["scope"]))
    # paired: the ELIC-only cells saw the same flips as the enhanced ones
    ldm = cells[cells["codec_label"] == "ldm"]
    both = ldm.merge(elic, on=["image_sha256", "scope", "level", "replicate"], suffixes=("_l", "_e"))
    flips = both[both["corruption_l"] == "bsc"]
    assert len(flips) and (flips["actual_flips_l"] == flips["actual_flips_e"]).all()
    # and the paired report: enhanced vs ELIC-only on the same streams, with intervals
    from reports.paired import partner_pairs, write

    assert partner_pairs(cells) == [("elic", "ldm")]
    text = write(tmp_path / "run").read_text()
    assert "## ldm vs elic" in text and "Δpsnr [95% CI]" in text and "damage vs own clean" in text
    assert (tmp_path / "run" / "paired.csv").is_file()


def test_remote_sensing_flips_jpeg2000_star_exactly_as_jpeg2000(tmp_path):
    """#22: JPEG2000 and JPEG2000* write byte-identical streams (the same rate bisection), so their failure rates
    compare the MEN post-filter only if the two see the same flips: every JPEG2000* bit-error cell draws its
    corruption from the JPEG2000 cell of the same image, level, scope and replicate (before: its own draws)."""
    import json

    from harness.config import load_suite
    from harness.runner import RunOptions, make_plan

    plan = make_plan(RunOptions(load_suite("remote_sensing"), tmp_path))

    def where(c) -> tuple:
        return (c.image_sha256, c.corruption, json.dumps(c.params, sort_keys=True), c.scope, c.replicate)

    j2k = {where(c): c for c in plan.cells if c.codec_label == "jpeg2000@ldm-rsic"}
    star = [c for c in plan.cells if c.codec_label == "jpeg2000*@ldm-rsic" and c.corruption == "bsc"]
    assert star and len({c.scope for c in star}) > 2
    for c in star:
        partner = j2k[where(c)]
        assert c.rng_key == partner.key != c.key, (c.scope, c.level)
        assert c.rng().integers(0, 2**63) == partner.rng().integers(0, 2**63)
