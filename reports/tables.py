"""Summary tables of a run: failure rates with Wilson intervals, quality conditional on ``ok``.

Quality is never averaged over failures: a failed cell has no PSNR. The count each mean rests on is
printed beside it (METHODOLOGY.md §2, §7).

Infinite quality. PSNR of two identical images is +inf (a *lossless* decode), and it is a real value, not a
missing one. The rules every table here follows:

- a mean over a group is the mean of its **finite** values, its interval is over them, and the number of
  lossless (+inf) values is a column of its own (``<metric>_lossless``); ``<metric>_n`` counts both. A group
  whose values are all +inf has mean +inf, printed "lossless (n …)". A NaN (metric not computed) is never
  counted;
- the drop from the clean decode is clean − corrupted, and two equal values (two lossless decodes: inf − inf)
  are a drop of 0, not NaN. A lossy decode of an image whose clean decode is lossless is an infinite drop;
- rate–distortion fits and BD numbers leave lossless points out, and say so in a note.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from harness.status import ALL_STATUSES, Status
from reports.impute import Imputation, imputed_values
from reports.stats import mean_interval, wilson_interval

GROUP = ["codec_label", "corruption", "scope", "level"]
#: Rows are also split by dataset and preprocessing policy (when the cells have those columns): a suite with
#: several datasets, or one dataset under several policies, gets separate rows, never a pooled mean.
DATA_KEYS = ["dataset", "preprocessing"]

#: Within this many dB of the clean decode, an ``ok`` corrupted decode counts as "degraded gracefully".
CLEAN_TOLERANCE_DB = 1.0

#: "Within 1 dB of the clean decode" is read from ``psnr_vs_clean`` (the corrupted decode against the clean decode
#: of the same stream). The difference from the clean decode, added to the clean decode's own error, may cost at
#: most 1 dB of PSNR: MSE(decode, clean) <= (10^(1/10) - 1) * MSE(clean, original), i.e.
#: ``psnr_vs_clean >= clean_psnr + CLEAN_DECODE_MARGIN_DB`` (5.87 dB). A decode identical to the clean decode
#: (+inf) always counts; against a lossless clean decode only an identical decode does.
CLEAN_DECODE_MARGIN_DB = 10.0 * math.log10(1.0 / (10.0 ** (CLEAN_TOLERANCE_DB / 10.0) - 1.0))

#: The failure-rate ceiling of the threshold table (METHODOLOGY.md: "keeps failure rate ≤ 1%").
THRESHOLD_FAILURE_RATE = 0.01


def _level_sort_key(params: str) -> tuple:
    return tuple(v if isinstance(v, int | float) else str(v) for v in json.loads(params).values())


def level_value(params: str | dict) -> float:
    """The number a level is plotted against: ``ber`` when the corruption has one, else the first ``sigma*``
    parameter, else the first numeric parameter (NaN when none)."""
    p = json.loads(params) if isinstance(params, str) else params
    for key in ["ber", *sorted(k for k in p if k.startswith("sigma")), *p]:
        v = p.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return float(v)
    return math.nan


def level_axis(params: str | dict) -> str:
    """Name of the parameter :func:`level_value` picked (the x-axis label of plots)."""
    p = json.loads(params) if isinstance(params, str) else params
    for key in ["ber", *sorted(k for k in p if k.startswith("sigma")), *p]:
        if isinstance(p.get(key), int | float) and not isinstance(p.get(key), bool):
            return key
    return "level"


def param_unit(corruption: str, param: str, params: str | dict | None = None) -> str:
    """The unit of a corruption's parameter as the plugin declares it (``Corruption.unit_of``: ``sigma`` is
    8-bit code values for ``side_noise``, a multiple of the clean latent's std for ``latent_gaussian`` with
    ``unit = "rel"``); "" when the plugin declares none or is not registered."""
    from harness.registry import CORRUPTIONS

    p = json.loads(params) if isinstance(params, str) else (params or {})
    try:
        plugin = CORRUPTIONS.get(corruption)
    except Exception:  # an unregistered plugin (a run made with a plugin not installed now): no unit known
        return ""
    unit_of = getattr(plugin, "unit_of", None)
    return str(unit_of(param, p)) if callable(unit_of) else ""


def axis_label(corruption: str, params: str | dict) -> str:
    """The plotted parameter of a level with its declared unit, e.g. ``sigma (8-bit code values)``."""
    axis = level_axis(params)
    unit = param_unit(corruption, axis, params)
    return f"{axis} ({unit})" if unit else axis


def varying_label(params: list[str | dict]) -> list[str]:
    """For levels that share a plotted parameter, a label of the other parameters whose values differ among
    them (e.g. ``mean_burst_bits=64``); empty strings when nothing else varies."""
    parsed = [json.loads(p) if isinstance(p, str) else p for p in params]
    if not parsed:
        return []
    axis = level_axis(parsed[0])
    keys = [k for k in parsed[0] if k != axis and len({json.dumps(p.get(k)) for p in parsed}) > 1]
    return [",".join(f"{k}={p.get(k)}" for k in keys) for p in parsed]


def series_of(params: str | dict) -> str:
    """The parameters of a level other than the plotted one (e.g. ``mean_burst_bits=64``): levels that share
    them form one line in plots and one walk in the threshold table."""
    p = json.loads(params) if isinstance(params, str) else params
    axis = level_axis(p)
    return ",".join(f"{k}={v}" for k, v in p.items() if k != axis)


def fec_label(fec: object) -> str:
    """A short label of a cell's FEC column (JSON in the store): 'none' without FEC."""
    value = json.loads(fec) if isinstance(fec, str) else fec
    if not value:
        return "none"
    return ",".join(f"{k}={v}" for k, v in sorted(value.items()))


#: Resolved options that say which model ran, in the order :func:`built_names` names them.
BUILT_FACTS = ("config", "steps", "device", "precision")


def _json(value: object) -> dict:
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return value if isinstance(value, dict) else {}


