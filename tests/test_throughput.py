"""No work done twice (issue #25), counted through a codec that logs every parse and reconstruct.

Each count is derived by hand from the suite below (oracle: the plan's arithmetic, not the harness), and each test
fails on the code before #25 (checked: 20 worker parses instead of 4, 26 reconstructs instead of 18)."""

from __future__ import annotations

import sqlite3
from collections import Counter

import numpy as np
import pytest
import throughput_fakes
from conftest import stored_cells
from guard_fakes import dataset_entry, image_folder, noise, suite_text
from throughput_fakes import calls

from corruptions.latent_noise import LatentGaussian, MaskReplace
from harness.codecs.base import create_codec
from harness.config import load_suite
from harness.execution import is_identity
from harness.hashing import pixels_sha256
from harness.registry import CORRUPTIONS
from harness.runner import RunOptions, make_plan, run

IMAGES = 2
REPLICATES = 2
DECODE_SEEDS = 2


@pytest.fixture(scope="module", autouse=True)
def _fakes() -> None:
    throughput_fakes.register()


def _latent_suite(tmp_path, log) -> str:
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 16, 1), "b.png": noise(16, 24, 2)})
    codec = f'[[codecs]]\ncodec = "fake_counting"\nlabel = "counting"\noptions = {{ log = "{log}" }}\n'
    latent = '[[corruptions]]\ncorruption = "fake_latent_noise"\nscopes = ["image"]\ngrid = { amp = [0, 8] }\n'
    text = suite_text(datasets=dataset_entry(images), codecs=codec, corruptions=latent, seeds=REPLICATES)
    return text.replace("timeout_s = 30\n", f"timeout_s = 30\ndecode_seeds = {DECODE_SEEDS}\n")


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("latent")
    log = tmp / "calls.log"
    suite = tmp / "s.toml"
    suite.write_text(_latent_suite(tmp, log))
    opts = RunOptions(suite=load_suite(str(suite)), out=tmp / "run", workers=2, progress=False)
    result = run(opts)
    return tmp, log, opts, result


def test_latent_cells_of_one_clean_stream_share_one_isolated_parse(latent_run):
    """Worker parses: the controls parse each clean stream once (not once per decode seed), and the latent cells
    of a stream (2 levels x 2 replicates x 2 decode seeds, each its own decode key) share one more parse.
    Expected 2 + 2; before #25: 4 control parses (one per seed) + 16 (one per cell)."""
    _, log, _, result = latent_run
    parses = [c for c in calls(str(log)) if c[0] == "parse" and c[1] == "worker"]
    assert result.planned == IMAGES * 2 * REPLICATES * DECODE_SEEDS == 16
    assert len(parses) == IMAGES + IMAGES, Counter(c[2][:8] for c in parses)
    assert len({c[2] for c in parses}) == IMAGES  # each clean stream: parsed twice (control, cells), no more


def test_the_identity_latent_level_reuses_the_clean_decode(latent_run):
    """Reconstructs: 4 in-process clean decodes (image x seed), 4 control decodes of the isolated parse (one per
    seed) + 2 identity checks (amp = 0 through the hook, one per stream and scope), 8 cells at amp = 8; the 8 cells
    at amp = 0 reuse the clean decode. 18 in all; before #25: 26 (every amp = 0 cell reconstructed again)."""
    _, log, _, _ = latent_run
    reconstructs = [c for c in calls(str(log)) if c[0] == "reconstruct"]
    clean, controls, amp8 = IMAGES * DECODE_SEEDS, IMAGES * DECODE_SEEDS + IMAGES, IMAGES * REPLICATES * DECODE_SEEDS
    assert len(reconstructs) == clean + controls + amp8 == 18


