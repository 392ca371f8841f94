"""Planning: resolve every name and parameter of a suite and enumerate its cells, before any work.

::

    Suite (TOML) ──> metrics (available ones) ──> codec configs (+ rate references, pairs) ──> fingerprints
                 ──> corruption levels x scopes x FEC ──> datasets (subset, preprocessing, skipped images)
                 ──> cells: image x codec x level x scope x replicate x decode seed, keyed by content

A bad suite fails here (``SuiteError``), naming what to fix, so no work is lost to a typo. The order of
``Plan.cells`` is deterministic; nothing here encodes or decodes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from corruptions.base import Corruption, CorruptionError
from corruptions.fec import FECConfig
from harness.cells import Cell
from harness.codecs.base import BUILTIN_SCOPES, Codec, CodecError, create_codec
from harness.config import Suite, SuiteError
from harness.datasets import Dataset, DatasetError, ImageEntry, stratified_subset
from harness.datasets.selection import select_images
from harness.hashing import canonical_json, key_of, pixels_sha256
from harness.metrics import Metric, create_metric
from harness.registry import CORRUPTIONS, RegistryError


@dataclass(frozen=True)
class RunOptions:
    """What one invocation asks for: the suite plus command-line overrides and filters."""

    suite: Suite
    out: Path
    codecs: tuple[str, ...] = ()  # filter: codec labels or codec names; empty = all
    datasets: tuple[str, ...] = ()
    limit_images: int | None = None
    seeds: int | None = None
    workers: int = 2
    fresh: bool = False
    progress: bool = True
    timeout_s: float | None = None  # overrides the suite's per-cell CPU-time budget (``--timeout``)
    #: where and how codecs with these options reconstruct (``--device cpu|cuda|auto``, ``--precision``); they are
    #: codec options, so they are in the fingerprint: other numbers are other cells
    device: str | None = None
    precision: str | None = None
    batch_size: int | None = None  # reconstructs per batch (None: automatic, from free accelerator memory)
    #: where the cells run: this process's pool, or shards through submitit (harness/executors.py)
    executor: Any = None

    def shard_options(self) -> dict[str, Any]:
        """What a shard task needs to re-plan exactly these cells (written to shards/plan.json)."""
        return {
            "codecs": list(self.codecs),
            "datasets": list(self.datasets),
            "limit_images": self.limit_images,
            "seeds": self.seeds,
            "workers": self.workers,
            "timeout_s": self.timeout_s,
            "device": self.device,
            "precision": self.precision,
            "batch_size": self.batch_size,
            "progress": False,
        }


@dataclass
class Plan:
    cells: list[Cell]
    codecs: dict[str, Codec]  # by label: the configs with cells, plus rate references they need
    corruptions: dict[str, Corruption]  # by canonical (name, params)
    images: dict[str, tuple[Dataset, ImageEntry]]  # by pixel sha256
    metrics: dict[str, Metric]
    decode_seeds: tuple[int, ...]
    subsets: dict[str, list[str]] = field(default_factory=dict)  # dataset -> chosen image ids
    fingerprints: dict[str, str] = field(default_factory=dict)  # label -> fingerprint cells are keyed by
    rate_refs: dict[str, str] = field(default_factory=dict)  # label -> label whose bpp it matches per image
    datasets: list[dict[str, Any]] = field(default_factory=list)  # per [[datasets]]: source, policy, images
    skipped_images: list[dict[str, Any]] = field(default_factory=list)  # bad images, with why (run goes on)
    #: (dataset, entry, preprocessing) per chosen image, in plan order (what the encode phase walks)
    chosen: list[tuple[Dataset, ImageEntry, str]] = field(default_factory=list)

    def corruption_of(self, cell: Cell) -> Corruption:
        return self.corruptions[corruption_id(cell.corruption, cell.params)]

    def label_of(self, fingerprint: str) -> str:
        return next(label for label, fp in self.fingerprints.items() if fp == fingerprint)

    def without_images(self, shas: set[str]) -> None:
        """Drop every cell of these images (refused at encode time by some codec: every codec config then
        rests on the same images)."""
        if shas:
            self.cells = [c for c in self.cells if c.image_sha256 not in shas]
            self.chosen = [t for t in self.chosen if t[1].sha256 not in shas]


def corruption_id(name: str, params: dict[str, Any]) -> str:
    return f"{name}:{canonical_json(params)}"


def _expand_scope(scope: str, corruption: Corruption, codec: Codec) -> tuple[str, ...]:
    """``*`` means every hook (latent corruptions), side kind (side-information degradations) or scope (bitstream
    channels) the codec declares; a named one applies to the codecs that declare it (others get no cells)."""
    valid = _valid_scopes(corruption.acts_on, codec)
    return valid if scope == "*" else tuple(s for s in valid if s == scope)


def _valid_scopes(acts_on: str, codec: Codec) -> tuple[str, ...]:
    if acts_on == "side_info":
        return codec.side_info
    return codec.hooks if acts_on == "latent" else BUILTIN_SCOPES + codec.segments


def _select(names: list[str], wanted: tuple[str, ...], what: str) -> set[str]:
    if not wanted:
        return set(names)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SuiteError(f"{what} {', '.join(unknown)} not in this suite; it has: {', '.join(dict.fromkeys(names))}")
    return set(wanted)


def _subset(entries: list[ImageEntry], limit: int | None, seed: int) -> list[ImageEntry]:
    """A seeded subset, stratified by class label, keyed by content where the pixel hash is known (stable
    when files are renamed or the folder grows); see harness.datasets.stratified_subset."""
    return stratified_subset(entries, limit, seed)


def resolve_device(device: str) -> str:
    """``auto``: CUDA when torch sees a GPU, else the CPU; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _runtime_options(codec: Codec, opts: RunOptions) -> dict[str, Any]:
    """``--device`` / ``--precision`` for the codecs that have those options (others ignore them)."""
    out: dict[str, Any] = {}
    if opts.device and hasattr(codec.options, "device"):
        out["device"] = resolve_device(opts.device)
    if opts.precision and hasattr(codec.options, "precision"):
        out["precision"] = opts.precision
    return out


