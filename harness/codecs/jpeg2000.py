"""JPEG2000 through glymur/OpenJPEG, as a raw J2K codestream (no JP2 boxes).

Rate: ``target_bpp`` (bits per original pixel) is translated to OpenJPEG's compression ratio
(24 / target for 8-bit RGB). OpenJPEG's rate control is approximate per image; with ``rate_tolerance``
set, ``encode`` bisects the ratio until the file lands within that relative tolerance of the target, and
``encode_at_rate`` does the same for a per-image target (the runner uses it to match another codec's
bpp image by image, METHODOLOGY.md §5).

Every resilience setting is an option and part of the fingerprint: transform (9/7 vs 5/3), quality layers,
SOP/EPH markers, code-block mode switches, tiles, precincts, code-block size, and the decoder mode
(``strict``: OpenJPEG's default, rejects truncated/inconsistent streams; non-strict: decodes what it can).
glymur does not expose the decoder mode, so ``parse`` sets it through OpenJPEG's own
``opj_decoder_set_strict_mode`` on the decoder glymur creates.

Segments: ``header`` is the main header (SOC up to, not including, the first SOT marker); ``payload`` is
everything after it (tile-part headers and packet data).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import struct
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness.codecs.base import Bitstream, Codec, CodecError, DecodedState, LatentHook, check_image
from harness.openjpeg import import_glymur, openjpeg_version

SOC = 0xFF4F
SOT = 0xFF90


def main_header_length(data: bytes) -> int:
    """Byte offset of the first SOT marker, found by walking the main-header marker segments."""
    if len(data) < 4 or struct.unpack(">H", data[:2])[0] != SOC:
        raise CodecError("not a J2K codestream (no SOC marker)")
    pos = 2
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos : pos + 4])
        if marker == SOT:
            return pos
        if marker >> 8 != 0xFF or length < 2:
            raise CodecError(f"malformed main header at byte {pos}")
        pos += 2 + length
    raise CodecError("no SOT marker after the main header")


class JPEG2000(Codec):
    """JPEG2000 baseline (irreversible 9/7 by default)."""

    name = "jpeg2000"
    version = "1"

    matches_rate: ClassVar[bool] = True

    @dataclass(frozen=True)
    class Options:
        target_bpp: float = 0.5  # bits per original pixel, translated to a compression ratio
        rate_tolerance: float | None = None  # e.g. 0.02: bisect the ratio to within 2% of the target bpp
        irreversible: bool = True  # 9/7 wavelet (lossy); False gives reversible 5/3
        layers: int = 1  # quality layers (ratios doubling per layer, the last one at target_bpp)
        numres: int = 6  # resolution levels (OpenJPEG's default)
        sop: bool = False  # start-of-packet markers
        eph: bool = False  # end-of-packet-header markers
        modesw: int = 0  # code-block mode switches (1 BYPASS, 2 RESET, 4 RESTART, 8 VSC, 16 ERTERM, 32 SEGMARK)
        tile_size: int | None = None  # square tiles of this side (None: one tile)
        precinct: int | None = None  # square precincts of this side (None: maximal)
        codeblock: int | None = None  # square code-blocks of this side (None: OpenJPEG's 64)
        strict: bool = True  # decoder mode: strict (OpenJPEG default) or non-strict partial decoding

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        if not 0 < o.target_bpp <= 24:
            raise CodecError(f"jpeg2000: target_bpp must be in (0, 24], got {o.target_bpp}")
        if o.rate_tolerance is not None and not 0 < o.rate_tolerance < 0.5:
            raise CodecError(f"jpeg2000: rate_tolerance is a relative tolerance in (0, 0.5), got {o.rate_tolerance}")
        if not 1 <= o.numres <= 32:
            raise CodecError(f"jpeg2000: numres must be in [1, 32], got {o.numres}")
        if not 1 <= o.layers <= 20:
            raise CodecError(f"jpeg2000: layers must be in [1, 20], got {o.layers}")
        if o.precinct is not None and o.codeblock is not None and o.codeblock > o.precinct // 2:
            raise CodecError("jpeg2000: codeblock must be at most half the precinct size")
        self._glymur = import_glymur()

    def library_versions(self) -> dict[str, str]:
        return {"openjpeg": openjpeg_version(self._glymur)}

    def _write(self, image: np.ndarray, ratio: float) -> bytes:
        o = self.options
        kwargs: dict[str, Any] = {
            "cratios": [ratio * 2.0 ** (o.layers - 1 - i) for i in range(o.layers)],
            "irreversible": o.irreversible,
            "numres": o.numres,
            "sop": o.sop,
            "eph": o.eph,
        }
        if o.modesw:
            kwargs["modesw"] = o.modesw
        if o.tile_size:
            kwargs["tilesize"] = (o.tile_size, o.tile_size)
        if o.precinct:
            kwargs["psizes"] = [(o.precinct, o.precinct)]
        if o.codeblock:
            kwargs["cbsize"] = (o.codeblock, o.codeblock)
        with tempfile.TemporaryDirectory(prefix="harness-j2k-") as tmp:
            path = os.path.join(tmp, "image.j2k")
            self._glymur.Jp2k(path, data=image, **kwargs)
            with open(path, "rb") as fh:
                return fh.read()

    @property
    def min_side(self) -> int:
        """Smallest image side (px) this configuration can encode: 2^(numres-1) (read by the planner, which
        records smaller images as skipped instead of failing the run)."""
        return 2 ** (self.options.numres - 1)

    def _check_size(self, image: np.ndarray) -> np.ndarray:
        image = check_image(image)
        side = min(image.shape[:2]) if not self.options.tile_size else self.options.tile_size
        if side < 2 ** (self.options.numres - 1):
            raise CodecError(
                f"jpeg2000: image/tile side {side} px too small for numres={self.options.numres} "
                f"(needs >= {2 ** (self.options.numres - 1)})"
            )
        return image

    @staticmethod
    def _bitstream(data: bytes) -> Bitstream:
        split = main_header_length(data)
        return Bitstream(data, {"header": ((0, split),), "payload": ((split, len(data)),)})

    def encode(self, image: np.ndarray) -> Bitstream:
        if self.options.rate_tolerance is not None:
            return self.encode_at_rate(image, self.options.target_bpp)
        return self._bitstream(self._write(self._check_size(image), 24.0 / self.options.target_bpp))

    #: When OpenJPEG's rate steps skip the tolerance band (seen with the reversible 5/3 transform, whose rate
    #: moves in jumps of ~5%), the closest rate within this relative distance is used, with a warning.
    RATE_FALLBACK = 0.10

    def encode_at_rate(self, image: np.ndarray, target_bpp: float) -> Bitstream:
        """Bisect the compression ratio (in log space) until 8·bytes/pixels is within the tolerance
        (``rate_tolerance``, default 2%) of ``target_bpp``. If OpenJPEG's discrete rate steps make that band
        unreachable, use the closest rate within ``RATE_FALLBACK`` and warn (every cell stores its actual bpp);
        farther than that is an error."""
        image = self._check_size(image)
        tol = self.options.rate_tolerance or 0.02
        pixels = image.shape[0] * image.shape[1]
        tried: dict[float, bytes] = {}

        def bpp_at(log_ratio: float) -> float:
            data = tried.setdefault(log_ratio, self._write(image, math.exp(log_ratio)))
            return 8.0 * len(data) / pixels

        def miss(data: bytes) -> float:
            return abs(8.0 * len(data) / pixels - target_bpp) / target_bpp

        lo = hi = math.log(24.0 / target_bpp)  # lo: bpp above target, hi: bpp below target
        for _ in range(12):  # bracket
            if bpp_at(lo) >= target_bpp:
                break
            lo -= math.log(2.0)
        for _ in range(12):
            if bpp_at(hi) <= target_bpp:
                break
            hi += math.log(2.0)
        for _ in range(40):
            if min(miss(d) for d in tried.values()) <= tol or hi - lo < 1e-6:
                break
            mid = (lo + hi) / 2
            if bpp_at(mid) > target_bpp:
                lo = mid
            else:
                hi = mid
        best = min(tried.values(), key=miss)
        achieved = 8.0 * len(best) / pixels
        if miss(best) > self.RATE_FALLBACK:
            got = sorted(8.0 * len(d) / pixels for d in tried.values())
            raise CodecError(
                f"jpeg2000: cannot reach {target_bpp:.4f} bpp within {100 * self.RATE_FALLBACK:g}% on a "
                f"{image.shape[1]}x{image.shape[0]} image (rates found: {got[0]:.4f}..{got[-1]:.4f} bpp)"
            )
        if miss(best) > tol:
            warnings.warn(
                f"jpeg2000 ({'9/7' if self.options.irreversible else '5/3'}): OpenJPEG's rate steps skip "
                f"{target_bpp:.4f} bpp ± {100 * tol:g}% on a {image.shape[1]}x{image.shape[0]} image; using the "
                f"closest, {achieved:.4f} bpp",
                stacklevel=2,
            )
        return self._bitstream(best)

    @contextlib.contextmanager
    def _decoder_mode(self) -> Iterator[None]:
        """Set OpenJPEG's strict/non-strict mode on the decoder glymur creates (glymur has no option)."""
        opj = self._glymur.lib.openjp2
        original = opj.setup_decoder

        def setup_decoder(codec: Any, dparams: Any) -> None:
            original(codec, dparams)
            opj.OPENJP2.opj_decoder_set_strict_mode.argtypes = [opj.CODEC_TYPE, ctypes.c_int32]
            opj.OPENJP2.opj_decoder_set_strict_mode.restype = ctypes.c_int32
            if not opj.OPENJP2.opj_decoder_set_strict_mode(codec, int(self.options.strict)):
                raise RuntimeError("OpenJPEG refused to set the decoder's strict mode")

        opj.setup_decoder = setup_decoder
        try:
            yield
        finally:
            opj.setup_decoder = original

    def parse(self, data: bytes) -> DecodedState:
        # glymur reads files only; a private temp file per call keeps parallel workers apart.
        fd, path = tempfile.mkstemp(prefix="harness-j2k-", suffix=".j2k")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # OpenJPEG reports damage as Python warnings too; the outcome (array or exception) is what counts
            with self._decoder_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = self._glymur.Jp2k(path)[:]
        finally:
            os.unlink(path)
        return {"image": np.asarray(image)}

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return state["image"]
