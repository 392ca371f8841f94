"""Base classes of corruption plugins.

A plugin declares where it acts:

* ``bitstream``: bytes -> bytes, restricted to the byte ranges of a scope (``all``, ``payload``,
  ``header`` or a codec-named segment). The harness resolves the scope to ranges from the codec's segment
  map; the plugin only sees the exposed bytes, concatenated in stream order.
* ``latent``: array -> array at a codec-declared hook point inside ``reconstruct`` (``y_hat``,
  ``c_latent``, ...). The array it receives is the clean latent at that point (the stream is untouched in a
  latent cell), so relative units (× the clean latent's std) are measured on it.

Parameters are a frozen dataclass with units in the field names; every draw comes from the ``rng`` the
harness derives from the cell key (never a global RNG). Each plugin declares its parameters' units once, in
:attr:`Corruption.units` (a unit that depends on another parameter, e.g. ``latent_gaussian``'s ``unit = "rel"``,
overrides :meth:`Corruption.unit_of`): tables, figure axes and the headline read them from there, never from a
parameter's name (``sigma`` is 8-bit levels for ``side_noise`` and latent units for ``latent_gaussian``).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from harness.options import build_options


class CorruptionError(ValueError):
    """Bad corruption parameters or scope (a user error, reported before any work)."""


@dataclass(frozen=True)
class ChannelResult:
    """What a bitstream channel did to one stream (recorded with the cell)."""

    data: bytes
    bits_exposed: int
    expected_flips: float
    actual_flips: int
    p_error_free: float
    extra: dict[str, Any] = field(default_factory=dict)


class Corruption(ABC):
    name: ClassVar[str]
    acts_on: ClassVar[Literal["bitstream", "latent"]]
    #: The unit of each numeric parameter, in words ("flip probability per bit", "8-bit code values"); a
    #: parameter left out is a plain number.
    units: ClassVar[dict[str, str]] = {}

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, **params: Any) -> None:
        self.params = build_options(self.Params, params, self.name, "parameter", CorruptionError)
        self.validate()

    def validate(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Raise :class:`CorruptionError` for out-of-range parameters."""

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params)

    def label(self) -> str:
        """Short human label of the level, e.g. ``ber=0.001``."""
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.config().items())

    @classmethod
    def unit_of(cls, param: str, params: dict[str, Any] | None = None) -> str:
        """The unit of ``param`` at the level ``params`` (the recorded parameters of a cell); "" when it has none.
        Reports label tables and axes with it."""
        return cls.units.get(param, "")

    @classmethod
    @abstractmethod
    def identity_params(cls) -> dict[str, Any]:
        """Parameters at which the corruption must be a no-op (the BER-0 control of METHODOLOGY.md §4)."""


def gather(data: bytes, ranges: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The exposed bytes of ``data`` as one uint8 array, in stream order."""
    buf = np.frombuffer(data, dtype=np.uint8)
    if not ranges:
        return np.zeros(0, dtype=np.uint8)
    return np.concatenate([buf[a:b] for a, b in ranges])


def scatter(data: bytes, ranges: tuple[tuple[int, int], ...], exposed: np.ndarray) -> bytes:
    """``data`` with its exposed ranges replaced by ``exposed`` (inverse of :func:`gather`)."""
    out = np.frombuffer(data, dtype=np.uint8).copy()
    pos = 0
    for a, b in ranges:
        out[a:b] = exposed[pos : pos + (b - a)]
        pos += b - a
    return out.tobytes()


def popcount(arr: np.ndarray) -> int:
    return int(np.unpackbits(arr).sum()) if arr.size else 0


class BitstreamCorruption(Corruption):
    acts_on: ClassVar[Literal["bitstream", "latent"]] = "bitstream"

    @abstractmethod
    def flip_mask(self, n_bits: int, rng: np.random.Generator) -> np.ndarray:
        """A boolean mask of length ``n_bits``: True where the channel flips a bit."""

    @abstractmethod
    def expected_flips(self, n_bits: int) -> float: ...

    @abstractmethod
    def p_error_free(self, n_bits: int) -> float:
        """Probability that a stream exposing ``n_bits`` crosses the channel untouched."""

    def extra(self) -> dict[str, Any]:
        """Derived channel parameters stored with the cell (e.g. Gilbert–Elliott transition probabilities)."""
        return {}

    def apply(self, data: bytes, ranges: tuple[tuple[int, int], ...], rng: np.random.Generator) -> ChannelResult:
        exposed = gather(data, ranges)
        n_bits = exposed.size * 8
        flipped = exposed ^ np.packbits(self.flip_mask(n_bits, rng))
        return ChannelResult(
            data=scatter(data, ranges, flipped),
            bits_exposed=n_bits,
            expected_flips=self.expected_flips(n_bits),
            actual_flips=popcount(exposed ^ flipped),
            p_error_free=self.p_error_free(n_bits),
            extra=self.extra(),
        )


class LatentCorruption(Corruption):
    acts_on: ClassVar[Literal["bitstream", "latent"]] = "latent"

    @abstractmethod
    def corrupt(self, latent: Any, rng: np.random.Generator) -> Any:
        """Return a corrupted copy of ``latent`` (a NumPy array or torch tensor; never modify it in place)."""

    def hook_for(self, hook: str, rng: np.random.Generator) -> Callable[[str, Any], Any]:
        """The ``hook(name, array)`` callback ``reconstruct`` calls: corrupts only at ``hook``."""
        return lambda name, latent: self.corrupt(latent, rng) if name == hook else latent
