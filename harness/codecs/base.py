"""The codec contract: encode once, then a decode split into an untrusted and a trusted half.

::

    image (uint8 HxWx3) --encode--> Bitstream(data, segments)           [trusted, runs once per image]
    bytes (maybe corrupted) --parse--> DecodedState {name: array}       [UNTRUSTED: isolated worker]
    DecodedState --reconstruct(state, seed, hook)--> uint8 image        [trusted, main process / GPU]

``parse`` is the only code that touches corrupted bytes, so it is the only code that must run in a
subprocess that may crash or hang. Whatever ``parse`` returns crosses a process boundary: keep it to
NumPy arrays and plain Python values.

Sizes read from untrusted bytes never reach an allocation unchecked: ``parse`` receives the original image's
``size`` and must refuse (``InvalidOutput``) a header that declares other dimensions before decoding anything,
and :meth:`Codec.parse_checked` (what the isolated worker calls) refuses a state larger than
:meth:`Codec.max_state_bytes`, so the main process never receives an array bigger than the expected output.

``reconstruct`` may return uint8 (decoders that produce integers) or float pixel values in [0, 255];
:meth:`Codec.decode_state` checks the float output (NaN/inf, range) *before* the cast, so a plugin cannot
turn NaN into plausible uint8 pixels.

Latent corruptions act at the codec's declared ``hooks``: ``reconstruct`` calls ``hook(name, array)`` at
each hook point (e.g. RDEIC's ``y_hat`` on entry, ``c_latent`` and ``guide_hint`` mid-way) and continues
with what it returns. The output has the codec's ``decoded_shape`` (padding included); the harness checks
it and crops to the original size before any metric.

The entropy side (``encode`` and ``parse``: every network whose output picks a symbol or a CDF) runs at a fixed
torch intra-op thread count, :data:`ENTROPY_THREADS`, whatever the machine offers: float reductions split over
another number of threads round differently, and a rounding that moves a scale across a CDF-table boundary or a
latent across a quantisation step changes the bytes (measured on RDEIC-tiny, before this pin: ``y_hat`` of every
bundled sample differed between 1, 2 and 4 threads, and two streams' bytes did). :meth:`Codec.encode_stream` and
:meth:`Codec.parse_checked` (what the harness calls, in the main process and in the decode workers) enter
:meth:`Codec.entropy_side`; the count is in the fingerprint of every codec that has one (:attr:`Codec.entropy_threads`)
and in the run's provenance. ``reconstruct`` (trusted, compared by tolerance) uses what the device offers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from harness.hashing import key_of
from harness.options import build_options

DecodedState = dict[str, Any]
#: ``hook(name, array) -> array``: called by ``reconstruct`` at each declared hook point.
LatentHook = Callable[[str, Any], Any]

#: Scopes every bitstream exposes; codecs may add named segments of their own.
BUILTIN_SCOPES = ("all", "payload", "header")
#: torch intra-op threads of every learned codec's entropy side (encode, parse), on every machine (module docstring).
ENTROPY_THREADS = 1


@contextlib.contextmanager
def pinned_torch_threads(threads: int) -> Iterator[None]:
    """Run the body at ``threads`` torch intra-op threads and give the process its own count back afterwards.
    Imports torch (a learned codec's entropy side needs it anyway); not thread-safe, like ``set_num_threads``
    itself: the harness runs torch in one thread of each process."""
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class CodecError(ValueError):
    """Bad codec options or an unusable input image (a user error, reported before any work)."""


class CodecUnusable(CodecError):
    """The codec itself cannot run (bad or missing weights, a broken native library): not a refusal of one
    image. Stops the run with one line instead of skipping every image."""


class InvalidOutput(Exception):
    """What a stream declares or decodes to is impossible for this codec config and image: other dimensions
    than the original's, a state larger than the output could need, NaN/inf or out-of-range pixels. Raised by
    ``parse`` (in the worker, before any allocation) or by ``decode_state``; recorded as ``invalid_output``."""


@dataclass(frozen=True)
class Bitstream:
    """The bytes a codec writes to a file, plus a map of named byte ranges.

    ``segments`` maps a name to a list of half-open ``(start, end)`` byte ranges. Every codec declares at
    least ``header`` (container and marker bytes) and ``payload`` (everything else); together they cover
    the file exactly once. Extra names (e.g. RDEIC's ``y``, ``z``) let a suite target one part.
    """

    data: bytes
    segments: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for required in ("header", "payload"):
            if required not in self.segments:
                raise CodecError(f"bitstream segment map lacks {required!r}")
        covered = np.zeros(len(self.data), dtype=np.int8)
        for start, end in self.segments["header"] + self.segments["payload"]:
            if not 0 <= start <= end <= len(self.data):
                raise CodecError(f"segment range {(start, end)} outside a {len(self.data)}-byte stream")
            covered[start:end] += 1
        if len(self.data) and not np.all(covered == 1):
            raise CodecError("header and payload segments must cover every byte exactly once")

    @property
    def header_bytes(self) -> int:
        return sum(end - start for start, end in self.segments["header"])

    def scope_names(self) -> tuple[str, ...]:
        extra = tuple(sorted(n for n in self.segments if n not in BUILTIN_SCOPES))
        return BUILTIN_SCOPES + extra

    def ranges(self, scope: str) -> tuple[tuple[int, int], ...]:
        """Byte ranges a channel may touch for ``scope`` (``all``, ``payload``, ``header`` or a segment)."""
        if scope == "all":
            return ((0, len(self.data)),)
        if scope not in self.segments:
            raise CodecError(f"scope {scope!r} unknown for this stream; known: {', '.join(self.scope_names())}")
        return self.segments[scope]

    def segments_json(self) -> dict[str, list[list[int]]]:
        return {name: [list(r) for r in ranges] for name, ranges in self.segments.items()}

    @classmethod
    def from_json(cls, data: bytes, segments: dict[str, list[list[int]]]) -> Bitstream:
        return cls(data, {name: tuple((int(a), int(b)) for a, b in r) for name, r in segments.items()})


@dataclass(frozen=True)
class CodecSpec:
    """What a worker process needs to build the same codec: an importable target and its options."""

    target: str
    options: dict[str, Any]


class Codec(ABC):
    """Base class of codec plugins.

    Subclasses set ``name``, ``version`` (bump it when the code changes what is written or decoded),
    ``Options`` (a dataclass: the codec's whole configuration) and optionally ``hooks``.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    hooks: ClassVar[tuple[str, ...]] = ()  # latent hook points (keys of the DecodedState)
    segments: ClassVar[tuple[str, ...]] = ()  # named byte segments beyond header/payload
    #: A clean round trip below this PSNR stops the suite (METHODOLOGY.md §4): the codec is broken.
    clean_psnr_floor_db: ClassVar[float] = 15.0
    #: Whether ``encode_at_rate`` is implemented (a suite may then match another codec's bpp per image).
    matches_rate: ClassVar[bool] = False
    #: Decoder-side information the codec uses, one name per kind (e.g. ``("stereo_right",)`` for distributed
    #: coding): the harness passes it to ``reconstruct`` from a trusted decoder-local channel, never from the
    #: bitstream. Codecs without any ignore the side-information axis.
    side_info: ClassVar[tuple[str, ...]] = ()
    #: torch intra-op threads ``encode`` and ``parse`` run at (:meth:`entropy_side`); ``None`` for codecs whose
    #: entropy side runs no torch network (JPEG2000). Part of the fingerprint when set.
    entropy_threads: ClassVar[int | None] = None

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, **options: Any) -> None:
        self.options = build_options(self.Options, options, self.name, "option", CodecError)

    def entropy_side(self) -> contextlib.AbstractContextManager[None]:
        """The context ``encode`` and ``parse`` run in: :attr:`entropy_threads` torch threads (or nothing to pin)."""
        if self.entropy_threads is None:
            return contextlib.nullcontext()
        return pinned_torch_threads(self.entropy_threads)

    # -- identity -------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The resolved options (defaults filled in): stored with every cell."""
        return dataclasses.asdict(self.options)

    def weights_hash(self) -> str | None:
        """Hash of the weights the codec runs with; ``None`` for codecs without weights."""
        return None

    def library_versions(self) -> dict[str, str]:
        """Versions of native libraries whose change can change bytes or decodes (part of the fingerprint)."""
        return {}

    def fingerprint(self) -> str:
        threads = {} if self.entropy_threads is None else {"entropy_threads": self.entropy_threads}
        return key_of(
            {
                "codec": self.name,
                "version": self.version,
                "config": self.config(),
                "weights": self.weights_hash(),
                "libraries": self.library_versions(),
            }
            | threads
        )

    def spec(self) -> CodecSpec:
        return CodecSpec(target=f"{type(self).__module__}:{type(self).__qualname__}", options=self.config())

    # -- the codec ------------------------------------------------------------------------------------------
    @abstractmethod
    def encode(self, image: np.ndarray) -> Bitstream:
        """Compress a uint8 HxWx3 image into the bytes of a file."""

    def encode_at_rate(self, image: np.ndarray, target_bpp: float) -> Bitstream:
        """Encode at a per-image target rate (bits per original pixel); codecs with ``matches_rate``."""
        raise CodecError(f"{self.name} cannot match a target rate per image")

    def encode_stream(self, image: np.ndarray, target_bpp: float | None = None) -> Bitstream:
        """What the harness encodes with: :meth:`encode` (or :meth:`encode_at_rate` at ``target_bpp``, bits per
        original pixel) inside :meth:`entropy_side`, so the bytes are the same on every machine."""
        with self.entropy_side():
            return self.encode(image) if target_bpp is None else self.encode_at_rate(image, target_bpp)

    @abstractmethod
    def parse(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        """Untrusted half of decoding: bytes (possibly corrupted) to decoded state. Runs isolated.

        ``size`` is the original image's (height, width): every dimension, count or length the stream
        declares must be checked against what it and the codec config allow *before* it sizes an allocation;
        raise :class:`InvalidOutput` for a stream that declares another image."""

    @abstractmethod
    def reconstruct(self, state: DecodedState, decode_seed: int, hook: LatentHook | None = None) -> np.ndarray:
        """Trusted half of decoding: state to the image of ``decoded_shape`` a user would see (uint8, or float
        pixel values in [0, 255] that :meth:`decode_state` checks and casts), passing each hook point's array
        through ``hook`` when given. A codec that declares :attr:`side_info` takes a fourth argument,
        ``side_info: dict[str, np.ndarray]`` (kind -> uint8 HxWx3 image, possibly degraded)."""

    #: How :meth:`decode_state` turns float pixel values into uint8: ``round`` (half to even) or ``truncate``.
    output_rounding: str = "round"

    def warm(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Load what ``parse`` needs (weights, native extensions) ahead of time. Decode workers call it when
        they build the codec, outside any cell's deadline, so a deadline measures parsing only."""

    def max_state_bytes(self, size: tuple[int, int]) -> int:
        """Upper bound on the bytes of the arrays ``parse`` may return for an original of ``size``: by default
        8 bytes per value of the decoded output (float64 of the whole padded image)."""
        return 8 * math.prod(self.decoded_shape(*size))

    def parse_checked(self, data: bytes, size: tuple[int, int]) -> DecodedState:
        """``parse`` (inside :meth:`entropy_side`) plus the size guard the isolated worker applies before a state
        crosses to the main process: a state larger than :meth:`max_state_bytes` is refused (``InvalidOutput``)."""
        with self.entropy_side():
            state = self.parse(data, size)
        total = sum(v.nbytes for v in state.values() if isinstance(v, np.ndarray))
        limit = self.max_state_bytes(size)
        if total > limit:
            raise InvalidOutput(
                f"decoded state of {total} bytes exceeds the {limit} bytes an image of {size[0]}x{size[1]} allows"
            )
        return state

    def decode_state(
        self,
        state: DecodedState,
        decode_seed: int,
        hook: LatentHook | None = None,
        size: tuple[int, int] | None = None,
        side_info: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """``reconstruct`` plus the output checks every plugin gets: float output must be finite and within
        [0, 255] before it is cast (with :attr:`output_rounding`), the result must be uint8 of
        ``decoded_shape(*size)`` when ``size`` is given. Raises :class:`InvalidOutput` otherwise. ``side_info``
        is passed on only to codecs that declare :attr:`side_info` (and must then hold every declared kind)."""
        if self.side_info:
            missing = [k for k in self.side_info if k not in (side_info or {})]
            if missing:
                raise ValueError(f"{self.name} needs decoder-side information {missing}; none was given")
            out = self.reconstruct(state, decode_seed, hook, side_info)  # type: ignore[call-arg]
        else:
            out = self.reconstruct(state, decode_seed, hook)
        return to_output(out, self.output_rounding, self._shape(size))

    def decode_batch(
        self,
        states: list[DecodedState],
        decode_seeds: list[int],
        hooks: list[LatentHook | None],
        size: tuple[int, int],
        side_infos: list[dict[str, np.ndarray] | None] | None = None,
    ) -> list[np.ndarray | Exception]:
        """Several cells' states of one image size at once (GPU throughput): per item, the checked uint8 image
        or the exception its decode raised. Each item keeps its own decode seed and hook, so the result equals
        decoding the items one by one. This default decodes them one by one; a codec that can batch on its
        device overrides it (RDEIC on CUDA)."""
        side_infos = side_infos or [None] * len(states)
        out: list[np.ndarray | Exception] = []
        for state, seed, hook, side in zip(states, decode_seeds, hooks, side_infos, strict=True):
            try:
                out.append(self.decode_state(state, seed, hook, size=size, side_info=side))
            except Exception as exc:  # one item's failure is that item's status
                out.append(exc)
        return out

    def batch_memory_bytes(self, height: int, width: int) -> int | None:
        """Estimated accelerator memory one more item of a batch needs (``None``: unknown, batch size 1 unless
        asked). Used to choose a batch size from free memory."""
        return None

    def _shape(self, size: tuple[int, int] | None) -> tuple[int, ...] | None:
        return None if size is None else self.decoded_shape(*size)

    def stage_timings(self) -> dict[str, float]:
        """Seconds per stage of the latest ``reconstruct`` (e.g. each denoising step), stored with the cell."""
        return {}

    def decoded_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape ``reconstruct`` returns for an original of ``height`` x ``width`` (codecs that pad say so)."""
        return (height, width, 3)

    def decode(
        self, data: bytes, size: tuple[int, int], decode_seed: int = 0, side_info: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Both halves in-process (checked uint8 of ``decoded_shape(*size)``): only for bytes the harness
        produced itself (clean streams)."""
        return self.decode_state(self.parse_checked(data, size), decode_seed, size=size, side_info=side_info)


def package_versions(*packages: str) -> dict[str, str]:
    """Installed versions of ``packages`` ("absent" for one that is not installed), for ``library_versions``."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in packages:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


class LearnedCodec(Codec):
    """A codec whose networks come from weight files (RDEIC, LDM-RSIC, DICM and their variants).

    The options that name files (``path_options``) stay out of :meth:`config`, so a run moved to another folder
    keeps its cell keys: the files' content is in :meth:`weights_hash`. They stay in :meth:`spec`, because a
    worker must open the same files. ``libraries``: the packages whose versions can change bytes or decodes.
    ``reconstruct`` records its per-stage seconds in ``last_timings``.
    """

    path_options: ClassVar[tuple[str, ...]] = ()
    libraries: ClassVar[tuple[str, ...]] = ("torch",)
    entropy_threads: ClassVar[int | None] = ENTROPY_THREADS
    last_timings: dict[str, float]

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self.options).items() if k not in self.path_options}

    def spec(self) -> CodecSpec:
        return CodecSpec(f"{type(self).__module__}:{type(self).__qualname__}", dataclasses.asdict(self.options))

    def library_versions(self) -> dict[str, str]:
        return package_versions(*self.libraries)

    def stage_timings(self) -> dict[str, float]:
        return dict(getattr(self, "last_timings", {}))


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an input image and return it as contiguous uint8 HxWx3 (the harness's image type)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__), getattr(image, "dtype", "")
        raise CodecError(f"expected a uint8 HxWx3 image, got {got}")
    return np.ascontiguousarray(image)


def check_output(image: object, shape: tuple[int, ...] | None) -> str | None:
    """Why a reconstruction is not a valid image of ``shape`` (None when it is): the ``invalid_output``
    message. Decoders that "succeed" with garbage shapes or NaN are failures, not low-quality successes."""
    if not isinstance(image, np.ndarray):
        return f"reconstruct returned {type(image).__name__}, not an array"
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and not np.all(np.isfinite(image)):
            return f"non-finite values (NaN/inf) in a {image.dtype} output"
        return f"dtype {image.dtype}, expected uint8"
    if shape is not None and image.shape != shape:
        return f"shape {image.shape}, expected {shape}"
    return None


def to_output(image: object, rounding: str = "round", shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The uint8 image a user would see, from a plugin's uint8 or float [0, 255] output; raises
    :class:`InvalidOutput` for NaN/inf or out-of-range floats (checked *before* the cast: NaN cast to uint8 is
    an arbitrary plausible pixel), other dtypes, or a shape other than ``shape``."""
    if isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating):
        if not np.all(np.isfinite(image)):
            raise InvalidOutput(f"non-finite values (NaN/inf) in a {image.dtype} output")
        if image.size and (image.min() < 0 or image.max() > 255):
            raise InvalidOutput(f"pixel values outside [0, 255] ({image.min():.4g}..{image.max():.4g})")
        if rounding not in ("round", "truncate"):
            raise ValueError(f"output rounding must be round or truncate, got {rounding!r}")
        image = (np.round(image) if rounding == "round" else image).astype(np.uint8)  # astype truncates
    problem = check_output(image, shape)
    if problem:
        raise InvalidOutput(problem)
    return image  # type: ignore[return-value]


def create_codec(name: str, **overrides: Any) -> Codec:
    """Build a registered codec or preset; ``None`` overrides are dropped so the defaults hold."""
    from harness.registry import CODECS, Preset

    target = CODECS.get(name)
    options = {k: v for k, v in overrides.items() if v is not None}
    if isinstance(target, Preset):
        return create_codec(target.codec, **{**target.options, **options})
    return target(**options)
