"""JPEG2000 through glymur/OpenJPEG, as a raw J2K codestream (no JP2 boxes).

Rate is given as a target in bits per pixel and translated to OpenJPEG's compression ratio
(24 bpp raw RGB / target). That rate control is approximate per image; matching another codec's rate
image by image is the job of a bisection on this parameter, not of this module.

Segments: ``header`` is the main header (SOC up to, not including, the first SOT marker); ``payload`` is
everything after it (tile-part headers and packet data).
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any

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

    @dataclass(frozen=True)
    class Options:
        target_bpp: float = 0.5  # bits per original pixel, translated to a compression ratio
        irreversible: bool = True  # 9/7 wavelet (lossy); False gives reversible 5/3
        numres: int = 6  # resolution levels (OpenJPEG's default)
        sop: bool = False  # start-of-packet markers
        eph: bool = False  # end-of-packet-header markers
        modesw: int = 0  # code-block mode switches (1 BYPASS, 2 RESET, 4 RESTART, 8 VSC, 16 ERTERM, 32 SEGMARK)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if not 0 < self.options.target_bpp <= 24:
            raise CodecError(f"jpeg2000: target_bpp must be in (0, 24], got {self.options.target_bpp}")
        if not 1 <= self.options.numres <= 32:
            raise CodecError(f"jpeg2000: numres must be in [1, 32], got {self.options.numres}")
        self._glymur = import_glymur()

    def library_versions(self) -> dict[str, str]:
        return {"openjpeg": openjpeg_version(self._glymur)}

    def encode(self, image: np.ndarray) -> Bitstream:
        image = check_image(image)
        o = self.options
        min_side = 2 ** (o.numres - 1)
        if min(image.shape[:2]) < min_side:
            raise CodecError(f"jpeg2000: image {image.shape[:2]} smaller than {min_side} px for numres={o.numres}")
        with tempfile.TemporaryDirectory(prefix="harness-j2k-") as tmp:
            path = os.path.join(tmp, "image.j2k")
            self._glymur.Jp2k(
                path,
                data=image,
                cratios=[24.0 / o.target_bpp],
                irreversible=o.irreversible,
                numres=o.numres,
                sop=o.sop,
                eph=o.eph,
                modesw=o.modesw or None,
            )
            with open(path, "rb") as fh:
                data = fh.read()
        split = main_header_length(data)
        return Bitstream(data, {"header": ((0, split),), "payload": ((split, len(data)),)})

    def parse(self, data: bytes) -> DecodedState:
        # glymur reads files only; a private temp file per call keeps parallel workers apart.
        fd, path = tempfile.mkstemp(prefix="harness-j2k-", suffix=".j2k")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            image = self._glymur.Jp2k(path)[:]
        finally:
            os.unlink(path)
        return {"image": np.asarray(image)}

    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        return state["image"]
