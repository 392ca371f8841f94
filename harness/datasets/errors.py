"""What the dataset contract (:mod:`harness.datasets.base`) and the image decoder
(:mod:`harness.datasets.decode`) both need, kept below both so neither imports the other to get it (the two
imported each other: issue #27, ``tests/test_imports.py``)."""

from __future__ import annotations

#: Images above this many pixels are refused before decoding (about 8192 x 8192), unless a suite raises it.
DEFAULT_MAX_PIXELS = 67_108_864


class DatasetError(ValueError):
    """A missing, changed or unreadable dataset or image (a user-facing, one-line error)."""