def test_rows_are_what_each_cell_decoded_alone_gives(latent_run):
    """The shared parse and the reused clean decode change no row: every cell's stored output is what decoding
    its stream alone, in-process, with its own seed and its own draw (the cell's RNG) gives."""
    tmp, _, opts, _ = latent_run
    plan = make_plan(opts)
    frame = stored_cells(opts.out).set_index("key")
    with sqlite3.connect(opts.out / "results.sqlite") as db:
        output = dict(db.execute("SELECT c.key, d.output_sha256 FROM cells c JOIN decodes d USING (decode_key)"))
    codec = create_codec("fake_counting", log=str(tmp / "oracle.log"))
    for cell in plan.cells:
        ds, entry = plan.images[cell.image_sha256]
        original = ds.load(entry)
        data = codec.encode(original).data
        corruption = CORRUPTIONS.get(cell.corruption)(**cell.params)
        hook = corruption.hook_for(cell.scope, cell.rng())
        expected = codec.decode_state(codec.parse(data, original.shape[:2]), cell.decode_seed, hook)
        row = frame.loc[cell.key]
        assert row["status"] == "ok"
        assert output[cell.key] == pixels_sha256(expected), (cell.level, cell.replicate, cell.decode_seed)
        if cell.params["amp"] == 0:
            assert np.array_equal(expected, original) and row["metric.psnr"] == np.inf
    outputs = [output[k] for k in frame.index[frame["level"] == "amp=8"]]
    assert len(set(outputs)) == len(outputs) == 8  # every amp = 8 cell got its own draw


def test_only_the_exact_identity_level_counts_as_the_identity():
    """sigma = 0 with a clamp changes the latent: it must be decoded, not taken from the clean decode."""
    assert is_identity(LatentGaussian(sigma=0.0))
    assert is_identity(MaskReplace(fraction=0.0))
    assert not is_identity(LatentGaussian(sigma=0.0, clamp_max=1.0))
    assert not is_identity(LatentGaussian(sigma=0.5))
    assert not is_identity(MaskReplace(fraction=0.0, fill="zeros"))  # not the level the control decodes


def test_the_encode_phase_runs_in_the_workers_and_writes_the_same_streams(tmp_path):
    """Encodes run in the worker pool, one image per task, a rate-matched config in the same task as its reference
    (before #25: every encode in the main process, "encode main" in the log); the streams, and the per-image
    target bpp a rate-matched config was encoded at, are byte for byte those of the in-process encode phase
    (oracle: ``ArtifactSource.prepare`` without a pool, into a fresh cache)."""
    import json

    from harness.artifacts import ArtifactSource
    from harness.cache import ArtifactCache

    log = tmp_path / "calls.log"
    codecs = (
        f'[[codecs]]\ncodec = "fake_counting"\nlabel = "counting"\noptions = {{ log = "{log}" }}\n'
        '[[codecs]]\ncodec = "j2k-plain"\nlabel = "a"\noptions = { target_bpp = 1.0, rate_tolerance = 0.05 }\n'
        '[[codecs]]\ncodec = "j2k-reversible"\nlabel = "b"\nmatch_rate_of = "a"\n'
    )
    bsc = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = { ber = [0.0] }\n'
    text = suite_text(datasets='[[datasets]]\nname = "samples"\nlimit_images = 2\n', codecs=codecs, corruptions=bsc)
    text = text.replace('name = "samples"', 'name = "samples"\npreprocessing = "center_crop(size=96)"')
    suite = tmp_path / "s.toml"
    suite.write_text(text)
    opts = RunOptions(suite=load_suite(str(suite)), out=tmp_path / "run", workers=2, progress=False)
    run(opts)
    encodes = [c[1] for c in calls(str(log)) if c[0] == "encode"]
    assert encodes == ["worker", "worker"]  # one per image, none in the main process
    plan = make_plan(opts)
    ArtifactSource(plan, ArtifactCache(tmp_path / "seq"), None).prepare(list(plan.codecs))
    pooled = {p.parent.name: json.loads(p.read_text()) for p in (opts.out / "cache").glob("*/meta.json")}
    alone = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "seq").glob("*/meta.json")}
    assert len(pooled) == 2 * 3 and pooled.keys() == alone.keys()
    for key, meta in pooled.items():
        assert (meta["stream_sha256"], meta["resolved"]) == (alone[key]["stream_sha256"], alone[key]["resolved"])
    for _ds, entry, prep in plan.chosen:  # b was encoded at a's bpp for that image, in the same task
        art = ArtifactSource(plan, ArtifactCache(opts.out / "cache"), None)
        a = art.encoded(entry.sha256, entry.height, entry.width, prep, "a", None)
        b = art.encoded(entry.sha256, entry.height, entry.width, prep, "b", None)
        assert b.resolved["target_bpp"] == 8.0 * len(a.bitstream.data) / (entry.height * entry.width)
