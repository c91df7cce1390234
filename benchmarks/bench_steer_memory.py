"""Peak host memory of bench_scaling's steering slice alone (jaxcirc side), one model per process.

    python -m benchmarks.bench_steer_memory --model=pythia-410m
    python -m benchmarks.bench_steer_memory --model=pythia-2.8b --dtype=bfloat16

Loads the random checkpoint bench_scaling saves under --workdir (saving it first if missing, in
a process of its own), resets the process's peak RSS (VmHWM, through /proc/self/clear_refs),
then runs bench_scaling's steering slice once (one `steering_sweep` call, its first: compiles
included, so the compiler's own memory counts). Prints one JSON line: the peak RSS during the sweep and the RSS before it
(both MiB), beside the bytes of the params and of one decode batch's KV caches, and the sweep's
wall seconds (indicative only on a shared machine). bench_scaling's own peak RSS column is the
whole process's (load, extraction and head sweep included).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# Runnable as a file (python benchmarks/bench_x.py) as well as a module (-m benchmarks.bench_x).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import hashlib
import json
import re
import time

import numpy as np
from absl import app

from benchmarks import bench_scaling  # its flags: --model, --dtype, --workdir, --quick, ...

FLAGS = bench_scaling.FLAGS


def _status_mib(field: str) -> float:
    """VmHWM (peak) or VmRSS (now) of this process, MiB."""
    text = open("/proc/self/status").read()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def _reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux: writing 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _kv_bytes(cfg, x, dtype) -> int:
    """Bytes of one decode batch's KV caches: [rows, head, slots, d_head] x 2 x layers."""
    from jaxcirc.core import steering
    from models.scheduler import EngineSettings, batch_sizes

    rows, _ = steering.steering_rows(len(x["s_ids"]), _grid(x, np.ones(cfg.n_layers)))
    dec_rows, _ = batch_sizes(len(x["s_ids"]), rows, EngineSettings(x["new"]))
    slots = x["s_ids"].shape[1] + x["new"] - 1
    per_layer = 2 * dec_rows * cfg.n_heads * slots * cfg.d_head
    return per_layer * cfg.n_layers * np.dtype(dtype).itemsize


def _grid(x, scales):
    from jaxcirc.core import steering

    return steering.SteeringGrid(x["direction"][None], scales, x["layers"], x["alphas"])


def measure(folder: _Path) -> dict:
    import jax

    import models
    from jaxcirc.core import steering
    from models.generate import GREEDY
    from models.scheduler import EngineSettings

    m = models.load(
        str(folder), stream=True, dtype=FLAGS.dtype, with_tokenizer=False, use_param_cache=False
    )
    cfg, params = m.config, jax.block_until_ready(m.params)
    x = bench_scaling.workload_inputs(cfg)
    norms = steering.typical_resid_norms(cfg, params, x["s_ids"], x["s_mask"])
    grid = _grid(x, (0.125 * norms).astype(np.float32))
    settings = EngineSettings(x["new"], GREEDY, 0)
    before = _status_mib("VmRSS")
    _reset_peak()
    t = time.perf_counter()
    sw = steering.steering_sweep(cfg, params, x["s_ids"], x["s_mask"], grid, settings)
    seconds = time.perf_counter() - t
    leaves = jax.tree_util.tree_leaves(params)
    dtype = leaves[0].dtype
    return {
        "model": FLAGS.model,
        "dtype": FLAGS.dtype,
        "steer_peak_rss_mib": round(_status_mib("VmHWM")),
        "rss_before_steer_mib": round(before),
        "params_mib": round(sum(a.nbytes for a in leaves) / 2**20),
        "kv_batch_mib": round(_kv_bytes(cfg, x, dtype) / 2**20),
        "steer_first_s": round(seconds, 1),
        "tokens_sha256": hashlib.sha256(np.asarray(sw.out.tokens, np.int32).tobytes()).hexdigest(),
    }


def main(argv):
    del argv
    folder = bench_scaling.checkpoint_folder(FLAGS.model)
    if not (folder / "config.json").is_file():  # saved by a process of its own: torch's memory
        if bench_scaling.run_role("save", FLAGS.model) is None:  # would stay in this one's RSS
            raise SystemExit(f"could not save {FLAGS.model}")
    print(json.dumps(measure(folder)))


if __name__ == "__main__":
    app.run(main)
