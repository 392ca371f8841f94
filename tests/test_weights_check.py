"""RDEIC weight files a user can get wrong (each one line: which file, what is wrong, how to fix it; a CodecError,
so exit 2), and ``evaluate.py weights check`` over every registered codec (the matrix of bad files of every codec
through a suite run is tests/test_weights_errors.py)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from harness.cli import main
from harness.codecs.base import CodecError
from harness.codecs.rdeic.checkpoint import WeightsError, read_state_dict, save_safetensors, sniff

TINY = ROOT / "weights" / "rdeic-tiny"
SD_SOURCE = "stable-diffusion-2-1-base"


def _one_line(exc: BaseException, *fragments: str) -> str:
    text = str(exc)
    assert "\n" not in text, text
    for f in fragments:
        assert f in text, (f, text)
    return text


@pytest.fixture(scope="module")
def test_state():
    from harness.codecs.rdeic.config import TEST
    from harness.codecs.rdeic.model import RDEICModel

    return RDEICModel(TEST, seed=5).state_dict()


def _safetensors(path: Path, tensors: dict) -> Path:
    save_safetensors(tensors, path)
    return path


# -- file-level problems: read_state_dict / sniff ---------------------------------------------------------------
def _random(p: Path) -> Path:
    p.write_bytes(bytes((i * 37 + 11) % 256 for i in range(4096)))
    return p


def _empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def _directory(p: Path) -> Path:
    p.mkdir()
    (p / "inside.ckpt").write_bytes(b"x")
    return p


def _truncated_safetensors(p: Path) -> Path:
    data = (TINY / "rdeic-tiny-low.safetensors").read_bytes()
    p.write_bytes(data[: len(data) // 2])  # header intact, tensor data cut
    return p


def _truncated_header(p: Path) -> Path:
    p.write_bytes((TINY / "rdeic-tiny-low.safetensors").read_bytes()[:5000])
    return p


def _garbage_safetensors(p: Path) -> Path:
    body = b"{this is not json}"
    p.write_bytes(struct.pack("<Q", len(body)) + body + b"\0" * 64)
    return p


def _pickled(p: Path) -> Path:
    torch.save({"state_dict": {"a": torch.zeros(2)}, "hparams": Path("/x")}, p)  # a PosixPath: not weights_only
    return p


def _truncated_zip(p: Path) -> Path:
    torch.save({"state_dict": {"a": torch.zeros(1000)}}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _not_torch_zip(p: Path) -> Path:
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return p


def _no_state_dict(p: Path) -> Path:
    torch.save({"epoch": 3, "global_step": 10}, p)
    return p


CASES = [
    (_random, "sd_ckpt", "v2-1_512-ema-pruned.ckpt", "not a PyTorch checkpoint or a safetensors file", SD_SOURCE),
    (_empty, "weights", "rdeic-tiny-low.safetensors", "is empty (0 bytes", "git checkout -- weights/rdeic-tiny"),
    (_directory, "sd_ckpt", "weights_dir", "is a folder, not a weights file (it holds inside.ckpt)", SD_SOURCE),
    (_truncated_safetensors, "weights", "m.safetensors", "truncated safetensors file (its header describes", "merged"),
    (_truncated_header, "weights", "m.safetensors", "truncated safetensors file (its header alone needs", "merged"),
    (_garbage_safetensors, "weights", "m.safetensors", "not a valid safetensors file", "merged"),
    (_pickled, "rdeic_ckpt", "rdeic_2_step2.ckpt", "stores Python objects besides tensors (pathlib", "huai-chang"),
    (_truncated_zip, "rdeic_ckpt", "rdeic_2_step2.ckpt", "truncated or damaged PyTorch checkpoint", "huai-chang"),
    (_not_torch_zip, "rdeic_ckpt", "rdeic_2_step2.ckpt", "is a zip archive but not a PyTorch checkpoint", "huai-chang"),
    (_no_state_dict, "rdeic_ckpt", "rdeic_2_step2.ckpt", "holds no state dict of tensors (keys 'epoch'", "huai-chang"),
]


@pytest.mark.parametrize(("make", "role", "name", "problem", "fix"), CASES, ids=[c[0].__name__ for c in CASES])
def test_unusable_files_get_one_line(tmp_path, make, role, name, problem, fix):
    path = make(tmp_path / name)
    with pytest.raises(WeightsError) as info:
        read_state_dict(path, None, role=role)
    text = _one_line(info.value, f"RDEIC {role} {path}", problem, fix)
    assert isinstance(info.value, CodecError) and isinstance(info.value, FileNotFoundError)
    assert info.value.problem in text and info.value.fix in text
    assert "weights_only=False" not in text and "\x1b" not in text  # never torch's own text, never unsafe loading


def test_a_missing_file_says_where_the_right_one_comes_from(tmp_path):
    with pytest.raises(WeightsError) as info:
        read_state_dict(tmp_path / "nope.ckpt", None, role="sd_ckpt")
    _one_line(info.value, "RDEIC sd_ckpt", "nope.ckpt is missing: no file at this path", SD_SOURCE, "--sd-ckpt")


def test_format_is_read_from_the_content_not_the_name(tmp_path, test_state):
    """A safetensors file named .ckpt and a PyTorch checkpoint named .safetensors load; an old-format (pickle)
    PyTorch file loads without memory-mapping (which only zip checkpoints allow)."""
    some = {k: v for k, v in list(test_state.items())[:5]}
    st = _safetensors(tmp_path / "weights.ckpt", some)
    assert sniff(st) == "safetensors" and read_state_dict(st).keys() == some.keys()
    zipped = tmp_path / "weights.safetensors"
    torch.save({"state_dict": some}, zipped)
    assert sniff(zipped) == "pytorch-zip" and all(torch.equal(read_state_dict(zipped)[k], v) for k, v in some.items())
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"state_dict": some}, legacy, _use_new_zipfile_serialization=False)
    assert sniff(legacy) == "pytorch-legacy" and read_state_dict(legacy).keys() == some.keys()


def test_the_shipped_weights_read_exactly_as_before():
    """The reading path itself is unchanged: safe_open + get_tensor, same tensors, same dtypes."""
    from safetensors import safe_open

    path = TINY / "rdeic-tiny-low.safetensors"
    state = read_state_dict(path, ("first_stage_model.",))
    with safe_open(str(path), framework="pt") as fh:
        for k, v in state.items():
            ref = fh.get_tensor(k)
            assert v.dtype == ref.dtype and torch.equal(v, ref)


# -- keys and shapes: through the codec, as a run loads them ----------------------------------------------------
def _load(weights: Path, config: str = "test"):
    from harness.codecs.rdeic.codec import RDEIC

    RDEIC(config=config, weights=str(weights), z_coding="fixed_length").model()


def test_wrong_shape_names_the_key_and_both_shapes(tmp_path, test_state):
    bad = dict(test_state)
    bad["first_stage_model.decoder.conv_out.weight"] = torch.zeros(3, 8, 3, 3)
    with pytest.raises(CodecError) as info:
        _load(_safetensors(tmp_path / "w.safetensors", bad))
    _one_line(info.value, "shape of first_stage_model.decoder.conv_out.weight is [3, 8, 3, 3] in the file")
    _one_line(info.value, "[3, 32, 3, 3] expected", "do not fit config 'test'")


def test_random_and_missing_keys_are_counted_with_examples(tmp_path, test_state):
    bad = {k: v for i, (k, v) in enumerate(test_state.items()) if i % 10}
    bad["not.a.model.key"] = torch.zeros(2)
    bad["model.diffusion_model.extra"] = torch.zeros(2)
    missing = sum(1 for i, _ in enumerate(test_state) if i % 10 == 0)
    with pytest.raises(CodecError) as info:
        _load(_safetensors(tmp_path / "w.safetensors", bad))
    _one_line(info.value, f"missing {missing} keys, e.g. ", "unexpected 2 keys, e.g. model.diffusion_model.extra")


def test_weights_of_another_config_name_it(tmp_path):
    weights = tmp_path / "copy.safetensors"
    shutil.copy(TINY / "rdeic-tiny-low.safetensors", weights)
    with pytest.raises(CodecError) as info:
        _load(weights, "test")
    _one_line(info.value, "do not fit config 'test'", "they are weights for config 'tiny'", 'set config = "tiny"')


def test_check_keys_names_the_source_file():
    from harness.codecs.rdeic.checkpoint import check_keys

    with pytest.raises(WeightsError) as info:
        check_keys({"a": torch.zeros(2)}, {"a": (3,)}, (), source="/w/x.safetensors", config="tiny", role="weights")
    _one_line(info.value, "RDEIC weights /w/x.safetensors holds tensors that do not fit config 'tiny'")
    _one_line(info.value, "config 'tiny': shape of a is [2] in the file")
    _one_line(info.value, "; `weights` must be a merged .safetensors")


def test_a_damaged_text_cache_is_one_line(tmp_path):
    from harness.codecs.rdeic.checkpoint import read_text_cache

    cache = tmp_path / "w.safetensors.empty_prompt.safetensors"
    cache.write_bytes(b"\x05" * 40)
    with pytest.raises(WeightsError) as info:
        read_text_cache(cache, "abc")
    _one_line(info.value, str(cache), "delete it")


# -- evaluate.py weights check ----------------------------------------------------------------------------------
def _lines(capsys) -> list[str]:
    out = capsys.readouterr().out
    lines = out.rstrip("\n").splitlines()
    assert all(len(line) <= 100 for line in lines), [line for line in lines if len(line) > 100]
    return lines


def test_recorded_hashes_are_the_shipped_files_and_agree_with_the_model_card():
    from harness.codecs.checkpoints import SHIPPED_SHA256

    card = (TINY / "MODEL_CARD.md").read_text()
    prefix = re.search(r"sha256 ([0-9a-f]{8})… for low", card).group(1)
    assert SHIPPED_SHA256["rdeic-tiny-low.safetensors"].startswith(prefix)
    shipped = {p for p in (ROOT / "weights").glob("*/*.safetensors") if "prompt" not in p.name}
    assert set(SHIPPED_SHA256) == {p.name for p in shipped}  # every shipped weights file, and only those
    for p in shipped:  # retrained on purpose: record the new sha256 (the run refuses a file that differs)
        assert SHIPPED_SHA256[p.name] == hashlib.sha256(p.read_bytes()).hexdigest(), p


def test_shipped_tiny_weights_check_ok(capsys):
    assert main(["weights", "check", "--codec", "rdeic-tiny@low", "--codec", "rdeic-tiny@high,jpeg2000"]) == 0
    text = "\n".join(_lines(capsys))
    assert "rdeic-tiny-low.safetensors: 14.9 MB, sha256 7282a69d… as recorded" in text
    assert "rdeic-tiny-high.safetensors: 14.9 MB, sha256 75b30f9c… as recorded" in text
    assert "no weight files: jpeg2000" in text and text.endswith("2 ok, 0 missing, 0 bad")


def test_default_check_lists_every_codec_and_exits_1_without_the_official_files(capsys):
    assert main(["weights", "check"]) == 1
    text = "\n".join(_lines(capsys))
    assert "MISSING  sd_ckpt    not given (codec option sd_ckpt, or --sd-ckpt PATH)" in text
    assert "get: sd_ckpt must be the Stable Diffusion 2.1 base checkpoint `v2-1_512-ema-pruned.ckpt`" in text
    assert "rdeic-vae" in text and "j2k-plain" in text


def test_unknown_codec_is_a_usage_error(capsys):
    assert main(["weights", "check", "--codec", "rdeic-tiny@lo"]) == 2
    assert "did you mean rdeic-tiny@low" in capsys.readouterr().err


def test_bad_official_files_get_one_entry_each(tmp_path, capsys):
    sd = _random(tmp_path / "v2-1_512-ema-pruned.ckpt")
    cc = _pickled(tmp_path / "rdeic_2_step2.ckpt")
    assert main(["weights", "check", "--codec", "rdeic", "--sd-ckpt", str(sd), "--rdeic-ckpt", str(cc)]) == 1
    text = "\n".join(_lines(capsys))
    assert "BAD      sd_ckpt    v2-1_512-ema-pruned.ckpt cannot be read as weights: not a PyTorch checkpoint" in text
    assert "BAD      rdeic_ckpt rdeic_2_step2.ckpt stores Python objects besides tensors" in text
    assert "0 ok, 0 missing, 2 bad" in text


def test_official_pair_names_and_shapes_are_checked(tmp_path, test_state):
    """Files without a recorded sha256 are checked by tensor names and shapes against the config."""
    from harness.commands.weights import check_file

    trained = ("control_model.", "preprocess_model.")
    sd = {k: v for k, v in test_state.items() if not k.startswith(trained) and k != "logvar"}
    sd["model_ema.decay"] = torch.tensor(0.9999)
    cc = {k: v for k, v in test_state.items() if k.startswith(trained)}
    torch.save({"state_dict": sd}, tmp_path / "sd.ckpt")
    torch.save({"state_dict": cc}, tmp_path / "cc.ckpt")
    assert check_file(str(tmp_path / "sd.ckpt"), "sd_ckpt", "rdeic", "test").status == "ok"
    assert check_file(str(tmp_path / "cc.ckpt"), "rdeic_ckpt", "rdeic", "test").status == "ok"
    assert check_file(str(tmp_path / "sd.ckpt"), "sd_ckpt", "vae", "test").status == "ok"  # the VAE is in it
    assert check_file(str(tmp_path / "cc.ckpt"), "rdeic_ckpt", "vae", "test").status == "ok"  # no VAE keys: fine
    wrong = check_file(str(tmp_path / "sd.ckpt"), "sd_ckpt", "rdeic", "tiny")
    assert wrong.status == "BAD" and "do not fit config 'tiny'" in wrong.detail
    swapped = check_file(str(tmp_path / "cc.ckpt"), "sd_ckpt", "rdeic", "test")
    assert swapped.status == "BAD" and "missing" in swapped.detail


def test_a_changed_shipped_file_fails_its_recorded_hash(tmp_path):
    from harness.commands.weights import check_file

    copy = tmp_path / "rdeic-tiny-low.safetensors"
    data = bytearray((TINY / copy.name).read_bytes())
    data[-1] ^= 0xFF  # one bit pattern in the last tensor: still a valid file
    copy.write_bytes(bytes(data))
    entry = check_file(str(copy), "weights", "rdeic", "tiny")
    assert entry.status == "BAD" and "not the recorded 7282a69d…" in entry.detail
    assert "git checkout -- weights/rdeic-tiny/rdeic-tiny-low.safetensors" in entry.fix
    sums = tmp_path / "SHA256SUMS"
    from harness.codecs.rdeic.checkpoint import file_sha256

    sums.write_text(f"{file_sha256(copy)}  {copy.name}\n")  # a SHA256SUMS beside the file takes precedence
    assert check_file(str(copy), "weights", "rdeic", "tiny").status == "ok"


def test_preset_with_a_bad_file_and_a_damaged_text_cache(tmp_path, capsys):
    from harness.registry import CODECS, Preset

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")
    (tmp_path / "w.safetensors.empty_prompt.safetensors").write_text(json.dumps({"not": "safetensors"}))
    CODECS.register("tmp-weights-check", Preset("rdeic", {"config": "tiny", "weights": str(weights)}, "test"))
    try:
        assert main(["weights", "check", "--codec", "tmp-weights-check"]) == 1
    finally:
        CODECS.unregister("tmp-weights-check")
    text = "\n".join(_lines(capsys))
    assert "BAD      weights    w.safetensors is empty (0 bytes" in text
    assert "BAD      text cache w.safetensors.empty_prompt.safetensors" in text and "delete it" in text


# -- every codec: the shipped tiny models hash-checked, the official files of the three diffusion codecs -----------
SHIPPED_PRESETS = {
    "rdeic-tiny@low": ("rdeic-tiny", "rdeic-tiny-low.safetensors"),
    "rdeic-tiny@high": ("rdeic-tiny", "rdeic-tiny-high.safetensors"),
    "rdeic-vae-tiny": ("rdeic-tiny", "rdeic-tiny-low.safetensors"),
    "ldm-rsic-tiny": ("ldm-rsic-tiny", "ldm-rsic-tiny.safetensors"),
    "elic-tiny": ("ldm-rsic-tiny", "ldm-rsic-tiny.safetensors"),
    "j2k+men-tiny": ("ldm-rsic-tiny", "j2k-men-tiny.safetensors"),
    "dicm@tiny": ("dicm-tiny", "dicm-tiny.safetensors"),
    "dicm@tiny-no-side": ("dicm-tiny", "dicm-tiny.safetensors"),
}


def test_every_shipped_preset_is_hash_checked(capsys):
    assert main(["weights", "check", "--codec", ",".join(SHIPPED_PRESETS)]) == 0
    lines = _lines(capsys)
    assert lines[-1] == f"{len(SHIPPED_PRESETS)} ok, 0 missing, 0 bad"
    sections: dict[str, str] = {}  # codec -> its lines, unwrapped
    for line in lines[1:-1]:
        if not line.startswith(" "):
            name = line.split()[0]
        sections[name] = sections.get(name, "") + " " + " ".join(line.split())
    assert set(sections) == set(SHIPPED_PRESETS)
    for name, (folder, file) in SHIPPED_PRESETS.items():
        digest = hashlib.sha256((ROOT / "weights" / folder / file).read_bytes()).hexdigest()
        assert f"ok weights {file}: " in sections[name] or f"ok men_weights {file}: " in sections[name], sections[name]
        assert f"sha256 {digest[:8]}… as recorded" in sections[name], sections[name]


def test_the_official_files_of_the_three_diffusion_codecs_say_what_they_are_and_where_they_come_from(capsys):
    assert main(["weights", "check", "--codec", "rdeic,ldm-rsic,j2k+men,dicm"]) == 1
    text = " ".join(line.strip() for line in _lines(capsys))  # wrapped lines joined back
    for words in (
        "MISSING sd_ckpt not given (codec option sd_ckpt, or --sd-ckpt PATH): the Stable Diffusion 2.1",
        "huggingface.co/stabilityai/stable-diffusion-2-1-base",
        "MISSING rdeic_ckpt not given (codec option rdeic_ckpt, or --rdeic-ckpt PATH): an official RDEIC checkpoint",
        "github.com/huai-chang/RDEIC",
        "MISSING elic_ckpt not given (codec option elic_ckpt, or --set ldm-rsic.elic_ckpt=PATH): "
        "the official ELIC checkpoint of λ=0.0032",
        "checkpoint/ELIC_arch_base/mse_0.0032/checkpoint_best_loss.pth.tar",
        "MISSING ldm_ckpt not given (codec option ldm_ckpt, or --set ldm-rsic.ldm_ckpt=PATH): "
        "the official S2 file (MEN + LDM)",
        "experiments/pre_trained/mlkk_0.0032_GP4_S2/net_g_latest.pth",
        "github.com/mlkk518/LDM-RSIC",
        "MISSING men_weights not given (codec option men_weights, or --set j2k+men.men_weights=PATH)",
        "MISSING ckpt not given (codec option ckpt, or --set dicm.ckpt=PATH): an official DICM trainer checkpoint",
        "github.com/dongqingcc/DICC",
    ):
        assert " ".join(words.split()) in " ".join(text.split()), words
    assert "not described" not in text


def test_a_named_codec_with_a_missing_file_exits_non_zero(capsys):
    assert main(["weights", "check", "--codec", "dicm"]) == 1
    assert main(["weights", "check", "--codec", "elic"]) == 1  # ELIC alone still needs elic_ckpt
    assert main(["weights", "check", "--codec", "dicm@tiny"]) == 0
    capsys.readouterr()


def test_only_real_plugins_are_not_described(capsys):
    """Every built-in codec either lists its files or has none; "not described (a plugin)" is for a registered
    third-party codec that loads weights but does not describe them."""
    from harness.codecs.base import LearnedCodec
    from harness.commands.weights import _resolve, report_for
    from harness.registry import CODECS

    builtin = [n for n in CODECS.names() if _resolve(n)[3].__module__.startswith("harness.codecs.")]
    assert {"rdeic", "rdeic-vae", "ldm-rsic", "j2k+men", "dicm", *SHIPPED_PRESETS} <= set(builtin)
    for name in builtin:
        rep = report_for(name, None, None)
        assert "not described" not in rep.about, name
        assert rep.entries or _resolve(name)[0] == "jpeg2000", name  # JPEG2000 alone has no weight files

    class Foreign(LearnedCodec):
        name = "foreign"

    CODECS.register("tmp-foreign", Foreign)
    try:
        assert "weights not described (a plugin)" in report_for("tmp-foreign", None, None).about
    finally:
        CODECS.unregister("tmp-foreign")


def test_a_bad_dicm_file_is_reported_as_dicm_not_rdeic(tmp_path, capsys):
    from harness.registry import CODECS, Preset

    bad = tmp_path / "dicm-tiny.safetensors"
    bad.write_bytes(b"")
    CODECS.register("tmp-dicm", Preset("dicm", {"config": "tiny", "weights": str(bad)}, "test"))
    try:
        assert main(["weights", "check", "--codec", "tmp-dicm"]) == 1
    finally:
        CODECS.unregister("tmp-dicm")
    text = "\n".join(_lines(capsys))
    assert "BAD      weights    dicm-tiny.safetensors is empty" in text and "git checkout -- weights/dicm-tiny" in text
    assert "RDEIC" not in text and "Stable Diffusion" not in text
