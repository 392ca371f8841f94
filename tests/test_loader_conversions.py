"""Loader conversions follow the file's DECLARED format, never its pixel values or its container (issue #16).

PNG, TIFF, PGM/PPM, JPEG, WebP and BMP x {8-bit RGB, 8-bit gray, 16-bit, palette, alpha, orientation tag}, each
where the format can hold it, built in ``tmp_path`` with Pillow or, where Pillow cannot write the case (16-bit
colour, maxvals other than 255/65535, 16-bpp and alpha-mask BMPs), from raw bytes written here. Each case asserts
the exact uint8 pixels, the recorded conversion and the recorded EXIF orientation. Then: the suite's
``max_pixels`` over Pillow's own decompression-bomb limit, broken files, and the HDF5 / hub-cell paths.

The documented rule for N-bit samples (maxval M = 2**N - 1, or the PGM/PPM header's) is round(v*255/M) with
halves rounded up; :func:`ref8` is that formula, written out here independently of the harness.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from harness.datasets import DatasetError, create_dataset, decode_image
from harness.datasets.selection import select_images
from harness.hashing import pixels_sha256


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "no-cache"))


def ref8(v, maxval: int) -> np.ndarray:
    """The documented rule: round(v * 255 / maxval), half up, exact."""
    return ((np.asarray(v, dtype=np.int64) * 510 + maxval) // (2 * maxval)).astype(np.uint8)


def over_white(rgb, alpha) -> np.ndarray:
    """The documented alpha rule on 8-bit samples: round((c*a + 255*(255-a)) / 255), half up."""
    c, a = np.asarray(rgb, dtype=np.int64), np.asarray(alpha, dtype=np.int64)[..., None]
    return ((2 * (c * a + 255 * (255 - a)) + 255) // 510).astype(np.uint8)


def gray3(g) -> np.ndarray:
    return np.repeat(np.asarray(g, dtype=np.uint8)[..., None], 3, axis=2)


# -- sources -------------------------------------------------------------------------------------------------

RGB8 = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]], [[10, 20, 30], [128, 64, 32], [1, 2, 3]]], np.uint8)
GRAY8 = np.array([[0, 1, 127], [128, 254, 255]], np.uint8)
GRAY16 = np.array([[0, 255, 1000], [32896, 65279, 65535]], np.uint16)
GRAY16_EXPECTED = np.array([[0, 1, 4], [128, 254, 255]], np.uint8)  # truncation would give 0, 3, 254
GRAY16_SMALL = np.array([[0, 1, 128], [129, 200, 255]], np.uint16)  # a 16-bit image whose values are all < 256
GRAY16_SMALL_EXPECTED = np.array([[0, 0, 0], [1, 1, 1]], np.uint8)
RGB16 = np.array([[[0, 300, 65535], [1000, 255, 128]], [[65280, 65279, 257], [2, 3, 32896]]], np.uint16)
RGB16_EXPECTED = np.array([[[0, 1, 255], [4, 1, 0]], [[254, 254, 1], [0, 0, 128]]], np.uint8)
ALPHA16 = np.array([[65535, 0], [32896, 65535]], np.uint16)
RGBA8 = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]], [[0, 0, 0, 128], [200, 100, 50, 64]]], np.uint8)
PALETTE = [(255, 0, 0), (0, 128, 255), (7, 7, 7), (250, 250, 0)]
INDICES = np.array([[0, 1, 2], [3, 2, 1]], np.uint8)
PALETTE_EXPECTED = np.array(PALETTE, np.uint8)[INDICES]

# the stored 2x3 image [[a b c], [d e f]] as displayed under each EXIF orientation (written out by hand)
A, B, C, D, E, F = RGB8[0, 0], RGB8[0, 1], RGB8[0, 2], RGB8[1, 0], RGB8[1, 1], RGB8[1, 2]
DISPLAYED = {
    1: [[A, B, C], [D, E, F]],
    2: [[C, B, A], [F, E, D]],
    3: [[F, E, D], [C, B, A]],
    4: [[D, E, F], [A, B, C]],
    5: [[A, D], [B, E], [C, F]],
    6: [[D, A], [E, B], [F, C]],
    7: [[F, C], [E, B], [D, A]],
    8: [[C, F], [B, E], [A, D]],
}
WORDS = {2: "flipped left-right", 3: "rotated 180", 4: "flipped top-bottom", 5: "transposed",
         6: "rotated 90 clockwise", 7: "transversed", 8: "rotated 90 counter-clockwise"}  # fmt: skip


def numpy_orient(a: np.ndarray, o: int) -> np.ndarray:
    """The same table as DISPLAYED, as array operations (for the lossy JPEG case)."""
    return {1: a, 2: a[:, ::-1], 3: a[::-1, ::-1], 4: a[::-1], 5: a.swapaxes(0, 1), 6: np.rot90(a, -1),
            7: np.rot90(a[:, ::-1], -1), 8: np.rot90(a, 1)}[o]  # fmt: skip


def test_the_orientation_table_is_consistent():
    for o, shown in DISPLAYED.items():
        assert (numpy_orient(RGB8, o) == np.array(shown)).all(), o


# -- writers for what Pillow cannot write ---------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def png_bytes(samples: np.ndarray, color_type: int, bit_depth: int = 16, chunks: bytes = b"") -> bytes:
    """A PNG with every row filtered by a different filter (None, Sub, Up, Average, Paeth, ...)."""
    h, w = samples.shape[:2]
    rows = [samples[y].astype(">u2" if bit_depth == 16 else "u1").tobytes() for y in range(h)]
    bpp = (samples.shape[2] if samples.ndim == 3 else 1) * bit_depth // 8
    out, prev = b"", bytes(len(rows[0]))
    for y, raw in enumerate(rows):
        kind = y % 5
        filtered = bytearray()
        for i, x in enumerate(raw):
            left = raw[i - bpp] if i >= bpp else 0
            up, up_left = prev[i], prev[i - bpp] if i >= bpp else 0
            pred = [0, left, up, (left + up) // 2, _paeth(left, up, up_left)][kind]
            filtered.append((x - pred) % 256)
        out += bytes([kind]) + bytes(filtered)
        prev = raw
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + chunks
        + _chunk(b"IDAT", zlib.compress(out))
        + _chunk(b"IEND", b"")
    )


def tiff_bytes(samples: np.ndarray, bits: int, photometric: int, *, big_endian: bool = False,
               deflate: bool = False, orientation: int | None = None, extra_samples: int | None = None,
               sample_format: int | None = None) -> bytes:  # fmt: skip
    """A one-strip baseline TIFF (uncompressed, or Adobe deflate: then Pillow decodes through libtiff)."""
    e = ">" if big_endian else "<"
    h, w = samples.shape[:2]
    spp = samples.shape[2] if samples.ndim == 3 else 1
    data = samples.astype(f"{e}u{bits // 8}").tobytes()
    if deflate:
        data = zlib.compress(data)
    tags = {256: (3, [w]), 257: (3, [h]), 258: (3, [bits] * spp), 259: (3, [8 if deflate else 1]),
            262: (3, [photometric]), 273: (4, [0]), 277: (3, [spp]), 278: (3, [h]), 279: (4, [len(data)])}  # fmt: skip
    if orientation is not None:
        tags[274] = (3, [orientation])
    if extra_samples is not None:
        tags[338] = (3, [extra_samples])
    if sample_format is not None:
        tags[339] = (3, [sample_format] * spp)
    n = len(tags)
    after_ifd = 8 + 2 + 12 * n + 4
    extra = b""
    entries = []
    for tag in sorted(tags):
        kind, values = tags[tag]
        packed = b"".join(struct.pack(e + ("H" if kind == 3 else "I"), v) for v in values)
        if len(packed) > 4:
            entries.append((tag, kind, len(values), struct.pack(e + "I", after_ifd + len(extra))))
            extra += packed
        else:
            entries.append((tag, kind, len(values), packed.ljust(4, b"\0")))
    data_offset = after_ifd + len(extra)
    ifd = struct.pack(e + "H", n)
    for tag, kind, count, value in entries:
        if tag == 273:
            value = struct.pack(e + "I", data_offset)
        ifd += struct.pack(e + "HHI", tag, kind, count) + value
    magic = b"MM\x00\x2a" if big_endian else b"II\x2a\x00"
    return magic + struct.pack(e + "I", 8) + ifd + b"\0\0\0\0" + extra + data


def netpbm_bytes(magic: str, samples: np.ndarray, maxval: int) -> bytes:
    h, w = samples.shape[:2]
    header = f"{magic}\n# written by the test\n{w} {h}\n{maxval}\n".encode()
    if magic in ("P2", "P3"):
        return header + " ".join(str(int(v)) for v in samples.ravel()).encode() + b"\n"
    return header + samples.astype(">u2" if maxval > 255 else "u1").tobytes()


def bmp_bytes(words: np.ndarray, bpp: int, masks: tuple[int, ...] | None, v4: bool = False) -> bytes:
    """A bottom-up BMP of 16- or 32-bit words; ``masks``: BI_BITFIELDS (R, G, B[, A]); None: BI_RGB."""
    h, w = words.shape
    stride = (w * bpp + 31) // 32 * 4
    rows = b"".join(words[y].astype(f"<u{bpp // 8}").tobytes().ljust(stride, b"\0") for y in range(h - 1, -1, -1))
    header_size = 108 if v4 else 40
    mask_bytes = b"".join(struct.pack("<I", m) for m in (masks or ()))
    info = struct.pack("<IiiHHIIiiII", header_size, w, h, 1, bpp, 3 if masks else 0, len(rows), 2835, 2835, 0, 0)
    if v4:
        info += mask_bytes.ljust(16, b"\0") + b"BGRs" + bytes(36) + bytes(12)
        mask_bytes = b""
    offset = 14 + len(info) + len(mask_bytes)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + mask_bytes + rows


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def palette_image() -> Image.Image:
    im = Image.frombytes("P", (3, 2), INDICES.tobytes())
    im.putpalette([c for rgb in PALETTE for c in rgb])
    return im


def with_orientation(o: int) -> Image.Exif:
    exif = Image.Exif()
    exif[274] = o
    return exif


# -- the matrix ----------------------------------------------------------------------------------------------

SUFFIX = {"png": ".png", "tiff": ".tif", "pgm": ".pgm", "ppm": ".ppm", "jpeg": ".jpg", "webp": ".webp", "bmp": ".bmp"}


def jpeg_reference(data: bytes) -> np.ndarray:
    """libjpeg's output through Pillow: the definition of a JPEG's pixels."""
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _case(fmt: str, case: str) -> tuple[bytes, np.ndarray, list[str], int]:
    """(file bytes, expected uint8 pixels, substrings the recorded conversion must hold, recorded orientation)."""
    rgb, gray = Image.fromarray(RGB8), Image.fromarray(GRAY8)
    lossless = {"webp": {"lossless": True}}.get(fmt, {})
    pil_fmt = {"png": "PNG", "tiff": "TIFF", "webp": "WEBP", "bmp": "BMP", "jpeg": "JPEG"}.get(fmt)
    if case == "rgb8":
        if fmt == "ppm":
            return netpbm_bytes("P6", RGB8, 255), RGB8, [], 1
        if fmt == "jpeg":
            data = pil_bytes(rgb, "JPEG", quality=95)
            return data, jpeg_reference(data), ["YCbCr->RGB (libjpeg, JFIF)"], 1
        return pil_bytes(rgb, pil_fmt, **lossless), RGB8, [], 1
    if case == "gray8":
        if fmt == "pgm":
            return netpbm_bytes("P5", GRAY8, 255), gray3(GRAY8), ["L->RGB (replicated)"], 1
        if fmt == "jpeg":
            data = pil_bytes(gray, "JPEG", quality=95)
            return data, jpeg_reference(data), ["L->RGB (replicated)"], 1
        if fmt == "webp":  # WebP has no gray: Pillow stores R = G = B
            return pil_bytes(gray, "WEBP", lossless=True), gray3(GRAY8), [], 1
        return pil_bytes(gray, pil_fmt), gray3(GRAY8), ["L->RGB (replicated)"], 1
    if case == "gray16":
        note = "16-bit->8-bit (round(v*255/65535))"
        if fmt == "png":
            return pil_bytes(Image.fromarray(GRAY16), "PNG"), gray3(GRAY16_EXPECTED), [note, "L->RGB"], 1
        if fmt == "tiff":
            return pil_bytes(Image.fromarray(GRAY16), "TIFF"), gray3(GRAY16_EXPECTED), [note, "L->RGB"], 1
        if fmt == "pgm":
            data = netpbm_bytes("P5", GRAY16, 65535)
            return data, gray3(GRAY16_EXPECTED), ["maxval 65535->8-bit (round(v*255/65535))", "L->RGB"], 1
    if case == "gray16_small":  # declared 16-bit, every value below 256: still 16-bit
        if fmt == "png":
            return png_bytes(GRAY16_SMALL, 0), gray3(GRAY16_SMALL_EXPECTED), ["16-bit->8-bit"], 1
        if fmt == "tiff":
            return tiff_bytes(GRAY16_SMALL, 16, 1), gray3(GRAY16_SMALL_EXPECTED), ["16-bit->8-bit"], 1
        if fmt == "pgm":
            data = netpbm_bytes("P5", GRAY16_SMALL, 65535)
            return data, gray3(GRAY16_SMALL_EXPECTED), ["maxval 65535->8-bit"], 1
    if case == "rgb16":
        note = "16-bit->8-bit (round(v*255/65535))"
        if fmt == "png":
            return png_bytes(RGB16, 2), RGB16_EXPECTED, [note], 1
        if fmt == "tiff":
            return tiff_bytes(RGB16, 16, 2), RGB16_EXPECTED, [note], 1
        if fmt == "ppm":
            return netpbm_bytes("P6", RGB16, 65535), RGB16_EXPECTED, ["maxval 65535->8-bit"], 1
        if fmt == "bmp":  # 16 bits per pixel: R5 G6 B5 fields, each scaled by its declared width
            r, g = np.array([[0, 31, 1], [3, 16, 30]]), np.array([[0, 63, 1], [2, 32, 62]])
            b = np.array([[31, 0, 1]] * 2)
            words = (r << 11) | (g << 5) | b
            expected = np.dstack([ref8(r, 31), ref8(g, 63), ref8(b, 31)])
            assert expected[1, 0, 0] == 25  # round(3*255/31) = round(24.68): Pillow's floor gives 24
            return bmp_bytes(words, 16, (0xF800, 0x07E0, 0x001F)), expected, ["16-bpp BMP R5G6B5->8-bit"], 1
    if case == "palette":
        if fmt == "webp":  # stored as RGB by WebP, lossless: the palette's colours
            return pil_bytes(palette_image(), "WEBP", lossless=True), PALETTE_EXPECTED, [], 1
        return pil_bytes(palette_image(), pil_fmt), PALETTE_EXPECTED, ["P->RGB (palette)"], 1
    if case == "alpha":
        expected = over_white(RGBA8[..., :3], RGBA8[..., 3])
        assert expected[0, 1].tolist() == [255, 255, 255] and expected[0, 0].tolist() == [10, 20, 30]
        if fmt == "bmp":  # 32-bpp BI_BITFIELDS with an alpha mask (V4 header): declared alpha
            words = (RGBA8[..., 3].astype(np.uint32) << 24) | (RGBA8[..., 0].astype(np.uint32) << 16)
            words |= (RGBA8[..., 1].astype(np.uint32) << 8) | RGBA8[..., 2]
            data = bmp_bytes(words, 32, (0xFF0000, 0xFF00, 0xFF, 0xFF000000), v4=True)
            return data, expected, ["RGBA->RGB (alpha composited on white)"], 1
        return pil_bytes(Image.fromarray(RGBA8), pil_fmt, **lossless), expected, ["alpha composited on white"], 1
    if case.startswith("orientation"):
        o = int(case[-1])
        words = [] if o == 1 else [f"EXIF orientation {o} applied ({WORDS[o]})"]
        if fmt == "jpeg":
            big = np.kron(RGB8, np.ones((8, 8, 1), np.uint8))  # 8x8 flat blocks
            tagged = pil_bytes(Image.fromarray(big), "JPEG", quality=95, exif=with_orientation(o))
            plain = pil_bytes(Image.fromarray(big), "JPEG", quality=95)
            return tagged, numpy_orient(jpeg_reference(plain), o), ["YCbCr->RGB (libjpeg, JFIF)", *words], o
        if fmt == "tiff":
            return tiff_bytes(RGB8, 8, 2, orientation=o), np.array(DISPLAYED[o], np.uint8), words, o
        return pil_bytes(rgb, pil_fmt, exif=with_orientation(o), **lossless), np.array(DISPLAYED[o]), words, o
    raise AssertionError(f"no case {fmt}/{case}")


ORIENTED = ("png", "tiff", "jpeg", "webp")  # the formats that can carry an orientation tag
MATRIX = [
    *[(f, "rgb8") for f in ("png", "tiff", "ppm", "jpeg", "webp", "bmp")],
    *[(f, "gray8") for f in ("png", "tiff", "pgm", "jpeg", "webp", "bmp")],
    *[(f, "gray16") for f in ("png", "tiff", "pgm")],
    *[(f, "gray16_small") for f in ("png", "tiff", "pgm")],
    *[(f, "rgb16") for f in ("png", "tiff", "ppm", "bmp")],  # JPEG, WebP: 8-bit only; BMP: 16 bits per pixel
    *[(f, "palette") for f in ("png", "tiff", "webp", "bmp")],  # JPEG, PGM/PPM: no palette
    *[(f, "alpha") for f in ("png", "tiff", "webp", "bmp")],  # JPEG, PGM/PPM: no alpha
    *[(f, f"orientation{o}") for f in ORIENTED for o in range(1, 9)],  # BMP, PGM/PPM: no tag
]


def load_one(tmp_path, name: str, data: bytes, **options):
    """Through the real loader: a folder holding the one file, decoded, hashed, reloaded."""
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    ds = create_dataset("folder", path=str(folder), **options)
    entry = ds.resolve(next(e for e in ds.index() if e.id == name))
    pixels = ds.load(entry)
    assert pixels_sha256(pixels) == entry.sha256
    return pixels, entry


@pytest.mark.parametrize(("fmt", "case"), MATRIX, ids=[f"{f}-{c}" for f, c in MATRIX])
def test_declared_format_pixels(tmp_path, fmt, case):
    data, expected, _, _ = _case(fmt, case)
    pixels, _ = load_one(tmp_path, f"img{SUFFIX[fmt]}", data)
    assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape == np.asarray(expected).shape
    assert (pixels == np.asarray(expected, np.uint8)).all(), (pixels.tolist(), np.asarray(expected).tolist())


@pytest.mark.parametrize(("fmt", "case"), MATRIX, ids=[f"{f}-{c}" for f, c in MATRIX])
def test_declared_format_record(tmp_path, fmt, case):
    """The per-image record names every conversion step and the EXIF orientation applied (1 = none)."""
    data, _, notes, orientation = _case(fmt, case)
    _, entry = load_one(tmp_path, f"img{SUFFIX[fmt]}", data)
    for note in notes:
        assert note in entry.conversion, entry.conversion
    if not notes:
        assert entry.conversion == ""
    record = entry.record()
    assert record["orientation"] == orientation == entry.orientation
    assert record.get("conversion", "") == entry.conversion


# -- more 16-bit layouts and maxvals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("magic", "maxval", "samples", "expected"),
    [
        # dark images: Pillow rescales to 0..65535 (mode I) and every value < 256 looked 8-bit to the old loader
        ("P5", 1023, [[0, 1, 2, 3]], [[0, 0, 0, 1]]),  # 2*255/1023 = 0.4985, 3*255/1023 = 0.748
        ("P5", 4095, [[0, 8, 15, 15]], [[0, 0, 1, 1]]),
        ("P2", 1023, [[0, 1, 2, 3]], [[0, 0, 0, 1]]),
        # ties: v*255/maxval = k + 0.5 is rounded up (netpbm's own rule), not to even
        ("P5", 1000, [[100, 300, 700, 1000]], [[26, 77, 179, 255]]),
        ("P5", 100, [[30, 70, 50, 1]], [[77, 179, 128, 3]]),
        ("P6", 100, [[[30, 70, 50], [0, 100, 1]]], [[[77, 179, 128], [0, 255, 3]]]),
        ("P3", 1000, [[[100, 300, 700], [1, 2, 999]]], [[[26, 77, 179], [0, 1, 255]]]),
        # full range, 10 and 12 bits (a regression guard: right before too)
        ("P6", 1023, [[[0, 1000, 1023], [512, 511, 4]]], [[[0, 249, 255], [128, 127, 1]]]),
        ("P6", 4095, [[[0, 4095, 2048], [2047, 16, 8]]], [[[0, 255, 128], [127, 1, 0]]]),
    ],
)
def test_netpbm_maxval_scales_by_the_header(magic, maxval, samples, expected):
    samples, expected = np.array(samples), np.array(expected, np.uint8)
    assert (ref8(samples, maxval) == expected).all()  # the table above is the documented rule
    rgb, conv = decode_image(netpbm_bytes(magic, samples, maxval), f"x.{magic}")
    assert (rgb == (expected if expected.ndim == 3 else gray3(expected))).all(), rgb.tolist()
    assert f"maxval {maxval}->8-bit (round(v*255/{maxval}))" in conv


def test_netpbm_bad_samples_and_truncation_are_one_line_errors():
    for data, message in [
        (b"P5\n2 2\n255\n\x00\x01", "truncated"),
        (b"P5\n2 1\n1023\n\x00\x01\x04\x00", "above the header's maxval 1023"),
        (b"P2\n2 1\n3\n1 9\n", "above the header's maxval 3"),
        (b"P5\n2 1\n0\n\x00\x00", "maxval 0"),
        (b"P6\n2", "header is incomplete"),
    ]:
        with pytest.raises(DatasetError, match=message) as err:
            decode_image(data, "bad.pgm")
        assert "\n" not in str(err.value) and "bad.pgm" in str(err.value)


VARIANTS16 = ("big-endian", "deflate-libtiff", "rgba", "rgbx", "cmyk", "png-rgba", "png-la", "tiff-o6", "png-o6")


@pytest.mark.parametrize("variant", [*VARIANTS16, "png-trns-gray16", "png-trns-rgb16"])
def test_sixteen_bit_colour_keeps_both_bytes(variant):
    alpha8 = ref8(ALPHA16, 65535)
    rgb8 = RGB16_EXPECTED
    if variant == "big-endian":
        data, expected = tiff_bytes(RGB16, 16, 2, big_endian=True), rgb8
    elif variant == "deflate-libtiff":
        data, expected = tiff_bytes(RGB16, 16, 2, deflate=True), rgb8
    elif variant == "rgba":
        data = tiff_bytes(np.dstack([RGB16, ALPHA16]), 16, 2, extra_samples=2)
        expected = over_white(rgb8, alpha8)
    elif variant == "rgbx":  # an extra sample the file declares unspecified (0): ignored, like BMP's BI_RGB byte
        data, expected = tiff_bytes(np.dstack([RGB16, ALPHA16]), 16, 2, extra_samples=0), rgb8
    elif variant == "cmyk":
        cmyk16 = np.dstack([RGB16, ALPHA16])
        data = tiff_bytes(cmyk16, 16, 5)
        cmyk8 = ref8(cmyk16, 65535)
        expected = np.asarray(Image.frombytes("CMYK", (2, 2), cmyk8.tobytes()).convert("RGB"))
    elif variant == "png-rgba":
        data, expected = png_bytes(np.dstack([RGB16, ALPHA16]), 6), over_white(rgb8, alpha8)
    elif variant == "png-la":
        gray = RGB16[..., 0]
        data, expected = png_bytes(np.dstack([gray, ALPHA16]), 4), over_white(gray3(rgb8[..., 0]), alpha8)
    elif variant == "tiff-o6":  # Pillow turns TIFFs itself: both decodes turned, once
        data, expected = tiff_bytes(RGB16, 16, 2, orientation=6), np.rot90(rgb8, -1)
    elif variant == "png-o6":
        exif = _chunk(b"eXIf", with_orientation(6).tobytes())
        data, expected = png_bytes(RGB16, 2, chunks=exif), np.rot90(rgb8, -1)
    elif variant == "png-trns-gray16":  # a 16-bit colour key matches raw samples: 1000 is transparent, 1001 not
        gray = np.array([[1000, 1001], [0, 65535]], np.uint16)
        data = png_bytes(gray, 0, chunks=_chunk(b"tRNS", struct.pack(">H", 1000)))
        expected = gray3([[255, 4], [0, 255]])
    else:  # (1000, 255, 128) is pixel [0, 1]; 8-bit look-alikes such as (1001, 255, 128) would not be keyed
        data = png_bytes(RGB16, 2, chunks=_chunk(b"tRNS", struct.pack(">HHH", 1000, 255, 128)))
        expected = rgb8.copy()
        expected[0, 1] = 255
    rgb, conv = decode_image(data, variant)
    assert (rgb == expected).all(), (rgb.tolist(), np.asarray(expected).tolist())
    assert "16-bit->8-bit (round(v*255/65535))" in conv


def test_twelve_bit_tiff_scales_by_its_declared_depth():
    """BitsPerSample = 12: Pillow hands over 0..4095 in an I;16 image; dividing by 257 would make white 16."""
    data = bytearray(tiff_bytes(np.zeros((1, 4), np.uint16), 16, 1))
    at = data.find(struct.pack("<HHI", 258, 3, 1))
    data[at + 8 : at + 10] = struct.pack("<H", 12)
    at = data.find(struct.pack("<HHI", 279, 4, 1))
    data[at + 8 : at + 12] = struct.pack("<I", 6)
    packed = bytes([0x00, 0x0F, 0xFF, 0x80, 0x00, 0x01])  # 0, 4095, 2048, 1 as 12-bit samples, MSB first
    rgb, conv = decode_image(bytes(data[:-8]) + packed, "twelve.tif")
    assert rgb[..., 0].tolist() == [[0, 255, 128, 0]] and (rgb[..., 0] == rgb[..., 2]).all()
    assert conv == "12-bit->8-bit (round(v*255/4095)); L->RGB (replicated)"


def test_sub_byte_and_bilevel_and_color_keys():
    bits = GRAY8 > 100
    rgb, conv = decode_image(pil_bytes(Image.fromarray(bits), "PNG"))
    assert (rgb == gray3(bits * 255)).all() and conv == "1->RGB (replicated)"
    ihdr = struct.pack(">IIBBBBB", 4, 1, 2, 0, 0, 0, 0)  # a 2-bit gray PNG, one row 0 1 2 3 (packed 0b00011011)
    two_bit = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00\x1b"))
    rgb, conv = decode_image(two_bit + _chunk(b"IEND", b""))
    assert (rgb == gray3([[0, 85, 170, 255]])).all() and conv == "L->RGB (replicated)"
    rgb, conv = decode_image(pil_bytes(Image.fromarray(RGB8), "PNG", transparency=(10, 20, 30)))
    assert rgb[1, 0].tolist() == [255, 255, 255] and (rgb[0] == RGB8[0]).all()
    assert "colour-key transparency composited on white" in conv
    rgb, conv = decode_image(pil_bytes(Image.fromarray(GRAY8), "PNG", transparency=127))
    assert rgb[0, 2].tolist() == [255, 255, 255] and rgb[1, 0].tolist() == [128, 128, 128]
    assert "colour-key transparency composited on white" in conv
    p = palette_image()
    rgb, conv = decode_image(pil_bytes(p, "GIF", transparency=2))
    expected = PALETTE_EXPECTED.copy()
    expected[INDICES == 2] = 255
    assert (rgb == expected).all() and "P->RGB (alpha composited on white)" in conv


def test_bmp_bi_rgb_555_and_unused_fourth_byte():
    r, g, b = np.array([[0, 31, 3]]), np.array([[31, 0, 3]]), np.array([[1, 2, 3]])
    rgb, conv = decode_image(bmp_bytes((r << 10) | (g << 5) | b, 16, None))
    assert (rgb == np.dstack([ref8(r, 31), ref8(g, 31), ref8(b, 31)])).all() and rgb[0, 2, 0] == 25
    assert "16-bpp BMP R5G5B5->8-bit" in conv
    # Pillow writes RGBA as 32-bpp BI_RGB, whose fourth byte the format declares unused: no alpha is read
    rgb, conv = decode_image(pil_bytes(Image.fromarray(RGBA8), "BMP"))
    assert (rgb == RGBA8[..., :3]).all() and conv == ""


def test_integer_float_and_signed_modes():
    u32 = np.array([[0, 2**32 - 1], [2**31, 0x01010101]], np.uint32)
    rgb, conv = decode_image(tiff_bytes(u32, 32, 1), "u32.tif")
    assert rgb[..., 0].tolist() == [[0, 255], [128, 1]] and "32-bit->8-bit" in conv
    for name, data, why in [
        ("f.tif", pil_bytes(Image.fromarray(np.ones((2, 2), np.float32)), "TIFF"), "mode F"),
        ("s32.tif", pil_bytes(Image.fromarray(np.ones((2, 2), np.int32)), "TIFF"), "signed integer"),
        ("s16.tif", tiff_bytes(np.ones((2, 2), np.uint16), 16, 1, sample_format=2), "signed integer"),
    ]:
        with pytest.raises(DatasetError, match=why):
            decode_image(data, name)


def test_jpeg_cmyk_and_ycbcr_are_recorded():
    cmyk = Image.fromarray(np.kron(RGB8, np.ones((8, 8, 1), np.uint8))).convert("CMYK")
    data = pil_bytes(cmyk, "JPEG", quality=95)
    rgb, conv = decode_image(data)
    with Image.open(io.BytesIO(data)) as im:
        assert (rgb == np.asarray(im.convert("RGB"))).all()
    assert conv == "CMYK->RGB (Pillow, no ICC)"


# -- orientation: one rule for every format ----------------------------------------------------------------------


@pytest.mark.parametrize("o", range(1, 9))
def test_orientation_is_applied_alike_in_every_format(tmp_path, o):
    rgb = Image.fromarray(RGB8)
    files = {
        "a.png": pil_bytes(rgb, "PNG", exif=with_orientation(o)),
        "b.tif": tiff_bytes(RGB8, 8, 2, orientation=o),
        "c.tif": pil_bytes(rgb, "TIFF", tiffinfo={274: o}, compression="tiff_lzw"),  # libtiff path
        "d.webp": pil_bytes(rgb, "WEBP", lossless=True, exif=with_orientation(o)),
    }
    folder = tmp_path / "oriented"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    sel = select_images("folder", options={"path": str(folder)})
    assert [e.id for e in sel.entries] == sorted(files) and not sel.skipped
    for entry, row in zip(sel.entries, sel.record["images"], strict=True):
        assert (sel.dataset.load(entry) == np.array(DISPLAYED[o])).all(), entry.id
        assert row["orientation"] == o, entry.id
    assert len({e.sha256 for e in sel.entries}) == 1


def test_xmp_orientation_and_hub_pil_cells():
    from harness.datasets.stores import _image_value

    big = np.kron(RGB8, np.ones((8, 8, 1), np.uint8))
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>'
    )
    data = pil_bytes(Image.fromarray(big), "JPEG", quality=95, xmp=xmp)  # XMP only, no EXIF
    rgb, conv = decode_image(data)
    assert (rgb == np.rot90(jpeg_reference(data), 1)).all() and "EXIF orientation 8 applied" in conv
    data = pil_bytes(Image.fromarray(big), "JPEG", quality=95, exif=with_orientation(6))
    with Image.open(io.BytesIO(data)) as im:  # a decoded PIL image in a hub cell keeps its EXIF
        im.load()
        decoded = _image_value(im, "cell#0", None)
    assert decoded.orientation == 6 and (decoded.pixels == np.rot90(jpeg_reference(data), -1)).all()
    sixteen = Image.fromarray(GRAY16)
    assert (_image_value(sixteen, "cell#1", None).pixels == gray3(GRAY16_EXPECTED)).all()
    with pytest.raises(DatasetError, match="mode F"):
        _image_value(Image.fromarray(np.ones((2, 2), np.float32)), "cell#2", None)
    cell = _image_value(GRAY16_SMALL, "cell#3", None)  # an array cell: its dtype declares 16 bits
    assert (cell.pixels == gray3(GRAY16_SMALL_EXPECTED)).all() and "uint16->8-bit" in cell.conversion


# -- max_pixels governs every layer, Pillow's included -----------------------------------------------------------

BIG = (40, 30)  # 1200 px


def big_files() -> dict[str, bytes]:
    rgb = Image.new("RGB", BIG, (9, 8, 7))
    return {
        "a.png": pil_bytes(rgb, "PNG"),
        "b.tif": pil_bytes(rgb, "TIFF"),
        "c.jpg": pil_bytes(rgb, "JPEG"),
        "d.webp": pil_bytes(rgb, "WEBP", lossless=True),
        "e.bmp": pil_bytes(rgb, "BMP"),
        "f.ppm": netpbm_bytes("P6", np.asarray(rgb), 255),
        "g.pgm": netpbm_bytes("P5", np.zeros(BIG[::-1], np.uint16), 1023),
        "h.bmp": bmp_bytes(np.zeros(BIG[::-1], np.uint16), 16, None),
        "i.png": png_bytes(np.zeros((*BIG[::-1], 3), np.uint16), 2),
    }


@pytest.mark.parametrize("name", sorted(big_files()))
def test_over_the_suite_limit_is_skipped_with_the_reason(name):
    saved = Image.MAX_IMAGE_PIXELS
    with pytest.raises(DatasetError, match=r"exceeds max_pixels=1000\b") as err:
        decode_image(big_files()[name], name, max_pixels=1000)
    assert "\n" not in str(err.value) and name in str(err.value)
    assert saved == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("name", sorted(big_files()))
def test_pillows_own_limit_yields_to_the_suites(name, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow's default, scaled down: 1200 px is a "bomb" to it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        rgb, _ = decode_image(big_files()[name], name, max_pixels=2000)
        assert rgb.shape == (BIG[1], BIG[0], 3)
        assert decode_image(big_files()[name], name, max_pixels=None)[0].shape == (BIG[1], BIG[0], 3)
    assert Image.MAX_IMAGE_PIXELS == 500  # restored: nothing leaks out of the call
    with pytest.raises(DatasetError, match="exceeds max_pixels=1100"):
        decode_image(big_files()[name], name, max_pixels=1100)
    assert Image.MAX_IMAGE_PIXELS == 500


def test_a_folder_run_records_the_size_skips(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    folder = tmp_path / "sizes"
    folder.mkdir()
    for name, data in big_files().items():
        (folder / name).write_bytes(data)
    Image.new("RGB", (20, 20)).save(folder / "small.png")
    sel = select_images("folder", options={"path": str(folder), "max_pixels": 1000})
    assert [e.id for e in sel.entries] == ["small.png"]
    assert {s["id"] for s in sel.skipped} == set(big_files())
    assert all(s["stage"] == "decode" and "exceeds max_pixels=1000" in s["error"] for s in sel.skipped)
    sel = select_images("folder", options={"path": str(folder), "max_pixels": 2000})
    assert len(sel.entries) == len(big_files()) + 1 and not sel.skipped


def test_preprocessing_output_is_held_to_max_pixels(tmp_path):
    folder = tmp_path / "up"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "a.png")
    sel = select_images("folder", options={"path": str(folder), "max_pixels": 1000}, preprocessing="upscale(factor=2)")
    assert not sel.entries and sel.skipped[0]["stage"] == "preprocess"
    assert "exceeds max_pixels=1000" in sel.skipped[0]["error"]


# -- broken files: one line each, the run goes on -----------------------------------------------------------------


def broken_files() -> dict[str, bytes]:
    good = {
        "a.png": pil_bytes(Image.fromarray(RGB8), "PNG"),
        "b.tif": pil_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "TIFF"),
        "c.jpg": pil_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG"),
        "d.webp": pil_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "WEBP"),
        "e.bmp": pil_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "BMP"),
        "f.ppm": netpbm_bytes("P6", RGB8, 255),
        "g.pgm": netpbm_bytes("P5", GRAY16, 65535),
        "h.bmp": bmp_bytes(np.ones((8, 8), np.uint16), 16, None),
        "i.png": png_bytes(RGB16, 2),
    }
    return {name: data[: len(data) * 2 // 3] for name, data in good.items()}


def test_truncated_files_are_one_line_skips_and_the_run_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # set by some other library: not honoured
    folder = tmp_path / "broken"
    folder.mkdir()
    for name, data in broken_files().items():
        (folder / name).write_bytes(data)
        with pytest.raises(DatasetError, match="cannot read image") as err:
            decode_image(data, name)
        assert "\n" not in str(err.value)
    (folder / "good.png").write_bytes(pil_bytes(Image.fromarray(RGB8), "PNG"))
    sel = select_images("folder", options={"path": str(folder)})
    assert [e.id for e in sel.entries] == ["good.png"]
    assert {s["id"] for s in sel.skipped} == set(broken_files())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


# -- HDF5: the dtype declares the depth; the shape is checked against max_pixels ---------------------------------


def test_hdf5_rows_follow_their_dtype_and_max_pixels(tmp_path):
    import h5py

    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["images"] = np.stack([np.dstack([GRAY16_SMALL] * 3), np.dstack([GRAY16] * 3)])
        f["ans"] = np.array([0, 1], np.uint8)
    ds = create_dataset("galaxy10", path=str(path))
    first, second = (ds.resolve(e) for e in ds.index())
    assert (ds.load(first) == gray3(GRAY16_SMALL_EXPECTED)).all()  # uint16 values < 256 are still 16-bit
    assert (ds.load(second) == gray3(GRAY16_EXPECTED)).all()
    assert first.conversion == "uint16->8-bit (round(v*255/65535))"
    with pytest.raises(DatasetError, match="exceeds max_pixels=4"):
        create_dataset("galaxy10", path=str(path), max_pixels=4).read(first)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["images"] = np.ones((1, 2, 2, 3), np.float32)
    ds = create_dataset("galaxy10", path=str(tmp_path / "f.h5"))
    with pytest.raises(DatasetError, match="float32"):
        ds.read(ds.index()[0])


# -- ICC profiles: what the file declares is followed and recorded (issue #23) ------------------------------------
#: D50-adapted colorants (XYZ) of Adobe RGB (1998) and of sRGB, as their ICC profiles state them.
ADOBE_D50 = np.array([[0.6097, 0.2053, 0.1492], [0.3111, 0.6257, 0.0632], [0.0195, 0.0609, 0.7446]])
SRGB_D50 = np.array([[0.4361, 0.3851, 0.1431], [0.2225, 0.7169, 0.0606], [0.0139, 0.0971, 0.7141]])
ADOBE_GAMMA = 563 / 256


def _s15(v: float) -> bytes:
    return struct.pack(">i", round(v * 65536))


def _matrix_profile(name: str, colorants: np.ndarray, gamma: float, space: bytes = b"RGB ") -> bytes:
    """A minimal ICC v2 display profile (matrix + gamma curves), written here byte by byte from the ICC spec,
    so the test does not depend on the code under test or on a profile file being installed."""
    xyz = [b"XYZ \0\0\0\0" + b"".join(_s15(v) for v in col) for col in colorants.T]
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = name.encode() + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0\0\0" + b"\0" * 67
    desc += b"\0" * (-len(desc) % 4)
    tags = [(b"desc", desc), (b"wtpt", b"XYZ \0\0\0\0" + _s15(0.9642) + _s15(1.0) + _s15(0.8249))]
    tags += [(b"rXYZ", xyz[0]), (b"gXYZ", xyz[1]), (b"bXYZ", xyz[2])]
    tags += [(b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0\0\0\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for sig, body in tags:
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body + b"\0" * (-len(body) % 4)
    size = offset + len(data)
    header = struct.pack(">I", size) + b"\0" * 4 + bytes([2, 0x10, 0, 0]) + b"mntr" + space + b"XYZ "
    header += b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4 + _s15(0.9642) + _s15(1.0) + _s15(0.8249)
    header += b"\0" * (128 - len(header))
    return header + table + data


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    v = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(v * 255)


def _png_with_profile(path, pixels: np.ndarray, profile: bytes) -> None:
    Image.fromarray(pixels).save(path, icc_profile=profile)


def test_a_wide_gamut_icc_profile_is_converted_to_srgb_and_recorded(tmp_path):
    """Adobe RGB pixels: the expected sRGB values come from the colorants and curves (matrix arithmetic here),
    not from LittleCMS. Before: returned as stored, nothing recorded."""
    levels = np.array([[[200, 60, 60], [60, 160, 60], [128, 128, 128], [40, 90, 200]]], dtype=np.uint8)
    path = tmp_path / "adobe.png"
    _png_with_profile(path, levels, _matrix_profile("Test Adobe RGB", ADOBE_D50, ADOBE_GAMMA))
    pixels, conversion = decode_image(path)
    xyz = (levels[0].astype(float) / 255) ** ADOBE_GAMMA @ ADOBE_D50.T
    expected = _srgb_encode(xyz @ np.linalg.inv(SRGB_D50).T)
    assert np.abs(pixels[0].astype(int) - expected).max() <= 2, (pixels[0], expected)
    assert np.abs(pixels[0].astype(int) - levels[0]).max() > 10  # wide gamut: the stored values are not sRGB
    assert 'ICC profile "Test Adobe RGB"' in conversion and "-> sRGB" in conversion


def test_an_srgb_profile_keeps_the_pixels_and_is_recorded(tmp_path):
    levels = np.arange(0, 256 * 3, 7, dtype=np.uint16)[:96].reshape(4, 8, 3).astype(np.uint8)
    path = tmp_path / "srgb.png"
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _png_with_profile(path, levels, srgb)
    pixels, conversion = decode_image(path)
    assert np.array_equal(pixels, levels)
    assert "ICC profile" in conversion and "kept as stored" in conversion


def test_an_unreadable_profile_is_recorded_not_applied(tmp_path):
    levels = np.full((4, 4, 3), 90, np.uint8)
    path = tmp_path / "broken.png"
    _png_with_profile(path, levels, b"\0\0\0\x10not an icc profile at all")
    pixels, conversion = decode_image(path)
    assert np.array_equal(pixels, levels) and "unreadable" in conversion and "not applied" in conversion
