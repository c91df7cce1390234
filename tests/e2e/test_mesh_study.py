"""The study under a device mesh gives the one-device study's artifacts: the smoke study's
dataset, extract, vectors, steering and heads phases (the GPT-2 stand-in) on 8 forced host
devices as a 2x4 (data x model) mesh against one device, every number compared.

Tolerance: floats agree within rtol 1e-3 + atol 1e-6 (measured worst: 5e-4 relative on a
head score of 5e-6, 3e-9 absolute; 6e-5 relative on the emotion vectors): a sharded matmul sums
its partial products in another order, nothing else differs. Texts (generated samples, top-k
heads, verdict labels) must be identical. Each run is its own process: the device count is
fixed when jax starts (tests/e2e/mesh_study.py)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RTOL, ATOL = 1e-3, 1e-6
# Differ by design: the mesh itself, wall times and speeds.
IGNORED = {"mesh", "seconds", "samples_per_s", "timing"}


def _study(workdir: Path, cache: Path, data: int, model: int) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1"}
    env.pop("XLA_FLAGS", None)
    script = ROOT / "tests" / "e2e" / "mesh_study.py"
    args = [sys.executable, str(script), str(workdir), str(cache), str(data), str(model)]
    out = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mesh")
    one = _study(tmp / "one", tmp / "cache", 1, 1)  # trains the stand-in into the cache
    mesh = _study(tmp / "mesh", tmp / "cache", 2, 4)
    return tmp / "one", tmp / "mesh", one, mesh


def _same(a, b, where: str):
    """Equal JSON values, floats within the tolerance."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            if k not in IGNORED:
                _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=ATOL, err_msg=where)
    else:
        assert a == b, where


def _cell(s: str):
    try:
        return float(s)
    except ValueError:
        return s


def _compare(one: Path, mesh: Path, path: Path) -> None:
    other = mesh / path.relative_to(one)
    where = str(path.relative_to(one))
    if path.suffix == ".npz":
        x, y = np.load(path), np.load(other)
        assert x.files == y.files, where
        for k in x.files:
            if x[k].dtype.kind == "f":
                np.testing.assert_allclose(y[k], x[k], rtol=RTOL, atol=ATOL, err_msg=f"{where} {k}")
            else:
                np.testing.assert_array_equal(y[k], x[k], err_msg=f"{where} {k}")
    elif path.suffix == ".json":
        _same(json.loads(path.read_text()), json.loads(other.read_text()), where)
    elif path.suffix == ".csv":
        rows = [list(csv.reader(p.open())) for p in (path, other)]
        _same(
            [[_cell(c) for c in r] for r in rows[0]],
            [[_cell(c) for c in r] for r in rows[1]],
            where,
        )
    elif path.suffix in (".txt", ".jsonl"):
        assert path.read_text() == other.read_text(), where


def test_mesh_study_equals_one_device(runs):
    one, mesh, _, _ = runs
    files = [p for p in sorted(one.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    names = {str(p.relative_to(one)) for p in files}
    assert names == {
        str(p.relative_to(mesh))
        for p in mesh.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    checked = [p for p in files if p.suffix in (".npz", ".json", ".csv", ".txt", ".jsonl")]
    assert any("heads/" in str(p) for p in checked) and any("steering/" in str(p) for p in checked)
    for p in checked:
        _compare(one, mesh, p)


def test_mesh_study_ran_sharded(runs):
    """The 2x4 run really split the params over 'model' (all 8 devices) and a batch over 'data';
    the one-device run used one device, no mesh."""
    _, _, one, mesh = runs
    assert "devices 1 1 None" in one and "logits None" in one, one
    assert "devices 8 8 P(None, None, 'model', None)" in mesh, mesh
    assert "logits P('data'" in mesh, mesh


def test_rerun_under_a_mesh_recomputes_nothing(runs, tmp_path):
    """The mesh is in no stage key: the one-device run directory, rerun on the 2x4 mesh,
    skips every stage (each stage's stamp unchanged)."""
    one, _, _, _ = runs
    stamps = {p: p.read_text() for p in one.rglob(".stamp.json")}
    _study(one, one.parent / "cache", 2, 4)
    assert stamps and all(p.read_text() == s for p, s in stamps.items())
