"""Suites: TOML files that name datasets, codec configs, corruptions with parameter grids, seeds and
metrics. Parsed into frozen dataclasses and checked completely before any work starts.

Example (``harness/suites/bit_errors.toml``)::

    name = "bit_errors"
    seed = 20261126          # root of every random draw (mixed with each cell's key)
    seeds = 5                # corruption replicates per level
    metrics = ["psnr"]

    [[datasets]]
    name = "samples"         # also path, split, hub_id, limit_images, preprocessing, ... (README "Datasets")

    [[codecs]]
    codec = "jpeg2000"
    label = "jpeg2000@0.25bpp"
    options = { target_bpp = 0.25 }

    [[corruptions]]
    corruption = "bsc"
    scopes = ["payload", "all"]
    grid = { ber = [0.0, 1e-4, 1e-3] }
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.hashing import sha256_bytes

if TYPE_CHECKING:
    from harness.datasets.partition import Partition

SUITES_DIR = Path(__file__).resolve().parent / "suites"


class SuiteError(ValueError):
    """A suite that cannot run as written (unknown names, bad values); says how to fix it."""


@dataclass(frozen=True)
class DatasetConfig:
    """One ``[[datasets]]`` entry. ``preprocessing`` is the canonical policy string (harness/preprocess.py);
    ``None`` means the dataset card's default. ``path`` / ``split`` / ``hub_id`` / ``options`` go to the loader
    (harness/datasets/loaders.py); ``min_side`` / ``max_pixels`` bound image sizes (smaller or larger images
    are recorded as skipped, the run goes on)."""

    name: str
    preprocessing: str | None = None
    limit_images: int | None = None
    path: str | None = None
    split: str | None = None
    hub_id: str | None = None
    min_side: int = 0
    max_pixels: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    #: one part of a seeded train/val/test partition (harness/datasets/partition.py); None: the whole index
    partition: Partition | None = None

    def loader_options(self) -> dict[str, Any]:
        opts = {"path": self.path, "split": self.split, "hub_id": self.hub_id, "max_pixels": self.max_pixels}
        return {**{k: v for k, v in opts.items() if v is not None}, **self.options}


@dataclass(frozen=True)
class CodecConfig:
    codec: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    #: label of another codec config in the suite whose bpp this one matches, image by image
    match_rate_of: str | None = None
    #: label of another codec config whose corruption draws this one reuses, cell by cell (paired comparisons)
    paired_with: str | None = None
    #: only the identity level of each corruption (BER 0, sigma 0): a clean reference row such as the VAE-only
    #: bound (METHODOLOGY §5), which is not a compressor and has no business in an error sweep
    clean_only: bool = False


@dataclass(frozen=True)
class CorruptionConfig:
    corruption: str
    scopes: tuple[str, ...] = ("all",)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    #: FEC layers to cross with the grid (``None``: no FEC); each a dict of corruptions.fec.FECConfig fields
    fec: tuple[dict[str, Any] | None, ...] = (None,)

    def levels(self) -> list[dict[str, Any]]:
        """The Cartesian product of the grid, in file order."""
        return _product(self.grid)


def _product(grid: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


@dataclass(frozen=True)
class SideInfoConfig:
    """One ``[[side_info]]`` entry: a side-information degradation (a plugin with ``acts_on = "side_info"``,
    corruptions/side_info.py) and its grid. Its levels run with the clean primary stream (cells whose corruption is
    the degradation, scope = the side kind); ``cross`` names [[corruptions]] entries whose every level it also
    meets (bit errors on the primary stream x this degradation). Codecs without side information ignore it.

    ::

        [[side_info]]
        degradation = "side_noise"        # registry name (CORRUPTIONS)
        kinds = ["*"]                     # side kinds it degrades; "*" = every kind a codec declares
        grid = { sigma = [5.0, 15.0] }
        cross = ["bsc"]                   # optional"""

    degradation: str
    kinds: tuple[str, ...] = ("*",)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    cross: tuple[str, ...] = ()

    def levels(self) -> list[dict[str, Any]]:
        return _product(self.grid)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    seed: int
    seeds: int
    decode_seeds: int
    metrics: tuple[str, ...]
    timeout_s: float
    datasets: tuple[DatasetConfig, ...]
    codecs: tuple[CodecConfig, ...]
    corruptions: tuple[CorruptionConfig, ...]
    path: str = ""
    text: str = ""
    #: the clean-round-trip control's PSNR floor for every codec of the suite (None: each codec's own, 15 dB by
    #: default); lower it, with a comment saying why, for data a codec is expected to handle poorly (OOD domains)
    clean_psnr_floor_db: float | None = None
    #: fine-tune-then-evaluate suites: the ``[finetune]`` table (FinetuneSpec below); datasets and codecs are
    #: then derived from it per OOD dataset (harness/ood.py)
    finetune: Any = None
    #: a parse's CPU-time budget is max(timeout_s, timeout_factor x the CPU time of the clean stream's parse)
    timeout_factor: float = 20.0
    #: the wall-clock backstop of a parse is wall_factor x its CPU budget (catches hangs that use no CPU)
    wall_factor: float = 10.0
    #: memory a parse may allocate beyond the warm worker, MiB (None: 512 MiB + 256 B per decoded pixel)
    worker_memory_mb: float | None = None
    #: the side-information axis (codecs with decoder-side information; see SideInfoConfig)
    side_info: tuple[SideInfoConfig, ...] = ()

    @property
    def sha256(self) -> str:
        return sha256_bytes(self.text.encode())


