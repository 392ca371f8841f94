"""``evaluate.py datasets list | verify NAME [--path P] | fetch NAME``.

- ``list``: every registered dataset with its card's title, licence, default preprocessing and whether a
  local copy is where the loader looks for one.
- ``verify``: decode every image (or a stratified ``--limit``), then report counts per split and class,
  image sizes, conversions, unreadable images, a manifest digest (sha256 over sorted ``id  pixel-sha256``
  lines: pin a folder's version with it) and the checks against the card's expected counts. Exit 1 when a
  check fails or an image is unreadable.
- ``fetch``: download every split into the Hugging Face cache (where the loader finds it, offline too), or
  ``--dest DIR`` for a raw snapshot, on a machine with internet, for datasets whose licence allows it (see
  each card's ``[fetch]``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from harness.datasets import DatasetError, cache_root, class_counts, create_dataset, data_root, stratified_subset
from harness.datasets.base import cards_root
from harness.hashing import sha256_bytes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="{list,verify,fetch}")
    sub.add_parser("list", help="registered datasets, their cards and local copies")
    verify = sub.add_parser("verify", help="counts, checksums and class balance of a local copy")
    verify.add_argument("name")
    verify.add_argument("--path", help="folder, zip, parquet or .h5 (default: where the loader looks)")
    verify.add_argument("--split", help="split to verify (default: all)")
    verify.add_argument("--hub-id", help="a hub dataset id instead of a local path")
    verify.add_argument("--limit", type=int, help="verify a seeded, class-stratified subset of N images only")
    verify.add_argument("--manifest", type=Path, help="write every image's id, label, size and sha256 as JSON")
    fetch = sub.add_parser("fetch", help="download a dataset into the user cache (needs internet)")
    fetch.add_argument("name")
    fetch.add_argument(
        "--dest", type=Path, help="instead of the HF cache, a raw snapshot of the hub files in DEST (e.g. parquet)"
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(list_datasets())
        return 0
    if args.action == "verify":
        report, ok = verify(args.name, args.path, args.split, args.hub_id, args.limit, args.manifest)
        print(report)
        return 0 if ok else 1
    from harness.datasets.base import read_card
    from harness.datasets.hub import fetch

    print(f"{args.name}: downloaded {fetch(args.name, read_card(args.name), args.dest)}")
    return 0


def _card(name: str) -> dict[str, Any]:
    path = cards_root() / f"{name}.toml"
    if not path.is_file():
        return {}
    import tomllib

    with open(path, "rb") as fh:
        return tomllib.load(fh)


def list_datasets() -> str:
    from harness.registry import DATASETS

    rows = []
    for name in DATASETS.names():
        card = _card(name)
        if name == "samples":
            where = data_root() / "samples"
            rows.append((name, "bundled samples (datasets/samples/card.toml)", "see card", "none", str(where)))
            continue
        if not card:
            target = DATASETS.target(name)
            kind = "stand-in (tests and demo only)" if name.startswith("standin_") else "generic (path = ...)"
            rows.append((name, kind, "-", "none", target))
            continue
        local = [p for p in (data_root() / name, cache_root() / name) if p.exists()]
        hub = card.get("sources", {}).get("default_hub_id")
        found = f"local: {local[0]}" if local else (f"hub: {hub} (if cached or online)" if hub else "not found")
        rows.append(
            (
                name,
                card.get("title", ""),
                str(card.get("licence", "")),
                card.get("default_preprocessing", "none"),
                found,
            )
        )
    return _render(rows)


#: Terminal width of the listing (as the run's headline).
WIDTH = 100


def _render(rows: list[tuple]) -> str:
    """Two lines or more per dataset within :data:`WIDTH` columns: name and title, then licence, default
    preprocessing and where it is found, indented under the title (long paths wrap; nothing is cut)."""
    import textwrap

    indent = max(len(r[0]) for r in rows) + 2
    pad = " " * indent
    lines = [f"{'name':<{indent}}title", f"{'':<{indent}}licence; default preprocessing; source", ""]
    for name, title, licence, prep, found in rows:
        lines += textwrap.wrap(
            str(title), WIDTH, initial_indent=f"{name:<{indent}}", subsequent_indent=pad, break_on_hyphens=False
        ) or [name]
        detail = f"licence: {licence or '-'}; preprocessing: {prep}; source: {found}"
        lines += textwrap.wrap(detail, WIDTH, initial_indent=pad, subsequent_indent=pad + "  ", break_on_hyphens=False)
    return "\n".join(lines)


def verify(
    name: str,
    path: str | None = None,
    split: str | None = None,
    hub_id: str | None = None,
    limit: int | None = None,
    manifest: Path | None = None,
) -> tuple[str, bool]:
    """Decode every image; the report and whether every check passed."""
    options = {"path": path, "split": split, "hub_id": hub_id}
    ds = create_dataset(name, **{k: v for k, v in options.items() if v is not None})
    index = ds.index()
    chosen = stratified_subset(index, limit, 0)
    entries, bad = [], []
    for e in chosen:
        try:
            if e.sha256:
                ds.load(e)  # pinned: the pixels must still match the card
                entries.append(e)
            else:
                entries.append(ds.resolve(e))
        except DatasetError as exc:
            bad.append((e.id, str(exc)))
    digest = sha256_bytes("".join(f"{e.id}  {e.sha256}\n" for e in sorted(entries, key=lambda e: e.id)).encode())
    desc = ds.describe()
    lines = [f"{name}: {desc.get('source', '?')} (version {ds.version})"]
    lines.append(
        f"  images: {len(index)} indexed, {len(chosen)} checked, {len(entries)} decoded, {len(bad)} unreadable"
    )
    splits = Counter(e.split for e in index)
    lines.append("  splits: " + ", ".join(f"{k}={v}" for k, v in sorted(splits.items())))
    classes = class_counts(index)
    if any(classes):
        counts = sorted(classes.values())
        lines.append(
            f"  classes: {len(classes)} (smallest {counts[0]}, largest {counts[-1]}): "
            + ", ".join(f"{k}={v}" for k, v in list(classes.items())[:12])
            + (" ..." if len(classes) > 12 else "")
        )
    sizes = Counter((e.width, e.height) for e in entries)
    lines.append("  sizes: " + ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(5)))
    conversions = Counter(e.conversion for e in entries if e.conversion)
    if conversions:
        lines.append("  conversions: " + ", ".join(f"{c} ({n})" for c, n in conversions.most_common()))
    duplicates = len(entries) - len({e.sha256 for e in entries})
    if duplicates:
        lines.append(f"  duplicate pixel contents: {duplicates}")
    lines.append(f"  manifest sha256: {digest}")
    checks = _checks(getattr(ds, "card", {}) or {}, index, classes, split or "all", limit is None)
    lines += [f"  check: {c}" for c in checks]
    lines += [f"  unreadable: {i}: {err}" for i, err in bad[:20]]
    if len(bad) > 20:
        lines.append(f"  ... and {len(bad) - 20} more unreadable")
    if manifest:
        manifest.write_text(
            json.dumps(
                {
                    "dataset": desc,
                    "manifest_sha256": digest,
                    "images": [e.record() for e in entries],
                    "unreadable": bad,
                },
                indent=1,
            )
        )
        lines.append(f"  manifest written to {manifest}")
    ok = not bad and not any(c.startswith("FAIL") for c in checks)
    return "\n".join(lines), ok


def _checks(card: dict[str, Any], index: list, classes: dict[str, int], split: str, full: bool) -> list[str]:
    """Compare with the card's expected counts where they are published (and apply to this split)."""
    expected = card.get("expected", {})
    out = []
    total = expected.get("splits", {}).get(split) if split != "all" else expected.get("total")
    if isinstance(total, int):
        verdict = "ok" if len(index) == total else "FAIL"
        out.append(f"{verdict} total {len(index)} (card: {total})")
    n_classes = expected.get("classes")
    if isinstance(n_classes, int) and split == "all" and any(classes):
        out.append(f"{'ok' if len(classes) == n_classes else 'FAIL'} classes {len(classes)} (card: {n_classes})")
    names = card.get("classes")
    per_class = expected.get("class_counts")
    if split == "all" and isinstance(per_class, list) and isinstance(names, list):
        want = dict(zip(names, per_class, strict=True))
        got = {n: classes.get(n, 0) for n in names}
        verdict = "ok" if got == want else "FAIL"
        diff = {n: (got[n], want[n]) for n in names if got[n] != want[n]}
        out.append(f"{verdict} class counts" + (f" (found, card): {diff}" if diff else " match the card"))
    per = expected.get("per_class")
    if split == "all" and isinstance(per, int) and any(classes):
        off = {k: v for k, v in classes.items() if v != per}
        out.append(
            f"{'ok' if not off else 'FAIL'} {per} per class"
            + (f"; differ: {dict(list(off.items())[:5])}" if off else "")
        )
    return out
