"""The dataset contract: an index of images (cheap), then decoding one image to uint8 RGB with documented
conversions, and the sha256 of those pixels (what cells are keyed by; never the file name).

::

    Dataset.index()  -> [ImageEntry]      sorted, cheap: ids, labels, splits (sha256 "" until decoded)
    Dataset.read(e)  -> uint8 HxWx3       decode_image(): the conversions below, or DatasetError
    Dataset.decode(e) -> Decoded          pixels + conversion + EXIF orientation applied
    Dataset.resolve(e) -> ImageEntry       + sha256 of the decoded pixels, width, height, conversion, orientation
    Dataset.load(e)  -> uint8 HxWx3       read + check the pixels still hash to e.sha256

Conversions applied by :func:`decode_image` follow what the file declares (mode, bit depth, maxval, alpha,
orientation tag), never its pixel values; the rules are tabled in :mod:`harness.datasets.decode`. In short:
N-bit samples -> round(v*255/(2**N-1)) (PGM/PPM: the header's maxval), never truncated; gray and bilevel
replicated; palette through the palette; alpha composited on white; CMYK, YCbCr, LAB, HSV by Pillow; float and
signed samples refused; EXIF orientation applied for every format. The steps are recorded in
``ImageEntry.conversion`` and the applied orientation in ``ImageEntry.orientation``.

Empty, truncated and unreadable files, and images above ``max_pixels`` (checked from the header before
decoding; it also sets Pillow's own decompression-bomb limit for the call), are a :class:`DatasetError` for that
image; loaders and the runner record it and go on with the rest.
"""

from __future__ import annotations

import inspect
import os
import tomllib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

# defined below this module and decode.py (which imported each other for them); importable from here as before
from harness.datasets.errors import DEFAULT_MAX_PIXELS, DatasetError
from harness.hashing import key_of, pixels_sha256

if TYPE_CHECKING:
    from harness.datasets.decode import Decoded

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")


