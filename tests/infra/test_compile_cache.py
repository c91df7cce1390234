"""The persistent compilation cache: a second process loads what the first compiled (same bits),
broken entries are recompiled, JAXCIRC_COMPILE_CACHE=0 turns it off; CompileCounter counts per
thread. Each process here compiles two small programs (with the suite's XLA flags, which are part
of the cache key and the same in every process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcirc.infra import compile_cache, progress

ROOT = Path(__file__).resolve().parents[2]

# Inputs are numpy arrays so that the two jitted programs are the only compiles.
SCRIPT = """
import json, sys, warnings
import numpy as np
import jax, jax.numpy as jnp
from jaxcirc.infra import compile_cache

warnings.simplefilter("always")
path = compile_cache.enable()
x = np.linspace(-2, 2, 48 * 32, dtype=np.float32).reshape(48, 32)
f = jax.jit(lambda x: jax.nn.softmax(jnp.tanh(x @ x.T) * 3.0, axis=-1) @ x)
g = jax.jit(lambda x: jnp.cumsum(jnp.sin(x) ** 2, axis=0).max(1))
with compile_cache.CompileCounter() as cc:
    out = [np.asarray(f(x)), np.asarray(g(x))]
print(json.dumps({"dir": str(path) if path else None, "bits": [o.tobytes().hex() for o in out],
                  **cc.stats.as_dict()}))
"""


def _run(env_extra: dict) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAXCIRC_")}
    env.update({"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env_extra})
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A first process with JAXCIRC_CACHE set: the cache goes to $JAXCIRC_CACHE/xla."""
    home = tmp_path_factory.mktemp("cache_home")
    res, _ = _run({"JAXCIRC_CACHE": str(home)})
    return home, res


def test_first_process_compiles_and_writes_beside_the_params_cache(cold):
    home, res = cold
    assert res["dir"] == str(home / "xla")
    assert (res["compiles"], res["cache_hits"]) == (2, 0)
    assert res["compile_seconds"] > 0 and res["trace_seconds"] > 0
    assert len(list((home / "xla").glob("*-cache"))) == 2


def test_second_process_loads_the_same_executables(cold):
    home, first = cold
    res, _ = _run({"JAXCIRC_CACHE": str(home)})
    assert (res["compiles"], res["cache_hits"]) == (0, 2)
    assert res["compile_seconds"] == 0 and res["cache_load_seconds"] > 0
    assert res["bits"] == first["bits"]


def test_broken_entries_are_recompiled_not_trusted(cold):
    home, first = cold
    # In place: the key includes the folder's path (module docstring), so a copy would miss.
    # The module's last use of the cached entries.
    truncated, overwritten = sorted((home / "xla").glob("*-cache"))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    overwritten.write_bytes(np.random.default_rng(0).bytes(overwritten.stat().st_size))
    res, err = _run({"JAXCIRC_CACHE": str(home)})
    assert (res["compiles"], res["cache_hits"]) == (2, 0)
    assert err.count("Error reading persistent compilation cache entry") == 2
    assert res["bits"] == first["bits"]


@pytest.mark.parametrize("off", ["0", "off"])
def test_off_switch(off, tmp_path):
    res, _ = _run({"JAXCIRC_CACHE": str(tmp_path), "JAXCIRC_COMPILE_CACHE": off})
    assert res["dir"] is None
    assert (res["compiles"], res["cache_hits"]) == (2, 0)
    assert not (tmp_path / "xla").exists()


def test_location(monkeypatch, tmp_path):
    monkeypatch.delenv("JAXCIRC_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path))
    assert compile_cache.location() == tmp_path / "xla"
    assert compile_cache.location(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.setenv("JAXCIRC_COMPILE_CACHE", str(tmp_path / "elsewhere"))
    assert compile_cache.location() == tmp_path / "elsewhere"
    for off in ("0", "OFF", "false", " no "):
        monkeypatch.setenv("JAXCIRC_COMPILE_CACHE", off)
        assert compile_cache.location() is None
        assert compile_cache.location(tmp_path) is None  # the off switch wins


def test_counter_counts_its_own_thread_and_labels_with_all_threads():
    x = jnp.ones((3, 5), jnp.float32)

    def other():
        with progress.labelled("worker"):
            jax.jit(lambda y: y * 7.0 - 1.0)(x).block_until_ready()

    with compile_cache.CompileCounter() as mine, compile_cache.CompileCounter(True) as every:
        jax.jit(lambda y: y.sum(0) + 2.0)(x).block_until_ready()
        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert mine.compiles == 1 and mine.cache_hits == 0 and mine.compile_seconds > 0
    assert every.compiles == 2
    assert {k: v.compiles for k, v in every.by_label.items()} == {"": 1, "worker": 1}
    jax.jit(lambda y: y - 3.0)(x).block_until_ready()  # after the counters stopped
    assert (mine.compiles, every.compiles) == (1, 2)
    assert "1 compiles" in str(mine)
