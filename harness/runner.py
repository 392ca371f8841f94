"""The suite loop: plan cells, encode once, run controls, corrupt, decode isolated, measure, store.

::

    plan ──> for each (image, codec): encode once (cache) + clean decode + controls (BER 0 == clean)
         ──> for each pending cell: channel(bytes, scope, rng(cell key)) ──> decode key
                 memo hit ──────────────────────────────────────────────┐
                 else: worker.parse (isolated) ──> [latent corruption] ──> reconstruct ──> check ──> metrics
         ──> store (one transaction per cell) ──> summary tables

Cells already in the store are skipped, so running the same command again resumes.
"""

from __future__ import annotations

import math
import shutil
import time
from collections import Counter, OrderedDict
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from corruptions.base import ChannelResult, Corruption, CorruptionError, popcount
from corruptions.fec import FECConfig, ReedSolomonFEC
from harness import provenance
from harness.cache import ArtifactCache, Encoded
from harness.cells import Cell, decode_key, encode_key
from harness.codecs.base import BUILTIN_SCOPES, Codec, CodecError, check_output, create_codec
from harness.config import Suite, SuiteError
from harness.datasets import Dataset, DatasetError, ImageEntry, stratified_subset
from harness.datasets.selection import select_images
from harness.hashing import canonical_json, key_of, pixels_sha256, sha256_bytes
from harness.metrics import Metric, create_metric
from harness.metrics import provenance as metric_provenance
from harness.registry import CORRUPTIONS, RegistryError
from harness.status import Status
from harness.store import DecodeRecord, ResultStore
from harness.workers import ParseOutcome, WorkerPool, type_name


class ControlError(RuntimeError):
    """A control of METHODOLOGY.md §4 failed: the suite stops instead of producing a table."""


@dataclass(frozen=True)
class RunOptions:
    suite: Suite
    out: Path
    codecs: tuple[str, ...] = ()  # filter: codec labels or codec names; empty = all
    datasets: tuple[str, ...] = ()
    limit_images: int | None = None
    seeds: int | None = None
    workers: int = 2
    fresh: bool = False
    progress: bool = True


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

    def corruption_of(self, cell: Cell) -> Corruption:
        return self.corruptions[corruption_id(cell.corruption, cell.params)]


@dataclass
class RunResult:
    out: Path
    planned_keys: list[str]
    metrics: tuple[str, ...]
    planned: int
    already_done: int
    computed: int
    decodes: int
    memo_hits: int
    worker_restarts: int
    statuses: Counter
    seconds: float


def corruption_id(name: str, params: dict[str, Any]) -> str:
    return f"{name}:{canonical_json(params)}"


def _expand_scope(scope: str, corruption: Corruption, codec: Codec) -> tuple[str, ...]:
    """``*`` means every hook (latent corruptions) or every scope (bitstream channels) the codec declares."""
    if scope != "*":
        return (scope,)
    return codec.hooks if corruption.acts_on == "latent" else BUILTIN_SCOPES + codec.segments


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


