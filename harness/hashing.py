"""Content hashes and canonical JSON: every cache and cell key in the harness is built here."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_FILE_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, memoised per (resolved path, size, mtime): weight files take seconds to
    hash (5 GB). Raises ``OSError`` (no file, a folder): harness.codecs.checkpoints describes files first."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        _FILE_SHA256[key] = h.hexdigest()
    return _FILE_SHA256[key]


def pixels_sha256(image: np.ndarray) -> str:
    """sha256 of the decoded uint8 pixels in C order (the form dataset cards record). The same picture
    re-encoded as another file format keeps its hash; cell keys add the shape beside it."""
    return hashlib.sha256(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


def _normalise(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalise(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, np.generic):
        return _normalise(value.item())
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return repr(value)
        # repr round-trips exactly; 1e-3 and 0.001 give the same key.
        return float(repr(value))
    return value


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace) used as hash input."""
    return json.dumps(_normalise(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def key_of(value: Any) -> str:
    return sha256_bytes(canonical_json(value).encode())
