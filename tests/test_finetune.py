"""Adapter fine-tuning (harness/train/finetune.py) on the shipped RDEIC-tiny and an offline stand-in domain:
exact freezing, a decreasing loss, bit-exact adapter round trips, refusal for another base, identical bitstreams."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressai")

from harness.cells import Cell  # noqa: E402
from harness.cli import main  # noqa: E402
from harness.codecs.base import CodecError, create_codec  # noqa: E402
from harness.codecs.rdeic.adapter import read_sidecar  # noqa: E402
from harness.datasets.partition import Partition  # noqa: E402
from harness.datasets.selection import select_images  # noqa: E402
from harness.train.finetune import FinetuneConfig, Perceptual, Validator, adapter_loss  # noqa: E402

BASE = "rdeic-tiny@low"


def _state(codec) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in codec.model().state_dict().items()}


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """A 3-step control-module fine-tuning on the standin_astro train part, through the CLI."""
    out = tmp_path_factory.mktemp("ft") / "astro"
    argv = ["finetune", "--codec", BASE, "--dataset", "standin_astro", "--steps", "3", "--lr", "1e-3"]
    argv += ["--batch", "2", "--patch", "64", "--val-every", "3", "--val-images", "1", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    return out


def test_cli_writes_an_adapter_with_a_complete_sidecar(adapter_dir):
    side = read_sidecar(adapter_dir / "adapter.safetensors")
    assert side["mode"] == "control" and side["bitstream_preserving"]
    assert side["frozen"]["sha256_before"] == side["frozen"]["sha256_after"]
    assert side["steps_run"] == 3 and [v["step"] for v in side["validation"]] == [0, 3]
    assert side["best"]["step"] in (0, 3)
    assert side["data"]["train"]["partition"]["take"] == "train"
    assert side["data"]["val"]["partition"]["take"] == "val"
    train_ids = {im["sha256"] for im in side["data"]["train"]["images"]}
    assert train_ids.isdisjoint(im["sha256"] for im in side["data"]["val"]["images"])
    base = create_codec(BASE)
    n_control = sum(p.numel() for p in base.model().control_model.parameters())
    assert side["trainable_parameters"] == n_control
    assert side["base"]["fingerprint"] == base.base_fingerprint()
    assert (adapter_dir / "train" / "adapter" / "metrics.csv").is_file()
    assert (adapter_dir / "train" / "validation.csv").is_file()


def test_training_changed_only_the_control_module(adapter_dir):
    from safetensors.torch import load_file

    base = _state(create_codec(BASE))
    trained = load_file(str(adapter_dir / "train" / "adapter" / "checkpoint.safetensors"))
    model_keys = [k for k in trained if k.startswith("model.")]
    assert model_keys and all(k.startswith("model.control_model.") for k in model_keys)
    changed = [k for k in model_keys if not torch.equal(trained[k], base[k[len("model.") :]])]
    assert changed, "three AdamW steps at lr 1e-3 must move the control module"


def test_adapter_loads_bit_exactly_and_keeps_everything_else(adapter_dir):
    from safetensors.torch import load_file

    path = adapter_dir / "adapter.safetensors"
    tensors = load_file(str(path))
    assert tensors and all(k.startswith("control_model.") for k in tensors)
    base, tuned = _state(create_codec(BASE)), _state(create_codec(BASE, adapter=str(path)))
    for k, v in tuned.items():
        assert torch.equal(v, tensors[k] if k in tensors else base[k]), k


def test_adapter_is_refused_for_another_base_or_when_tampered(adapter_dir, tmp_path):
    path = adapter_dir / "adapter.safetensors"
    with pytest.raises(CodecError, match="adapter trained for base"):
        create_codec("rdeic-tiny@high", adapter=str(path))
    copy = tmp_path / "a.safetensors"
    shutil.copy(path, copy)
    with pytest.raises(CodecError, match="no sidecar"):
        create_codec(BASE, adapter=str(copy))
    shutil.copy(adapter_dir / "adapter.json", tmp_path / "a.json")
    copy.write_bytes(copy.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CodecError, match="does not match the sha256"):
        create_codec(BASE, adapter=str(copy))


def test_bitstream_and_rate_are_identical_with_the_adapter(adapter_dir):
    image = select_images("standin_astro").dataset.read(select_images("standin_astro").entries[0])
    a = create_codec(BASE).encode(image)
    b = create_codec(BASE, adapter=str(adapter_dir / "adapter.safetensors")).encode(image)
    assert a.data == b.data


def test_a_few_steps_reduce_the_training_loss_on_a_standin_domain():
    codec = create_codec(BASE)
    model = codec.model()
    sel = select_images("standin_terrain", partition=Partition.from_table({"take": "train", "train": 0.6,
                                                                          "val": 0.2, "test": 0.2}))  # fmt: skip
    pixels = np.stack([sel.dataset.load(e)[:64, :64] for e in sel.entries[:2]])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    cfg = FinetuneConfig(perceptual="none", sampler_steps=2)
    perceptual, context = Perceptual("none"), codec.context()
    params = [p for n, p in model.named_parameters() if n.startswith("control_model.")]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-3)

    def loss_now() -> torch.Tensor:
        torch.manual_seed(0)  # the same noise every time: only the parameters change
        return adapter_loss(model, images, context, cfg, perceptual, 2, None, 0)[0]

    first = float(loss_now().detach())
    for _ in range(6):
        opt.zero_grad()
        loss_now().backward()
        opt.step()
    assert float(loss_now().detach()) < 0.95 * first


def test_early_stopping_looks_at_validation_only(tmp_path):
    cfg = FinetuneConfig(val_every=1, patience=2, steps=10)
    saved = []
    v = Validator.__new__(Validator)
    v.cfg, v.higher_better, v.history, v.best, v.bad = cfg, True, [], None, 0
    v.save_best, v.out_dir = lambda: saved.append(v.history[-1]["step"]), tmp_path
    values = iter([20.0, 21.0, 20.5, 20.9, 22.0])
    v.evaluate = lambda step: _fake_eval(v, step, next(values))
    v.evaluate(0)
    assert [v.after_step(s) for s in (1, 2, 3)] == [False, False, True]
    assert saved == [0, 1] and v.best == {"step": 1, "value": 21.0}


def _fake_eval(v: Validator, step: int, value: float) -> dict:
    v.history.append({"step": step, "psnr": value})
    if v.best is None or value > v.best["value"]:
        v.best, v.bad = {"step": step, "value": value}, 0
        v.save_best()
    else:
        v.bad += 1
    return v.history[-1]


def test_paired_cells_draw_the_same_corruption_as_their_partner():
    kw = dict(dataset="d", dataset_version="1", image_sha256="ab" * 32, height=8, width=8, preprocessing="none",
              codec="rdeic", corruption="bsc", params={"ber": 1e-3}, scope="all", suite_seed=1, replicate=0,
              decode_seed=0, metrics=("psnr",))  # fmt: skip
    base = Cell(codec_fingerprint="base", **kw)
    tuned = Cell(codec_fingerprint="tuned", channel_codec="base", **kw)
    alone = Cell(codec_fingerprint="tuned", **kw)
    assert tuned.key != base.key and tuned.key != alone.key  # pairing is part of the cell's identity
    assert tuned.rng_key == base.key
    assert tuned.rng().integers(0, 2**63) == base.rng().integers(0, 2**63) != alone.rng().integers(0, 2**63)


def test_full_mode_trains_the_compression_module_and_says_the_rate_changes(tmp_path):
    from harness.ood import FinetuneSpec, OODDataset, finetune_one
    from harness.train.finetune import config_from

    cfg = config_from({"mode": "full", "steps": 2, "batch": 1, "patch": 64, "val_every": 2, "val_images": 1,
                       "perceptual": "none", "lr": 1e-3})  # fmt: skip
    ood = OODDataset(
        __import__("harness.config", fromlist=["DatasetConfig"]).DatasetConfig(
            "standin_astro", partition=Partition.from_table({"take": "train", "train": 0.6, "val": 0.2, "test": 0.2})
        )
    )
    spec = FinetuneSpec(BASE, BASE, {}, cfg, (ood,), ())
    side = finetune_one(spec, ood, 0, tmp_path, progress=False, folder=tmp_path / "full")
    assert side["mode"] == "full" and not side["bitstream_preserving"]
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "full" / "adapter.safetensors"))
    assert any(k.startswith("preprocess_model.") for k in keys)
    assert any(k.startswith("preprocess_model.gaussian_conditional._quantized_cdf") for k in keys)
    codec = create_codec(BASE, adapter=str(tmp_path / "full" / "adapter.safetensors"))
    image = np.zeros((64, 64, 3), np.uint8)
    assert codec.decode(codec.encode(image).data, image.shape[:2]).shape == (64, 64, 3)
    assert json.loads((tmp_path / "full" / "adapter.json").read_text())["mode"] == "full"


def _validation_psnr(codec, side: dict) -> float:
    """Mean PSNR of the sidecar's validation images decoded by ``codec`` (decode seed as in training)."""
    from harness.metrics import create_metric

    part = side["data"]["val"]["partition"]
    table = {**dict(part["fractions"]), "take": "val", "seed": part["seed"]}  # fractions in their recorded order
    sel = select_images("standin_astro", partition=Partition.from_table(table))
    psnr = create_metric("psnr")
    values = []
    for e in sel.entries[: side["config"]["val_images"]]:
        img = sel.dataset.load(e)
        seed = side["config"]["val_decode_seed"]
        out = codec.decode(codec.encode(img).data, img.shape[:2], seed)[: img.shape[0], : img.shape[1]]
        values.append(psnr(np.ascontiguousarray(out), img))
    return float(np.mean(values))


