"""FID / KID on patches: the math on known cases, the patch protocol, the refusals and the plumbing."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import stored_cells, write_suite

from reports import distribution as dist


def test_fid_of_identical_sets_is_zero_and_matches_the_gaussian_formula():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(400, 8))
    assert dist.fid_from_features(f, f) == pytest.approx(0.0, abs=1e-8)
    # 1-d: N(0, 1) vs N(1, 4): (0-1)^2 + 1 + 4 - 2*sqrt(1*4) = 2
    assert dist.frechet_distance(np.array([0.0]), np.array([[1.0]]), np.array([1.0]), np.array([[4.0]])) == (
        pytest.approx(2.0)
    )
    # diagonal covariances: |dmu|^2 + sum (s1 + s2 - 2 sqrt(s1 s2))
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 3.0]), np.array([4.0, 2.0, 0.5])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert dist.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected)
    # general covariances: the same value as the matrix square root pytorch-fid uses
    from scipy import linalg

    x, y = rng.normal(size=(60, 12)), rng.normal(size=(80, 12)) @ rng.normal(size=(12, 12)) + 0.3
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    d = x.mean(0) - y.mean(0)
    reference = d @ d + np.trace(c1) + np.trace(c2) - 2 * np.trace(linalg.sqrtm(c1 @ c2).real)
    assert dist.fid_from_features(x, y) == pytest.approx(reference, rel=1e-9)


def test_kid_is_the_unbiased_polynomial_mmd():
    # by hand, d = 1, k(a, b) = (ab + 1)^3: X = {0, 1}, Y = {1, 2}
    # Kxx off-diagonal 1, Kyy off-diagonal 27, Kxy mean (1 + 1 + 8 + 27) / 4 = 9.25 -> 1 + 27 - 18.5 = 9.5
    assert dist.mmd2_unbiased(np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])) == pytest.approx(9.5)
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, spread = dist.kid_from_features(a, b, subsets=20, subset_size=200)
    shifted, _ = dist.kid_from_features(a, b + 1.0, subsets=20, subset_size=200)
    assert abs(same) < 3 * spread + 1e-3 and shifted > 10 * max(abs(same), spread)  # unbiased: ~0 for one law
    assert dist.kid_from_features(a, b, subsets=5) == dist.kid_from_features(a, b, subsets=5)  # seeded


def test_patch_protocol_grid_plus_shifted_grid():
    image = np.zeros((512, 768, 3), np.uint8)
    got = dist.patches(image)
    assert len(got) == dist.patch_count(512, 768) == 3 * 2 + 2 * 1  # 6 on the grid, 2 shifted by 128
    assert all(p.shape == (256, 256, 3) for p in got)
    assert dist.patch_count(255, 1000) == 0 and dist.patch_count(384, 384) == 2
    assert "shifted by 128" in dist.PROTOCOL


def _cells(n_images: int, size: int) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "dataset": "d",
                "preprocessing": "none",
                "image_id": f"i{i}",
                "image_sha256": f"i{i}",
                "height": size,
                "width": size,
                "codec": "c",
                "codec_label": "c@1",
                "corruption": "bsc",
                "scope": "all",
                "params": json.dumps({"ber": 0.0}),
                "level": "ber=0",
                "fec": None,
                "status": "ok",
            }
            for i in range(n_images)
        ]
    )


def test_without_the_inception_weights_nothing_is_computed_and_the_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    usable, why = dist.availability()
    assert not usable and "pt_inception-2015-12-05-6726825d.pth" in why
    with pytest.raises(FileNotFoundError, match="not computed"):
        dist.InceptionFeatures()
    table = dist.distribution_table(tmp_path, None, _cells(40, 512))  # 40 x (4 + 1) = 200 patches: enough for KID
    r = table.iloc[0]
    assert math.isnan(r["fid"]) and math.isnan(r["kid"])
    assert str(tmp_path / "torch" / "hub" / "pyiqa" / "pt_inception-2015-12-05-6726825d.pth") in r["note"]
    assert r["test_patches"] == 200 and r["protocol"] == dist.PROTOCOL


class _RandomProjection:
    """Not an Inception: random features for plumbing only (so its columns must not be called fid/kid)."""

    name = "randproj"
    standard = False

    def __init__(self) -> None:
        self.w = np.random.default_rng(0).normal(size=(3 * 16 * 16, 8))

    def __call__(self, batch: list[np.ndarray]) -> np.ndarray:
        small = np.stack([p[::16, ::16].reshape(-1) for p in batch]).astype(float) / 255.0
        return small @ self.w


def test_small_sets_are_refused_with_the_reason(tmp_path):
    table = dist.distribution_table(tmp_path, None, _cells(3, 300), extractor=_RandomProjection())
    r = table.iloc[0]
    assert r["test_patches"] == 3 and "below the minimum 100 (KID), 2048 (FID)" in r["note"]
    assert "fid" not in table and "frechet_randproj" in table and math.isnan(r["frechet_randproj"])


def test_plumbing_on_a_real_run_with_random_inception_weights(tmp_path, capsys):
    """Re-decodes a run's cells, cuts patches, runs the FID Inception with RANDOM weights: checks the path end to
    end; the values are not FID and the columns say so."""
    from harness.cli import main
    from harness.store import ResultStore

    suite = write_suite(
        tmp_path / "s.toml",
        codecs='[[codecs]]\ncodec = "jpeg2000"\nlabel = "j2k@0.5bpp"\noptions = { target_bpp = 0.5 }\n',
        corruptions='[[corruptions]]\ncorruption = "bsc"\nscopes = ["payload"]\ngrid = { ber = [0.0, 1e-3] }\n',
        seeds=1,
        limit_images=2,  # 1 patch per sample image: 2 + 2 decodes and 2 originals through the Inception
    )
    out = tmp_path / "run"
    assert main(["--suite", str(suite), "--out", str(out), "--no-progress"]) == 0
    cells = stored_cells(out)
    extractor = dist.InceptionFeatures(random_weights_for_tests=True)
    store = ResultStore(out / "results.sqlite")
    try:
        table = dist.distribution_table(out, store, cells, extractor=extractor, limits=dist.Limits(fid=3, kid=2))
    finally:
        store.close()
    assert len(table) == 2 and "fid" not in table and "kid" not in table
    assert set(table["protocol"].str.contains("NOT the FID Inception")) == {True}
    clean = table[table["level"] == "ber=0"].iloc[0]
    assert clean["test_patches"] == 2 and clean["ref_patches"] == 2, clean.to_dict()
    assert math.isfinite(clean["mmd2_inception"])  # KID's estimator ran on the Inception features
    assert math.isnan(clean["frechet_inception"]) and "FID not computed: 2 patches per set" in clean["note"]
    capsys.readouterr()
    assert main(["report", str(out), "--no-grid", "--distribution"]) == 0  # no weights here: "not computed"
    md = (out / "report.md").read_text()
    assert "## Distribution metrics (FID / KID on patches)" in md and "not computed" in md
    assert (out / "report" / "distribution.csv").is_file()
