"""KV-cached generation equals transformers' generate; sampling is seeded; readouts are right."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import models
from models import Edits, Record
from models import hf_reference as ref
from models.generate import GREEDY, Sampling, generate, split_layers

FAMILIES = ["gpt2", "gpt_neox", "gpt_neo"]
NEW = 10


def _prompts(seed, vocab, lengths=(7, 3, 9, 5)):
    """Left-padded (for transformers) and right-padded (for us) versions of the same prompts."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    left = np.zeros((len(lengths), width), np.int64)
    lmask = np.zeros_like(left)
    right = np.zeros_like(left)
    rmask = np.zeros_like(left)
    for i, n in enumerate(lengths):
        row = rng.integers(1, vocab, n)
        left[i, width - n :], lmask[i, width - n :] = row, 1
        right[i, :n], rmask[i, :n] = row, 1
    return left, lmask, right, rmask


def _hf_generate(hf, ids, mask, new, hook_layer=None, vec=None, eos_id=None, min_new_tokens=0):
    """transformers' greedy continuation [batch, <= new]. eos_id None: never stops early (our
    shapes are static); else rows stop at EOS (then pad with 0), held back for min_new_tokens."""
    hf.generation_config.eos_token_id = eos_id
    hf.generation_config.pad_token_id = 0
    handle = None
    if hook_layer is not None:

        def add(module, args):
            return (args[0] + torch.as_tensor(vec),) + args[1:]

        handle = ref.blocks(hf)[hook_layer].register_forward_pre_hook(add)
    try:
        with torch.no_grad():
            out = hf.generate(
                input_ids=torch.as_tensor(ids),
                attention_mask=torch.as_tensor(mask),
                max_new_tokens=new,
                min_new_tokens=min_new_tokens,
                do_sample=False,
            )
    finally:
        if handle is not None:
            handle.remove()
    return out[:, ids.shape[1] :].numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_equals_transformers_generate(family):
    """Left-padded batch of different lengths; plain, and with a vector added to block 1's input
    at every position by a forward pre-hook (ours: Edits(resid_add)). We get right padding, so the
    left alignment is tested too."""
    hf_cfg = models.tiny_hf_config(family)
    hf = ref.hf_model(hf_cfg, seed=3)
    ours = ref.convert(hf, hf_cfg)
    cfg = ours.config
    left, lmask, right, rmask = _prompts(3, hf_cfg["vocab_size"])
    plain = _hf_generate(hf, left, lmask, NEW)
    got = generate(cfg, ours.params, right, rmask, NEW)
    np.testing.assert_array_equal(np.asarray(got.tokens), plain)

    vec = (3.0 * np.random.default_rng(4).standard_normal(cfg.d_model)).astype(np.float32)
    steered = _hf_generate(hf, left, lmask, NEW, hook_layer=1, vec=vec)
    assert (steered != plain).any()  # the hook changed the text: the comparison has teeth
    edits = Edits(resid_add=jnp.zeros((cfg.n_layers, cfg.d_model)).at[1].set(vec))
    got = generate(cfg, ours.params, right, rmask, NEW, edits=edits)
    np.testing.assert_array_equal(np.asarray(got.tokens), steered)


@pytest.mark.parametrize("family", FAMILIES)
def test_min_new_tokens_equals_transformers_generate(family):
    """EOS banned for the first k new tokens: the same tokens as transformers' min_new_tokens.
    EOS is chosen as a token the unconstrained run picks first, so the ban changes the text."""
    hf_cfg = models.tiny_hf_config(family)
    hf = ref.hf_model(hf_cfg, seed=3)
    ours = ref.convert(hf, hf_cfg)
    left, lmask, right, rmask = _prompts(3, hf_cfg["vocab_size"])
    free = np.asarray(generate(ours.config, ours.params, right, rmask, NEW).tokens)
    eos, k = int(free[0, 0]), 4
    got = generate(
        ours.config, ours.params, right, rmask, NEW, sampling=Sampling(min_new_tokens=k), eos_id=eos
    )
    toks = np.asarray(got.tokens)
    assert not (toks[:, :k] == eos).any()
    assert (toks[0] != free[0]).any()
    want = _hf_generate(hf, left, lmask, NEW, eos_id=eos, min_new_tokens=k)
    for row, hf_row in zip(toks, want, strict=True):
        # transformers stops a row at its EOS (then pads); we go on: compare up to the EOS
        n = len(hf_row)
        hits = np.flatnonzero(hf_row == eos)
        if len(hits):
            n = int(hits[0]) + 1
        np.testing.assert_array_equal(row[:n], hf_row[:n])
    with pytest.raises(ValueError, match="needs eos_id"):
        generate(ours.config, ours.params, right, rmask, 2, sampling=Sampling(min_new_tokens=1))


