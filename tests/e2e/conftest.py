"""The one-device smoke study of two stand-ins (tests/e2e/smoke_config.py, every phase), run
once per session and shared by the tests that compare another layout with it
(test_mesh_study.py: a 2x4 mesh; test_multiprocess_study.py: two processes), whichever xdist
worker they run on. It trains the stand-ins into the shared cache, which the other runs reuse."""

from __future__ import annotations

import pytest

from tests.e2e.runs import mesh_study
from tests.support import once_per_session


@pytest.fixture(scope="session")
def one_device_run(tmp_path_factory, worker_id):
    """(run directory, stand-in cache, stdout) of the one-device smoke study."""

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "stdout.txt").write_text(mesh_study(folder / "one", folder / "cache", 1, 1))

    folder = once_per_session(tmp_path_factory, worker_id, "one-device", make)
    return folder / "one", folder / "cache", (folder / "stdout.txt").read_text()
