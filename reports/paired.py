"""Paired comparisons of codec configs that decode the same corrupted streams (``paired_with`` in a suite).

A suite config with ``paired_with = "<label>"`` reuses that config's corruption draws cell by cell (same flips,
same latent noise, same decode seeds). For LDM-RSIC this answers the issue's question: on the *same* corrupted ELIC
stream, does the decoder-side prior repair or amplify the damage? Per (dataset, corruption, scope, level):

* failure rates of both configs (a pair can fail on one side only: the enhancer adds its own checks);
* each metric's mean for both over the pairs where both decodes are ``ok``, and the mean paired difference
  with a Student-t 95 % interval;
* the paired difference of the *damage*, (metric − the same config's clean decode of that image) of the treatment
  minus that of the reference: > 0 means the treatment lost less than its clean advantage would predict (repair),
  < 0 that it lost more (amplification), with its interval.

One comparison model (:class:`Comparison`) with named roles, used by ``paired.csv``/``paired.md``, the HTML report
and, as before → after, the fine-tune-then-evaluate table: the **reference** (ELIC-only, DICM without the side view,
the OOD base), the **treatment** (the enhanced decoder, DICM with the side view, base + adapter) and what differs
between them; every Δ is **treatment − reference**. Who follows whose draws (``paired_with``) does not set the
roles: an OOD adapter follows its base's draws yet is the treatment (``ood_groups.json`` names the roles; a config
with an ``adapter`` option is the treatment), while an ablation that follows the full model is the reference.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Comparison:
    """Two codec configs decoding the same corrupted streams: Δ = ``treatment`` − ``reference`` everywhere."""

    reference: str  # codec label, e.g. the ELIC-only ablation or the OOD base
    treatment: str  # codec label, e.g. the enhanced decoder or base + adapter
    differs: str  # what differs between them, in words


def _configs(cells: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per codec label: its registry name, resolved config and suite options (first cell)."""
    out = {}
    for r in cells.drop_duplicates("codec_label").to_dict("records"):
        parse = lambda v: json.loads(v) if isinstance(v, str) else (v or {})  # noqa: E731
        out[str(r["codec_label"])] = {
            "name": r.get("codec_name") or r.get("codec"),
            "config": parse(r.get("codec_config")),
            "options": parse(r.get("codec_options")),
        }
    return out


def _difference(ref: dict[str, Any], treat: dict[str, Any]) -> str:
    """What differs between two configs (:func:`_configs`), as ``key: reference → treatment``."""
    parts = []
    if ref.get("name") != treat.get("name"):
        parts.append(f"codec: {ref.get('name')} → {treat.get('name')}")
    a, b = ref.get("config", {}), treat.get("config", {})
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k) and k != "target_bpp":  # a rate-matched config's per-image target
            parts.append(f"{k}: {a.get(k)} → {b.get(k)}")
    if "adapter" in treat.get("options", {}) and "adapter" not in ref.get("options", {}):
        parts.append(f"adapter: none → {Path(str(treat['options']['adapter'])).parent.name or 'fine-tuned'}")
    return "; ".join(dict.fromkeys(parts)) or "the same config (a control)"


def comparisons(cells: pd.DataFrame, groups: list[dict[str, Any]] | None = None) -> list[Comparison]:
    """The comparisons of a run, roles named: for each (follower, partner) of :func:`partner_pairs`, the OOD
    ``groups`` (``ood_groups.json``: base = reference, adapter = treatment) decide where they name the pair; else a
    config with an ``adapter`` option is the treatment; else the follower (the config declaring ``paired_with``,
    an ablation decoding its partner's streams) is the reference and its partner the treatment."""
    configs = _configs(cells)
    roles = {frozenset((g["base"], g["adapter"])): (g["base"], g["adapter"]) for g in groups or []}
    out = []
    for follower, partner in partner_pairs(cells):
        if frozenset((follower, partner)) in roles:
            reference, treatment = roles[frozenset((follower, partner))]
        elif "adapter" in configs[follower]["options"] and "adapter" not in configs[partner]["options"]:
            reference, treatment = partner, follower
        else:
            reference, treatment = follower, partner
        out.append(Comparison(reference, treatment, _difference(configs[reference], configs[treatment])))
    return out


def _clean(cells: pd.DataFrame, metric: str) -> pd.Series:
    """Per (codec label, image, corruption): the metric of the ok clean decodes (identity level), averaged."""
    col = f"metric.{metric}"
    level0 = cells["params"].map(tables.level_value) == 0
    ok = cells[level0 & (cells["status"] == "ok")]
    return ok.groupby(["codec_label", "image_sha256", "corruption"])[col].mean()


#: Columns of ood.before_after renamed to the comparison's roles.
_ROLE_SUFFIXES = (("_before", "_reference"), ("_after", "_treatment"))