def _is_identity(corruption: Corruption) -> bool:
    return corruption.config() == type(corruption)(**type(corruption).identity_params()).config()


def _base_codec(name: str) -> str:
    """The registered codec a name builds (a preset's codec, followed down), or the name itself if unknown."""
    from harness.registry import CODECS, Preset

    try:
        target = CODECS.get(name)
    except RegistryError:
        return name
    if isinstance(target, Preset):
        return _base_codec(target.codec)
    return str(getattr(target, "name", name))


@dataclass
class _Codecs:
    """The suite's codec configs, resolved: what the cells of each label are keyed by and how they relate."""

    by_label: dict[str, Any]  # label -> CodecConfig (runtime options applied)
    selected: list[str]  # labels with cells (after --codec)
    codecs: dict[str, Codec]  # the selected configs plus the rate references and partners they need
    fingerprints: dict[str, str]  # label -> fingerprint its cells are keyed by (rate-matched: with the reference)
    own: dict[str, str]  # label -> the codec's own fingerprint
    rate_refs: dict[str, str]  # label -> label whose bpp it matches per image
    channel_codecs: dict[str, tuple[str, str]]  # label -> (fingerprint, codec name) whose draws it reuses


Level = tuple[str, dict[str, Any], str, Corruption, dict[str, Any] | None]  # name, params, scope, instance, FEC


def make_plan(opts: RunOptions) -> Plan:
    """Resolve every name and parameter of the suite and enumerate its cells (deterministic order)::

    metrics (available ones) -> codec configs -> corruption levels -> images -> cells
    """
    from harness.codecs.rdeic.flags import resolve_auto

    suite, _ = resolve_auto(opts.suite, None, None)  # the CLI resolves it first, with its flags
    metrics = _metrics(suite)
    setup = _codecs(suite, opts)
    corruptions, levels = _levels(suite, setup.codecs)
    crosses = _side_levels(suite, setup.codecs, corruptions, levels)
    images = _images(suite, opts, setup.codecs)
    sides = _side_hashes(setup.codecs, images["chosen"])
    cells = _cells(suite, opts, setup, levels, images["chosen"], tuple(metrics), crosses, sides)
    if not cells and any(c.scopes == ("*",) for c in suite.corruptions):
        raise SuiteError(
            "no cells: the suite's corruptions target every hook/segment a codec declares ('*'), and "
            f"none of {', '.join(setup.selected)} declares any (JPEG2000 has no latent hooks; RDEIC does)"
        )
    return Plan(
        cells,
        setup.codecs,
        corruptions,
        images["by_sha"],
        metrics,
        tuple(range(suite.decode_seeds)),
        images["subsets"],
        setup.fingerprints,
        setup.rate_refs,
        datasets=images["records"],
        skipped_images=images["skipped"],
        chosen=images["chosen"],
    )


