"""The trusted half of a decode, in the main process: latent corruption, reconstruct, output checks, metrics.

::

    ParseOutcome (from an isolated worker) ──not ok──> DecodeRecord(status, error)
        │ ok
        └─> codec.decode_state(state, decode seed, hook, size)   [float output checked before the uint8 cast]
              ├─ InvalidOutput ──> invalid_output        ├─ other exception ──> exception
              └─ uint8 image of the decoded shape ──> crop padding ──> metrics vs original and vs clean decode

Also here: the per-cell limits a parse runs under (``cell_limits``), derived from the suite's budget and the
measured cost of the clean stream of the same (image, codec), never from how busy the machine is.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from corruptions.base import Corruption
from harness.artifacts import Artifacts
from harness.cells import Cell
from harness.codecs.base import Codec, InvalidOutput
from harness.hashing import pixels_sha256
from harness.metrics import Metric, measure
from harness.status import Status
from harness.store import DecodeRecord
from harness.workers import Limits, ParseOutcome, reproducible, type_name


@dataclass(frozen=True)
class Budget:
    """How per-cell limits are derived (recorded in provenance).

    ``timeout_s``: the floor of every parse's CPU-time budget (suite key ``timeout_s``, ``--timeout``);
    ``timeout_factor``: the budget is at least this multiple of the CPU time the clean stream of the same
    (image, codec) took to parse; ``wall_factor``: the wall-clock backstop is this multiple of the budget (it
    only catches parses that hang without using CPU); ``memory_mb``: allowance of a parse beyond the warm worker
    (None: ``harness.workers.default_memory_bytes`` of the decoded pixels)."""

    timeout_s: float = 30.0
    timeout_factor: float = 20.0
    wall_factor: float = 10.0
    memory_mb: float | None = None

    def limits(self, codec: Codec, cell: Cell, clean_cpu_s: float | None) -> Limits:
        cpu = max(self.timeout_s, self.timeout_factor * (clean_cpu_s or 0.0))
        pixels = math.prod(codec.decoded_shape(cell.height, cell.width)[:2])
        memory = None if self.memory_mb is None else int(self.memory_mb * 2**20)
        return Limits.for_image(cpu, pixels, self.wall_factor, memory)


def failed_record(dkey: str, status: Status, error_type: str | None, message: str | None, **timing: float):
    return DecodeRecord(
        decode_key=dkey,
        status=status.value,
        error_type=error_type,
        error_message=message,
        output_sha256=None,
        metrics={},
        **timing,
    )


def finish_decode(
    dkey: str,
    outcome: ParseOutcome,
    cell: Cell,
    art: Artifacts,
    latent: Corruption | None,
    codec: Codec,
    metrics: dict[str, Metric],
    side_info: dict[str, Any] | None = None,
) -> DecodeRecord:
    """Trusted half: latent corruption, reconstruct (with the cell's side images, for codecs that use them),
    output checks, metrics (vs original and vs clean decode)."""
    base = {"parse_s": outcome.parse_s, "wall_s": outcome.wall_s}
    if outcome.status is not Status.OK:
        return failed_record(dkey, outcome.status, outcome.error_type, outcome.error_message, **base)
    hook = latent.hook_for(cell.scope, cell.rng()) if latent is not None else None
    t0 = time.perf_counter()
    size = (cell.height, cell.width)
    try:
        result = codec.decode_state(outcome.state or {}, cell.decode_seed, hook, size=size, side_info=side_info)
    except Exception as exc:  # garbage latents may break reconstruct: a status, not a crash
        result = exc
    return record_of(dkey, result, cell, art, codec, metrics, time.perf_counter() - t0, base)


@dataclass
class Pending:
    """A parsed cell waiting for its trusted half (the first of the cells that share its decode key)."""

    dkey: str
    outcome: ParseOutcome
    cell: Cell
    art: Artifacts
    latent: Corruption | None
    side_info: dict[str, Any] | None = None


def finish_batch(items: list[Pending], codec: Codec, metrics: dict[str, Metric]) -> list[DecodeRecord]:
    """The trusted half of several parsed cells of one codec config and image size in one
    :meth:`Codec.decode_batch` call; every cell keeps its own decode seed and latent draw, so each record equals
    what :func:`finish_decode` gives for that cell alone (bit for bit on the CPU)."""
    ok = [p for p in items if p.outcome.status is Status.OK]
    results: dict[int, object] = {}
    seconds = 0.0
    if ok:
        size = (ok[0].cell.height, ok[0].cell.width)
        hooks = [p.latent.hook_for(p.cell.scope, p.cell.rng()) if p.latent is not None else None for p in ok]
        t0 = time.perf_counter()
        try:
            states, seeds = [p.outcome.state or {} for p in ok], [p.cell.decode_seed for p in ok]
            sides = [p.side_info for p in ok] if codec.side_info else None
            decoded = codec.decode_batch(states, seeds, hooks, size, sides)
        except Exception as exc:  # the batch as a whole failed: every item gets that status
            decoded = [exc] * len(ok)
        seconds = (time.perf_counter() - t0) / len(ok)  # each cell's share of the batch
        results = {id(p): r for p, r in zip(ok, decoded, strict=True)}
    records = []
    for p in items:
        base = {"parse_s": p.outcome.parse_s, "wall_s": p.outcome.wall_s}
        if p.outcome.status is not Status.OK:
            o = p.outcome
            records.append(failed_record(p.dkey, o.status, o.error_type, o.error_message, **base))
        else:
            records.append(record_of(p.dkey, results[id(p)], p.cell, p.art, codec, metrics, seconds, base))
    return records


def record_of(
    dkey: str,
    result: object,
    cell: Cell,
    art: Artifacts,
    codec: Codec,
    metrics: dict[str, Metric],
    reconstruct_s: float,
    base: dict[str, float],
) -> DecodeRecord:
    """The record of one reconstruct: ``invalid_output`` / ``exception`` for a raised exception, else measured."""
    timing = {"reconstruct_s": reconstruct_s, **base}
    if isinstance(result, InvalidOutput):
        return failed_record(dkey, Status.INVALID_OUTPUT, "InvalidOutput", str(result), **timing)
    if isinstance(result, Exception):
        return failed_record(dkey, Status.EXCEPTION, type_name(result), reproducible(str(result))[:2000], **timing)
    return measured_record(dkey, result, cell, art, codec, metrics, reconstruct_s, base)


def measured_record(
    dkey: str,
    image,
    cell: Cell,
    art: Artifacts,
    codec: Codec,
    metrics: dict[str, Metric],
    reconstruct_s: float,
    base: dict[str, float],
) -> DecodeRecord:
    """The ``ok`` record of a checked uint8 output: padding cropped, metrics vs the original and the clean decode."""
    timings = codec.stage_timings()  # per-stage seconds of this reconstruct (RDEIC: entropy, steps, VAE)
    image = image[: cell.height, : cell.width]  # crop codec padding: metrics see original pixels only
    t0 = time.perf_counter()
    values: dict[str, float] = {}
    vs_original = measure(metrics, image, art.original)  # a metric that cannot score this image: NaN, said once
    vs_clean = measure(metrics, image, art.clean[cell.decode_seed])
    for name in metrics:
        values[name] = vs_original[name]
        values[f"{name}_vs_clean"] = vs_clean[name]
        values[f"clean_{name}"] = art.clean_metrics[cell.decode_seed][name]
    return DecodeRecord(
        decode_key=dkey,
        status=Status.OK.value,
        error_type=None,
        error_message=None,
        output_sha256=pixels_sha256(image),
        metrics=values,
        reconstruct_s=reconstruct_s,
        metrics_s=time.perf_counter() - t0,
        timings=timings,
        **base,
    )
