"""Bad input: each case is either a documented conversion or a per-image error, and the rest goes on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from test_datasets_loaders import tiny

from harness.datasets import DatasetError, decode_image
from harness.datasets.selection import select_images
from harness.hashing import pixels_sha256


def save(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "no-cache"))


def test_zero_byte_truncated_and_garbage_are_errors(tmp_path):
    good = save(Image.fromarray(tiny(1, (32, 32))))
    (tmp_path / "empty.png").write_bytes(b"")
    for name, data, message in [
        ("empty.png", b"", "empty"),
        ("truncated.png", good[: len(good) // 2], "cannot read image"),
        ("garbage.jpg", b"this is not an image at all", "cannot read image"),
    ]:
        with pytest.raises(DatasetError, match=message) as err:
            decode_image(data, name)
        assert name in str(err.value) and "\n" not in str(err.value)
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DatasetError, match=message):
            decode_image(tmp_path / name)
    with pytest.raises(DatasetError, match="No such file"):
        decode_image(tmp_path / "missing.png")


def test_grayscale_and_bilevel_are_replicated():
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    rgb, conv = decode_image(save(Image.fromarray(gray, mode="L")))
    assert (rgb == gray[..., None]).all() and conv.startswith("L->RGB")
    bits, conv = decode_image(save(Image.fromarray(gray > 30)))
    assert set(np.unique(bits)) == {0, 255} and conv.startswith("1->RGB")


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535, 257 * 200 + 100]], dtype=np.uint16)
    rgb, conv = decode_image(save(Image.fromarray(values)))
    assert rgb[0, :, 0].tolist() == [0, 100, 255, 200] and (rgb[..., 0] == rgb[..., 2]).all()
    assert conv == "16-bit->8-bit (round(v*255/65535)); L->RGB (replicated)"


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]  # opaque: kept
    rgba[0, 1] = [10, 20, 30, 0]  # transparent: white
    rgba[1, 0] = [0, 0, 0, 128]  # half: mid grey
    rgb, conv = decode_image(save(Image.fromarray(rgba, mode="RGBA")))
    assert rgb[0, 0].tolist() == [10, 20, 30] and rgb[0, 1].tolist() == [255, 255, 255]
    assert rgb[1, 0].tolist() == [127, 127, 127] and "alpha composited on white" in conv
    la, conv = decode_image(save(Image.fromarray(rgba[..., [0, 3]], mode="LA")))
    assert la[0, 1].tolist() == [255, 255, 255] and conv.startswith("LA->RGB")


def test_palette_with_and_without_transparency():
    src = Image.fromarray(tiny(3, (8, 8))).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    rgb, conv = decode_image(save(src))
    assert (rgb == np.asarray(src.convert("RGB"))).all() and conv.startswith("P->RGB")
    src.info["transparency"] = 0
    rgb_t, conv_t = decode_image(save(src, transparency=0))
    assert "alpha composited on white" in conv_t
    assert (rgb_t[np.asarray(src) == 0] == 255).all()


def test_cmyk_uses_pillows_conversion():
    cmyk = Image.fromarray(tiny(4, (8, 8))).convert("CMYK")
    rgb, conv = decode_image(save(cmyk, "JPEG", quality=95))
    with Image.open(io.BytesIO(save(cmyk, "JPEG", quality=95))) as im:
        assert im.mode == "CMYK"
        assert (rgb == np.asarray(im.convert("RGB"))).all()
    assert rgb.shape == (8, 8, 3) and conv.startswith("CMYK->RGB")


def test_huge_image_is_refused_from_its_header():
    data = save(Image.new("RGB", (2000, 1500), "white"))
    with pytest.raises(DatasetError, match="exceeds max_pixels=1000000"):
        decode_image(data, "big.png", max_pixels=1_000_000)
    assert decode_image(data, "big.png", max_pixels=3_000_000)[0].shape == (1500, 2000, 3)


def make_messy_folder(root):
    """Good images plus every bad case, in one folder."""
    root.mkdir(parents=True)
    Image.fromarray(tiny(1, (32, 32))).save(root / "good1.png")
    Image.fromarray(tiny(2, (32, 40))).save(root / "good2.png")
    Image.fromarray(tiny(3, (32, 32))).convert("L").save(root / "gray.png")
    Image.fromarray(tiny(4, (32, 32))).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray(np.full((32, 32), 40000, dtype=np.uint16)).save(root / "gray16.png")
    Image.fromarray(tiny(5, (32, 32))).convert("P").save(root / "palette.png")
    Image.fromarray(np.dstack([tiny(6, (32, 32)), np.full((32, 32), 100, np.uint8)])).save(root / "alpha.png")
    Image.fromarray(tiny(7, (4, 4))).save(root / "tiny.png")
    Image.new("RGB", (1200, 1000)).save(root / "huge.png")
    (root / "empty.png").write_bytes(b"")
    good = (root / "good1.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "garbage.jpg").write_bytes(b"not an image")
    return root


def test_a_messy_folder_records_each_bad_image_and_keeps_the_rest(tmp_path):
    root = make_messy_folder(tmp_path / "messy")
    sel = select_images("folder", options={"path": str(root), "max_pixels": 1_000_000}, min_side=16)
    used = {e.id: e for e in sel.entries}
    assert set(used) == {"good1.png", "good2.png", "gray.png", "cmyk.jpg", "gray16.png", "palette.png", "alpha.png"}
    skipped = {s["id"]: s for s in sel.skipped}
    assert set(skipped) == {"tiny.png", "huge.png", "empty.png", "truncated.png", "garbage.jpg"}
    assert skipped["tiny.png"]["stage"] == "size" and "minimum side of 16" in skipped["tiny.png"]["error"]
    assert "max_pixels" in skipped["huge.png"]["error"] and "empty" in skipped["empty.png"]["error"]
    assert {skipped[k]["stage"] for k in ("huge.png", "empty.png", "truncated.png", "garbage.jpg")} == {"decode"}
    assert used["gray16.png"].conversion and used["cmyk.jpg"].conversion and used["alpha.png"].conversion
    assert not used["good1.png"].conversion
    assert sel.record["skipped"] == sel.skipped and sel.record["used_count"] == 7
    recorded = {r["id"]: r for r in sel.record["images"]}
    assert recorded["alpha.png"]["conversion"].endswith("(alpha composited on white)")
    for e in sel.entries:  # what the runner loads later is exactly what was hashed
        assert pixels_sha256(sel.dataset.load(e)) == e.sha256


def test_small_images_kept_by_a_padding_policy(tmp_path):
    root = make_messy_folder(tmp_path / "messy")
    sel = select_images(
        "folder", options={"path": str(root), "max_pixels": 1_000_000}, preprocessing="pad64", min_side=16
    )
    tiny_entry = next(e for e in sel.entries if e.id == "tiny.png")
    assert (tiny_entry.width, tiny_entry.height) == (64, 64) and tiny_entry.original_size == (4, 4)
    assert "tiny.png" not in {s["id"] for s in sel.skipped}


def test_a_broken_pinned_sample_still_stops(tmp_path):
    import shutil

    from conftest import ROOT

    shutil.copytree(ROOT / "datasets" / "samples", tmp_path / "data" / "samples")
    first = sorted((tmp_path / "data" / "samples").glob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:100])
    from harness.datasets import BundledSamples

    ds = BundledSamples(tmp_path / "data" / "samples")
    with pytest.raises(DatasetError, match="cannot read image"):
        ds.load(ds.index()[0])
