"""Seeded train / val / test partitions for datasets without an official split (TU-Berlin, Galaxy10, the offline
stand-ins, a user's folder), so that fine-tuning never sees an image it is evaluated on.

A partition is decided per image from a hash of (seed, pixel sha256) when the index knows it, else of
(seed, dataset, id), within each class label (stratified, like :func:`harness.datasets.base.stratified_subset`):
the same image always lands in the same part, however the folder is ordered or grows, and a class-sorted file
gives every part its share of every class. Parts are disjoint and cover the index.

Suite syntax (``[[datasets]]``)::

    partition = { take = "test", train = 0.6, val = 0.2, test = 0.2, seed = 0 }
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from harness.datasets.base import DatasetError, ImageEntry
from harness.hashing import key_of


@dataclass(frozen=True)
class Partition:
    """Which part to take, and the fractions of every part (in order, summing to 1)."""

    take: str
    fractions: tuple[tuple[str, float], ...]
    seed: int = 0

    @classmethod
    def from_table(cls, raw: dict[str, Any], where: str = "partition") -> Partition:
        if not isinstance(raw, dict):
            raise DatasetError(f"{where}: expected e.g. {{ take = 'test', train = 0.6, val = 0.2, test = 0.2 }}")
        take, seed = raw.get("take"), raw.get("seed", 0)
        parts = {k: v for k, v in raw.items() if k not in ("take", "seed")}
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise DatasetError(f"{where}.seed: expected an integer, got {seed!r}")
        bad = {k: v for k, v in parts.items() if isinstance(v, bool) or not isinstance(v, int | float) or v < 0}
        if bad or not parts:
            raise DatasetError(f"{where}: every part needs a fraction >= 0 (got {parts!r})")
        total = sum(parts.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise DatasetError(f"{where}: fractions must sum to 1, got {total:g} ({parts!r})")
        if take not in parts:
            raise DatasetError(f"{where}.take: must name one of the parts {', '.join(parts)}, got {take!r}")
        return cls(str(take), tuple((str(k), float(v)) for k, v in parts.items()), seed)

    def with_take(self, take: str) -> Partition:
        if take not in dict(self.fractions):
            raise DatasetError(f"partition has no part {take!r}; it has {', '.join(n for n, _ in self.fractions)}")
        return Partition(take, self.fractions, self.seed)

    def describe(self) -> dict[str, Any]:
        method = "per class label, ranked by sha256(seed, pixel sha256 | dataset/id), cut by fractions"
        # a list, not a table: the order of the parts decides where each one is cut (and JSON may sort keys)
        fractions = [[name, frac] for name, frac in self.fractions]
        return {"take": self.take, "fractions": fractions, "seed": self.seed, "method": method}

    def split(self, entries: list[ImageEntry]) -> dict[str, list[ImageEntry]]:
        """Every part (sorted by id). Each image gets its quantile within its class ((i + ½) / n by rank); all
        images are ordered by (quantile, rank) and cut at round(cumulative fraction x N). Large classes are thus
        split in proportion, and many tiny classes (one image each: the sketch stand-in) still fill every part."""

        def rank(e: ImageEntry) -> str:
            if e.sha256:
                return key_of({"partition_seed": self.seed, "image": e.sha256})
            return key_of({"partition_seed": self.seed, "dataset": e.dataset, "id": e.id})

        strata: dict[str, list[ImageEntry]] = {}
        for e in entries:
            strata.setdefault("" if e.label is None else str(e.label), []).append(e)
        keyed = []
        for members in strata.values():
            ordered = sorted(members, key=rank)
            keyed += [((i + 0.5) / len(ordered), rank(e), e) for i, e in enumerate(ordered)]
        keyed.sort(key=lambda t: t[:2])
        out: dict[str, list[ImageEntry]] = {}
        cum, start = 0.0, 0
        for name, frac in self.fractions:
            cum += frac
            end = round(cum * len(keyed))
            out[name] = sorted((e for _, _, e in keyed[start:end]), key=lambda e: e.id)
            start = end
        return out

    def apply(self, entries: list[ImageEntry]) -> list[ImageEntry]:
        return self.split(entries)[self.take]
