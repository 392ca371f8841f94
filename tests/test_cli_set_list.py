"""``--set CODEC.OPTION=VALUE`` (one command-line path to every codec option, the official weights of all three
papers included) and ``--list`` (a line about every name, 100 columns): issue #27."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest
from conftest import ROOT, stored_cells, write_suite

from harness.cli import UsageError, build_parser, codec_overrides, main
from harness.config import load_suite, suite_names
from harness.options import apply_overrides, parse_override
from harness.registry import CODECS, CORRUPTIONS, DATASETS, METRICS


def _apply(suite_name: str, *texts: str):
    return apply_overrides(load_suite(suite_name), [parse_override(t, UsageError) for t in texts], UsageError)


def _by_label(suite) -> dict[str, object]:
    return {c.label: c for c in suite.codecs}


def test_values_are_read_as_toml_else_as_text():
    assert parse_override("jpeg2000.layers=3", UsageError).value == 3
    assert parse_override("j2k.rate_tolerance=0.01", UsageError).value == 0.01
    assert parse_override("dicm.ignore_side_info=true", UsageError).value is True
    assert parse_override('dicm.ckpt="a b.pt"', UsageError).value == "a b.pt"
    assert parse_override("ldm-rsic.elic_ckpt=w/checkpoint_best_loss.pth.tar", UsageError).value == (
        "w/checkpoint_best_loss.pth.tar"
    )
    over = parse_override("rdeic-tiny@low.steps=4", UsageError)  # a dotted-free name with '@': option after the dot
    assert (over.name, over.option, over.value) == ("rdeic-tiny@low", "steps", 4)


def test_official_ldm_rsic_and_dicm_weights_join_a_suite_beside_its_tiny_presets():
    """The tiny presets run merged ``weights`` of their own: they keep them, and the official files get a config
    of their own (as --rdeic-ckpt does for RDEIC)."""
    suite = _apply("remote_sensing", "ldm-rsic.elic_ckpt=/w/e.pth.tar", "ldm-rsic.ldm_ckpt=/w/net_g_latest.pth")
    configs = _by_label(suite)
    assert configs["ldm-rsic"].codec == "ldm-rsic"
    assert configs["ldm-rsic"].options == {"elic_ckpt": "/w/e.pth.tar", "ldm_ckpt": "/w/net_g_latest.pth"}
    before = _by_label(load_suite("remote_sensing"))
    assert all(configs[label] == config for label, config in before.items())  # the tiny ones untouched
    dicm = _by_label(_apply("side_info", "dicm.ckpt=/w/dicm.pt"))
    assert dicm["dicm"].options == {"ckpt": "/w/dicm.pt"} and dicm["dicm-tiny"].options == {}


def test_a_label_reaches_one_config_and_a_codec_name_every_config_built_from_it():
    one = _by_label(_apply("remote_sensing", "ldm-rsic@tiny.steps=2"))
    assert one["ldm-rsic@tiny"].options["steps"] == 2
    assert all("steps" not in c.options for label, c in one.items() if label != "ldm-rsic@tiny")
    every = _apply("ci", "jpeg2000.strict=false")
    assert [c.options["strict"] for c in every.codecs] == [False, False]
    presets = _by_label(_apply("remote_sensing", "ldm-rsic.steps=3"))  # ldm-rsic-tiny and elic-tiny are presets
    assert presets["ldm-rsic@tiny"].options["steps"] == 3 and presets["elic@tiny"].options["steps"] == 3


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        (["jpeg2000.layerz=3"], "codec jpeg2000 has no option 'layerz'; valid: target_bpp, rate_tolerance"),
        (["ldm-rsic.elic_ckp=/w/e.pth.tar"], "valid: config, lam, weights, elic_ckpt, ldm_ckpt"),
        (["jpeg3000.layers=3"], "no codec label of suite 'ci'"),
        (["ldm-rsic.steps=2"], "suite 'ci' has no ldm-rsic config"),
        (["layers=3"], "--set takes CODEC.OPTION=VALUE"),
        (["jpeg2000.layers"], "--set takes CODEC.OPTION=VALUE"),
        (["jpeg2000.layers=nan"], "must be finite"),
    ],
)
def test_a_bad_set_is_one_line_exit_2_before_any_work(texts, message, capsys, tmp_path):
    argv = ["--suite", "ci", "--dry-run", "--out", str(tmp_path / "run")]
    for text in texts:
        argv += ["--set", text]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_rdeic_flags_are_aliases_of_set():
    def parsed(*argv: str) -> tuple:
        args = build_parser().parse_args(["--suite", "ci", *argv])
        rest, rdeic, sd = codec_overrides(args)
        return [o.text for o in rest], rdeic, sd

    flags = parsed("--rdeic-ckpt", "/w/r.ckpt", "--sd-ckpt", "/w/sd.ckpt")
    assert parsed("--set", "rdeic.rdeic_ckpt=/w/r.ckpt", "--set", "rdeic.sd_ckpt=/w/sd.ckpt") == flags
    assert flags == ([], "/w/r.ckpt", "/w/sd.ckpt")
    with pytest.raises(UsageError, match="disagree"):
        codec_overrides(argparse.Namespace(set=["rdeic.sd_ckpt=/a"], rdeic_ckpt=None, sd_ckpt="/b"))


def test_set_reaches_the_codec_a_run_builds(tmp_path):
    """The value arrives in the codec the cells are made with: the stored resolved options say so."""
    suite = write_suite(
        tmp_path / "s.toml",
        codecs='[[codecs]]\ncodec = "jpeg2000"\nlabel = "j2k"\noptions = { target_bpp = 1.0 }',
        corruptions='[[corruptions]]\ncorruption = "bsc"\nscopes = ["all"]\ngrid = { ber = [0.0] }',
        seeds=1,
        limit_images=1,
    )
    out = tmp_path / "run"
    argv = ["--suite", str(suite), "--out", str(out), "--no-progress", "--workers", "1"]
    assert main([*argv, "--set", "j2k.layers=2", "--set", "jpeg2000.numres=4"]) == 0
    config = stored_cells(out)["codec_config"].iloc[0]
    config = json.loads(config) if isinstance(config, str) else config
    assert config["layers"] == 2 and config["numres"] == 4 and config["target_bpp"] == 1.0


def test_list_gives_every_name_one_line_in_100_columns():
    out = subprocess.run(
        [sys.executable, "evaluate.py", "--list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 100
    described = {}
    for line in lines:
        if line.startswith("  "):
            name, _, about = line.strip().partition(" ")
            described[name] = about.strip()
    registered = [(r, n) for r in (CODECS, CORRUPTIONS, DATASETS, METRICS) for n in r.names()]
    names = [*suite_names(), *(n for r, n in registered if "fake" not in getattr(r.get(n), "__module__", ""))]
    assert set(names) <= set(described)
    assert all(len(described[n]) >= 10 for n in names), [n for n in names if len(described[n]) < 10]
    # each line says something of its own: the one-line descriptions of two side-information degradations differ
    assert described["side_noise"] != described["side_blur"] and "sigma" in described["side_noise"]
    assert "Kodak" in described["kodak"] and "luma" in described["psnr_y"]


def test_weights_check_prints_the_exact_flag_and_that_flag_is_accepted(capsys):
    """Every missing official file is shown with the command-line flag that gives it, and each shown ``--set``
    flag names an option the codec has (``--set`` itself checks it)."""
    import re

    assert main(["weights", "check", "--codec", "ldm-rsic,dicm,rdeic"]) == 1  # the official files are not here
    out = capsys.readouterr().out
    flags = re.findall(r"--set (\S+?)=PATH", out)
    assert {"ldm-rsic.elic_ckpt", "ldm-rsic.ldm_ckpt", "dicm.ckpt"} <= set(flags)
    assert "--sd-ckpt PATH" in out and "--rdeic-ckpt PATH" in out
    for flag in flags:
        over = parse_override(f"{flag}=/w/file.pt", UsageError)
        suite = apply_overrides(load_suite("ci"), [over], UsageError)  # no such config in ci: one is added
        assert suite.codecs[-1].options == {over.option: "/w/file.pt"}