def paired_table(cells: pd.DataFrame, comparison: Comparison, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Rows per (dataset, corruption, scope, level): failure rates, bpp and metric means of both roles over
    both-ok pairs (``*_reference``, ``*_treatment``), ``<m>_diff`` = treatment − reference with its t interval,
    and the damage difference (``<m>_damage_diff``); plus ``reference``, ``treatment`` and ``differs``."""
    ref, treat = comparison.reference, comparison.treatment
    datasets = sorted(set(cells.loc[cells["codec_label"].isin([ref, treat]), "dataset"]))
    groups = [{"dataset": d, "base": ref, "adapter": treat, "in_distribution": []} for d in datasets]
    table = ood.before_after(cells, groups, metrics)
    if table.empty:
        return table
    for m in metrics:
        clean = _clean(cells, m)
        drops: dict[tuple, list[float]] = {}
        for d in datasets:
            pairs = ood.paired(cells, ref, treat, d)
            ok = pairs[(pairs["status_before"] == "ok") & (pairs["status_after"] == "ok")]
            for _, r in ok.iterrows():
                c_ref = clean.get((ref, r["image_sha256"], r["corruption"]), math.nan)
                c_treat = clean.get((treat, r["image_sha256"], r["corruption"]), math.nan)
                v_treat, v_ref = r[f"metric.{m}_after"], r[f"metric.{m}_before"]
                if np.isfinite([v_treat, c_treat, v_ref, c_ref]).all():  # lossless (inf): no damage to compare
                    drops.setdefault((d, r["corruption"], r["scope"], r["params"]), []).append(
                        (v_treat - c_treat) - (v_ref - c_ref)
                    )
        lo_hi = []
        for _, row in table.iterrows():
            key = next((k for k in drops if k[:3] == (row["evaluated"], row["corruption"], row["scope"])
                        and tables.level_value(k[3]) == row["level_value"]), None)  # fmt: skip
            lo_hi.append(mean_interval(np.array(drops[key])) if key else (math.nan,) * 3)
        table[f"{m}_damage_diff"] = [v[0] for v in lo_hi]
        table[f"{m}_damage_ci_low"] = [v[1] for v in lo_hi]
        table[f"{m}_damage_ci_high"] = [v[2] for v in lo_hi]
    renames = {"evaluated": "dataset"}
    for c in table.columns:
        for old, new in _ROLE_SUFFIXES:
            if c.endswith(old):
                renames[c] = c[: -len(old)] + new
    table = table.drop(columns=["ood_dataset", "role", "base", "adapter"]).rename(columns=renames)
    front = ["dataset", "reference", "treatment", "differs"]
    table = table.assign(reference=ref, treatment=treat, differs=comparison.differs)
    return table[front + [c for c in table.columns if c not in front]]


def _ci(d: float, lo: float, hi: float) -> str:
    if math.isnan(d):
        return "—"
    return f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" if not math.isnan(lo) else f"{d:+.3f} (n<2)"


def human(table: pd.DataFrame, metrics: tuple[str, ...]) -> pd.DataFrame:
    """One comparison's rows as people read them: ``reference → treatment`` values, Δ = treatment − reference."""
    r, t = table["reference"].iloc[0], table["treatment"].iloc[0]
    out = table[["dataset", "corruption", "scope", "level", "images", "pairs", "pairs_both_ok"]].copy()
    out = out.rename(columns={"pairs_both_ok": "both ok"})
    out[f"failures {r} → {t}"] = [
        f"{b:.1%} → {a:.1%}"
        for b, a in zip(table["failure_rate_reference"], table["failure_rate_treatment"], strict=True)
    ]
    for m in metrics:
        if f"{m}_diff" not in table:
            continue
        out[f"{m} {r} → {t}"] = [
            f"{b:.3f} → {a:.3f}" for b, a in zip(table[f"{m}_reference"], table[f"{m}_treatment"], strict=True)
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


def heading(table: pd.DataFrame) -> str:
    """The title of one comparison: roles, what differs and the sign convention."""
    r, t, d = table["reference"].iloc[0], table["treatment"].iloc[0], table["differs"].iloc[0]
    return f"{t} vs {r} (treatment vs reference; differs: {d}): the same corrupted streams and draws, Δ = {t} − {r}"


def human_tables(frame: pd.DataFrame, metrics: tuple[str, ...] | None = None) -> list[tuple[str, pd.DataFrame]]:
    """(heading, human table) per comparison of a ``paired.csv`` frame."""
    if frame.empty:
        return []
    metrics = metrics or tuple(c[: -len("_diff")] for c in frame.columns if c.endswith("_diff") and "_damage" not in c)
    out = []
    for _, t in frame.groupby(["reference", "treatment"], sort=False):
        t = t.reset_index(drop=True)
        out.append((heading(t), human(t, metrics)))
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
    groups_file = run_dir / "ood_groups.json"
    groups = json.loads(groups_file.read_text()).get("groups", []) if groups_file.is_file() else []
    found = comparisons(cells, groups)
    if not found:
        return None
    cells = tables.without_crossed_side(cells)
    parts, frames = [], []
    for comparison in found:
        t = paired_table(cells, comparison, metrics)
        if t.empty:
            continue
        t = ood.sort_levels(t.assign(ood_dataset=t["dataset"], role="")).drop(columns=["ood_dataset", "role"])
        frames.append(t)
        parts.append(f"## {heading(t)}\n")
        parts.append(tables.markdown_table(human(t, metrics), ("dataset", "corruption", "level")) + "\n")
    if not frames:
        return None
    pd.concat(frames).to_csv(run_dir / "paired.csv", index=False)
    intro = (
        "# Paired comparisons\n\nEach row pairs the cells of two configs on the same image, corruption draw and "
        "decode seed. Every Δ is treatment − reference, over pairs where both decodes are ok; the damage column "
        "subtracts each config's own clean decode of the image first (> 0: the treatment repairs, < 0: it "
        "amplifies).\n\n"
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