def _metrics(suite: Suite) -> dict[str, Metric]:
    try:
        created = {name: create_metric(name) for name in suite.metrics}
    except RegistryError as exc:
        raise SuiteError(str(exc)) from None
    # a metric whose weights are missing is left out of the cells (and their keys), never stored as a number:
    # providing the weights later makes those cells new work instead of silently "complete"
    metrics = {name: m for name, m in created.items() if m.available}
    if not metrics:
        raise SuiteError(
            f"none of the suite's metrics ({', '.join(suite.metrics)}) can be computed here; "
            "see `python evaluate.py metrics check`"
        )
    return metrics


def _codecs(suite: Suite, opts: RunOptions) -> _Codecs:
    # --codec takes a label, the name the suite gives (a preset such as j2k-plain) or the codec it builds (jpeg2000)
    names = {cfg.label: {cfg.label, cfg.codec, _base_codec(cfg.codec)} for cfg in suite.codecs}
    wanted_codecs = _select([n for ns in names.values() for n in sorted(ns)], opts.codecs, "codec")
    by_label = {cfg.label: cfg for cfg in suite.codecs}
    selected = [cfg.label for cfg in suite.codecs if names[cfg.label] & wanted_codecs]
    rate_refs: dict[str, str] = {}
    for label in selected:
        ref = by_label[label].match_rate_of
        if ref is None:
            continue
        if ref not in by_label or by_label[ref].match_rate_of is not None:
            raise SuiteError(
                f"codec {label!r}: match_rate_of must name another codec label of the suite that "
                f"does not itself match a rate (got {ref!r})"
            )
        rate_refs[label] = ref
    pair_refs: dict[str, str] = {}
    for label in selected:
        other = by_label[label].paired_with
        if other is not None:
            if other not in by_label or other == label or by_label[other].paired_with is not None:
                raise SuiteError(f"codec {label!r}: paired_with must name another codec label, got {other!r}")
            pair_refs[label] = other
    codecs: dict[str, Codec] = {}
    for label in dict.fromkeys([*selected, *rate_refs.values(), *pair_refs.values()]):
        cfg = by_label[label]
        try:
            codecs[label] = create_codec(cfg.codec, **cfg.options)
            runtime = _runtime_options(codecs[label], opts)
            if runtime:
                by_label[label] = cfg = replace(cfg, options={**cfg.options, **runtime})
                codecs[label] = create_codec(cfg.codec, **cfg.options)
        except (RegistryError, CodecError) as exc:
            raise SuiteError(f"codec {label!r}: {exc}") from None
        if label in rate_refs and not codecs[label].matches_rate:
            raise SuiteError(f"codec {label!r}: {cfg.codec} cannot match another codec's rate per image")
    # pre-flight: every weight file of every codec (format, sha256 where recorded, names and shapes) before any
    # work, so a bad file read late (LDM-RSIC's S2 file, at the first decode) stops the run before the encode phase
    from harness.codecs.checkpoints import preflight

    for label, codec in codecs.items():
        try:
            preflight([codec])
        except CodecError as exc:
            raise SuiteError(f"codec {label!r}: {exc}") from None
    # a rate-matched config's results depend on its reference: key them by both fingerprints
    own = {label: codec.fingerprint() for label, codec in codecs.items()}
    fingerprints = dict(own)
    for label, ref in rate_refs.items():
        fingerprints[label] = key_of({"codec": own[label], "rate_of": own[ref]})
    # paired_with: the partner's corruption draws, cell by cell; meaningful where both configs write the same
    # streams (ELIC-only vs enhanced, JPEG2000 vs JPEG2000*, a base vs its adapter), which their rows show
    channel_codecs = {label: (fingerprints[other], codecs[other].name) for label, other in pair_refs.items()}
    return _Codecs(by_label, selected, codecs, fingerprints, own, rate_refs, channel_codecs)


