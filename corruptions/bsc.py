"""Binary symmetric channel: every exposed bit flips independently with probability ``ber``.

The mask is a Bernoulli draw per bit, so the number of flips is Binomial(N, ber). (A fixed count
floor(N*ber) is zero for short streams at low BER and is not a channel model.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from corruptions.base import BitstreamCorruption, CorruptionError


class BinarySymmetricChannel(BitstreamCorruption):
    name = "bsc"
    units: ClassVar[dict[str, str]] = {"ber": "flip probability per bit"}

    @dataclass(frozen=True)
    class Params:
        ber: float  # flip probability per bit (0.001 means one in a thousand, not a percent)

    def validate(self) -> None:
        ber = self.params.ber
        if not isinstance(ber, int | float) or not 0.0 <= float(ber) <= 0.5:
            raise CorruptionError(f"bsc: ber is a probability per bit in [0, 0.5], got {ber!r}")

    @classmethod
    def identity_params(cls) -> dict[str, Any]:
        return {"ber": 0.0}

    def flip_mask(self, n_bits: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random(n_bits) < self.params.ber

    def expected_flips(self, n_bits: int) -> float:
        return n_bits * float(self.params.ber)

    def p_error_free(self, n_bits: int) -> float:
        # (1-p)^N computed in log space so long streams at high BER do not underflow to a wrong 1.0
        return math.exp(n_bits * math.log1p(-float(self.params.ber))) if self.params.ber < 1 else 0.0