@pytest.fixture(scope="module")
def tiny():
    return models.random_model(models.tiny_hf_config("gpt_neox"), seed=5)


def test_readouts_equal_forward_pass(tiny):
    """cols[:, 0] / proj[:, 0] are the logits / final residual at the last prompt token; cols[:, 1]
    are those at the first generated token (checked by re-running the longer prompt)."""
    cfg = tiny.config
    _, _, ids, mask = _prompts(1, cfg.d_vocab, (6, 4))
    vocab_ids = np.arange(0, cfg.d_vocab, 7)
    dirs = np.random.default_rng(0).standard_normal((3, cfg.d_model)).astype(np.float32)
    g = generate(cfg, tiny.params, ids, mask, 3, vocab_ids=vocab_ids, proj_dirs=dirs)
    rec = Record(resid_post=True, at="last", logits="last")
    logits, trace = tiny.forward(ids, mask, record=rec)
    np.testing.assert_allclose(
        np.asarray(g.cols[:, 0]), np.asarray(logits)[:, vocab_ids], atol=1e-4
    )
    unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = np.asarray(trace.resid_post) @ unit.T
    np.testing.assert_allclose(np.asarray(g.proj[:, 0]), proj, atol=1e-4)
    # Row 1 extended by its first new token, run without a cache.
    ext = np.concatenate([ids[1, :4], np.asarray(g.tokens)[1, :1]])[None]
    logits2, _ = tiny.forward(ext, record=Record(logits="last"))
    np.testing.assert_allclose(
        np.asarray(g.cols[1, 1]), np.asarray(logits2)[0, vocab_ids], atol=1e-4
    )


def test_decode_edits_equal_full_forward_each_step():
    """Head ablation, neuron scaling and a residual addition, applied at every step by the decode
    block, equal re-running the whole sequence through the model's forward pass at each step
    (GPT-Neo: the 4-token local window of layer 1 is crossed, so the window mask is tested)."""
    m = models.random_model(models.tiny_hf_config("gpt_neo"), seed=8)
    cfg = m.config
    _, _, ids, mask = _prompts(8, cfg.d_vocab, (6, 3))
    rng = np.random.default_rng(8)
    edits = Edits(
        resid_add=jnp.asarray(rng.standard_normal((cfg.n_layers, cfg.d_model)), jnp.float32),
        head_scale=jnp.ones((cfg.n_layers, cfg.n_heads)).at[0, 1].set(0.0).at[1, 3].set(0.5),
        head_mean=jnp.asarray(rng.standard_normal((cfg.n_layers, cfg.n_heads, cfg.d_head)) * 0.1),
        neuron_scale=jnp.asarray(rng.uniform(0, 2, (cfg.n_layers, cfg.d_mlp)), jnp.float32),
    )
    new = 6
    got = np.asarray(generate(cfg, m.params, ids, mask, new, edits=edits).tokens)
    # Reference: right-padded growing sequences, one compiled full forward per step.
    seq = np.zeros((2, ids.shape[1] + new), np.int32)
    smask = np.zeros_like(seq, dtype=bool)
    seq[:, : ids.shape[1]], smask[:, : ids.shape[1]] = ids, mask
    for t in range(new):
        logits, _ = m.forward(seq, smask, edits, Record(logits="last"))
        nxt = np.asarray(logits).argmax(-1)
        np.testing.assert_array_equal(got[:, t], nxt)
        last = smask.sum(1)
        seq[np.arange(2), last] = nxt
        smask[np.arange(2), last] = True
    plain = np.asarray(generate(cfg, m.params, ids, mask, new).tokens)
    assert (plain != got).any()