def _levels(suite: Suite, codecs: dict[str, Codec]) -> tuple[dict[str, Corruption], list[Level]]:
    corruptions: dict[str, Corruption] = {}
    levels: list[Level] = []
    for cfg in suite.corruptions:
        try:
            cls = CORRUPTIONS.get(cfg.corruption)
            fecs = [None if f is None else FECConfig(**f).as_dict() for f in cfg.fec]
            if any(fecs) and (cls.acts_on != "bitstream" or set(cfg.scopes) != {"all"}):
                raise CorruptionError(
                    "FEC protects the whole transmitted stream: use it with a bitstream channel and scopes = ['all']"
                )
            for params in cfg.levels():
                inst = cls(**params)
                corruptions.setdefault(corruption_id(cfg.corruption, inst.config()), inst)
                for scope in cfg.scopes:
                    levels.extend((cfg.corruption, inst.config(), scope, inst, fec) for fec in fecs)
        except (RegistryError, CorruptionError, TypeError) as exc:
            raise SuiteError(f"corruption {cfg.corruption!r}: {exc}") from None
        # a scope one codec declares (RDEIC's y, LDM-RSIC's y.s0.a) targets that codec only; a scope no codec of the
        # suite declares is a typo
        for scope in cfg.scopes:
            if scope == "*" or any(scope in _valid_scopes(cls.acts_on, c) for c in codecs.values()):
                continue
            where = "latent hook" if cls.acts_on == "latent" else "scope"
            offered = {label: _valid_scopes(cls.acts_on, c) for label, c in codecs.items()}
            said = "; ".join(f"{label!r} offers {', '.join(v) or 'no ' + where + 's'}" for label, v in offered.items())
            raise SuiteError(f"{cfg.corruption}: {where} {scope!r} is not offered by any codec of the suite ({said})")
    return corruptions, levels


def _side_levels(
    suite: Suite, codecs: dict[str, Codec], corruptions: dict[str, Corruption], levels: list[Level]
) -> dict[str, list[tuple[str, dict[str, Any], str, Corruption]]]:
    """The ``[[side_info]]`` axis. Each degradation level becomes a level of its own (appended to ``levels``:
    the stream is untouched, the degradation acts on the side image of its kind, given as the scope); a
    degradation with ``cross`` is returned for the [[corruptions]] entries it meets: name -> [(degradation,
    params, kind, instance)]."""
    crosses: dict[str, list[tuple[str, dict[str, Any], str, Corruption]]] = {}
    kinds_offered = {k for c in codecs.values() for k in c.side_info}
    for cfg in suite.side_info:
        try:
            cls = CORRUPTIONS.get(cfg.degradation)
            if cls.acts_on != "side_info":
                raise CorruptionError(f"{cfg.degradation} acts on {cls.acts_on}, not on side information")
            for params in cfg.levels():
                inst = cls(**params)
                corruptions.setdefault(corruption_id(cfg.degradation, inst.config()), inst)
                for kind in cfg.kinds:
                    if kind != "*" and kinds_offered and kind not in kinds_offered:
                        raise CorruptionError(f"side kind {kind!r}: the suite's codecs offer {sorted(kinds_offered)}")
                    levels.append((cfg.degradation, inst.config(), kind, inst, None))
                    for target in cfg.cross:
                        crosses.setdefault(target, []).append((cfg.degradation, inst.config(), kind, inst))
        except (RegistryError, CorruptionError, TypeError) as exc:
            raise SuiteError(f"side_info {cfg.degradation!r}: {exc}") from None
    return crosses


def _side_hashes(codecs: dict[str, Codec], chosen: list[tuple[Dataset, ImageEntry, str]]) -> dict[str, dict[str, str]]:
    """Pixel sha256 of every side image the side-information codecs use, by primary image and kind: part of
    their cells' keys (another side view is another cell)."""
    kinds = sorted({k for c in codecs.values() for k in c.side_info})
    out: dict[str, dict[str, str]] = {}
    if not kinds:
        return out
    for ds, entry, _ in chosen:
        try:
            out[entry.sha256] = {k: pixels_sha256(ds.load_side(entry, k)) for k in kinds}
        except DatasetError as exc:
            raise SuiteError(f"a codec of the suite uses decoder-side information: {exc}") from None
    return out


