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

Untrusted sizes: before OpenJPEG sees a stream, ``parse`` reads its SIZ and COD marker segments (ITU-T T.800
§A.5.1, §A.6.1) and refuses (``InvalidOutput``) one whose image size, offsets, tiling, component count, bit
depth, subsampling, layer count, decomposition levels or code-block size differ from what this configuration
writes for the original image: a corrupted SIZ can otherwise declare a 330 x 2,097,652 image that OpenJPEG
allocates (10-15 GB). The receiver is assumed to know the session parameters (image size and configuration),
as the application of a known stream type does.
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

from harness.codecs.base import (
    Bitstream,
    Codec,
    CodecError,
    DecodedState,
    InvalidOutput,
    LatentHook,
    check_image,
)
from harness.openjpeg import import_glymur, openjpeg_version

SOC = 0xFF4F
SOT = 0xFF90
SIZ = 0xFF51
COD = 0xFF52


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


class MalformedStream(ValueError):
    """A main header that cannot be walked (no SOC, a marker segment running past the data, no SOT): the decoder
    refuses the stream, as OpenJPEG would (status ``exception``)."""


def main_header_segments(data: bytes) -> dict[int, bytes]:
    """The main header's marker segments (marker -> body after the length field), first occurrence each;
    raises ``MalformedStream`` for a main header that cannot be walked (the stream is damaged)."""
    if len(data) < 4 or struct.unpack(">H", data[:2])[0] != SOC:
        raise MalformedStream("not a J2K codestream (no SOC marker)")
    found: dict[int, bytes] = {}
    pos = 2
    while pos + 4 <= len(data):
        marker, length = struct.unpack(">HH", data[pos : pos + 4])
        if marker == SOT:
            return found
        if marker >> 8 != 0xFF or length < 2 or pos + 2 + length > len(data):
            raise MalformedStream(f"malformed main header at byte {pos}")
        found.setdefault(marker, bytes(data[pos + 4 : pos + 2 + length]))
        pos += 2 + length
    raise MalformedStream("no SOT marker after the main header")


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
        """Smallest image side (px) this configuration can encode: 2^(numres-1), and the tile size when tiled
        (OpenJPEG refuses a tile larger than the image). Read by the planner, which records smaller images as
        skipped instead of failing the run."""
        return max(2 ** (self.options.numres - 1), self.options.tile_size or 0)

    def _check_size(self, image: np.ndarray) -> np.ndarray:
        image = check_image(image)
        side = min(image.shape[:2])
        if side < self.min_side:
            raise CodecError(
                f"jpeg2000: image side {side} px too small for numres={self.options.numres}"
                + (f" and {self.options.tile_size} px tiles" if self.options.tile_size else "")
                + f" (needs >= {self.min_side})"
            )
        return image

    def check_header(self, data: bytes, size: tuple[int, int]) -> None:
        """Refuse a main header whose SIZ/COD differ from what this configuration writes for an original of
        ``size`` = (height, width) (``InvalidOutput``: the decode would have another shape or coding), or that
        cannot be walked (``MalformedStream``): checked before OpenJPEG allocates anything."""
        o, (height, width) = self.options, size
        segments = main_header_segments(data)
        siz, cod = segments.get(SIZ), segments.get(COD)
        if siz is None or len(siz) < 36:
            raise MalformedStream("main header has no complete SIZ marker segment")
        _rsiz, xsiz, ysiz, xo, yo, xt, yt, xto, yto, csiz = struct.unpack(">HIIIIIIIIH", siz[:36])
        tile = (o.tile_size, o.tile_size) if o.tile_size else (width, height)
        found = {"image": (xsiz - xo, ysiz - yo), "offsets": (xo, yo, xto, yto), "tile": (xt, yt), "components": csiz}
        wanted = {"image": (width, height), "offsets": (0, 0, 0, 0), "tile": tile, "components": 3}
        for what, value in found.items():
            if value != wanted[what]:
                raise InvalidOutput(f"SIZ declares {what} {value}, this configuration writes {wanted[what]}")
        if len(siz) != 36 + 3 * csiz or any(siz[36 + 3 * i : 39 + 3 * i] != b"\x07\x01\x01" for i in range(csiz)):
            raise InvalidOutput("SIZ declares components other than 8-bit unsigned, unsubsampled")
        if cod is None or len(cod) < 10:
            raise MalformedStream("main header has no complete COD marker segment")
        layers, levels, xcb, ycb = struct.unpack(">H", cod[2:4])[0], cod[5], cod[6], cod[7]
        block = (o.codeblock or 64).bit_length() - 3  # code-block size exponent minus 2 (T.800 Table A.18)
        found = {"layers": layers, "decomposition levels": levels, "code-block exponents": (xcb, ycb)}
        wanted = {"layers": o.layers, "decomposition levels": o.numres - 1, "code-block exponents": (block, block)}
        for what, value in found.items():
            if value != wanted[what]:
                raise InvalidOutput(f"COD declares {what} {value}, this configuration writes {wanted[what]}")

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

    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        self.check_header(data, size)
        # glymur reads files only; a private temp file per call keeps parallel workers apart. Its random name
        # must not reach a stored message (the same command must give the same rows): it is replaced.
        fd, path = tempfile.mkstemp(prefix="harness-j2k-", suffix=".j2k")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            # OpenJPEG reports damage as Python warnings too; the outcome (array or exception) is what counts
            with self._decoder_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = np.asarray(self._glymur.Jp2k(path)[:])
        except Exception as exc:
            if path not in str(exc):
                raise
            try:  # same exception type, reproducible message
                scrubbed = type(exc)(str(exc).replace(path, "<stream>.j2k"))
            except Exception:
                raise exc from None
            raise scrubbed from None
        finally:
            os.unlink(path)
        expected = self.decoded_shape(*size)
        if image.shape != expected or image.dtype != np.uint8:
            raise InvalidOutput(f"decoded {image.dtype} {image.shape}, expected uint8 {expected}")
        return {"image": image}

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return state["image"]
