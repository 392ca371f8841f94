"""The report of a run directory: ``report.html`` (self-contained: figures embedded as data URIs) and
``report.md`` (figures linked from ``report/``), plus every table as CSV (and Parquet with pyarrow).

::

    results.sqlite ──> cells ──> summary / per-image / RD + BD-rate / threshold tables ──> report/*.csv
                        │                      └──> figures (PNG + SVG) ──────────────────> report/*.png|svg
                        └──> a few cells re-decoded (reports.redecode) ──> visual grid
    provenance table ──────────────────────────────────────────────────────────────────> both reports

Every label that comes from data (file names, codec labels, error messages) is HTML-escaped in the HTML and
Markdown-escaped (pipes, backticks, ``*``, ``_``, brackets, ``<``, ``>``) in the Markdown.

The HTML leads with the figures and a short headline table (failure % per level and codec), then the full
summary in a scrollable container, the other tables, and provenance as a two-column table. No table or figure
can lose the report: a part that fails is replaced by a note saying why.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.status import Status
from reports import tables
from reports.impute import Imputation

READING_GUIDE = """\
Each row of the summary is one (dataset, preprocessing, codec configuration, corruption, scope, level)
over `cells` = images × seeds decodes: datasets and preprocessing policies are never pooled. *fail %*
counts every status but `ok` (exception, crash, timeout, invalid output, FEC failure) with its Wilson 95%
interval: with few cells the interval is wide, and a 0% row is not proof of robustness. Quality columns
(mean ± half-width of the 95% t interval) are over `ok` decodes only, never with failures averaged in;
`n ok` says how many, and a metric's own n is printed beside its mean where some ok cells lack it. A
lossless decode (PSNR = inf, identical to the original) is counted, not averaged: a mean is over the finite
values with the lossless count beside it, and a row where every decode is lossless reads *lossless (n …)*.
*≤1 dB of clean decode* is the share of ok decodes whose difference from the clean decode of the same stream
(PSNR against the clean decode, `psnr_vs_clean`) costs at most 1 dB: `psnr_vs_clean` ≥ clean PSNR + 5.87 dB,
an identical decode always counting (graceful degradation vs garbage). *drop ≤1 dB vs clean quality* is the
share whose PSNR against the original is at most 1 dB below the clean decode's. bpp is 8 × file bytes /
original pixels; header bpp is the part of it in the codec's header. With FEC, *residual flips* are the bits
still wrong after the FEC decoder, and *FEC passed but wrong* counts streams the FEC layer passed as
corrected that still differ from the sent stream (Reed–Solomon miscorrection beyond its capacity). The
threshold table gives, per codec and scope, the highest level (walking up) at which the failure rate is ≤ 1%
and the mean PSNR drop from the clean decode is ≤ 1 dB, with the upper ends of the intervals beside it. The
rate–distortion points rest on the same images for bpp and quality (`images` says how many); BD-rate (%)
and BD-quality (BD-PSNR in dB) compare curves after dropping lossless, duplicate and non-monotonic points (the
note says which). Columns headed *incl. failures (failed = …)* appear only when asked for
(`report --impute POLICY`): they average failures in at the value the named policy gives them, so read them
with the failure rate."""


#: The quality figure shows at most this many metrics (all of them are in the tables).
MAX_QUALITY_METRICS = 3
#: Decode seconds the visual grid may re-spend: the parse + reconstruct seconds the run itself recorded for each
#: tile's decode are summed in tile order, and a tile that would pass the budget is left out (full-size RDEIC
#: takes ~30 s per CPU decode). Counted from the store, not from the clock, so the same store draws the same
#: grid whatever the load while the report is written.
GRID_BUDGET_S = 60.0

BD_EMPTY = (
    "No BD-rate: it needs two curves on the same dataset (codec labels NAME@RATE, one curve per NAME), "
    "each with at least two rate points."
)


def _inline(text: str) -> str:
    """Escape, then render the two Markdown marks the guide uses (`code`, *emphasis*)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


