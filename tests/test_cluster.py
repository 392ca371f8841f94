"""The cluster path (issue #17): shards of a run through submitit (a real single-node Slurm array when this
machine can start one, else shard processes here) merge into exactly the rows a local run gives."""

from __future__ import annotations

import os
import sqlite3

import pytest
from conftest import stored_cells, write_suite

from harness.config import load_suite
from harness.executors import ExecutorConfig
from harness.runner import RunOptions, make_plan, run
from harness.sharding import ShardPlan, make_shards, merge, run_shard, shard_store

NOT_COMPARED = ["corrupt_s", "encode_s", "finished_at", "memoised"]  # timings, and which cell of a memo went first
BSC = '[[corruptions]]\ncorruption = "bsc"\nscopes = ["all", "payload"]\ngrid = { ber = [0.0, 1e-4, 1e-3] }\n'
CODECS = (
    '[[codecs]]\ncodec = "jpeg2000"\nlabel = "j@0.5"\noptions = { target_bpp = 0.5 }\n'
    '[[codecs]]\ncodec = "j2k-reversible"\nlabel = "rev"\nmatch_rate_of = "j@0.5"\n'
)


def _rows(run_dir):
    return stored_cells(run_dir).drop(columns=NOT_COMPARED).sort_values("key").reset_index(drop=True)


@pytest.fixture(scope="module")
def suite_and_local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    suite = write_suite(tmp / "s.toml", codecs=CODECS, corruptions=BSC, seeds=2, limit_images=2)
    run(RunOptions(load_suite(str(suite)), tmp / "local", workers=2, progress=False))
    return suite, tmp


def test_shards_group_whole_images_of_one_codec_config(suite_and_local, tmp_path):
    suite, _ = suite_and_local
    plan = make_plan(RunOptions(load_suite(str(suite)), tmp_path))
    shards = make_shards(plan.cells, 3)
    keys = [k for s in shards for k in s]
    assert sorted(keys) == sorted(c.key for c in plan.cells) and all(shards)
    encode_key = {c.key: c.encode_key for c in plan.cells}
    owner = {}
    for i, shard in enumerate(shards):  # an (image, codec) run is never cut between tasks: its memo stays in one
        for k in shard:
            assert owner.setdefault(encode_key[k], i) == i


def test_local_shard_processes_merge_into_the_local_rows(suite_and_local):
    suite, tmp = suite_and_local
    cfg = ExecutorConfig(name="local-shards", shards=3)
    result = run(RunOptions(load_suite(str(suite)), tmp / "shards", workers=1, progress=False, executor=cfg))
    assert result.computed == result.planned == 48
    assert _rows(tmp / "shards").equals(_rows(tmp / "local"))
    assert len(list((tmp / "shards" / "shards").glob("shard-*.sqlite"))) == 3


def test_a_task_run_twice_or_a_cell_in_two_shards_gives_one_row(suite_and_local):
    suite, tmp = suite_and_local
    out = tmp / "twice"
    opts = RunOptions(load_suite(str(suite)), out, workers=1, progress=False)
    cells = make_plan(opts).cells
    first, second = [c.key for c in cells[:10]], [c.key for c in cells[5:20]]  # keys 5-9 in both shards
    out.mkdir()
    ShardPlan(opts.suite.text, opts.suite.path, opts.shard_options(), [first, second]).write(out)
    # the submitter builds the cache before the array; here the tasks build it (atomic renames keep it consistent)
    assert run_shard(out, 0).computed == 10
    assert run_shard(out, 0).computed == 0  # requeued / resubmitted: nothing left to do
    assert run_shard(out, 1).computed == 15
    assert merge(out).cells_added == 20
    assert merge(out).cells_added == 0  # idempotent
    with sqlite3.connect(out / "results.sqlite") as db:
        keys = [k for (k,) in db.execute("SELECT key FROM cells")]
    assert len(keys) == len(set(keys)) == 20
    assert shard_store(out, 1).is_file()


@pytest.mark.slow
def test_a_slurm_job_array_through_submitit_merges_into_the_local_rows(suite_and_local, tmp_path_factory):
    import slurm_cluster

    suite, tmp = suite_and_local
    try:
        cluster = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
        env = cluster.__enter__()
    except slurm_cluster.ClusterUnavailable as exc:
        pytest.skip(f"no single-node Slurm here ({exc}); the same path runs through submitit's local executor above")
    try:
        saved = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = env["SLURM_CONF"]
        cfg = ExecutorConfig(name="slurm", shards=3, slurm_partition="debug", cpus_per_task=1, timeout_min=10)
        result = run(RunOptions(load_suite(str(suite)), tmp / "slurm", workers=1, progress=False, executor=cfg))
        assert result.computed == result.planned == 48
        assert _rows(tmp / "slurm").equals(_rows(tmp / "local"))
        logs = list((tmp / "slurm" / "shards" / "logs").glob("*_log.out"))
        assert len(logs) == 3  # three array tasks ran under Slurm
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.__exit__(None, None, None)
