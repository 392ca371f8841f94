"""The stored row of a cell: what was measured, in the units of METHODOLOGY.md §3.

bpp counts the file's bytes over the *original* pixels (never the padded ones a codec codes); header bytes
and FEC parity are separate columns, never folded into bpp.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from harness.artifacts import Artifacts
from harness.cells import Cell
from harness.channel import Transmission
from harness.codecs.base import Codec
from harness.store import DecodeRecord


def cell_row(
    cell: Cell,
    art: Artifacts,
    tx: Transmission,
    record: DecodeRecord,
    memoised: bool,
    corrupt_s: float,
    codec: Codec,
    side: Any = None,
) -> dict[str, Any]:
    channel = tx.channel
    pixels = cell.height * cell.width
    n_bytes = len(art.encoded.bitstream.data)
    header = art.encoded.bitstream.header_bytes
    return {
        "key": cell.key,
        "dataset": cell.dataset,
        "dataset_version": cell.dataset_version,
        "image_id": cell.image_id,
        "image_sha256": cell.image_sha256,
        "height": cell.height,
        "width": cell.width,
        "preprocessing": cell.preprocessing,
        "codec": cell.codec,
        "codec_label": cell.codec_label,
        # the options this image was encoded with (a rate-matched config's own per-image target_bpp)
        "codec_config": {**cell.codec_config, **art.encoded.resolved},
        "codec_fingerprint": cell.codec_fingerprint,
        "codec_name": cell.codec_name or cell.codec,
        "codec_options": cell.codec_options,
        "rate_of": cell.rate_of,
        "weights_hash": cell.weights_hash,
        "corruption": cell.corruption,
        "params": cell.params,
        "level": cell.level,
        "scope": cell.scope,
        "fec": cell.fec,
        "side": _side_column(cell, side),
        "suite_seed": cell.suite_seed,
        "replicate": cell.replicate,
        "decode_seed": cell.decode_seed,
        "status": record.status,
        "error_type": record.error_type,
        "error_message": record.error_message,
        "bytes_total": n_bytes,
        "bytes_header": header,
        "bpp": 8.0 * n_bytes / pixels,
        "header_bpp": 8.0 * header / pixels,
        # over the pixels the codec actually coded (RDEIC pads to multiples of 64): only for comparison
        # with published numbers that count padded pixels
        "padded_bpp": 8.0 * n_bytes / math.prod(codec.decoded_shape(cell.height, cell.width)[:2]),
        "bits_exposed": channel.bits_exposed,
        "expected_flips": channel.expected_flips,
        "actual_flips": channel.actual_flips,
        "p_error_free": channel.p_error_free,
        "channel": ({**channel.extra, "fec": tx.fec} if tx.fec else channel.extra)
        # what reports/redecode.py seeds the channel from, where it is not the cell's own key (paired or side cells),
        # and the partner a paired config took its draws from (reports/paired.py)
        | ({"rng_key": cell.rng_key} if cell.rng_key != cell.key else {})
        | ({"paired_with": cell.channel_codec} if cell.channel_codec else {}),
        "fec_overhead_bpp": 8.0 * tx.fec["overhead_bytes"] / pixels if tx.fec else 0.0,
        "residual_flips": tx.fec["residual_flips"] if tx.fec else None,
        "stream_sha256": tx.received_sha256,
        "decode_key": record.decode_key,
        "memoised": int(memoised),
        "metrics": record.metrics,
        "corrupt_s": corrupt_s,
        "encode_s": art.encoded.encode_s,
        "finished_at": datetime.now(UTC).isoformat(),
    }


def _side_column(cell: Cell, side: Any) -> dict[str, Any] | None:
    """For codecs with decoder-side information: the clean side images' hashes, the degradation this cell's
    decoder got (its own corruption when that acts on side information, or the crossed one), what that
    degradation recorded, and whether the view was missing. None for codecs without side information."""
    if cell.side_sha256 is None:
        return None
    degradation = side.degradation if side else cell.side
    missing = sorted(k for k, v in (side.images.items() if side else ()) if v is None)
    return {
        "sha256": cell.side_sha256,
        "degradation": degradation,
        "extra": dict(side.extra) if side else {},
        "missing": missing,
    }
