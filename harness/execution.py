"""Executing planned cells on this machine: a pool of isolated parse workers feeding the trusted half.

::

    pending cells ──> channel(bytes, scope, rng(cell key)) ──> decode key = hash(bytes actually decoded, ...)
        memo hit ───────────────────────────────────────────────────────────────────┐
        else: pool.submit(parse, limits) ─ ─ (workers parse ahead) ─ ─> finish_decode ─┴─> store (1 transaction)

The window of parses in flight keeps every worker busy while the main process reconstructs and measures
(pipelining: on a GPU, entropy decoding never makes the accelerator wait). With a batch size above 1, parsed
states of one codec config and image size are reconstructed together, each with its own seed and draws.
Identical streams (zero flips at low BER) decode once: later cells with the same decode key wait for, or
reuse, the first one's record, also across resumed runs.

No work is done twice (issue #25), and no row changes for it:

* **Parses are memoised by what is parsed** (codec, stream hash, size, limits), not by decode key: the latent
  cells of one clean stream (every level, replicate and decode seed: each its own decode key, because each draws
  its own noise) share one isolated parse and differ only in the trusted half. ``parse`` takes no seed and no
  hook, so the shared state is what each cell's own parse would have returned (the controls check that an
  isolated parse equals the in-process one byte for byte); each cell still gets its own reconstruct and draw.
* **A latent level that is the identity** (exactly the level the controls decode through the hook, e.g.
  ``sigma = 0`` without a clamp) reuses the clean decode the controls memoised: the controls proved, for this
  stream, corruption and scope, that decoding through that hook gives the clean decode's pixels byte for byte,
  so its record (status, output hash, metrics) is the clean decode's. A level that only looks like the identity
  (``sigma = 0`` with a clamp) is decoded as before.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field

from corruptions.base import Corruption
from corruptions.side_info import SideInfoUnavailable
from harness.artifacts import ArtifactSource
from harness.cells import Cell, decode_key
from harness.channel import Channel, Transmission
from harness.decoding import Budget, Pending, failed_record, finish_batch
from harness.hashing import canonical_json, sha256_bytes
from harness.planning import Plan
from harness.records import cell_row
from harness.side import SideInput, side_input
from harness.status import Status
from harness.store import DecodeRecord, ResultStore
from harness.workers import ParseOutcome, WorkerPool

#: Finished parses kept for cells that parse the same bytes later (beyond those still in flight), per worker.
PARSES_KEPT_PER_WORKER = 8


def is_identity(corruption: Corruption) -> bool:
    """Whether ``corruption`` is at exactly the identity level its controls check (its ``identity_params`` and
    every other parameter at its default): only then may a cell reuse the clean decode."""
    return corruption.config() == type(corruption)(**type(corruption).identity_params()).config()


@dataclass
class Progress:
    """Counts of one execution (the CLI prints them); ``reconstruct_s``: seconds the main process spent in the
    trusted half (on a GPU: the time the accelerator had work), ``wall_s``: the execution's wall time."""

    decodes: int = 0
    memo_hits: int = 0
    statuses: Counter = field(default_factory=Counter)
    reconstruct_s: float = 0.0
    wall_s: float = 0.0
    batches: int = 0
    #: cells whose side-information degradation the dataset cannot serve for that image (not stored; see side.py)
    not_applicable: list[dict[str, str]] = field(default_factory=list)