def codecs_as_built(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per codec label: what the label's cells were made by, from the store (never from the label).
    Columns: ``codec`` (the suite's label), ``built as`` (the registry name that ran, e.g. ``rdeic-tiny@low``
    for a suite's ``rdeic-auto``), ``model`` (``tiny`` / ``official``...), ``steps``, ``device``, ``precision``,
    ``weights sha256`` (first 12 hex digits; "–" without weights), ``fingerprint`` (first 12), ``cells``.
    A label whose cells come from several builds (a resumed run after a change) lists each."""
    if cells.empty or "codec_label" not in cells:
        return pd.DataFrame()
    facts = []
    for r in cells.drop_duplicates(
        [c for c in ("codec_label", "codec_name", "codec_config", "weights_hash", "codec_fingerprint") if c in cells]
    ).to_dict("records"):
        config = _json(r.get("codec_config"))  # a rate-matched config's per-image target is not a fact of the build
        weights = r.get("weights_hash")
        facts.append(
            {
                "codec": r["codec_label"],
                "built as": r.get("codec_name") or r["codec_label"],
                "model": config.get("config", "–"),
                "steps": config.get("steps", "–"),
                "device": config.get("device", "–"),
                "precision": config.get("precision", "–"),
                "weights sha256": str(weights)[:12] if isinstance(weights, str) and weights else "–",
                "fingerprint": str(r.get("codec_fingerprint", ""))[:12],
            }
        )
    table = pd.DataFrame(facts).astype(str).drop_duplicates()
    counts = cells.groupby("codec_label", sort=False).size()
    rows = [{**r, "cells": int(counts[r["codec"]])} for r in table.to_dict("records")]
    return pd.DataFrame(rows)


def built_names(cells: pd.DataFrame) -> dict[str, str]:
    """Per codec label, the config as built in one line, e.g. ``rdeic-tiny@low (tiny, 2 steps, cpu fp32,
    weights 0820d276)``; a codec without weights or model facts is its registry name (``j2k-plain``). Several
    builds under one label are joined with `` + ``."""
    table = codecs_as_built(cells)
    out: dict[str, list[str]] = {}
    for r in table.to_dict("records"):
        facts = []
        if r["model"] != "–":
            facts.append(str(r["model"]))
        if r["steps"] != "–":
            facts.append(f"{r['steps']} steps")
        runtime = " ".join(str(r[k]) for k in ("device", "precision") if r[k] != "–")
        if runtime:
            facts.append(runtime)
        if r["weights sha256"] != "–":
            facts.append(f"weights {r['weights sha256'][:8]}")
        text = str(r["built as"]) + (f" ({', '.join(facts)})" if facts else "")
        out.setdefault(str(r["codec"]), []).append(text)
    return {label: " + ".join(dict.fromkeys(texts)) for label, texts in out.items()}


def display_names(cells: pd.DataFrame) -> dict[str, str]:
    """Per codec label, the name figures and legends show: the label, with the build in brackets when the label
    alone does not name it (weights, or a registry name the label does not contain), e.g. ``rdeic
    [rdeic-tiny@low, weights 0820d276]``."""
    out = {}
    for r in codecs_as_built(cells).drop_duplicates("codec").to_dict("records"):
        label, built = str(r["codec"]), str(r["built as"])
        extra = [] if built in label else [built]
        if r["weights sha256"] != "–":
            extra.append(f"weights {r['weights sha256'][:8]}")
        out[label] = f"{label} [{', '.join(extra)}]" if extra else label
    return out


def _data_keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in DATA_KEYS if k in frame]


def _groups(cells: pd.DataFrame) -> list[str]:
    extra = [c for c in ("fec_label", "side_label") if c in cells]
    return [*_data_keys(cells), *GROUP, *extra]


def side_label(side: object, corruption: str) -> str:
    """What the decoder's side view was: ``true view``, a degradation crossed with the cell's own corruption (e.g.
    ``side_missing:probability=1``), ``this level`` when the cell's own corruption is the degradation, or "–" for
    codecs without side information."""
    value = json.loads(side) if isinstance(side, str) else side
    if not isinstance(value, dict):
        return "–"
    degradation = value.get("degradation")
    if not degradation:
        return "true view"
    if degradation.get("name") == corruption:
        return "this level"
    params = ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in degradation["params"].items())
    return f"{degradation['name']}:{params}"


def without_crossed_side(cells: pd.DataFrame) -> pd.DataFrame:
    """The cells decoded with the true side view (or without side information): a side degradation crossed with
    the corruption (``side.degradation``) is left out, so a (codec, image, level) has one cell again (paired
    tables: each follower cell meets one partner cell; the visual grid: one tile per level)."""
    if "side" not in cells:
        return cells
    crossed = cells["side"].map(lambda s: isinstance(s, str) and json.loads(s).get("degradation") is not None)
    return cells[~crossed]


def _declared_fec_failure(row_status: str, channel: object) -> bool:
    """Whether the FEC layer itself said a stream was not corrected: status ``fec_failure``, or (policy
    ``pass_through``) failed codewords recorded in the cell's channel record."""
    if row_status == Status.FEC_FAILURE.value:
        return True
    try:
        record = json.loads(channel) if isinstance(channel, str) else channel
    except ValueError:
        return False
    fec = record.get("fec") if isinstance(record, dict) else None
    return bool(isinstance(fec, dict) and (fec.get("failed_codewords") or 0) > 0)


def fec_silent_miscorrection(cells: pd.DataFrame) -> pd.Series:
    """Per cell: the FEC layer passed the stream as corrected (no failure declared) but it still differs from
    the sent stream (``residual_flips > 0``). Reed–Solomon beyond its capacity sometimes "corrects" to a wrong
    codeword; only the residual flips show it. False for cells without FEC."""
    if "residual_flips" not in cells:
        return pd.Series(False, index=cells.index)
    residual = pd.to_numeric(cells["residual_flips"], errors="coerce")
    out = pd.Series(False, index=cells.index)
    for i in cells.index[residual.fillna(0) > 0]:
        channel = cells.at[i, "channel"] if "channel" in cells else None
        out.at[i] = not _declared_fec_failure(cells.at[i, "status"], channel)
    return out


def _fec_passed(cells: pd.DataFrame) -> pd.Series:
    """Per cell: FEC ran and declared no failure (the streams whose correctness FEC vouched for)."""
    residual = pd.to_numeric(cells["residual_flips"], errors="coerce")
    channels = cells["channel"] if "channel" in cells else pd.Series(None, index=cells.index)
    declared = [_declared_fec_failure(s, c) for s, c in zip(cells["status"], channels, strict=True)]
    return residual.notna() & ~pd.Series(declared, index=cells.index)


def prepare(cells: pd.DataFrame) -> pd.DataFrame:
    """Derived columns every table uses: numeric level, FEC label (when the store has an FEC column), and
    ``fec_passed`` / ``fec_miscorrected`` where some cell went through the FEC layer."""
    cells = cells.copy()
    cells["level_value"] = [level_value(p) for p in cells["params"]] if len(cells) else []
    if "fec" in cells:
        labels = [fec_label(f) for f in cells["fec"]]
        if any(label != "none" for label in labels):  # a FEC column only where some cell has FEC
            cells["fec_label"] = labels
    if "side" in cells:
        labels = [side_label(s, c) for s, c in zip(cells["side"], cells["corruption"], strict=True)]
        if any(label not in ("–", "true view", "this level") for label in labels):  # only where some cell crosses
            cells["side_label"] = labels
    if "residual_flips" in cells and pd.to_numeric(cells["residual_flips"], errors="coerce").notna().any():
        cells["fec_passed"] = _fec_passed(cells)
        cells["fec_miscorrected"] = fec_silent_miscorrection(cells)
    return cells


# -- means over groups with infinite values -----------------------------------------------------------------------
class Stats(NamedTuple):
    """A metric over a group: mean and Student-t 95% interval of the finite values; ``n`` values in all
    (finite and infinite; NaN = not computed is not counted), ``lossless`` of them +inf."""

    mean: float
    low: float
    high: float
    n: int
    lossless: int


def finite_stats(values: pd.Series | np.ndarray) -> Stats:
    """The documented rule for a group with infinite values: mean and interval over the finite ones, the +inf
    ones counted in ``lossless``; +inf when every value is +inf; NaN only when there is no value at all."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    lossless = int(np.isposinf(x).sum())
    finite = x[np.isfinite(x)]
    if len(finite):
        mean, lo, hi = mean_interval(finite)
    elif lossless:
        mean, lo, hi = math.inf, math.nan, math.nan
    else:
        mean = lo = hi = math.nan
    return Stats(mean, lo, hi, len(x), lossless)


def quality_drop(clean: pd.Series | np.ndarray, value: pd.Series | np.ndarray) -> np.ndarray:
    """clean − value per cell, 0 where they are equal (two lossless decodes: inf − inf is no drop, not NaN)."""
    c = np.asarray(clean, dtype=float)
    v = np.asarray(value, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.where(c == v, 0.0, c - v)


def drop_stats(drops: np.ndarray) -> Stats:
    """Mean drop: over the finite drops; +inf when some drop is +inf (a lossy decode where the clean decode is
    lossless: no finite number of dB); ``lossless`` counts those infinite drops."""
    x = np.asarray(drops, dtype=float)
    x = x[~np.isnan(x)]
    infinite = int(np.isposinf(x).sum())
    if infinite:
        return Stats(math.inf, math.nan, math.nan, len(x), infinite)
    s = finite_stats(x[np.isfinite(x)])
    return s._replace(n=len(x), lossless=0)


def within_clean_decode(ok: pd.DataFrame, metric: str = "psnr") -> float:
    """Share of ``ok`` cells within 1 dB of the clean decode of the same stream, read from
    ``<metric>_vs_clean`` (see :data:`CLEAN_DECODE_MARGIN_DB`); NaN when no cell has both values."""
    vs, clean = f"metric.{metric}_vs_clean", f"metric.clean_{metric}"
    if vs not in ok or clean not in ok:
        return math.nan
    v = ok[vs].to_numpy(dtype=float)
    c = ok[clean].to_numpy(dtype=float)
    valid = ~np.isnan(v) & ~np.isnan(c)
    if not valid.any():
        return math.nan
    with np.errstate(invalid="ignore"):
        within = np.isposinf(v) | (v >= c + CLEAN_DECODE_MARGIN_DB)
    return float(within[valid].mean())


def drop_within(ok: pd.DataFrame, metric: str = "psnr") -> float:
    """Share of ``ok`` cells whose quality against the original is at most 1 dB below the clean decode's
    (``clean_<metric> − <metric> ≤ 1``; two lossless decodes are a drop of 0)."""
    col, clean = f"metric.{metric}", f"metric.clean_{metric}"
    if col not in ok or clean not in ok:
        return math.nan
    d = quality_drop(ok[clean], ok[col])
    d = d[~np.isnan(d)]
    return float((d <= CLEAN_TOLERANCE_DB).mean()) if len(d) else math.nan


def summarise(
    cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), impute: tuple[Imputation, ...] = ()
) -> pd.DataFrame:
    """One row per (dataset, preprocessing, codec config, corruption, scope, level[, FEC]), numeric columns
    only (``dataset`` / ``preprocessing`` where the cells have them).

    Quality columns (``<metric>``, its interval, ``<metric>_n`` and ``<metric>_lossless``) are over ``ok`` cells
    that have the metric, by the rule of :func:`finite_stats`; ``<metric>_drop`` is the mean of (clean decode's
    metric − corrupted decode's metric) over them (:func:`quality_drop`), ``<metric>_vs_clean`` the mean quality
    against the clean decode (``_identical``: how many equal it).

    ``within_1db_of_clean``: share of ok decodes within 1 dB of the clean decode (from ``psnr_vs_clean``, see
    :data:`CLEAN_DECODE_MARGIN_DB`); ``drop_within_1db``: share whose PSNR is at most 1 dB below the clean
    decode's (both against the original).

    With FEC: ``fec_passed`` (streams the FEC layer passed as corrected), ``fec_miscorrected`` (of those, the ones
    that still differ from the sent stream), their share with a Wilson interval, and ``residual_flips_mean``.

    Each ``impute`` policy adds, per metric it applies to, a failure-imputed column over *all* cells
    (:mod:`reports.impute`): ``<metric>_impute_<policy>`` with its interval, ``_n`` (cells with a value),
    ``_imputed`` (failed cells given the policy's value) and ``_missing`` (failed cells it could not fill).
    Never part of the default table.
    """
    if cells.empty:
        return pd.DataFrame()
    cells = prepare(cells) if "level_value" not in cells else cells
    imputed_cols = []
    if impute:
        cells = cells.copy()
        for imp in impute:
            for m in metrics:
                if imp.applies_to(m):
                    col = imp.column(m)
                    cells[f"_imp.{col}"], cells[f"_impd.{col}"] = imputed_values(cells, m, imp)
                    imputed_cols.append(col)
    has_fec = "fec_passed" in cells
    keys = _groups(cells)
    built = built_names(cells)
    rows = []
    for group, g in cells.groupby(keys, sort=False, dropna=False):
        k = dict(zip(keys, group, strict=True))
        n = len(g)
        counts = {s.value: int((g["status"] == s.value).sum()) for s in ALL_STATUSES}
        failures = n - counts[Status.OK.value]
        lo, hi = wilson_interval(failures, n)
        row = {
            **{d: k[d] for d in _data_keys(cells)},
            "codec": k["codec_label"],
            "codec_built": built.get(str(k["codec_label"]), str(k["codec_label"])),
            "corruption": k["corruption"],
            "scope": k["scope"],
            "level": k["level"],
            **({"fec": k["fec_label"]} if "fec_label" in k else {}),
            **({"side": k["side_label"]} if "side_label" in k else {}),
            "level_value": g["level_value"].iloc[0],
            "series": series_of(g["params"].iloc[0]),
            "params": g["params"].iloc[0],
            "_order": _level_sort_key(g["params"].iloc[0]),
            "images": g["image_sha256"].nunique(),
            "seeds": g["replicate"].nunique(),
            "cells": n,
            "bytes_total": g["bytes_total"].mean(),
            "bytes_header": g["bytes_header"].mean(),
            "bpp": g["bpp"].mean(),
            "header_bpp": g["header_bpp"].mean(),
            **({"fec_overhead_bpp": g["fec_overhead_bpp"].mean()} if "fec_overhead_bpp" in g else {}),
            "expected_flips": g["expected_flips"].mean(),
            "actual_flips": g["actual_flips"].mean(),
            "p_error_free": g["p_error_free"].mean(),
            **counts,
            "failure_rate": failures / n,
            "failure_ci_low": lo,
            "failure_ci_high": hi,
        }
        ok = g[g["status"] == Status.OK.value]
        row["n_ok"] = len(ok)
        for m in metrics:
            col = f"metric.{m}"
            s = finite_stats(ok[col]) if col in ok else Stats(math.nan, math.nan, math.nan, 0, 0)
            row.update({m: s.mean, f"{m}_ci_low": s.low, f"{m}_ci_high": s.high, f"{m}_n": s.n})
            row[f"{m}_lossless"] = s.lossless
            if col in ok and f"metric.clean_{m}" in ok:
                d = drop_stats(quality_drop(ok[f"metric.clean_{m}"], ok[col]))
            else:
                d = Stats(math.nan, math.nan, math.nan, 0, 0)
            row.update({f"{m}_drop": d.mean, f"{m}_drop_ci_low": d.low, f"{m}_drop_ci_high": d.high})
            row.update({f"{m}_drop_n": d.n, f"{m}_drop_inf": d.lossless})
            if f"metric.{m}_vs_clean" in ok:
                v = finite_stats(ok[f"metric.{m}_vs_clean"])
                row.update({f"{m}_vs_clean": v.mean, f"{m}_vs_clean_n": v.n, f"{m}_vs_clean_identical": v.lossless})
        for col in imputed_cols:
            s = finite_stats(g[f"_imp.{col}"])
            n_imputed = int(g[f"_impd.{col}"].sum())
            row.update({col: s.mean, f"{col}_ci_low": s.low, f"{col}_ci_high": s.high, f"{col}_n": s.n})
            row.update({f"{col}_imputed": n_imputed, f"{col}_missing": failures - n_imputed})
        psnr = "psnr" in metrics and len(ok) > 0
        row["within_1db_of_clean"] = within_clean_decode(ok) if psnr else math.nan
        row["drop_within_1db"] = drop_within(ok) if psnr else math.nan
        if has_fec:
            passed = int(g["fec_passed"].sum())
            wrong = int(g["fec_miscorrected"].sum())
            wlo, whi = wilson_interval(wrong, passed)
            residual = pd.to_numeric(g["residual_flips"], errors="coerce")
            row.update(
                {
                    "residual_flips_mean": float(residual.mean()) if residual.notna().any() else math.nan,
                    "fec_passed": passed,
                    "fec_miscorrected": wrong,
                    "fec_miscorrected_share": wrong / passed if passed else math.nan,
                    "fec_miscorrected_ci_low": wlo,
                    "fec_miscorrected_ci_high": whi,
                }
            )
        rows.append(row)
    extra = [c for c in ("fec", "side") if c in rows[0]]
    sort = [*_data_keys(cells), "codec", "corruption", "scope", *extra, "_order"]
    table = pd.DataFrame(rows).sort_values(sort, kind="stable")
    return table.drop(columns="_order").reset_index(drop=True)


def per_image(cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> pd.DataFrame:
    """One row per (dataset, image, codec config, corruption, scope, level): the per-image results any
    aggregate can be recomputed from (METHODOLOGY.md §7). Means follow :func:`finite_stats` (lossless
    decodes counted in ``<metric>_lossless``)."""
    if cells.empty:
        return pd.DataFrame()
    cells = prepare(cells) if "level_value" not in cells else cells
    keys = ["dataset", "image_id", "image_sha256", *(k for k in _groups(cells) if k != "dataset")]
    built = built_names(cells)
    rows = []
    for group, g in cells.groupby(keys, sort=True, dropna=False):
        ok = g[g["status"] == Status.OK.value]
        row = dict(zip(keys, group, strict=True))
        row.update(
            {
                "codec_built": built.get(str(row["codec_label"]), str(row["codec_label"])),
                "level_value": g["level_value"].iloc[0],
                "cells": len(g),
                "n_ok": len(ok),
                "failure_rate": 1.0 - len(ok) / len(g),
                "statuses": ",".join(f"{k}:{v}" for k, v in sorted(g["status"].value_counts().items())),
                "bpp": g["bpp"].mean(),
            }
        )
        for m in metrics:
            col = f"metric.{m}"
            s = finite_stats(ok[col]) if col in ok else Stats(math.nan, math.nan, math.nan, 0, 0)
            row[m], row[f"{m}_lossless"] = s.mean, s.lossless
            clean = f"metric.clean_{m}"
            row[f"clean_{m}"] = finite_stats(ok[clean]).mean if clean in ok else math.nan
        if "fec_miscorrected" in g:
            row["residual_flips_mean"] = pd.to_numeric(g["residual_flips"], errors="coerce").mean()
            row["fec_miscorrected"] = int(g["fec_miscorrected"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def curve_of(label: str) -> str:
    """Codec configurations labelled ``NAME@RATE`` form one rate–distortion curve, ``NAME``."""
    return label.split("@", 1)[0]


def _image_set_id(hashes: pd.Series) -> str:
    return hashlib.sha256("\n".join(sorted(map(str, set(hashes)))).encode()).hexdigest()[:12]


def rd_summary(cells: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",)) -> pd.DataFrame:
    """Rate–distortion points per dataset (and preprocessing policy): for each codec configuration, mean bpp
    and mean clean-decode quality over **the same** (image, decode seed) pairs, with intervals.

    The clean decode's quality is stored with every ok cell of an image (whatever the level), so a pair counts
    when some cell of it is ok and has every metric that this codec has values for; bpp is averaged over
    exactly those pairs. ``images`` / ``decodes`` say what a point rests on, ``images_left_out`` how many
    images had no ok cell to take the clean quality from, ``image_set`` identifies the set (points on different
    sets are not comparable). Lossless clean decodes are counted in ``<metric>_lossless`` (means over the
    finite values, :func:`finite_stats`)."""
    if cells.empty:
        return pd.DataFrame()
    data = _data_keys(cells) or ["dataset"]
    seed = ["decode_seed"] if "decode_seed" in cells else []
    pair = ["image_sha256", *seed]
    keys = [*data, "codec_label", *pair]
    cols = [f"metric.clean_{m}" for m in metrics if f"metric.clean_{m}" in cells]
    bpp = cells.groupby(keys, sort=True, dropna=False)["bpp"].mean()
    ok = cells[cells["status"] == Status.OK.value]
    clean = ok.groupby(keys, sort=True, dropna=False)[cols].first() if cols else pd.DataFrame(index=bpp.index)
    pairs = bpp.to_frame().join(clean, how="left").reset_index()
    built = built_names(cells)
    rows = []
    for group, g in pairs.groupby([*data, "codec_label"], sort=True, dropna=False):
        label = group[-1]
        present = [c for c in cols if g[c].notna().any()]
        used = g.dropna(subset=present) if present else g.iloc[0:0]
        total = g["image_sha256"].nunique()
        row = {**dict(zip(data, group[:-1], strict=True)), "curve": curve_of(label), "codec": label}
        row["codec_built"] = built.get(str(label), str(label))
        row["images"] = used["image_sha256"].nunique()
        row["decodes"] = len(used)
        row["images_left_out"] = total - row["images"]
        row["image_set"] = _image_set_id(used["image_sha256"]) if len(used) else ""
        row["bpp"], row["bpp_ci_low"], row["bpp_ci_high"] = (
            mean_interval(used["bpp"].to_numpy()) if len(used) else (math.nan,) * 3
        )
        notes = []
        if row["images_left_out"]:
            notes.append(
                f"{row['images_left_out']} of {total} images without an ok decode: left out of bpp and quality"
            )
        for m in metrics:
            col = f"metric.clean_{m}"
            s = finite_stats(used[col]) if col in used else Stats(math.nan, math.nan, math.nan, 0, 0)
            row.update({m: s.mean, f"{m}_ci_low": s.low, f"{m}_ci_high": s.high, f"{m}_n": s.n})
            row[f"{m}_lossless"] = s.lossless
            if s.lossless:
                notes.append(f"{m}: {s.lossless} of {s.n} clean decodes lossless (mean over the others)")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows).sort_values([*data, "curve", "bpp"]).reset_index(drop=True)


# -- BD-rate / BD-quality -------------------------------------------------------------------------------------------
def metric_unit(metric: str) -> str:
    """The unit of a metric's values: dB for the PSNR family, none otherwise."""
    return "dB" if metric.startswith("psnr") else ""


def clean_curve(points: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, list[str]]:
    """The points of one RD curve a BD fit can use, and what was done to get them.

    Rule: points without a value are left out; lossless points (+inf) are left out (no finite quality to
    interpolate); sorted by bpp, a point is kept only when its quality is strictly above every kept point of
    lower or equal rate. So duplicates (two rate points that saturate to the same bpp and quality) collapse to
    one, and a dip (more bits, lower quality) is dropped: the kept curve is strictly increasing in both bpp and
    quality, which the interpolation needs."""
    notes = []
    pts = points.dropna(subset=["bpp"])
    missing = pts[pts[metric].isna()]
    if len(missing):
        notes.append(f"no {metric}: {', '.join(map(str, missing['codec']))}")
    pts = pts[pts[metric].notna()]
    lossless = pts[np.isinf(pts[metric].to_numpy(dtype=float))]
    if len(lossless):
        notes.append(f"lossless ({metric} = inf) left out: {', '.join(map(str, lossless['codec']))}")
    pts = pts[np.isfinite(pts[metric].to_numpy(dtype=float))]
    pts = pts.sort_values(["bpp", metric], ascending=[True, False], kind="stable")
    kept: list[dict] = []
    for r in pts.to_dict("records"):
        if kept and r["bpp"] <= kept[-1]["bpp"]:
            same = r[metric] == kept[-1][metric]
            why = "duplicate of" if same else "same bpp, lower quality than"
            notes.append(f"{r['codec']} dropped ({why} {kept[-1]['codec']})")
        elif kept and r[metric] <= max(k[metric] for k in kept):
            notes.append(f"{r['codec']} dropped ({metric} not above a lower-rate point: curve made monotonic)")
        else:
            kept.append(r)
    return pd.DataFrame(kept, columns=points.columns), notes


def _bd_call(fn: str, anchor: pd.DataFrame, test: pd.DataFrame, metric: str, method: str) -> float:
    import warnings

    import bjontegaard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package warns on partial overlap; the note column reports it
        return float(
            getattr(bjontegaard, fn)(
                anchor["bpp"].to_numpy(dtype=float),
                anchor[metric].to_numpy(dtype=float),
                test["bpp"].to_numpy(dtype=float),
                test[metric].to_numpy(dtype=float),
                method=method,
                require_matching_points=False,
            )
        )


def bd_rate(anchor: pd.DataFrame, test: pd.DataFrame, metric: str, method: str = "pchip") -> float:
    """BD-rate (%) of ``test`` against ``anchor`` (cleaned curves: :func:`clean_curve`)."""
    return _bd_call("bd_rate", anchor, test, metric, method)


def bd_quality(anchor: pd.DataFrame, test: pd.DataFrame, metric: str, method: str = "pchip") -> float:
    """BD-quality (BD-PSNR for PSNR, in the metric's unit) of ``test`` against ``anchor``: the mean quality
    difference at the same rate over the overlapping rate range."""
    return _bd_call("bd_psnr", anchor, test, metric, method)


BD_COLUMNS = [
    "anchor",
    "test",
    "metric",
    "bd_rate_pct",
    "bd_quality",
    "bd_quality_unit",
    "quality_overlap",
    "rate_overlap",
    "points",
    "note",
]

#: A BD number integrates the gap between two curves over the range where both exist. Below this share of the
#: longer curve's range (quality range for BD-rate, log-rate range for BD-quality) the number rests on an
#: extrapolation-sized sliver of the curves: it is not given, and the note says why (the ``bjontegaard``
#: package only warns, and its warning is silenced here).
MIN_BD_OVERLAP = 0.5


def overlap_share(a: np.ndarray, b: np.ndarray) -> float:
    """The share of the longer of two ranges (``a``, ``b``: the values of each curve) that both cover, in
    [0, 1]; 0 when they do not overlap (or when both are single points)."""
    lo, hi = max(np.min(a), np.min(b)), min(np.max(a), np.max(b))
    longest = max(np.ptp(a), np.ptp(b))
    return float(max(hi - lo, 0.0) / longest) if longest > 0 else 0.0


def bd_table(
    rd: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), method: str = "pchip"
) -> tuple[pd.DataFrame, list[str]]:
    """BD-rate (%) and BD-quality (BD-PSNR in dB for PSNR) of each curve against each other curve of the same
    dataset (``bjontegaard`` package, piecewise-cubic interpolation). Negative BD-rate / positive BD-quality =
    the test curve is better. Curves are cleaned first (:func:`clean_curve`); what was done is in each row's
    note. A pair whose computation fails gets NaN and the reason, never an exception: one pair never loses the
    report. Curves with fewer than two usable points get no rows; they are listed once in the returned notes."""
    data = _data_keys(rd) or ["dataset"]
    columns = [*data, *BD_COLUMNS]
    rows: list[dict] = []
    short: list[str] = []
    if rd.empty:
        return pd.DataFrame(columns=columns), []
    for group, d in rd.groupby(data, sort=True, dropna=False):
        where = " ".join(str(v) for v in group) if isinstance(group, tuple) else str(group)
        for metric in metrics:
            if metric not in d:
                continue
            curves: dict[str, tuple[pd.DataFrame, list[str], set[str]]] = {}
            for name, g in d.groupby("curve", sort=True):
                pts, notes = clean_curve(g, metric)
                sets = set(g["image_set"]) if "image_set" in g else set()
                if len(pts) < 2:
                    short.append(f"{name} ({where}, {metric}: {len(pts)} usable point{'s' * (len(pts) != 1)})")
                    continue
                curves[str(name)] = (pts, notes, sets)
            names = sorted(curves)
            for i, anchor in enumerate(names):
                for test in names[i + 1 :]:
                    rows.append(_bd_pair(dict(zip(data, group, strict=True)), anchor, test, curves, metric, method))
    notes = []
    if short:
        notes.append("No BD numbers for curves with fewer than two usable rate points: " + "; ".join(short) + ".")
    return pd.DataFrame(rows, columns=columns), notes


def _bd_pair(key: dict, anchor: str, test: str, curves: dict, metric: str, method: str) -> dict:
    (a, a_notes, a_sets), (t, t_notes, t_sets) = curves[anchor], curves[test]
    row = {**key, "anchor": anchor, "test": test, "metric": metric, "bd_quality_unit": metric_unit(metric)}
    row["points"] = f"{len(a)} vs {len(t)}"
    notes = [method]
    q_lo, q_hi = max(a[metric].min(), t[metric].min()), min(a[metric].max(), t[metric].max())
    q_share = overlap_share(a[metric].to_numpy(dtype=float), t[metric].to_numpy(dtype=float))
    r_share = overlap_share(np.log10(a["bpp"].to_numpy(dtype=float)), np.log10(t["bpp"].to_numpy(dtype=float)))
    row["quality_overlap"], row["rate_overlap"] = q_share, r_share
    if q_hi <= q_lo:
        row["bd_rate_pct"] = math.nan
        notes.append(f"{metric} ranges do not overlap: no BD-rate")
    elif q_share < MIN_BD_OVERLAP:
        row["bd_rate_pct"] = math.nan
        notes.append(
            f"no BD-rate: the {metric} ranges overlap on {q_share:.0%} of the longer curve's range "
            f"({q_lo:.3g}–{q_hi:.3g}), below the {MIN_BD_OVERLAP:.0%} a BD number needs"
        )
    else:
        notes.append(f"{metric} overlap {q_lo:.3g}–{q_hi:.3g} ({q_share:.0%})")
        try:
            row["bd_rate_pct"] = bd_rate(a, t, metric, method)
        except Exception as exc:  # one pair's failure is recorded, never raised
            row["bd_rate_pct"] = math.nan
            notes.append(f"BD-rate failed: {type(exc).__name__}: {exc}")
    r_lo, r_hi = max(a["bpp"].min(), t["bpp"].min()), min(a["bpp"].max(), t["bpp"].max())
    if r_hi <= r_lo:
        row["bd_quality"] = math.nan
        notes.append(f"bpp ranges do not overlap: no BD-{metric}")
    elif r_share < MIN_BD_OVERLAP:
        row["bd_quality"] = math.nan
        notes.append(
            f"no BD-{metric}: the log-rate ranges overlap on {r_share:.0%} of the longer curve's range "
            f"({r_lo:.3g}–{r_hi:.3g} bpp), below the {MIN_BD_OVERLAP:.0%} a BD number needs"
        )
    else:
        try:
            row["bd_quality"] = bd_quality(a, t, metric, method)
        except Exception as exc:
            row["bd_quality"] = math.nan
            notes.append(f"BD-{metric} failed: {type(exc).__name__}: {exc}")
    if a_sets and t_sets and len(a_sets | t_sets) > 1:
        notes.append("points rest on different image sets")
    notes += [f"{anchor}: {n}" for n in a_notes] + [f"{test}: {n}" for n in t_notes]
    row["note"] = "; ".join(notes)
    return row


def bd_rates(rd: pd.DataFrame, metric: str = "psnr", method: str = "pchip") -> pd.DataFrame:
    """:func:`bd_table` for one metric; its notes are in ``.attrs["notes"]``."""
    frame, notes = bd_table(rd, (metric,), method)
    frame.attrs["notes"] = notes
    return frame


def threshold_table(summary: pd.DataFrame, metric: str = "psnr") -> pd.DataFrame:
    """Per (codec, corruption, scope[, FEC][, side view]): the highest level, walking up from the lowest, before
    the first level where the failure rate exceeds 1% or the mean drop of ``metric`` from the clean decode exceeds
    1 dB (over ok cells; two lossless decodes are no drop). Point estimates decide; the Wilson interval and the
    drop's interval at the chosen level are printed beside it so a reader sees how much n supports it."""
    variants = [k for k in ("fec", "side") if k in summary]
    cols = [*_data_keys(summary), "codec", "corruption", "scope", *variants, "series"]
    rows = []
    if summary.empty:
        return pd.DataFrame()
    for key, g in summary.groupby(cols, sort=True):
        g = g.sort_values("level_value", kind="stable")
        passing, stop = None, None
        for r in g.to_dict("records"):
            drop = r.get(f"{metric}_drop", math.nan)
            why = []
            if r["failure_rate"] > THRESHOLD_FAILURE_RATE:
                why.append(f"failure {100 * r['failure_rate']:.1f}%")
            if drop == math.inf:
                why.append(f"{metric} drop inf (lossy decodes of a lossless clean decode)")
            elif r["n_ok"] == 0 or not math.isfinite(drop):
                why.append(f"no {metric} on ok cells")
            elif drop > CLEAN_TOLERANCE_DB:
                why.append(f"{metric} drop {drop:.2f}")
            if why:
                stop = (r, "; ".join(why))
                break
            passing = r
        row = dict(zip(cols, key, strict=True))
        if passing is None:
            row.update(threshold_level="none (fails at the lowest level)", threshold_value=math.nan)
        else:
            row.update(
                threshold_level=passing["level"],
                threshold_value=passing["level_value"],
                cells=passing["cells"],
                failure_rate=passing["failure_rate"],
                failure_ci_high=passing["failure_ci_high"],
                drop=passing.get(f"{metric}_drop", math.nan),
                drop_ci_high=passing.get(f"{metric}_drop_ci_high", math.nan),
            )
        row["first_failing_level"] = stop[0]["level"] if stop else "none tested"
        row["why"] = stop[1] if stop else ""
        rows.append(row)
    return pd.DataFrame(rows)


# -- human tables -----------------------------------------------------------------------------------------------------
def _fmt_ci(mean: float, lo: float, hi: float, digits: int = 2) -> str:
    if not math.isfinite(mean):
        return "inf" if mean == math.inf else "–"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def quality_text(mean: float, lo: float, hi: float, n: int, lossless: int, n_ok: int | None, digits: int = 2) -> str:
    """A quality cell as people read it: ``mean ± half-width``; ``lossless (n N)`` when every value is +inf;
    ``(k lossy + j lossless)`` when some are; ``(n k)`` when the metric rests on fewer cells than ``n ok``."""
    if n == 0:
        return "–"
    if lossless and lossless == n:
        return f"lossless (n {n})"
    text = _fmt_ci(mean, lo, hi, digits)
    if lossless:
        return f"{text} ({n - lossless} lossy + {lossless} lossless)"
    if n_ok is not None and n != n_ok:
        return f"{text} (n {n})"
    return text


def _share(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.0f}%"


def computed_metrics(table: pd.DataFrame, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """The metrics that have at least one value (a metric whose weights were missing has none)."""
    return tuple(m for m in metrics if f"{m}_n" not in table or table[f"{m}_n"].sum() > 0)


#: Columns of :func:`human_table` whose text comes from the data (labels): escaped in full in Markdown.
LABEL_COLUMNS = ("dataset", "preprocessing", "codec", "built as", "corruption", "scope", "level", "FEC")

_MD_TEXT = {"\\": "\\\\", "|": "\\|", "`": "\\`", "*": "\\*", "_": "\\_", "<": "&lt;", ">": "&gt;", "&": "&amp;"}
_MD_TEXT.update({"\n": " ", "\r": " "})
_MD_BASIC = str.maketrans(_MD_TEXT)
_MD_LABEL = str.maketrans({**_MD_TEXT, "[": "\\[", "]": "\\]"})


def md_escape(text: object, label: bool = True) -> str:
    """Text safe inside a Markdown table cell: pipes, backslashes, backticks, ``*``, ``_`` escaped, ``<``, ``>``,
    ``&`` as entities (no raw HTML, no autolink), newlines as spaces. Brackets are escaped when ``label`` (text
    from the data), else only where a link could form (``](`` or ``][``), so "[95% CI]" stays readable."""
    text = str(text)
    if label or "](" in text or "][" in text:
        return text.translate(_MD_LABEL)
    return text.translate(_MD_BASIC)


def markdown_table(frame: pd.DataFrame, labels: tuple[str, ...] | None = None) -> str:
    """``frame`` (cells already text, or formatted with ``str``) as a pipe table, every cell escaped by
    :func:`md_escape`; columns in ``labels`` (default: every column) with brackets escaped too."""
    labels = tuple(frame.columns) if labels is None else labels
    out = pd.DataFrame(
        {md_escape(c, label=False): [md_escape(v, label=c in labels) for v in frame[c]] for c in frame.columns}
    )
    return out.to_markdown(index=False, disable_numparse=True)


def to_markdown(table: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), impute: tuple[Imputation, ...] = ()) -> str:
    """A compact human table: failure % with its Wilson interval, quality mean ± CI half-width (ok only)."""
    if table.empty:
        return "(no cells)"
    return markdown_table(human_table(table, metrics, impute), LABEL_COLUMNS)


def human_table(
    table: pd.DataFrame, metrics: tuple[str, ...] = ("psnr",), impute: tuple[Imputation, ...] = ()
) -> pd.DataFrame:
    """The rows of :func:`to_markdown` as text cells (also the HTML report's summary). Failure-imputed
    columns (only for the ``impute`` policies asked for) come last, headed with their policy."""
    shown = []
    present = [s.value for s in ALL_STATUSES if s is not Status.OK and table[s.value].sum() > 0]
    metrics = computed_metrics(table, metrics)
    # the dataset always (rows are per dataset); the preprocessing policy where some row has one
    data = [k for k in _data_keys(table) if k == "dataset" or (table[k].astype(str) != "none").any()]
    fec = "fec_passed" in table and "fec" in table
    for r in table.to_dict("records"):
        row = {
            **{k: r[k] for k in data},
            "codec": r["codec"],
            **({"built as": r["codec_built"]} if r.get("codec_built", r["codec"]) != r["codec"] else {}),
            "corruption": r["corruption"],
            "scope": r["scope"],
            "level": r["level"],
            **({"FEC": r["fec"]} if "fec" in r else {}),
            **({"side view": r["side"]} if "side" in r else {}),
            "images": r.get("images", ""),
            "seeds": r.get("seeds", ""),
            "cells": r["cells"],
            "bpp": f"{r['bpp']:.3f}",
            "header bpp": f"{r['header_bpp']:.4f}",
            **({"FEC bpp": f"{r['fec_overhead_bpp']:.3f}"} if "fec" in r and "fec_overhead_bpp" in r else {}),
            "E[flips]": f"{r['expected_flips']:.2f}",
            "P(no error)": f"{r['p_error_free']:.3f}",
            "fail % [95% CI]": f"{100 * r['failure_rate']:.1f} "
            f"[{100 * r['failure_ci_low']:.1f}, {100 * r['failure_ci_high']:.1f}]",
        }
        for s in present:
            row[s] = r[s]
        for m in metrics:
            digits = 2 if m.startswith("psnr") else 4
            lossless = int(r.get(f"{m}_lossless", 0) or 0)
            ci = (r[m], r[f"{m}_ci_low"], r[f"{m}_ci_high"])
            row[f"{m} (ok)"] = quality_text(*ci, int(r[f"{m}_n"]), lossless, int(r["n_ok"]), digits)
        row["n ok"] = r["n_ok"]
        if "psnr" in metrics:
            row["≤1 dB of clean decode"] = _share(r["within_1db_of_clean"])
            row["drop ≤1 dB vs clean quality"] = _share(r.get("drop_within_1db", math.nan))
        if fec:
            residual = r["residual_flips_mean"]
            row["residual flips (mean)"] = f"{residual:.1f}" if math.isfinite(residual) else "–"
            row["FEC passed but wrong"] = (
                "–"
                if not r["fec_passed"]
                else f"{r['fec_miscorrected']}/{r['fec_passed']} ({100 * r['fec_miscorrected_share']:.0f}%)"
            )
        for imp in impute:
            for m in metrics:
                col = imp.column(m)
                if imp.applies_to(m) and col in r:
                    digits = 2 if m.startswith("psnr") else 4
                    text = _fmt_ci(r[col], r[f"{col}_ci_low"], r[f"{col}_ci_high"], digits)
                    missing = f", {r[f'{col}_missing']} not imputable" if r[f"{col}_missing"] else ""
                    row[imp.label(m)] = f"{text} (n {r[f'{col}_n']}, {r[f'{col}_imputed']} imputed{missing})"
        shown.append(row)
    return pd.DataFrame(shown)


QUALITY_FOOTER = (
    "Quality is over ok decodes only, n ok beside it (a metric's own n in brackets where some ok cells lack it). "
    "Lossless decodes (PSNR = inf, identical to the original) are counted, not averaged: a mean is over the finite "
    "values with the lossless count beside it. '≤1 dB of clean decode': share of ok decodes whose difference from "
    "the clean decode of the same stream (PSNR vs the clean decode, psnr_vs_clean) costs at most 1 dB, i.e. "
    f"psnr_vs_clean ≥ clean PSNR + {CLEAN_DECODE_MARGIN_DB:.2f} dB (identical = within). 'drop ≤1 dB vs clean "
    "quality': share whose PSNR against the original is at most 1 dB below the clean decode's (two lossless "
    "decodes: no drop)."
)


def footer(cells: pd.DataFrame) -> str:
    return (
        f"{len(cells)} cells on {cells['image_sha256'].nunique()} images, "
        f"{cells['replicate'].nunique()} seed(s). Failure = any status but ok; intervals are 95% "
        f"(Wilson for rates, Student t for means). {QUALITY_FOOTER}"
    )


def imputation_note(impute: tuple[Imputation, ...]) -> str:
    """The footnote that states each failure-imputation policy shown (empty when none)."""
    if not impute:
        return ""
    policies = "; ".join(imp.describe() for imp in impute)
    return (
        f"Failure-imputed columns (asked for; not the default summary, which is over ok decodes only): {policies}. "
        "Their values depend on the policy; read them with the failure rate."
    )


def not_computed_note(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    missing = [m for m in metrics if m not in computed_metrics(table, metrics)]
    if not missing:
        return ""
    return f"Not computed in this run (weights missing; see `evaluate.py metrics check`): {', '.join(missing)}."


def fec_note(table: pd.DataFrame) -> str:
    """Silent FEC miscorrection, said in words when it happened (empty otherwise)."""
    if "fec_miscorrected" not in table or table.empty:
        return ""
    wrong, passed = int(table["fec_miscorrected"].sum()), int(table["fec_passed"].sum())
    if not wrong:
        return (
            f"FEC: every one of the {passed} streams the FEC layer passed as corrected equals the sent stream "
            "(residual flips 0)."
        )
    rows = table[table["fec_miscorrected"] > 0]
    where = ", ".join(
        f"{r['codec']} {r['scope']} {r['level']} [{r.get('fec', '')}]" for r in rows.to_dict("records")[:5]
    )
    more = f" and {len(rows) - 5} more rows" if len(rows) > 5 else ""
    return (
        f"Silent FEC miscorrection: {wrong} of the {passed} streams the FEC layer passed as corrected still differ "
        f"from the sent stream (Reed–Solomon beyond its capacity 'corrected' to wrong data; residual flips > 0, no "
        f"failure declared): {where}{more}. See 'FEC passed but wrong' and residual_flips_mean."
    )


def lossless_note(table: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    found = [m for m in metrics if f"{m}_lossless" in table and table[f"{m}_lossless"].sum() > 0]
    if not found:
        return ""
    counts = ", ".join(f"{m}: {int(table[f'{m}_lossless'].sum())} cell(s)" for m in found)
    return (
        f"Lossless decodes (metric = inf, identical to the original): {counts}. They are counted beside the means, "
        "which are over the finite values."
    )


def units_note(table: pd.DataFrame) -> str:
    """The units of the level parameters in ``table`` (summary rows: ``corruption``, ``params``), as each
    corruption declares them: ``Units of the levels: side_noise sigma in 8-bit code values; ...``."""
    if table.empty or "params" not in table:
        return ""
    said: dict[str, None] = {}
    for corruption, params in table[["corruption", "params"]].drop_duplicates().itertuples(index=False):
        p = json.loads(params) if isinstance(params, str) else params
        for k, v in p.items():
            unit = param_unit(str(corruption), k, p) if isinstance(v, int | float) and not isinstance(v, bool) else ""
            if unit:
                said[f"{corruption} {k} in {unit}"] = None
    return ("Units of the levels: " + "; ".join(said) + ".") if said else ""


def summary_notes(table: pd.DataFrame, metrics: tuple[str, ...]) -> list[str]:
    """The notes summary.md and the reports print under the summary (empty ones left out)."""
    notes = [units_note(table), not_computed_note(table, metrics), lossless_note(table, metrics), fec_note(table)]
    return [n for n in notes if n]


def built_markdown(cells: pd.DataFrame) -> str:
    """The "Codecs as built" table (:func:`codecs_as_built`) as Markdown with its heading line, "" when empty."""
    table = codecs_as_built(cells)
    if table.empty:
        return ""
    return (
        "Codecs as built (which model, weights and settings made every number below):\n\n"
        + markdown_table(table, ("codec", "built as"))
        + "\n\n"
    )


def has_parquet() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def write_frame(frame: pd.DataFrame, path_csv: Path) -> list[Path]:
    """CSV always; Parquet beside it when pyarrow is installed. Returns the files written."""
    frame.to_csv(path_csv, index=False)
    written = [path_csv]
    if has_parquet() and not frame.empty:
        frame.to_parquet(path_csv.with_suffix(".parquet"), index=False)
        written.append(path_csv.with_suffix(".parquet"))
    return written


def write_summary(out_dir: Path, cells: pd.DataFrame, metrics: tuple[str, ...], title: str) -> str:
    """Write ``summary.csv`` (all numeric columns; ``.parquet`` too with pyarrow), ``per_image.csv`` and
    ``summary.md``; return the Markdown."""
    table = summarise(cells, metrics)
    write_frame(table, out_dir / "summary.csv")
    write_frame(per_image(cells, metrics), out_dir / "per_image.csv")
    notes = " ".join(summary_notes(table, metrics))
    text = (
        f"## {md_escape(title, label=False)}\n\n{built_markdown(cells)}{to_markdown(table, metrics)}\n\n{footer(cells)}"
    )
    text += f"{' ' + notes if notes else ''}\n"
    (out_dir / "summary.md").write_text(text)
    return text