def _table(raw: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: expected a table")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(raw))
    if missing:
        raise SuiteError(f"{where}: missing key(s) {', '.join(missing)}")
    return raw


def _positive(value: Any, where: str, unit: str) -> float:
    """A finite number > 0 (NaN and infinity compare false with every range check, so they are refused here)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise SuiteError(f"{where} must be a finite positive number ({unit}), got {value!r}")
    return float(value)


def _int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SuiteError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


_DATASET_KEYS = {
    "name",
    "preprocessing",
    "limit_images",
    "path",
    "split",
    "hub_id",
    "min_side",
    "max_pixels",
    "options",
    "partition",
}


def _dataset_config(raw: Any, where: str) -> DatasetConfig:
    from harness.preprocess import PolicyError, canonical_policy

    d = _table(raw, where, _DATASET_KEYS, {"name"})
    for key in ("path", "split", "hub_id"):
        if key in d and (not isinstance(d[key], str) or not d[key]):
            raise SuiteError(f"{where}.{key}: expected a non-empty string, got {d[key]!r}")
    options = d.get("options", {})
    if not isinstance(options, dict):
        raise SuiteError(f"{where}.options: expected a table of loader options")
    try:
        prep = None if d.get("preprocessing") is None else canonical_policy(d["preprocessing"])
    except PolicyError as exc:
        raise SuiteError(f"{where}.preprocessing: {exc}") from None
    limit, max_pixels = d.get("limit_images"), d.get("max_pixels")
    partition = None
    if d.get("partition") is not None:
        from harness.datasets.base import DatasetError
        from harness.datasets.partition import Partition

        try:
            partition = Partition.from_table(d["partition"], f"{where}.partition")
        except DatasetError as exc:
            raise SuiteError(str(exc)) from None
    return DatasetConfig(
        name=d["name"],
        preprocessing=prep,
        limit_images=None if limit is None else _int(limit, f"{where}.limit_images", 1),
        path=d.get("path"),
        split=d.get("split"),
        hub_id=d.get("hub_id"),
        min_side=_int(d.get("min_side", 0), f"{where}.min_side", 0),
        max_pixels=None if max_pixels is None else _int(max_pixels, f"{where}.max_pixels", 1),
        options=dict(options),
        partition=partition,
    )


def parse_suite(text: str, path: str = "<string>") -> Suite:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: invalid TOML: {exc}") from None
    top = _table(
        raw,
        path,
        {
            "name",
            "description",
            "seed",
            "seeds",
            "decode_seeds",
            "metrics",
            "timeout_s",
            "datasets",
            "codecs",
            "corruptions",
            "finetune",
            "clean_psnr_floor_db",
            "timeout_factor",
            "wall_factor",
            "worker_memory_mb",
            "side_info",
        },
        {"name", "corruptions"},
    )
    finetune = None
    if "finetune" in top:
        if "datasets" in top or "codecs" in top:
            raise SuiteError(f"{path}: a [finetune] suite takes its datasets and codec from [finetune], not from "
                             "[[datasets]] / [[codecs]]")  # fmt: skip
        finetune = parse_finetune(top["finetune"], path)
    else:
        missing = [k for k in ("datasets", "codecs") if k not in top]
        if missing:
            raise SuiteError(f"{path}: missing key(s) {', '.join(missing)}")
    datasets = []
    for i, d in enumerate(top.get("datasets", [])):
        datasets.append(_dataset_config(d, f"{path}: datasets[{i}]"))
    codecs = []
    for i, c in enumerate(top.get("codecs", [])):
        keys = {"codec", "label", "options", "match_rate_of", "paired_with", "clean_only"}
        c = _table(c, f"{path}: codecs[{i}]", keys, {"codec"})
        if not isinstance(c.get("clean_only", False), bool):
            raise SuiteError(f"{path}: codecs[{i}].clean_only is true or false")
        codecs.append(
            CodecConfig(
                c["codec"],
                c.get("label", c["codec"]),
                dict(c.get("options", {})),
                c.get("match_rate_of"),
                c.get("paired_with"),
                c.get("clean_only", False),
            )
        )
    labels = [c.label for c in codecs]
    if len(set(labels)) != len(labels):
        raise SuiteError(f"{path}: codec labels must be unique, got {labels}")
    corruptions = []
    for i, c in enumerate(top["corruptions"]):
        c = _table(c, f"{path}: corruptions[{i}]", {"corruption", "scopes", "grid", "fec"}, {"corruption"})
        grid = c.get("grid", {})
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise SuiteError(f"{path}: corruptions[{i}].grid maps each parameter to a non-empty list")
        scopes = c.get("scopes", ["all"])
        if not isinstance(scopes, list) or not scopes:
            raise SuiteError(f"{path}: corruptions[{i}].scopes is a non-empty list")
        fec = c.get("fec", [None])
        if isinstance(fec, dict):
            fec = [fec]
        if isinstance(fec, list):
            fec = [None if f == "none" else f for f in fec]  # "none": the same grid without FEC
        if not isinstance(fec, list) or not fec or not all(f is None or isinstance(f, dict) for f in fec):
            raise SuiteError(f'{path}: corruptions[{i}].fec is a table of RS parameters or a list of them and "none"')
        grid_values = {k: tuple(v) for k, v in grid.items()}
        corruptions.append(CorruptionConfig(c["corruption"], tuple(scopes), grid_values, tuple(fec)))
    side_info = []
    for i, s in enumerate(top.get("side_info", [])):
        where = f"{path}: side_info[{i}]"
        s = _table(s, where, {"degradation", "kinds", "grid", "cross"}, {"degradation"})
        grid, kinds, cross = s.get("grid", {}), s.get("kinds", ["*"]), s.get("cross", [])
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise SuiteError(f"{where}.grid maps each parameter to a non-empty list")
        if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
            raise SuiteError(f'{where}.kinds is a non-empty list of side-information kinds (or ["*"])')
        names = {c.corruption for c in corruptions}
        if not isinstance(cross, list) or not all(isinstance(n, str) and n in names for n in cross):
            raise SuiteError(f"{where}.cross lists [[corruptions]] names of this suite ({', '.join(sorted(names))})")
        grid_values = {k: tuple(v) for k, v in grid.items()}
        side_info.append(SideInfoConfig(str(s["degradation"]), tuple(kinds), grid_values, tuple(cross)))
    timeout = _positive(top.get("timeout_s", 30.0), f"{path}: timeout_s", "seconds of CPU time")
    timeout_factor = _positive(top.get("timeout_factor", 20.0), f"{path}: timeout_factor", "multiple")
    wall_factor = _positive(top.get("wall_factor", 10.0), f"{path}: wall_factor", "multiple")
    if wall_factor < 1:
        raise SuiteError(f"{path}: wall_factor must be >= 1 (a multiple of the CPU budget), got {wall_factor}")
    memory = top.get("worker_memory_mb")
    memory = None if memory is None else _positive(memory, f"{path}: worker_memory_mb", "MiB")
    floor = top.get("clean_psnr_floor_db")
    if floor is not None and (
        isinstance(floor, bool) or not isinstance(floor, int | float) or not math.isfinite(floor)
    ):
        raise SuiteError(f"{path}: clean_psnr_floor_db must be a finite number of dB, got {floor!r}")
    metrics = top.get("metrics", ["psnr"])
    if not isinstance(metrics, list) or not metrics:
        raise SuiteError(f"{path}: metrics is a non-empty list of metric names")
    return Suite(
        name=str(top["name"]),
        description=str(top.get("description", "")),
        seed=_int(top.get("seed", 0), "seed", 0),
        seeds=_int(top.get("seeds", 1), "seeds", 1),
        decode_seeds=_int(top.get("decode_seeds", 1), "decode_seeds", 1),
        metrics=tuple(metrics),
        timeout_s=float(timeout),
        datasets=tuple(datasets),
        codecs=tuple(codecs),
        corruptions=tuple(corruptions),
        path=path,
        text=text,
        finetune=finetune,
        clean_psnr_floor_db=None if floor is None else float(floor),
        timeout_factor=timeout_factor,
        wall_factor=wall_factor,
        worker_memory_mb=memory,
        side_info=tuple(side_info),
    )


# -- fine-tune-then-evaluate suites (harness/ood.py runs them) ------------------------------------------------
PARTS = ("train", "val", "test")
DEFAULT_PARTITION = {"train": 0.6, "val": 0.2, "test": 0.2, "seed": 0}


@dataclass(frozen=True)
class OODDataset:
    """An OOD dataset and how it is split: seeded partition fractions, or the names of its official splits."""

    dataset: DatasetConfig
    splits: dict[str, str] | None = None  # part -> official split name

    @property
    def name(self) -> str:
        return self.dataset.name

    def part(self, which: str) -> DatasetConfig:
        if self.splits is not None:
            return replace(self.dataset, split=self.splits[which], partition=None)
        assert self.dataset.partition is not None
        return replace(self.dataset, partition=self.dataset.partition.with_take(which))


@dataclass(frozen=True)
class FinetuneSpec:
    codec: str
    label: str
    options: dict[str, Any]
    train: Any  # harness.train.finetune.FinetuneConfig
    datasets: tuple[OODDataset, ...]
    in_distribution: tuple[DatasetConfig, ...]

    def adapter_label(self, ood: OODDataset) -> str:
        return f"{self.label}+{ood.name}"


def parse_finetune(raw: Any, path: str) -> FinetuneSpec:
    """The ``[finetune]`` table, checked completely (torch is not imported)."""
    from harness.datasets.base import DatasetError
    from harness.datasets.partition import Partition

    where = f"{path}: finetune"
    keys = {"codec", "label", "options", "train", "datasets", "in_distribution"}
    ft = _table(raw, where, keys, {"codec", "datasets"})
    options = ft.get("options", {})
    if not isinstance(options, dict):
        raise SuiteError(f"{where}.options: expected a table of codec options")
    train_raw = ft.get("train", {})
    if not isinstance(train_raw, dict):
        raise SuiteError(f"{where}.train: expected a table of fine-tuning options")
    try:
        from harness.train.finetune import config_from

        train = config_from(dict(train_raw))
    except (ValueError, TypeError) as exc:
        raise SuiteError(f"{where}.train: {exc}") from None
    datasets = []
    for i, d in enumerate(ft["datasets"]):
        w = f"{where}.datasets[{i}]"
        if not isinstance(d, dict):
            raise SuiteError(f"{w}: expected a table")
        d = dict(d)
        splits = d.pop("splits", None)
        if splits is not None:
            if not isinstance(splits, dict) or set(splits) != set(PARTS) or "partition" in d:
                raise SuiteError(f"{w}.splits: name the official split of each of {PARTS} (and no partition)")
            datasets.append(OODDataset(_dataset_config(d, w), {k: str(v) for k, v in splits.items()}))
            continue
        part = {**DEFAULT_PARTITION, **d.pop("partition", {}), "take": "test"}
        try:
            partition = Partition.from_table(part, f"{w}.partition")
        except DatasetError as exc:
            raise SuiteError(str(exc)) from None
        if set(dict(partition.fractions)) != set(PARTS):
            raise SuiteError(f"{w}.partition: needs exactly the parts {PARTS}")
        datasets.append(OODDataset(replace(_dataset_config(d, w), partition=partition)))
    if not datasets:
        raise SuiteError(f"{where}.datasets: name at least one OOD dataset")
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise SuiteError(f"{where}.datasets: each OOD dataset once, got {names}")
    in_dist = tuple(
        _dataset_config(d, f"{where}.in_distribution[{i}]") for i, d in enumerate(ft.get("in_distribution", []))
    )
    return FinetuneSpec(
        codec=str(ft["codec"]),
        label=str(ft.get("label", ft["codec"])),
        options=dict(options),
        train=train,
        datasets=tuple(datasets),
        in_distribution=in_dist,
    )


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml"))


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (``harness/suites/<name>.toml``) or by path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = SUITES_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise SuiteError(f"unknown suite {name_or_path!r}; known: {', '.join(suite_names())}")
    if not path.is_file():
        raise SuiteError(f"suite file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a byte-order mark (Windows editors) is not an error
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"suite file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
            "save it as UTF-8 (TOML files are UTF-8)"
        ) from None
    except OSError as exc:
        raise SuiteError(f"cannot read suite file {path}: {exc.strerror or exc}") from None
    return parse_suite(text, str(path))
