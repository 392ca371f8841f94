"""Options as frozen dataclasses: one place that turns user-given values into one, with one-line errors."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

T = TypeVar("T")


def build_options(cls: type[T], values: dict[str, Any], owner: str, noun: str, error: type[Exception]) -> T:
    """``cls(**values)``, raising ``error`` that names the unknown fields and the valid ones (a typo in a
    suite must not silently fall back to a default)."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise error(f"{owner}: unknown {noun}(s) {', '.join(unknown)}; valid: {', '.join(sorted(known)) or 'none'}")
    for name, value in values.items():
        if not is_finite_value(value):
            raise error(f"{owner}: {noun} {name} must be finite, got {value!r}")
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise error(f"{owner}: {exc}") from None


def is_finite_value(value: Any) -> bool:
    """False for a float NaN/inf anywhere in ``value`` (numbers, lists, tuples, dict values): no parameter
    of a codec, corruption, FEC layer or suite is meaningful at NaN or infinity, and NaN compares false with
    every range check, so it would slip through them."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(is_finite_value(v) for v in value)
    if isinstance(value, dict):
        return all(is_finite_value(v) for v in value.values())
    return True