def make_plan(opts: RunOptions) -> Plan:
    """Resolve every name and parameter of the suite and enumerate its cells (deterministic order)."""
    suite = opts.suite
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

    codec_names = [c.label for c in suite.codecs] + [c.codec for c in suite.codecs]
    wanted_codecs = _select(codec_names, opts.codecs, "codec")
    by_label = {cfg.label: cfg for cfg in suite.codecs}
    selected = [cfg.label for cfg in suite.codecs if cfg.label in wanted_codecs or cfg.codec in wanted_codecs]
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
        except (RegistryError, CodecError) as exc:
            raise SuiteError(f"codec {label!r}: {exc}") from None
        if label in rate_refs and not codecs[label].matches_rate:
            raise SuiteError(f"codec {label!r}: {cfg.codec} cannot match another codec's rate per image")
    # a rate-matched config's results depend on its reference: key them by both fingerprints
    fingerprints = {label: codec.fingerprint() for label, codec in codecs.items()}
    for label, ref in rate_refs.items():
        fingerprints[label] = key_of({"codec": fingerprints[label], "rate_of": fingerprints[ref]})
    channel_codecs: dict[str, str] = {}  # label -> fingerprint whose corruption draws it reuses
    for label, other in pair_refs.items():
        if codecs[other].name != codecs[label].name:
            raise SuiteError(f"codec {label!r}: paired_with needs the same codec ({codecs[label].name}), got {other!r}")
        channel_codecs[label] = fingerprints[other]

    corruptions: dict[str, Corruption] = {}
    levels: list[tuple[str, dict[str, Any], str, Corruption, dict[str, Any] | None]] = []
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
        for label, codec in codecs.items():
            valid = codec.hooks if cls.acts_on == "latent" else BUILTIN_SCOPES + codec.segments
            for scope in cfg.scopes:
                if scope != "*" and scope not in valid:
                    where = "latent hook" if cls.acts_on == "latent" else "scope"
                    raise SuiteError(
                        f"{cfg.corruption}: {where} {scope!r} is not offered by codec {label!r} "
                        f"(it offers: {', '.join(valid) or 'no ' + where + 's'})"
                    )

    dataset_names = [d.name for d in suite.datasets]
    wanted_datasets = _select(dataset_names, opts.datasets, "dataset")
    images: dict[str, tuple[Dataset, ImageEntry]] = {}
    chosen: list[tuple[Dataset, ImageEntry, str]] = []
    subsets: dict[str, list[str]] = {}
    dataset_records: list[dict[str, Any]] = []
    skipped_images: list[dict[str, Any]] = []
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
        ds = sel.dataset
        subsets[dcfg.name if dcfg.name not in subsets else f"{dcfg.name}#{i}"] = [e.id for e in sel.entries]
        dataset_records.append(sel.record)
        skipped_images.extend(sel.skipped)
        for e in sel.entries:
            images.setdefault(e.sha256, (ds, e))
            chosen.append((ds, e, sel.preprocessing))

    seeds = opts.seeds or suite.seeds
    decode_seeds = tuple(range(suite.decode_seeds))
    cells: dict[str, Cell] = {}
    for ds, entry, prep in chosen:
        for label in selected:
            codec, fingerprint = codecs[label], fingerprints[label]
            for name, params, level_scope, inst, fec in levels:
                for scope in _expand_scope(level_scope, inst, codec):
                    for replicate in range(seeds):
                        for dseed in decode_seeds:
                            cell = Cell(
                                dataset=ds.name,
                                dataset_version=ds.version,
                                image_sha256=entry.sha256,
                                height=entry.height,
                                width=entry.width,
                                preprocessing=prep,
                                codec=codec.name,
                                codec_fingerprint=fingerprint,
                                channel_codec=channel_codecs.get(label),
                                corruption=name,
                                params=params,
                                scope=scope,
                                fec=fec,
                                suite_seed=suite.seed,
                                replicate=replicate,
                                decode_seed=dseed,
                                metrics=tuple(metrics),
                                image_id=entry.id,
                                codec_label=label,
                                codec_config=codec.config(),
                                weights_hash=codec.weights_hash(),
                                level=inst.label(),
                            )
                            cells.setdefault(cell.key, cell)
    if not cells and any(c.scopes == ("*",) for c in suite.corruptions):
        raise SuiteError(
            "no cells: the suite's corruptions target every hook/segment a codec declares ('*'), and "
            f"none of {', '.join(selected)} declares any (JPEG2000 has no latent hooks; RDEIC does)"
        )
    return Plan(
        list(cells.values()),
        codecs,
        corruptions,
        images,
        metrics,
        decode_seeds,
        subsets,
        fingerprints,
        rate_refs,
        datasets=dataset_records,
        skipped_images=skipped_images,
    )


@dataclass
class Artifacts:
    """Everything a cell of one (image, codec) needs besides its own corruption."""

    original: np.ndarray
    encoded: Encoded
    clean: dict[int, np.ndarray]  # decode seed -> clean decode
    clean_metrics: dict[int, dict[str, float]]


