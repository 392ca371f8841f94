"""Which weight files each learned metric needs, and whether they are in ``$TORCH_HOME``: without importing
torch and without ever triggering a download (there is no internet on the evaluation machines; a download
attempt hangs, then fails).

pyiqa caches its metric heads in ``$TORCH_HOME/hub/pyiqa/`` and torchvision caches ImageNet backbones in
``$TORCH_HOME/hub/checkpoints/``; both skip the download when the file is already there. Every file name
below that ends in ``-<8 hex>`` carries the first hex digits of the file's sha256 (torch.hub's convention,
which pyiqa follows: the LPIPS heads inside the ``lpips`` wheel hash to exactly these prefixes). A file whose
content does not match its name is treated as missing: a metric is never reported with weights that are not
the published ones (random or truncated files included).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


@dataclass(frozen=True)
class WeightFile:
    """One file a metric loads: ``folder`` is relative to ``$TORCH_HOME/hub``."""

    folder: str  # "pyiqa" (metric heads) or "checkpoints" (torchvision backbones)
    name: str
    source: str  # where a person gets it (shown by `evaluate.py metrics check`; never fetched by the harness)

    def path(self, home: Path | None = None) -> Path:
        return (home or torch_home()) / "hub" / self.folder / self.name

    @property
    def sha256_prefix(self) -> str | None:
        m = _HASH_IN_NAME.search(self.name)
        return m.group(1) if m else None


_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"
_TV = "https://download.pytorch.org/models/"

ALEXNET = WeightFile("checkpoints", "alexnet-owt-7be5be79.pth", _TV + "alexnet-owt-7be5be79.pth")
VGG16 = WeightFile("checkpoints", "vgg16-397923af.pth", _TV + "vgg16-397923af.pth")
LPIPS_ALEX = WeightFile(
    "pyiqa",
    "LPIPS_v0.1_alex-df73285e.pth",
    _PYIQA + "LPIPS_v0.1_alex-df73285e.pth (identical to lpips/weights/v0.1/alex.pth in the `lpips` wheel)",
)
LPIPS_VGG = WeightFile(
    "pyiqa",
    "LPIPS_v0.1_vgg-a78928a0.pth",
    _PYIQA + "LPIPS_v0.1_vgg-a78928a0.pth (identical to lpips/weights/v0.1/vgg.pth in the `lpips` wheel)",
)
DISTS = WeightFile("pyiqa", "DISTS_weights-f5e65c96.pth", _PYIQA + "DISTS_weights-f5e65c96.pth")
NIQE = WeightFile("pyiqa", "niqe_modelparameters.mat", _PYIQA + "niqe_modelparameters.mat")
#: The FID Inception-v3 (TensorFlow 2015-12-05 graph ported by pytorch-fid), as pyiqa 0.1.16 loads it for fid:
#: ``pyiqa/archs/inception.py`` fetches it into ``torch.hub.get_dir()/pyiqa`` and skips the download when present.
FID_INCEPTION = WeightFile(
    "pyiqa",
    "pt_inception-2015-12-05-6726825d.pth",
    _PYIQA + "pt_inception-2015-12-05-6726825d.pth (the same file as pytorch-fid's release asset "
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth)",
)


def torch_home() -> Path:
    """``torch.hub``'s rule without importing torch: ``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else
    ``~/.cache/torch``."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(cache) / "torch"


_verified: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) for the life of the process (vgg16 is 528 MB)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _verified[key] = h.hexdigest()
    return _verified[key]


def problem_with(f: WeightFile, home: Path | None = None) -> str | None:
    """Why ``f`` cannot be used (None when it is present and matches the hash in its name)."""
    p = f.path(home)
    if not p.is_file():
        return f"missing {p}"
    prefix = f.sha256_prefix
    if prefix and not sha256_of(p).startswith(prefix):
        return f"{p} does not match the sha256 prefix {prefix} in its name (not the published weights)"
    return None


def problems(files: tuple[WeightFile, ...], home: Path | None = None) -> list[str]:
    return [msg for f in files if (msg := problem_with(f, home))]


def weights_hashes(files: tuple[WeightFile, ...], home: Path | None = None) -> dict[str, str]:
    """File name -> sha256 of the files a metric ran with (for provenance)."""
    return {f.name: sha256_of(f.path(home)) for f in files if f.path(home).is_file()}


def how_to_provide(files: tuple[WeightFile, ...]) -> str:
    return "; ".join(f"{f.name} from {f.source}" for f in files)
