"""Dataset loaders (registry ``DATASETS``). The data itself lives in the top-level ``datasets/`` folder,
which is deliberately *not* a Python package: a package of that name would shadow Hugging Face ``datasets``.

Every image carries the sha256 of its decoded pixels; cells are keyed by that, never by file name.

- :mod:`.base`: ``ImageEntry``, the ``Dataset`` contract, subsets; :mod:`.decode`: decoding to uint8 RGB by
  what each file declares (bit depth, maxval, alpha, orientation), the conversion rules, ``max_pixels``;
- :mod:`.stores`: folder / zip / parquet / HDF5 / hub readers (indexed lazily);
- :mod:`.loaders`: the card-described datasets (EuroSAT, TU-Berlin, Galaxy10, Kodak, CLIC, Tecnick, LSDIR,
  generic ``folder``); :mod:`.samples`: the bundled samples; :mod:`.standins`: offline domain stand-ins;
- :mod:`.selection`: subset, preprocessing policy and per-image errors for a run; :mod:`.hub`: hub access.
"""

from harness.datasets.base import (
    DEFAULT_MAX_PIXELS,
    Dataset,
    DatasetError,
    ImageEntry,
    cache_root,
    class_counts,
    create_dataset,
    data_root,
    decode_image,
    load_rgb,
    read_card,
    stratified_subset,
)
from harness.datasets.decode import Decoded
from harness.datasets.samples import BundledSamples

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "BundledSamples",
    "Dataset",
    "DatasetError",
    "Decoded",
    "ImageEntry",
    "cache_root",
    "class_counts",
    "create_dataset",
    "data_root",
    "decode_image",
    "load_rgb",
    "read_card",
    "stratified_subset",
]
