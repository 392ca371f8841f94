"""The fine-tune-then-evaluate suite: a suite TOML with a ``[finetune]`` table (``harness/suites/ood_finetune.toml``).

::

    for each OOD dataset:  partition (or official splits) ─ train ─> fine-tune the adapter (harness/train/finetune.py)
                                                          ─ val ───> validation / early stopping (never test)
                           evaluate base and base+adapter on the TEST part and on the in-distribution sets,
                           same images, same decode seeds, same corruption draws (``paired_with``)
    ─> one results.sqlite (cells shared: the base on the ID set is decoded once), summary tables,
       before/after table with paired differences (reports/ood.py), identical-bitstream check for adapter modes

Suite syntax (beside the usual seed / seeds / decode_seeds / metrics / timeout_s / corruptions)::

    [finetune]
    codec = "rdeic-tiny@low"            # a codec preset or "rdeic" with options
    options = {}                        # codec options (official weights: sd_ckpt / rdeic_ckpt, or the CLI flags)
    train = { mode = "control", steps = 200, lr = 1e-4, batch = 4, patch = 128, val_every = 50 }

    [[finetune.datasets]]               # an OOD dataset: every [[datasets]] key, plus
    name = "standin_astro"
    partition = { train = 0.6, val = 0.2, test = 0.2, seed = 0 }   # no official split: seeded partition
    # splits = { train = "train", val = "validation", test = "test" } # official splits instead

    [[finetune.in_distribution]]        # forgetting: evaluated before and after every adapter
    name = "samples"
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import CodecConfig, DatasetConfig, FinetuneSpec, OODDataset, Suite, SuiteError


# -- running --------------------------------------------------------------------------------------------------------
def load_pixels(dcfg: DatasetConfig, seed: int) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """(id, uint8 pixels) of one part of a dataset, and its selection record."""
    from harness.datasets.selection import select_images

    sel = select_images(
        dcfg.name,
        options=dcfg.loader_options(),
        preprocessing=dcfg.preprocessing,
        limit=dcfg.limit_images,
        seed=seed,
        min_side=dcfg.min_side,
        partition=dcfg.partition,
    )
    if not sel.entries:
        raise SuiteError(f"dataset {dcfg.name!r}: no usable image in this part ({len(sel.skipped)} skipped)")
    return [(e.id, sel.dataset.load(e)) for e in sel.entries], sel.record


def finetune_one(
    spec: FinetuneSpec, ood: OODDataset, seed: int, out: Path, progress: bool, folder: Path | None = None
) -> dict[str, Any]:
    """Fine-tune (or resume, or reuse) the adapter of one OOD dataset in ``folder`` (default
    ``<out>/adapters/<dataset>``); returns its sidecar."""
    from harness.codecs.base import create_codec
    from harness.train.finetune import FinetuneData, finetune

    train, train_rec = load_pixels(ood.part("train"), seed)
    val, val_rec = load_pixels(ood.part("val"), seed)
    train_ids = {rec["sha256"] for rec in train_rec["images"]}
    if train_ids & {rec["sha256"] for rec in val_rec["images"]}:
        raise SuiteError(f"{ood.name}: an image is in both the train and the val part")
    codec = create_codec(spec.codec, **spec.options)
    base = {
        "codec": spec.codec,
        "label": spec.label,
        "config": codec.config(),
        "fingerprint": codec.base_fingerprint(),
        "description": codec.base_description(),
    }
    data = FinetuneData([img for _, img in train], val, {"dataset": ood.name, "train": train_rec, "val": val_rec})
    return finetune(codec, data, spec.train, folder or out / "adapters" / ood.name, base, progress=progress)


def evaluation_suite(suite: Suite, spec: FinetuneSpec, ood: OODDataset, adapter: Path) -> Suite:
    """Base and base+adapter on the OOD test part and the in-distribution sets (paired corruption draws)."""
    base = CodecConfig(spec.codec, spec.label, dict(spec.options))
    tuned = CodecConfig(
        spec.codec, spec.adapter_label(ood), {**spec.options, "adapter": str(adapter)}, paired_with=spec.label
    )
    return dataclasses.replace(
        suite,
        name=f"{suite.name}:{ood.name}",
        datasets=(ood.part("test"), *spec.in_distribution),
        codecs=(base, tuned),
    )


@dataclass
class OODResult:
    keys: list[str]
    groups: list[dict[str, Any]]  # per OOD dataset: labels, datasets, adapter path and sidecar
    computed: int
    seconds: float


def run_ood(suite: Suite, out: Path, workers: int, fresh: bool, progress: bool) -> OODResult:
    """Fine-tune, then evaluate, every OOD dataset of ``suite.finetune``; raises ControlError when an adapter
    mode changed a bitstream."""
    import time

    from harness.runner import RunOptions, discard_results, run

    spec: FinetuneSpec = suite.finetune
    started = time.perf_counter()
    if fresh and out.exists():
        discard_results(out)
        shutil.rmtree(out / "adapters", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    groups = []
    computed = 0
    for ood in spec.datasets:
        sidecar = finetune_one(spec, ood, suite.seed, out, progress)
        adapter = out / "adapters" / ood.name / "adapter.safetensors"
        sub = evaluation_suite(suite, spec, ood, adapter)
        result = run(RunOptions(suite=sub, out=out, workers=workers, progress=progress))
        keys.extend(result.planned_keys)
        computed += result.computed
        groups.append(
            {
                "dataset": ood.name,
                "base": spec.label,
                "adapter": spec.adapter_label(ood),
                "adapter_path": str(adapter),
                "in_distribution": [d.name for d in spec.in_distribution],
                "sidecar": sidecar,
            }
        )
    _record_parent(suite, out, groups)
    return OODResult(list(dict.fromkeys(keys)), groups, computed, time.perf_counter() - started)


def _record_parent(suite: Suite, out: Path, groups: list[dict[str, Any]]) -> None:
    """Provenance of the whole fine-tune-then-evaluate suite (the per-dataset evaluations recorded their own):
    the latest record names the run, so the report is titled and described by the suite that was asked for."""
    from datetime import UTC, datetime

    from harness import provenance
    from harness.store import ResultStore

    adapters = [{"dataset": g["dataset"], "adapter": g["adapter_path"], "sha256": g["sidecar"]["adapter_sha256"],
                 "mode": g["sidecar"]["mode"]} for g in groups]  # fmt: skip
    store = ResultStore(out / "results.sqlite")
    try:
        values = {"suite_name": suite.name, "suite_path": suite.path, "suite_sha256": suite.sha256,
                  "suite_text": suite.text, "adapters": adapters, "timeout_s": suite.timeout_s}  # fmt: skip
        store.record_provenance(datetime.now(UTC).isoformat(), provenance.collect(values))
    finally:
        store.close()


def check_bitstreams(cells: Any, out: Path, groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per OOD dataset: compare the base's and the adapter's encoded streams image by image (from the run's
    artifact cache). Adapter modes must give byte-identical streams; mode ``full`` is reported, not asserted."""
    from harness.cache import ArtifactCache
    from harness.cells import encode_key

    cache = ArtifactCache(out / "cache")
    rows = []
    for g in groups:
        streams: dict[str, dict[str, str]] = {g["base"]: {}, g["adapter"]: {}}
        sel = cells[cells["codec_label"].isin(list(streams))]
        for _, r in sel.drop_duplicates(["codec_label", "image_sha256", "preprocessing"]).iterrows():
            shape = (int(r["height"]), int(r["width"]))
            key = encode_key(r["image_sha256"], *shape, r["preprocessing"], r["codec_fingerprint"])
            enc = cache.load_encoded(key)
            streams[r["codec_label"]][f"{r['image_sha256']}|{r['preprocessing']}"] = (
                enc.stream_sha256 if enc is not None else "missing"
            )
        common = sorted(set(streams[g["base"]]) & set(streams[g["adapter"]]))
        differ = [k for k in common if streams[g["base"]][k] != streams[g["adapter"]][k]]
        missing = [k for k in common if "missing" in (streams[g["base"]][k], streams[g["adapter"]][k])]
        rows.append(
            {
                "dataset": g["dataset"],
                "mode": g["sidecar"]["mode"],
                "images_compared": len(common),
                "identical": len(common) - len(differ),
                "different": len(differ),
                "missing_from_cache": len(missing),
                "must_be_identical": bool(g["sidecar"].get("bitstream_preserving", False)),
            }
        )
    return rows


