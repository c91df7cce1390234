"""One study across processes (multi-controller JAX): every process runs the same program on
its own devices, which together form the config's (data x model) mesh.

    distributed.initialize("localhost:1234", 2, 0)  # before any device use; or from JAX's env
    distributed.is_writer()                          # process 0: the only one writing artifacts
    distributed.agree(stage.done)                    # process 0's answer, on every process
    distributed.barrier("extract/gpt2")              # every process waits for the others

Contract (what keeps processes in lockstep, since every collective must be entered by all of
them in the same order): each process reads the same config and the same run directory (a
filesystem shared by all processes), decides "skip or compute" from process 0's answer, runs
the phases one at a time (no worker threads). Inputs: the extraction feeds each process's rows
only (models.feed_batch: a global array built from each process's devices' rows); the other
phases hand every process's compiled calls the same full batches, which the program splits
over 'data'. Outputs: the forward's are replicated inside the program
(models.sharding.replicate_outputs), the scheduler's and the head screen's gathered
(models.to_host), so every process turns them into the same numpy values. Only process 0 writes artifacts and holds the run
lock; the others write a stage's files into a private scratch directory that is discarded at the
stage's end (`FollowerStage`), then read the finished stage from the run directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from jaxcirc.infra import artifacts

# JAX's own variables (jax._src.distributed / clusters): a launcher that sets these needs no flags.
ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    heartbeat_timeout_s: int | None = None,
) -> bool:
    """jax.distributed.initialize from the arguments, else from JAX_COORDINATOR_ADDRESS /
    JAX_NUM_PROCESSES / JAX_PROCESS_ID; a no-op (False) when neither names a coordinator, so a
    one-process run never starts the distributed runtime. CPU collectives: gloo (jax's TCP
    collectives, built into jaxlib). heartbeat_timeout_s: how long the others wait on a process
    that died before they end too (None: jax's default, 100 s; the death of process 0, which
    hosts the coordination service, ends the others at once). Raises ValueError (one line) on
    an incomplete setting."""
    address = coordinator_address or os.environ.get(ENV[0])
    if not address:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError(
                "--num_processes/--process_id need --coordinator_address=HOST:PORT "
                "(process 0's address), or set JAX_COORDINATOR_ADDRESS"
            )
        return False
    n = num_processes if num_processes is not None else _env_int(ENV[1])
    pid = process_id if process_id is not None else _env_int(ENV[2])
    if n is None or pid is None:
        raise ValueError(
            "a coordinator address needs --num_processes and --process_id "
            "(or JAX_NUM_PROCESSES and JAX_PROCESS_ID)"
        )
    if heartbeat_timeout_s is not None and heartbeat_timeout_s < 1:
        raise ValueError(f"--heartbeat_timeout_s={heartbeat_timeout_s}; use 1 or more seconds")
    if not 0 <= pid < n:
        raise ValueError(f"--process_id={pid} is not in 0..{n - 1}; number processes from 0")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    more = {} if heartbeat_timeout_s is None else {"heartbeat_timeout_seconds": heartbeat_timeout_s}
    jax.distributed.initialize(address, num_processes=n, process_id=pid, **more)
    return True


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    try:
        return None if v is None else int(v)
    except ValueError:
        raise ValueError(f"{name}={v!r} is not an integer; set it to one") from None


def process_count() -> int:
    """Processes in the run (1 without the distributed runtime). Starts jax's backend: ask only
    after `initialize`."""
    import jax

    return jax.process_count()


def is_writer() -> bool:
    """True on process 0, the one process that writes artifacts."""
    import jax

    return jax.process_index() == 0


def agree(flag: bool) -> bool:
    """Process 0's `flag` on every process (one process: `flag`). Used for "is this stage done":
    a follower that decided on its own could skip a stage whose collectives the others enter."""
    if process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def smallest(values: list[int]) -> list[int]:
    """Each of `values` at its smallest over the processes (one process: `values`). Used for
    the batch sizes "auto" picks (jaxcirc.infra.batches): each process fits its own memory,
    and every process must run (and key its stages) with the same sizes."""
    if process_count() == 1:
        return [int(v) for v in values]
    from jax.experimental import multihost_utils

    every = multihost_utils.process_allgather(np.asarray(values, np.int32))
    return [int(v) for v in np.min(np.asarray(every).reshape(-1, len(values)), axis=0)]


def barrier(name: str) -> None:
    """Every process waits here until all arrive (one process: returns at once)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class FollowerStage(artifacts.Stage):
    """A stage as a non-writing process sees it: done and output_hash read the run directory
    (process 0's stage), while the phase's own files go to a private scratch directory that
    `finish` deletes. `path`/`dir` therefore never touch the run directory."""

    def __init__(self, run_root: Path, name: str, key, scratch: Path):
        super().__init__(run_root, name, key)
        self.shared = artifacts.Stage(run_root, name, key)
        self.dir = scratch.joinpath(*name.split("/"))

    @property
    def done(self) -> bool:
        return self.shared.done

    def finish(self, outputs, meta=None) -> str:
        # Nothing to record: process 0 writes the stamp; read its hash after the barrier.
        shutil.rmtree(self.dir, ignore_errors=True)
        return ""

    def output_hash(self) -> str:
        return self.shared.output_hash()

    def outputs(self) -> dict[str, Path]:
        return self.shared.outputs()


def scratch_dir(run_root: Path) -> Path:
    """This process's private directory for its discarded stage files: one per run directory
    and process, emptied first, so a follower killed mid-stage (its cleanup never ran) leaves
    at most one such directory, which the rerun reuses."""
    import jax

    name = f"jaxcirc-{artifacts.config_hash(str(run_root))[:12]}-p{jax.process_index()}"
    path = Path(tempfile.gettempdir()) / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    return path
