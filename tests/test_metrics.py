"""Metrics registry: variants, agreement with pyiqa, offline weight detection, no metric without its weights."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

from harness.metrics import PSNR, PSNR_Y, Unavailable, availability, create_metric
from harness.metrics import weights as w
from harness.registry import METRICS

EXPECTED = {"psnr", "psnr_y", "ssim", "ms_ssim", "ms_ssim_rgb", "lpips", "lpips_vgg", "dists", "niqe"}


@pytest.fixture
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (192, 200, 3), dtype=np.uint8)
    ref = np.ascontiguousarray(np.repeat(np.repeat(ref[::4, ::4], 4, 0), 4, 1)[:192, :200])  # some structure
    noisy = np.clip(ref.astype(int) + rng.normal(0, 8, ref.shape).round(), 0, 255).astype(np.uint8)
    return noisy, ref


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def test_registry_names_and_descriptions():
    assert set(METRICS.names()) >= EXPECTED
    for name in EXPECTED:
        cls = METRICS.get(name)
        assert cls.name == name and cls.description, name
    assert "Y" in METRICS.get("ssim").description and "RGB" in METRICS.get("ms_ssim_rgb").description


def test_listing_imports_neither_torch_nor_pyiqa():
    code = (
        "import sys, harness.registry, harness.metrics, harness.cli;"
        "from harness.cli import list_everything; list_everything();"
        "print(sorted(m for m in ('torch', 'pyiqa', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_psnr_exact_and_inf():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255  # mse = 255^2 / 48
    assert PSNR()(b, a) == pytest.approx(10 * math.log10(48))
    assert PSNR()(a, a) == math.inf and PSNR_Y()(a, a) == math.inf
    with pytest.raises(ValueError):
        PSNR()(a, a[:2])


def test_psnr_variants_agree_with_pyiqa(pair):
    torch = pytest.importorskip("torch")
    pyiqa = pytest.importorskip("pyiqa")
    out, ref = pair
    x, y = (torch.from_numpy(i).permute(2, 0, 1)[None].double() / 255 for i in (out, ref))
    assert PSNR()(out, ref) == pytest.approx(
        float(pyiqa.create_metric("psnr", device="cpu")(x, y)), abs=1e-3
    )  # pyiqa computes in float32
    assert PSNR_Y()(out, ref) == pytest.approx(
        float(pyiqa.create_metric("psnry", device="cpu")(x, y)), abs=1e-3
    )  # pyiqa computes in float32
    assert PSNR_Y()(out, ref) != pytest.approx(PSNR()(out, ref), abs=0.05)  # really a different variant


@pytest.mark.parametrize("name", ["ssim", "ms_ssim", "ms_ssim_rgb"])
def test_structural_metrics_without_weights(name, pair):
    pytest.importorskip("pyiqa")
    out, ref = pair
    metric = create_metric(name)
    assert metric.available
    assert metric(ref, ref) == pytest.approx(1.0, abs=1e-6)
    score = metric(out, ref)
    assert 0.3 < score < 0.999
    assert metric(out, ref) == score  # deterministic, model reused


def test_ms_ssim_on_too_small_images_is_nan_not_an_exception(capsys):
    pytest.importorskip("pyiqa")
    small = np.zeros((64, 64, 3), np.uint8)
    assert math.isnan(create_metric("ms_ssim")(small, small))
    assert "at least" in capsys.readouterr().err


def test_weight_table_matches_what_pyiqa_and_torchvision_load():
    pytest.importorskip("pyiqa")
    from pyiqa.archs import dists_arch, lpips_arch, niqe_arch
    from torchvision import models

    assert models.AlexNet_Weights.IMAGENET1K_V1.url.endswith("/" + w.ALEXNET.name)
    assert models.VGG16_Weights.IMAGENET1K_V1.url.endswith("/" + w.VGG16.name)
    assert lpips_arch.default_model_urls["0.1_alex"].endswith("/" + w.LPIPS_ALEX.name)
    assert lpips_arch.default_model_urls["0.1_vgg"].endswith("/" + w.LPIPS_VGG.name)
    assert dists_arch.default_model_urls["url"].endswith("/" + w.DISTS.name)
    assert niqe_arch.default_model_urls["niqe"].endswith("/" + w.NIQE.name)


def test_torch_home_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert w.torch_home() == tmp_path
    assert w.LPIPS_ALEX.path() == tmp_path / "hub" / "pyiqa" / "LPIPS_v0.1_alex-df73285e.pth"
    monkeypatch.delenv("TORCH_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert w.torch_home() == tmp_path / "xdg" / "torch"


@pytest.mark.parametrize("name", ["lpips", "lpips_vgg", "dists", "niqe"])
def test_missing_weights_mean_no_metric_and_one_message(name, empty_torch_home, pair, capsys, monkeypatch):
    import harness.metrics as hm

    monkeypatch.setattr(hm, "_warned", set())
    usable, why = availability(name)
    assert not usable and str(empty_torch_home) in why
    metric = create_metric(name)
    again = create_metric(name)
    assert isinstance(metric, Unavailable) and isinstance(again, Unavailable)
    assert math.isnan(metric(*pair))
    err = capsys.readouterr().err
    assert err.count(f"metric {name!r} is not computed") == 1  # said once
    for f in METRICS.get(name).requires:
        assert str(f.path()) in err  # names the file and where it goes


def test_files_with_the_wrong_content_are_refused(empty_torch_home):
    """Random (or truncated) weights under the right names are not the published weights."""
    for f in (w.ALEXNET, w.LPIPS_ALEX):
        f.path().parent.mkdir(parents=True, exist_ok=True)
        f.path().write_bytes(b"random weights")
    usable, why = availability("lpips")
    assert not usable and "sha256 prefix" in why
    assert isinstance(create_metric("lpips", warn=False), Unavailable)


def test_matching_hash_makes_a_file_usable(empty_torch_home):
    """The check itself: a file whose sha256 starts with the prefix in its name passes."""
    import hashlib

    data = next(b"x%d" % i for i in range(10**6) if hashlib.sha256(b"x%d" % i).hexdigest().startswith("ab"))
    f = w.WeightFile("pyiqa", f"toy-{hashlib.sha256(data).hexdigest()[:8]}.pth", "test")
    f.path().parent.mkdir(parents=True)
    f.path().write_bytes(data)
    assert w.problem_with(f) is None
    assert w.weights_hashes((f,)) == {f.name: hashlib.sha256(data).hexdigest()}


def test_lpips_plumbing_with_random_weights_only(monkeypatch, pair):
    """Plumbing only (uint8 -> tensor -> pyiqa LPIPS -> float): a random backbone, never a reported number."""
    pytest.importorskip("pyiqa")
    import torchvision
    from pyiqa.archs import lpips_arch

    from harness.metrics.torch_metrics import LPIPS

    monkeypatch.setattr(lpips_arch, "load_pretrained_network", lambda *a, **k: None)
    random_alexnet = torchvision.models.alexnet
    monkeypatch.setattr(lpips_arch.models, "alexnet", lambda weights=None: random_alexnet(weights=None))
    metric = LPIPS()
    out, ref = pair
    assert metric(ref, ref) == pytest.approx(0.0, abs=1e-6)
    score = metric(out, ref)
    assert math.isfinite(score) and abs(score) > 1e-7  # random heads may be negative: plumbing, not a value


def test_metrics_check_command(empty_torch_home, capsys):
    from harness.cli import main

    assert main(["metrics", "check"]) == 0
    text = capsys.readouterr().out
    assert "ok  psnr " in text and "MISSING lpips " in text and str(empty_torch_home) in text
    assert "MISSING fid, kid " in text  # the set metrics, with the file they need and where it goes
    assert str(empty_torch_home / "hub" / "pyiqa" / "pt_inception-2015-12-05-6726825d.pth") in text
    assert main(["metrics", "check", "--metric", "lpips"]) == 1
    assert main(["metrics", "check", "--metric", "lpipz"]) == 2


def test_a_run_goes_on_without_a_metric_whose_weights_are_missing(empty_torch_home, tmp_path, capsys, monkeypatch):
    import harness.metrics as hm
    from harness.cli import main

    monkeypatch.setattr(hm, "_warned", set())
    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "m"\nseed = 1\nseeds = 1\nmetrics = ["psnr", "lpips"]\ntimeout_s = 30\n'
        '[[datasets]]\nname = "samples"\nlimit_images = 1\n'
        '[[codecs]]\ncodec = "jpeg2000"\nlabel = "j"\noptions = { target_bpp = 0.5 }\n'
        '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0] }\n'
    )
    assert main(["--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("metric 'lpips' is not computed") == 1
    table = (tmp_path / "run" / "summary.md").read_text()  # the full table (the terminal shows a headline)
    assert "Not computed in this run" in table and "lpips (ok)" not in table
    summary = (tmp_path / "run" / "summary.csv").read_text()
    assert "lpips_n" in summary
    import pandas as pd

    row = pd.read_csv(tmp_path / "run" / "summary.csv").iloc[0]
    assert row["lpips_n"] == 0 and math.isnan(row["lpips"]) and row["psnr_n"] == 1
    prov = hm.provenance(["psnr", "lpips"])
    assert prov["psnr"]["available"] == "True" and prov["lpips"]["available"] == "False"


# -- one image never loses a run: every metric declares the smallest image it scores ------------------------------
def _flat_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:height, 0:width]
    ref = np.stack([xx * 3 % 256, yy * 5 % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    out = ref.copy()
    out[::2, ::3] ^= 8
    return out, ref


@pytest.mark.parametrize("name", ["psnr", "psnr_y", "ssim", "ms_ssim", "ms_ssim_rgb"])
def test_below_its_declared_size_a_metric_gives_nan_and_says_why_at_it_a_number(name, capsys):
    """The oracle is the library itself: at ``min_side`` it scores, one pixel less on either side is NaN (pyiqa's
    ssim raised a RuntimeError on an 8x8 image inside the clean-decode control, losing the whole run)."""
    if name != "psnr" and name != "psnr_y":
        pytest.importorskip("pyiqa")
    metric = METRICS.get(name)()
    side = metric.min_side
    assert math.isfinite(metric(*_flat_pair(side, side + 40)))
    if side == 1:
        return
    for shape in ((side - 1, side + 40), (side + 40, side - 1)):
        assert math.isnan(metric(*_flat_pair(*shape)))
    err = capsys.readouterr().err
    assert err.count(f"needs images of at least {side} px a side") == 1, err  # once per metric, not per image


def _random_backbones(monkeypatch) -> None:
    """The architectures of LPIPS and DISTS with random weights: their size limits, never a reported number."""
    import torchvision
    from pyiqa.archs import dists_arch, lpips_arch

    alexnet, vgg16 = torchvision.models.alexnet, torchvision.models.vgg16
    monkeypatch.setattr(lpips_arch.models, "alexnet", lambda *a, **k: alexnet(weights=None))
    monkeypatch.setattr(lpips_arch.models, "vgg16", lambda *a, **k: vgg16(weights=None))
    monkeypatch.setattr(dists_arch.models, "vgg16", lambda *a, **k: vgg16(weights=None))


@pytest.mark.slow
@pytest.mark.parametrize(("name", "arch"), [("lpips", "alex"), ("lpips_vgg", "vgg"), ("dists", None), ("niqe", None)])
def test_declared_sizes_of_the_weighted_metrics_are_where_their_architectures_stop(name, arch, monkeypatch):
    """Weights are not needed to know where an architecture stops: random backbones (and random NIQE statistics)
    score an image of ``min_side`` and raise one pixel below it (DISTS scores any size)."""
    pytest.importorskip("pyiqa")
    import torch
    from pyiqa.archs import dists_arch, lpips_arch
    from pyiqa.archs.niqe_arch import calculate_niqe

    _random_backbones(monkeypatch)
    side = METRICS.get(name).min_side
    if name == "niqe":
        mu, a = torch.rand(1, 36), torch.rand(1, 36, 36)
        cov = a @ a.transpose(1, 2) + torch.eye(36)

        def score(x, y):
            return calculate_niqe(x, 0, True, "yiq", mu, cov)
    else:
        net = lpips_arch.LPIPS(pretrained=False, net=arch, pnet_rand=True) if arch else dists_arch.DISTS(False)
        score = net.eval()
    with torch.inference_mode():
        x = torch.rand(1, 3, side, side + 40)
        assert torch.isfinite(score(x, torch.rand_like(x))).all()
        if side > 1:
            with pytest.raises(RuntimeError):
                x = torch.rand(1, 3, side - 1, side + 40)
                score(x, torch.rand_like(x))


def test_measure_turns_one_metrics_failure_into_nan_and_keeps_the_others(capsys):
    from harness.metrics import Metric, measure

    class Breaks(Metric):
        name = "breaks"

        def __call__(self, output, reference):
            raise RuntimeError("kernel larger than the input\nsecond line")

    metrics = {"psnr": PSNR(), "breaks": Breaks()}
    out, ref = _flat_pair(8, 8)
    for _ in range(3):
        values = measure(metrics, out, ref)
        assert math.isnan(values["breaks"]) and values["psnr"] == PSNR()(out, ref)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["metric 'breaks' failed on a 8x8 image (RuntimeError: kernel larger than the input); NaN"]


def test_a_folder_with_an_image_too_small_for_ssim_stores_every_cell(tmp_path, capsys):
    """The issue's case: one 8x8 and one 48x48 image, SSIM among the metrics. Before: a traceback from the
    clean-decode control, 0 cells stored. Now: all cells, SSIM NaN on the 8x8 image only, said once."""
    pytest.importorskip("pyiqa")
    from PIL import Image

    from harness.cli import main
    from harness.store import ResultStore

    folder = tmp_path / "images"
    folder.mkdir()
    for side in (8, 48):
        Image.fromarray(_flat_pair(side, side)[1]).save(folder / f"img{side}.png")
    suite = tmp_path / "s.toml"
    suite.write_text(
        'name = "small"\nseed = 1\nseeds = 1\nmetrics = ["psnr", "ssim"]\ntimeout_s = 60\n'
        f'[[datasets]]\nname = "folder"\npath = "{folder}"\n'
        '[[codecs]]\ncodec = "jpeg2000"\nlabel = "j"\noptions = { target_bpp = 4.0, numres = 1 }\n'
        '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0, 1e-3] }\n'
    )
    assert main(["--suite", str(suite), "--out", str(tmp_path / "run"), "--no-progress", "--workers", "1"]) == 0
    assert capsys.readouterr().err.count("needs images of at least 11 px a side") == 1
    store = ResultStore(tmp_path / "run" / "results.sqlite")
    try:
        cells = store.cells_frame()
    finally:
        store.close()
    assert len(cells) == 4 and set(cells["status"]) == {"ok"}
    small = cells["height"] == 8
    assert cells.loc[small, "metric.ssim"].isna().all() and cells.loc[~small, "metric.ssim"].notna().all()
    assert cells["metric.psnr"].notna().all()
