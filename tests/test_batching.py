"""Batched reconstruction (issue #17): parsed states of one codec config and image size are reconstructed
together, each cell with its own decode seed and latent draw, and every stored number equals what the cells
give one by one (bit for bit on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import stored_cells, write_suite

from harness.codecs.base import create_codec
from harness.config import load_suite
from harness.datasets import create_dataset
from harness.runner import RunOptions, make_plan, run

NOT_COMPARED = ["corrupt_s", "encode_s", "finished_at", "memoised"]
SUITE = (
    '[[corruptions]]\ncorruption = "bsc"\nscopes = ["y"]\ngrid = { ber = [0.0, 3e-3] }\n'
    '[[corruptions]]\ncorruption = "latent_gaussian"\nscopes = ["c_latent"]\ngrid = { sigma = [0.0, 0.3] }\n'
)


@pytest.mark.slow
def test_a_batched_run_stores_the_same_rows_as_one_by_one(tmp_path):
    codecs = '[[codecs]]\ncodec = "rdeic-tiny@low"\nlabel = "tiny"\n'
    suite = write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=SUITE, seeds=3, limit_images=1)
    crop = 'name = "samples"\npreprocessing = "center_crop(size=128)"'
    suite.write_text(suite.read_text().replace('name = "samples"', crop))
    rows = {}
    for batch in (1, 4):
        run(RunOptions(load_suite(str(suite)), tmp_path / f"b{batch}", workers=2, progress=False, batch_size=batch))
        rows[batch] = stored_cells(tmp_path / f"b{batch}").drop(columns=NOT_COMPARED).sort_values("key")
    assert len(rows[1]) == 12 and (rows[1]["status"] == "ok").any()
    assert rows[1].reset_index(drop=True).equals(rows[4].reset_index(drop=True))


def test_a_stacked_batch_keeps_each_items_own_noise_and_hook():
    """The stacked path (what runs on CUDA), forced on the CPU: item i equals its one-by-one decode within a few
    uint8 steps (batched CPU kernels sum in another order), and items with other seeds really differ."""
    codec = create_codec("rdeic-tiny@low")
    ds = create_dataset("samples")
    image = np.ascontiguousarray(ds.load(ds.entries()[1])[:128, :128])
    state = codec.parse(codec.encode(image).data, (128, 128))

    def bump(name, arr):
        return arr + 0.5 if name == "c_latent" else arr

    stacked = codec.decode_batch([state] * 3, [1, 2, 1], [None, None, bump], (128, 128), stack=True)
    single = [codec.decode_state(state, s, h, size=(128, 128)) for s, h in ((1, None), (2, None), (1, bump))]
    for got, want in zip(stacked, single, strict=True):
        assert np.abs(got.astype(int) - want).max() <= 3
    assert np.abs(single[0].astype(int) - single[1]).max() > 3  # the seeds do differ
    assert np.abs(single[0].astype(int) - single[2]).max() > 3  # so does the hooked item
    # the CPU default decodes item by item: bit-identical to single decodes
    default = codec.decode_batch([state] * 3, [1, 2, 1], [None, None, bump], (128, 128))
    assert all(np.array_equal(got, want) for got, want in zip(default, single, strict=True))


def test_device_and_precision_flags_reach_the_codecs_that_have_them(tmp_path):
    codecs = '[[codecs]]\ncodec = "rdeic-tiny@low"\nlabel = "tiny"\n[[codecs]]\ncodec = "jpeg2000"\nlabel = "j"\n'
    bsc = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0] }\n'
    suite = load_suite(str(write_suite(tmp_path / "s.toml", codecs=codecs, corruptions=bsc)))
    plain = make_plan(RunOptions(suite, tmp_path))
    auto = make_plan(RunOptions(suite, tmp_path, device="auto", precision="bf16"))
    assert auto.codecs["tiny"].options.device == "cpu" and auto.codecs["tiny"].options.precision == "bf16"
    # other numbers are other cells: RDEIC's fingerprint changes, JPEG2000 (no such options) does not
    assert auto.fingerprints["tiny"] != plain.fingerprints["tiny"] and auto.fingerprints["j"] == plain.fingerprints["j"]
    tiny = next(c for c in auto.cells if c.codec_label == "tiny")
    assert tiny.codec_options["precision"] == "bf16"  # what rebuilds the codec from the store