def test_sampling_is_seeded_and_per_row(tiny):
    cfg = tiny.config
    _, _, ids, mask = _prompts(2, cfg.d_vocab, (5, 5, 3))
    hot = Sampling(temperature=2.0)
    a = np.asarray(generate(cfg, tiny.params, ids, mask, 8, sampling=hot, seed=11).tokens)
    b = np.asarray(generate(cfg, tiny.params, ids, mask, 8, sampling=hot, seed=11).tokens)
    c = np.asarray(generate(cfg, tiny.params, ids, mask, 8, sampling=hot, seed=12).tokens)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    greedy = np.asarray(generate(cfg, tiny.params, ids, mask, 8).tokens)
    assert (a != greedy).any()  # temperature 2 over 512 tokens: sampling really sampled
    # A row's draws depend on its row id only, not on its place in the batch.
    rev = generate(
        cfg, tiny.params, ids[::-1], mask[::-1], 8, sampling=hot, seed=11, row_ids=[2, 1, 0]
    )
    np.testing.assert_array_equal(np.asarray(rev.tokens)[::-1], a)
    # top_k = 1 is greedy whatever the temperature.
    k1 = generate(cfg, tiny.params, ids, mask, 8, sampling=Sampling(2.0, top_k=1), seed=11)
    np.testing.assert_array_equal(np.asarray(k1.tokens), greedy)


def test_prompt_edits_patch_prompt_only(tiny):
    """A full-position resid_pre patch at layer 0 with another prompt's embedding makes the run
    that prompt's run (same length): prompt_edits positions are in the caller's layout."""
    cfg = tiny.config
    _, _, ids, mask = _prompts(6, cfg.d_vocab, (5, 5))
    src = ids[::-1].copy()
    _, trace = tiny.forward(src, mask, record=Record(resid_pre=True, logits="none"))
    patch = jnp.zeros((cfg.n_layers,) + trace.resid_pre.shape[1:]).at[0].set(trace.resid_pre[0])
    pmask = jnp.zeros((cfg.n_layers,) + ids.shape).at[0].set(1.0)
    got = generate(
        cfg,
        tiny.params,
        ids,
        mask,
        6,
        prompt_edits=Edits(resid_patch=patch, resid_patch_mask=pmask),
    )
    want = generate(cfg, tiny.params, src, mask, 6)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(want.tokens))
    plain = generate(cfg, tiny.params, ids, mask, 6)
    assert (np.asarray(plain.tokens) != np.asarray(want.tokens)).any()


def test_eos_recorded_and_bad_input(tiny):
    cfg = tiny.config
    _, _, ids, mask = _prompts(7, cfg.d_vocab, (4, 4))
    g = generate(cfg, tiny.params, ids, mask, 6)
    toks = np.asarray(g.tokens)
    eos = int(toks[0, 2])
    g2 = generate(cfg, tiny.params, ids, mask, 6, eos_id=eos)
    first = [int(np.flatnonzero(r == eos)[0]) if (r == eos).any() else -1 for r in toks]
    np.testing.assert_array_equal(np.asarray(g2.eos_at), first)
    np.testing.assert_array_equal(np.asarray(g2.tokens), toks)  # EOS never changes the tokens
    positional = Edits(resid_add=jnp.zeros((cfg.n_layers, 2, 4, cfg.d_model)))
    with pytest.raises(ValueError, match="position axis"):
        generate(cfg, tiny.params, ids, mask, 3, edits=positional)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(cfg, tiny.params, ids, mask, 0)
    with pytest.raises(ValueError, match="no real tokens"):
        generate(cfg, tiny.params, ids, np.zeros_like(mask), 3)
    with pytest.raises(ValueError, match="d_vocab"):
        generate(cfg, tiny.params, ids + cfg.d_vocab, mask, 3)
    # checked as given, before the int32 cast: float ids and int64 ids past int32 (which the
    # cast would turn into valid-looking ids) are refused
    with pytest.raises(ValueError, match="must be integers"):
        generate(cfg, tiny.params, np.asarray(ids, np.float32), mask, 3)
    with pytest.raises(ValueError, match="d_vocab"):
        generate(cfg, tiny.params, np.asarray(ids, np.int64) + 2**32, mask, 3)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1.0)
    assert GREEDY.temperature == 0


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="views of host memory: CPU only")
def test_split_layers_share_the_stacked_weights(tiny):
    """On one CPU device each layer's params are views of the stacked arrays (no second copy of
    the block weights, 5 GB for Pythia-1.4B in fp32), equal to slicing them."""
    blocks = tiny.params["blocks"]
    for i, layer in enumerate(split_layers(tiny.params)):
        leaves = zip(
            jax.tree_util.tree_leaves(blocks), jax.tree_util.tree_leaves(layer), strict=True
        )
        for a, b in leaves:
            assert np.shares_memory(np.asarray(a), np.asarray(b))
            np.testing.assert_array_equal(np.asarray(b), np.asarray(a[i]))