@dataclass(frozen=True)
class Transmission:
    """One cell's trip through the channel (and the FEC layer, when the cell has one)."""

    channel: ChannelResult  # what the channel did (to the FEC-protected stream when FEC is on)
    data: bytes  # the bytes handed to the decoder
    fec: dict[str, Any] | None = None  # FEC outcome: backend, codewords, failed, residual flips, overhead
    fec_failed: bool = False  # the FEC layer declared failure under policy "fail": nothing is decoded

    @property
    def received_sha256(self) -> str:
        return sha256_bytes(self.channel.data)


class Runner:
    def __init__(self, opts: RunOptions, plan: Plan) -> None:
        self.opts = opts
        self.plan = plan
        self.cache = ArtifactCache(opts.out / "cache")
        self._artifacts: OrderedDict[str, Artifacts] = OrderedDict()
        self._codec_by_fp = {plan.fingerprints[label]: (label, c) for label, c in plan.codecs.items()}
        self._fec: dict[str, ReedSolomonFEC] = {}
        self._protected: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def transmit(self, cell: Cell, art: Artifacts, corruption: Corruption) -> Transmission:
        """Clean stream -> [FEC encode] -> channel (scope) -> [FEC decode] -> bytes for the decoder."""
        data = art.encoded.bitstream.data
        if corruption.acts_on == "latent":
            return Transmission(_clean_channel(data), data)
        if cell.fec is None:
            channel = corruption.apply(data, art.encoded.bitstream.ranges(cell.scope), cell.rng())
            return Transmission(channel, channel.data)
        fec_id = canonical_json(cell.fec)
        fec = self._fec.get(fec_id) or self._fec.setdefault(fec_id, ReedSolomonFEC(FECConfig(**cell.fec)))
        protected = self._protected.get((cell.encode_key, fec_id))
        if protected is None:
            protected = self._protected[(cell.encode_key, fec_id)] = fec.encode(data)
            while len(self._protected) > 64:
                self._protected.popitem(last=False)
        channel = corruption.apply(protected, ((0, len(protected)),), cell.rng())
        out = fec.decode(channel.data)
        common = min(len(out.data), len(data))
        residual = popcount(
            np.frombuffer(out.data[:common], np.uint8) ^ np.frombuffer(data[:common], np.uint8)
        ) + 8 * abs(len(out.data) - len(data))
        info = {
            "backend": fec.backend,
            "codewords": out.codewords,
            "failed_codewords": out.failed_codewords,
            "length_ok": out.length_ok,
            "residual_flips": residual,
            "overhead_bytes": len(protected) - len(data),
        }
        failed = out.failed_codewords > 0 and fec.config.on_failure == "fail"
        return Transmission(channel, out.data, info, failed)

    # -- encode once, clean decodes, controls -------------------------------------------------------------
    def codec_of(self, cell: Cell) -> Codec:
        return self._codec_by_fp[cell.codec_fingerprint][1]

    def encoded(self, cell: Cell, original: np.ndarray, label: str | None = None) -> Encoded:
        """The cached stream of ``original`` under codec ``label`` (the cell's by default), encoding it once;
        a rate-matched config first gets its reference's stream and encodes at that bpp."""
        label = label or self._codec_by_fp[cell.codec_fingerprint][0]
        codec, fingerprint = self.plan.codecs[label], self.plan.fingerprints[label]
        key = encode_key(cell.image_sha256, cell.height, cell.width, cell.preprocessing, fingerprint)
        encoded = self.cache.load_encoded(key)
        if encoded is None:
            ref = self.plan.rate_refs.get(label)
            target = (
                None
                if ref is None
                else 8.0 * len(self.encoded(cell, original, ref).bitstream.data) / (cell.height * cell.width)
            )
            t0 = time.perf_counter()
            bitstream = codec.encode(original) if target is None else codec.encode_at_rate(original, target)
            encoded = self.cache.store_encoded(key, bitstream, time.perf_counter() - t0, codec)
        return encoded

    def artifacts(self, cell: Cell) -> Artifacts:
        key = cell.encode_key
        if key in self._artifacts:
            self._artifacts.move_to_end(key)
            return self._artifacts[key]
        ds, entry = self.plan.images[cell.image_sha256]
        original = ds.load(entry)
        codec = self.codec_of(cell)
        encoded = self.encoded(cell, original)
        clean, clean_metrics = {}, {}
        for seed in self.plan.decode_seeds:
            image = self.cache.load_clean(key, seed)
            if image is None:
                image = codec.decode(encoded.bitstream.data, seed)
                problem = check_output(image, codec.decoded_shape(cell.height, cell.width))
                if problem:
                    raise ControlError(f"{cell.codec_label} on {entry.id}: clean decode is invalid: {problem}")
                image = np.ascontiguousarray(image[: cell.height, : cell.width])
                self.cache.store_clean(key, seed, image)
            clean[seed] = image
            clean_metrics[seed] = {name: m(image, original) for name, m in self.plan.metrics.items()}
            psnr = clean_metrics[seed].get("psnr")
            floor, whose = codec.clean_psnr_floor_db, "codec's"
            if self.opts.suite.clean_psnr_floor_db is not None and floor != -math.inf:
                floor, whose = self.opts.suite.clean_psnr_floor_db, "suite's"
            if psnr is not None and psnr < floor:
                raise ControlError(
                    f"{cell.codec_label} on {entry.id}: clean round trip gives {psnr:.2f} dB PSNR, below the "
                    f"{whose} floor of {floor} dB; refusing to build a table on a broken codec"
                )
        art = Artifacts(original, encoded, clean, clean_metrics)
        self._artifacts[key] = art
        while len(self._artifacts) > 4 * self.opts.workers + 4:
            self._artifacts.popitem(last=False)
        return art

    def run_controls(self, cells: list[Cell], pool: WorkerPool, memo: dict[str, DecodeRecord]) -> None:
        """METHODOLOGY.md §4, before any corrupted cell: every corruption at its identity level (BER 0, σ 0)
        must leave the stream byte-identical, and the isolated decode of each clean stream (through a
        latent corruption at its identity level, if any) must equal the in-process clean decode byte for
        byte. Fills ``memo`` with the clean decodes so untouched streams are never decoded again."""
        seen: set[tuple[str, str, str, str]] = set()
        latent_checks: dict[str, list[tuple[Cell, Corruption]]] = {}
        jobs: OrderedDict[str, tuple[Future, Cell]] = OrderedDict()
        for cell in cells:
            corruption = self.plan.corruption_of(cell)
            art = self.artifacts(cell)
            data = art.encoded.bitstream.data
            dkey = decode_key(
                cell.codec_fingerprint,
                art.encoded.stream_sha256,
                cell.decode_seed,
                cell.image_sha256,
                metrics=cell.metrics,
            )
            control_id = (cell.encode_key, cell.corruption, cell.scope, canonical_json(cell.fec))
            if control_id not in seen:
                seen.add(control_id)
                identity = type(corruption)(**type(corruption).identity_params())
                if identity.acts_on == "latent":
                    latent_checks.setdefault(dkey, []).append((cell, identity))
                else:
                    tx = self.transmit(cell, art, identity)
                    if tx.data != data or tx.channel.actual_flips or tx.fec_failed:
                        via = f" with {FECConfig(**cell.fec).label()}" if cell.fec else ""
                        raise ControlError(
                            f"control: {cell.corruption} at {identity.label()}{via} changed the stream of "
                            f"{cell.codec_label} on {cell.image_id} (scope {cell.scope})"
                        )
            if dkey not in memo and dkey not in jobs:
                jobs[dkey] = (pool.submit(self.codec_of(cell).spec(), data), cell)
                while len(jobs) > 4 * self.opts.workers:
                    self._check_clean_decode(*jobs.popitem(last=False), latent_checks, memo)
        while jobs:
            self._check_clean_decode(*jobs.popitem(last=False), latent_checks, memo)

    def _check_clean_decode(
        self,
        dkey: str,
        job: tuple[Future, Cell],
        latent_checks: dict[str, list[tuple[Cell, Corruption]]],
        memo: dict[str, DecodeRecord],
    ) -> None:
        future, cell = job
        outcome = future.result()
        art = self.artifacts(cell)
        expected = pixels_sha256(art.clean[cell.decode_seed])
        checks: list[tuple[Cell, Corruption | None]] = [(cell, None), *latent_checks.pop(dkey, [])]
        for checked_cell, latent in checks:
            record = self.finish_decode(dkey, outcome, checked_cell, art, latent)
            if record.status != Status.OK or record.output_sha256 != expected:
                via = f" through {latent.name} at {latent.label()}" if latent else ""
                raise ControlError(
                    f"control: the isolated decode{via} of the clean stream of {cell.codec_label} on "
                    f"{cell.image_id} does not reproduce the clean decode "
                    f"({record.status}: {record.error_message or 'pixels differ'})"
                )
            if latent is None:
                memo[dkey] = record

    # -- one decode ---------------------------------------------------------------------------------------
    def finish_decode(
        self, dkey: str, outcome: ParseOutcome, cell: Cell, art: Artifacts, latent: Corruption | None
    ) -> DecodeRecord:
        """Trusted half: latent corruption, reconstruct, output checks, metrics."""
        base = {"decode_key": dkey, "parse_s": outcome.parse_s, "wall_s": outcome.wall_s}
        if outcome.status is not Status.OK:
            return DecodeRecord(
                status=outcome.status.value,
                error_type=outcome.error_type,
                error_message=outcome.error_message,
                output_sha256=None,
                metrics={},
                **base,
            )
        hook = latent.hook_for(cell.scope, cell.rng()) if latent is not None else None
        codec = self.codec_of(cell)
        t0 = time.perf_counter()
        try:
            image = codec.reconstruct(outcome.state or {}, cell.decode_seed, hook)
        except Exception as exc:  # garbage latents may break reconstruct: a status, not a crash
            return DecodeRecord(
                status=Status.EXCEPTION.value,
                error_type=type_name(exc),
                error_message=str(exc)[:2000],
                output_sha256=None,
                metrics={},
                reconstruct_s=time.perf_counter() - t0,
                **base,
            )
        reconstruct_s = time.perf_counter() - t0
        timings = codec.stage_timings()  # per-stage seconds of this reconstruct (RDEIC: entropy, steps, VAE)
        problem = check_output(image, codec.decoded_shape(cell.height, cell.width))
        if problem:
            return DecodeRecord(
                status=Status.INVALID_OUTPUT.value,
                error_type="InvalidOutput",
                error_message=problem,
                output_sha256=None,
                metrics={},
                reconstruct_s=reconstruct_s,
                **base,
            )
        image = image[: cell.height, : cell.width]  # crop codec padding: metrics see original pixels only
        t0 = time.perf_counter()
        metrics: dict[str, float] = {}
        for name, metric in self.plan.metrics.items():
            metrics[name] = metric(image, art.original)
            metrics[f"{name}_vs_clean"] = metric(image, art.clean[cell.decode_seed])
            metrics[f"clean_{name}"] = art.clean_metrics[cell.decode_seed][name]
        return DecodeRecord(
            status=Status.OK.value,
            error_type=None,
            error_message=None,
            output_sha256=pixels_sha256(image),
            metrics=metrics,
            reconstruct_s=reconstruct_s,
            metrics_s=time.perf_counter() - t0,
            timings=timings,
            **base,
        )

    def cell_row(
        self, cell: Cell, art: Artifacts, tx: Transmission, record: DecodeRecord, memoised: bool, corrupt_s: float
    ) -> dict[str, Any]:
        channel = tx.channel
        pixels = cell.height * cell.width
        n_bytes = len(art.encoded.bitstream.data)
        header = art.encoded.bitstream.header_bytes
        return {
            "key": cell.key,
            "dataset": cell.dataset,
            "dataset_version": cell.dataset_version,
            "image_id": cell.image_id,
            "image_sha256": cell.image_sha256,
            "height": cell.height,
            "width": cell.width,
            "preprocessing": cell.preprocessing,
            "codec": cell.codec,
            "codec_label": cell.codec_label,
            "codec_config": cell.codec_config,
            "codec_fingerprint": cell.codec_fingerprint,
            "weights_hash": cell.weights_hash,
            "corruption": cell.corruption,
            "params": cell.params,
            "level": cell.level,
            "scope": cell.scope,
            "fec": cell.fec,
            "suite_seed": cell.suite_seed,
            "replicate": cell.replicate,
            "decode_seed": cell.decode_seed,
            "status": record.status,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "bytes_total": n_bytes,
            "bytes_header": header,
            "bpp": 8.0 * n_bytes / pixels,
            "header_bpp": 8.0 * header / pixels,
            # over the pixels the codec actually coded (RDEIC pads to multiples of 64): only for comparison
            # with published numbers that count padded pixels
            "padded_bpp": 8.0 * n_bytes / math.prod(self.codec_of(cell).decoded_shape(cell.height, cell.width)[:2]),
            "bits_exposed": channel.bits_exposed,
            "expected_flips": channel.expected_flips,
            "actual_flips": channel.actual_flips,
            "p_error_free": channel.p_error_free,
            "channel": ({**channel.extra, "fec": tx.fec} if tx.fec else channel.extra)
            | ({"rng_key": cell.rng_key} if cell.channel_codec else {}),
            "fec_overhead_bpp": 8.0 * tx.fec["overhead_bytes"] / pixels if tx.fec else 0.0,
            "residual_flips": tx.fec["residual_flips"] if tx.fec else None,
            "stream_sha256": tx.received_sha256,
            "decode_key": record.decode_key,
            "memoised": int(memoised),
            "metrics": record.metrics,
            "corrupt_s": corrupt_s,
            "encode_s": art.encoded.encode_s,
            "finished_at": datetime.now(UTC).isoformat(),
        }


