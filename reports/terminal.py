"""The headline of a run for a terminal: failure rate per level and codec with Wilson 95% intervals, within a
fixed width (100 columns by default), then where the full tables are.

::

    bsc (ber in flip probability per bit), scope all: failure % [Wilson 95% CI], 30 cells each
    ber      [1]            [2]            [3]
    0        0 [0–11]       0 [0–11]       0 [0–11]
    1e-05    3.3 [0.6–17]   0 [0–11]       0 [0–11]
    ...

One small table per (dataset, preprocessing, corruption, scope[, FEC], other level parameters), levels as rows
in order of value, codecs as columns. Codec labels head the columns when they fit; otherwise the columns are
numbered and a legend above the tables names them, and a table with more codecs than fit side by side is split
into several. The full table (every column) is in ``summary.md`` / ``report.html``.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from reports import tables

GAP = 2


def _pct(x: float) -> str:
    """A percentage with the precision it deserves: 0, 0.6, 3.3, 17, 100."""
    p = 100.0 * x
    if not math.isfinite(p):
        return "–"
    if p < 0.05 or p > 99.95:  # Wilson bounds at 0 and n come out a rounding error away from 0 and 100
        return f"{round(p):.0f}"
    return f"{p:.1f}" if p < 10 else f"{p:.0f}"


def rate_text(rate: float, low: float, high: float) -> str:
    """``3.3 [0.6–17]``: failure % and its Wilson 95% interval, in percent."""
    return f"{_pct(rate)} [{_pct(low)}–{_pct(high)}]"


def _level_label(row: dict) -> str:
    v = row["level_value"]
    return f"{v:g}" if isinstance(v, int | float) and math.isfinite(v) else str(row["level"])


def headline_tables(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, table) per (dataset, preprocessing, corruption, scope[, FEC], series): rows = levels in order of
    value (first column named after the level parameter), columns = codec labels, cells = failure % [95% CI].
    The title says the cells per entry (n)."""
    if summary.empty:
        return []
    data = [k for k in ("dataset", "preprocessing") if k in summary and summary[k].nunique() > 1]
    summary = summary.assign(_series="")
    if "side" in summary:  # codecs without side information sit beside the side codecs' true-view rows
        summary["side"] = summary["side"].replace("–", "true view")
    for _, rows in summary.groupby("corruption", sort=False):  # name only the parameters that tell series apart
        summary.loc[rows.index, "_series"] = tables.varying_label(list(rows["params"]))
    keys = [*data, "corruption", "scope", *[c for c in ("fec", "side") if c in summary], "_series"]
    out = []
    for key, g in summary.groupby(keys, sort=True, dropna=False):
        where = dict(zip(keys, key, strict=True))
        axis = tables.level_axis(g["params"].iloc[0])
        g = g.sort_values(["level_value", "level"], kind="stable")
        levels = list(dict.fromkeys(_level_label(r) for r in g.to_dict("records")))
        codecs = sorted(g["codec"].unique(), key=str)
        frame = pd.DataFrame({axis: levels})
        for codec in codecs:
            texts = {
                _level_label(r): rate_text(r["failure_rate"], r["failure_ci_low"], r["failure_ci_high"])
                for r in g[g["codec"] == codec].to_dict("records")
            }
            frame[str(codec)] = [texts.get(level, "") for level in levels]
        n = sorted(set(g["cells"]))
        cells = f"{n[0]} cells each" if len(n) == 1 else f"{n[0]}–{n[-1]} cells each"
        unit = tables.param_unit(str(where["corruption"]), axis, g["params"].iloc[0])
        corruption = f"{where['corruption']} ({axis} in {unit})" if unit else str(where["corruption"])
        parts = [*(str(where[k]) for k in data), corruption, f"scope {where['scope']}"]
        if "fec" in where and where["fec"] != "none":
            parts.append(f"FEC {where['fec']}")
        if "side" in where and where["side"] not in ("–", "this level"):
            parts.append(f"side view: {where['side']}")
        if where["_series"]:
            parts.append(str(where["_series"]))
        out.append((f"{', '.join(parts)}: failure % [Wilson 95% CI], {cells}", frame))
    return out


