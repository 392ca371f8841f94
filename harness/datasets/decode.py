"""Decoding one image to uint8 HxWx3 RGB. Every conversion follows what the file DECLARES (its mode, bit depth,
maxval, bitfields, alpha, orientation tag), never the pixel values or the container, and is recorded.

Rules, in the order they run (the record's ``conversion`` lists the steps applied, joined by ``"; "``):

====================================  =====================================================================
input (declared by the header)        rule
====================================  =====================================================================
samples of N bits / netpbm maxval M   8-bit = round(v * 255 / M), M = 2**N - 1 or the header's maxval,
(PNG/TIFF 16-bit, PGM/PPM maxval       round half up in exact integer arithmetic; 8-bit samples unchanged.
!= 255, TIFF 12-bit, BMP 5/6-bit       A 16-bit image whose values are all < 256 is still 16-bit. Samples
bitfields, uint16 HDF5/arrays)         are never truncated to their high byte: where Pillow would do that
                                       (16-bit RGB/RGBA/LA PNG, 16-bit RGB/RGBA/CMYK TIFF) both bytes are
                                       decoded; a layout whose full precision cannot be read is refused.
                                       Sub-byte gray (1/2/4-bit PNG/TIFF) is Pillow's exact v*255/M.
grayscale ``L``, bilevel ``1``        R = G = B (``1``: 0 / 255)
palette ``P``                         through its 8-bit palette (with transparency: as alpha, below)
alpha (RGBA, LA, PA, palette or        composited on WHITE: round((c*a + 255*(255-a)) / 255) on the 8-bit
colour-key transparency, BMP alpha     samples (alpha scaled like colour first); alpha then dropped. Colour
mask, 4-channel arrays)                keys (PNG tRNS on gray/RGB) compare the raw, unscaled samples.
bytes declared unused (BMP BI_RGB      ignored (no alpha is declared): the pixels are RGB
32-bpp 4th byte, TIFF ExtraSamples=0)
``CMYK`` (JPEG, TIFF)                 Pillow's arithmetic conversion (no ICC colour management)
YCbCr JPEG (3 components)             libjpeg's JFIF YCbCr->RGB (what Pillow returns); recorded
``YCbCr``, ``LAB``, ``HSV`` modes     Pillow's conversion
``I`` (32-bit integer)                unsigned TIFF samples: by their declared bits (rule 1); signed
                                       samples, or no declared depth: refused (no agreed scale)
``F`` (float), signed integers,       refused: no agreed 8-bit scale
float arrays
embedded ICC profile (PNG iCCP,       RGB profile: converted to sRGB (LittleCMS through PIL.ImageCms, relative
JPEG APP2, TIFF, WebP), RGB images    colorimetric, on the 8-bit RGB pixels), unless it maps a 16-level grid
                                       of colours within 1 code value of sRGB (then kept as stored). Recorded
                                       either way with the profile's description and sha256; a profile of
                                       another colour space (CMYK, gray) or one LittleCMS cannot read is
                                       recorded as "not applied" and the pixels are kept as stored
EXIF orientation 2-8 (JPEG APP1, PNG  APPLIED for every format (Pillow >= 13 already does it for TIFF; it
eXIf, TIFF tag 274, WebP EXIF, XMP    is then not applied twice); the applied value (1 = none) is kept in
tiff:Orientation)                     ``ImageEntry.orientation``. BMP, PGM/PPM and GIF carry no tag.
====================================  =====================================================================

Size: ``max_pixels`` is checked from the header before any pixel is decoded, and governs Pillow's own
decompression-bomb checks for the call (``Image.MAX_IMAGE_PIXELS`` set to it, its warning made an error, both
restored afterwards, under a lock): an image above the suite's limit is refused with "exceeds max_pixels=N"
wherever Pillow notices it (WebP before allocating its canvas, TIFF per tile, GIF per frame), and one below the
suite's limit but above Pillow's default loads. ``max_pixels=None`` lifts every limit. Truncated images are
always an error (``ImageFile.LOAD_TRUNCATED_IMAGES`` is held False for the call).

Any failure is one :class:`DatasetError` line for that image; callers record it and go on.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.errors import DEFAULT_MAX_PIXELS, DatasetError

#: EXIF orientation -> what displaying it does to the stored pixels (the record's words).
ORIENTATIONS = {
    1: "none",
    2: "flipped left-right",
    3: "rotated 180",
    4: "flipped top-bottom",
    5: "transposed",
    6: "rotated 90 clockwise",
    7: "transversed",
    8: "rotated 90 counter-clockwise",
}

WHITE = 255
_LIMIT_LOCK = threading.RLock()
_EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
# rawmodes whose 16-bit samples Pillow reduces to their high byte, and the rawmode giving the other byte
_SIXTEEN = re.compile(r"^(RGB|RGBA|RGBX|CMYK);16([BLN])$")


@dataclass(frozen=True)
class Decoded:
    """An image decoded to uint8 HxWx3, the conversion steps applied ("" if none) and the EXIF orientation
    applied (1 = none or no tag)."""

    pixels: np.ndarray
    conversion: str = ""
    orientation: int = 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels as displayed under EXIF ``orientation`` (1-8; anything else: unchanged)."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a[::-1].swapaxes(0, 1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: a[:, ::-1].swapaxes(0, 1),
    }
    op = ops.get(orientation)
    return image if op is None else np.ascontiguousarray(op(image))


def to_8bit(samples: np.ndarray, maxval: int) -> np.ndarray:
    """round(v * 255 / maxval), half up, exact (integer arithmetic); values above maxval saturate at 255."""
    if maxval == 255 and samples.dtype == np.uint8:
        return samples
    v = np.minimum(samples.astype(np.int64), maxval)
    return ((v * 510 + maxval) // (2 * maxval)).astype(np.uint8)


def _depth_note(what: str, maxval: int) -> str:
    return f"{what}->8-bit (round(v*255/{maxval}))"


def composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """8-bit colour (HxWxC) over white with 8-bit alpha (HxW): round((c*a + 255*(255-a)) / 255), half up."""
    c = color.astype(np.int64)
    a = alpha.astype(np.int64)[..., None]
    return ((2 * (c * a + WHITE * (255 - a)) + 255) // 510).astype(np.uint8)


def _gray_to_rgb(g: np.ndarray) -> np.ndarray:
    return np.repeat(g[..., None], 3, axis=2)


def exceeds_max_pixels(
    where: str, pixels: int | None, max_pixels: int | None, size: tuple[int, int] | None = None
) -> str:
    """The one-line reason an image above the suite's limit is skipped."""
    dims = f"{size[0]}x{size[1]} = " if size else ""
    count = f" is {dims}{pixels} px," if pixels is not None else ""
    return (
        f"image {where}{count} exceeds max_pixels={max_pixels}; raise max_pixels for this dataset in the suite "
        "if it is meant to be used"
    )


