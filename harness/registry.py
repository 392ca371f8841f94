"""One registry idiom for codecs, corruptions, datasets and metrics.

A name maps to an object or to a lazy ``"module:attr"`` string, so listing names imports nothing heavy
(torch is only imported when an RDEIC codec is actually created). Third-party plugins register through
the entry-point group named by each registry (e.g. ``harness.codecs``). Collisions raise; unknown names
list the close ones.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(LookupError):
    """A name that is not registered, or registered twice."""


def import_target(target: str) -> object:
    """Resolve ``"package.module:attr"`` to the object it names."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise RegistryError(f"invalid target {target!r}: expected 'module:attr'")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def target_of(obj: object) -> str:
    """The ``"module:attr"`` string that imports ``obj`` again (used to rebuild plugins in workers)."""
    return f"{obj.__module__}:{obj.__qualname__}"  # type: ignore[attr-defined]


class Registry(Generic[T]):
    """Names to plugins. ``kind`` is used in messages, ``group`` is the entry-point group."""

    def __init__(self, kind: str, group: str) -> None:
        self.kind = kind
        self.group = group
        self._entries: dict[str, T | str] = {}
        self._entry_points_loaded = False

    def register(self, name: str, target: T | str | None = None) -> Callable[[T], T]:
        """Register ``target`` under ``name``; usable as a decorator when ``target`` is omitted."""

        def add(obj: T | str) -> T | str:
            self._load_entry_points()
            if name in self._entries and self._entries[name] is not obj:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        if target is not None:
            add(target)
            return lambda obj: obj
        return add  # type: ignore[return-value]

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            if ep.name in self._entries:
                raise RegistryError(f"{self.kind} plugin {ep.name!r} from entry point collides with a built-in")
            self._entries[ep.name] = ep.value

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def get(self, name: str) -> T:
        """The registered object, importing a lazy target on first use (a broken plugin fails loudly)."""
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(self.names())}"
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = import_target(entry)  # type: ignore[assignment]
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def target(self, name: str) -> str:
        """The importable ``module:attr`` of ``name`` without importing it when it is still lazy."""
        self._load_entry_points()
        if name not in self._entries:
            self.get(name)  # raises with suggestions
        entry = self._entries[name]
        return entry if isinstance(entry, str) else target_of(entry)

    def names(self, pattern: str = "*") -> list[str]:
        self._load_entry_points()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))


@dataclass(frozen=True)
class Preset:
    """A named configuration of a registered codec: a row, not a class (its cells store the resolved
    options, so a preset changing later never relabels old results)."""

    codec: str
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""


# The single table of built-ins. Keep these strings lazy: `--list` must not import torch.
CODECS: Registry = Registry("codec", "harness.codecs")
CODECS.register("jpeg2000", "harness.codecs.jpeg2000:JPEG2000")
CODECS.register("rdeic", "harness.codecs.rdeic.codec:RDEIC")
CODECS.register("rdeic-vae", "harness.codecs.rdeic.vae_only:RDEICVAE")  # VAE-only bound (METHODOLOGY §5)
# JPEG2000 baselines named by configuration (METHODOLOGY.md §5): never pick one silently.
CODECS.register("j2k-plain", Preset("jpeg2000", {"irreversible": True, "layers": 1}, "9/7, one layer, no markers"))
CODECS.register(
    "j2k-reversible",
    Preset("jpeg2000", {"irreversible": False}, "reversible 5/3 (the published baseline's transform)"),
)
CODECS.register(
    "j2k-resilient",
    Preset("jpeg2000", {"sop": True, "eph": True, "modesw": 4 | 16 | 32}, "SOP + EPH + RESTART|ERTERM|SEGMARK"),
)
CODECS.register("j2k-layers", Preset("jpeg2000", {"layers": 5}, "5 quality layers"))
CODECS.register(
    "j2k-tiles",
    Preset("jpeg2000", {"tile_size": 128, "precinct": 64, "codeblock": 32}, "128 px tiles, 64 px precincts"),
)
# RDEIC-tiny: the project's own small RDEIC, weights shipped in weights/rdeic-tiny/ (MODEL_CARD.md there).
TINY_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "rdeic-tiny"
CODECS.register(
    "rdeic-tiny@low",
    Preset(
        "rdeic",
        {"config": "tiny", "weights": str(TINY_WEIGHTS / "rdeic-tiny-low.safetensors")},
        "RDEIC-tiny, lower rate",
    ),
)
CODECS.register(
    "rdeic-tiny@high",
    Preset(
        "rdeic",
        {"config": "tiny", "weights": str(TINY_WEIGHTS / "rdeic-tiny-high.safetensors")},
        "RDEIC-tiny, higher rate",
    ),
)

