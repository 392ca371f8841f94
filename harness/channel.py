"""The channel a cell's stream crosses: [FEC encode] -> corruption within a scope -> [FEC decode].

Every draw comes from the cell's own RNG (``Cell.rng``: a SeedSequence of its key, or of its partner's key
for paired cells). Latent corruptions leave the stream untouched here; they act inside ``reconstruct``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from corruptions.base import ChannelResult, Corruption, popcount
from corruptions.fec import FECConfig, ReedSolomonFEC
from harness.cells import Cell
from harness.hashing import canonical_json, sha256_bytes


@dataclass(frozen=True)
class Transmission:
    """One cell's trip through the channel (and the FEC layer, when the cell has one)."""

    channel: ChannelResult  # what the channel did (to the FEC-protected stream when FEC is on)
    data: bytes  # the bytes handed to the decoder
    fec: dict[str, Any] | None = None  # FEC outcome: backend, codewords, failed, residual flips, overhead
    fec_failed: bool = False  # the FEC layer declared failure under policy "fail": nothing is decoded

    @property
    def received_sha256(self) -> str:
        return sha256_bytes(self.channel.data)


def clean_channel(data: bytes) -> ChannelResult:
    """The channel record of a cell whose corruption acts on latents: the stream crosses untouched."""
    return ChannelResult(data=data, bits_exposed=0, expected_flips=0.0, actual_flips=0, p_error_free=1.0)


class Channel:
    """Transmits cells' streams; keeps the FEC coders and a few FEC-protected streams for reuse."""

    def __init__(self) -> None:
        self._fec: dict[str, ReedSolomonFEC] = {}
        self._protected: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def transmit(self, cell: Cell, bitstream: Any, corruption: Corruption) -> Transmission:
        """Clean ``bitstream`` (a :class:`harness.codecs.base.Bitstream`) -> [FEC encode] -> channel (scope)
        -> [FEC decode] -> bytes for the decoder."""
        data = bitstream.data
        if corruption.acts_on in ("latent", "side_info"):  # the stream crosses untouched
            return Transmission(clean_channel(data), data)
        if cell.fec is None:
            channel = corruption.apply(data, bitstream.ranges(cell.scope), cell.rng())
            return Transmission(channel, channel.data)
        fec_id = canonical_json(cell.fec)
        fec = self._fec.get(fec_id) or self._fec.setdefault(fec_id, ReedSolomonFEC(FECConfig(**cell.fec)))
        protected = self._protected.get((cell.encode_key, fec_id))
        if protected is None:
            protected = self._protected[(cell.encode_key, fec_id)] = fec.encode(data)
            while len(self._protected) > 64:
                self._protected.popitem(last=False)
        channel = corruption.apply(protected, ((0, len(protected)),), cell.rng())
        out = fec.decode(channel.data)
        common = min(len(out.data), len(data))
        residual = popcount(
            np.frombuffer(out.data[:common], np.uint8) ^ np.frombuffer(data[:common], np.uint8)
        ) + 8 * abs(len(out.data) - len(data))
        info = {
            "backend": fec.backend,
            "codewords": out.codewords,
            "failed_codewords": out.failed_codewords,
            "length_ok": out.length_ok,
            "residual_flips": residual,
            "overhead_bytes": len(protected) - len(data),
        }
        failed = out.failed_codewords > 0 and fec.config.on_failure == "fail"
        return Transmission(channel, out.data, info, failed)