def data_root() -> Path:
    """The folder holding dataset cards and bundled samples (``$HARNESS_DATA_DIR`` overrides)."""
    env = os.environ.get("HARNESS_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "datasets"


def cards_root() -> Path:
    """Where the dataset cards live: ``$HARNESS_DATA_DIR`` if it has them, else the repository's ``datasets/``."""
    root = data_root()
    return root if any(root.glob("*.toml")) else Path(__file__).resolve().parent.parent.parent / "datasets"


def cache_root() -> Path:
    """Where ``evaluate.py datasets fetch`` puts downloads: ``$HARNESS_CACHE_DIR`` or ``~/.cache/codec-harness``."""
    env = os.environ.get("HARNESS_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "codec-harness"
    return base / "datasets"


def read_card(name: str) -> dict[str, Any]:
    path = cards_root() / f"{name}.toml"
    if not path.is_file():
        raise DatasetError(f"dataset card {path} is missing")
    with open(path, "rb") as fh:
        return tomllib.load(fh)


@dataclass(frozen=True)
class ImageEntry:
    dataset: str
    split: str
    id: str  # path relative to the dataset root (posix), or a zero-padded row index
    sha256: str  # of the decoded uint8 RGB pixels ("" in an index before decoding)
    width: int
    height: int
    path: str  # the file, or the container (zip, parquet, HDF5) holding it
    label: str | None = None
    index: int | None = None  # row in an indexed container (HDF5, parquet, hub split)
    conversion: str = ""  # documented conversion applied when decoding (see decode_image)
    preprocessing: str = "none"  # canonical policy when this entry is a prepared image
    original_sha256: str | None = None  # the decoded pixels before preprocessing (None: same as sha256)
    original_width: int | None = None
    original_height: int | None = None
    orientation: int | None = None  # EXIF orientation applied when decoding (1 = none); None: not decoded here
    #: decoder-side images (kind -> a locator :meth:`Dataset.load_side` understands, e.g. the other stereo view's
    #: file). Not part of ``sha256`` or of anything keyed by the primary image: a cell that uses side information
    #: keys it by the side image's own pixel hash and its degradation.
    side: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def original_size(self) -> tuple[int, int]:
        """(width, height) of the decoded image before any preprocessing."""
        return (self.original_width or self.width, self.original_height or self.height)

    def record(self) -> dict[str, Any]:
        """What a run records about this image (provenance)."""
        row: dict[str, Any] = {
            "id": self.id,
            "split": self.split,
            "label": self.label,
            "sha256": self.sha256,
            "size": [self.width, self.height],
            "original_sha256": self.original_sha256 or self.sha256,
            "original_size": list(self.original_size),
        }
        if self.index is not None:
            row["index"] = self.index
        if self.conversion:
            row["conversion"] = self.conversion
        if self.orientation is not None:
            row["orientation"] = self.orientation
        if self.side:
            row["side"] = dict(self.side)
        return row


def decode_image(
    source: str | Path | bytes, name: str = "", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, str]:
    """Decode a file path or encoded bytes to uint8 HxWx3 plus the conversion applied ("" if none); see
    :func:`harness.datasets.decode.decode` for the orientation too."""
    from harness.datasets.decode import decode

    decoded = decode(source, name, max_pixels)
    return decoded.pixels, decoded.conversion


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 HxWx3 (conversions as in :func:`decode_image`), clear error when broken."""
    return decode_image(path)[0]


class Dataset(ABC):
    """Base class of dataset loaders. Subclasses implement :meth:`index` (cheap) and :meth:`read`."""

    name: str
    version: str
    #: True when the card pins every image's pixel hash: a mismatch is then a broken installation (stop),
    #: not a bad image in a user's folder (record and go on).
    pinned: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def index(self) -> list[ImageEntry]:
        """Every image of the selected split, sorted by id; ``sha256`` may be "" until :meth:`resolve`."""
        return self.entries()

    def entries(self) -> list[ImageEntry]:
        """Every image, decoded and hashed (a bad image raises :class:`DatasetError`)."""
        return [self.resolve(e) for e in self.index()]

    @abstractmethod
    def read(self, entry: ImageEntry) -> np.ndarray: ...

    def resolve(self, entry: ImageEntry) -> ImageEntry:
        """The entry with the sha256, size, conversion and orientation of its decoded pixels."""
        if entry.sha256:
            return entry
        return with_decoded(entry, self.decode(entry))

    def decode(self, entry: ImageEntry) -> Decoded:
        """The decoded pixels with the conversion and orientation applied (loaders that decode files override
        this; generated images have neither)."""
        from harness.datasets.decode import Decoded

        return Decoded(self.read(entry), entry.conversion, entry.orientation or 1)

    def read_with_conversion(self, entry: ImageEntry) -> tuple[np.ndarray, str]:
        decoded = self.decode(entry)
        return decoded.pixels, decoded.conversion

    def load(self, entry: ImageEntry) -> np.ndarray:
        image = self.read(entry)
        if pixels_sha256(image) != entry.sha256:
            raise DatasetError(
                f"{self.name}/{entry.id}: pixels do not match the recorded sha256; the file changed on disk"
            )
        return image

    def load_side(self, entry: ImageEntry, kind: str) -> np.ndarray:
        """The decoder-side image of ``kind`` for ``entry`` (uint8 HxWx3, the same conversion rules as the primary
        image), e.g. the other view of a stereo pair. Datasets without side images refuse in one line."""
        raise DatasetError(
            f"{self.name}: no decoder-side image {kind!r} for {entry.id} (this dataset provides none; stereo "
            "datasets such as kitti, cityscapes and standin_stereo do)"
        )

    def describe(self) -> dict[str, Any]:
        """What a run records about where the images came from."""
        return {"name": self.name, "version": self.version}


def with_decoded(entry: ImageEntry, decoded: Decoded) -> ImageEntry:
    """``entry`` with the hash, size, conversion and orientation of its decoded pixels."""
    image = decoded.pixels
    return replace(
        entry,
        sha256=pixels_sha256(image),
        width=image.shape[1],
        height=image.shape[0],
        conversion=decoded.conversion,
        orientation=decoded.orientation,
    )


def stratified_subset(entries: list[ImageEntry], limit: int | None, seed: int) -> list[ImageEntry]:
    """A seeded subset of ``limit`` entries, stratified by label (proportional allocation, largest remainder).

    Within a class, entries are ranked by a hash of (seed, pixel sha256) when the hash is known (stable when
    files are renamed or the folder grows), else of (seed, dataset, id). Class-sorted files such as Galaxy10's
    HDF5 therefore give every class its share instead of the first classes only. Returned sorted by id.
    """
    if limit is None or limit >= len(entries):
        return entries

    def rank(e: ImageEntry) -> str:
        if e.sha256:
            return key_of({"seed": seed, "image": e.sha256})
        return key_of({"seed": seed, "dataset": e.dataset, "id": e.id})

    strata: dict[str, list[ImageEntry]] = {}
    for e in entries:
        strata.setdefault("" if e.label is None else str(e.label), []).append(e)
    total = len(entries)
    quotas = {c: limit * len(v) / total for c, v in strata.items()}
    take = {c: int(q) for c, q in quotas.items()}
    left = limit - sum(take.values())
    by_remainder = sorted(strata, key=lambda c: (-(quotas[c] - take[c]), key_of({"seed": seed, "class": c})))
    for c in by_remainder[:left]:
        take[c] += 1
    chosen = [e for c, v in strata.items() for e in sorted(v, key=rank)[: take[c]]]
    return sorted(chosen, key=lambda e: e.id)


def class_counts(entries: list[ImageEntry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in entries:
        key = "" if e.label is None else str(e.label)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def create_dataset(name: str, **options: Any) -> Dataset:
    """The dataset registered as ``name`` built with the suite's options (path, split, hub_id, ...)."""
    from harness.registry import DATASETS

    cls = DATASETS.get(name)
    options = {k: v for k, v in options.items() if v is not None}
    try:
        inspect.signature(cls).bind(**options)
    except TypeError:
        params = [p for p in inspect.signature(cls).parameters if p not in ("self", "kwargs")]
        raise DatasetError(
            f"dataset {name!r} does not take option(s) {', '.join(sorted(options))}; it takes: "
            f"{', '.join(params) or 'no options'}"
        ) from None
    return cls(**options)
