"""Where images are read from: a folder tree, a zip, parquet shards, an HDF5 file, or a hub split.

Every store lists ``(id, label, index, split)`` cheaply (no decoding) and reads one image on demand, so
a 2.5 GB HDF5 file or an 85k-image folder is indexed without loading it. Ids are stable: the path relative
to the dataset root (posix), ``file#row`` in parquet, the zero-padded row in HDF5 and hub splits.
"""

from __future__ import annotations

import json
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from harness.datasets.base import IMAGE_SUFFIXES, DatasetError
from harness.datasets.decode import Decoded, decode, decode_array, decode_pil, exceeds_max_pixels

Item = tuple[str, str | None, int | None, str]  # id, label, index, split


class Store(ABC):
    location: str
    kind: str

    @abstractmethod
    def items(self) -> list[Item]: ...

    @abstractmethod
    def read(self, item_id: str, index: int | None, max_pixels: int | None) -> Decoded: ...


def _hidden(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _strip_single_dirs(paths: list[PurePosixPath], keep: int, split: str | None = None) -> int:
    """How many leading components all paths share as a chain of single folders (``2750/``, ``EuroSAT_RGB/``),
    leaving at least ``keep`` components (class folder + file in a labelled tree: one class stays a class)."""
    depth = 0
    while (
        paths
        and all(len(p.parts) > depth + keep for p in paths)
        and len(firsts := {p.parts[depth] for p in paths}) == 1
        and split not in firsts
    ):
        depth += 1
    return depth


class _TreeStore(Store):
    """Shared logic of folder and zip trees: class from the first folder, split folders or split lists."""

    def __init__(self, location: str, labelled: bool, split: str | None, split_lists: dict[str, set[str]]) -> None:
        self.location = location
        self.labelled = labelled
        self.split = split
        self.split_lists = split_lists

    def _select(self, rels: list[PurePosixPath]) -> list[tuple[str, str | None, str]]:
        rels = [r for r in rels if r.suffix.lower() in IMAGE_SUFFIXES and not _hidden(r.parts)]
        depth = _strip_single_dirs(rels, 2 if self.labelled else 1, self.split)
        split = self.split or "all"
        out = []
        for rel in rels:
            parts = rel.parts[depth:]
            if self.split and self.split != "all":
                if self.split in self.split_lists:
                    if PurePosixPath(parts[-1]).stem not in self.split_lists[self.split]:
                        continue
                elif parts[0] == self.split and len(parts) > 1:
                    parts = parts[1:]
                else:
                    continue
            label = parts[0] if self.labelled and len(parts) > 1 else None
            out.append(("/".join(rel.parts), label, split))
        if self.split and self.split != "all" and not out:
            raise DatasetError(
                f"{self.location}: no images for split {self.split!r} (expected a {self.split}/ folder or a "
                f'*-{self.split}.txt list); use split = "all" for the whole tree'
            )
        return out


def _split_lists(folder: Path) -> dict[str, set[str]]:
    """torchgeo-style split lists beside the tree (``eurosat-train.txt``: one file name per line, matched by stem)."""
    lists: dict[str, set[str]] = {}
    for txt in sorted(folder.glob("*.txt")):
        split = txt.stem.rsplit("-", 1)[-1]
        if split in ("train", "val", "validation", "test"):
            lists[split] = {PurePosixPath(line.strip()).stem for line in txt.read_text().splitlines() if line.strip()}
    return lists


class FolderStore(_TreeStore):
    kind = "folder"

    def __init__(self, root: Path, labelled: bool = False, split: str | None = None) -> None:
        lists = {**_split_lists(root.parent), **_split_lists(root)}
        super().__init__(str(root), labelled, split, lists)
        self.root = root

    def items(self) -> list[Item]:
        rels = sorted(PurePosixPath(p.relative_to(self.root).as_posix()) for p in self.root.rglob("*") if p.is_file())
        return [(i, label, None, split) for i, label, split in self._select(rels)]

    def read(self, item_id: str, index: int | None, max_pixels: int | None) -> Decoded:
        return decode(self.root / item_id, item_id, max_pixels)


class ZipStore(_TreeStore):
    kind = "zip"

    def __init__(self, path: Path, labelled: bool = False, split: str | None = None) -> None:
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            raise DatasetError(f"cannot open zip {path}: {exc}") from None
        lists: dict[str, set[str]] = {}
        for name in self.zip.namelist():
            stem = PurePosixPath(name).stem.rsplit("-", 1)[-1]
            if name.endswith(".txt") and stem in ("train", "val", "validation", "test"):
                lines = self.zip.read(name).decode().splitlines()
                lists[stem] = {PurePosixPath(x.strip()).stem for x in lines if x.strip()}
        super().__init__(str(path), labelled, split, lists)

    def items(self) -> list[Item]:
        rels = sorted(PurePosixPath(i.filename) for i in self.zip.infolist() if not i.is_dir())
        return [(i, label, None, split) for i, label, split in self._select(rels)]

    def read(self, item_id: str, index: int | None, max_pixels: int | None) -> Decoded:
        try:
            data = self.zip.read(item_id)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"cannot read image {item_id} from {self.location}: {exc}") from None
        return decode(data, item_id, max_pixels)


