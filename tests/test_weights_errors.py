"""Issue #22 ("Weights"): every bad weights file of every codec ends, through the CLI, in one line naming the
codec that reads it, the file, the cause and the fix, exit 2, before anything is encoded.

The matrix: each codec (the official-format files of ``rdeic``, ``ldm-rsic`` and ``dicm`` for their small
``test`` configs, and the shipped tiny presets) x each kind of bad file (missing, empty, a folder, truncated, a
Python pickle, a PyTorch file storing Python objects, wrong keys, wrong shapes, another sha256 than the recorded
one). The files are built here from the models' own state dicts (never from the checker's tables), and the
expected words are the issue's: the codec's name, the cause in plain words, where the right file comes from.
"""

from __future__ import annotations

import pickle
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from harness.cli import main

SUITE = """name = "w"
seed = 7
seeds = 1
metrics = ["psnr"]
timeout_s = 60
[[datasets]]
{dataset}
[[codecs]]
codec = "{codec}"
label = "c"
options = {{ {options} }}
[[corruptions]]
corruption = "bsc"
scopes = ["all"]
grid = {{ ber = [0.0] }}
"""
SAMPLES = 'name = "samples"\nlimit_images = 1\npreprocessing = "center_crop(size=64)"'
STEREO = 'name = "standin_stereo"\noptions = { count = 1 }'
#: Words of other codecs' files that must never appear in a codec's refusal (DICM was reported as "RDEIC weights"
#: pointing to Stable Diffusion 2.1).
FOREIGN = {
    "RDEIC": ("LDM-RSIC", "DICM", "ELIC"),
    "LDM-RSIC": ("RDEIC", "Stable Diffusion", "DICM"),
    "JPEG2000*": ("RDEIC", "Stable Diffusion", "DICM"),
    "DICM": ("RDEIC", "Stable Diffusion", "stable-diffusion", "LDM-RSIC"),
}


@dataclass
class Setup:
    """A codec config of a suite whose file in ``role`` is replaced by a bad one. ``good``: writes a valid file
    at a path (returns the state dict it holds, under ``container``); ``fix``: words of the fix every refusal
    must carry; ``others``: good files the config needs beside the bad one."""

    codec: str
    name: str  # the codec's name in messages
    role: str
    filename: str
    good: Callable[[Path], dict[str, torch.Tensor]]
    fix: str
    options: str = ""
    container: str | None = None
    dataset: str = SAMPLES
    others: dict[str, Callable[[Path], object]] | None = None


# -- good files, from the models themselves ------------------------------------------------------------------------
def _save(path: Path, state: dict[str, torch.Tensor], container: str | None) -> dict[str, torch.Tensor]:
    torch.save({container: state, "epoch": 3} if container else state, path)
    return state


def _rdeic_state() -> dict[str, torch.Tensor]:
    from harness.codecs.rdeic.config import TEST
    from harness.codecs.rdeic.model import RDEICModel

    return RDEICModel(TEST, seed=5).state_dict()


TRAINED = ("control_model.", "preprocess_model.")


def _rdeic_sd(path: Path) -> dict[str, torch.Tensor]:
    state = {k: v for k, v in _rdeic_state().items() if not k.startswith(TRAINED) and k != "logvar"}
    return _save(path, state, "state_dict")


def _rdeic_cc(path: Path) -> dict[str, torch.Tensor]:
    return _save(path, {k: v for k, v in _rdeic_state().items() if k.startswith(TRAINED)}, "state_dict")


def _ldm_modules():
    from harness.codecs.ldm_rsic.config import PRESETS
    from harness.codecs.ldm_rsic.elic import ELIC
    from harness.codecs.ldm_rsic.men import S2

    torch.manual_seed(0)
    cfg = PRESETS["test"]
    return ELIC(cfg.elic), S2(cfg.men)


def _ldm_elic(path: Path) -> dict[str, torch.Tensor]:
    return _save(path, dict(_ldm_modules()[0].state_dict()), "state_dict")


def _ldm_s2(path: Path) -> dict[str, torch.Tensor]:
    return _save(path, dict(_ldm_modules()[1].state_dict()), "params_ema")


def _dicm_official(path: Path) -> dict[str, torch.Tensor]:
    from harness.codecs.dicm.checkpoint import official_shapes
    from harness.codecs.dicm.config import TEST

    state = {k: torch.zeros(s) for k, s in official_shapes(TEST).items()}
    torch.save({"step": 10, "model": state}, path)
    return state


def _shipped(folder: str, name: str) -> Callable[[Path], dict[str, torch.Tensor]]:
    def copy(path: Path) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        shutil.copy(ROOT / "weights" / folder / name, path)
        return load_file(str(path))

    return copy