def _clean_channel(data: bytes) -> ChannelResult:
    """The channel record of a cell whose corruption acts on latents: the stream crosses untouched."""
    return ChannelResult(data=data, bits_exposed=0, expected_flips=0.0, actual_flips=0, p_error_free=1.0)


def discard_results(out: Path) -> None:
    """``--fresh``: the run directory's results store, summary and encode cache go."""
    for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "summary.csv", "summary.md"):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "cache", ignore_errors=True)


def run(opts: RunOptions) -> RunResult:
    """Run (or resume) a suite; returns counts. Raises SuiteError/ControlError before writing a table."""
    from tqdm import tqdm

    started = time.perf_counter()
    plan = make_plan(opts)
    if not plan.cells:
        raise SuiteError("the suite (after --codec/--dataset/--limit-images filters) has no cells")
    out = opts.out
    if opts.fresh and out.exists():
        discard_results(out)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out / "results.sqlite")
    try:
        return _execute(opts, plan, store, started, tqdm)
    finally:
        store.close()


def _execute(opts: RunOptions, plan: Plan, store: ResultStore, started: float, tqdm: Any) -> RunResult:
    suite = opts.suite
    store.record_provenance(
        datetime.now(UTC).isoformat(),
        provenance.collect(
            {
                "suite_name": suite.name,
                "suite_path": suite.path,
                "suite_sha256": suite.sha256,
                "suite_text": suite.text,
                "workers": opts.workers,
                "timeout_s": suite.timeout_s,
                "clean_psnr_floor_db": suite.clean_psnr_floor_db,
                "image_subsets": plan.subsets,
                "datasets": plan.datasets,
                "skipped_images": plan.skipped_images,
                "planned_cells": len(plan.cells),
                "metrics": metric_provenance(suite.metrics),
            }
        ),
    )
    done = store.done_keys()
    pending = [c for c in plan.cells if c.key not in done]
    runner = Runner(opts, plan)
    statuses: Counter = Counter()
    memo: dict[str, DecodeRecord] = {}
    persisted: set[str] = set()
    decodes = memo_hits = 0
    preload = tuple(sorted({type(c).__module__ for c in plan.codecs.values()}))
    with WorkerPool(opts.workers, suite.timeout_s, preload=preload) as pool:
        if pending:
            runner.run_controls(pending, pool, memo)
        bar = tqdm(total=len(pending), desc=suite.name, unit="cell", disable=not opts.progress, smoothing=0.05)
        inflight: dict[str, tuple[Future, list[tuple[Cell, Transmission, float]]]] = {}

        def finalize(cell: Cell, tx: Transmission, record: DecodeRecord, memoised: bool, dt: float) -> None:
            nonlocal memo_hits
            if record.decode_key not in persisted:
                persisted.add(record.decode_key)
                new = store.decode(record.decode_key) is None
            else:
                new = False
            art = runner.artifacts(cell)
            store.write_cell(runner.cell_row(cell, art, tx, record, memoised, dt), record, new)
            memo_hits += int(memoised)
            statuses[record.status] += 1
            bar.update(1)
            bar.set_postfix(dict(sorted(statuses.items())), refresh=False)

        def drain(block_until: int) -> None:
            nonlocal decodes
            while len(inflight) > block_until:
                done_futures, _ = wait([f for f, _ in inflight.values()], return_when=FIRST_COMPLETED)
                for dkey in [k for k, (f, _) in inflight.items() if f in done_futures]:
                    future, waiters = inflight.pop(dkey)
                    first = waiters[0][0]
                    corruption = plan.corruption_of(first)
                    latent = corruption if corruption.acts_on == "latent" else None
                    record = runner.finish_decode(dkey, future.result(), first, runner.artifacts(first), latent)
                    memo[dkey] = record
                    decodes += 1
                    for i, (cell, tx, dt) in enumerate(waiters):
                        finalize(cell, tx, record, memoised=i > 0, dt=dt)

        window = 4 * opts.workers
        for cell in pending:
            art = runner.artifacts(cell)
            corruption = plan.corruption_of(cell)
            t0 = time.perf_counter()
            tx = runner.transmit(cell, art, corruption)
            dt = time.perf_counter() - t0
            if tx.fec_failed:
                record = DecodeRecord(
                    decode_key=decode_key(
                        cell.codec_fingerprint,
                        tx.received_sha256,
                        cell.decode_seed,
                        cell.image_sha256,
                        {"fec": cell.fec},
                        cell.metrics,
                    ),
                    status=Status.FEC_FAILURE.value,
                    error_type="ReedSolomonError",
                    error_message=f"{tx.fec['failed_codewords']} of {tx.fec['codewords']} codewords uncorrectable",
                    output_sha256=None,
                    metrics={},
                )
                finalize(cell, tx, record, memoised=False, dt=dt)
                continue
            # a latent draw depends on the cell's own RNG: nothing to share
            latent_key = cell.key if corruption.acts_on == "latent" else None
            dkey = decode_key(
                cell.codec_fingerprint,
                sha256_bytes(tx.data),
                cell.decode_seed,
                cell.image_sha256,
                latent_key,
                cell.metrics,
            )
            if dkey not in memo and dkey not in inflight and (earlier := store.decode(dkey)) is not None:
                memo[dkey] = earlier  # decoded by an earlier, interrupted run of this directory
            if dkey in memo:
                finalize(cell, tx, memo[dkey], memoised=True, dt=dt)
            elif dkey in inflight:
                inflight[dkey][1].append((cell, tx, dt))
            else:
                inflight[dkey] = (pool.submit(runner.codec_of(cell).spec(), tx.data), [(cell, tx, dt)])
                drain(window)
        drain(0)
        bar.close()
        restarts = pool.restarts
    return RunResult(
        out=opts.out,
        planned_keys=[c.key for c in plan.cells],
        metrics=tuple(plan.metrics),
        planned=len(plan.cells),
        already_done=len(plan.cells) - len(pending),
        computed=len(pending),
        decodes=decodes,
        memo_hits=memo_hits,
        worker_restarts=restarts,
        statuses=statuses,
        seconds=time.perf_counter() - started,
    )
