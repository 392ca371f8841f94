"""The command line and record every tiny-model recipe shares (harness/train/recipe_cli.py)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pytest
import torch

from harness.train import recipe_cli


@dataclass
class _Recipe:
    steps: int = 100
    threads: int = 1

    def scaled(self, factor: float) -> _Recipe:
        return _Recipe(steps=max(2, round(self.steps * factor)), threads=self.threads)


def test_flags_scale_the_recipe_set_threads_and_name_the_folders(tmp_path):
    ap = recipe_cli.parser("harness.train.example", "Example recipe.\n\nMore.", "weights/example")
    recipe, out, work = recipe_cli.setup(_Recipe(), ap.parse_args([]))
    assert (recipe.steps, out, work) == (
        100,
        recipe_cli.Path("weights/example"),
        recipe_cli.Path("weights/example/train"),
    )
    before = torch.get_num_threads()
    try:
        args = ap.parse_args(
            ["--out", str(tmp_path), "--work", str(tmp_path / "w"), "--scale", "0.05", "--threads", "2"]
        )
        recipe, out, work = recipe_cli.setup(_Recipe(), args)
        assert (recipe.steps, recipe.threads, torch.get_num_threads()) == (5, 2, 2)
        assert (out, work) == (tmp_path, tmp_path / "w")
    finally:
        torch.set_num_threads(before)
    assert ap.prog == "python -m harness.train.example" and ap.description == "Example recipe."


def test_the_record_says_what_ran_and_what_it_cost(tmp_path):
    clock = recipe_cli.Clock()
    recipe_cli.write_record(tmp_path, "harness.train.example", ["--scale", "0.5"], _Recipe(), {"loss": 0.5}, clock,
                            config="tiny")  # fmt: skip
    record = json.loads((tmp_path / "recipe.json").read_text())
    assert record["command"] == "python -m harness.train.example --scale 0.5"
    assert record["recipe"] == asdict(_Recipe()) and record["config"] == "tiny" and record["summary"] == {"loss": 0.5}
    assert record["wall_s_this_invocation"] >= 0 and record["cpu_s_this_invocation"] >= 0
    assert len(record["load_average_at_end"]) == 3 and record["torch"] == torch.__version__


@pytest.mark.slow
def test_a_dicm_tiny_smoke_run_exports_weights_the_codec_loads(tmp_path):
    """The whole recipe at 1 % of its steps (~15 s): the exported file loads strictly into the tiny config and
    round-trips a stand-in pair; the record is beside it."""
    from harness.codecs.dicm.codec import DICM
    from harness.datasets.stereo_synth import stereo_pair
    from harness.train import dicm_tiny

    threads = torch.get_num_threads()
    try:  # the recipe sets its own thread count: give the rest of the session back its own
        assert dicm_tiny.main(["--out", str(tmp_path), "--scale", "0.01", "--no-progress"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert json.loads((tmp_path / "recipe.json").read_text())["recipe"]["steps"] == 20
    codec = DICM(config="tiny", weights=str(tmp_path / dicm_tiny.WEIGHTS_FILE), steps=2)
    left, right = stereo_pair(5, 64, 128)
    out = codec.decode(codec.encode(left).data, (64, 128), 0, side_info={"stereo": right})
    assert out.shape == (64, 128, 3) and out.dtype.name == "uint8"
