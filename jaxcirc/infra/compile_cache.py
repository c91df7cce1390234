"""Compile once: JAX's persistent compilation cache, and a counter of what XLA compiles.

    from jaxcirc.infra import compile_cache
    compile_cache.enable()                     # before the first jit call; scripts/cli.py does it
    with compile_cache.CompileCounter() as cc:
        run_phase(...)
    cc.compiles, cc.cache_hits, cc.compile_seconds   # e.g. 3, 41, 12.5

Where: `$JAXCIRC_CACHE/xla` when JAXCIRC_CACHE is set, else `~/.cache/jaxcirc/xla` (beside the
converted-params cache, `models.param_cache`). `JAXCIRC_COMPILE_CACHE=<dir>` puts it elsewhere;
`JAXCIRC_COMPILE_CACHE=0` (or `off`, `false`, `no`) turns it off. Every compiled program is kept,
however quick its compile: on 2 CPU cores a load takes ~1 ms where even a small compile takes
10-50 ms. The folder grows without bound (the demo's smoke study leaves 213 programs, 3.7 MB);
delete it at will.

Why a cached program is safe to reuse (read from jax 0.10.2's `jax/_src/cache_key.py` and
`compiler.py`): the key is a SHA-256 over the StableHLO of the program (jax's lowering, so a
jax that lowers differently misses), the jaxlib version, the backend's platform and platform
version, every XLA flag (`XLA_FLAGS`, `--xla*` argv), the serialized compile options, the device
topology or device kinds, and the compression used. So another jax/jaxlib, backend, GPU kind or
flag set (the tests' `--xla_backend_optimization_level=0`, say) never reads this entry. The
compile options also carry the folder's own path (jax points XLA's GPU autotuning cache inside
it, on every backend), so a moved or copied folder starts cold, and nothing is lost. On CPU
the entry also records the host's CPU features and XLA refuses to load it on a host lacking one
(a shared home folder across machines is safe: jax warns and recompiles); on some Intel CPUs that
check is too strict and every entry is refused (jax-ml/jax#38445): then nothing is gained but a
warning per program, and nothing is wrong (JAXCIRC_COMPILE_CACHE=0 silences it). A loaded program is the very executable compiled before, so results are the
same bit for bit (tests/test_compile_cache.py checks this).

A broken entry is never trusted: jax reads it inside a try, warns ("Error reading persistent
compilation cache entry ...") and compiles afresh. Entries are zlib-compressed (zstd when the
`zstandard` package is installed), so truncation and overwriting fail to decompress; with zlib
its checksum also catches flipped bits. jax does not overwrite the broken file: each later
process warns once for that program and recompiles it until the file is deleted.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path

OFF = ("0", "off", "false", "no")

# jax.monitoring event names (jax 0.10.2: jax/_src/dispatch.py and compiler.py). The backend
# event times every trip to XLA or the cache; a cache hit is recorded inside it, just before.
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"
TRACE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
)


def location(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """The folder `enable` uses: `cache_dir` if given, else `$JAXCIRC_COMPILE_CACHE`, else
    `models.param_cache.cache_home() / "xla"`; None when JAXCIRC_COMPILE_CACHE turns it off."""
    env = os.environ.get("JAXCIRC_COMPILE_CACHE", "").strip()
    if env.lower() in OFF:
        return None
    if cache_dir is not None:
        return Path(cache_dir)
    if env:
        return Path(env)
    from models import param_cache

    return param_cache.cache_home() / "xla"


def enable(cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in `location(cache_dir)`;
    returns that folder, or None (and changes nothing) when JAXCIRC_COMPILE_CACHE is off.

    Call it before the first compile; calling it later, or again with another folder, also
    works (jax's cache is reset to the new folder). A folder that cannot be created leaves
    the cache off with a warning: compiling still works.
    """
    import warnings

    import jax
    from jax.experimental.compilation_cache import compilation_cache as jcc

    path = location(cache_dir)
    if path is None:
        return None
    path = path.expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        warnings.warn(f"compile cache off: cannot create {path}: {e.strerror or e}", stacklevel=2)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # Keep every program: loads take ~1 ms, the smallest compiles 10 ms (module docstring).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # jax decides once per process, at its first compile, whether the cache is used: reset so
    # that a late call (or a new folder) takes effect.
    jcc.reset_cache()
    return path