def failed_bitstream_checks(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks of adapter modes that must keep bitstreams identical but changed or lost some."""
    return [c for c in checks if c["must_be_identical"] and (c["different"] or c["missing_from_cache"])]


def write_outputs(
    out: Path, cells: Any, result: OODResult, metrics: tuple[str, ...], checks: list[dict[str, Any]]
) -> str:
    """ood_before_after.csv / .md, training curves, ood_groups.json; returns the Markdown. Called only after
    the bitstream checks (``check_bitstreams``) passed: a failed control writes no table."""
    import json

    from reports import ood as ood_report
    from reports.tables import markdown_table, write_frame

    table = ood_report.before_after(cells, result.groups, metrics)
    write_frame(table, out / "ood_before_after.csv")
    plots = ood_report.training_curves(result.groups, out, out / "report")
    lines = [
        "## Fine-tune-then-evaluate: before (base) → after (base + adapter)",
        "",
        "Pairs: same image, corruption draw, level, replicate and decode seed. Δ = after − before over pairs where "
        "both decodes are ok, Student-t 95% interval. Early stopping used the val part only; no decode was chosen "
        "with the ground truth.",
        "",
        ood_report.to_markdown(table, metrics),
        "",
        "### Bitstreams (base vs adapter, image by image)",
        "",
        _md_rows(checks),
        "",
        "### Adapters",
        "",
        markdown_table(ood_report.adapters_table(result.groups)),
    ]
    if plots:
        lines += ["", f"![training curves](report/{plots[0].name})"]
    text = "\n".join(lines) + "\n"
    (out / "ood_before_after.md").write_text(text)
    record = {"groups": result.groups, "bitstreams": checks}
    (out / "ood_groups.json").write_text(json.dumps(record, indent=1, default=str))
    return text


def _md_rows(rows: list[dict[str, Any]]) -> str:
    import pandas as pd

    from reports.tables import markdown_table

    return markdown_table(pd.DataFrame(rows).astype(str)) if rows else "(none)"
