"""One direct test per methodology guard (issue #16 §3): each asserts the value the guard exists for, so that
removing the guard fails a test here, not only the golden ci.csv. Each test names, in a comment, the mutation
it was checked against (in a scratch copy of the tree)."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import stored_cells
from fake_codecs import HEADER, AdapterCodec, FakeCodec, seed_marked
from guard_fakes import image_folder, noise, psnr

from harness.cli import main
from harness.config import load_suite
from harness.hashing import pixels_sha256, sha256_bytes
from harness.runner import ControlError, RunOptions, make_plan, run

BER0 = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = { ber = [0.0] }\n'


# -- helpers -----------------------------------------------------------------------------------------------------
def folder(path: Path, extra: str = "") -> str:
    return f'[[datasets]]\nname = "folder"\npath = "{path}"\n{extra}'


def codec(name: str, label: str | None = None, options: str = "") -> str:
    return f'[[codecs]]\ncodec = "{name}"\nlabel = "{label or name}"\noptions = {{ {options} }}\n'


def suite_file(path: Path, *, datasets: str, codecs: str, corruptions: str = BER0, seeds: int = 1, top: str = ""):
    path.write_text(
        f'name = "guard"\nseed = 11\nseeds = {seeds}\nmetrics = ["psnr"]\ntimeout_s = 30\n{top}\n'
        f"{datasets}\n{codecs}\n{corruptions}"
    )
    return path


def run_suite(suite: Path, out: Path, workers: int = 2):
    return run(RunOptions(suite=load_suite(str(suite)), out=out, workers=workers, progress=False))


def query(out: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(out / "results.sqlite") as db:
        return db.execute(sql).fetchall()


def fake_stream_bytes(h: int, w: int) -> int:
    """Bytes of a FakeCodec file: a 40-byte header (shape + payload sha256) and the raw pixels."""
    return HEADER.size + 3 * h * w


def cache_entries(out: Path) -> list[Path]:
    return [d for d in (out / "cache").iterdir() if d.is_dir() and not d.name.startswith(".")]


# -- 1. the weights hash is in the codec fingerprint ---------------------------------------------------------------
# Mutation: drop "weights": self.weights_hash() from Codec.fingerprint (harness/codecs/base.py).
def test_same_weights_path_with_other_content_is_new_work_not_already_done(tmp_path):
    weights = tmp_path / "w.bin"
    images = image_folder(tmp_path / "img", {"a.png": noise(24, 32, 1), "b.png": noise(32, 24, 2)})
    suite = suite_file(
        tmp_path / "s.toml", datasets=folder(images), codecs=codec("fake_weights", options=f'weights = "{weights}"')
    )
    out = tmp_path / "run"
    weights.write_bytes(b"weights A")
    first = run_suite(suite, out)
    assert first.computed == 2 and first.already_done == 0
    weights.write_bytes(b"weights B")  # same file name, same options: only the content differs
    second = run_suite(suite, out)
    assert second.already_done == 0 and second.computed == 2, "other weights were taken for finished cells"
    cells = stored_cells(out)
    assert len(cells) == 4 and cells["codec_fingerprint"].nunique() == 2
    assert set(cells["weights_hash"]) == {sha256_bytes(b"weights A"), sha256_bytes(b"weights B")}
    assert cells["codec_config"].nunique() == 1  # the config alone cannot tell them apart
    weights.write_bytes(b"weights A")  # back to the first weights: their cells are found again
    assert run_suite(suite, out).already_done == 2


# Mutation: the same (drop the weights hash from Codec.fingerprint): both RDEIC configs get one fingerprint.
def test_rdeic_weights_files_are_told_apart_by_content_not_path(tmp_path):
    from harness.codecs.rdeic.checkpoint import save_safetensors
    from harness.codecs.rdeic.config import TEST
    from harness.codecs.rdeic.model import RDEICModel

    # whole-model files of the `test` config (the pre-flight checks their names and shapes before planning); b
    # differs from a in one tensor's values only, so only the content can tell them apart
    a, b, a_again = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "copy_of_a.safetensors"
    state = RDEICModel(TEST, seed=5).state_dict()
    save_safetensors(state, a)
    first = next(k for k, v in state.items() if v.is_floating_point())
    save_safetensors({**state, first: state[first] + 1}, b)
    a_again.write_bytes(a.read_bytes())
    images = image_folder(tmp_path / "img", {"a.png": noise(64, 64, 3)})
    plans = {}
    for f in (a, b, a_again):
        rdeic = codec("rdeic", "rdeic", f'config = "test", weights = "{f}"')
        suite = suite_file(tmp_path / f"{f.stem}.toml", datasets=folder(images), codecs=rdeic)
        plans[f.name] = make_plan(RunOptions(load_suite(str(suite)), tmp_path / "unused"))
    (ca,), (cb,), (cc,) = (p.cells for p in plans.values())
    assert ca.codec_config == cb.codec_config  # paths are not part of the config: only the weights hash is
    assert ca.weights_hash != cb.weights_hash and ca.codec_fingerprint != cb.codec_fingerprint
    assert ca.key != cb.key and ca.encode_key != cb.encode_key
    assert cc.key == ca.key  # the same weights under another name are the same cell


# -- 2. the runtime BER-0 byte-identity control ------------------------------------------------------------------
# Mutation: delete the `raise ControlError(... changed the stream ...)` branch in run_controls (harness/controls.py).
def test_a_channel_whose_identity_level_changes_the_stream_stops_the_run(tmp_path):
    images = image_folder(tmp_path / "img", {"a.png": noise(16, 16, 4), "b.png": noise(16, 16, 5)})
    leaky = '[[corruptions]]\ncorruption = "fake_leaky_channel"\nscopes = ["payload"]\ngrid = { ber = [0.0, 0.01] }\n'
    suite = suite_file(tmp_path / "s.toml", datasets=folder(images), codecs=codec("fake"), corruptions=leaky)
    message = r"control: fake_leaky_channel at ber=0 changed the stream of fake on a\.png"
    with pytest.raises(ControlError, match=message):
        run_suite(suite, tmp_path / "run")
    assert len(stored_cells(tmp_path / "run")) == 0  # stopped before any cell was stored


# -- 3. the decode seed in the decode memo key (and in the clean-decode key, and in the cell key) -----------------
SEEDED_SIZES = {"a.png": (20, 28), "b.png": (24, 16)}


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory):
    """fake_seed_dependent (the decode seed changes pixel [0, 0]) with 2 decode seeds, 2 levels, 2 replicates."""
    tmp = tmp_path_factory.mktemp("seeded")
    originals = {name: noise(h, w, i + 10) for i, (name, (h, w)) in enumerate(SEEDED_SIZES.items())}
    images = image_folder(tmp / "img", originals)
    bsc = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = { ber = [0.0, 0.001] }\n'
    suite = suite_file(
        tmp / "s.toml",
        datasets=folder(images),
        codecs=codec("fake_seed_dependent"),
        corruptions=bsc,
        seeds=2,
        top="decode_seeds = 2",
    )
    out = tmp / "run"
    result = run_suite(suite, out)
    return suite, out, result, originals


# Mutation: drop "decode_seed" from harness.cells.decode_key (the memo key): seed 1 reuses seed 0's decode.
def test_each_decode_seed_of_the_same_stream_is_decoded_not_memoised_onto_the_other(seeded_run):
    _, out, _, originals = seeded_run
    rows = query(
        out,
        "SELECT c.image_id, c.decode_seed, c.decode_key, d.output_sha256, c.metrics FROM cells c "
        "JOIN decodes d USING (decode_key) WHERE c.level = 'ber=0'",
    )
    assert len(rows) == 2 * 2 * 2  # images x replicates x decode seeds, all of the same clean stream per image
    for image_id, seed, _, output_sha, metrics in rows:
        expected = seed_marked(originals[image_id], seed)
        assert output_sha == pixels_sha256(expected), f"{image_id} seed {seed} got another seed's decode"
        assert json.loads(metrics)["psnr"] == pytest.approx(psnr(expected, originals[image_id]), rel=1e-12)
    keys = {(image_id, seed): dkey for image_id, seed, dkey, _, _ in rows}
    assert len(set(keys.values())) == 4  # one decode per (stream, decode seed), shared by the replicates
    assert len({r[0] for r in query(out, "SELECT decode_key FROM decodes")} & set(keys.values())) == 4
    cells = stored_cells(out)
    clean_psnr = cells[cells["level"] == "ber=0"].groupby(["image_id", "decode_seed"])["metric.clean_psnr"].agg(set)
    for (image_id, seed), values in clean_psnr.items():
        (value,) = values  # one clean decode per (image, decode seed), whatever the replicate
        assert value == pytest.approx(psnr(seed_marked(originals[image_id], seed), originals[image_id]), rel=1e-12)


# Mutation: ArtifactCache keeps one clean decode per encode: "clean.npy" instead of f"clean-{decode_seed}.npy" in
# harness/cache.py (the decode seed dropped from the clean-decode key). Checked without the run's controls, which
# would also notice it later (the isolated decode of seed 1 then differs from the "clean decode").
def test_each_decode_seed_has_its_own_clean_decode(tmp_path):
    from harness.artifacts import ArtifactSource
    from harness.cache import ArtifactCache

    originals = {name: noise(h, w, i + 10) for i, (name, (h, w)) in enumerate(SEEDED_SIZES.items())}
    images = image_folder(tmp_path / "img", originals)
    suite = suite_file(
        tmp_path / "s.toml", datasets=folder(images), codecs=codec("fake_seed_dependent"), top="decode_seeds = 2"
    )
    plan = make_plan(RunOptions(load_suite(str(suite)), tmp_path / "run"))
    cache = ArtifactCache(tmp_path / "cache")
    assert ArtifactSource(plan, cache, None).prepare(list(plan.codecs)) == []
    expected_cells = [("a.png", 0), ("a.png", 1), ("b.png", 0), ("b.png", 1)]
    assert sorted((c.image_id, c.decode_seed) for c in plan.cells) == expected_cells
    for cell in plan.cells:
        original = originals[cell.image_id]
        expected = seed_marked(original, cell.decode_seed)
        assert np.array_equal(cache.load_clean(cell.encode_key, cell.decode_seed), expected), cell.image_id
        art = ArtifactSource(plan, cache, None).get(cell)  # a fresh source: read back from the cache
        assert np.array_equal(art.clean[cell.decode_seed], expected)
        assert art.clean_metrics[cell.decode_seed]["psnr"] == pytest.approx(psnr(expected, original), rel=1e-12)


# 8. Mutation: drop "decode_seed" from Cell.key_fields (harness/cells.py): cells of the two decode seeds collapse.
def test_cells_that_differ_only_by_decode_seed_have_their_own_keys_and_rows(seeded_run):
    suite, out, result, _ = seeded_run
    plan = make_plan(RunOptions(load_suite(str(suite)), out))
    assert len(plan.cells) == 2 * 2 * 2 * 2  # images x levels x replicates x decode seeds
    one = plan.cells[0]
    assert dataclasses.replace(one, decode_seed=1 - one.decode_seed).key != one.key
    cells = stored_cells(out)
    assert result.computed == len(cells) == 16 and cells["key"].nunique() == 16
    per_cell = cells.groupby(["image_id", "level", "replicate"])["decode_seed"].agg(sorted)
    assert all(seeds == [0, 1] for seeds in per_cell)


# -- 4. bpp on original pixels, not padded ones ---------------------------------------------------------------------
# Mutation: records.cell_row computes "bpp" over codec.decoded_shape(...) pixels (the padded ones).
def test_bpp_counts_the_original_pixels_not_the_codecs_padding(tmp_path):
    from harness.codecs.base import create_codec

    sizes = {"a.png": (70, 90), "b.png": (33, 100)}  # padded to 128 x 128 and 64 x 128
    padded = {"a.png": (128, 128), "b.png": (64, 128)}
    rdeic = create_codec("rdeic", config="test", allow_random_weights=True)
    assert all(rdeic.decoded_shape(*sizes[k])[:2] == padded[k] for k in sizes)  # the fake pads as RDEIC does
    originals = {name: noise(h, w, i) for i, (name, (h, w)) in enumerate(sizes.items())}
    images = image_folder(tmp_path / "img", originals)
    suite = suite_file(tmp_path / "s.toml", datasets=folder(images), codecs=codec("fake_padding"))
    run_suite(suite, tmp_path / "run")
    cells = stored_cells(tmp_path / "run").set_index("image_id")
    assert sorted(cells.index) == ["a.png", "b.png"]
    for name, (h, w) in sizes.items():
        row = cells.loc[name]
        n = fake_stream_bytes(h, w)
        assert (row["height"], row["width"], row["bytes_total"]) == (h, w, n)
        assert row["bpp"] == pytest.approx(8 * n / (h * w), rel=1e-12)
        assert row["header_bpp"] == pytest.approx(8 * HEADER.size / (h * w), rel=1e-12)
        assert row["padded_bpp"] == pytest.approx(8 * n / math.prod(padded[name]), rel=1e-12)
        assert row["bpp"] > row["padded_bpp"] * 1.5
        assert row["metric.psnr"] == math.inf  # padding cropped before the metric


# -- 5. the OOD adapter bitstream guard --------------------------------------------------------------------------
OOD_SUITE = """name = "ood_guard"
seed = 3
seeds = 1
metrics = ["psnr"]
timeout_s = 30

