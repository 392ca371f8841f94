"""Encode once: the clean stream and the clean decodes of every (image, codec config), before any cell.

::

    for each chosen image, for each codec config (rate references first):
        cache hit? ─> reuse           else: encode (or encode_at_rate(reference's bpp)) ─> cache/<encode key>/
        clean decode per decode seed (in-process: our own bytes) ─> cache/.../clean-<seed>.npy
        clean-round-trip control: valid image of the right shape, PSNR above the floor, or stop (ControlError)

An image a codec refuses at encode time (a rate it cannot reach, a side too small for its tiles) is recorded
as skipped with the codec and the reason, and left out for *every* codec config, so all configs rest on the
same images; the run goes on. A rate-matched config stores the options it was actually encoded with for that
image (its per-image ``target_bpp``) beside the stream. Encoding goes through ``Codec.encode_stream`` and the clean
decode's parse through ``Codec.parse_checked``: both at the codec's fixed entropy-side thread count, so the bytes
and the parsed state are those of any other machine (harness/codecs/base.py).

With a worker pool (issue #25) the encodes run there, one image per task: the image's whole chain of configs that
still need a stream (a rate-matched config right after its reference, so the JPEG2000 rate bisection meets the
reference's bytes in the same worker) is one task, ``2 x workers`` tasks in flight, so ``--workers N`` encodes on N
cores while the main process stores the streams and makes the clean decodes of the images already encoded. The
bytes are those the main process would write (same code, same pinned entropy-side threads); results are taken in
plan order, so the skipped images and the cache are the same as without a pool.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.cache import ArtifactCache, Encoded
from harness.cells import Cell, encode_key
from harness.codecs.base import CodecError, CodecUnusable, InvalidOutput
from harness.metrics import measure
from harness.planning import Plan


class ControlError(RuntimeError):
    """A control of METHODOLOGY.md §4 failed: the suite stops instead of producing a table."""


@dataclass
class Artifacts:
    """Everything a cell of one (image, codec) needs besides its own corruption."""

    original: np.ndarray
    encoded: Encoded
    clean: dict[int, np.ndarray]  # decode seed -> clean decode (cropped to the original size)
    clean_metrics: dict[int, dict[str, float]]
    #: the true side images by kind (codecs with decoder-side information; the clean decode used them)
    side: dict[str, np.ndarray] = field(default_factory=dict)


class ArtifactSource:
    """Encoded streams and clean decodes, from the run's cache (built by :meth:`prepare`), with a small LRU of
    loaded artifacts for the cells in flight."""

    def __init__(self, plan: Plan, cache: ArtifactCache, floor_db: float | None, keep: int = 16) -> None:
        self.plan = plan
        self.cache = cache
        self.floor_db = floor_db  # the suite's clean-PSNR floor (None: each codec's own)
        self.keep = keep
        self._loaded: OrderedDict[str, Artifacts] = OrderedDict()

    # -- encode once ----------------------------------------------------------------------------------------
    def _key(self, sha: str, height: int, width: int, prep: str, label: str) -> str:
        return encode_key(sha, height, width, prep, self.plan.fingerprints[label])

    def encoded(self, sha: str, height: int, width: int, prep: str, label: str, original: np.ndarray) -> Encoded:
        """The cached stream of an image under codec ``label``, encoding it once; a rate-matched config first
        gets its reference's stream and encodes at that bpp. Raises CodecError when the codec refuses."""
        key = self._key(sha, height, width, prep, label)
        encoded = self.cache.load_encoded(key)
        if encoded is not None:
            return encoded
        codec = self.plan.codecs[label]
        ref = self.plan.rate_refs.get(label)
        t0 = time.perf_counter()
        if ref is None:
            bitstream, resolved = codec.encode_stream(original), {}
        else:
            target = 8.0 * len(self.encoded(sha, height, width, prep, ref, original).bitstream.data) / (height * width)
            t0 = time.perf_counter()
            bitstream, resolved = codec.encode_stream(original, target), {"target_bpp": target}
        return self.cache.store_encoded(key, bitstream, time.perf_counter() - t0, codec, resolved)

    def _chain(self, entry: Any, prep: str, labels: list[str]) -> list[tuple[str, str | None]]:
        """The configs of ``labels`` whose stream of ``entry`` is not cached, each preceded by its rate reference
        when that is not cached either: (label, reference label or None), in encode order."""
        chain: list[tuple[str, str | None]] = []

        def add(label: str) -> None:
            if any(label == c for c, _ in chain):
                return
            if self.cache.load_encoded(self._key(entry.sha256, entry.height, entry.width, prep, label)) is not None:
                return
            ref = self.plan.rate_refs.get(label)
            if ref is not None:
                add(ref)
            chain.append((label, ref))

        for label in labels:
            add(label)
        return chain

    def _encode_in(self, pool: Any, ds: Any, entry: Any, prep: str, labels: list[str]) -> tuple[Any, Future] | None:
        """Submit ``entry``'s encode chain to ``pool`` (None when every stream is cached)."""
        chain = self._chain(entry, prep, labels)
        if not chain:
            return None
        pos = {label: i for i, (label, _) in enumerate(chain)}
        specs, refs, targets = [], [], []
        for label, ref in chain:
            specs.append(self.plan.codecs[label].spec())
            refs.append(pos.get(ref) if ref is not None else None)
            target = None
            if ref is not None and ref not in pos:  # the reference's stream is cached: its bpp is known here
                data = self.encoded(entry.sha256, entry.height, entry.width, prep, ref, None).bitstream.data
                target = 8.0 * len(data) / (entry.height * entry.width)
            targets.append(target)
        original = ds.load(entry)
        return (chain, original), pool.submit_encode(specs, refs, targets, original)

    def _store_chain(self, entry: Any, prep: str, chain: list[tuple[str, str | None]], outcome: Any) -> str | None:
        """Put a worker's encodes into the cache; returns the refusal (CodecError) of the chain, if any. Raises
        CodecUnusable, or ControlError when the worker failed otherwise."""
        from harness.codecs.base import Bitstream
        from harness.status import Status

        if outcome.status is not Status.OK:
            raise ControlError(f"encoding {entry.id} in a worker failed: {outcome.error_type}: {outcome.error_message}")
        result = outcome.state
        for (label, _), (data, segments, resolved, seconds) in zip(chain, result["streams"], strict=False):
            key = self._key(entry.sha256, entry.height, entry.width, prep, label)
            self.cache.store_encoded(
                key, Bitstream.from_json(data, segments), seconds, self.plan.codecs[label], resolved
            )
        if result["error"] is None:
            return None
        kind, etype, message = result["error"]
        if kind == "unusable":
            raise CodecUnusable(message)
        if kind == "failed":
            raise ControlError(
                f"encoding {entry.id} under {chain[len(result['streams'])][0]} failed: {etype}: {message}"
            )
        return message

    def prepare(self, labels: list[str], progress: Any = None, pool: Any = None) -> list[dict[str, Any]]:
        """Encode every chosen image under every config in ``labels`` and make its clean decodes, checking the
        clean round trip. Returns the images refused at encode time (skipped for every config). With ``pool`` (a
        :class:`harness.workers.WorkerPool`) the encodes run in its workers, one image per task (module docstring);
        the clean decodes stay here."""
        if pool is not None:
            return self._prepare_pooled(labels, progress, pool)
        skipped: list[dict[str, Any]] = []
        for ds, entry, prep in self.plan.chosen:
            original = None
            for label in labels:
                key = self._key(entry.sha256, entry.height, entry.width, prep, label)
                if self.cache.load_encoded(key) is not None and all(
                    self.cache.has_clean(key, s) for s in self.plan.decode_seeds
                ):
                    continue
                original = ds.load(entry) if original is None else original
                try:
                    encoded = self.encoded(entry.sha256, entry.height, entry.width, prep, label, original)
                except CodecUnusable:
                    raise
                except CodecError as exc:
                    skipped.append(_encode_refusal(ds, entry, label, str(exc)))
                    break
                side = self._side(ds, entry, label)
                for seed in self.plan.decode_seeds:
                    self._clean(key, seed, label, entry, encoded, original, side)
            if progress is not None:
                progress.update(1)
        return skipped

    def _prepare_pooled(self, labels: list[str], progress: Any, pool: Any) -> list[dict[str, Any]]:
        skipped: list[dict[str, Any]] = []
        window = 2 * pool.size
        inflight: OrderedDict[int, tuple[Any, Any, str, tuple[Any, Future] | None]] = OrderedDict()

        def finish(ds: Any, entry: Any, prep: str, job: tuple[Any, Future] | None) -> None:
            if job is not None:
                (chain, _original), future = job
                refusal = self._store_chain(entry, prep, chain, future.result())
                if refusal is not None:
                    label = chain[len(future.result().state["streams"])][0]
                    skipped.append(_encode_refusal(ds, entry, label, refusal))
                    if progress is not None:
                        progress.update(1)
                    return
            original = job[0][1] if job is not None else None  # the image the worker encoded
            for label in labels:
                key = self._key(entry.sha256, entry.height, entry.width, prep, label)
                if all(self.cache.has_clean(key, s) for s in self.plan.decode_seeds):
                    continue
                original = ds.load(entry) if original is None else original
                encoded = self.encoded(entry.sha256, entry.height, entry.width, prep, label, original)
                side = self._side(ds, entry, label)
                for seed in self.plan.decode_seeds:
                    self._clean(key, seed, label, entry, encoded, original, side)
            if progress is not None:
                progress.update(1)

        for i, (ds, entry, prep) in enumerate(self.plan.chosen):
            inflight[i] = (ds, entry, prep, self._encode_in(pool, ds, entry, prep, labels))
            while len(inflight) > window:
                finish(*inflight.popitem(last=False)[1])
        while inflight:
            finish(*inflight.popitem(last=False)[1])
        return skipped

    def _side(self, ds: Any, entry: Any, label: str) -> dict[str, np.ndarray]:
        """The true side images of ``entry`` for codec ``label`` (none for codecs without side information)."""
        return {kind: ds.load_side(entry, kind) for kind in self.plan.codecs[label].side_info}

    def _clean(
        self,
        key: str,
        seed: int,
        label: str,
        entry: Any,
        encoded: Encoded,
        original: np.ndarray,
        side: dict[str, np.ndarray],
    ) -> np.ndarray:
        image = self.cache.load_clean(key, seed)
        if image is not None:
            return image
        codec = self.plan.codecs[label]
        size = (entry.height, entry.width)
        try:
            image = codec.decode(encoded.bitstream.data, size, seed, side_info=side or None)
        except InvalidOutput as exc:
            raise ControlError(f"{label} on {entry.id}: clean decode is invalid: {exc}") from None
        except CodecError:
            raise
        except Exception as exc:  # its own clean stream: a broken codec, said in one line (METHODOLOGY.md §4)
            raise ControlError(f"{label} on {entry.id}: clean decode failed: {type(exc).__name__}: {exc}") from None
        image = np.ascontiguousarray(image[: entry.height, : entry.width])
        self.check_floor(label, entry.id, image, original)
        self.cache.store_clean(key, seed, image)
        return image

    def check_floor(self, label: str, image_id: str, image: np.ndarray, original: np.ndarray) -> dict[str, float]:
        """METHODOLOGY.md §4: a clean round trip far below the codec's expected quality stops the suite."""
        codec = self.plan.codecs[label]
        metrics = measure(self.plan.metrics, image, original)  # a metric that cannot score this image: NaN
        psnr = metrics.get("psnr")
        floor, whose = codec.clean_psnr_floor_db, "codec's"
        if self.floor_db is not None and floor != -math.inf:
            floor, whose = self.floor_db, "suite's"
        if psnr is not None and psnr < floor:
            raise ControlError(
                f"{label} on {image_id}: clean round trip gives {psnr:.2f} dB PSNR, below the {whose} floor of "
                f"{floor} dB; refusing to build a table on a broken codec"
            )
        return metrics

    # -- per cell -------------------------------------------------------------------------------------------
    def get(self, cell: Cell) -> Artifacts:
        key = cell.encode_key
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        ds, entry = self.plan.images[cell.image_sha256]
        original = ds.load(entry)
        label = self.plan.label_of(cell.codec_fingerprint)
        encoded = self.encoded(cell.image_sha256, cell.height, cell.width, cell.preprocessing, label, original)
        clean, clean_metrics = {}, {}
        side = self._side(ds, entry, label)
        for seed in self.plan.decode_seeds:
            clean[seed] = self._clean(key, seed, label, entry, encoded, original, side)
            clean_metrics[seed] = self.check_floor(label, entry.id, clean[seed], original)
        art = Artifacts(original, encoded, clean, clean_metrics, side)
        self._loaded[key] = art
        while len(self._loaded) > self.keep:
            self._loaded.popitem(last=False)
        return art


def _encode_refusal(ds: Any, entry: Any, label: str, error: str) -> dict[str, Any]:
    """The record of an image skipped because codec ``label`` refused to encode it (provenance's skipped list),
    the same from the in-process and the pooled encode phase."""
    where = {"dataset": ds.name, "id": entry.id, "sha256": entry.sha256}
    return {**where, "stage": "encode", "codec": label, "error": error}
