"""The study under a device mesh gives the one-device study's artifacts: the smoke study of
two stand-ins (GPT-2, Pythia; every phase: dataset to report, tests/e2e/smoke_config.py) on 8
forced host devices as a 2x4 (data x model) mesh against one device, every number compared.

Tolerance: floats agree within rtol 1e-3 + atol 1e-6 (measured worst: 5e-4 relative on a
head score of 5e-6, 3e-9 absolute; 6e-5 relative on the emotion vectors): a sharded matmul sums
its partial products in another order, nothing else differs. Texts (generated samples, top-k
heads, verdict labels) must be identical. Each run is its own process: the device count is
fixed when jax starts (tests/e2e/mesh_study.py)."""

from __future__ import annotations

import pytest

from tests.e2e.runs import compare, mesh_study


@pytest.fixture(scope="module")
def runs(one_device_run, tmp_path_factory):
    one, cache, one_out = one_device_run  # shared with test_multiprocess_study.py
    mesh_dir = tmp_path_factory.mktemp("mesh") / "mesh"
    return one, mesh_dir, one_out, mesh_study(mesh_dir, cache, 2, 4)


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
    tops = {p.relative_to(one).parts[0] for p in files}
    assert {"extract", "vectors", "alignment", "steering", "heads", "cross_model", "report"} <= tops
    for p in checked:
        compare(one, mesh, p)


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
    mesh_study(one, one.parent / "cache", 2, 4)
    assert stamps and all(p.read_text() == s for p, s in stamps.items())
