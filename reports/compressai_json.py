"""Rate–distortion results as JSON in the shape CompressAI's ``eval_model`` writes, so that existing plotting
scripts (``python -m compressai.utils.plot --results-file ...``) read them::

    {"name": "rdeic-tiny", "description": "...",
     "results": {"bpp": [0.125, 0.232], "psnr-rgb": [18.9, 19.4], "psnr": [...], "images": [24, 24], ...}}

One file per rate–distortion curve (codec labels ``NAME@RATE`` form the curve ``NAME``, one list entry per
configuration, in order of bpp) and per dataset / preprocessing policy, under ``<run>/compressai/``:
``<curve>.json`` when the run has one dataset, else ``<dataset>[_<preprocessing>]/<curve>.json``.

The points are those of :func:`reports.tables.rd_summary`: the **clean** decodes (the identity level: no
corruption), mean bpp and mean quality over the same images, as CompressAI averages per-image values. Keys: ``bpp``,
each metric under its harness name (``psnr``, ``psnr_y``, ``ms_ssim``, ``lpips``...), plus CompressAI's names
where the definition is the same (``psnr-rgb`` = our RGB ``psnr``, ``ms-ssim-rgb`` = ``ms_ssim_rgb``). Only
measured values sit in ``results`` (CompressAI's plot takes every key there for a metric): the configuration and
image count of each point are in ``points`` beside it. A clean-only bound (the VAE-only row: no compression) is
no codec and gets no file. Lossless points (PSNR = inf) have no finite value
to plot: they are left out of the lists and named under ``lossless``; a value that was not computed is ``null``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pandas as pd

from reports import tables

#: Harness metric name -> CompressAI eval_model key, where the definitions agree (RGB, 8-bit, mean over images).
COMPRESSAI_KEYS = {"psnr": "psnr-rgb", "ms_ssim_rgb": "ms-ssim-rgb"}


def _safe(name: str) -> str:
    """A file-name-safe form of a label; a hash of the label is appended when characters had to change, so
    two labels never share a file."""
    safe = re.sub(r"[^A-Za-z0-9._@+=-]", "_", str(name)).strip(".") or "_"
    if safe != str(name):
        safe += "-" + hashlib.sha256(str(name).encode()).hexdigest()[:6]
    return safe


def _value(v: object) -> float | None:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def compressai_results(cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> list[tuple[dict, dict]]:
    """[(where, document)] per (dataset, preprocessing, curve): ``where`` holds the dataset keys and the curve,
    ``document`` the CompressAI-shaped dict."""
    if cells.empty:
        return []
    prepared = tables.prepare(cells) if "level_value" not in cells else cells
    rd = tables.rd_summary(prepared, metrics)
    identity = (prepared["level_value"] == 0).groupby(prepared["codec_label"]).all()
    bounds = set() if identity.all() else {str(k) for k, v in identity.items() if v}  # clean-only: a bound
    rd = rd[~rd["codec"].astype(str).isin(bounds)]
    data = [k for k in tables.DATA_KEYS if k in rd] or ["dataset"]
    built, names = tables.built_names(cells), tables.display_names(cells)
    out = []
    for key, g in rd.groupby([*data, "curve"], sort=True, dropna=False):
        where = dict(zip([*data, "curve"], key, strict=True))
        g = g.sort_values("bpp", kind="stable")
        primary = next((m for m in metrics if m in g), None)
        lossless = g[g[primary].map(lambda v: v == math.inf)] if primary else g.iloc[0:0]
        points = g.drop(index=lossless.index)
        results: dict[str, list] = {"bpp": [_value(v) for v in points["bpp"]]}
        for m in metrics:
            if m not in points:
                continue
            values = [_value(v) for v in points[m]]
            results[m] = values
            if m in COMPRESSAI_KEYS:
                results[COMPRESSAI_KEYS[m]] = values
        point_info = [
            {"codec": str(c), "images": int(n)} for c, n in zip(points["codec"], points["images"], strict=True)
        ]
        dataset = " ".join(f"{k}={where[k]}" for k in data)
        first = str(g["codec"].iloc[0])
        configs = "; ".join(f"{c} = {built.get(str(c), str(c))}" for c in g["codec"])
        document = {
            # the build where the label does not name it: numbers of rdeic-tiny@low never travel as "rdeic"
            "name": str(where["curve"]) + names.get(first, first)[len(first) :],
            "description": (
                f"codec-robustness-harness: clean decodes (no corruption) on {dataset}; mean bpp and mean quality "
                f"over the same images per point; configurations as built: {configs}"
            ),
            "results": results,
            "points": point_info,
        }
        if len(lossless):
            document["lossless"] = [
                {"codec": str(r["codec"]), "bpp": _value(r["bpp"]), "images": int(r["images"])}
                for r in lossless.to_dict("records")
            ]
        out.append((where, document))
    return out


def write_compressai_json(out_dir: Path, cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> list[Path]:
    """Write the files of :func:`compressai_results` under ``out_dir/compressai/``; returns their paths."""
    found = compressai_results(cells, metrics)
    root = Path(out_dir) / "compressai"
    data = [k for k in tables.DATA_KEYS if found and k in found[0][0]]
    several = len({tuple(w[k] for k in data) for w, _ in found}) > 1
    written = []
    for where, document in found:
        folder = root
        if several:
            prep = where.get("preprocessing", "none")
            folder = root / _safe(str(where["dataset"]) + ("" if prep in ("none", None) else f"_{prep}"))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{_safe(where['curve'])}.json"
        path.write_text(json.dumps(document, indent=2, allow_nan=False) + "\n")
        written.append(path)
    return written
