"""Options as frozen dataclasses: one place that turns user-given values into one, with one-line errors."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def build_options(cls: type[T], values: dict[str, Any], owner: str, noun: str, error: type[Exception]) -> T:
    """``cls(**values)``, raising ``error`` that names the unknown fields and the valid ones (a typo in a
    suite must not silently fall back to a default)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"{owner}: unknown {noun}(s) {', '.join(unknown)}; valid: {', '.join(sorted(known)) or 'none'}")
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise error(f"{owner}: {exc}") from None
