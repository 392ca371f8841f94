"""Same command, same rows on any machine: every shipped learned codec's entropy side (encode, parse) gives the
same bytes and the same parsed state whatever torch thread count the process runs with.

The oracle is the codec run at other thread counts, through what a run calls: ``Codec.encode_stream`` (what
``harness.artifacts`` encodes with in-process), an ``IsolatedWorker`` encode (the pooled encode phase),
``Codec.parse_checked`` in the main process (the clean decode) and an ``IsolatedWorker`` parse (every cell).
Before the entropy side was pinned, each image below gave other bytes or another parsed state at 1, 2 or 4
threads (measured on the bundled samples: RDEIC-tiny's ``y_hat`` differed on
all ten, its bytes on hubble.png at the low rate and rocket.png at the high one; the VAE-only latent on all ten;
LDM-RSIC-tiny's parse on all ten; DICM-tiny's bytes and parse on chelsea.png).
"""

from __future__ import annotations

import numpy as np
import pytest

from harness.codecs.base import ENTROPY_THREADS, create_codec
from harness.datasets import create_dataset
from harness.status import Status
from harness.workers import IsolatedWorker, Limits

THREADS = (1, 2, 4)
#: (codec, bundled sample whose entropy side moved with the thread count before the pin)
CASES = [
    ("rdeic-tiny@low", "hubble.png"),
    ("rdeic-tiny@high", "rocket.png"),
    ("rdeic-vae-tiny", "flower.png"),
    ("ldm-rsic-tiny", "flower.png"),
    ("elic-tiny", "camera.png"),
    ("dicm@tiny", "chelsea.png"),
    ("j2k+men-tiny", "flower.png"),
]


def _image(name: str) -> np.ndarray:
    ds = create_dataset("samples")
    return ds.load(next(e for e in ds.index() if e.id == name))


def _arrays(state: dict) -> dict[str, np.ndarray]:
    """The arrays of a parsed state (timings and other scalars left out)."""
    return {k: v for k, v in state.items() if isinstance(v, np.ndarray)}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "image_id"), CASES)
def test_entropy_side_is_the_same_at_1_2_and_4_threads(name: str, image_id: str) -> None:
    import torch

    codec = create_codec(name)
    image = _image(image_id)
    size = image.shape[:2]
    before = torch.get_num_threads()
    worker = IsolatedWorker()
    streams: dict[int, bytes] = {}
    here: dict[int, dict[str, np.ndarray]] = {}
    there: dict[int, dict[str, np.ndarray]] = {}
    try:
        for n in THREADS:
            torch.set_num_threads(n)
            streams[n] = codec.encode_stream(image).data
            here[n] = _arrays(codec.parse_checked(streams[1], size))
            outcome = worker.parse(codec.spec(), streams[1], size, Limits(cpu_s=600, wall_s=1200, memory_bytes=4 << 30))
            assert outcome.status is Status.OK, outcome
            there[n] = _arrays(outcome.state or {})
            assert torch.get_num_threads() == n  # the pin gives the process its own count back
        # the encode phase runs in the decode workers (at the worker's own default count, not this process's)
        encoded = worker.encode([codec.spec()], [None], [None], image)
        assert encoded.status is Status.OK, encoded
        worker_stream = encoded.state["streams"][0][0]
    finally:
        torch.set_num_threads(before)
        worker.close()
    assert here[1], "the parsed state holds no arrays to compare"
    for n in THREADS[1:]:
        assert streams[n] == streams[1], f"{name}: encode at {n} threads wrote other bytes than at 1"
    assert worker_stream == streams[1], f"{name}: the worker's encode wrote other bytes than the main process's"
    for n in THREADS:
        for states, where in ((here, "in-process"), (there, "worker")):
            assert states[n].keys() == here[1].keys()
            for key, value in states[n].items():
                assert np.array_equal(value, here[1][key]), f"{name}: {where} parse at {n} threads: {key} differs"


def test_the_pinned_count_is_part_of_every_learned_codec_fingerprint() -> None:
    """A stream encoded at another count is another result: it must not be found under the same cell keys."""
    import harness.codecs.base as base

    codec = create_codec("rdeic-tiny@low")
    assert codec.entropy_threads == ENTROPY_THREADS
    pinned = codec.fingerprint()
    type(codec).entropy_threads = ENTROPY_THREADS + 1
    try:
        assert codec.fingerprint() != pinned
    finally:
        del type(codec).entropy_threads  # back to LearnedCodec's
    assert codec.fingerprint() == pinned
    assert create_codec("jpeg2000").entropy_threads is None  # no torch on its entropy side: nothing to pin
    assert base.LearnedCodec.entropy_threads == ENTROPY_THREADS


def test_the_pin_restores_the_process_count_after_an_exception() -> None:
    import torch

    from harness.codecs.base import pinned_torch_threads

    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    torch.set_num_threads(other)
    try:
        with pytest.raises(RuntimeError), pinned_torch_threads(1):
            assert torch.get_num_threads() == 1
            raise RuntimeError("a parse that fails")
        assert torch.get_num_threads() == other
    finally:
        torch.set_num_threads(before)