def _check_size(where: str, w: int, h: int, max_pixels: int | None) -> None:
    if w <= 0 or h <= 0:
        raise DatasetError(f"cannot read image {where}: invalid size {w}x{h}")
    if max_pixels is not None and w * h > max_pixels:
        raise DatasetError(exceeds_max_pixels(where, w * h, max_pixels, (w, h)))


@contextmanager
def pillow_limits(max_pixels: int | None) -> Iterator[None]:
    """Pillow's process-wide decoding limits set to the suite's for this block, then restored: its
    decompression-bomb limit is ``max_pixels`` (None: no limit) with the warning raised as an error, and
    truncated images are never completed with grey. Held under a lock so that concurrent decodes in threads
    do not see each other's settings."""
    from PIL import Image, ImageFile

    with _LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        Image.MAX_IMAGE_PIXELS = max_pixels
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


# -- entry points -------------------------------------------------------------------------------------------


def decode(source: str | Path | bytes, name: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """Decode a file path or encoded bytes (rules in the module docstring), or raise one-line DatasetError."""
    where = name or str(source if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        if not source:
            raise DatasetError(f"cannot read image {where}: empty (0 bytes)")
        head = source[:64]
    else:
        try:
            if Path(source).stat().st_size == 0:
                raise DatasetError(f"cannot read image {where}: empty file (0 bytes)")
            with open(source, "rb") as fh:
                head = fh.read(64)
        except OSError as exc:
            raise DatasetError(f"cannot read image {where}: {exc.strerror or exc}") from None
    try:
        if head[:1] == b"P" and head[1:2] in (b"2", b"3", b"5", b"6") and head[2:3].isspace():
            return _netpbm(source, where, max_pixels)
        if head[:2] == b"BM" and len(head) >= 30 and _le(head[14:18]) >= 40 and _le(head[28:30]) == 16:
            return _bmp16(source, head, where, max_pixels)
        return _decode_pillow(source, head, where, max_pixels)
    except DatasetError:
        raise
    except Exception as exc:  # untrusted input: every decoder failure is one line for this image
        raise DatasetError(f"cannot read image {where}: {_one_line(exc)}") from None


def decode_pil(im: Any, where: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """An already decoded PIL image (e.g. a hub cell): the same rules, with the depth its mode declares."""
    _check_size(where, *im.size, max_pixels)
    try:
        with pillow_limits(max_pixels):
            before = _orientation_tag(im)
            im.load()
            rgb, notes = _pil_to_rgb(im, where, _mode_bits(im.mode), None)
            rgb = _icc_to_srgb(rgb, im.info.get("icc_profile"), notes)
        return _finish(rgb, notes, before, _orientation_tag(im))
    except DatasetError:
        raise
    except Exception as exc:
        raise DatasetError(f"cannot read image {where}: {_one_line(exc)}") from None


def decode_array(array: Any, where: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoded:
    """A pixel array (HDF5 row, hub array cell): HxW, HxWx1, HxWx3 or HxWx4 (alpha). The dtype declares the
    depth: uint8 as is, other unsigned integers by round(v*255/(2**bits-1)), bool as 0/255; signed integers
    and floats are refused (no agreed scale)."""
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise DatasetError(f"cannot read image {where}: pixel array of shape {a.shape}, expected HxW[x1|3|4]")
    _check_size(where, a.shape[1], a.shape[0], max_pixels)
    notes = []
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
        notes.append("bool->8-bit (0/255)")
    elif np.issubdtype(a.dtype, np.unsignedinteger):
        if a.dtype != np.uint8:
            maxval = int(np.iinfo(a.dtype).max)
            notes.append(_depth_note(str(a.dtype), maxval))
            a = to_8bit(a, maxval)
    else:
        raise DatasetError(f"cannot read image {where}: pixels are {a.dtype}, which has no agreed 8-bit scale")
    channels = a.shape[2]
    if channels == 1:
        rgb = _gray_to_rgb(a[..., 0])
        notes.append("L->RGB (replicated)")
    elif channels == 4:
        rgb = composite_on_white(a[..., :3], a[..., 3])
        notes.append("RGBA->RGB (alpha composited on white)")
    else:
        rgb = np.ascontiguousarray(a, dtype=np.uint8)
    return Decoded(rgb, "; ".join(notes), 1)


# -- Pillow -------------------------------------------------------------------------------------------------


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _read_all(source: str | Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _read_prefix(source: str | Path | bytes, n: int) -> bytes:
    if isinstance(source, bytes):
        return source[:n]
    with open(source, "rb") as fh:
        return fh.read(n)


def _open(source: str | Path | bytes) -> Any:
    from PIL import Image

    return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)


def _bomb_message(exc: BaseException, where: str, max_pixels: int | None) -> str:
    m = re.search(r"\((\d+) pixels\)", str(exc))
    return exceeds_max_pixels(where, int(m.group(1)) if m else None, max_pixels)


def _decode_pillow(source: str | Path | bytes, head: bytes, where: str, max_pixels: int | None) -> Decoded:
    from PIL import Image

    try:
        with pillow_limits(max_pixels), _open(source) as im:
            _check_size(where, *im.size, max_pixels)
            tiles = list(im.tile)
            bits = _declared_bits(im, head)
            before = _orientation_tag(im)
            im.load()
            full = None
            if im.mode in _EIGHT_BIT_MODES and bits > 8:
                full = _full_precision(source, im, tiles, bits, where)
            rgb, notes = _pil_to_rgb(im, where, bits, full)
            if im.format in ("JPEG", "MPO") and im.mode == "RGB" and _jpeg_is_ycbcr(im):
                notes.insert(0, "YCbCr->RGB (libjpeg, JFIF)")
            rgb = _icc_to_srgb(rgb, im.info.get("icc_profile"), notes)
            return _finish(rgb, notes, before, _orientation_tag(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(_bomb_message(exc, where, max_pixels)) from None


#: Colours the sRGB-equivalence test of an ICC profile maps: every combination of 16 levels per channel.
_ICC_GRID = np.stack(np.meshgrid(*[np.arange(0, 256, 17, dtype=np.uint8)] * 3, indexing="ij"), -1).reshape(64, 64, 3)


def _icc_to_srgb(rgb: np.ndarray, profile: bytes | None, notes: list[str]) -> np.ndarray:
    """What an embedded ICC profile declares (module docstring): RGB pixels in sRGB, and a note in ``notes``."""
    if not profile:
        return rgb
    from PIL import Image, ImageCms

    label = f"ICC profile sha256 {hashlib.sha256(profile).hexdigest()[:12]}"
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
        name = " ".join(ImageCms.getProfileDescription(source).split()) or "unnamed"
        label = f'ICC profile "{name}" (sha256 {hashlib.sha256(profile).hexdigest()[:12]})'
        space = source.profile.xcolor_space.strip()
        if space != "RGB":
            notes.append(f"{label}: a {space} profile, not applied (pixels as stored)")
            return rgb
        transform = ImageCms.buildTransform(
            source, ImageCms.createProfile("sRGB"), "RGB", "RGB", ImageCms.Intent.RELATIVE_COLORIMETRIC
        )
        grid = np.asarray(ImageCms.applyTransform(Image.fromarray(_ICC_GRID), transform))
        if int(np.abs(grid.astype(np.int16) - _ICC_GRID).max()) <= 1:
            notes.append(f"{label}: sRGB within 1 code value, kept as stored")
            return rgb
        out = np.asarray(ImageCms.applyTransform(Image.fromarray(np.ascontiguousarray(rgb)), transform))
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        notes.append(f"{label}: unreadable ({_one_line(exc)}), not applied (pixels as stored)")
        return rgb
    notes.append(f"{label} -> sRGB (LittleCMS, relative colorimetric)")
    return out


def _finish(rgb: np.ndarray, notes: list[str], before: int | None, after: int | None) -> Decoded:
    orientation = 1
    if before is not None and before != 1:
        if before not in ORIENTATIONS:
            notes.append(f"EXIF orientation {before} is not 1-8: ignored")
        else:
            orientation = before
            if after == before:  # Pillow has not applied it (it does for TIFF since Pillow 13)
                rgb = orient(rgb, before)
            notes.append(f"EXIF orientation {before} applied ({ORIENTATIONS[before]})")
    return Decoded(np.ascontiguousarray(rgb, dtype=np.uint8), "; ".join(notes), orientation)


def _orientation_tag(im: Any) -> int | None:
    """The orientation the image's metadata declares (EXIF tag 274, else XMP tiff:Orientation), or None."""
    try:
        value = im.getexif().get(274)
    except Exception:  # unreadable EXIF: treated as no tag (the pixels are fine)
        return None
    if isinstance(value, tuple | list):
        value = value[0] if value else None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _mode_bits(mode: str) -> int:
    """Bits per sample a mode implies; 0 for ``I`` (32-bit integers hold any depth: the file must declare it)."""
    return 16 if mode.startswith("I;16") else 0 if mode == "I" else 8


def _declared_bits(im: Any, head: bytes) -> int:
    """Bits per sample the file declares: PNG IHDR, TIFF BitsPerSample; other formats: their mode's."""
    if im.format == "PNG" and head[12:16] == b"IHDR":
        return max(8, head[24]) if im.mode != "P" else 8
    if im.format == "TIFF":
        value = getattr(im, "tag_v2", {}).get(258)
        if value:
            bits = max(value) if isinstance(value, tuple | list) else int(value)
            return max(8, int(bits)) if im.mode not in ("P", "1") else 8
    return _mode_bits(im.mode)


def _rawmode(tile: Any) -> str | None:
    args = tile.args
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile: Any, rawmode: str) -> Any:
    args = tile.args
    return tile._replace(args=rawmode if isinstance(args, str) else (rawmode, *args[1:]))


def _full_precision(source: str | Path | bytes, im: Any, tiles: list[Any], bits: int, where: str) -> np.ndarray:
    """The full 16-bit samples of an image Pillow opened in an 8-bit mode (it keeps the high byte only):
    decoded again with the low byte's rawmode (same bits per pixel, so PNG unfiltering and TIFF strides
    are unchanged). 16-bit LA PNGs are decoded byte for byte as 8-bit RGBA (= L hi, L lo, A hi, A lo)."""
    rawmodes = {_rawmode(t) for t in tiles}
    rawmode = rawmodes.pop() if len(rawmodes) == 1 else None
    refuse = DatasetError(
        f"cannot read image {where}: its {bits}-bit samples ({im.format} {rawmode or 'mixed layout'}) cannot be "
        "read at full precision here; refusing to truncate them to 8 bits"
    )
    if im.format not in ("PNG", "TIFF") or bits != 16 or rawmode is None:
        raise refuse
    if rawmode == "LA;16B" and im.mode == "RGBA":
        b = _decode_as(source, tiles, "RGBA").astype(np.uint16)
        return np.dstack([b[..., 0] << 8 | b[..., 1], b[..., 2] << 8 | b[..., 3]])  # L, A
    m = _SIXTEEN.match(rawmode)
    if m is None:
        raise refuse
    order = m.group(2) if m.group(2) != "N" else ("L" if sys.byteorder == "little" else "B")
    other = f"{m.group(1)};16{'L' if order == 'B' else 'B'}"
    hi = np.asarray(im).astype(np.uint16)
    lo = _decode_as(source, tiles, other).astype(np.uint16)
    if lo.shape != hi.shape:
        raise refuse
    return hi << 8 | lo


def _decode_as(source: str | Path | bytes, tiles: list[Any], rawmode: str) -> np.ndarray:
    with _open(source) as again:
        if [t._replace(args=None) for t in again.tile] != [t._replace(args=None) for t in tiles]:
            raise DatasetError("the file's tiles changed between two reads")
        again.tile = [_with_rawmode(t, rawmode) for t in again.tile]
        again.load()
        return np.asarray(again)


def _jpeg_is_ycbcr(im: Any) -> bool:
    """libjpeg's choice for a 3-component JPEG: JFIF or Adobe transform 1 -> YCbCr; Adobe transform 0 or
    components named R, G, B -> RGB stored as is."""
    if "jfif" in im.info:
        return True
    if "adobe" in im.info:
        return im.info.get("adobe_transform") != 0
    ids = tuple(layer[0] for layer in getattr(im, "layer", ()))
    return ids not in (tuple(b"RGB"), tuple(b"rgb"))


def _transparency_mask(samples: np.ndarray, key: Any) -> np.ndarray | None:
    """Where a colour key (PNG tRNS on gray / RGB, in raw sample units) matches: those pixels are transparent."""
    if key is None or isinstance(key, bytes):
        return None
    if samples.ndim == 2:
        return samples == int(key) if isinstance(key, int) else None
    if isinstance(key, tuple) and len(key) == samples.shape[2]:
        return np.all(samples == np.asarray(key, dtype=samples.dtype), axis=2)
    return None


def _pil_to_rgb(im: Any, where: str, bits: int, full: np.ndarray | None) -> tuple[np.ndarray, list[str]]:
    """The mode rules (module docstring) on a loaded image; ``full`` holds full-precision samples when Pillow
    kept only the high byte."""
    from PIL import Image

    mode = im.mode
    notes: list[str] = []
    key = im.info.get("transparency")
    if mode == "F":
        raise DatasetError(f"cannot read image {where}: 32-bit float images (mode F) have no agreed 8-bit scale")
    if mode == "I" or mode.startswith("I;16"):
        if mode == "I" and (bits != 32 or _signed(im)):
            why = "signed integer samples" if _signed(im) else "32-bit integer samples with no declared bit depth"
            raise DatasetError(f"cannot read image {where}: {why} (mode I) have no agreed 8-bit scale")
        raw = np.asarray(im)
        if mode == "I":  # declared unsigned 32-bit: Pillow holds them as int32
            raw = raw.astype(np.int64) & 0xFFFFFFFF
        maxval = 2**bits - 1
        gray = to_8bit(raw, maxval)
        notes.append(_depth_note(f"{bits}-bit", maxval))
        mask = _transparency_mask(raw, key)
        if mask is not None:
            notes.append("L->RGB (replicated; colour-key transparency composited on white)")
            return composite_on_white(_gray_to_rgb(gray), np.where(mask, 0, 255)), notes
        notes.append("L->RGB (replicated)")
        return _gray_to_rgb(gray), notes
    if full is not None:
        maxval = 2**bits - 1
        notes.append(_depth_note(f"{bits}-bit", maxval))
        mask = _transparency_mask(full, key) if mode == "RGB" else None
        a = to_8bit(full, maxval)
        if mode == "RGBA" and a.shape[2] == 2:  # 16-bit LA
            notes.append("LA->RGB (alpha composited on white)")
            return composite_on_white(_gray_to_rgb(a[..., 0]), a[..., 1]), notes
        if mode == "RGBA":
            notes.append("RGBA->RGB (alpha composited on white)")
            return composite_on_white(a[..., :3], a[..., 3]), notes
        if mode == "CMYK":
            notes.append("CMYK->RGB (Pillow, no ICC)")
            return np.asarray(Image.frombytes("CMYK", im.size, a.tobytes()).convert("RGB")), notes
        if mask is not None:
            notes.append("colour-key transparency composited on white")
            return composite_on_white(a, np.where(mask, 0, 255)), notes
        return a, notes
    if mode == "RGB":
        mask = _transparency_mask(np.asarray(im), key)
        if mask is not None:
            return composite_on_white(np.asarray(im), np.where(mask, 0, 255)), [
                "RGB->RGB (colour-key transparency composited on white)"
            ]
        return np.asarray(im, dtype=np.uint8), notes
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
        mask = _transparency_mask(gray if mode == "L" else np.asarray(im).astype(np.uint8), key)
        if mask is not None:
            notes.append(f"{mode}->RGB (replicated; colour-key transparency composited on white)")
            return composite_on_white(_gray_to_rgb(gray), np.where(mask, 0, 255)), notes
        notes.append(f"{mode}->RGB (replicated)")
        return _gray_to_rgb(gray), notes
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and key is not None)
    if has_alpha:
        rgba = np.asarray(im.convert("RGBA"), dtype=np.uint8)
        notes.append(f"{mode}->RGB (alpha composited on white)")
        return composite_on_white(rgba[..., :3], rgba[..., 3]), notes
    if mode == "P":
        notes.append("P->RGB (palette)")
    elif mode == "CMYK":
        notes.append("CMYK->RGB (Pillow, no ICC)")
    else:
        notes.append(f"{mode}->RGB (Pillow)")
    return np.asarray(im.convert("RGB"), dtype=np.uint8), notes


def _signed(im: Any) -> bool:
    fmt = getattr(im, "tag_v2", {}).get(339) if im.format == "TIFF" else None
    if isinstance(fmt, tuple | list):
        fmt = fmt[0] if fmt else None
    return fmt == 2


# -- formats read here: PGM/PPM (exact maxval scaling), 16-bpp BMP (bitfields) ----------------------------


def _netpbm_header(data: bytes, where: str) -> tuple[int, int, int, int] | None:
    """(width, height, maxval, offset just after maxval) of a P2/P3/P5/P6 header; None if ``data`` ends first."""
    pos, fields = 2, []
    while len(fields) < 3:
        while pos < len(data) and (data[pos : pos + 1].isspace() or data[pos : pos + 1] == b"#"):
            if data[pos : pos + 1] == b"#":
                end = data.find(b"\n", pos)
                if end < 0:
                    return None
                pos = end + 1
            else:
                pos += 1
        start = pos
        while pos < len(data) and data[pos : pos + 1].isdigit():
            pos += 1
        if pos >= len(data):
            return None
        if start == pos:
            raise DatasetError(f"cannot read image {where}: malformed {data[:2].decode()} header")
        fields.append(int(data[start:pos]))
    return fields[0], fields[1], fields[2], pos


def _netpbm(source: str | Path | bytes, where: str, max_pixels: int | None) -> Decoded:
    """P2/P3 (plain) and P5/P6 (binary) PGM/PPM: samples scaled by the header's maxval (Pillow rescales
    maxvals other than 255 and 65535 to its own range first, and reads 16-bit PGM as mode I). The size is
    checked from the header before the raster is read."""
    data = _read_prefix(source, 4096)
    header = _netpbm_header(data, where)
    if header is None and len(data) == 4096:  # a long comment: read on
        data = _read_all(source)
        header = _netpbm_header(data, where)
    if header is None:
        raise DatasetError(f"cannot read image {where}: {data[:2].decode()} header is incomplete")
    w, h, maxval, pos = header
    magic = data[:2]
    if not 0 < maxval < 65536:
        raise DatasetError(f"cannot read image {where}: maxval {maxval} is not in 1..65535")
    _check_size(where, w, h, max_pixels)
    data = _read_all(source)
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = w * h * channels
    if magic in (b"P5", b"P6"):
        if pos >= len(data) or not data[pos : pos + 1].isspace():
            raise DatasetError(f"cannot read image {where}: no whitespace after the maxval")
        raster = data[pos + 1 :]
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        if len(raster) < count * dtype.itemsize:
            raise DatasetError(
                f"cannot read image {where}: truncated ({len(raster)} of {count * dtype.itemsize} raster bytes)"
            )
        samples = np.frombuffer(raster, dtype=dtype, count=count)
    else:
        text = re.sub(rb"#[^\n]*", b" ", data[pos:])
        tokens = text.split()
        if len(tokens) < count:
            raise DatasetError(f"cannot read image {where}: truncated ({len(tokens)} of {count} samples)")
        try:
            samples = np.array([int(t) for t in tokens[:count]], dtype=np.int64)
        except ValueError:
            raise DatasetError(f"cannot read image {where}: a sample is not an integer") from None
    if samples.size and int(samples.max()) > maxval:
        raise DatasetError(f"cannot read image {where}: a sample is above the header's maxval {maxval}")
    samples = samples.reshape(h, w, channels) if channels == 3 else samples.reshape(h, w)
    notes = [] if maxval == 255 else [_depth_note(f"maxval {maxval}", maxval)]
    a = to_8bit(samples, maxval)
    if channels == 1:
        notes.append("L->RGB (replicated)")
        a = _gray_to_rgb(a)
    return Decoded(np.ascontiguousarray(a), "; ".join(notes), 1)


def _bmp16(source: str | Path | bytes, head: bytes, where: str, max_pixels: int | None) -> Decoded:
    """16 bits per pixel BMP: each field scaled by its declared width (BI_RGB: X1R5G5B5; BI_BITFIELDS /
    BI_ALPHABITFIELDS: the header's masks). Pillow expands 5/6-bit fields with floor(v*255/M) instead. The
    size is checked from the header before the pixels are read."""
    if len(head) < 54:
        raise DatasetError(f"cannot read image {where}: truncated BMP header")
    w = int.from_bytes(head[18:22], "little", signed=True)
    h = int.from_bytes(head[22:26], "little", signed=True)
    _check_size(where, w, abs(h), max_pixels)
    data = _read_all(source)
    offset = int.from_bytes(data[10:14], "little")
    header = int.from_bytes(data[14:18], "little")
    compression = int.from_bytes(data[30:34], "little")
    if compression == 0:
        masks = [0x7C00, 0x03E0, 0x001F, 0]
    elif compression in (3, 6):
        n = 4 if compression == 6 or header >= 56 else 3
        if len(data) < 54 + 4 * n:
            raise DatasetError(f"cannot read image {where}: truncated BMP bitfields")
        masks = [int.from_bytes(data[54 + 4 * i : 58 + 4 * i], "little") for i in range(n)] + [0] * (4 - n)
    else:
        raise DatasetError(f"cannot read image {where}: 16-bpp BMP compression {compression} is not supported")
    if not all(masks[:3]) or any(m >> 16 for m in masks):
        raise DatasetError(f"cannot read image {where}: invalid 16-bpp BMP bitfields {[hex(m) for m in masks]}")
    stride = (w * 16 + 31) // 32 * 4
    raster = data[offset : offset + stride * abs(h)]
    if len(raster) < stride * abs(h):
        raise DatasetError(f"cannot read image {where}: truncated ({len(raster)} of {stride * abs(h)} pixel bytes)")
    words = np.frombuffer(raster, dtype="<u2").reshape(abs(h), stride // 2)[:, :w]
    if h > 0:
        words = words[::-1]  # bottom-up rows
    fields, widths = [], []
    for mask in masks:
        if not mask:
            continue
        shift = (mask & -mask).bit_length() - 1
        width = bin(mask).count("1")
        fields.append(to_8bit((words & mask) >> shift, 2**width - 1))
        widths.append(width)
    layout = "".join(f"{c}{n}" for c, n in zip("RGBA", widths, strict=False))
    notes = [f"16-bpp BMP {layout}->8-bit (round(v*255/(2**n-1)) per field)"]
    rgb = np.dstack(fields[:3])
    if len(fields) == 4:
        notes.append("RGBA->RGB (alpha composited on white)")
        rgb = composite_on_white(rgb, fields[3])
    return Decoded(np.ascontiguousarray(rgb), "; ".join(notes), 1)
