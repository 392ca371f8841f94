"""Burst errors: a two-state Gilbert–Elliott channel described by what a user can state.

Parameters (all per bit):

* ``ber``: long-run flip probability (stationary average);
* ``mean_burst_bits``: mean length of a stay in the bad state (geometric);
* ``burst_density``: flip probability inside a burst (1.0: every bit of a burst flips);
* ``good_state_ber``: flip probability outside bursts (default 0).

Derived (stored with every cell): with ``r = P(bad -> good) = 1 / mean_burst_bits`` and the stationary
share of bad bits ``pi_bad = (ber - good_state_ber) / (burst_density - good_state_ber)``, the entry rate is
``p = P(good -> bad) = r * pi_bad / (1 - pi_bad)``. The chain starts in its stationary distribution, so
the expected number of flips in ``N`` bits is exactly ``N * ber``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from corruptions.base import BitstreamCorruption, CorruptionError


class GilbertElliott(BitstreamCorruption):
    name = "burst"
    units: ClassVar[dict[str, str]] = {
        "ber": "long-run flip probability per bit",
        "mean_burst_bits": "bits",
        "burst_density": "flip probability per bit inside a burst",
        "good_state_ber": "flip probability per bit outside bursts",
    }

    @dataclass(frozen=True)
    class Params:
        ber: float  # long-run flip probability per bit
        mean_burst_bits: float = 8.0  # mean burst (bad-state) length in bits
        burst_density: float = 1.0  # flip probability per bit inside a burst
        good_state_ber: float = 0.0  # flip probability per bit outside bursts

    def validate(self) -> None:
        p = self.params
        for field_name in ("ber", "burst_density", "good_state_ber"):
            v = getattr(p, field_name)
            if not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
                raise CorruptionError(f"burst: {field_name} is a probability per bit in [0, 1], got {v!r}")
        if not isinstance(p.mean_burst_bits, int | float) or p.mean_burst_bits < 1:
            raise CorruptionError(f"burst: mean_burst_bits must be >= 1, got {p.mean_burst_bits!r}")
        if p.ber > 0 and not p.good_state_ber <= p.ber < p.burst_density:
            raise CorruptionError(
                "burst: need good_state_ber <= ber < burst_density "
                f"(got {p.good_state_ber}, {p.ber}, {p.burst_density})"
            )
        self.chain()  # impossible combinations (P(good->bad) > 1) fail here, before any work

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"ber": 0.0}

    # -- derived chain ------------------------------------------------------------------------------------
    def chain(self) -> dict[str, float]:
        """Transition probabilities and stationary share of the two-state chain."""
        p = self.params
        r = 1.0 / float(p.mean_burst_bits)
        if p.ber == 0:
            return {"p_good_to_bad": 0.0, "p_bad_to_good": r, "pi_bad": 0.0, "h_good": 0.0, "h_bad": 0.0}
        pi_bad = (p.ber - p.good_state_ber) / (p.burst_density - p.good_state_ber)
        q = r * pi_bad / (1.0 - pi_bad)
        if q > 1:
            raise CorruptionError(
                f"burst: ber {p.ber} with mean_burst_bits {p.mean_burst_bits} needs P(good->bad) = {q:.3g} > 1; "
                "use longer bursts or a lower ber"
            )
        return {
            "p_good_to_bad": q,
            "p_bad_to_good": r,
            "pi_bad": pi_bad,
            "h_good": float(p.good_state_ber),
            "h_bad": float(p.burst_density),
        }

    def states(self, n_bits: int, rng: np.random.Generator) -> np.ndarray:
        """Bad-state indicator per bit: alternating geometric sojourns from a stationary start."""
        c = self.chain()
        if n_bits == 0 or c["pi_bad"] == 0:
            return np.zeros(n_bits, dtype=bool)
        start_bad = bool(rng.random() < c["pi_bad"])
        first, second = (
            (c["p_bad_to_good"], c["p_good_to_bad"]) if start_bad else (c["p_good_to_bad"], c["p_bad_to_good"])
        )
        chunks, total = [], 0
        while total < n_bits:  # pairs of (first-state run, other-state run) keep the alternation across chunks
            k = int(n_bits * min(c["p_good_to_bad"], c["p_bad_to_good"])) + 16
            pair = np.stack([rng.geometric(first, size=k), rng.geometric(second, size=k)], axis=1).ravel()
            chunks.append(pair)
            total += int(pair.sum())
        lengths = np.concatenate(chunks)
        labels = np.resize(np.array([start_bad, not start_bad]), lengths.size)
        return np.repeat(labels, lengths)[:n_bits]

    def flip_mask(self, n_bits: int, rng: np.random.Generator) -> np.ndarray:
        c = self.chain()
        bad = self.states(n_bits, rng)
        return rng.random(n_bits) < np.where(bad, c["h_bad"], c["h_good"])

    def expected_flips(self, n_bits: int) -> float:
        return n_bits * float(self.params.ber)

    def p_error_free(self, n_bits: int) -> float:
        """Exact P(no flip in n_bits): forward recursion of the chain, ``v · step^(n-1) · 1``, by squaring
        with every factor kept in log space (long streams reach 1e-300 and below)."""
        if n_bits == 0 or self.params.ber == 0:
            return 1.0
        c = self.chain()
        q, r = c["p_good_to_bad"], c["p_bad_to_good"]
        keep = np.diag([1.0 - c["h_good"], 1.0 - c["h_bad"]])
        v = np.array([1.0 - c["pi_bad"], c["pi_bad"]]) @ keep  # start stationary, first bit not flipped
        power = np.array([[1 - q, q], [r, 1 - r]]) @ keep  # move one bit, then not flipped
        log_v, log_power, e = 0.0, 0.0, n_bits - 1
        while True:
            total = v.sum()
            if total == 0:
                return 0.0
            v, log_v = v / total, log_v + math.log(total)
            if not e:
                return math.exp(log_v)
            if e & 1:
                v, log_v = v @ power, log_v + log_power
            e >>= 1
            if e:
                power = power @ power
                m = power.max()
                if m == 0:
                    return 0.0
                power, log_power = power / m, 2 * log_power + math.log(m)

    def extra(self) -> dict[str, Any]:
        return self.chain()
