"""Stereo datasets: primary images whose entries carry the other view as decoder-side information.

Every entry's ``side`` maps the kind :data:`SIDE_KIND` (``"stereo"``: the other view of a rectified pair, the right
view when the primary is the left one and vice versa) to a locator; :meth:`load_side` reads it with the same
decoding rules and the same protocol (crop, resize) as the primary view, so both views always have one size.
:meth:`load_neighbour` gives the side view ``k`` frames away where the dataset has sequences (KITTI multiview,
the stand-in), for the temporal-desync degradation.

::

    kitti            KITTI Stereo 2012 (colored_0 / colored_1) and 2015 (image_2 / image_3), multiview frames
                     {scene}_{00..20}.png; folder or the official zips. NDIC protocol: centre crop 370 x 740,
                     resize to 128 x 256 (bilinear).
    cityscapes       leftImg8bit / rightImg8bit, {split}/{city}/*_{left,right}Img8bit.png; folder or zips.
                     NDIC protocol: resize 1024 x 2048 -> 128 x 256 (bilinear).
    standin_stereo   generated pairs (harness/datasets/stereo_synth.py), 64 x 128 by default: a STAND-IN.

Which view is primary is an explicit, recorded option (``primary``): ``left``, ``right``, or ``alternate`` (NDIC's
test lists: the first half of the sorted pairs left-primary, the second half right-primary), or a ``pair_list``
file of "primary side" relative paths per line (NDIC's own lists). ``protocol = "native"`` keeps full-size views.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from harness.datasets.base import (
    DEFAULT_MAX_PIXELS,
    Dataset,
    DatasetError,
    ImageEntry,
    data_root,
    read_card,
    with_decoded,
)
from harness.datasets.decode import Decoded, decode

SIDE_KIND = "stereo"
PRIMARY = ("left", "right", "alternate")
PROTOCOLS = ("ndic", "native")


@dataclass(frozen=True)
class Protocol:
    """Pixels of both views: optional centre crop (h, w), then optional resize to (h, w) with Pillow's filter."""

    name: str
    crop: tuple[int, int] | None = None
    size: tuple[int, int] | None = None
    filter: str = "bilinear"

    def describe(self) -> str:
        steps = []
        if self.crop:
            steps.append(f"center_crop({self.crop[0]}x{self.crop[1]})")
        if self.size:
            steps.append(f"resize({self.size[0]}x{self.size[1]},{self.filter})")
        return f"{self.name}: " + ("+".join(steps) or "none")

    def apply(self, decoded: Decoded, where: str) -> Decoded:
        img = decoded.pixels
        if self.crop:
            ch, cw = self.crop
            h, w = img.shape[:2]
            if h < ch or w < cw:
                raise DatasetError(f"{where}: a {w}x{h} view is smaller than the protocol's {cw}x{ch} centre crop")
            top, left = (h - ch) // 2, (w - cw) // 2
            img = img[top : top + ch, left : left + cw]
        if self.size and img.shape[:2] != self.size:
            from PIL import Image

            resample = getattr(Image.Resampling, self.filter.upper())
            img = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize(self.size[::-1], resample))
        if img is decoded.pixels:
            return decoded
        note = self.describe()
        conversion = f"{decoded.conversion}; {note}" if decoded.conversion else note
        return replace(decoded, pixels=np.ascontiguousarray(img), conversion=conversion)


def resolve_path(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.expandvars(os.path.expanduser(str(path)))).resolve()


