"""The steering sweep equals single runs; the forward-only readouts equal the sweep's; the
arithmetic a projection moves by is what the added vector gives; patching replaces what it says
it replaces. (The phase and its verdicts: tests/phases/test_phase_steering.py.)"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import models
from jaxcirc.core.patching import PatchGrid, patch_positions, patching_sweep
from jaxcirc.core.steering import (
    SteeringGrid,
    arithmetic_projection,
    internal_readout,
    sensitivity_weights,
    steering_sweep,
    typical_resid_norms,
)
from models import Edits, Record
from models.generate import Sampling, generate
from models.scheduler import EngineSettings, Readout


def _random_prompts(seed, vocab, n, width, short=()):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, width)).astype(np.int32)
    mask = np.ones((n, width), bool)
    for row, length in short:
        mask[row, length:] = False
    return ids, mask


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(1.5, top_k=5)], ids=["greedy", "topk"])
def test_sweep_equals_loop_of_single_runs(sampling):
    """Every (direction, layer, alpha) cell of the batched sweep (re-runs from layer L, rows of
    different layers decoded together, padded batches) equals its own `generate` call."""
    m = models.random_model(
        models.tiny_hf_config(
            "gpt_neo", num_layers=3, attention_types=[[["local", "global", "local"], 1]]
        ),
        seed=1,
    )
    cfg = m.config
    ids, mask = _random_prompts(0, cfg.d_vocab, 5, 7, short=[(1, 5), (3, 3)])
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((2, cfg.n_layers, cfg.d_model)).astype(np.float32)
    scales = np.array([0.5, 1.0, 1.5], np.float32)
    layers, alphas = (0, 2), (-2.0, 0.0, 3.0)
    vocab_ids = np.arange(0, cfg.d_vocab, 9)
    # Sizes that divide nothing: partial re-run chunks, padded decode batches mixing layers.
    settings = EngineSettings(6, sampling, seed=3, batch_rows=8, prefill_rows=3, exact_batches=True)
    grid = SteeringGrid(dirs, scales, layers, alphas)
    readout = Readout(vocab_ids, dirs[:, -1])
    sw = steering_sweep(cfg, m.params, ids, mask, grid, settings, readout)
    assert sw.rows_run == 5 + 2 * 2 * 2 * 5  # alpha = 0 once, not once per layer and direction
    units = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    for di in range(2):
        for li, layer in enumerate(layers):
            for ai, alpha in enumerate(alphas):
                add = np.zeros((cfg.n_layers, cfg.d_model), np.float32)
                add[layer] = alpha * scales[layer] * units[di, layer]
                g = generate(
                    cfg,
                    m.params,
                    ids,
                    mask,
                    6,
                    edits=Edits(resid_add=jnp.asarray(add)),
                    sampling=sampling,
                    seed=3,
                    vocab_ids=vocab_ids,
                    proj_dirs=dirs[:, -1],
                )
                np.testing.assert_array_equal(sw.out.tokens[di, li, ai], np.asarray(g.tokens))
                np.testing.assert_allclose(sw.out.cols[di, li, ai], np.asarray(g.cols), atol=1e-4)
                np.testing.assert_allclose(sw.out.proj[di, li, ai], np.asarray(g.proj), atol=1e-4)
    # The steering did something (else the equality above proves little).
    assert (sw.out.tokens[:, :, 0] != sw.out.tokens[:, :, 1]).any()


def test_typical_norms_skip_first_token():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=2)
    ids, mask = _random_prompts(1, 512, 3, 6, short=[(2, 4)])
    norms = typical_resid_norms(m.config, m.params, ids, mask)
    _, tr = m.forward(ids, mask, record=Record(resid_pre=True, logits="none"))
    n = np.linalg.norm(np.asarray(tr.resid_pre), axis=-1)  # [layer, batch, pos]
    keep = mask.copy()
    keep[:, 0] = False
    np.testing.assert_allclose(norms, np.median(n[:, keep], axis=1), rtol=1e-6)


def test_internal_readout_equals_the_sweep():
    """The forward-only readout of a cell (no generation) is the sweep's first readout (at the
    last prompt token): same logits and projections, for every direction, layer and alpha, with
    padded prompts and partial chunks; cells not asked for are NaN."""
    m = models.random_model(models.tiny_hf_config("gpt2", n_layer=3), seed=1)
    cfg = m.config
    ids, mask = _random_prompts(0, cfg.d_vocab, 5, 7, short=[(1, 5), (3, 3)])
    dirs = np.random.default_rng(0).standard_normal((2, cfg.n_layers, cfg.d_model))
    grid = SteeringGrid(dirs.astype(np.float32), np.array([0.5, 1.0, 1.5]), (0, 2), (-2.0, 0, 3.0))
    readout = Readout(np.arange(0, cfg.d_vocab, 9), dirs[:, -1])
    settings = EngineSettings(2, batch_rows=16, prefill_rows=8)
    sw = steering_sweep(cfg, m.params, ids, mask, grid, settings, readout)
    cells = np.array([[True, True, True], [False, True, True]])
    cols, proj = internal_readout(cfg, m.params, ids, mask, grid, readout, cells, rows_per_call=7)
    for li, ai in [(0, 0), (0, 2), (1, 2)]:
        np.testing.assert_allclose(cols[:, li, ai], sw.out.cols[:, li, ai, :, 0], atol=1e-4)
        np.testing.assert_allclose(proj[:, li, ai], sw.out.proj[:, li, ai, :, 0], atol=1e-4)
    assert np.isnan(cols[:, :, 1]).all() and np.isnan(cols[:, 1, 0]).all()


def test_projection_moves_by_the_arithmetic_when_blocks_write_nothing():
    """With every block's output zeroed the final residual is resid_pre[L] + the added vector:
    the projection effect is exactly `arithmetic_projection`."""
    m = models.random_model(models.tiny_hf_config("gpt2", n_layer=3), seed=2)
    blocks = m.params["blocks"]
    for group, names in (("attn", ("W_O", "b_O")), ("mlp", ("W_out", "b_out"))):
        for name in names:
            blocks[group][name] = blocks[group][name] * 0.0
    cfg = m.config
    ids, mask = _random_prompts(1, cfg.d_vocab, 4, 6, short=[(2, 4)])
    rng = np.random.default_rng(3)
    dirs = rng.standard_normal((2, cfg.n_layers, cfg.d_model)).astype(np.float32)
    read = rng.standard_normal((3, cfg.d_model)).astype(np.float32)
    grid = SteeringGrid(dirs, np.array([0.7, 1.3, 2.0]), (0, 1, 2), (-4.0, 0.0, 2.0))
    _, proj = internal_readout(cfg, m.params, ids, mask, grid, Readout(None, read))
    _, base = internal_readout(
        cfg, m.params, ids, mask, SteeringGrid(dirs, np.zeros(3), (0,), (1.0,)), Readout(None, read)
    )
    effect = proj - base[:, :1, :1]  # [dir, layer, alpha, prompt, k]
    want = arithmetic_projection(grid, read)  # [dir, layer, alpha, k]
    for ai in (0, 2):
        np.testing.assert_allclose(
            effect[:, :, ai], np.repeat(want[:, :, ai, None], 4, 2), atol=1e-3
        )


def test_full_position_patch_reproduces_source():
    """Replacing resid_pre[L] at every position with a same-length source's makes the prompt-end
    logits the source's at every L; at L = 0 the generation is the source's too."""
    m = models.random_model(models.tiny_hf_config("gpt2", n_layer=3), seed=4)
    cfg = m.config
    t_ids, t_mask = _random_prompts(2, cfg.d_vocab, 3, 6)
    s_ids, s_mask = _random_prompts(3, cfg.d_vocab, 3, 6)
    every = np.arange(cfg.d_vocab)
    settings = EngineSettings(4, batch_rows=16, prefill_rows=8)
    grid = PatchGrid((0, 1, 2), ("resid_pre",), "all")
    res = patching_sweep(
        cfg, m.params, t_ids, t_mask, s_ids, s_mask, grid, settings, Readout(every)
    )
    src_logits, _ = m.forward(s_ids, s_mask, record=Record(logits="last"))
    out = res.out["resid_pre"]  # [layer, condition, target]
    for li in range(3):
        np.testing.assert_allclose(out.cols[li, 0, :, 0], np.asarray(src_logits), atol=1e-4)
    src_gen = generate(cfg, m.params, s_ids, s_mask, 4)
    np.testing.assert_array_equal(out.tokens[0, 0], np.asarray(src_gen.tokens))
    # Control rows patch from target i + 1: their prompt-end logits are that target's.
    t_logits, _ = m.forward(t_ids, t_mask, record=Record(logits="last"))
    np.testing.assert_allclose(
        out.cols[1, 1, :, 0], np.roll(np.asarray(t_logits), -1, axis=0), atol=1e-4
    )


@pytest.mark.parametrize("site", ["attn_out", "mlp_out"])
def test_last_position_patch_equals_forward_edit(site):
    """Patching block L's attn/mlp output at the last token equals the forward pass with the same
    `Edits` (different lengths: the sweep's left alignment must put the patch on the last token)."""
    m = models.random_model(models.tiny_hf_config("gpt_neox"), seed=6)
    cfg = m.config
    t_ids, t_mask = _random_prompts(4, cfg.d_vocab, 3, 6, short=[(0, 4)])
    s_ids, s_mask = _random_prompts(5, cfg.d_vocab, 2, 5, short=[(1, 3)])
    vocab_ids = np.arange(0, cfg.d_vocab, 5)
    # Re-run pieces of 2 rows: the two length-4 rows run over a 4-slot window of the 6.
    settings = EngineSettings(3, batch_rows=16, prefill_rows=2, exact_batches=True)
    grid = PatchGrid((1,), (site,), "last")
    res = patching_sweep(
        cfg, m.params, t_ids, t_mask, s_ids, s_mask, grid, settings, Readout(vocab_ids)
    )
    _, s_tr = m.forward(s_ids, s_mask, record=Record(**{site: True}, at="last", logits="none"))
    src_last = np.asarray(getattr(s_tr, site))  # [layer, source, d]
    t_last = t_mask.sum(1) - 1
    plain, _ = m.forward(t_ids, t_mask, record=Record(logits="last"))
    for i in range(3):
        patch = np.zeros((cfg.n_layers, 1, 6, cfg.d_model), np.float32)
        pmask = np.zeros((cfg.n_layers, 1, 6), np.float32)
        patch[1, 0, t_last[i]] = src_last[1, i % 2]
        pmask[1, 0, t_last[i]] = 1.0
        field = {"attn_out": "attn_out_patch", "mlp_out": "mlp_out_patch"}[site]
        edits = Edits(**{field: jnp.asarray(patch), field + "_mask": jnp.asarray(pmask)})
        want, _ = m.forward(t_ids[i : i + 1], t_mask[i : i + 1], edits, Record(logits="last"))
        got = res.out[site].cols[0, 0, i, 0]
        np.testing.assert_allclose(got, np.asarray(want)[0, vocab_ids], atol=1e-4)
        assert np.abs(got - np.asarray(plain)[i, vocab_ids]).max() > 1e-3  # it changed something


def test_bad_inputs():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=0)
    ids, mask = _random_prompts(0, 512, 2, 4)
    zero = np.zeros((1, m.config.n_layers, m.config.d_model), np.float32)
    with pytest.raises(ValueError, match="zero"):
        steering_sweep(m.config, m.params, ids, mask, SteeringGrid(zero, np.ones(2), (0,), (1.0,)))
    with pytest.raises(ValueError, match="out of range"):
        grid = SteeringGrid(zero + 1, np.ones(2), (5,), (1.0,))
        steering_sweep(m.config, m.params, ids, mask, grid)
    with pytest.raises(ValueError, match="positions"):
        patch_positions(mask, mask, "first")
    with pytest.raises(ValueError, match="non-zero alpha"):
        sensitivity_weights([0.0])