# RDEIC-tiny's VAE alone (METHODOLOGY §5's VAE-only bound); the two rate points share their VAE tensors
CODECS.register(
    "rdeic-vae-tiny",
    Preset(
        "rdeic-vae",
        {"config": "tiny", "weights": str(TINY_WEIGHTS / "rdeic-tiny-low.safetensors")},
        "RDEIC-tiny's VAE alone: an upper bound on its quality, not a compressor",
    ),
)

# -- LDM-RSIC (issue #18): ELIC bits + decoder-side MEN guided by a generated distortion prior; JPEG2000* --------
CODECS.register("ldm-rsic", "harness.codecs.ldm_rsic.codec:LDMRSIC")
CODECS.register("j2k+men", "harness.codecs.ldm_rsic.codec:J2KMEN")
# ELIC alone is LDM-RSIC without the enhancer: the same codec (so `paired_with` can pair the two on the same
# corrupted streams), the same bits
CODECS.register("elic", Preset("ldm-rsic", {"enhance": False}, "ELIC alone: LDM-RSIC's bits, no enhancement"))
LDM_RSIC_TINY = Path(__file__).resolve().parent.parent / "weights" / "ldm-rsic-tiny"
_LDM_TINY = {
    "config": "tiny",
    "lam": 0.0032,
    "weights": str(LDM_RSIC_TINY / "ldm-rsic-tiny.safetensors"),
    "geometry": "tiled",  # the tiny MEN's native size is 64 px: larger images are enhanced in 64-px tiles
}
CODECS.register("ldm-rsic-tiny", Preset("ldm-rsic", _LDM_TINY, "LDM-RSIC-tiny (weights/ldm-rsic-tiny/MODEL_CARD.md)"))
CODECS.register("elic-tiny", Preset("ldm-rsic", {**_LDM_TINY, "enhance": False}, "ELIC-tiny alone (same bits)"))
CODECS.register(
    "j2k+men-tiny",
    Preset(
        "j2k+men",
        {
            "config": "tiny",
            "men_weights": str(LDM_RSIC_TINY / "j2k-men-tiny.safetensors"),
            "geometry": "tiled",
        },
        "JPEG2000* with LDM-RSIC-tiny's JPEG2000 MEN (same bits as jpeg2000)",
    ),
)

CORRUPTIONS: Registry = Registry("corruption", "harness.corruptions")
CORRUPTIONS.register("bsc", "corruptions.bsc:BinarySymmetricChannel")
CORRUPTIONS.register("burst", "corruptions.gilbert_elliott:GilbertElliott")
CORRUPTIONS.register("burst_fixed", "corruptions.burst_fixed:PublishedFixedBursts")
CORRUPTIONS.register("fixed_flips", "corruptions.burst_fixed:PublishedFixedFlips")
CORRUPTIONS.register("latent_gaussian", "corruptions.latent_noise:LatentGaussian")
CORRUPTIONS.register("mask_replace", "corruptions.latent_noise:MaskReplace")