class _Files:
    """The files under a dataset root: a folder tree and/or the zips in it (or one zip), by posix path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zips: dict[str, zipfile.ZipFile] = {}
        self.members: dict[str, tuple[str | None, str]] = {}  # name -> (zip path or None, member or file)
        zips = [root] if root.is_file() else sorted(root.rglob("*.zip"))
        for zp in zips:
            try:
                zf = zipfile.ZipFile(zp)
            except (OSError, zipfile.BadZipFile) as exc:
                raise DatasetError(f"cannot open zip {zp}: {exc}") from None
            self.zips[str(zp)] = zf
            for info in zf.infolist():
                if not info.is_dir():
                    self.members.setdefault(info.filename, (str(zp), info.filename))
        if root.is_dir():
            for p in sorted(root.rglob("*.png")):
                rel = p.relative_to(root).as_posix()
                self.members.setdefault(rel, (None, str(p)))

    def names(self) -> list[str]:
        return sorted(n for n in self.members if n.lower().endswith(".png") and "/." not in f"/{n}")

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def read(self, name: str, max_pixels: int | None) -> Decoded:
        if name not in self.members:
            raise DatasetError(f"{self.root}: no file {name}")
        zp, member = self.members[name]
        if zp is None:
            return decode(Path(member), name, max_pixels)
        try:
            data = self.zips[zp].read(member)
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"cannot read {member} from {zp}: {exc}") from None
        return decode(data, name, max_pixels)


@dataclass(frozen=True)
class Pair:
    primary: str  # locator of the primary view
    side: str  # locator of the other view
    label: str | None
    split: str


class StereoDataset(Dataset):
    """Base of the stereo loaders: pairs listed cheaply, both views decoded with one protocol."""

    side_kinds: tuple[str, ...] = (SIDE_KIND,)
    protocol = Protocol("native")

    def pairs(self) -> list[Pair]:
        raise NotImplementedError

    def read_view(self, locator: str) -> Decoded:
        raise NotImplementedError

    def neighbour_locator(self, locator: str, offset: int) -> str | None:
        """The locator of the same camera ``offset`` frames away, ``None`` where there is none."""
        return None

    @cached_property
    def _pairs(self) -> dict[str, Pair]:
        return {p.primary: p for p in self.pairs()}

    def index(self) -> list[ImageEntry]:
        return sorted(
            (
                ImageEntry(
                    dataset=self.name,
                    split=p.split,
                    id=p.primary,
                    sha256="",
                    width=0,
                    height=0,
                    path=self.location,
                    label=p.label,
                    side={SIDE_KIND: p.side},
                )
                for p in self._pairs.values()
            ),
            key=lambda e: e.id,
        )

    @property
    def location(self) -> str:
        return str(getattr(self, "root", self.name))

    def decode(self, entry: ImageEntry) -> Decoded:
        return self.protocol.apply(self.read_view(entry.id), f"{self.name}/{entry.id}")

    def read(self, entry: ImageEntry) -> np.ndarray:
        return self.decode(entry).pixels

    def _side_locator(self, entry: ImageEntry, kind: str) -> str:
        if kind not in self.side_kinds:
            raise DatasetError(f"{self.name}: no side kind {kind!r}; it provides {', '.join(self.side_kinds)}")
        locator = entry.side.get(kind) or (self._pairs[entry.id].side if entry.id in self._pairs else None)
        if locator is None:
            raise DatasetError(f"{self.name}/{entry.id}: no {kind!r} view listed for this image")
        return locator

    def load_side(self, entry: ImageEntry, kind: str) -> np.ndarray:
        locator = self._side_locator(entry, kind)
        side = self.protocol.apply(self.read_view(locator), f"{self.name}/{locator}").pixels
        if entry.height and side.shape[:2] != (entry.height, entry.width):
            raise DatasetError(
                f"{self.name}/{entry.id}: the {kind} view is {side.shape[1]}x{side.shape[0]}, the primary "
                f"{entry.width}x{entry.height}; a pair must have one size"
            )
        return side

    def has_neighbour(self, entry: ImageEntry, kind: str, offset: int) -> bool:
        """Whether :meth:`load_neighbour` has that frame (cheap: no pixels are read), so a planner can leave out
        the cells of images at a sequence's edge instead of failing them."""
        return self.neighbour_locator(self._side_locator(entry, kind), offset) is not None

    def load_neighbour(self, entry: ImageEntry, kind: str, offset: int) -> np.ndarray | None:
        """The side view ``offset`` frames away from the primary's frame (temporal desync), ``None`` when the
        dataset has no such frame."""
        locator = self.neighbour_locator(self._side_locator(entry, kind), offset)
        if locator is None:
            return None
        return self.protocol.apply(self.read_view(locator), f"{self.name}/{locator}").pixels

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.location,
            "protocol": self.protocol.describe(),
            "primary": getattr(self, "primary", "left"),
            "side_kinds": list(self.side_kinds),
            "pairs": len(self._pairs),
        }


