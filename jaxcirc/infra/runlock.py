"""One run at a time per run directory: `with hold(root): ...` takes an exclusive lock on
`<root>/.lock` or raises a one-line ValueError naming the process that holds it.

The lock is the kernel's (fcntl.flock), so it is released when its process ends in any way
(SIGKILL and crashes included): a stale lock file never blocks the next run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"


@contextlib.contextmanager
def hold(root: str | os.PathLike) -> Iterator[Path]:
    """Hold the run directory's lock for the duration of the block; yields the lock file."""
    path = Path(root) / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise ValueError(
                f"run directory {root} is in use by {holder}; wait for that run to end, "
                f"or choose another --workdir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
