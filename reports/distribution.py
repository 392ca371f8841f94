"""Distribution metrics over a set: FID and KID on image patches, as the RDEIC paper reports them.

Protocol (HiFiC, Mentzer et al. 2020, which RDEIC follows): every image of the set is cut into
non-overlapping 256×256 patches, plus a second grid of 256×256 patches shifted by 128 px in both directions;
each patch goes through the FID Inception-v3 (pytorch-fid's port of the TensorFlow 2015-12-05 graph, the
weights pyiqa 0.1.16 uses for its ``fid``), bilinearly resized to 299×299 inside the network as pytorch-fid
does, and its 2048-d pool features are kept. FID is the Fréchet distance between Gaussians fitted to the two
feature sets; KID is the unbiased squared MMD with the polynomial kernel k(x, y) = (x·y/d + 1)³, averaged
over 100 seeded random subsets of at most 1000 patches per set (clean-fid's and pyiqa's defaults).

Sets, per group (dataset, preprocessing, codec config, corruption, scope, level):

    reference = patches of the original images of the group (each image once)
    test      = patches of every ok decode of the group (each image × seed), re-decoded from the run's cache
                by :mod:`reports.redecode` and checked against the stored hashes (the store keeps no pixels)

Failed decodes have no pixels: the metrics are over ok decodes, like every quality column, with the counts
beside them. A set too small for the metric is refused, with the reason, never estimated:

- FID needs at least :data:`MIN_PATCHES_FID` = 2048 patches per set: below the feature dimension the sample
  covariance is singular and FID is dominated by its small-sample bias;
- KID (unbiased) needs at least :data:`MIN_PATCHES_KID` = 100 patches per set.

Without the verified Inception weights file (:data:`harness.metrics.weights.FID_INCEPTION`) nothing is
computed and the table says which file to put where. Values from any other feature extractor (random
weights in the plumbing tests) are never labelled FID/KID: their columns are named after the extractor.

Opt-in (it re-decodes every ok cell of each large-enough group): ``evaluate.py report RUN_DIR
--distribution`` writes ``report/distribution.csv`` and adds the table to the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import linalg

from harness.metrics.weights import FID_INCEPTION, how_to_provide, problems
from harness.status import Status

PATCH = 256
SHIFT = 128
MIN_PATCHES_FID = 2048
MIN_PATCHES_KID = 100
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 0
FEATURE_DIM = 2048

PROTOCOL = (
    f"{PATCH}x{PATCH} patches: non-overlapping grid + second grid shifted by {SHIFT} px (HiFiC protocol); "
    "FID Inception-v3 pool features (2048-d, pytorch-fid weights, bilinear resize to 299); "
    f"KID: polynomial kernel, {KID_SUBSETS} subsets of <= {KID_SUBSET_SIZE}"
)


# -- math ---------------------------------------------------------------------------------------------------------
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½) between N(mu1, S1) and N(mu2, S2) (float64).

    Tr((S1 S2)^½) is the sum of the square roots of the eigenvalues of S1 S2, which are those of the symmetric
    PSD matrix S1^½ S2 S1^½: two symmetric eigendecompositions instead of a general matrix square root (the
    same value as pytorch-fid's ``sqrtm``; ~10x faster at 2048-d, and no spurious imaginary parts)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    w, v = linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = linalg.eigvalsh(root1 @ s2 @ root1)
    tr_covmean = float(np.sqrt(np.clip(inner, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (rows = samples)."""
    return frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the KID kernel k(a, b) = (a·b/d + 1)³ (Bińkowski et al. 2018)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m, n, d = len(x), len(y), x.shape[1]
    if m < 2 or n < 2:
        raise ValueError("the unbiased MMD needs at least two samples per set")
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean()
    )