def _images(suite: Suite, opts: RunOptions, codecs: dict[str, Codec]) -> dict[str, Any]:
    """The chosen images of every [[datasets]] entry (subset, preprocessing), and the ones left out, with why."""
    wanted_datasets = _select([d.name for d in suite.datasets], opts.datasets, "dataset")
    out: dict[str, Any] = {"by_sha": {}, "chosen": [], "subsets": {}, "records": [], "skipped": []}
    # a codec may declare `min_side` (px, attribute or method): smaller prepared images are recorded as skipped
    sides = [getattr(c, "min_side", 0) for c in codecs.values()]
    codec_min_side = max((int((s() if callable(s) else s) or 0) for s in sides), default=0)
    for i, dcfg in enumerate(suite.datasets):
        if dcfg.name not in wanted_datasets:
            continue
        try:  # path checks, subset, preprocessing policy; bad images are recorded and left out
            sel = select_images(
                dcfg.name,
                options=dcfg.loader_options(),
                preprocessing=dcfg.preprocessing,
                limit=opts.limit_images or dcfg.limit_images,
                seed=suite.seed,
                min_side=max(dcfg.min_side, codec_min_side),
                partition=dcfg.partition,
            )
        except (RegistryError, DatasetError) as exc:
            raise SuiteError(str(exc)) from None
        if not sel.entries:
            raise SuiteError(f"dataset {dcfg.name!r}: no usable image ({len(sel.skipped)} skipped: {sel.skipped[:1]})")
        out["subsets"][dcfg.name if dcfg.name not in out["subsets"] else f"{dcfg.name}#{i}"] = [
            e.id for e in sel.entries
        ]
        out["records"].append(sel.record)
        out["skipped"].extend(sel.skipped)
        for e in sel.entries:
            out["by_sha"].setdefault(e.sha256, (sel.dataset, e))
            out["chosen"].append((sel.dataset, e, sel.preprocessing))
    return out


def _cells(
    suite: Suite,
    opts: RunOptions,
    setup: _Codecs,
    levels: list[Level],
    chosen: list[tuple[Dataset, ImageEntry, str]],
    metrics: tuple[str, ...],
    crosses: dict[str, list[tuple[str, dict[str, Any], str, Corruption]]] | None = None,
    sides: dict[str, dict[str, str]] | None = None,
) -> list[Cell]:
    """image x codec config x level x scope x replicate x decode seed (x crossed side degradations, for codecs
    with side information), deduplicated by key, in plan order."""
    crosses, sides = crosses or {}, sides or {}
    seeds = opts.seeds or suite.seeds
    cells: dict[str, Cell] = {}
    identity = {label: (setup.codecs[label].config(), setup.codecs[label].weights_hash()) for label in setup.selected}
    for ds, entry, prep in chosen:
        for label in setup.selected:
            codec, cfg = setup.codecs[label], setup.by_label[label]
            config, weights_hash = identity[label]
            side_sha = sides.get(entry.sha256) if codec.side_info else None
            for name, params, level_scope, inst, fec in levels:
                if cfg.clean_only and (fec is not None or not _is_identity(inst)):
                    continue
                # the true side view, then each crossed degradation (codecs with side information only)
                crossed: list[dict[str, Any] | None] = [None]
                if codec.side_info:
                    crossed += [
                        {"name": n, "params": p, "kind": k}
                        for n, p, ks, _ in crosses.get(name, [])
                        for k in (codec.side_info if ks == "*" else (ks,))
                        if k in codec.side_info
                    ]
                for scope, side in itertools.product(_expand_scope(level_scope, inst, codec), crossed):
                    for replicate in range(seeds):
                        for dseed in range(suite.decode_seeds):
                            cell = Cell(
                                dataset=ds.name,
                                dataset_version=ds.version,
                                image_sha256=entry.sha256,
                                height=entry.height,
                                width=entry.width,
                                preprocessing=prep,
                                codec=codec.name,
                                codec_fingerprint=setup.fingerprints[label],
                                channel_codec=setup.channel_codecs.get(label, (None, None))[0],
                                channel_codec_name=setup.channel_codecs.get(label, (None, None))[1],
                                corruption=name,
                                params=params,
                                scope=scope,
                                fec=fec,
                                suite_seed=suite.seed,
                                replicate=replicate,
                                decode_seed=dseed,
                                metrics=metrics,
                                image_id=entry.id,
                                codec_label=label,
                                codec_config=config,
                                weights_hash=weights_hash,
                                level=inst.label(),
                                codec_name=cfg.codec,
                                codec_options=dict(cfg.options),
                                rate_of=setup.own.get(setup.rate_refs.get(label, "")),
                                side_sha256=side_sha,
                                side=side,
                            )
                            cells.setdefault(cell.key, cell)
    return list(cells.values())