def _render(frame: pd.DataFrame, headers: list[str]) -> list[str]:
    widths = [max(len(h), *(len(str(v)) for v in frame.iloc[:, i])) for i, h in enumerate(headers)]
    lines = [(" " * GAP).join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in frame.itertuples(index=False):
        lines.append((" " * GAP).join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return lines


def _fits(frame: pd.DataFrame, headers: list[str], width: int) -> bool:
    return max(len(line) for line in _render(frame, headers)) <= width


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_long_words=True, break_on_hyphens=False) or [""]


def _table_lines(title: str, frame: pd.DataFrame, keys: dict[str, str], width: int) -> list[str]:
    lines = _wrap(title, width, "  ")
    level, codecs = frame.columns[0], list(frame.columns[1:])
    if _fits(frame, list(frame.columns), width):
        return lines + _render(frame, list(frame.columns))
    # numbered columns; split into chunks of codecs that fit side by side
    chunk: list[str] = []
    for codec in codecs:
        trial = [*chunk, codec]
        if chunk and not _fits(frame[[level, *trial]], [level, *(keys[c] for c in trial)], width):
            lines += _render(frame[[level, *chunk]], [level, *(keys[c] for c in chunk)])
            chunk = [codec]
        else:
            chunk = trial
    return lines + _render(frame[[level, *chunk]], [level, *(keys[c] for c in chunk)])


def built_lines(summary: pd.DataFrame) -> list[str]:
    """``Built: rdeic = rdeic-tiny@low (tiny, 2 steps, cpu fp32, weights 0820d276)`` for each codec label that
    does not name its build by itself (summary column ``codec_built``)."""
    if "codec_built" not in summary:
        return []
    out = []
    for codec, built in summary[["codec", "codec_built"]].drop_duplicates().itertuples(index=False):
        if "(" in str(built) or str(built).split(" ")[0] not in str(codec):
            out.append(f"Built: {codec} = {built}")
    return out


def headline(
    cells_or_summary: pd.DataFrame,
    metrics: tuple[str, ...] = ("psnr",),
    width: int = 100,
    run_dir: Path | str | None = None,
) -> str:
    """The terminal headline of a run (no line longer than ``width``): failure rate per level and codec with
    Wilson 95% intervals, one small table per corruption and scope, a line on silent FEC miscorrection when it
    happened, and where ``summary.md`` / ``report.html`` are. Takes the cells (as stored) or their summary."""
    summary = cells_or_summary
    if not summary.empty and "failure_rate" not in summary:
        summary = tables.summarise(tables.prepare(summary), metrics)
    if summary.empty:
        return "(no cells)"
    found = headline_tables(summary)
    codecs = sorted({c for _, f in found for c in f.columns[1:]}, key=str)
    built = built_lines(summary)
    keys = {c: f"[{i + 1}]" for i, c in enumerate(codecs)}
    numbered = any(not _fits(f, list(f.columns), width) for _, f in found)
    lines: list[str] = []
    for line in built:
        lines += _wrap(line, width, "  ")
    if built:
        lines.append("")
    if numbered:
        lines.append("Codecs:")
        for c in codecs:
            lines += _wrap(f"{keys[c]} {c}", width, " " * (len(keys[c]) + 1))
        lines.append("")
    for title, frame in found:
        lines += _table_lines(title, frame, keys, width)
        lines.append("")
    note = tables.fec_note(summary)
    if note and "Silent" in note:
        wrong, passed = int(summary["fec_miscorrected"].sum()), int(summary["fec_passed"].sum())
        lines += _wrap(
            f"Silent FEC miscorrection: {wrong} of {passed} streams passed as corrected still differ from the "
            "sent stream (see summary.md).",
            width,
        )
    where = Path(run_dir) if run_dir is not None else None
    # the report is written after this headline: its path is printed once the file exists, never before
    tail = (
        f"Full tables: {where / 'summary.md'}"
        if where is not None
        else "Full tables: summary.md (in the run directory)"
    )
    lines += _wrap(tail, width, "  ")
    return "\n".join(lines)
