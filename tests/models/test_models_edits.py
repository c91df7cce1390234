"""Edits equal the same intervention written as a transformers hook; sweeps equal loops."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import models
from models import Edits, Record
from models import hf_reference as ref

ATOL = 1e-4
FAMILIES = ["gpt2", "gpt_neox", "gpt_neo"]


def _setup(family, seed=0, **overrides):
    hf_cfg = models.tiny_hf_config(family, **overrides)
    hf = ref.hf_model(hf_cfg, seed=seed)
    ids = np.random.default_rng(seed).integers(0, hf_cfg["vocab_size"], (2, 9)).astype(np.int32)
    return hf, ref.convert(hf, hf_cfg), ids


@pytest.mark.parametrize("family", FAMILIES)
def test_head_zero_ablation_equals_hook(family):
    hf, ours, ids = _setup(family, num_layers=2) if family == "gpt_neo" else _setup(family)
    cfg = ours.config
    layer, head = 1, 2
    e = cfg.d_head

    def zero_head(module, args):
        x = args[0].clone()
        x[..., head * e : (head + 1) * e] = 0
        return (x,) + args[1:]

    handle = ref.out_proj(hf, layer).register_forward_pre_hook(zero_head)
    try:
        hl, _ = ref.run_hf(hf, ids)
    finally:
        handle.remove()
    scale = jnp.ones((cfg.n_layers, cfg.n_heads)).at[layer, head].set(0.0)
    logits, _ = ours.forward(ids, edits=Edits(head_scale=scale))
    np.testing.assert_allclose(np.asarray(logits), hl, atol=ATOL, rtol=0)
    plain, _ = ours.forward(ids)
    assert np.abs(np.asarray(plain) - hl).max() > 1e-3  # the ablation did change something


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_addition_equals_hook(family):
    hf, ours, ids = _setup(family, seed=1)
    cfg = ours.config
    layer = 1
    vec = np.random.default_rng(1).normal(size=cfg.d_model).astype(np.float32)

    def add(module, args):
        return (args[0] + torch.as_tensor(vec),) + args[1:]

    handle = ref.blocks(hf)[layer].register_forward_pre_hook(add)
    try:
        hl, hh = ref.run_hf(hf, ids)
    finally:
        handle.remove()
    resid_add = jnp.zeros((cfg.n_layers, cfg.d_model)).at[layer].set(vec)
    logits, trace = ours.forward(
        ids, edits=Edits(resid_add=resid_add), record=Record(resid_pre=True)
    )
    np.testing.assert_allclose(np.asarray(logits), hl, atol=ATOL, rtol=0)
    # resid_pre records what the block saw, i.e. after the addition (as the hook's output).
    np.testing.assert_allclose(np.asarray(trace.resid_pre[0]), hh[0], atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_head_results_sum_to_attn_out(family):
    m = models.random_model(models.tiny_hf_config(family), seed=2)
    ids = np.random.default_rng(2).integers(0, 512, (2, 6)).astype(np.int32)
    _, t = m.forward(ids, record=Record(result=True, attn_out=True, logits="none"))
    b_O = np.asarray(m.params["blocks"]["attn"]["b_O"])[:, None, None, :]
    np.testing.assert_allclose(
        np.asarray(t.result).sum(axis=3) + b_O, np.asarray(t.attn_out), atol=1e-5
    )


def test_mean_ablation_uses_mean():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=3)
    ids = np.random.default_rng(3).integers(0, 512, (2, 6)).astype(np.int32)
    _, t = m.forward(ids, record=Record(z=True, logits="none"))
    mean = jnp.asarray(np.asarray(t.z).mean(axis=(1, 2)))  # [layer, head, d_head]
    scale = jnp.ones((2, 4)).at[0, 1].set(0.0)
    _, t2 = m.forward(ids, edits=Edits(head_scale=scale, head_mean=mean), record=Record(z=True))
    np.testing.assert_allclose(
        np.asarray(t2.z[0, :, :, 1]), np.broadcast_to(np.asarray(mean[0, 1]), (2, 6, 16)), atol=1e-6
    )


def test_patching_resid_from_source_run_reproduces_source():
    """Patching every position of resid_pre[l] with a source run's values gives the source's
    logits: the patch replaces, it does not add."""
    m = models.random_model(models.tiny_hf_config("gpt_neox"), seed=4)
    rng = np.random.default_rng(4)
    src = rng.integers(0, 512, (1, 7)).astype(np.int32)
    dst = rng.integers(0, 512, (1, 7)).astype(np.int32)
    src_logits, st = m.forward(src, record=Record(resid_pre=True, attn_out=True, mlp_out=True))
    n = m.config.n_layers
    mask = jnp.zeros((n, 1, 7)).at[1].set(1.0)
    out, _ = m.forward(dst, edits=Edits(resid_patch=st.resid_pre, resid_patch_mask=mask))
    np.testing.assert_allclose(np.asarray(out), np.asarray(src_logits), atol=1e-5)
    # Only the last position of layer 1's attn output: logits at earlier positions unchanged.
    mask_last = jnp.zeros((n, 1, 7)).at[1, 0, 6].set(1.0)
    plain, _ = m.forward(dst)
    out2, _ = m.forward(dst, edits=Edits(attn_out_patch=st.attn_out, attn_out_patch_mask=mask_last))
    np.testing.assert_allclose(np.asarray(out2)[0, :6], np.asarray(plain)[0, :6], atol=1e-6)
    assert np.abs(np.asarray(out2)[0, 6] - np.asarray(plain)[0, 6]).max() > 1e-4


def test_vmap_over_144_head_ablations_equals_separate_calls():
    hf_cfg = models.tiny_hf_config("gpt2", n_layer=12, n_head=12, n_embd=96)
    m = models.random_model(hf_cfg, seed=5)
    cfg = m.config
    ids = jnp.asarray(np.random.default_rng(5).integers(0, 512, (2, 8)), jnp.int32)
    scales = 1.0 - jnp.eye(144).reshape(144, 12, 12)  # one head zeroed per edit

    @jax.jit
    def sweep(scales):
        def one(s):
            logits, _ = models.forward(
                cfg, m.params, ids, None, Edits(head_scale=s), Record(logits="last")
            )
            return logits

        return jax.vmap(one)(scales)

    swept = np.asarray(sweep(scales))
    assert swept.shape == (144, 2, 512)
    for i in range(144):
        single, _ = models.forward(
            cfg, m.params, ids, None, Edits(head_scale=scales[i]), Record(logits="last")
        )
        np.testing.assert_allclose(swept[i], np.asarray(single), atol=1e-5)
    assert np.abs(swept[0] - swept[50]).max() > 1e-5  # different heads, different results


def test_neuron_ablation_changes_only_through_mlp():
    m = models.random_model(models.tiny_hf_config("gpt_neo"), seed=6)
    ids = np.random.default_rng(6).integers(0, 512, (1, 5)).astype(np.int32)
    scale = jnp.ones((2, 256)).at[1, :].set(0.0)
    _, t = m.forward(
        ids, edits=Edits(neuron_scale=scale), record=Record(mlp_out=True, mlp_post=True)
    )
    b_out = np.asarray(m.params["blocks"]["mlp"]["b_out"][1])
    np.testing.assert_allclose(
        np.asarray(t.mlp_out[1, 0]), np.broadcast_to(b_out, (5, 64)), atol=1e-6
    )
    assert float(jnp.abs(t.mlp_post[1]).max()) == 0.0


def test_edit_with_wrong_layer_axis_is_refused():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=7)
    with pytest.raises(ValueError, match="n_layers=2"):
        m.forward(np.zeros((1, 3), np.int32), edits=Edits(head_scale=jnp.ones((3, 4))))


def test_edits_are_a_pytree_for_vmap():
    e = Edits(head_scale=jnp.ones((5, 2, 4)))
    leaves = jax.tree_util.tree_leaves(e)
    assert len(leaves) == 1
    chex.assert_shape(jax.vmap(lambda x: x.head_scale.sum(0))(e), (5, 4))


def _ragged(cfg, seed):
    """ids `[3, 9]`, a mask with right (row 1) and left (row 2) padding, random head and neuron
    edits (scales in [0, 1] with means) and the context of the last real tokens."""
    rng = np.random.default_rng(seed)
    ids = jnp.asarray(rng.integers(0, 512, (3, 9)), jnp.int32)
    mask = np.ones((3, 9), bool)
    mask[1, 6:] = False
    mask[2, :2] = False
    L, H = cfg.n_layers, cfg.n_heads
    edits = Edits(
        head_scale=jnp.asarray(rng.uniform(0, 1, (L, H)), jnp.float32),
        head_mean=jnp.asarray(rng.standard_normal((L, H, cfg.d_head)), jnp.float32),
        neuron_scale=jnp.asarray(rng.uniform(0, 1, (L, cfg.d_mlp)), jnp.float32),
        neuron_mean=jnp.asarray(rng.standard_normal((L, cfg.d_mlp)), jnp.float32),
    )
    return ids, jnp.asarray(mask), edits, models.make_context(ids, mask, Record(at="last"))


@pytest.mark.parametrize("family", FAMILIES)
def test_last_query_attention_equals_the_full_attentions_last_row(family):
    """Attention(last_query=True) equals the full Attention's row at each row's last real token:
    right and left padding, rotary query positions (gpt_neox), GPT-Neo's local window (4, shorter
    than the prompt, on layer 1), head edits."""
    from models.transformer import Attention

    m = models.random_model(models.tiny_hf_config(family), seed=8)
    cfg = m.config
    ids, mask, edits, ctx = _ragged(cfg, 8)
    x = jnp.asarray(np.random.default_rng(9).standard_normal((3, 9, cfg.d_model)), jnp.float32)
    for layer in range(cfg.n_layers):
        p = {"params": jax.tree_util.tree_map(lambda a, i=layer: a[i], m.params["blocks"]["attn"])}
        ed = {"head_scale": edits.head_scale[layer], "head_mean": edits.head_mean[layer]}
        args = (x, ctx, cfg.windows[layer], ed, Record())
        full, _, _ = Attention(cfg).apply(p, *args)
        last, _, _ = Attention(cfg, last_query=True).apply(p, *args)
        assert last.shape == (3, 1, cfg.d_model)
        want = models.take_last(full, ctx.last)
        np.testing.assert_allclose(np.asarray(last[:, 0]), np.asarray(want), atol=1e-6, rtol=0)
    if family == "gpt_neo":
        assert cfg.windows[1] == 4  # the window cuts keys off: the local mask is exercised


@pytest.mark.parametrize("family", FAMILIES)
def test_final_at_last_equals_the_forward_at_the_last_token(family):
    """From any block's input, `final_at_last` (later blocks in full, the last one for the last
    query only) gives the forward's final residual at the last token, under head and neuron
    edits; `finish_block` turns resid_mid into the next block's input."""
    m = models.random_model(models.tiny_hf_config(family), seed=10)
    cfg, blocks = m.config, m.params["blocks"]
    ids, mask, edits, ctx = _ragged(cfg, 10)
    rec = Record(resid_pre=True, resid_mid=not cfg.parallel_residual, resid_post=True)
    _, tr = models.forward(cfg, m.params, ids, mask, edits, rec)
    _, at_last = models.forward(cfg, m.params, ids, mask, edits, Record(resid_post=True, at="last"))
    for start in range(cfg.n_layers + 1):
        x = tr.resid_pre[start] if start < cfg.n_layers else tr.resid_post
        got = models.final_at_last(cfg, blocks, x, ctx, start, edits)
        np.testing.assert_allclose(np.asarray(got), np.asarray(at_last.resid_post), atol=1e-5)
    if not cfg.parallel_residual:
        got = models.finish_block(cfg, blocks, 0, tr.resid_mid[0], edits)
        np.testing.assert_allclose(np.asarray(got), np.asarray(tr.resid_pre[1]), atol=1e-5)
    with pytest.raises(ValueError, match="last query"):
        add = Edits(resid_add=jnp.zeros((cfg.n_layers, cfg.d_model)))
        models.final_at_last(cfg, blocks, tr.resid_pre[0], ctx, 0, add)
