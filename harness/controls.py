"""The controls of METHODOLOGY.md §4, run before any corrupted cell.

::

    for each (image, codec, corruption, scope, FEC) with pending cells:
        the corruption at its identity level (BER 0, sigma 0) must leave the stream byte-identical
    for each clean stream:
        ONE isolated parse (generous limits; a timeout is retried, never called a mismatch), then for each
        decode seed: reconstruct [+ the latent corruptions at their identity level] == the in-process clean
        decode of that seed, byte for byte

The isolated clean decodes are memoised (streams that cross the channel untouched are never decoded again, and
latent cells at the identity level reuse them: harness/execution.py) and their CPU time is what per-cell budgets
scale with (``harness.decoding.Budget``).

What is shared, and why the controls still prove what they did: ``parse`` takes no decode seed, so the decode
seeds of one stream share its isolated parse (before: one parse per seed, the same bytes parsed again). Every
seed is still reconstructed from the *isolated* state and compared with the in-process decode of that seed (a
parse that differs between processes, or a reconstruct that differs from call to call, still fails), and every
latent corruption's identity level is still decoded through its hook. What is no longer done is parsing the same
clean bytes twice in the same kind of worker, which the in-process comparison of each seed already covers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

from corruptions.base import Corruption
from corruptions.fec import FECConfig
from harness.artifacts import Artifacts, ArtifactSource, ControlError
from harness.cells import Cell, decode_key
from harness.channel import Channel
from harness.decoding import finish_decode
from harness.hashing import canonical_json, pixels_sha256
from harness.planning import Plan
from harness.side import identity_of
from harness.status import Status
from harness.store import DecodeRecord
from harness.workers import Limits, ParseOutcome, WorkerPool, default_memory_bytes

#: CPU seconds an isolated clean decode may take in a control (a slow machine must not fail a control).
CONTROL_CPU_S = 600.0
#: Attempts of an isolated clean decode that timed out before the control gives up (and says it timed out).
CONTROL_ATTEMPTS = 2


def run_controls(
    cells: list[Cell],
    plan: Plan,
    artifacts: ArtifactSource,
    channel: Channel,
    pool: WorkerPool,
    memo: dict[str, DecodeRecord],
    progress: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Check the controls for ``cells``; fill ``memo`` with the clean decodes. Returns the CPU seconds the
    isolated parse of each clean stream took, by encode key. Raises ControlError."""
    seen: set[tuple[str, str, str, str]] = set()
    latent_checks: dict[str, list[tuple[Cell, Corruption]]] = {}
    # one isolated parse per clean stream: (codec, stream, size) -> (its parse, the clean decode keys it serves)
    jobs: OrderedDict[tuple, tuple[Future, list[tuple[str, Cell]]]] = OrderedDict()
    clean_cpu: dict[str, float] = {}

    def check(job: tuple[Future, list[tuple[str, Cell]]]) -> None:
        future, decodes = job
        outcome = future.result()
        for _ in range(CONTROL_ATTEMPTS - 1):
            if outcome.status is not Status.TIMEOUT:
                break
            outcome = _isolated_clean(pool, plan, artifacts, decodes[0][1]).result()
        for dkey, cell in decodes:
            _check_clean_decode(dkey, outcome, cell, plan, artifacts, latent_checks, memo)
            clean_cpu[cell.encode_key] = max(clean_cpu.get(cell.encode_key, 0.0), outcome.cpu_s)
            if progress is not None:
                progress()

    clean: list[tuple[str, Cell]] = []  # (clean decode key, its first cell), in plan order
    queued: set[str] = set()
    for cell in cells:  # first every identity check, so none is missed by a clean decode checked before it
        corruption = plan.corruption_of(cell)
        art = artifacts.get(cell)
        data = art.encoded.bitstream.data
        dkey = clean_decode_key(cell, art)
        control_id = (cell.encode_key, cell.corruption, cell.scope, canonical_json(cell.fec))
        if control_id not in seen:
            seen.add(control_id)
            identity = type(corruption)(**type(corruption).identity_params())
            if identity.acts_on == "latent":
                latent_checks.setdefault(dkey, []).append((cell, identity))
            elif identity.acts_on == "side_info":
                pass  # the stream is untouched; the identity degradation returns the true view itself (its contract)
            else:
                tx = channel.transmit(cell, art.encoded.bitstream, identity)
                if tx.data != data or tx.channel.actual_flips or tx.fec_failed:
                    via = f" with {FECConfig(**cell.fec).label()}" if cell.fec else ""
                    raise ControlError(
                        f"control: {cell.corruption} at {identity.label()}{via} changed the stream of "
                        f"{cell.codec_label} on {cell.image_id} (scope {cell.scope})"
                    )
        if dkey not in memo and dkey not in queued:
            queued.add(dkey)
            clean.append((dkey, cell))
    for dkey, cell in clean:
        art = artifacts.get(cell)
        pkey = (cell.codec_fingerprint, art.encoded.stream_sha256, cell.height, cell.width)
        if pkey in jobs:
            jobs[pkey][1].append((dkey, cell))
            continue
        jobs[pkey] = (_isolated_clean(pool, plan, artifacts, cell), [(dkey, cell)])
        while len(jobs) > 4 * pool.size:
            check(jobs.popitem(last=False)[1])
    while jobs:
        check(jobs.popitem(last=False)[1])
    return clean_cpu


