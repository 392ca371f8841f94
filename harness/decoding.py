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

from corruptions.base import Corruption
from harness.artifacts import Artifacts
from harness.cells import Cell
from harness.codecs.base import Codec, InvalidOutput
from harness.hashing import pixels_sha256
from harness.metrics import Metric
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
) -> DecodeRecord:
    """Trusted half: latent corruption, reconstruct, output checks, metrics (vs original and vs clean decode)."""
    base = {"parse_s": outcome.parse_s, "wall_s": outcome.wall_s}
    if outcome.status is not Status.OK:
        return failed_record(dkey, outcome.status, outcome.error_type, outcome.error_message, **base)
    hook = latent.hook_for(cell.scope, cell.rng()) if latent is not None else None
    t0 = time.perf_counter()
    try:
        image = codec.decode_state(outcome.state or {}, cell.decode_seed, hook, size=(cell.height, cell.width))
    except InvalidOutput as exc:
        seconds = time.perf_counter() - t0
        return failed_record(dkey, Status.INVALID_OUTPUT, "InvalidOutput", str(exc), reconstruct_s=seconds, **base)
    except Exception as exc:  # garbage latents may break reconstruct: a status, not a crash
        reconstruct_s = time.perf_counter() - t0
        message = reproducible(str(exc))[:2000]
        return failed_record(dkey, Status.EXCEPTION, type_name(exc), message, reconstruct_s=reconstruct_s, **base)
    return measured_record(dkey, image, cell, art, codec, metrics, time.perf_counter() - t0, base)


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
    for name, metric in metrics.items():
        values[name] = metric(image, art.original)
        values[f"{name}_vs_clean"] = metric(image, art.clean[cell.decode_seed])
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
