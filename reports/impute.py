"""Failure-imputed quality columns: optional, separate and labelled with their policy (METHODOLOGY.md §2).

The default tables report quality over ``ok`` decodes only, with the failure rate beside it. Some readers
want one number that includes failures; that number depends entirely on what a failure is taken to be worth,
so it is only ever shown as an extra column whose name and footnote state the policy. The published flaw
this guards against: failures written as PSNR 0 and averaged in silently.

Policies (``evaluate.py report RUN_DIR --impute POLICY``, repeatable):

- ``worst_ok`` (recommended): a failed cell gets the *worst* value of that metric among the ok decodes of the
  same image by the same codec configuration (same dataset and preprocessing), over every corruption, level,
  scope and seed of the run, the clean decode included. "A failure is at least as bad as the worst decode
  we saw of this image", and never better than a decode that worked. Worst = lowest for metrics where
  higher is better, highest for LPIPS, DISTS, NIQE. A failed cell of an image with no ok decode at all stays
  empty and is counted in ``<column>_missing``.
- ``grey``: a failed cell gets the metric of a mid-grey image (every pixel 128) against the original: what
  a decoder that shows nothing would score. Needs the original pixels, re-loaded and checked by hash
  (:func:`reports.redecode.load_original`: datasets that load without options and without preprocessing);
  otherwise the cell stays empty and is counted in ``_missing``.
- ``<metric>=<value>`` (e.g. ``psnr=0``): a constant for that one metric, only when asked for by name; the
  column says ``failed = 0``. PSNR 0 dB is far below any real decode (a mid-grey image scores ~6-12 dB), so
  such a mean is dominated by the failure rate: use it only to reproduce a published number.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.status import Status

#: Cells of one image under one codec configuration (the unit ``worst_ok`` looks within).
IMAGE_KEYS = ["dataset", "preprocessing", "codec_label", "image_sha256"]

#: Policies named by a word (the others are ``<metric>=<value>`` constants).
NAMED = ("worst_ok", "grey")

_CONST = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=([-+0-9.eEinf]+)$")


@dataclass(frozen=True)
class Imputation:
    """What a failed cell counts as in a failure-imputed column."""

    policy: str  # "worst_ok", "grey" or "const"
    metric: str | None = None  # const: the only metric it applies to
    value: float = math.nan  # const: the value a failure counts as

    @property
    def tag(self) -> str:
        """Short machine name used in column names: ``worst_ok``, ``psnr=0``."""
        return self.policy if self.policy in NAMED else f"{self.metric}={self.value:g}"

    def applies_to(self, metric: str) -> bool:
        return self.policy in NAMED or metric == self.metric

    def column(self, metric: str) -> str:
        """Numeric summary column: ``psnr_impute_worst_ok``, ``psnr_impute_0``."""
        suffix = self.policy if self.policy in NAMED else f"{self.value:g}"
        return f"{metric}_impute_{suffix}"

    def label(self, metric: str) -> str:
        """Human column header, naming the policy."""
        if self.policy == "worst_ok":
            return f"{metric} incl. failures (failed = worst ok decode of the image)"
        if self.policy == "grey":
            return f"{metric} incl. failures (failed = mid-grey image)"
        return f"{metric} incl. failures (failed = {self.value:g})"

    def describe(self) -> str:
        if self.policy == "worst_ok":
            return (
                "worst_ok: a failed cell counts as the worst value of the metric among the ok decodes (clean "
                "included) of the same image by the same codec configuration"
            )
        if self.policy == "grey":
            return "grey: a failed cell counts as the metric of a mid-grey image (all pixels 128) against the original"
        return f"{self.tag}: a failed cell counts as {self.metric} = {self.value:g} (a constant chosen by the reader)"


def parse_imputation(text: str) -> Imputation:
    """``worst_ok``, ``grey`` or ``<metric>=<number>``; anything else raises ``ValueError`` naming the forms."""
    text = text.strip()
    if text in NAMED:
        return Imputation(text)
    m = _CONST.match(text)
    if m:
        try:
            value = float(m.group(2))
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return Imputation("const", m.group(1), value)
    raise ValueError(
        f"unknown imputation policy {text!r}: use 'worst_ok', 'grey' or '<metric>=<number>' (e.g. 'psnr=0')"
    )


def higher_is_better(metric: str) -> bool | None:
    """The registered metric's direction; None when the metric is not registered (no worst can be chosen)."""
    from harness.registry import METRICS, RegistryError

    try:
        return bool(METRICS.get(metric).higher_better)
    except RegistryError:
        return None


def imputed_values(cells: pd.DataFrame, metric: str, imputation: Imputation) -> tuple[pd.Series, pd.Series]:
    """Per cell: the metric for ok cells, the imputed value for failed ones (NaN where none can be given),
    and a boolean Series marking the imputed cells."""
    col = f"metric.{metric}"
    ok = cells["status"] == Status.OK.value
    values = cells[col].where(ok) if col in cells else pd.Series(np.nan, index=cells.index)
    failed = ~ok
    if imputation.policy == "const":
        fill = pd.Series(imputation.value, index=cells.index)
    elif imputation.policy == "grey":
        fill = pd.Series(
            [grey_value(r, metric) if bad else np.nan for r, bad in zip(cells.to_dict("records"), failed, strict=True)],
            index=cells.index,
            dtype=float,
        )
    else:
        direction = higher_is_better(metric)
        keys = [k for k in IMAGE_KEYS if k in cells]
        seen = pd.DataFrame({k: cells[k] for k in keys})
        seen["_v"] = values
        clean = f"metric.clean_{metric}"
        if clean in cells:  # the clean decode is an ok decode of the image too
            seen = pd.concat([seen, pd.DataFrame({**{k: cells[k] for k in keys}, "_v": cells[clean]})])
        seen = seen.dropna(subset=["_v"])
        if direction is None or seen.empty:
            fill = pd.Series(np.nan, index=cells.index)
        else:
            worst = seen.groupby(keys, dropna=False)["_v"].agg("min" if direction else "max")
            fill = pd.Series(
                [worst.get(tuple(r) if len(keys) > 1 else r[0], np.nan) for r in cells[keys].itertuples(index=False)],
                index=cells.index,
                dtype=float,
            )
    out = values.where(ok, fill)
    return out, failed & out.notna()


_grey_cache: dict[tuple[str, str, str], float] = {}


def grey_value(row: dict, metric: str) -> float:
    """``metric`` of a mid-grey image against the original of ``row``'s image (NaN when the original cannot be
    re-loaded and verified, or the metric is not available here). Memoised per (image, metric)."""
    key = (str(row.get("image_sha256")), str(row.get("preprocessing", "none")), metric)
    if key not in _grey_cache:
        from harness.metrics import create_metric
        from reports.redecode import load_original

        original = load_original(row)
        if original is None:
            _grey_cache[key] = math.nan
        else:
            _grey_cache[key] = float(create_metric(metric)(np.full_like(original, 128), original))
    return _grey_cache[key]