SETUPS = {
    "rdeic": Setup(
        "rdeic", "RDEIC", "rdeic_ckpt", "rdeic_2_step2.ckpt", _rdeic_cc, "github.com/huai-chang/RDEIC",
        'config = "test", z_coding = "fixed_length"', "state_dict", others={"sd_ckpt": _rdeic_sd},
    ),
    "ldm-rsic": Setup(
        "ldm-rsic", "LDM-RSIC", "ldm_ckpt", "net_g_latest.pth", _ldm_s2, "mlkk518/LDM-RSIC",
        'config = "test", geometry = "tiled"', "params_ema", others={"elic_ckpt": _ldm_elic},
    ),
    "dicm": Setup(
        "dicm", "DICM", "ckpt", "dicm_0.pt", _dicm_official, "dongqingcc/DICC", 'config = "test"', "model",
        STEREO,
    ),
    "rdeic-tiny@low": Setup(
        "rdeic-tiny@low", "RDEIC", "weights", "rdeic-tiny-low.safetensors",
        _shipped("rdeic-tiny", "rdeic-tiny-low.safetensors"), "git checkout -- weights/rdeic-tiny",
        'z_coding = "fixed_length"',
    ),
    "ldm-rsic-tiny": Setup(
        "ldm-rsic-tiny", "LDM-RSIC", "weights", "ldm-rsic-tiny.safetensors",
        _shipped("ldm-rsic-tiny", "ldm-rsic-tiny.safetensors"), "git checkout -- weights/ldm-rsic-tiny",
    ),
    "j2k+men-tiny": Setup(
        "j2k+men-tiny", "JPEG2000*", "men_weights", "j2k-men-tiny.safetensors",
        _shipped("ldm-rsic-tiny", "j2k-men-tiny.safetensors"), "git checkout -- weights/ldm-rsic-tiny",
    ),
    "dicm@tiny": Setup(
        "dicm@tiny", "DICM", "weights", "dicm-tiny.safetensors", _shipped("dicm-tiny", "dicm-tiny.safetensors"),
        "git checkout -- weights/dicm-tiny", dataset=STEREO,
    ),
}  # fmt: skip


# -- bad files -------------------------------------------------------------------------------------------------
def _write(setup: Setup, path: Path, state: dict[str, torch.Tensor]) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        _save(path, state, setup.container)


def missing(setup: Setup, path: Path) -> tuple[str, ...]:
    return ("is missing",)


def empty(setup: Setup, path: Path) -> tuple[str, ...]:
    path.write_bytes(b"")
    return ("is empty",)


def folder(setup: Setup, path: Path) -> tuple[str, ...]:
    path.mkdir()
    return ("is a folder",)


def truncated(setup: Setup, path: Path) -> tuple[str, ...]:
    setup.good(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return ("truncated",)


class Settings:  # a class of this module: what a training script pickles beside its tensors
    lr = 1e-4


def a_pickle(setup: Setup, path: Path) -> tuple[str, ...]:
    path.write_bytes(pickle.dumps({"state_dict": {"w": [0.0, 1.0]}, "settings": Settings()}, protocol=4))
    return ("is a Python pickle",)


def python_objects(setup: Setup, path: Path) -> tuple[str, ...]:
    torch.save({"state_dict": {"w": torch.zeros(2)}, "settings": Settings()}, path)
    return ("stores Python objects", "Settings")


def _in_part(key: str) -> str:
    """A key as a message names it: merged LDM-RSIC files are checked part by part (elic.*, s2.*)."""
    return key.split(".", 1)[1] if key.startswith(("elic.", "s2.")) else key


def wrong_keys(setup: Setup, path: Path) -> tuple[str, ...]:
    state = dict(setup.good(path))
    key = sorted(state)[len(state) // 2]
    state[key + "_renamed"] = state.pop(key)
    _write(setup, path, state)
    return (f"missing 1 keys, e.g. {_in_part(key)}", "unexpected 1 keys, e.g. ", _in_part(key) + "_renamed")


def wrong_shapes(setup: Setup, path: Path) -> tuple[str, ...]:
    state = dict(setup.good(path))
    key = next(k for k in sorted(state) if state[k].dim() == 4 and state[k].shape[0] > 1)  # a conv weight
    shape = list(state[key].shape)
    shape[0] -= 1
    state[key] = torch.zeros(shape)
    _write(setup, path, state)
    return (f"shape of {_in_part(key)} is [{shape[0]},", "expected")


def wrong_hash(setup: Setup, path: Path) -> tuple[str, ...]:
    setup.good(path)
    if path.suffix == ".safetensors":  # a shipped file, one byte of its last tensor changed: still valid weights
        data = bytearray(path.read_bytes())
        (n,) = struct.unpack("<Q", data[:8])
        assert len(data) > 8 + n + 4
        data[-1] ^= 0x01
        path.write_bytes(bytes(data))
    else:  # the user's own files: a SHA256SUMS beside them records another digest
        (path.parent / "SHA256SUMS").write_text(f"{'0' * 64}  {path.name}\n")
    return ("sha256",)


KINDS = [missing, empty, folder, truncated, a_pickle, python_objects, wrong_keys, wrong_shapes, wrong_hash]


@pytest.mark.parametrize("kind", KINDS, ids=[k.__name__ for k in KINDS])
@pytest.mark.parametrize("codec", list(SETUPS))
def test_bad_weights_stop_the_run_in_one_line_before_any_encode(tmp_path, capsys, codec, kind):
    setup = SETUPS[codec]
    files = tmp_path / "files"
    files.mkdir()
    options = [setup.options] if setup.options else []
    for role, make in (setup.others or {}).items():
        make(files / f"{role}.pt")
        options.append(f'{role} = "{files / f"{role}.pt"}"')
    bad = files / setup.filename
    cause = kind(setup, bad)
    options.append(f'{setup.role} = "{bad}"')
    suite = tmp_path / "w.toml"
    suite.write_text(SUITE.format(dataset=setup.dataset, codec=setup.codec, options=", ".join(options)))
    out = tmp_path / "run"

    code = main(["--suite", str(suite), "--out", str(out), "--no-progress", "--workers", "1"])

    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("evaluate.py: error: "), err
    for words in (f"{setup.name} {setup.role} {bad}", *cause, setup.fix):
        assert words in err, (words, err)
    for words in (*FOREIGN[setup.name], "weights_only=False", "\x1b", "Traceback", "torch.load("):
        assert words not in err, (words, err)
    assert not (out / "results.sqlite").exists(), "results written: the check came after the run started"
    cached = [p for p in (out / "cache").rglob("*") if p.is_file()] if (out / "cache").exists() else []
    assert not cached, f"encoded before the check: {cached[:2]}"