DATASETS: Registry = Registry("dataset", "harness.datasets")
DATASETS.register("samples", "harness.datasets:BundledSamples")
DATASETS.register("folder", "harness.datasets.loaders:FolderDataset")
DATASETS.register("eurosat", "harness.datasets.loaders:EuroSAT")
DATASETS.register("tu_berlin", "harness.datasets.loaders:TUBerlin")
DATASETS.register("galaxy10", "harness.datasets.loaders:Galaxy10")
DATASETS.register("kodak", "harness.datasets.loaders:Kodak")
DATASETS.register("clic", "harness.datasets.loaders:CLIC")
DATASETS.register("tecnick", "harness.datasets.loaders:Tecnick")
DATASETS.register("lsdir", "harness.datasets.loaders:LSDIR")
DATASETS.register("standin_astro", "harness.datasets.standins:StandInAstro")
DATASETS.register("standin_sketch", "harness.datasets.standins:StandInSketch")
DATASETS.register("standin_terrain", "harness.datasets.standins:StandInTerrain")
# remote-sensing test sets of LDM-RSIC (issue #18) and an offline overhead stand-in
DATASETS.register("dota", "harness.datasets.remote_sensing:DOTA")
DATASETS.register("ucmerced", "harness.datasets.remote_sensing:UCMerced")
DATASETS.register("standin_overhead", "harness.datasets.remote_sensing:StandInOverhead")

METRICS: Registry = Registry("metric", "harness.metrics")
METRICS.register("psnr", "harness.metrics:PSNR")
METRICS.register("psnr_y", "harness.metrics:PSNR_Y")
METRICS.register("ssim", "harness.metrics.torch_metrics:SSIM")
METRICS.register("ms_ssim", "harness.metrics.torch_metrics:MS_SSIM")
METRICS.register("ms_ssim_rgb", "harness.metrics.torch_metrics:MS_SSIM_RGB")
METRICS.register("lpips", "harness.metrics.torch_metrics:LPIPS")
METRICS.register("lpips_vgg", "harness.metrics.torch_metrics:LPIPS_VGG")
METRICS.register("dists", "harness.metrics.torch_metrics:DISTS")
METRICS.register("niqe", "harness.metrics.torch_metrics:NIQE")

# -- DICM (issue #19): distributed coding with decoder-side information, its side-information corruptions
# (acts_on = "side_info", corruptions/side_info.py) and stereo datasets. DICM-tiny's weights: weights/dicm-tiny/.
DICM_TINY_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "dicm-tiny"
CODECS.register("dicm", "harness.codecs.dicm.codec:DICM")
CODECS.register(
    "dicm@tiny",
    Preset(
        "dicm",
        {"config": "tiny", "weights": str(DICM_TINY_WEIGHTS / "dicm-tiny.safetensors"), "time_input": "t"},
        "DICM-tiny (the project's own small DICM; side information: the other stereo view)",
    ),
)
CODECS.register(
    "dicm@tiny-no-side",
    Preset(
        "dicm",
        {
            "config": "tiny",
            "weights": str(DICM_TINY_WEIGHTS / "dicm-tiny.safetensors"),
            "time_input": "t",
            "ignore_side_info": True,
        },
        "DICM-tiny decoded without side information (w = 0, our reading of 'DICM without w': no official code path): "
        "the same streams, the no-side reference",
    ),
)
CORRUPTIONS.register("side_noise", "corruptions.side_info:SideNoise")
CORRUPTIONS.register("side_blur", "corruptions.side_info:SideBlur")
CORRUPTIONS.register("side_jpeg", "corruptions.side_info:SideJPEG")
CORRUPTIONS.register("side_jpeg2000", "corruptions.side_info:SideJPEG2000")
CORRUPTIONS.register("side_downscale", "corruptions.side_info:SideDownscale")
CORRUPTIONS.register("side_shift", "corruptions.side_info:SideShift")
CORRUPTIONS.register("side_rectify", "corruptions.side_info:SideRectify")
CORRUPTIONS.register("side_occlusion", "corruptions.side_info:SideOcclusion")
CORRUPTIONS.register("side_photometric", "corruptions.side_info:SidePhotometric")
CORRUPTIONS.register("side_temporal", "corruptions.side_info:SideTemporal")
CORRUPTIONS.register("side_wrong_pair", "corruptions.side_info:SideWrongPair")
CORRUPTIONS.register("side_missing", "corruptions.side_info:SideMissing")
DATASETS.register("kitti", "harness.datasets.stereo:KITTIStereo")
DATASETS.register("cityscapes", "harness.datasets.stereo:CityscapesStereo")
DATASETS.register("standin_stereo", "harness.datasets.stereo:StandInStereo")
