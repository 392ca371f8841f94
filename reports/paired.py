"""Paired comparisons of codec configs that decode the same corrupted streams (``paired_with`` in a suite).

A suite config with ``paired_with = "<label>"`` reuses that config's corruption draws cell by cell (same flips,
same latent noise, same decode seeds). For LDM-RSIC this answers the issue's question: on the *same* corrupted ELIC
stream, does the decoder-side prior repair or amplify the damage? Per (dataset, corruption, scope, level):

* failure rates of both configs (a pair can fail on one side only: the enhancer adds its own checks);
* each metric's mean for both over the pairs where both decodes are ``ok``, and the mean paired difference
  (partner − follower, e.g. enhanced − ELIC-only) with a Student-t 95 % interval;
* the paired difference of the *damage*, (metric − the same config's clean decode of that image) of the partner
  minus that of the follower: > 0 means the partner lost less than its clean advantage would predict (repair),
  < 0 that it lost more (amplification), with its interval.

Pairs are found from the cells themselves: a follower cell records its partner's fingerprint (``paired_with``;
runs made before that record only the partner cell's key as the follower's ``rng_key``). A partner with decoder-side
information is compared through its cells with the true side view (a degradation crossed with the corruption is
another comparison, in the main tables).
``python -m reports.paired RUN_DIR`` writes ``paired.md`` / ``paired.csv`` in the run directory.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from reports import ood, tables
from reports.stats import mean_interval


def partner_pairs(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(follower label, partner label) for every paired config in ``cells``."""
    label_of = dict(zip(cells["key"], cells["codec_label"], strict=True))
    label_of_config = dict(zip(cells["codec_fingerprint"], cells["codec_label"], strict=True))
    out: dict[tuple[str, str], None] = {}
    for label, channel in zip(cells["codec_label"], cells["channel"].fillna("{}"), strict=True):
        record = json.loads(channel or "{}")
        if "paired_with" in record:
            partner = label_of_config.get(record["paired_with"])
        else:
            partner = label_of.get(record.get("rng_key"))
        if partner is not None and partner != label:
            out[(label, partner)] = None
    return list(out)


def _clean(cells: pd.DataFrame, metric: str) -> pd.Series:
    """Per (codec label, image, corruption): the metric of the ok clean decodes (identity level), averaged."""
    col = f"metric.{metric}"
    level0 = cells["params"].map(tables.level_value) == 0
    ok = cells[level0 & (cells["status"] == "ok")]
    return ok.groupby(["codec_label", "image_sha256", "corruption"])[col].mean()


