"""Issue #16, item 10: clean RD points as CompressAI eval_model-shaped JSON that CompressAI's plot reads."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from reports.compressai_json import compressai_results, write_compressai_json


def _cells(points: dict[str, tuple[float, float]], datasets=("d",)) -> pd.DataFrame:
    rows = []
    for dataset in datasets:
        for label, (bpp, q) in points.items():
            for img in ("x", "y"):
                for ber, status in ((0.0, "ok"), (1e-3, "crash")):
                    rows.append(
                        {
                            "dataset": dataset,
                            "preprocessing": "none",
                            "image_id": img,
                            "image_sha256": img,
                            "codec": "c",
                            "codec_label": label,
                            "corruption": "bsc",
                            "scope": "all",
                            "params": json.dumps({"ber": ber}),
                            "level": f"ber={ber:g}",
                            "replicate": 0,
                            "decode_seed": 0,
                            "bytes_total": 100,
                            "bytes_header": 10,
                            "bpp": bpp,
                            "header_bpp": 0.01,
                            "expected_flips": 0.0,
                            "actual_flips": 0,
                            "p_error_free": 1.0,
                            "fec": None,
                            "status": status,
                            "metric.psnr": q if status == "ok" else math.nan,
                            "metric.clean_psnr": q if status == "ok" else math.nan,
                            "metric.ms_ssim_rgb": 0.9 if status == "ok" else math.nan,
                            "metric.clean_ms_ssim_rgb": 0.9 if status == "ok" else math.nan,
                        }
                    )
    return pd.DataFrame(rows)


POINTS = {"a@2": (1.0, 31.0), "a@1": (0.5, 28.0), "a@3": (4.0, math.inf), "j2k/x@1": (0.4, 27.0)}


def _strict(text: str) -> dict:
    def refuse(name: str) -> float:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_compressai_json_files_per_curve(tmp_path):
    paths = write_compressai_json(tmp_path, _cells(POINTS), ("psnr", "ms_ssim_rgb"))
    assert [p.parent.name for p in paths] == ["compressai", "compressai"]
    by_name = {(doc := _strict(p.read_text()))["name"]: (p, doc) for p in paths}
    path, doc = by_name["a"]
    assert path.name == "a.json" and set(doc) == {"name", "description", "results", "points", "lossless"}
    r = doc["results"]
    assert r["bpp"] == [0.5, 1.0] and r["psnr"] == [28.0, 31.0] and r["psnr-rgb"] == r["psnr"]
    assert r["ms-ssim-rgb"] == [0.9, 0.9] and set(r) == {"bpp", "psnr", "psnr-rgb", "ms_ssim_rgb", "ms-ssim-rgb"}
    assert doc["points"] == [{"codec": "a@1", "images": 2}, {"codec": "a@2", "images": 2}]  # beside, not metrics
    assert doc["lossless"] == [{"codec": "a@3", "bpp": 4.0, "images": 2}]  # inf is no plottable value
    assert "clean decodes" in doc["description"]
    other, _ = by_name["j2k/x"]
    assert other.name.startswith("j2k_x-") and other.name.endswith(".json")  # safe, and never shared


def test_compressai_plot_reads_the_files(tmp_path):
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("compressai is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "plot" / "__main__.py"
    loader = importlib.util.spec_from_file_location("compressai_plot", path)  # without importing torch
    module = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(module)
    file = write_compressai_json(tmp_path, _cells(POINTS), ("psnr",))[0]
    got = module.parse_json_file(file, "psnr")
    assert got["name"] == "a" and got["xs"] == [0.5, 1.0] and got["ys"] == [28.0, 31.0]


def test_several_datasets_get_a_folder_each(tmp_path):
    paths = write_compressai_json(tmp_path, _cells({"a@1": (0.5, 28.0)}, datasets=("d1", "d2")), ("psnr",))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in paths) == ["compressai/d1/a.json", "compressai/d2/a.json"]
    assert compressai_results(pd.DataFrame(), ("psnr",)) == []


def test_a_clean_only_bound_is_not_exported_as_a_codec(tmp_path):
    """#24: the VAE-only bound (clean cells only, no compression) was written as a codec's RD file."""
    cells = _cells({"a@1": (0.5, 28.0), "a@2": (1.0, 31.0), "vae-only": (4.8, 33.0)})
    cells = cells[~((cells["codec_label"] == "vae-only") & (cells["level"] != "ber=0"))]
    names = [json.loads(p.read_text())["name"] for p in write_compressai_json(tmp_path, cells, ("psnr",))]
    assert names == ["a"]