def clean_decode_key(cell: Cell, art: Artifacts) -> str:
    """The decode key of ``cell``'s clean stream decoded with the cell's seed and the true side view: the record
    the controls memoise, which every cell whose stream crosses untouched (BER 0, zero flips, a latent corruption
    at its identity level) reuses."""
    side = identity_of(art.side) if cell.side_sha256 is not None else None  # the true side view
    return decode_key(
        cell.codec_fingerprint,
        art.encoded.stream_sha256,
        cell.decode_seed,
        cell.image_sha256,
        metrics=cell.metrics,
        side=side,
    )


def _isolated_clean(pool: WorkerPool, plan: Plan, artifacts: ArtifactSource, cell: Cell) -> Future[ParseOutcome]:
    codec = plan.codecs[plan.label_of(cell.codec_fingerprint)]
    memory = default_memory_bytes(_pixels(codec, cell))
    limits = Limits(cpu_s=CONTROL_CPU_S, wall_s=3 * CONTROL_CPU_S, memory_bytes=memory)
    data = artifacts.get(cell).encoded.bitstream.data
    return pool.submit(codec.spec(), data, (cell.height, cell.width), limits)


def _pixels(codec, cell: Cell) -> int:
    h, w, _ = codec.decoded_shape(cell.height, cell.width)
    return h * w


def _check_clean_decode(
    dkey: str,
    outcome: ParseOutcome,
    cell: Cell,
    plan: Plan,
    artifacts: ArtifactSource,
    latent_checks: dict[str, list[tuple[Cell, Corruption]]],
    memo: dict[str, DecodeRecord],
) -> None:
    art = artifacts.get(cell)
    codec = plan.codecs[plan.label_of(cell.codec_fingerprint)]
    expected = pixels_sha256(art.clean[cell.decode_seed])
    checks: list[tuple[Cell, Corruption | None]] = [(cell, None), *latent_checks.pop(dkey, [])]
    for checked_cell, latent in checks:
        side = art.side or None
        record = finish_decode(dkey, outcome, checked_cell, art, latent, codec, plan.metrics, side)
        if record.status == Status.TIMEOUT.value:
            raise ControlError(
                f"control: the isolated decode of the clean stream of {cell.codec_label} on {cell.image_id} timed "
                f"out {CONTROL_ATTEMPTS} times ({record.error_message}); this is not a mismatch: the decoder is "
                "too slow for this machine or hangs on its own clean stream"
            )
        if record.status != Status.OK.value or record.output_sha256 != expected:
            via = f" through {latent.name} at {latent.label()}" if latent else ""
            raise ControlError(
                f"control: the isolated decode{via} of the clean stream of {cell.codec_label} on "
                f"{cell.image_id} does not reproduce the clean decode "
                f"({record.status}: {record.error_message or 'pixels differ'})"
            )
        if latent is None:
            memo[dkey] = record
