from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.registry import CODECS, Registry, RegistryError


def test_lazy_target_is_imported_on_get_only():
    reg: Registry = Registry("thing", "harness.test-none")
    reg.register("od", "collections:OrderedDict")
    assert reg.names() == ["od"]
    assert reg.target("od") == "collections:OrderedDict"
    from collections import OrderedDict

    assert reg.get("od") is OrderedDict


def test_collision_and_close_names():
    reg: Registry = Registry("thing", "harness.test-none")
    reg.register("alpha", "collections:OrderedDict")
    with pytest.raises(RegistryError, match="already registered"):
        reg.register("alpha", "collections:Counter")
    with pytest.raises(RegistryError, match="did you mean alpha"):
        reg.get("alpah")


def test_decorator_registration_and_broken_plugin_fails_loudly():
    reg: Registry = Registry("thing", "harness.test-none")

    @reg.register("mine")
    class Mine:
        pass

    assert reg.get("mine") is Mine
    reg.register("broken", "no_such_module_xyz:Thing")
    with pytest.raises(ModuleNotFoundError):
        reg.get("broken")


def test_builtins_listed():
    assert "jpeg2000" in CODECS.names()


def test_third_party_plugins_come_through_entry_points(tmp_path):
    dist = tmp_path / "harness_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[harness.corruptions]\nmy_channel = collections:OrderedDict\n")
    code = "from harness.registry import CORRUPTIONS as C; print(C.names()); print(C.target('my_channel'))"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    names, target = out.stdout.strip().splitlines()
    assert "'my_channel'" in names and "'bsc'" in names
    assert target == "collections:OrderedDict"
