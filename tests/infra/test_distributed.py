"""jaxcirc.infra.distributed without a second process: the settings it refuses, and a
follower's stage (writes to scratch, reads process 0's run directory). The two-process run
itself: tests/e2e/test_multiprocess_study.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jaxcirc.infra import artifacts, distributed

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_jax_env(monkeypatch):
    for name in distributed.ENV:
        monkeypatch.delenv(name, raising=False)


def test_without_a_coordinator_the_run_is_one_process():
    assert distributed.initialize() is False
    assert distributed.initialize(None, 1, 0) is False
    assert distributed.process_count() == 1 and distributed.is_writer()
    assert distributed.agree(True) is True and distributed.agree(False) is False
    distributed.barrier("alone")  # returns at once


@pytest.mark.parametrize(
    "args, env, needle",
    [
        ((None, 2, 0), {}, "--coordinator_address"),
        (("localhost:1", None, None), {}, "--num_processes and --process_id"),
        (("localhost:1", 2, 2), {}, "--process_id=2 is not in 0..1"),
        ((None, None, None), {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two"}, "two"),
        (("localhost:1", 2, 0, 0), {}, "--heartbeat_timeout_s=0; use 1 or more"),
    ],
)
def test_incomplete_settings_are_refused_before_jax_starts(monkeypatch, args, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=needle):
        distributed.initialize(*args)


def test_follower_stage_writes_to_scratch_and_reads_the_writers_stage(tmp_path):
    run, scratch = tmp_path / "run", tmp_path / "scratch"
    key = {"phase": "vectors", "cfg": {"a": 1}}
    writer = artifacts.RunDir(run).stage("vectors/gpt2", key)
    follower = distributed.FollowerStage(run, "vectors/gpt2", key, scratch)
    assert follower.dir == scratch / "vectors" / "gpt2"
    artifacts.write_text(follower.path("v.txt"), "follower's copy")
    assert not follower.done and not (run / "vectors" / "gpt2" / "v.txt").exists()
    assert follower.finish({"v": "v.txt"}) == "" and not follower.dir.exists()
    assert not writer.done  # a follower never stamps the run directory
    artifacts.write_text(writer.path("v.txt"), "writer's copy")
    h = writer.finish({"v": "v.txt"})
    assert follower.done and follower.output_hash() == h
    assert follower.outputs() == {"v": run / "vectors" / "gpt2" / "v.txt"}


def test_run_study_flag_error_is_one_line_exit_2(tmp_path):
    args = [
        sys.executable,
        str(ROOT / "scripts" / "run_study.py"),
        "--config=configs/demo.py:smoke",
        f"--workdir={tmp_path / 'w'}",
        "--num_processes=2",
        "--process_id=1",
    ]
    out = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines() == [
        "error: --num_processes/--process_id need --coordinator_address=HOST:PORT "
        "(process 0's address), or set JAX_COORDINATOR_ADDRESS"
    ]
    assert not (tmp_path / "w").exists()
