"""What the e2e tests that compare two run directories share: running the smoke study in its
own process (tests/e2e/mesh_study.py) or in two processes on localhost (`start_two`), and
comparing every artifact.

Tolerance: floats agree within rtol 1e-3 + atol 1e-6 (measured worst: 5e-4 relative on a
head score of 5e-6, 3e-9 absolute; 6e-5 relative on the emotion vectors): a sharded matmul sums
its partial products in another order, nothing else differs. Texts (generated samples, top-k
heads, verdict labels) must be identical."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-3, 1e-6
# Differ by design: the mesh itself, wall times and speeds.
IGNORED = {"mesh", "seconds", "samples_per_s", "timing"}
COMPARED = (".npz", ".json", ".csv", ".txt", ".jsonl")


def mesh_study(workdir: Path, cache: Path, data: int, model: int) -> str:
    """tests/e2e/mesh_study.py in its own process (the device count is fixed when jax starts);
    its stdout. XLA's default optimisation level, as the study itself runs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1"}
    env.pop("XLA_FLAGS", None)
    script = ROOT / "tests" / "e2e" / "mesh_study.py"
    args = [sys.executable, str(script), str(workdir), str(cache), str(data), str(model)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _same(a, b, where: str, atol: float = ATOL):
    """Equal JSON values, floats within the tolerance."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k not in IGNORED:
                _same(a[k], b[k], f"{where}/{k}", atol)
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, float):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=atol, err_msg=where)
    else:
        assert a == b, where


def _cell(s: str):
    try:
        return float(s)
    except ValueError:
        return s


def compare(one: Path, mesh: Path, path: Path, atol: float = ATOL) -> None:
    """`path` (a file of run `one`) equals its twin in run `mesh`: floats within RTOL and `atol`
    (ATOL unless a test states why its figures need more), texts identical."""
    other = mesh / path.relative_to(one)
    where = str(path.relative_to(one))
    if path.suffix == ".npz":
        x, y = np.load(path), np.load(other)
        assert x.files == y.files, where
        for k in x.files:
            if x[k].dtype.kind == "f":
                np.testing.assert_allclose(y[k], x[k], rtol=RTOL, atol=atol, err_msg=f"{where} {k}")
            else:
                np.testing.assert_array_equal(y[k], x[k], err_msg=f"{where} {k}")
    elif path.suffix == ".json":
        _same(json.loads(path.read_text()), json.loads(other.read_text()), where, atol)
    elif path.suffix == ".csv":
        rows = [list(csv.reader(p.open())) for p in (path, other)]
        _same(
            [[_cell(c) for c in r] for r in rows[0]],
            [[_cell(c) for c in r] for r in rows[1]],
            where,
            atol,
        )
    elif path.suffix in (".txt", ".jsonl"):
        assert path.read_text() == other.read_text(), where


def run_files(root: Path, under: tuple[str, ...] = ()) -> list[Path]:
    """The run's files (not hidden ones: stamps, lock), relative to `root`, only those under
    the top-level folders `under` when given."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            if not under or rel.parts[0] in under:
                out.append(rel)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def start_two(args: list[str], log_base: Path, devices: int = 1) -> list[subprocess.Popen]:
    """scripts/run_study.py `args` in two processes at once on localhost (jax.distributed, gloo),
    each with `devices` forced host devices, on a (2 x devices) data x model mesh: 'data' splits
    the processes. Process 0 is started with the flags (--coordinator_address ...), process 1
    with JAX's environment variables (JAX_COORDINATOR_ADDRESS ...): both routes run. stdout and
    stderr go to <log_base>.p<i>.log (appended)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1"}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    base = [sys.executable, str(ROOT / "scripts" / "run_study.py"), *args]
    base += ["--config.mesh.data=2", f"--config.mesh.model={devices}"]
    flags = [f"--coordinator_address=localhost:{port}", "--num_processes=2", "--process_id=0"]
    env1 = {
        **env,
        "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "1",
    }
    procs = []
    for i, (cmd, e) in enumerate([(base + flags, env), (base, env1)]):
        log = open(f"{log_base}.p{i}.log", "ab")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen(cmd, env=e, cwd=ROOT, stdout=log, stderr=log))
    return procs


def run_two(args: list[str], log_base: Path, devices: int = 1, timeout: int = 900) -> None:
    """`start_two` and wait: both processes must exit 0 (else their logs' ends are shown)."""
    procs = start_two(args, log_base, devices)
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    logs = [Path(f"{log_base}.p{i}.log").read_text(errors="replace")[-3000:] for i in (0, 1)]
    assert codes == [0, 0], f"exit codes {codes}\n" + "\n".join(logs)
