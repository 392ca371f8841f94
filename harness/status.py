"""The one status every cell gets (METHODOLOGY.md §2). Failures are never written as PSNR 0."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    OK = "ok"
    EXCEPTION = "exception"  # the decoder raised; type and message are kept
    CRASH = "crash"  # the decode process died (signal or exit code)
    TIMEOUT = "timeout"  # the decode missed its deadline and the worker was killed
    INVALID_OUTPUT = "invalid_output"  # NaN/inf, wrong shape, dtype or range
    FEC_FAILURE = "fec_failure"  # the FEC decoder declared a block uncorrectable

    @property
    def failed(self) -> bool:
        return self is not Status.OK


ALL_STATUSES: tuple[Status, ...] = tuple(Status)