IMAGE_COLUMNS = ("image", "img", "png", "jpg", "image_bytes")
LABEL_COLUMNS = ("label", "labels", "class", "ans", "target")


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> str | None:
    if wanted:
        if wanted not in columns:
            raise DatasetError(f"{where}: no {what} column {wanted!r}; columns: {', '.join(columns)}")
        return wanted
    return next((c for c in candidates if c in columns), None)


def _image_value(value: Any, where: str, max_pixels: int | None) -> Decoded:
    """A hub/parquet image cell: ``{"bytes": ..., "path": ...}`` (datasets' Image feature), raw bytes, a decoded
    PIL image or a pixel array; every kind goes through the same rules (harness.datasets.decode)."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return decode(value["bytes"], where, max_pixels)
        if value.get("path"):
            return decode(value["path"], where, max_pixels)
        raise DatasetError(f"cannot read image {where}: the image cell has neither bytes nor a path")
    if isinstance(value, bytes):
        return decode(value, where, max_pixels)
    if value is None:
        raise DatasetError(f"cannot read image {where}: missing (null)")
    if hasattr(value, "mode") and hasattr(value, "getexif"):  # a decoded PIL image
        return decode_pil(value, where, max_pixels)
    if isinstance(value, np.ndarray):
        return decode_array(value, where, max_pixels)
    raise DatasetError(f"cannot read image {where}: unsupported cell type {type(value).__name__}")


class ParquetStore(Store):
    """Parquet shards as written by the hub (``data/train-00000-of-00001.parquet``): an image column holding
    ``{bytes, path}`` and an optional integer label column whose names come from the schema's
    ``huggingface`` metadata. Reads one row group at a time."""

    kind = "parquet"

    def __init__(
        self,
        path: Path,
        split: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        class_names: tuple[str, ...] = (),
    ) -> None:
        import pyarrow.parquet as pq

        self.location = str(path)
        self.root = path if path.is_dir() else path.parent
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if split and split != "all":
            files = [f for f in files if f.name.startswith(split) or split in f.relative_to(self.root).parts[:-1]]
            if not files:
                raise DatasetError(f"{path}: no parquet shard for split {split!r} (named {split}-*.parquet)")
        if not files:
            raise DatasetError(f"{path}: no .parquet files")
        self.split = split or "all"
        self.files = files
        self._pq = pq
        self._cache: tuple[tuple[Path, int], Any] | None = None
        self.meta: list[tuple[Path, Any, str, str | None, list[str]]] = []
        for f in files:
            try:
                pf = pq.ParquetFile(f)
            except Exception as exc:
                raise DatasetError(f"cannot read parquet {f}: {exc}") from None
            columns = pf.schema_arrow.names
            where = str(f)
            image_col = _pick(columns, image_column, IMAGE_COLUMNS, "image", where)
            if image_col is None:
                raise DatasetError(f"{where}: no image column; columns: {', '.join(columns)} (set image_column)")
            label_col = _pick(columns, label_column, LABEL_COLUMNS, "label", where)
            names = list(class_names) or _hf_class_names(pf.schema_arrow.metadata or {}, label_col)
            self.meta.append((f, pf, image_col, label_col, names))

    def items(self) -> list[Item]:
        out: list[Item] = []
        for f, pf, _, label_col, names in self.meta:
            rel = f.relative_to(self.root).as_posix()
            labels = pf.read(columns=[label_col]).column(0).to_pylist() if label_col else [None] * pf.metadata.num_rows
            for row, raw in enumerate(labels):
                out.append((f"{rel}#{row:06d}", _label(raw, names), row, self.split))
        return sorted(out)

    def read(self, item_id: str, index: int | None, max_pixels: int | None) -> Decoded:
        rel, _, row_text = item_id.rpartition("#")
        row = int(row_text)
        for f, pf, image_col, _, _ in self.meta:
            if f.relative_to(self.root).as_posix() != rel:
                continue
            start = 0
            for rg in range(pf.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if row < start + n:
                    if self._cache is None or self._cache[0] != (f, rg):
                        self._cache = ((f, rg), pf.read_row_group(rg, columns=[image_col]).column(0))
                    return _image_value(self._cache[1][row - start].as_py(), item_id, max_pixels)
                start += n
        raise DatasetError(f"{self.location}: no row {item_id}")


def _hf_class_names(metadata: dict[bytes, bytes], label_col: str | None) -> list[str]:
    if not label_col or b"huggingface" not in metadata:
        return []
    try:
        info = json.loads(metadata[b"huggingface"])
        feature = info.get("info", {}).get("features", {}).get(label_col, {})
        return [str(n) for n in feature.get("names", [])]
    except (ValueError, AttributeError):
        return []


def _label(raw: Any, names: list[str] | tuple[str, ...]) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, int | np.integer) and 0 <= int(raw) < len(names):
        return names[int(raw)]
    return str(raw.item() if isinstance(raw, np.generic) else raw)


class HDF5Store(Store):
    """An HDF5 file with an ``images`` array (N, H, W[, C]) and a label array (Galaxy10: ``ans``, uint8 RGB).
    Only the labels are read up front; each image is read by row when it is needed, after checking its size
    against ``max_pixels`` from the array's shape. The array's dtype declares the depth (uint8 as is, other
    unsigned integers scaled by their range, floats and signed integers refused): see
    :func:`harness.datasets.decode.decode_array`."""

    kind = "h5"

    def __init__(
        self, path: Path, images_key: str = "images", labels_key: str = "ans", class_names: tuple[str, ...] = ()
    ) -> None:
        try:
            import h5py
        except ImportError:
            raise DatasetError("reading .h5 datasets needs h5py (pip install h5py)") from None
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise DatasetError(f"cannot open HDF5 {path}: {exc}") from None
        self.location = str(path)
        if images_key not in self.file:
            raise DatasetError(f"{path}: no {images_key!r} dataset; keys: {', '.join(self.file.keys())}")
        self.images = self.file[images_key]
        shape = self.images.shape
        if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3, 4))):
            raise DatasetError(f"{path}: {images_key!r} has shape {shape}, expected (N, H, W) or (N, H, W, 1|3|4)")
        n = shape[0]
        labels = self.file[labels_key][:] if labels_key in self.file else [None] * n
        if len(labels) != n:
            raise DatasetError(f"{path}: {labels_key!r} has {len(labels)} rows, {images_key!r} has {n}")
        self.labels = [_label(x, class_names) for x in labels]

    def items(self) -> list[Item]:
        return [(f"{i:06d}", label, i, "all") for i, label in enumerate(self.labels)]

    def read(self, item_id: str, index: int | None, max_pixels: int | None) -> Decoded:
        i = int(item_id) if index is None else index
        where = f"{self.location}[{i}]"
        h, w = self.images.shape[1:3]
        if max_pixels is not None and h * w > max_pixels:  # refused from the shape, before reading the row
            raise DatasetError(exceeds_max_pixels(where, h * w, max_pixels, (w, h)))
        try:
            row = np.asarray(self.images[i])
        except (OSError, ValueError, IndexError) as exc:
            raise DatasetError(f"cannot read image {where}: {exc}") from None
        return decode_array(row, where, max_pixels)


class HubStore(Store):
    """A split of a hub dataset through the ``datasets`` library (see :mod:`harness.datasets.hub`)."""

    kind = "hub"

    def __init__(
        self,
        name: str,
        hub_id: str,
        split: str,
        image_column: str | None = None,
        label_column: str | None = None,
        class_names: tuple[str, ...] = (),
        local_hint: str = "",
    ) -> None:
        from harness.datasets.hub import open_hub_split

        self.location = f"hf://datasets/{hub_id} [{split}]"
        self.split = split
        ds = open_hub_split(name, hub_id, split, local_hint)
        columns = list(ds.column_names)
        image_col = _pick(columns, image_column, IMAGE_COLUMNS, "image", self.location)
        if image_col is None:
            raise DatasetError(f"{self.location}: no image column; columns: {', '.join(columns)}")
        label_col = _pick(columns, label_column, LABEL_COLUMNS, "label", self.location)
        try:
            from datasets import Image

            ds = ds.cast_column(image_col, Image(decode=False))
        except Exception:  # not an Image feature (raw bytes): read as stored
            pass
        names = list(class_names) or list(getattr(ds.features.get(label_col), "names", []) or [])
        self.ds, self.image_col = ds, image_col
        self.labels = [_label(x, names) for x in ds[label_col]] if label_col else [None] * len(ds)

    def items(self) -> list[Item]:
        return [(f"{i:06d}", label, i, self.split) for i, label in enumerate(self.labels)]

    def read(self, item_id: str, index: int | None, max_pixels: int | None) -> Decoded:
        i = int(item_id) if index is None else index
        return _image_value(self.ds[i][self.image_col], f"{self.location}#{i}", max_pixels)
