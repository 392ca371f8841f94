from __future__ import annotations

import numpy as np
import pytest

from corruptions.base import CorruptionError
from corruptions.fec import FECConfig, ReedSolomonFEC


def _data(n: int) -> bytes:
    return np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.mark.parametrize("n", [0, 1, 219, 223, 5000])
def test_round_trip_and_overhead(n):
    fec = ReedSolomonFEC(FECConfig(depth=3))
    data = _data(n)
    protected = fec.encode(data)
    groups = -(-(n + 4) // (223 * 3))
    assert len(protected) == groups * 3 * 255
    out = fec.decode(protected)
    assert out.data == data and out.failed_codewords == 0 and out.codewords == groups * 3


def _codeword_positions(fec: ReedSolomonFEC, n_bytes: int, which: int) -> np.ndarray:
    """Byte positions of codeword ``which`` in the interleaved stream."""
    c = fec.config
    index = np.arange(n_bytes).reshape(-1, c.n, c.depth).transpose(0, 2, 1).reshape(-1, c.n)
    return index[which]


def test_corrects_exactly_t_errors_per_codeword_and_fails_beyond():
    fec = ReedSolomonFEC(FECConfig())
    data = _data(2000)
    protected = np.frombuffer(fec.encode(data), dtype=np.uint8)
    pos = _codeword_positions(fec, protected.size, 2)
    hit16, hit17 = protected.copy(), protected.copy()
    hit16[pos[:16]] ^= 0xFF
    hit17[pos[:17]] ^= 0xFF
    assert fec.decode(hit16.tobytes()).data == data
    out = fec.decode(hit17.tobytes())
    assert out.failed_codewords == 1 and out.data != data


@pytest.mark.parametrize("depth", [1, 4])
def test_interleaving_spreads_a_burst(depth):
    fec = ReedSolomonFEC(FECConfig(depth=depth))
    data = _data(4000)
    protected = np.frombuffer(fec.encode(data), dtype=np.uint8)
    start = 300
    ok, bad = protected.copy(), protected.copy()
    ok[start : start + 16 * depth] ^= 0xFF  # I*t consecutive bytes: at most t per codeword
    bad[start : start + 16 * depth + 1] ^= 0xFF  # one more byte: some codeword gets t+1
    assert fec.decode(ok.tobytes()).data == data
    assert fec.decode(bad.tobytes()).failed_codewords >= 1


def test_config_validation_and_backend_recorded():
    with pytest.raises(CorruptionError):
        FECConfig(n=255, k=224)  # odd parity
    with pytest.raises(CorruptionError):
        FECConfig(depth=0)
    with pytest.raises(CorruptionError):
        FECConfig(on_failure="ignore")
    assert ReedSolomonFEC(FECConfig()).backend in {"creedsolo", "reedsolo (pure Python)"}
