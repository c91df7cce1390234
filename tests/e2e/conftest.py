"""The one-device smoke study (GPT-2 stand-in; dataset, extract, vectors, steering, heads), run
once per session and shared by the tests that compare another layout with it
(test_mesh_study.py: a 2x4 mesh; test_multiprocess_study.py: two processes). It trains the
stand-in into the shared cache, which the other runs then reuse."""

from __future__ import annotations

import pytest

from tests.e2e.runs import mesh_study


@pytest.fixture(scope="session")
def one_device_run(tmp_path_factory):
    """(run directory, stand-in cache, stdout) of the one-device smoke study."""
    tmp = tmp_path_factory.mktemp("one_device")
    out = mesh_study(tmp / "one", tmp / "cache", 1, 1)
    return tmp / "one", tmp / "cache", out