@dataclasses.dataclass
class CompileStats:
    """What XLA did: programs compiled, programs loaded from the persistent cache, and seconds.

    compile_seconds: XLA compiling the programs not in the cache (and writing them to it).
    cache_load_seconds: reading and deserializing the programs found in the cache.
    trace_seconds: tracing to a jaxpr and lowering to StableHLO, which the cache does not save
    (jax skips both when its in-memory cache already holds the function).
    """

    compiles: int = 0
    cache_hits: int = 0
    compile_seconds: float = 0.0
    cache_load_seconds: float = 0.0
    trace_seconds: float = 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.compiles} compiles ({self.compile_seconds:.1f} s), {self.cache_hits} cache "
            f"hits ({self.cache_load_seconds:.1f} s), tracing {self.trace_seconds:.1f} s"
        )


class CompileCounter:
    """Counts XLA compilations and persistent-cache hits while active (a context manager, or
    `start()` / `stop()`).

        with CompileCounter() as cc:           # in the thread that runs the phase
            ...
        log["compile"] = cc.stats.as_dict()    # or cc.compiles, cc.cache_hits, cc.compile_seconds

    By default it counts only the thread that entered it: jax compiles in the thread that calls
    the jitted function, so a phase run in a worker thread gets exactly its own compiles even
    when other phases compile beside it. `all_threads=True` counts every thread, and splits the
    counts by the thread's progress label (`jaxcirc.infra.progress.labelled`) in `by_label`.
    Thread-safe; counters may nest and overlap. Built on `jax.monitoring` listeners (registered
    once per process, never removed; idle when no counter is active).
    """

    def __init__(self, all_threads: bool = False):
        self.all_threads = all_threads
        self.stats = CompileStats()
        self.by_label: dict[str, CompileStats] = {}
        self.thread: int | None = None

    @property
    def compiles(self) -> int:
        return self.stats.compiles

    @property
    def cache_hits(self) -> int:
        return self.stats.cache_hits

    @property
    def compile_seconds(self) -> float:
        return self.stats.compile_seconds

    def start(self) -> CompileCounter:
        _register_listeners()
        self.thread = threading.get_ident()
        with _LOCK:
            _ACTIVE.append(self)
        return self

    def stop(self) -> CompileCounter:
        with _LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)
        return self

    def __enter__(self) -> CompileCounter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __str__(self) -> str:
        return str(self.stats)

    def record(self, label: str, field: str, amount: float) -> None:
        """Add `amount` to `field` of the totals and of `label`'s counts (called under _LOCK)."""
        for stats in (self.stats, self.by_label.setdefault(label, CompileStats())):
            setattr(stats, field, getattr(stats, field) + amount)


_LOCK = threading.Lock()
_ACTIVE: list[CompileCounter] = []
_PENDING = threading.local()  # per thread: a cache hit seen, its backend event not yet
_REGISTERED = False


def _counters_here() -> list[CompileCounter]:
    me = threading.get_ident()
    return [c for c in _ACTIVE if c.all_threads or c.thread == me]


def _record(fields: dict[str, float]) -> None:
    from jaxcirc.infra import progress

    label = progress.current_label()
    with _LOCK:
        for counter in _counters_here():
            for field, amount in fields.items():
                counter.record(label, field, amount)


def _on_event(event: str, **kwargs) -> None:
    if event == CACHE_HIT:
        _PENDING.hit = True


def _on_duration(event: str, secs: float, **kwargs) -> None:
    if event == BACKEND_COMPILE:
        hit = getattr(_PENDING, "hit", False)
        _PENDING.hit = False
        if _ACTIVE:
            if hit:
                _record({"cache_hits": 1, "cache_load_seconds": secs})
            else:
                _record({"compiles": 1, "compile_seconds": secs})
    elif event in TRACE_EVENTS and _ACTIVE:
        _record({"trace_seconds": secs})


def _register_listeners() -> None:
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        from jax import monitoring

        monitoring.register_event_listener(_on_event)
        monitoring.register_event_duration_secs_listener(_on_duration)
        _REGISTERED = True
