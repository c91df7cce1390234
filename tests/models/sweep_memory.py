"""Peak host memory of one `run_rows` sweep whose KV caches dwarf the model (run by
test_scheduler.py in a subprocess of its own, so that the peak is this sweep's alone).

A 4-layer GPT-NeoX of d_model 256 (~15 MB of params) decodes 1024 rows of 8 prompts over 64
cache slots: one decode batch, whose KV caches are 512 MiB. The sweep runs once to compile, then
the process's peak RSS is reset (VmHWM, through /proc/self/clear_refs) and the same sweep runs
again; prints one JSON line: the peak's rise over the RSS before that second sweep, the bytes of
the params and of the decode batch's caches. Run it with MALLOC_MMAP_THRESHOLD_=1048576 (as
the test does) so that freed large buffers leave the RSS.
"""

from __future__ import annotations

import json
import re

import jax
import numpy as np

import models
from models import EngineSettings, Rows, run_rows

ROWS, PROMPTS, WIDTH, NEW = 1024, 8, 32, 33


def _mib(field: str) -> float:
    text = open("/proc/self/status").read()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 1024


def main():
    hf = models.tiny_hf_config(
        "gpt_neox",
        hidden_size=256,
        num_attention_heads=4,
        intermediate_size=1024,
        num_hidden_layers=4,
        vocab_size=1024,
    )
    m = models.random_model(hf, seed=0)
    cfg = m.config
    rng = np.random.default_rng(0)
    ids = rng.integers(0, cfg.d_vocab, (PROMPTS, WIDTH)).astype(np.int32)
    mask = np.ones(ids.shape, bool)
    n = ROWS - PROMPTS
    rows = Rows(
        rng.integers(0, cfg.n_layers, n).astype(np.int32),
        rng.integers(0, PROMPTS, n),
        rng.standard_normal((n, cfg.d_model)).astype(np.float32),
    )
    settings = EngineSettings(NEW, batch_rows=ROWS, prefill_rows=64)
    run_rows(cfg, m.params, ids, mask, rows, settings)  # compiles
    before = _mib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    run_rows(cfg, m.params, ids, mask, rows, settings)
    slots = WIDTH + NEW - 1
    kv = 2 * cfg.n_layers * ROWS * cfg.n_heads * slots * cfg.d_head * 4
    params = sum(a.nbytes for a in jax.tree_util.tree_leaves(m.params))
    rise = _mib("VmHWM") - before
    print(json.dumps({"rise_mib": rise, "kv_mib": kv / 2**20, "params_mib": params / 2**20}))


if __name__ == "__main__":
    main()