def paired_table(cells: pd.DataFrame, follower: str, partner: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    datasets = sorted(set(cells.loc[cells["codec_label"] == follower, "dataset"]))
    groups = [{"dataset": d, "base": follower, "adapter": partner, "in_distribution": []} for d in datasets]
    table = ood.before_after(cells, groups, metrics)
    if table.empty:
        return table
    for m in metrics:
        clean = _clean(cells, m)
        drops: dict[tuple, list[float]] = {}
        for d in datasets:
            pairs = ood.paired(cells, follower, partner, d)
            ok = pairs[(pairs["status_before"] == "ok") & (pairs["status_after"] == "ok")]
            for _, r in ok.iterrows():
                cf = clean.get((follower, r["image_sha256"], r["corruption"]), math.nan)
                cp = clean.get((partner, r["image_sha256"], r["corruption"]), math.nan)
                after, before = r[f"metric.{m}_after"], r[f"metric.{m}_before"]
                if np.isfinite([after, cp, before, cf]).all():  # lossless (inf) decodes have no damage to compare
                    a, b = after - cp, before - cf
                    drops.setdefault((d, r["corruption"], r["scope"], r["params"]), []).append(a - b)
        lo_hi = []
        for _, row in table.iterrows():
            key = next((k for k in drops if k[:3] == (row["evaluated"], row["corruption"], row["scope"])
                        and tables.level_value(k[3]) == row["level_value"]), None)  # fmt: skip
            lo_hi.append(mean_interval(np.array(drops[key])) if key else (math.nan,) * 3)
        table[f"{m}_damage_diff"] = [v[0] for v in lo_hi]
        table[f"{m}_damage_ci_low"] = [v[1] for v in lo_hi]
        table[f"{m}_damage_ci_high"] = [v[2] for v in lo_hi]
    return table.assign(follower=follower, partner=partner)


def _ci(d: float, lo: float, hi: float) -> str:
    if math.isnan(d):
        return "—"
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(lo) else f"{d:+.3f} (n<2)"


def human(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    f, p = table["follower"].iloc[0], table["partner"].iloc[0]
    out = table[["evaluated", "corruption", "scope", "level", "images", "pairs", "pairs_both_ok"]].copy()
    out = out.rename(columns={"evaluated": "dataset", "pairs_both_ok": "both ok"})
    out[f"failures {f} → {p}"] = [
        f"{b:.1%} → {a:.1%}" for b, a in zip(table["failure_rate_before"], table["failure_rate_after"], strict=True)
    ]
    for m in metrics:
        if f"{m}_diff" not in table:
            continue
        out[f"{m} {f} → {p}"] = [
            f"{b:.3f} → {a:.3f}" for b, a in zip(table[f"{m}_before"], table[f"{m}_after"], strict=True)
        ]
        out[f"Δ{m} [95% CI]"] = [
            _ci(*v) for v in zip(table[f"{m}_diff"], table[f"{m}_diff_ci_low"], table[f"{m}_diff_ci_high"], strict=True)
        ]
        out[f"Δ{m} damage vs own clean [95% CI]"] = [
            _ci(*v)
            for v in zip(
                table[f"{m}_damage_diff"], table[f"{m}_damage_ci_low"], table[f"{m}_damage_ci_high"], strict=True
            )
        ]
    return out


def write(run_dir: str | Path, metrics: tuple[str, ...] | None = None) -> Path | None:
    """paired.md / paired.csv for every paired config of the run (None when it has none)."""
    from harness.store import ResultStore

    run_dir = Path(run_dir)
    store = ResultStore(run_dir / "results.sqlite")
    try:
        cells = store.cells_frame()
    finally:
        store.close()
    if metrics is None:
        names = [c[len("metric.") :] for c in cells.columns if c.startswith("metric.")]
        # the measured metrics only: not their clean-decode companions (clean_<m>, <m>_vs_clean)
        metrics = tuple(m for m in names if not m.startswith("clean_") and not m.endswith("_vs_clean"))
    pairs = partner_pairs(cells)
    if not pairs:
        return None
    cells = tables.without_crossed_side(cells)
    parts, frames = [], []
    for follower, partner in pairs:
        t = paired_table(cells, follower, partner, metrics)
        if t.empty:
            continue
        t = ood.sort_levels(t.assign(ood_dataset=t["evaluated"], role=""))
        frames.append(t)
        parts.append(
            f"## {partner} vs {follower} (same corrupted streams and latent draws; Δ = {partner} − {follower})\n"
        )
        parts.append(tables.markdown_table(human(t, metrics), ("dataset", "corruption", "level")) + "\n")
    pd.concat(frames).to_csv(run_dir / "paired.csv", index=False)
    intro = (
        "# Paired comparisons\n\nEach row pairs the cells of two configs on the same image, corruption draw and "
        "decode seed. Means and Δ are over pairs where both decodes are ok; the damage column subtracts each "
        "config's own clean decode of the image first (> 0: the partner repairs, < 0: it amplifies).\n\n"
    )
    (run_dir / "paired.md").write_text(intro + "\n".join(parts))
    return run_dir / "paired.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reports.paired", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    args = ap.parse_args(argv)
    out = write(args.run_dir)
    print(out.read_text() if out else "no paired configs (paired_with) in this run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
