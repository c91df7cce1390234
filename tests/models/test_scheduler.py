"""models.scheduler.run_rows: many edited rows over a few prompts, re-run from their layer and
decoded in shared padded batches, equal one plain `generate` call per row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import (
    EngineSettings,
    Load,
    Readout,
    Rows,
    batch_sizes,
    run_rows,
    scheduler,
    shared_batches,
)
from models.contract import Edits
from models.generate import Sampling, decode_weights, generate, prefill

ROOT = Path(__file__).resolve().parents[2]

N_NEW = 5
EOS = 7


def _model():
    return models.random_model(models.tiny_hf_config("gpt_neox", num_hidden_layers=3), seed=3)


def _prompts(d_vocab: int):
    """[4, 6] left-padded prompts of lengths 6, 4, 6, 3 (already left-aligned)."""
    ids = np.random.default_rng(0).integers(1, d_vocab, (4, 6)).astype(np.int32)
    mask = np.ones((4, 6), bool)
    mask[1, :2] = False
    mask[3, :3] = False
    return ids, mask


def _one(cfg, params, ids, mask, p, settings, readout, **edits):
    """Prompt p generated alone with its own draws (row_ids = [p])."""
    return generate(
        cfg,
        params,
        ids[p : p + 1],
        mask[p : p + 1],
        N_NEW,
        sampling=settings.sampling,
        seed=settings.seed,
        row_ids=[p],
        vocab_ids=readout.vocab_ids,
        proj_dirs=readout.proj_dirs,
        eos_id=settings.eos_id,
        **edits,
    )


def _assert_row(out, i, g):
    np.testing.assert_array_equal(out.tokens[i], np.asarray(g.tokens)[0])
    assert out.eos_at[i] == int(np.asarray(g.eos_at)[0])
    np.testing.assert_allclose(out.cols[i], np.asarray(g.cols)[0], atol=1e-4)
    np.testing.assert_allclose(out.proj[i], np.asarray(g.proj)[0], atol=1e-4)


SETTINGS = [
    # Sizes that divide nothing: re-run pieces of 2 rows, decode batches of 3 mixing layers.
    EngineSettings(N_NEW, Sampling(), seed=1, batch_rows=3, prefill_rows=2, exact_batches=True),
    EngineSettings(N_NEW, Sampling(1.3, top_k=6, min_new_tokens=2), seed=4, eos_id=EOS),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["greedy_small_batches", "topk_min_new"])
def test_steered_rows_equal_single_generate_calls(settings):
    m = _model()
    cfg = m.config
    ids, mask = _prompts(cfg.d_vocab)
    rng = np.random.default_rng(1)
    rows = Rows(
        start_layer=np.array([2, 0, 2, 1, 0, 2, 1], np.int32),
        prompt_idx=np.array([0, 1, 3, 2, 0, 1, 3]),
        add_vec=(4 * rng.standard_normal((7, cfg.d_model))).astype(np.float32),
    )
    readout = Readout(np.arange(0, cfg.d_vocab, 11), rng.standard_normal((2, cfg.d_model)))
    base, out = run_rows(cfg, m.params, ids, mask, rows, settings, readout)
    for p in range(len(ids)):
        _assert_row(base, p, _one(cfg, m.params, ids, mask, p, settings, readout))
    for i, (layer, p) in enumerate(zip(rows.start_layer, rows.prompt_idx, strict=True)):
        add = np.zeros((cfg.n_layers, cfg.d_model), np.float32)
        add[layer] = rows.add_vec[i]
        edits = Edits(resid_add=jnp.asarray(add))
        _assert_row(out, i, _one(cfg, m.params, ids, mask, p, settings, readout, edits=edits))
    # The edits did something (else the equality above proves little).
    assert (out.tokens != base.tokens[rows.prompt_idx]).any()


def test_patched_rows_equal_generate_with_prompt_edits():
    """A row patching resid_pre[L] at prompt positions equals `generate` with the same patch as
    a prompt-only edit (the generated tokens see it through the cache only)."""
    m = _model()
    cfg = m.config
    ids, mask = _prompts(cfg.d_vocab)
    rng = np.random.default_rng(2)
    n, width = 5, ids.shape[1]
    pmask = np.zeros((n, width), np.float32)
    pmask[:, -1] = 1.0  # the last prompt token
    pmask[2, -3:] = 1.0
    rows = Rows(
        start_layer=np.array([1, 2, 0, 1, 2], np.int32),
        prompt_idx=np.array([0, 3, 1, 2, 1]),
        add_vec=np.zeros((n, cfg.d_model), np.float32),
        patch_site="resid_pre",
        patch_val=(8 * rng.standard_normal((n, width, cfg.d_model))).astype(np.float32),
        patch_mask=pmask,
    )
    settings = EngineSettings(N_NEW, batch_rows=4, prefill_rows=2, exact_batches=True)
    readout = Readout(np.arange(0, cfg.d_vocab, 7), None)
    base, out = run_rows(cfg, m.params, ids, mask, rows, settings, readout)
    for i, (layer, p) in enumerate(zip(rows.start_layer, rows.prompt_idx, strict=True)):
        val = np.zeros((cfg.n_layers, 1, width, cfg.d_model), np.float32)
        at = np.zeros((cfg.n_layers, 1, width), np.float32)
        val[layer, 0], at[layer, 0] = rows.patch_val[i], pmask[i]
        edits = Edits(resid_patch=jnp.asarray(val), resid_patch_mask=jnp.asarray(at))
        g = _one(cfg, m.params, ids, mask, p, settings, readout, prompt_edits=edits)
        np.testing.assert_array_equal(out.tokens[i], np.asarray(g.tokens)[0])
        np.testing.assert_allclose(out.cols[i], np.asarray(g.cols)[0], atol=1e-4)
    assert out.proj is None and base.proj is None
    assert (out.tokens != base.tokens[rows.prompt_idx]).any()


def test_batch_sizes_even_out_the_calls():
    rows = Rows(np.repeat(np.array([0, 2], np.int32), 20), np.zeros(40, np.int64), np.zeros(40))
    # 45 rows in calls of <= 16: 3 calls of 15; 20 rows per layer in calls of <= 8: 3 of 7.
    assert batch_sizes(5, rows, EngineSettings(batch_rows=16, prefill_rows=8)) == (15, 7)
    exact = EngineSettings(batch_rows=16, prefill_rows=32, exact_batches=True)
    assert batch_sizes(5, rows, exact) == (16, 16)


def test_shared_batches_fix_every_run_to_the_largest():
    s = EngineSettings(batch_rows=16, prefill_rows=8)
    small, large = Load(3, 6, 2), Load(5, 40, 20)
    shared = shared_batches(s, [small, large])
    # The large run alone: 45 rows in 3 calls of 15, 20 rows per layer in 3 of 7; the small run
    # alone would take 9 and 2. Shared, both take the large run's, and 5 prompt rows.
    assert (shared.batch_rows, shared.prefill_rows, shared.prompt_rows) == (15, 7, 5)
    rows = Rows(np.zeros(6, np.int32), np.zeros(6, np.int64), np.zeros((6, 4)))
    assert batch_sizes(3, rows, shared) == (15, 7)
    assert batch_sizes(3, rows, s) == (9, 6)


def test_a_wider_bucket_changes_no_row():
    """Prompts right-padded to more slots, more prompt rows and larger fixed calls (the shared
    shapes of a phase) give the same tokens and readouts as the prompts' own shapes."""
    m = _model()
    cfg = m.config
    ids, mask = _prompts(cfg.d_vocab)
    rng = np.random.default_rng(2)
    rows = Rows(
        start_layer=np.array([2, 0, 2, 1, 0, 2, 1], np.int32),
        prompt_idx=np.array([0, 1, 3, 2, 0, 1, 3]),
        add_vec=(4 * rng.standard_normal((7, cfg.d_model))).astype(np.float32),
    )
    readout = Readout(np.arange(0, cfg.d_vocab, 11), rng.standard_normal((2, cfg.d_model)))
    own = EngineSettings(N_NEW, Sampling(1.3, top_k=6, min_new_tokens=2), seed=4, eos_id=EOS)
    wide = shared_batches(own, [Load(len(ids), len(rows), 3), Load(9, 50, 20)])
    assert wide.prompt_rows == 9 and wide.batch_rows > len(ids) + len(rows)
    pad = ((0, 0), (0, 16 - ids.shape[1]))  # right padding: left_align moves it to the front
    want = run_rows(cfg, m.params, ids, mask, rows, own, readout)
    got = run_rows(cfg, m.params, np.pad(ids, pad), np.pad(mask, pad), rows, wide, readout)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g.tokens, w.tokens)
        np.testing.assert_array_equal(g.eos_at, w.eos_at)
        np.testing.assert_allclose(g.cols, w.cols, atol=1e-4)
        np.testing.assert_allclose(g.proj, w.proj, atol=1e-4)