def execute_local(
    pending: list[Cell],
    plan: Plan,
    artifacts: ArtifactSource,
    channel: Channel,
    pool: WorkerPool,
    store: ResultStore,
    memo: dict[str, DecodeRecord],
    budget: Budget,
    clean_cpu: dict[str, float],
    on_cell: Callable[[str, Counter], None] | None = None,
    batch_size: int = 1,
) -> Progress:
    """Run ``pending`` cells through ``pool``; every finished cell is stored before the next is counted.

    With ``batch_size`` > 1, parsed states of one codec config and image size wait in a bucket until it holds
    ``batch_size`` of them (or nothing is left to parse) and are reconstructed together
    (:func:`harness.decoding.finish_batch`); the workers keep parsing ahead meanwhile."""
    started = time.perf_counter()
    progress = Progress()
    sides: dict[str, SideInput | None] = {}  # decode key -> the side images its decode is given
    persisted: set[str] = set()
    inflight: dict[tuple, Future] = {}  # parse key -> parse in a worker
    parsers: dict[tuple, list[str]] = {}  # parse key -> the decode keys waiting for that parse
    parsed: OrderedDict[tuple, ParseOutcome] = OrderedDict()  # parse key -> a finished parse, for later cells
    # decode key -> its cells (with their side images), the first one decodes
    waiting: dict[str, list[tuple[Cell, Transmission, float, SideInput | None]]] = {}
    buckets: dict[tuple, list[Pending]] = {}  # (codec, image size) -> parsed, waiting for a batched reconstruct

    def codec_of(cell: Cell):
        return plan.codecs[plan.label_of(cell.codec_fingerprint)]

    def finalize(
        cell: Cell, tx: Transmission, record: DecodeRecord, memoised: bool, dt: float, side: SideInput | None = None
    ) -> None:
        if record.decode_key not in persisted:
            persisted.add(record.decode_key)
            new = store.decode(record.decode_key) is None
        else:
            new = False
        row = cell_row(cell, artifacts.get(cell), tx, record, memoised, dt, codec_of(cell), side)
        store.write_cell(row, record, new)
        progress.memo_hits += int(memoised)
        progress.statuses[record.status] += 1
        if on_cell is not None:
            on_cell(record.status, progress.statuses)

    def reconstruct(group: list[Pending]) -> None:
        t0 = time.perf_counter()
        records = finish_batch(group, codec_of(group[0].cell), plan.metrics)
        progress.reconstruct_s += time.perf_counter() - t0
        progress.batches += 1
        for item, record in zip(group, records, strict=True):
            memo[item.dkey] = record
            progress.decodes += 1
            for i, (cell, tx, dt, side) in enumerate(waiting.pop(item.dkey)):
                finalize(cell, tx, record, memoised=i > 0, dt=dt, side=side)

    def flush(full_only: bool) -> None:
        for key in list(buckets):
            if not full_only or len(buckets[key]) >= batch_size:
                reconstruct(buckets.pop(key))

    def parsed_one(dkey: str, outcome: ParseOutcome) -> None:
        first = waiting[dkey][0][0]
        corruption = plan.corruption_of(first)
        latent = corruption if corruption.acts_on == "latent" else None
        side = sides.pop(dkey, None)
        item = Pending(dkey, outcome, first, artifacts.get(first), latent, side.images if side else None)
        if batch_size <= 1 or outcome.status is not Status.OK:
            reconstruct([item])
        else:
            buckets.setdefault((first.codec_fingerprint, first.height, first.width), []).append(item)

    def drain(block_until: int) -> None:
        while len(inflight) > block_until:
            done_futures, _ = wait(list(inflight.values()), return_when=FIRST_COMPLETED)
            for pkey in [k for k, f in inflight.items() if f in done_futures]:
                outcome = inflight.pop(pkey).result()
                parsed[pkey] = outcome
                while len(parsed) > PARSES_KEPT_PER_WORKER * pool.size:
                    parsed.popitem(last=False)
                for dkey in parsers.pop(pkey):
                    parsed_one(dkey, outcome)
            flush(full_only=bool(inflight))  # nothing left parsing: the accelerator must not wait for a full batch

    window = max(4 * pool.size, 2 * batch_size)
    identities: dict[tuple[str, str], bool] = {}

    def identity_of(corruption: Corruption) -> bool:
        key = (corruption.name, canonical_json(corruption.config()))
        if key not in identities:
            identities[key] = is_identity(corruption)
        return identities[key]

    for cell in pending:
        art = artifacts.get(cell)
        corruption = plan.corruption_of(cell)
        t0 = time.perf_counter()
        tx = channel.transmit(cell, art.encoded.bitstream, corruption)
        dt = time.perf_counter() - t0
        if tx.fec_failed:
            fec_key = {"fec": cell.fec}
            dkey = decode_key(
                cell.codec_fingerprint, tx.received_sha256, cell.decode_seed, cell.image_sha256, fec_key, cell.metrics
            )
            message = f"{tx.fec['failed_codewords']} of {tx.fec['codewords']} codewords uncorrectable"
            finalize(cell, tx, failed_record(dkey, Status.FEC_FAILURE, "ReedSolomonError", message), False, dt)
            continue
        try:  # decoder-side information (codecs that use it): the true view or this cell's degradation of it
            side = side_input(cell, plan, art.side)
        except SideInfoUnavailable as exc:
            progress.not_applicable.append({"key": cell.key, "image_id": cell.image_id, "reason": str(exc)})
            continue
        # a latent draw depends on the cell's own RNG: nothing to share, except at the identity level
        latent_key = cell.key if corruption.acts_on == "latent" and not identity_of(corruption) else None
        stream_sha = sha256_bytes(tx.data)
        dkey = decode_key(
            cell.codec_fingerprint,
            stream_sha,
            cell.decode_seed,
            cell.image_sha256,
            latent_key,
            cell.metrics,
            side.identity if side else None,
        )
        if dkey not in memo and dkey not in waiting and (earlier := store.decode(dkey)) is not None:
            memo[dkey] = earlier  # decoded by an earlier, interrupted run of this directory
        if dkey in memo:
            finalize(cell, tx, memo[dkey], memoised=True, dt=dt, side=side)
        elif dkey in waiting:
            waiting[dkey].append((cell, tx, dt, side))
        else:
            codec = codec_of(cell)
            limits = budget.limits(codec, cell, clean_cpu.get(cell.encode_key))
            waiting[dkey] = [(cell, tx, dt, side)]
            sides[dkey] = side
            pkey = (cell.codec_fingerprint, stream_sha, cell.height, cell.width, limits)
            if pkey in parsed:  # the same bytes were parsed for an earlier cell (another seed, level or draw)
                parsed.move_to_end(pkey)
                parsed_one(dkey, parsed[pkey])
                flush(full_only=True)
            elif pkey in parsers:  # ... or are being parsed now
                parsers[pkey].append(dkey)
            else:
                inflight[pkey] = pool.submit(codec.spec(), tx.data, (cell.height, cell.width), limits)
                parsers[pkey] = [dkey]
                drain(window)
    drain(0)
    flush(full_only=False)
    progress.wall_s = time.perf_counter() - started
    return progress
