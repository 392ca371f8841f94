"""Results store: one SQLite file per run directory (stdlib ``sqlite3``, WAL journal).

Each finished cell is written in one transaction together with its decode record, so ``kill -9`` at any
moment loses at most the cells in flight and never leaves a half-written row. Re-running resumes: cells
whose key is present are skipped. Decodes are memoised by what was decoded (codec fingerprint, stream
hash, decode seed), so identical corrupted streams are decoded once, across resumes too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (
    recorded_at TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (recorded_at, key));
CREATE TABLE IF NOT EXISTS decodes (
    decode_key TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    output_sha256 TEXT,
    metrics TEXT NOT NULL,
    parse_s REAL,
    reconstruct_s REAL,
    metrics_s REAL,
    wall_s REAL,
    timings TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    key TEXT PRIMARY KEY,
    dataset TEXT NOT NULL, dataset_version TEXT NOT NULL, image_id TEXT NOT NULL, image_sha256 TEXT NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL, preprocessing TEXT NOT NULL,
    codec TEXT NOT NULL, codec_label TEXT NOT NULL, codec_config TEXT NOT NULL,
    codec_fingerprint TEXT NOT NULL, codec_name TEXT NOT NULL, codec_options TEXT NOT NULL, rate_of TEXT,
    weights_hash TEXT,
    corruption TEXT NOT NULL, params TEXT NOT NULL, level TEXT NOT NULL, scope TEXT NOT NULL, fec TEXT, side TEXT,
    suite_seed INTEGER NOT NULL, replicate INTEGER NOT NULL, decode_seed INTEGER NOT NULL,
    status TEXT NOT NULL, error_type TEXT, error_message TEXT,
    bytes_total INTEGER NOT NULL, bytes_header INTEGER NOT NULL, bpp REAL NOT NULL, header_bpp REAL NOT NULL,
    padded_bpp REAL NOT NULL,
    bits_exposed INTEGER NOT NULL, expected_flips REAL NOT NULL, actual_flips INTEGER NOT NULL,
    p_error_free REAL NOT NULL, channel TEXT NOT NULL,
    fec_overhead_bpp REAL NOT NULL, residual_flips INTEGER,
    stream_sha256 TEXT NOT NULL, decode_key TEXT NOT NULL REFERENCES decodes(decode_key),
    memoised INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    corrupt_s REAL, encode_s REAL,
    finished_at TEXT NOT NULL);
"""


def _dumps(value: Any) -> str:
    # Infinity is valid Python JSON; PSNR of identical images is +inf and must not be dropped.
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class DecodeRecord:
    decode_key: str
    status: str
    error_type: str | None
    error_message: str | None
    output_sha256: str | None
    metrics: dict[str, float]
    parse_s: float = 0.0
    reconstruct_s: float = 0.0
    metrics_s: float = 0.0
    wall_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # codec stages (entropy decode, each step, VAE)


class StoreError(RuntimeError):
    """A results store this harness cannot use as it is (damaged, another schema): one line, exit 2."""


class ResultStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise  # read-only, disk full, locked: not damage (the CLI maps the file-system ones)
            raise StoreError(
                f"{self.path} is not a readable results store ({exc}); it is left as it is: move it away to keep "
                "it, or run with --fresh (discards it and the cache) or another --out"
            ) from None
        if found is None:
            self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif int(found[0]) != SCHEMA_VERSION:
            self._db.close()
            raise StoreError(
                f"{self.path} has schema version {found[0]}, this harness writes {SCHEMA_VERSION}; "
                "use --fresh or another --out"
            )

    def close(self) -> None:
        self._db.close()

    # -- writes -------------------------------------------------------------------------------------------
    def record_provenance(self, recorded_at: str, values: dict[str, Any]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO provenance VALUES (?, ?, ?)",
                [(recorded_at, k, v if isinstance(v, str) else _dumps(v)) for k, v in values.items()],
            )

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def write_cell(self, cell: dict[str, Any], decode: DecodeRecord, new_decode: bool) -> None:
        """One transaction: the decode record (if new) and the cell row."""
        with self._transaction():
            if new_decode:
                self._db.execute(
                    "INSERT OR IGNORE INTO decodes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        decode.decode_key,
                        decode.status,
                        decode.error_type,
                        decode.error_message,
                        decode.output_sha256,
                        _dumps(decode.metrics),
                        decode.parse_s,
                        decode.reconstruct_s,
                        decode.metrics_s,
                        decode.wall_s,
                        _dumps(decode.timings),
                    ),
                )
            row = dict(cell)
            for name in ("codec_config", "codec_options", "params", "fec", "side", "metrics", "channel"):
                row[name] = None if name == "side" and row[name] is None else _dumps(row[name])
            columns = ",".join(row)
            self._db.execute(f"INSERT INTO cells ({columns}) VALUES ({','.join('?' * len(row))})", tuple(row.values()))

    def _transaction(self) -> _Tx:
        return _Tx(self._db)

    # -- reads --------------------------------------------------------------------------------------------
    def done_keys(self) -> set[str]:
        return {k for (k,) in self._db.execute("SELECT key FROM cells")}

    def decode(self, decode_key: str) -> DecodeRecord | None:
        row = self._db.execute("SELECT * FROM decodes WHERE decode_key = ?", (decode_key,)).fetchone()
        if row is None:
            return None
        return DecodeRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), *row[6:10], json.loads(row[10]))

    def cells_frame(self, keys: Iterable[str] | None = None) -> pd.DataFrame:
        """Cells (optionally restricted to ``keys``) with metrics expanded to columns ``metric.<name>``."""
        df = pd.read_sql_query("SELECT * FROM cells ORDER BY key", self._db)
        if keys is not None:
            df = df[df["key"].isin(set(keys))].reset_index(drop=True)
        metrics = pd.json_normalize([json.loads(m) for m in df["metrics"]]) if len(df) else pd.DataFrame()
        metrics = metrics.rename(columns=lambda c: f"metric.{c}").astype(float)
        metrics.index = df.index
        return pd.concat([df.drop(columns=["metrics"]), metrics], axis=1)

    def provenance(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM provenance ORDER BY recorded_at"))


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
