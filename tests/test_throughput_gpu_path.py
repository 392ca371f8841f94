"""The GPU path of issue #25, checked on the CPU with RDEIC-tiny: an item with an absurd latent leaves a stacked
batch by itself (before: the whole batch fell back to item-by-item decoding, ~3 % of batches of 8 on
``bit_errors``), and the others stay stacked with their own seeds and hooks."""

from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import InvalidOutput, create_codec
from harness.datasets import create_dataset

SIZE = (128, 128)


@pytest.fixture(scope="module")
def tiny():
    codec = create_codec("rdeic-tiny@low")
    ds = create_dataset("samples")
    image = np.ascontiguousarray(ds.load(ds.entries()[1])[:128, :128])
    return codec, codec.parse(codec.encode(image).data, SIZE)


def _count_synthesis(codec, monkeypatch) -> list[int]:
    """Batch sizes of every synthesis pass (the first stacked stage)."""
    model = codec.model().preprocess_model
    original, sizes = model.synthesis, []

    def counted(y):
        sizes.append(int(y.shape[0]))
        return original(y)

    monkeypatch.setattr(model, "synthesis", counted)
    return sizes


@pytest.mark.parametrize("where", ["y_hat", "c_latent"])
def test_an_absurd_latent_leaves_the_stack_alone(tiny, monkeypatch, where):
    """Item 1's latent is absurd (1e6 at ``where``): it alone gets ``invalid_output``; items 0 and 2 are decoded in
    one stack of 2, bit for bit what a stack of those two alone gives (the oracle: the same call without item 1).
    Before #25: a y_hat failure made three more synthesis passes (the item-by-item fallback); a c_latent one too."""
    codec, state = tiny

    def absurd(name, arr):
        return arr * 0 + 1e6 if name == where else arr

    sizes = _count_synthesis(codec, monkeypatch)
    got = codec.decode_batch([state] * 3, [1, 2, 3], [None, absurd, None], SIZE, stack=True)
    assert isinstance(got[1], InvalidOutput) and where in str(got[1])
    assert sizes == ([2] if where == "y_hat" else [3])  # one stacked pass; nothing decoded one by one
    want = codec.decode_batch([state] * 2, [1, 3], [None, None], SIZE, stack=True)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[2], want[1])


def test_a_batch_of_only_absurd_items_decodes_nothing(tiny, monkeypatch):
    codec, state = tiny
    sizes = _count_synthesis(codec, monkeypatch)
    got = codec.decode_batch([state] * 2, [1, 2], [lambda n, a: a + np.inf] * 2, SIZE, stack=True)
    assert all(isinstance(g, InvalidOutput) for g in got) and sizes == []


def test_one_item_still_raises(tiny):
    """``reconstruct`` (one item, what the CPU path runs) raises as before: decode_state records the status."""
    codec, state = tiny
    with pytest.raises(InvalidOutput, match="y_hat"):
        codec.reconstruct(state, 1, lambda n, a: a + np.inf)


def test_bench_gpu_measures_what_the_harness_would_store():
    """benchmarks/bench_gpu.py on the CPU with RDEIC-tiny (its correctness; the figures need a GPU): every item's
    output is the stacked decode of its batch with its seed, and its PSNR and MS-SSIM (computed batched on the
    device) are what the harness's own ``psnr`` and ``ms_ssim_rgb`` metrics give for that output."""
    import hashlib
    import sys

    from conftest import ROOT

    from harness.metrics import create_metric

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu

    argv = ["--preset", "rdeic-tiny@low", "--device", "cpu", "--precision", "fp32", "--size", "192x192"]
    result = bench_gpu.main([*argv, "--images", "3", "--batch", "2", "--batches", "2"])
    assert result["images"] == 4 and result["images_per_s"] > 0 and result["gpu_idle_share"] is None
    codec = create_codec("rdeic-tiny@low")
    images = bench_gpu.test_images(3, 192, 192)
    states = [codec.parse_checked(codec.encode_stream(im).data, (192, 192)) for im in images]
    psnr, msssim = create_metric("psnr"), create_metric("ms_ssim_rgb")
    items = result["items"]
    for start in (0, 2):  # the two timed batches: images [0, 1] then [2, 0], seeds 0..3
        batch = items[start : start + 2]
        idx, seeds = [it["image"] for it in batch], [it["seed"] for it in batch]
        assert seeds == [start, start + 1] and idx == [start % 3, (start + 1) % 3]
        outs = codec.decode_batch([states[i] for i in idx], seeds, [None, None], (192, 192), stack=True)
        for it, out, i in zip(batch, outs, idx, strict=True):
            assert it["sha256"] == hashlib.sha256(out[:192, :192].tobytes()).hexdigest()
            assert it["psnr"] == pytest.approx(psnr(out[:192, :192], images[i]), abs=1e-9)
            assert it["ms_ssim_rgb"] == pytest.approx(msssim(out[:192, :192], images[i]), abs=1e-5)