@dataclass
class Report:
    html: Path
    markdown: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    impute: tuple[Imputation, ...] = ()
    distribution: pd.DataFrame | None = None
    ood: dict | None = None  # fine-tune-then-evaluate tables (harness/ood.py), when the run has them
    headline: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # failure % per level and codec
    bd_notes: list[str] = field(default_factory=list)
    compressai: list[Path] = field(default_factory=list)  # CompressAI eval_model-shaped JSON files
    paired: Path | None = None  # paired.md: configs that decoded the same corrupted streams (paired_with)


def run_metrics(cells: pd.DataFrame, provenance: dict[str, str]) -> tuple[str, ...]:
    """The suite's metric names (from the suite text in provenance), else those found in the cells."""
    text = provenance.get("suite_text")
    if text:
        try:
            names = tomllib.loads(text).get("metrics")
            if names:
                return tuple(names)
        except tomllib.TOMLDecodeError:
            pass
    found = [c[len("metric.") :] for c in cells.columns if c.startswith("metric.")]
    return tuple(m for m in found if not m.startswith("clean_") and not m.endswith("_vs_clean"))


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4g}"
    return str(v)


def _html_table(frame: pd.DataFrame, classes: str = "t") -> str:
    if frame.empty:
        return "<p><em>(empty)</em></p>"
    return frame.map(_fmt).to_html(index=False, escape=True, border=0, classes=classes)


def _scroll(inner: str) -> str:
    """A wide or long table in a scrollable box (the page keeps its width)."""
    return f'<div class="scroll">{inner}</div>'