def kid_from_features(
    f1: np.ndarray,
    f2: np.ndarray,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    seed: int = KID_SEED,
) -> tuple[float, float]:
    """(mean, std) over ``subsets`` seeded random subsets of size min(n1, n2, subset_size) drawn without
    replacement from each set, as clean-fid and pyiqa compute KID (there with the global RNG)."""
    rng = np.random.default_rng(seed)
    m = min(len(f1), len(f2), subset_size)
    values = [
        mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


# -- patches ------------------------------------------------------------------------------------------------------
def _starts(length: int, offset: int) -> range:
    return range(offset, length - PATCH + 1, PATCH)


def patch_count(height: int, width: int) -> int:
    """How many patches :func:`patches` cuts from an image of this size."""
    return sum(len(_starts(height, o)) * len(_starts(width, o)) for o in (0, SHIFT))


def patches(image: np.ndarray) -> list[np.ndarray]:
    """The HiFiC patch set of one HxWx3 uint8 image: the 256-px grid, then the grid shifted by 128 px."""
    h, w = image.shape[:2]
    return [image[y : y + PATCH, x : x + PATCH] for o in (0, SHIFT) for y in _starts(h, o) for x in _starts(w, o)]


# -- features -----------------------------------------------------------------------------------------------------
def availability() -> tuple[bool, str]:
    """(usable, why / what it uses) for FID/KID, checked on files only (for ``metrics check``)."""
    import importlib.util

    absent = [p for p in ("torch", "pyiqa") if importlib.util.find_spec(p) is None]
    if absent:
        return False, f"package(s) {', '.join(absent)} not installed"
    found = problems((FID_INCEPTION,))
    if found:
        return False, "; ".join(found) + f" (get {how_to_provide((FID_INCEPTION,))}, on a machine with internet)"
    return True, FID_INCEPTION.name


class InceptionFeatures:
    """Pool features (2048-d) of the FID Inception-v3, built from the verified weights file only.

    ``random_weights_for_tests`` builds the same network untrained: plumbing tests only; such an extractor is
    not ``standard`` and its values are never called FID/KID."""

    name = "inception"

    def __init__(self, *, random_weights_for_tests: bool = False, batch: int = 16) -> None:
        self.standard = not random_weights_for_tests
        self.batch = batch
        if self.standard:
            usable, why = availability()
            if not usable:
                raise FileNotFoundError(f"FID/KID not computed: {why}")
        self._model: Any = None

    def _build(self) -> Any:
        from unittest import mock

        import torch
        from pyiqa.archs import inception

        def load(net: Any, _url: str, strict: bool = True, weight_keys: str | None = None) -> None:
            if self.standard:  # the verified local file, never a download
                state = torch.load(FID_INCEPTION.path(), map_location="cpu", weights_only=True)
                net.load_state_dict(state, strict=True)

        with mock.patch.object(inception, "load_pretrained_network", load):
            model = inception.InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)
        return model.eval()

    def __call__(self, batch: list[np.ndarray]) -> np.ndarray:
        import torch

        if self._model is None:
            self._model = self._build()
        out = []
        with torch.inference_mode():
            for i in range(0, len(batch), self.batch):
                x = torch.from_numpy(np.stack(batch[i : i + self.batch])).permute(0, 3, 1, 2).float().div_(255.0)
                feats = self._model(x, resize_input=True, normalize_input=True)[0]
                out.append(feats.reshape(len(x), -1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


# -- the table ----------------------------------------------------------------------------------------------------
GROUP = ["dataset", "preprocessing", "codec_label", "corruption", "scope", "level"]


@dataclass
class Limits:
    fid: int = MIN_PATCHES_FID
    kid: int = MIN_PATCHES_KID


def _columns(extractor_name: str, standard: bool) -> tuple[str, str, str]:
    if standard:
        return "fid", "kid", "kid_std"
    return f"frechet_{extractor_name}", f"mmd2_{extractor_name}", f"mmd2_{extractor_name}_std"


def distribution_table(
    run_dir: Path,
    store: Any,
    cells: pd.DataFrame,
    *,
    extractor: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    limits: Limits | None = None,
    load_original: Callable[[dict], np.ndarray | None] | None = None,
    timeout_s: float = 30.0,
) -> pd.DataFrame:
    """One row per group with patch counts and FID/KID (or the reason they were not computed).

    ``extractor`` defaults to :class:`InceptionFeatures` (only with its verified weights); another one (tests)
    gets columns named after it, never ``fid``/``kid``. Groups with FEC are left out (not re-decoded)."""
    from reports.redecode import Redecoder
    from reports.redecode import load_original as default_original
    from reports.tables import prepare

    limits = limits or Limits()
    load_original = load_original or default_original
    cells = prepare(cells) if "level_value" not in cells else cells
    if "fec_label" in cells:
        cells = cells[cells["fec_label"] == "none"]
    missing_why = None
    if extractor is None:
        try:
            extractor = InceptionFeatures()
        except FileNotFoundError as exc:
            missing_why = str(exc)
    name = getattr(extractor, "name", "features")
    standard = extractor is None or bool(getattr(extractor, "standard", False))
    fid_col, kid_col, kid_std_col = _columns(name, standard)
    patch_rule = PROTOCOL.split(";")[0]
    protocol = PROTOCOL if standard else f"{patch_rule}; features: {name} (NOT the FID Inception, so not FID/KID)"
    keys = [k for k in GROUP if k in cells]
    ref_cache: dict[str, np.ndarray | None] = {}
    rows = []
    redecoder = Redecoder(run_dir, store, timeout_s) if missing_why is None else None
    try:
        for group, g in cells.groupby(keys, sort=True, dropna=False):
            row: dict[str, Any] = dict(zip(keys, group, strict=True))
            row["codec"] = row.pop("codec_label")
            ok = g[g["status"] == Status.OK.value]
            images = ok.drop_duplicates("image_sha256")
            n_test = int(sum(patch_count(h, w) for h, w in zip(ok["height"], ok["width"], strict=True)))
            n_ref = int(sum(patch_count(h, w) for h, w in zip(images["height"], images["width"], strict=True)))
            row.update(cells=len(g), n_ok=len(ok), images=len(images), test_patches=n_test, ref_patches=n_ref)
            row.update({fid_col: math.nan, kid_col: math.nan, kid_std_col: math.nan})
            n = min(n_test, n_ref)
            notes = [missing_why] if missing_why else []
            if n < limits.kid:
                minimum = f"{limits.kid} (KID), {limits.fid} (FID)"
                notes.append(f"not computed: {n} patches per set, below the minimum {minimum}")
            if not notes:
                test, ref, lost = _features(ok, images, extractor, redecoder, load_original, ref_cache)
                if lost:
                    notes.append(lost)
                n = min(len(test), len(ref))
                row.update(test_patches=len(test), ref_patches=len(ref))
                if n >= limits.kid:
                    row[kid_col], row[kid_std_col] = kid_from_features(ref, test)
                else:
                    notes.append(f"KID not computed: {n} patches per set after re-decoding, below {limits.kid}")
                if n >= limits.fid:
                    row[fid_col] = fid_from_features(ref, test)
                else:
                    notes.append(f"FID not computed: {n} patches per set, below the minimum {limits.fid}")
            row["protocol"] = protocol
            row["note"] = "; ".join(notes)
            rows.append(row)
    finally:
        if redecoder is not None:
            redecoder.close()
    return pd.DataFrame(rows)


def _features(
    ok: pd.DataFrame,
    images: pd.DataFrame,
    extractor: Callable[[list[np.ndarray]], np.ndarray],
    redecoder: Any,
    load_original: Callable[[dict], np.ndarray | None],
    ref_cache: dict[str, np.ndarray | None],
) -> tuple[np.ndarray, np.ndarray, str]:
    """(reference features, test features, note on what could not be reproduced)."""
    lost_test = lost_ref = 0
    test: list[np.ndarray] = []
    for row in ok.to_dict("records"):
        out = redecoder.decode(row)
        if out.image is None:
            lost_test += 1
            continue
        if pt := patches(out.image):
            test.append(extractor(pt))
    ref: list[np.ndarray] = []
    for row in images.to_dict("records"):
        sha = row["image_sha256"]
        if sha not in ref_cache:
            original = load_original(row)
            ref_cache[sha] = extractor(patches(original)) if original is not None and patches(original) else None
        if ref_cache[sha] is None:
            lost_ref += 1
        else:
            ref.append(ref_cache[sha])
    note = []
    if lost_test:
        note.append(f"{lost_test} ok decode(s) not reproduced (left out)")
    if lost_ref:
        note.append(f"{lost_ref} original(s) not loadable (left out)")
    return _stack(ref), _stack(test), "; ".join(note)


def _stack(parts: Iterable[np.ndarray]) -> np.ndarray:
    parts = list(parts)
    return np.concatenate(parts) if parts else np.zeros((0, FEATURE_DIM))