[finetune]
codec = "fake_adapter"
train = {{ steps = 1 }}

[[finetune.datasets]]
name = "folder"
path = "{path}"
partition = {{ train = 0.6, val = 0.2, test = 0.2, seed = 0 }}

[[corruptions]]
corruption = "bsc"
scopes = ["all"]
grid = {{ ber = [0.0] }}
"""


# Mutations: (a) delete the `if failed: ... return 3` block of cli.run_finetune_suite; (b) `differ = []` in
# ood.check_bitstreams; (c) failed_bitstream_checks ignores c["different"].
@pytest.mark.parametrize(
    ("adapter_content", "mode", "preserving", "code"),
    [
        (b"changes-stream", "control", True, 3),  # a bitstream-preserving mode that changed the streams: stop
        (b"same-stream", "control", True, 0),  # identical streams: the run goes on
        (b"changes-stream", "full", False, 0),  # mode full changes the rate by design: reported, not asserted
    ],
)
def test_an_adapter_mode_that_changes_bitstreams_fails_the_ood_suite(
    tmp_path, monkeypatch, capsys, adapter_content, mode, preserving, code
):
    import harness.cli
    import harness.ood
    import reports.tables

    images = image_folder(tmp_path / "img", {f"{i}.png": noise(16, 16, 20 + i) for i in range(5)})
    suite = tmp_path / "ood.toml"
    suite.write_text(OOD_SUITE.format(path=images))

    def fake_finetune(spec, ood, seed, out, progress, folder=None):  # training itself is not under test here
        path = out / "adapters" / ood.name / "adapter.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(adapter_content)
        return {"mode": mode, "bitstream_preserving": preserving, "adapter_sha256": sha256_bytes(adapter_content)}

    written: list = []
    monkeypatch.setattr(harness.ood, "finetune_one", fake_finetune)
    monkeypatch.setattr(harness.ood, "write_outputs", lambda *args: written.append(args[-1]))
    monkeypatch.setattr(reports.tables, "write_summary", lambda *a, **k: "")
    monkeypatch.setattr(harness.cli, "_write_report", lambda out: None)
    out = tmp_path / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress", "--workers", "1"]) == code
    err = capsys.readouterr().err
    test_images = len(query(out, "SELECT DISTINCT image_sha256 FROM cells WHERE codec_label = 'fake_adapter'"))
    assert test_images >= 1
    # the streams really are what the case says (so the check compares real artifacts)
    streams = query(out, "SELECT codec_label, image_sha256, stream_sha256 FROM cells")
    by_image: dict = {}
    for label, image, stream in streams:
        by_image.setdefault(image, {})[label] = stream
    changed = adapter_content.startswith(b"changes-stream")
    assert all((s["fake_adapter"] != s["fake_adapter+folder"]) == changed for s in by_image.values())
    if code == 3:
        assert "control failed, no table written: an adapter mode changed or lost bitstreams" in err
        assert f"'different': {test_images}" in err and "'dataset': 'folder'" in err
        assert not written
    else:
        ((check,),) = written
        assert check["images_compared"] == test_images and check["must_be_identical"] == preserving
        assert check["different"] == (test_images if changed else 0)


def test_the_fake_adapter_codec_changes_only_its_stream_not_its_decode(tmp_path):
    """The stand-in used above decodes both streams to the same pixels (what differs is only the bytes)."""
    tag = tmp_path / "adapter.safetensors"
    tag.write_bytes(b"changes-stream")
    image = noise(8, 8, 0)
    base, tuned = AdapterCodec(), AdapterCodec(adapter=str(tag))
    assert base.encode(image).data != tuned.encode(image).data
    for c in (base, tuned):
        assert np.array_equal(c.decode(c.encode(image).data, (8, 8)), image)


# -- 6. the OpenJPEG record in provenance -------------------------------------------------------------------------
# Mutation: drop **openjpeg from provenance.collect (harness/provenance.py). This test never skips: a run that
# encoded with JPEG2000 must say which OpenJPEG did it.
def test_a_jpeg2000_run_records_the_openjpeg_that_served_it(tmp_path):
    from harness.codecs.base import create_codec
    from harness.openjpeg import openjpeg_info
    from harness.store import ResultStore

    ramp = np.linspace(0, 255, 64 * 64 * 3).reshape(64, 64, 3).astype(np.uint8)  # smooth: JPEG2000 codes it well
    images = image_folder(tmp_path / "img", {"a.png": ramp})
    j2k = codec("jpeg2000", options="target_bpp = 1.0")
    suite = suite_file(tmp_path / "s.toml", datasets=folder(images), codecs=j2k)
    run_suite(suite, tmp_path / "run", workers=1)
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        prov = store.provenance()
    finally:
        store.close()
    info = openjpeg_info()
    assert "openjpeg_error" not in prov
    for key in ("openjpeg_version", "openjpeg_path", "openjpeg_origin", "glymur_version"):
        assert prov.get(key) == info[key], f"provenance {key}: {prov.get(key)!r}, loaded: {info[key]!r}"
    assert "libopenjp2" in prov["openjpeg_path"]
    assert create_codec("jpeg2000").library_versions()["openjpeg"] == prov["openjpeg_version"]


# -- 7. images keyed by content, not by file name -----------------------------------------------------------------
# Mutations: (a) Cell.key_fields "image" holds the file name (basename of image_id) instead of image_sha256: the
# two house.png collapse into one cell and the twin gets its own; (b) the encode key (Cell.encode_key and
# ArtifactSource._key) built from the file name instead of the pixel hash: the second house.png reuses the
# first one's cached stream and clean decode.
def test_images_are_keyed_by_their_pixels_not_their_file_names(tmp_path):
    x, z = noise(24, 24, 40), noise(24, 24, 41)
    first = image_folder(tmp_path / "A", {"house.png": x, "twin_of_house.png": x})
    second = image_folder(tmp_path / "B", {"house.png": z})
    suite = suite_file(tmp_path / "s.toml", datasets=folder(first) + folder(second), codecs=codec("fake"))
    out = tmp_path / "run"
    run_suite(suite, out)
    cells = stored_cells(out)
    assert set(cells["image_sha256"]) == {pixels_sha256(x), pixels_sha256(z)}
    assert len(cells) == 2  # house.png and its twin (same pixels): one cell; the other house.png: its own
    expected_stream = {pixels_sha256(p): sha256_bytes(FakeCodec().encode(p).data) for p in (x, z)}
    for _, row in cells.iterrows():
        assert row["stream_sha256"] == expected_stream[row["image_sha256"]]
        assert row["metric.psnr"] == math.inf
    assert len(cache_entries(out)) == 2  # one encode per content, whatever the names


# -- 9. FEC parity is its own column, never folded into bpp ---------------------------------------------------------
# Mutation: records.cell_row "bpp" = 8 * (bytes + FEC overhead bytes) / pixels.
def test_fec_parity_is_reported_beside_bpp_not_inside_it(tmp_path):
    h, w = 24, 40
    images = image_folder(tmp_path / "img", {"a.png": noise(h, w, 50), "b.png": noise(h, w, 51)})
    fec = (
        '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0, 0.001] }\n'
        'fec = ["none", { n = 255, k = 223, depth = 1 }, { n = 255, k = 223, depth = 4 }]\n'
    )
    suite = suite_file(tmp_path / "s.toml", datasets=folder(images), codecs=codec("fake"), corruptions=fec)
    run_suite(suite, tmp_path / "run")
    cells = stored_cells(tmp_path / "run")
    assert len(cells) == 2 * 2 * 3  # images x levels x (none, depth 1, depth 4)
    n = fake_stream_bytes(h, w)
    assert (cells["bytes_total"] == n).all()
    for _, row in cells.iterrows():
        assert row["bpp"] == pytest.approx(8 * n / (h * w), rel=1e-12), f"bpp with FEC {row['fec']}"  # the file
        fec_layer = json.loads(row["fec"])
        if fec_layer is None:
            assert row["fec_overhead_bpp"] == 0.0
            continue
        depth = fec_layer["depth"]
        transmitted = -(-(n + 4) // (223 * depth)) * depth * 255  # 4-byte length frame, whole interleaved groups
        assert row["fec_overhead_bpp"] == pytest.approx(8 * (transmitted - n) / (h * w), rel=1e-12)
        assert row["fec_overhead_bpp"] > 0


# -- 10. the clean-round-trip stop: wrong size, NaN --------------------------------------------------------------
# Mutations: (a) ArtifactSource._clean decodes without the size check
# (codec.decode_state(codec.parse_checked(data, size), seed) instead of codec.decode(data, size, seed)): the wrong
# size is cropped away and only the later isolated-decode control stops the run, with another message;
# (b) the `except InvalidOutput: raise ControlError` in ArtifactSource._clean removed; (c) the isfinite check in
# harness.codecs.base.to_output removed (NaN is cast to a plausible pixel and the run goes on).
@pytest.mark.parametrize(
    ("name", "why"),
    [("fake_wrong_size_clean", r"shape \(32, 40, 3\), expected \(24, 32, 3\)"), ("fake_nan_clean", "non-finite")],
    ids=["wrong_size", "nan"],
)
def test_a_clean_decode_of_the_wrong_size_or_with_nan_stops_the_suite(tmp_path, capsys, name, why):
    images = image_folder(tmp_path / "img", {"a.png": noise(24, 32, 60), "b.png": noise(24, 32, 61)})
    suite = suite_file(tmp_path / "s.toml", datasets=folder(images), codecs=codec(name))
    message = rf"{name} on a\.png: clean decode is invalid: .*{why}"
    with pytest.raises(ControlError, match=message):
        run_suite(suite, tmp_path / "run")
    assert len(stored_cells(tmp_path / "run")) == 0
    out = tmp_path / "cli"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 3
    assert "control failed, no table written" in capsys.readouterr().err
    assert not (out / "summary.csv").exists() and not (out / "summary.md").exists()
    assert len(stored_cells(out)) == 0


def test_the_same_image_decoded_cleanly_passes_the_stop(tmp_path):
    """The control case of the test above: the plain fake codec on the same images runs and stores its cells."""
    images = image_folder(tmp_path / "img", {"a.png": noise(24, 32, 60), "b.png": noise(24, 32, 61)})
    suite = suite_file(tmp_path / "s.toml", datasets=folder(images), codecs=codec("fake"))
    assert run_suite(suite, tmp_path / "run").computed == 2