def _assign_primary(pairs: list[tuple[str, str, str | None, str]], primary: str) -> list[Pair]:
    """(left, right, label, split) sorted by left -> Pairs with the primary view chosen by ``primary``."""
    if primary not in PRIMARY:
        raise DatasetError(f"primary must be one of {', '.join(PRIMARY)}, got {primary!r}")
    pairs = sorted(pairs)
    out = []
    for i, (left, right, label, split) in enumerate(pairs):
        right_first = primary == "right" or (primary == "alternate" and i >= len(pairs) // 2)
        out.append(Pair(right, left, label, split) if right_first else Pair(left, right, label, split))
    return out


def _read_pair_list(path: Path, files: _Files) -> list[Pair]:
    """NDIC-style list: one "primary side" pair of paths per line (relative to the dataset root; a prefix up to
    the first path part the dataset knows is stripped)."""
    known = files.names()
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DatasetError(f"{path}:{n}: expected two paths (primary, side), got {len(parts)}")
        resolved = []
        for p in parts:
            p = PurePosixPath(p).as_posix()
            hit = next((k for k in known if p.endswith(k) or k.endswith(p)), None)
            if hit is None:
                raise DatasetError(f"{path}:{n}: {p} is not in {files.root}")
            resolved.append(hit)
        out.append(Pair(resolved[0], resolved[1], None, path.stem))
    return out


class _LocalStereo(StereoDataset):
    """A card-described stereo dataset read from a local folder or zips (no hub copy exists)."""

    card_name: str = ""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        split: str | None = None,
        primary: str = "left",
        protocol: str = "ndic",
        pair_list: str | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.card = read_card(self.card_name)
        self.name = str(self.card["name"])
        self.version = str(self.card.get("version", "1"))
        self.max_pixels = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if primary not in PRIMARY:
            raise DatasetError(f"{self.name}: primary must be one of {', '.join(PRIMARY)}, got {primary!r}")
        if protocol not in PROTOCOLS:
            raise DatasetError(f"{self.name}: protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.split = split
        self.primary = primary
        self.protocol = self.protocols()[protocol]
        if path is None:
            root = data_root() / self.name
            if not root.exists() or not any(root.iterdir()):
                raise DatasetError(f"{self.name}: no local copy found; {self.card.get('where', '')}")
        else:
            root = resolve_path(path)
            if not root.exists():
                raise DatasetError(f"{self.name}: path {root} does not exist ({self.card.get('where', '')})")
        self.root = root
        self.files = _Files(root)
        self.pair_list = None if pair_list is None else resolve_path(pair_list)
        if self.pair_list is not None and not self.pair_list.is_file():
            raise DatasetError(f"{self.name}: pair_list {self.pair_list} is not a file")

    def protocols(self) -> dict[str, Protocol]:
        raise NotImplementedError

    def raw_pairs(self) -> list[tuple[str, str, str | None, str]]:
        raise NotImplementedError

    def pairs(self) -> list[Pair]:
        if self.pair_list is not None:
            return _read_pair_list(self.pair_list, self.files)
        raw = [p for p in self.raw_pairs() if self.split in (None, "all") or p[3] == self.split]
        if not raw:
            where = f" for split {self.split!r}" if self.split not in (None, "all") else ""
            raise DatasetError(
                f"{self.name}: no stereo pairs found in {self.root}{where}; {self.card.get('layout', '')}"
            )
        return _assign_primary(raw, self.primary)

    def read_view(self, locator: str) -> Decoded:
        return self.files.read(locator, self.max_pixels)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(
            {"split": self.split or "all", "card": f"datasets/{self.card_name}.toml", "pair_list": str(self.pair_list)}
        )
        return out


KITTI_FOLDERS = {"image_2": ("image_3", "kitti2015"), "colored_0": ("colored_1", "kitti2012")}
KITTI_NAME = re.compile(r"^(\d{6})_(\d{2})\.png$")


class KITTIStereo(_LocalStereo):
    """KITTI Stereo 2012 / 2015 (with the multiview frames when present). ``frames``: ``"10"`` (the reference
    stereo frame of each scene, default), ``"all"`` (every frame 00..20 the multiview release has)."""

    card_name = "kitti"

    def __init__(self, *args: Any, frames: str = "10", **kwargs: Any) -> None:
        if frames not in ("10", "all"):
            raise DatasetError(f"kitti: frames must be '10' or 'all', got {frames!r}")
        self.frames = frames
        kwargs.setdefault("primary", "alternate")
        super().__init__(*args, **kwargs)

    def protocols(self) -> dict[str, Protocol]:
        return {"ndic": Protocol("ndic-kitti", (370, 740), (128, 256)), "native": Protocol("native")}

    def raw_pairs(self) -> list[tuple[str, str, str | None, str]]:
        out = []
        for name in self.files.names():
            p = PurePosixPath(name)
            if p.parent.name not in KITTI_FOLDERS or not KITTI_NAME.match(p.name):
                continue
            if self.frames == "10" and not p.name.endswith("_10.png"):
                continue
            other_folder, label = KITTI_FOLDERS[p.parent.name]
            other = (p.parent.parent / other_folder / p.name).as_posix()
            if other in self.files:
                split = p.parent.parent.name  # training / testing
                out.append((name, other, label, split))
        return out

    def neighbour_locator(self, locator: str, offset: int) -> str | None:
        p = PurePosixPath(locator)
        m = KITTI_NAME.match(p.name)
        if m is None:
            return None
        frame = int(m.group(2)) + offset
        cand = (p.parent / f"{m.group(1)}_{frame:02d}.png").as_posix()
        return cand if 0 <= frame <= 99 and cand in self.files else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "frames": self.frames}


CITYSCAPES_NAME = re.compile(r"^(.+)_(leftImg8bit)\.png$")


class CityscapesStereo(_LocalStereo):
    """Cityscapes left/right views (``leftImg8bit`` / ``rightImg8bit``), splits train / val / test."""

    card_name = "cityscapes"

    def protocols(self) -> dict[str, Protocol]:
        return {"ndic": Protocol("ndic-cityscapes", None, (128, 256)), "native": Protocol("native")}

    def raw_pairs(self) -> list[tuple[str, str, str | None, str]]:
        out = []
        for name in self.files.names():
            p = PurePosixPath(name)
            m = CITYSCAPES_NAME.match(p.name)
            parts = p.parts
            if m is None or "leftImg8bit" not in parts:
                continue
            i = parts.index("leftImg8bit")
            if len(parts) < i + 4:  # leftImg8bit/<split>/<city>/<file>
                continue
            right = "/".join([*parts[:i], "rightImg8bit", *parts[i + 1 : -1], f"{m.group(1)}_rightImg8bit.png"])
            if right in self.files:
                out.append((name, right, parts[i + 2], parts[i + 1]))
        return out


class StandInStereo(StereoDataset):
    """STAND-IN stereo pairs generated from seeds ``first_seed .. first_seed + count - 1`` (stereo_synth.py).
    Labels are the pair kind (``layered`` / ``translation``), so subsets are stratified by kind. The DICM-tiny
    recipe trains on seeds >= 1,000,000 only: these pairs are never trained on."""

    name = "standin_stereo"
    version = "1"

    def __init__(
        self,
        count: int = 16,
        height: int = 64,
        width: int = 128,
        first_seed: int = 0,
        primary: str = "left",
        max_pixels: int | None = None,
    ) -> None:
        if not (isinstance(count, int) and 1 <= count <= 100_000):
            raise DatasetError(f"standin_stereo: count must be an integer in 1..100000, got {count!r}")
        for what, v in (("height", height), ("width", width)):
            if not (isinstance(v, int) and 8 <= v <= 4096):
                raise DatasetError(f"standin_stereo: {what} must be an integer in 8..4096, got {v!r}")
        if primary not in PRIMARY:
            raise DatasetError(f"standin_stereo: primary must be one of {', '.join(PRIMARY)}, got {primary!r}")
        self.count, self.height, self.width, self.first_seed = count, height, width, first_seed
        self.primary = primary
        self.max_pixels = max_pixels
        self._cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def location(self) -> str:
        return f"<stand-in generated by {__name__}.StandInStereo>"

    def _views(self, seed: int, frame: int = 0) -> tuple[np.ndarray, np.ndarray]:
        from harness.datasets.stereo_synth import stereo_pair

        key = (seed, frame)
        if key not in self._cache:
            if len(self._cache) > 256:
                self._cache.clear()
            self._cache[key] = stereo_pair(seed, self.height, self.width, frame)
        return self._cache[key]

    def pairs(self) -> list[Pair]:
        from harness.datasets.stereo_synth import make_scene

        raw = []
        for seed in range(self.first_seed, self.first_seed + self.count):
            kind = make_scene(seed, self.height, self.width).kind
            raw.append((f"scene_{seed:06d}_left.png", f"scene_{seed:06d}_right.png", kind, "all"))
        return _assign_primary(raw, self.primary)

    def read_view(self, locator: str) -> Decoded:
        m = re.fullmatch(r"scene_(\d{6})_(left|right)(?:@([+-]\d+))?\.png", locator)
        if m is None:
            raise DatasetError(f"standin_stereo: no view {locator!r}")
        left, right = self._views(int(m.group(1)), int(m.group(3) or 0))
        return Decoded(left if m.group(2) == "left" else right, "", 1)

    def neighbour_locator(self, locator: str, offset: int) -> str | None:
        m = re.fullmatch(r"(scene_\d{6}_(?:left|right))\.png", locator)
        return None if m is None else f"{m.group(1)}@{offset:+d}.png"

    def index(self) -> list[ImageEntry]:
        # generated pixels are cheap: hash them here, like the other stand-ins
        return [with_decoded(e, self.decode(e)) for e in super().index()]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": "generated",
            "stand_in": True,
            "size": [self.height, self.width],
            "seeds": [self.first_seed, self.first_seed + self.count - 1],
        }