def _markdown(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(empty)"
    return tables.markdown_table(frame.map(_fmt))


#: Provenance lists of records longer than this are summarised in the table ("N entries") and given in full,
#: as JSON, in a collapsed block below it.
PROVENANCE_LIST_ROWS = 3


def _flatten(key: str, value: Any, rows: list[dict], details: dict[str, Any]) -> None:
    if isinstance(value, dict):
        if not value:
            rows.append({"key": key, "value": "(none)"})
        for k, v in value.items():
            _flatten(f"{key}.{k if k != '' else '(empty)'}", v, rows, details)
    elif isinstance(value, list):
        if all(not isinstance(v, dict | list) for v in value):
            rows.append({"key": key, "value": ", ".join(map(str, value)) if value else "(none)"})
        elif len(value) <= PROVENANCE_LIST_ROWS:
            for i, v in enumerate(value):
                _flatten(f"{key}[{i}]", v, rows, details)
        else:
            rows.append({"key": key, "value": f"{len(value)} entries (in full below the table)"})
            details[key] = value
    else:
        rows.append({"key": key, "value": "(none)" if value is None else str(value)})


def provenance_rows(prov: dict[str, str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Provenance as a readable two-column table (``key``, ``value``): nested records flattened to dotted keys,
    lists of values joined; long lists of records summarised, and returned in full (second value) for a
    collapsed block. The suite file is shown apart."""
    rows: list[dict] = []
    details: dict[str, Any] = {}
    for k, v in prov.items():
        if k == "suite_text":
            continue
        try:
            parsed = json.loads(v)
        except (ValueError, TypeError):
            parsed = v
        _flatten(k, parsed, rows, details)
    return pd.DataFrame(rows, columns=["key", "value"]), details


#: Provenance a reader needs first (which code, suite, device, libraries and data made the numbers); every
#: other record (per-stream parse timings, subsets, budgets, argv...) is folded below it.
PROVENANCE_LEAD = (
    "suite_name",
    "suite_path",
    "suite_sha256",
    "git_commit",
    "devices",
    "entropy_threads",
    "torch_threads",
    "packages",
    "openjpeg_version",
    "openjpeg_path",
    "openjpeg_origin",
    "python",
    "platform",
    "datasets",
    "metrics",
    "timeout_s",
)


def split_provenance(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(lead, rest) of :func:`provenance_rows`: the lead rows in :data:`PROVENANCE_LEAD` order, the rest apart."""
    top = rows["key"].map(lambda k: re.split(r"[.\[]", str(k), maxsplit=1)[0])
    lead = rows[top.isin(PROVENANCE_LEAD)]
    order = {k: i for i, k in enumerate(PROVENANCE_LEAD)}
    lead = lead.iloc[sorted(range(len(lead)), key=lambda i: order[top[lead.index[i]]])]
    return lead.reset_index(drop=True), rows[~top.isin(PROVENANCE_LEAD)].reset_index(drop=True)


def _tile_title(row: dict) -> str:
    """The plotted parameter of a level (the others are in the row label)."""
    params = json.loads(row["params"])
    axis = tables.level_axis(params)
    value = params.get(axis)
    return f"{axis}={value:g}" if isinstance(value, int | float) else str(row["level"])


def grid_rows(
    run_dir: Path,
    store: Any,
    cells: pd.DataFrame,
    metrics: tuple[str, ...],
    timeout_s: float,
    budget_s: float = GRID_BUDGET_S,
) -> list:
    """One image (the first by id) across the levels of the first corruption, per codec config: original,
    clean decode, then each level's corrupted decode (replicate 0, decode seed 0; scope ``all`` if run)."""
    from reports.redecode import Redecoder, load_original

    if cells.empty:
        return []
    corruption = sorted(cells["corruption"].unique())[0]
    c = tables.without_crossed_side(cells)
    c = c[(c["corruption"] == corruption) & (c["replicate"] == 0) & (c["decode_seed"] == 0)]
    scopes = sorted(c["scope"].unique())
    scope = "all" if "all" in scopes else scopes[0]
    image_id = sorted(c["image_id"].unique())[0]
    c = c[(c["scope"] == scope) & (c["image_id"] == image_id)]
    if "fec_label" in c:
        c = c[c["fec_label"] == "none"]
    m = "psnr" if "psnr" in metrics else (metrics[0] if metrics else None)
    rows = []
    original = None
    names = tables.display_names(cells)
    spent = 0.0  # recorded decode seconds of the tiles re-decoded so far
    with Redecoder(run_dir, store, timeout_s) as rd:
        c = c.assign(_series=tables.varying_label(list(c["params"])))
        several = c["_series"].nunique() > 1
        for (label, series), g in c.groupby(["codec_label", "_series"], sort=True):
            g = g.sort_values("level_value")
            first = g.iloc[0].to_dict()
            if original is None:
                original = load_original(first, rd.dataset_options.get(first["dataset"]))
            clean = rd.clean(first)
            ok = g[g["status"] == Status.OK.value]
            clean_caption = ""
            if m and len(ok) and f"metric.clean_{m}" in ok:
                clean_caption = f"{m} {ok[f'metric.clean_{m}'].iloc[0]:.2f}"
            tiles = [
                ("original", original, image_id if original is not None else "original not loadable"),
                (f"clean, {first['bpp']:.3f} bpp", clean, clean_caption or "clean decode"),
            ]
            for row in g.to_dict("records"):
                cost = _recorded_decode_s(store, row)
                if not spent + cost < budget_s:
                    note = f"not re-decoded: the grid's budget of {budget_s:g} recorded decode seconds is spent"
                    tiles.append((_tile_title(row), None, note))
                    continue
                spent += cost
                out = rd.decode(row)
                value = row.get(f"metric.{m}") if m else None
                caption = f"{m} {value:.2f}" if out.image is not None and value is not None else out.note
                if out.image is None and row["status"] != Status.OK.value:
                    caption = f"{row['status']}: {row.get('error_type') or ''}"
                tiles.append((_tile_title(row), out.image, caption))
            shown = names.get(str(label), str(label))
            codec = f"{shown}\n{series}" if several and series else shown  # the row's name in the figure
            rows.append({"codec": codec, "label": str(label), "tiles": tiles})
    return rows


def _recorded_decode_s(store: Any, row: dict) -> float:
    """Parse + reconstruct seconds the run recorded for ``row``'s decode (0 when the store has none): what a
    re-decode of that tile is expected to cost, read from the store so that the grid does not depend on the load."""
    record = store.decode(str(row.get("decode_key") or ""))
    if record is None:
        return 0.0
    return float(record.parse_s or 0.0) + float(record.reconstruct_s or 0.0)


def clean_only_labels(cells: pd.DataFrame) -> list[str]:
    """Codec labels with clean cells only (``clean_only``: the VAE-only bound) in a run where other labels have
    corrupted levels: a reference bound, drawn as such, not a codec to compare rates with."""
    identity = (cells["level_value"] == 0).groupby(cells["codec_label"]).all()
    if identity.all():
        return []
    return [str(label) for label, only_clean in identity.items() if only_clean]


def _named(frame: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """``frame`` with its codec labels (and RD curve names) replaced by the names figures show
    (:func:`reports.tables.display_names`: the build in brackets where the label does not name it)."""
    if frame.empty or "codec" not in frame:
        return frame
    out = frame.assign(codec=[names.get(str(c), str(c)) for c in frame["codec"]])
    if "curve" in frame:
        suffix: dict[str, str] = {}
        for curve, codec in zip(frame["curve"], frame["codec"], strict=True):
            suffix.setdefault(str(curve), names.get(str(codec), str(codec))[len(str(codec)) :])
        out["curve"] = [f"{c}{suffix[str(c)]}" for c in frame["curve"]]
    return out


def _figure(rep: Report, name: str, draw) -> None:
    """Draw one figure; a failure becomes a note (a picture never loses the report)."""
    try:
        rep.figures[name] = draw()
    except Exception as exc:
        rep.notes.append(f"figure {name} not drawn: {type(exc).__name__}: {exc}")


def build(
    run_dir: Path,
    *,
    grid: bool = True,
    impute: tuple[Imputation, ...] = (),
    distribution: bool = False,
    progress: bool = True,
) -> Report:
    """Write the report of ``run_dir``; returns what was written. ``impute``: failure-imputation policies
    whose labelled columns are added to the summary (:mod:`reports.impute`; none by default).
    ``distribution``: compute FID/KID per group by re-decoding (:mod:`reports.distribution`; opt-in, slow);
    without it a ``report/distribution.csv`` from an earlier such call is shown again. Also writes the clean
    rate–distortion points as CompressAI ``eval_model``-shaped JSON under ``compressai/``. ``progress``: one
    ``report: <phase>`` line on stderr per phase (tables, figures, visual grid, pages), so a long report is not a
    silent minute after the run's last line."""
    from harness.console import say
    from harness.store import ResultStore

    def phase(text: str) -> None:
        if progress:
            say(f"report: {text}")

    from reports import plots, terminal
    from reports.compressai_json import write_compressai_json

    store = ResultStore(run_dir / "results.sqlite")
    try:
        raw = store.cells_frame()
        prov = store.provenance()
        if raw.empty:
            raise ValueError(f"{run_dir}: the results store has no cells")
        cells = tables.prepare(raw)
        metrics = run_metrics(cells, prov)
        phase(f"tables of {len(cells)} cells")
        summary = tables.summarise(cells, metrics, impute)
        computed = tables.computed_metrics(summary, metrics)
        out = run_dir / "report"
        out.mkdir(parents=True, exist_ok=True)
        rep = Report(run_dir / "report.html", run_dir / "report.md")
        per_image = tables.per_image(cells, metrics)
        rd = tables.rd_summary(cells, computed)
        bd, rep.bd_notes = tables.bd_table(rd, computed) if computed else (pd.DataFrame(), [])
        threshold = tables.threshold_table(summary, "psnr" if "psnr" in computed else (computed or ("psnr",))[0])
        rep.headline = terminal.headline_tables(summary)
        for name, frame in (
            ("summary", summary),
            ("per_image", per_image),
            ("rd", rd),
            ("bd_rate", bd),
            ("threshold", threshold),
        ):
            rep.tables[name] = tables.write_frame(frame, out / f"{name}.csv")[0]
        try:
            rep.compressai = write_compressai_json(run_dir, cells, computed)
        except Exception as exc:
            rep.notes.append(f"CompressAI JSON not written: {type(exc).__name__}: {exc}")
        phase("figures")
        names = tables.display_names(cells)  # legends name the build where the label does not (rdeic-tiny@low)
        shown_summary, shown_rd = _named(summary, names), _named(rd, names)
        colours = plots.codec_colours(names.get(str(c), str(c)) for c in cells["codec_label"])
        axis = tables.level_axis(cells["params"].iloc[0])
        _figure(rep, "failure_rate", lambda: plots.failure_rate(shown_summary, axis, out, colours))
        if computed:
            shown = computed[:MAX_QUALITY_METRICS]
            _figure(rep, "quality", lambda: plots.quality(shown_summary, shown, axis, out, colours))
            bounds = [names.get(str(b), str(b)) for b in clean_only_labels(cells)]
            _figure(rep, "rd", lambda: plots.rd_curves(shown_rd, computed[:2], out, colours, bounds))
        _figure(rep, "status", lambda: plots.status_composition(shown_summary, out))
        if grid:
            phase(f"visual grid (re-decoding, at most {GRID_BUDGET_S:g} recorded decode seconds)")
            try:
                timeout = float(json.loads(prov.get("timeout_s", "30")))
                rows = grid_rows(run_dir, store, cells, computed, timeout)
                if rows:
                    rep.figures["grid"] = plots.visual_grid(rows, out)
            except Exception as exc:  # the grid is a picture: never lose the report for it
                rep.notes.append(f"visual grid not drawn: {type(exc).__name__}: {exc}")
        rep.distribution = _distribution(run_dir, store, cells, prov, out, distribution, rep)
        try:
            rep.ood = _ood(run_dir, out, rep)
        except Exception as exc:
            rep.notes.append(f"fine-tune-then-evaluate tables not shown: {type(exc).__name__}: {exc}")
        try:  # configs with paired_with: the same corrupted streams decoded by both (e.g. enhanced vs ELIC-only)
            from reports import paired

            rep.paired = paired.write(run_dir, computed)
        except Exception as exc:
            rep.notes.append(f"paired comparisons not written: {type(exc).__name__}: {exc}")
        rep.notes += tables.summary_notes(summary, metrics)
        if tables.imputation_note(impute):
            rep.notes.append(tables.imputation_note(impute))
        rep.impute = impute
        phase("writing report.md and report.html")
        _write_markdown(rep, run_dir, cells, summary, metrics, threshold, rd, bd, prov)
        _write_html(rep, run_dir, cells, summary, metrics, threshold, rd, bd, prov)
        return rep
    finally:
        store.close()


def _distribution(run_dir, store, cells, prov, out, compute: bool, rep: Report) -> pd.DataFrame | None:
    """The FID/KID table: computed now when asked, else the one an earlier ``--distribution`` wrote."""
    path = out / "distribution.csv"
    if compute:
        from reports.distribution import distribution_table

        timeout = float(json.loads(prov.get("timeout_s", "30")))
        frame = distribution_table(run_dir, store, cells, timeout_s=timeout)
        rep.tables["distribution"] = tables.write_frame(frame, path)[0]
        return frame
    if path.is_file():
        rep.tables["distribution"] = path
        rep.notes.append(f"FID/KID table from an earlier `evaluate.py report --distribution` ({path.name}).")
        return pd.read_csv(path)
    return None


def _ood(run_dir: Path, out: Path, rep: Report) -> dict | None:
    """The fine-tune-then-evaluate tables (harness/ood.py wrote them beside the results), when this run has them."""
    path = run_dir / "ood_before_after.csv"
    if not path.is_file():
        return None
    from reports import ood

    table = pd.read_csv(path)
    rep.tables["ood_before_after"] = path
    curves = out / "ood_training_curves.png"
    if curves.is_file():
        rep.figures["ood_training_curves"] = [curves]
    record = json.loads((run_dir / "ood_groups.json").read_text()) if (run_dir / "ood_groups.json").is_file() else {}
    return {
        "before_after": ood.human_table(table, ood.metrics_of(table)) if not table.empty else table,
        "adapters": ood.adapters_table(record.get("groups", [])),
        "bitstreams": pd.DataFrame(record.get("bitstreams", [])),
    }


BUILT_INTRO = (
    "Which model made every number: each codec label of the suite with the registry name that ran (a suite's "
    "rdeic-auto runs the official RDEIC only with its checkpoints, else rdeic-tiny@low), its model, sampling steps, "
    "device and precision, the sha256 of its weights and the fingerprint its cells are keyed by (first 12 hex "
    "digits). Tables and figures name the build beside the label where the label does not."
)


OOD_INTRO = (
    "Before = the base codec (the reference), after = base + the adapter fine-tuned on the OOD dataset's train part "
    "(the treatment; best step on its val part). Pairs share the image, corruption draw, level, replicate and decode "
    "seed; Δ = after − before (treatment − reference, as in the paired comparisons) over "
    "pairs where both decodes are ok, with a Student-t 95% interval. ID rows measure forgetting. Bitstreams: the "
    "base's and the adapter's streams compared byte for byte, image by image."
)


DISTRIBUTION_INTRO = (
    "FID and KID per group, over ok decodes against the originals, on patches (protocol column); sets below the "
    "stated minimum number of patches are refused (note column), never estimated."
)


CAPTIONS = {
    "failure_rate": "Failure rate vs level with Wilson 95% bands, per codec and scope (one colour per codec in "
    "every figure).",
    "quality": "Quality over ok decodes vs level (mean; 95% t band where n ≥ 5, n beside points with fewer); "
    "dotted: the clean decode. The axis is clipped to the plotted values; ∞ at the top: every decode lossless.",
    "status": "Status composition per level.",
    "rd": "Rate–distortion of the clean decodes (mean over the same images for bpp and quality; 95% interval "
    "where a point rests on at least 5 images); lossless points are named, not drawn; a bound without compression "
    "(VAE-only) is a dashed line at its quality.",
    "ood_training_curves": "Adapter training loss and validation metric against steps (step 0 = the base; ★ the "
    "best validation step).",
    "grid": "One image across levels: original, clean decode, corrupted decodes (re-decoded and verified "
    "against the run's hashes); captions give the metric vs the original or the failure.",
}

#: Figures in the order the report shows them.
FIGURE_ORDER = ("failure_rate", "quality", "rd", "status", "grid", "ood_training_curves")


def _ordered_figures(rep: Report) -> list[tuple[str, list[Path]]]:
    order = {name: i for i, name in enumerate(FIGURE_ORDER)}
    return sorted(rep.figures.items(), key=lambda kv: order.get(kv[0], len(order)))


def fec_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Rows with FEC: streams the FEC layer passed as corrected, how many still differ from the sent stream
    (share with its Wilson 95% interval) and the mean residual flips."""
    if "fec_passed" not in summary or "fec" not in summary:
        return pd.DataFrame()
    rows = summary[summary["fec"] != "none"]
    out = []
    for r in rows.to_dict("records"):
        share = r["fec_miscorrected_share"]
        out.append(
            {
                "codec": r["codec"],
                "corruption": r["corruption"],
                "scope": r["scope"],
                "level": r["level"],
                "FEC": r["fec"],
                "cells": r["cells"],
                "fec_failure": r.get("fec_failure", 0),
                "passed as corrected": r["fec_passed"],
                "passed but wrong": r["fec_miscorrected"],
                "wrong % [95% CI]": "–"
                if not r["fec_passed"]
                else f"{100 * share:.1f} [{100 * r['fec_miscorrected_ci_low']:.1f}, "
                f"{100 * r['fec_miscorrected_ci_high']:.1f}]",
                "residual flips (mean)": r["residual_flips_mean"],
            }
        )
    return pd.DataFrame(out)


FEC_INTRO = (
    "Streams the FEC layer passed as corrected (no fec_failure declared, no failed codeword) against the sent "
    "stream: Reed–Solomon beyond its capacity sometimes 'corrects' to a wrong codeword, which only the residual "
    "flips show. Such a stream goes to the decoder as if it were clean."
)


def _title(prov: dict[str, str], run_dir: Path) -> str:
    return f"Robustness report: {prov.get('suite_name', '?')} ({run_dir})"


def _headline_markdown(rep: Report) -> list[str]:
    parts = []
    for title, frame in rep.headline:
        table = tables.markdown_table(frame, (frame.columns[0],))  # codec labels head the columns
        parts += [f"**{tables.md_escape(title, label=False)}**", "", table, ""]
    return parts


def _write_markdown(rep, run_dir, cells, summary, metrics, threshold, rd, bd, prov) -> None:
    esc = tables.md_escape
    parts = [f"# {esc(_title(prov, run_dir), label=False)}", "", esc(tables.footer(cells), label=False), ""]
    parts += ["## Codecs as built", "", BUILT_INTRO, "", _markdown(tables.codecs_as_built(cells)), ""]
    for note in rep.notes:
        parts += [f"> {esc(note, label=False)}", ""]
    parts += ["## Headline: failure % per level [Wilson 95% CI]", "", *_headline_markdown(rep)]
    for name, paths in _ordered_figures(rep):
        link = paths[0].relative_to(run_dir)
        parts += [f"## Figure: {name}", "", CAPTIONS.get(name, ""), "", f"![{name}]({link})", ""]
    parts += ["## How to read the tables", "", READING_GUIDE, ""]
    parts += ["## Summary", "", tables.to_markdown(summary, metrics, rep.impute), ""]
    fec = fec_table(summary)
    if not fec.empty:
        parts += ["## FEC: residual flips and silent miscorrection", "", FEC_INTRO, "", _markdown(fec), ""]
    parts += ["## Threshold (failure ≤ 1% and ≤ 1 dB from clean)", "", _markdown(threshold), ""]
    parts += ["## Rate–distortion (clean decodes)", "", _markdown(rd), "", "## BD-rate and BD-quality", ""]
    parts += [_markdown(bd) if not bd.empty else f"_{BD_EMPTY}_", ""]
    for note in rep.bd_notes:
        parts += [f"> {esc(note, label=False)}", ""]
    if rep.distribution is not None:
        parts += ["## Distribution metrics (FID / KID on patches)", "", DISTRIBUTION_INTRO, ""]
        parts += [_markdown(rep.distribution), ""]
    if rep.ood is not None:
        parts += ["## Fine-tune-then-evaluate (before → after)", "", OOD_INTRO, ""]
        parts += ["### Adapters", "", _markdown(rep.ood["adapters"]), ""]
        parts += ["### Before → after", "", _markdown(rep.ood["before_after"]), ""]
        parts += ["### Bitstreams", "", _markdown(rep.ood["bitstreams"]), ""]
    if rep.paired is not None:
        parts += [rep.paired.read_text().replace("\n## ", "\n### ").replace("# ", "## ", 1), ""]
    written = [*rep.tables.values(), *rep.compressai]
    parts += ["## Tables written", "", *(f"- `{p.relative_to(run_dir)}`" for p in written), ""]
    lead, rest = split_provenance(provenance_rows(prov)[0])
    parts += ["## Provenance", "", "Codecs as built: the table at the top.", "", _markdown(lead), ""]
    parts += ["### Other provenance records", "", _markdown(rest), ""]
    rep.markdown.write_text("\n".join(parts))


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px;color:#222}
table.t{border-collapse:collapse;font-size:12px;margin:0.5em 0}
table.t td,table.t th{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}
table.t th{background:#f0f0f0;position:sticky;top:0}
table.t td:first-child{text-align:left}
.scroll{overflow:auto;max-height:70vh;max-width:100%;border:1px solid #ddd;margin:0.5em 0}
.scroll table.t{margin:0}
table.prov td{text-align:left;white-space:normal;font-size:12px;vertical-align:top}
table.prov td:first-child{font-family:monospace;white-space:nowrap}
table.prov td:last-child{word-break:break-word;max-width:900px}
.headline{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.headline h3{font-size:13px;margin:0.3em 0}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:13px;color:#444}
.note{background:#fff6d6;padding:0.5em;border-left:4px solid #e0a93b}
details{margin:0.5em 0} pre{white-space:pre-wrap;font-size:11px;background:#f7f7f7;padding:0.5em}
"""


def _write_html(rep, run_dir, cells, summary, metrics, threshold, rd, bd, prov) -> None:
    e = html.escape
    body = [f"<h1>{e(_title(prov, run_dir))}</h1>", f"<p>{e(tables.footer(cells))}</p>"]
    body += [
        "<h2>Codecs as built</h2>",
        f"<p>{e(BUILT_INTRO)}</p>",
        _scroll(_html_table(tables.codecs_as_built(cells))),
    ]
    body += [f'<p class="note">{e(n)}</p>' for n in rep.notes]
    if rep.headline:
        body.append("<h2>Headline: failure % per level [Wilson 95% CI]</h2>")
        body.append('<div class="headline">')
        for title, frame in rep.headline:
            body.append(f"<div><h3>{e(title)}</h3>{_scroll(_html_table(frame))}</div>")
        body.append("</div>")
    body.append("<h2>Figures</h2>")
    for name, paths in _ordered_figures(rep):
        body.append(f"<figure>{_img(paths[0], name)}<figcaption>{e(CAPTIONS.get(name, ''))}</figcaption></figure>")
    body.append(f"<details><summary>How to read the tables</summary><p>{_inline(READING_GUIDE)}</p></details>")
    shown = summary.drop(columns=[c for c in summary.columns if c.endswith(("_ci_low", "_ci_high"))])
    body += ["<h2>Summary</h2>", _scroll(_html_table(tables.human_table(summary, metrics, rep.impute)))]
    body += ["<details><summary>All summary columns</summary>", _scroll(_html_table(shown)), "</details>"]
    fec = fec_table(summary)
    if not fec.empty:
        body += ["<h2>FEC: residual flips and silent miscorrection</h2>", f"<p>{e(FEC_INTRO)}</p>"]
        body.append(_scroll(_html_table(fec)))
    body += ["<h2>Threshold (failure ≤ 1% and ≤ 1 dB from clean)</h2>", _scroll(_html_table(threshold))]
    body += ["<h2>Rate–distortion (clean decodes)</h2>", _scroll(_html_table(rd)), "<h2>BD-rate and BD-quality</h2>"]
    body.append(_scroll(_html_table(bd)) if not bd.empty else f"<p><em>{e(BD_EMPTY)}</em></p>")
    body += [f'<p class="note">{e(n)}</p>' for n in rep.bd_notes]
    if rep.distribution is not None:
        body += ["<h2>Distribution metrics (FID / KID on patches)</h2>", f"<p>{e(DISTRIBUTION_INTRO)}</p>"]
        body.append(_scroll(_html_table(rep.distribution)))
    if rep.ood is not None:
        body += ["<h2>Fine-tune-then-evaluate (before → after)</h2>", f"<p>{e(OOD_INTRO)}</p>"]
        body += ["<h3>Adapters</h3>", _scroll(_html_table(rep.ood["adapters"]))]
        body += ["<h3>Before → after</h3>", _scroll(_html_table(rep.ood["before_after"]))]
        body += ["<h3>Bitstreams</h3>", _scroll(_html_table(rep.ood["bitstreams"]))]
    if rep.paired is not None and rep.paired.with_suffix(".csv").is_file():
        from reports import paired

        body += ["<h2>Paired comparisons (the same corrupted streams, both decoders)</h2>"]
        where = f"<code>{e(rep.paired.with_suffix('.csv').name)}</code>"
        body += [f"<p>Δ = treatment − reference over pairs where both decodes are ok; every column in {where}.</p>"]
        for heading, frame in paired.human_tables(pd.read_csv(rep.paired.with_suffix(".csv"))):
            body += [f"<h3>{e(heading)}</h3>", _scroll(_html_table(frame))]
    body += ["<h2>Per-image results</h2>", f"<p>In <code>{e(str(rep.tables['per_image']))}</code>.</p>"]
    if rep.compressai:
        files = ", ".join(f"<code>{e(str(p.relative_to(run_dir)))}</code>" for p in rep.compressai)
        body.append(f"<p>Clean rate–distortion points in CompressAI's <code>eval_model</code> JSON shape: {files}.</p>")
    prov_rows, details = provenance_rows(prov)
    lead, rest = split_provenance(prov_rows)
    body += ["<h2>Provenance</h2>", "<p>Codecs as built: the table at the top.</p>", _html_table(lead, "t prov")]
    body += [f"<details><summary>Other provenance records ({len(rest)} rows)</summary>"]
    body += [_html_table(rest, "t prov"), "</details>"]
    for key, value in details.items():
        text = json.dumps(value, indent=1, default=str)
        body.append(f"<details><summary>{e(key)} ({len(value)} entries)</summary><pre>{e(text)}</pre></details>")
    if prov.get("suite_text"):
        body.append(f"<details><summary>Suite file</summary><pre>{e(prov['suite_text'])}</pre></details>")
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(_title(prov, run_dir))}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    rep.html.write_text(page, encoding="utf-8")
