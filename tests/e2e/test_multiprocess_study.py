"""The smoke study across two processes (jax.distributed on localhost, gloo CPU collectives,
each process with one forced host device: a 2x1 data x model mesh, 'data' over the processes;
the model axis is the 2x4 mesh test's, in one process, to keep the time down) gives the
one-device study's artifacts; either process killed mid-phase leaves nothing corrupt, and the
rerun resumes.

One two-process run directory serves both claims, to keep the time down (2 cores): a first run
loses process 1 (SIGKILL) while extract runs, a second loses process 0, the writer, after the
first model's vectors; a third run of both processes skips the finished stages and computes the
rest; then every artifact is compared with the one-device run (tests/e2e/runs.py: rtol 1e-3 +
atol 1e-6, texts identical). Phases: every one of the smoke study of two stand-ins
(tests/e2e/smoke_config.py: dataset, extract, vectors, alignment, steering, heads, cross_model,
report). Process 0 is started with the flags (--coordinator_address ...), process 1 with JAX's
own environment variables (JAX_COORDINATOR_ADDRESS ...): both routes are exercised.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jaxcirc.infra import artifacts
from tests.e2e import smoke_config
from tests.e2e.runs import ROOT, compare, free_port, run_files, start_two

PHASES = tuple(smoke_config.get_config().phases)  # every phase the run below runs
STAGES = (
    "dataset",
    "extract/gpt2-standin",
    "vectors/gpt2-standin",
    "heads/gpt2-standin",
    "alignment",
    "cross_model",
    "report",
)


def _start(workdir: Path, cache: Path) -> list[subprocess.Popen]:
    """Both processes of one run of the smoke config on a 2x1 mesh (one device each)."""
    args = [
        "--config=tests/e2e/smoke_config.py",
        f"--workdir={workdir}",
        f"--config.models.cache_dir={cache}",
        "--heartbeat_timeout_s=10",  # a dead follower ends the writer in ~10 s, not 100
    ]
    return start_two(args, workdir, devices=1)


def _log(workdir: Path, i: int) -> str:
    return Path(f"{workdir}.p{i}.log").read_text(errors="replace")[-3000:]


def _wait_for(path: Path, procs, timeout: float) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert all(p.poll() is None for p in procs), "a process ended before the kill point"
        assert time.monotonic() - t0 < timeout, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def _stamp(workdir: Path, stage: str) -> dict:
    return artifacts.read_json(workdir.joinpath(*stage.split("/"), artifacts.STAMP))


def _kill_after(workdir: Path, cache: Path, stage: str, victim: int, wait: float) -> list[int]:
    """Start both processes, SIGKILL process `victim` `wait` s after `stage`'s stamp appears
    (in the next stage's work), and return both exit codes: the survivor must end on its own."""
    procs = _start(workdir, cache)
    try:
        _wait_for(workdir.joinpath(*stage.split("/"), artifacts.STAMP), procs, timeout=300)
        time.sleep(wait)
        procs[victim].send_signal(signal.SIGKILL)
        return [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.fixture(scope="module")
def killed_then_rerun(one_device_run, tmp_path_factory):
    """One run directory, three runs of both processes: process 1 (a follower) killed while
    extract runs, process 0 (the writer) killed after the first model's vectors, then a run to
    the end.
    Returns (one-device run, two-process run, {stage: its stamp after the kill that followed
    it}, each kill's exit codes)."""
    one, cache, _ = one_device_run
    two = tmp_path_factory.mktemp("two_processes") / "run"
    codes = [_kill_after(two, cache, "dataset", victim=1, wait=1)]
    assert not (two / "extract" / "gpt2-standin" / artifacts.STAMP).exists(), "killed too late"
    before = {"dataset": _stamp(two, "dataset")}
    codes.append(_kill_after(two, cache, "vectors/gpt2-standin", victim=0, wait=2))
    assert not (two / "heads" / "gpt2-standin" / artifacts.STAMP).exists(), "killed too late"
    before |= {s: _stamp(two, s) for s in STAGES[1:3]}
    procs = _start(two, cache)
    rerun = [p.wait(timeout=600) for p in procs]
    assert rerun == [0, 0], _log(two, 0) + _log(two, 1)
    return one, two, before, codes


def test_two_processes_equal_one_process(killed_then_rerun):
    one, two, _, _ = killed_then_rerun
    names = run_files(one, PHASES)
    assert names == run_files(two, PHASES)
    assert set(PHASES) - {"dataset"} <= {p.parts[0] for p in names}, names
    checked = [p for p in names if p.suffix in (".npz", ".json", ".csv", ".txt", ".jsonl")]
    for rel in checked:
        compare(one, two, one / rel)


def test_killed_process_leaves_nothing_corrupt_and_rerun_resumes(killed_then_rerun):
    """Each kill ended the other process too, with an error (a dead follower: after the
    heartbeat timeout; a dead writer: at once); the stages finished before a kill were not
    recomputed (their stamps are byte-for-byte the same); every stage is now done with its
    outputs intact (sizes and sha256s); process 1's scratch directory is gone."""
    _, two, before, codes = killed_then_rerun
    (follower_killed, survivor), (writer_killed, survivor2) = codes[0][::-1], codes[1]
    assert follower_killed == writer_killed == -signal.SIGKILL, codes
    assert survivor != 0 and survivor2 != 0, codes
    for stage, stamp in before.items():
        assert _stamp(two, stage) == stamp, f"{stage} was recomputed"
    for stage in STAGES:
        s = artifacts.Stage(two, stage, None)
        stamp = _stamp(two, stage)
        s.key_hash = stamp["key_hash"]  # done checks every output's size and sha256
        assert s.done and stamp["outputs"], stage
    # Process 1's scratch (left by the abort) was emptied and removed by the rerun.
    name = f"jaxcirc-{artifacts.config_hash(str(two))[:12]}-p1"
    assert not (Path(tempfile.gettempdir()) / name).exists()


def test_each_process_feeds_only_its_rows():
    """models.feed_batch on a 2x2 mesh over two processes: each process's devices hold half
    the batch (process 0 rows 0-5, process 1 rows 6-11: 'data' splits the processes), and a
    compiled call's replicated output is the whole batch's on both."""
    port = free_port()
    script = str(ROOT / "tests" / "e2e" / "feed_rows.py")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(port), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert "rows [0, 1, 2, 3, 4, 5]" in outs[0][0] and "rows [6, 7, 8, 9, 10, 11]" in outs[1][0]
    assert all("whole True" in o for o, _ in outs), outs