def test_loaded_adapter_reproduces_its_best_validation_score(adapter_dir):
    side = read_sidecar(adapter_dir / "adapter.safetensors")
    codec = create_codec(BASE, adapter=str(adapter_dir / "adapter.safetensors"))
    assert _validation_psnr(codec, side) == pytest.approx(side["best"]["value"], abs=1e-9)


def test_lora_mode_trains_low_rank_factors_that_merge_at_load(tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from harness.config import DatasetConfig
    from harness.ood import FinetuneSpec, OODDataset, finetune_one
    from harness.train.finetune import config_from

    cfg = config_from({"mode": "lora", "steps": 3, "batch": 1, "patch": 64, "val_every": 3, "val_images": 1,
                       "perceptual": "none", "lr": 1e-2, "lora_targets": "both"})  # fmt: skip
    part = Partition.from_table({"take": "train", "train": 0.6, "val": 0.2, "test": 0.2})
    ood = OODDataset(DatasetConfig("standin_astro", partition=part))
    spec = FinetuneSpec(BASE, BASE, {}, cfg, (ood,), ())
    side = finetune_one(spec, ood, 0, tmp_path, progress=False, folder=tmp_path / "lora")
    tensors = load_file(str(tmp_path / "lora" / "adapter.safetensors"))
    assert tensors and all(k.endswith((".lora_A", ".lora_B")) for k in tensors)
    assert any(k.startswith("model.diffusion_model.") for k in tensors)  # UNet attention projections too
    assert side["trainable_parameters"] == sum(v.numel() for v in tensors.values())
    assert side["frozen"]["sha256_before"] == side["frozen"]["sha256_after"] and side["bitstream_preserving"]
    codec = create_codec(BASE, adapter=str(tmp_path / "lora" / "adapter.safetensors"))
    # merged W + scale * B A at load reproduces what peft's layers computed during validation
    assert _validation_psnr(codec, side) == pytest.approx(side["best"]["value"], abs=0.05)
    if side["best"]["step"] == 3:  # the factors moved: the merged model is not the base
        base = create_codec(BASE)
        assert _validation_psnr(base, side) != pytest.approx(side["best"]["value"], abs=1e-6)