def test_bad_inputs():
    m = _model()
    ids, mask = _prompts(m.config.d_vocab)
    mask[2] = False
    rows = Rows(np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros((1, m.config.d_model)))
    with pytest.raises(ValueError, match="no tokens"):
        run_rows(m.config, m.params, ids, mask, rows)
    with pytest.raises(ValueError, match="loads is empty"):
        shared_batches(EngineSettings(), [])
    with pytest.raises(ValueError, match="window_step"):
        EngineSettings(window_step=0)
    with pytest.raises(ValueError, match="prompt_rows=2"):
        run_rows(m.config, m.params, ids, ~mask, rows, EngineSettings(prompt_rows=2))


def test_decode_call_updates_its_caches_in_place():
    """The compiled decode call is handed the batch's KV caches donated and returns them, so XLA
    aliases them input to output (alias bytes = the caches' bytes) and its scratch holds less
    than another copy of them. Before, the caches were an input the call could not write, which
    the decode loop copied into its carry: alias 0, scratch above the caches' bytes."""
    m = _model()
    cfg = m.config
    ids, mask = _prompts(cfg.d_vocab)
    state = prefill(cfg, m.params, jnp.asarray(ids), jnp.asarray(mask), ids.shape[1] + N_NEW - 1)
    n = len(ids)
    batch = scheduler._DecodeBatch(
        state.replace(caches=()),
        np.full(n, -1, np.int32),
        np.zeros((n, cfg.d_model), np.float32),
        np.arange(n),
    )
    args = (decode_weights(cfg, m.params), state.caches, batch, 0, Readout().on_device())
    steps = scheduler._Steps(N_NEW, Sampling(), None)
    compiled = scheduler._decode_rows.lower(cfg, m.params, *args, steps).compile()
    use = compiled.memory_analysis()
    kv = sum(a.nbytes for a in jax.tree_util.tree_leaves(state.caches))
    assert use.alias_size_in_bytes >= kv
    assert use.temp_size_in_bytes < kv


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's VmHWM")
def test_sweep_peak_memory_is_about_one_kv_cache():
    """A sweep whose KV caches (512 MiB) dwarf the model raises the process's peak RSS by at
    most 1.5x (caches + params): the caches are held once, plus the re-run piece being copied
    in (1/16 of them): 576 MiB measured. Before, they were held in four copies at once
    (waiting numpy rows, the assembled batch, its device copy, the decode loop's): 2151 MiB.
    Runs in a subprocess (tests/models/sweep_memory.py) so the peak is the sweep's alone, with
    glibc's mmap threshold fixed at 1 MiB: every freed large buffer then goes back to the OS
    (by default the threshold grows, freed blocks stay resident and are reused unseen, and the
    old code's rise read anywhere from 1.7 to 2.2 GB)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MALLOC_MMAP_THRESHOLD_": str(2**20)}
    script = ROOT / "tests" / "models" / "sweep_memory.py"
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["rise_mib"] <= 1.5 * (got["kv_mib"] + got["params_mib"]), got
