"""A small progress reporter for long loops, printing to stderr at most about once a second.

    for batch in progress(batches, total=len(batches), desc="extract gpt2"):
        ...

prints lines like `extract gpt2: 120/840 (60.0/s, eta 12s)`. Inside
`with labelled("gpt2-standin"):` the lines of that thread start with the label
(`gpt2-standin steering: 12/44 ...`), so loops running in several threads say whose they are.
With `JAXCIRC_QUIET=1` in the environment it prints nothing. A loop that finishes in under
`min_interval` prints nothing at all; a longer one ends with one summary line
(`extract gpt2: 840/840 (58.9/s, 14s total)`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

_LOCAL = threading.local()

# Set when the user interrupts a run (Ctrl-C): every progress loop, in every thread, stops at its
# next item by raising Interrupted, so worker threads end within seconds instead of finishing.
STOP = threading.Event()


class Interrupted(KeyboardInterrupt):
    """Raised in a worker thread at its next progress step after STOP was set."""


def check_stop() -> None:
    """Raise Interrupted if the run was interrupted (for long loops that show no progress)."""
    if STOP.is_set():
        raise Interrupted("interrupted")


@contextlib.contextmanager
def labelled(label: str):
    """Prefix the progress lines of this thread with `label` (e.g. the model's name) while inside;
    nested labels join with a space."""
    outer = getattr(_LOCAL, "label", "")
    _LOCAL.label = f"{outer} {label}".strip() if label else outer
    try:
        yield
    finally:
        _LOCAL.label = outer


def current_label() -> str:
    return getattr(_LOCAL, "label", "")


def _fmt_duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _fmt_rate(rate: float) -> str:
    return f"{rate:.1f}/s" if rate >= 1 else f"{1 / rate:.1f}s/it" if rate > 0 else "?/s"


def format_line(desc: str, i: int, total: int | None, elapsed: float, final: bool = False) -> str:
    """The text of one progress line after `i` items in `elapsed` seconds."""
    rate = i / elapsed if elapsed > 0 else 0.0
    count = f"{i}/{total}" if total is not None else f"{i}"
    if final:
        tail = f"{_fmt_duration(elapsed)} total"
    elif total is not None and rate > 0:
        tail = f"eta {_fmt_duration(max(total - i, 0) / rate)}"
    else:
        tail = "eta ?"
    prefix = f"{desc}: " if desc else ""
    return f"{prefix}{count} ({_fmt_rate(rate)}, {tail})"


def progress(
    iterable: Iterable[T],
    total: int | None = None,
    desc: str = "",
    min_interval: float = 1.0,
    stream: TextIO | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[T]:
    """Yield the items of `iterable`, reporting `desc: i/total (rate/s, eta)` to `stream`.

    `total` defaults to `len(iterable)` when it has one. `stream` defaults to `sys.stderr` as it is
    at print time. `clock` is injectable for tests. Quiet when the environment has JAXCIRC_QUIET=1.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    quiet = os.environ.get("JAXCIRC_QUIET", "") == "1"

    # Read once, in the thread that runs the loop: a generator resumes in its consumer's thread.
    label = current_label()
    desc = f"{label} {desc}".strip() if label else desc

    def emit(line: str) -> None:
        if not quiet:
            write_line(line, stream or sys.stderr)

    start = last = clock()
    i = 0
    for item in iterable:
        check_stop()
        yield item
        i += 1
        now = clock()
        if now - last >= min_interval:
            emit(format_line(desc, i, total, now - start))
            last = now
    elapsed = clock() - start
    if elapsed >= min_interval:
        emit(format_line(desc, i, total, elapsed, final=True))


def write_line(line: str, stream: TextIO | None = None) -> None:
    """`line` and its newline in one write (default stderr), flushed: print() writes the two
    apart, and lines from phases running in threads would interleave."""
    stream = stream or sys.stderr
    stream.write(line + "\n")
    stream.flush()
