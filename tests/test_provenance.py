"""What a run records about how each number was made (issue #16 §2): the codec can be rebuilt from the store
with the fingerprint its cells are keyed by, rate-matched configs store the options they were encoded with,
presets stay presets, and the device is the real one."""

from __future__ import annotations

import json

import pytest
from conftest import stored_cells, write_suite

from harness.config import load_suite, suite_names
from harness.runner import RunOptions, make_plan, run
from harness.store import ResultStore
from reports.redecode import rebuild_codec


def _row(cell) -> dict:
    return {
        "codec": cell.codec,
        "codec_name": cell.codec_name,
        "codec_options": json.dumps(cell.codec_options),
        "rate_of": cell.rate_of,
        "codec_fingerprint": cell.codec_fingerprint,
    }


@pytest.mark.parametrize("name", [n for n in suite_names() if load_suite(n).finetune is None])
def test_every_suites_codecs_rebuild_from_the_store_with_their_fingerprint(name, tmp_path):
    plan = make_plan(RunOptions(load_suite(name), tmp_path / "run", limit_images=1, seeds=1, progress=False))
    seen = {}
    for cell in plan.cells:
        seen.setdefault(cell.codec_label, cell)
    assert seen
    for label, cell in seen.items():
        codec = rebuild_codec(_row(cell))
        assert codec is not None, f"{name}: {label} does not rebuild to its fingerprint"
        if cell.codec_name.startswith("rdeic-tiny"):  # a preset is rebuilt as that preset, weights included
            assert codec.options.weights and codec.options.config == "tiny"


def test_rate_matched_cells_store_the_rate_they_were_encoded_at_and_rebuild(tmp_path):
    codecs = (
        '[[codecs]]\ncodec = "jpeg2000"\nlabel = "ref"\noptions = { target_bpp = 0.3 }\n'
        '[[codecs]]\ncodec = "j2k-reversible"\nlabel = "matched"\nmatch_rate_of = "ref"\n'
    )
    corruptions = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0] }'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=corruptions, seeds=1)
    run(RunOptions(load_suite(str(suite)), tmp_path / "run", workers=1, progress=False))
    cells = stored_cells(tmp_path / "run")
    ref = cells[cells["codec_label"] == "ref"].set_index("image_sha256")
    matched = cells[cells["codec_label"] == "matched"]
    assert len(matched) == 2
    for row in matched.to_dict("records"):
        config = json.loads(row["codec_config"])
        # the per-image target is the reference's actual bpp on this image, not the preset's 0.5 default
        assert config["target_bpp"] == pytest.approx(ref.loc[row["image_sha256"], "bpp"])
        assert abs(row["bpp"] - config["target_bpp"]) / config["target_bpp"] <= 0.10
        assert rebuild_codec(row) is not None
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        prov = store.provenance()
    finally:
        store.close()
    assert json.loads(prov["devices"])["codecs"] == {"ref": "cpu", "matched": "cpu"}
    assert "device" not in prov  # no literal "cpu" standing in for what ran


def test_the_demo_preset_is_reported_as_itself_not_as_missing_official_weights(tmp_path):
    plan = make_plan(RunOptions(load_suite("demo"), tmp_path / "run", limit_images=1, seeds=1, progress=False))
    rdeic = next(c for c in plan.cells if c.codec == "rdeic")
    assert rdeic.codec_name == "rdeic-tiny@low"
    codec = rebuild_codec(_row(rdeic))
    assert codec is not None and codec.fingerprint() == rdeic.codec_fingerprint
