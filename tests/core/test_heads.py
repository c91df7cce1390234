"""Head screening: the branch sweep equals plain per-head runs and transformers hooks; a planted
emotion head is ranked first by every method; attribution is the derivative it claims to be."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs import sections
from jaxcirc.core import heads
from jaxcirc.core.measures import WordIds, logit_diff
from jaxcirc.phases import head_screen as phase_heads
from models import Edits, Record
from models import hf_reference as ref
from tests.support import (
    PLANTED,
    WORDS,
    planted_model,
    planted_prompts,
    ragged_batch,
    three_layer_config,
    word_tokenizer,
)

FAMILIES = ["gpt2", "gpt_neox", "gpt_neo"]
ATOL = 1e-5


# ------------------------------------------------------------------------------ exactness


def _hook_zeroing(hf, layer, head, d_head):
    def zero_head(module, args):
        x = args[0].clone()
        x[..., head * d_head : (head + 1) * d_head] = 0
        return (x,) + args[1:]

    return ref.out_proj(hf, layer).register_forward_pre_hook(zero_head)


@pytest.mark.parametrize("family", FAMILIES)
def test_sweep_equals_single_runs_and_transformers_hooks(family):
    """Every head, zero and mean kind: the branch sweep equals a plain forward with
    Edits(head_scale=...) per head, and zero-ablation equals transformers with a hook zeroing
    the head's slice of the output projection's input (first, middle and last layer)."""
    hf_cfg = three_layer_config(family)
    hf = ref.hf_model(hf_cfg, seed=1)
    m = ref.convert(hf, hf_cfg)
    cfg = m.config
    ids, mask = ragged_batch(1)
    z_mean = 0.1 * jax.random.normal(jax.random.key(0), (cfg.n_layers, cfg.n_heads, cfg.d_head))
    z_ref = jnp.stack([jnp.zeros_like(z_mean), z_mean])
    swept, clean = heads.head_sweep(cfg, m.params, ids, mask, z_ref)
    singles = np.stack(
        [
            np.stack([heads.single_removal(cfg, m.params, ids, mask, layer, h, r) for r in z_ref])
            for layer in range(cfg.n_layers)
            for h in range(cfg.n_heads)
        ]
    )  # [layer * head, kind, batch, d_model]
    np.testing.assert_allclose(np.asarray(swept), singles, atol=ATOL, rtol=0)
    # Every removal changed the final residual: the comparison above is not vacuous.
    change = np.abs(singles - np.asarray(clean)[None, None]).max(axis=(2, 3))
    assert change.min() > 1e-4
    last = np.asarray(mask).sum(1) - 1
    plain, _ = ref.run_hf(hf, ids, mask)
    for layer, head in ((0, 0), (1, 3), (2, 1)):
        handle = _hook_zeroing(hf, layer, head, cfg.d_head)
        try:
            hl, _ = ref.run_hf(hf, ids, mask)
        finally:
            handle.remove()
        theirs = hl[np.arange(3), last]
        ours = models.unembed(cfg, m.params, swept[layer * cfg.n_heads + head, 0])
        np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=0)
        assert np.abs(plain[np.arange(3), last] - theirs).max() > 1e-3


def test_strategies_agree():
    """vmap and chunked lax.map (chunk not dividing the rows) give the fold strategy's numbers."""
    m = models.random_model(three_layer_config("gpt2"), seed=2)
    cfg = m.config
    ids, mask = ragged_batch(2)
    z_ref = 0.1 * jax.random.normal(jax.random.key(1), (2, cfg.n_layers, cfg.n_heads, cfg.d_head))
    picks = ((0, 1), (0, 3), (1, 2))
    out = {
        s: np.asarray(
            heads.head_sweep(cfg, m.params, ids, mask, z_ref, None, picks, heads.RowStrategy(s, 3))[
                0
            ]
        )
        for s in heads.STRATEGIES
    }
    np.testing.assert_allclose(out["vmap"], out["fold"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(out["map"], out["fold"], atol=ATOL, rtol=0)
    assert np.abs(out["fold"][0] - out["fold"][1]).max() > 1e-4


def test_sweep_rows_follow_the_order_asked_for():
    """heads given out of layer order (e.g. ranked by score) come back in that order."""
    m = models.random_model(three_layer_config("gpt2"), seed=2)
    cfg = m.config
    ids, mask = ragged_batch(2)
    z_ref = jnp.zeros((1, cfg.n_layers, cfg.n_heads, cfg.d_head))
    every, _ = heads.head_sweep(cfg, m.params, ids, mask, z_ref)  # layer-major
    picks = ((2, 1), (0, 3), (1, 2), (0, 0))
    some, _ = heads.head_sweep(cfg, m.params, ids, mask, z_ref, None, picks)
    rows = [layer * cfg.n_heads + h for layer, h in picks]
    np.testing.assert_allclose(np.asarray(some), np.asarray(every)[rows], atol=ATOL, rtol=0)


@pytest.mark.parametrize("parallel", [True, False])
def test_sweep_memory_does_not_grow_with_layers_squared(parallel):
    """The sweep reruns the later layers from every layer in one program. Its scratch memory
    (XLA's temp buffers) must stay within a few layers' weights: running blocks start..n-1 as a
    scan over a static slice `blocks[start:]` copied those layers' weights once per start layer,
    all alive at once (16 layers: ~110 layers' worth; Pythia-410M's sweep took +10 GB RSS).
    Sequential blocks still copy their layer's MLP weights once per layer (`finish_block`), so
    that case allows one layer's worth per layer."""
    L = 16
    cfg = models.ModelConfig(
        family="gpt_neox" if parallel else "gpt2", n_layers=L, d_model=256, n_heads=4,
        d_head=64, d_mlp=1024, d_vocab=512, n_ctx=64, ln_eps=1e-5, gelu_tanh=False,
        positional="rotary" if parallel else "learned", rotary_dim=16, parallel_residual=parallel,
    )  # fmt: skip
    params = models.init_params(cfg, 0)
    ids = jnp.zeros((4, 12), jnp.int32)
    mask = jnp.ones(ids.shape, bool)
    z_ref = jnp.zeros((1, L, cfg.n_heads, cfg.d_head))
    picks = tuple((layer, h) for layer in range(L) for h in (0, 2))
    compiled = heads.head_sweep.lower(cfg, params, ids, mask, z_ref, None, picks).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    layer_bytes = sum(a[0].nbytes for a in jax.tree_util.tree_leaves(params["blocks"]))
    bound = 8 if parallel else L + 8
    assert temp < bound * layer_bytes, f"temp {temp / layer_bytes:.1f} layers' weights"


def test_base_edits_hold_in_every_rerun():
    """Removing head B on top of base edits that remove head A equals removing both at once."""
    m = models.random_model(three_layer_config("gpt2"), seed=3)
    cfg = m.config
    ids, mask = ragged_batch(3)
    base = Edits(head_scale=jnp.ones((3, 4)).at[2, 1].set(0.0))  # a last-layer head
    z_ref = jnp.zeros((1, 3, 4, cfg.d_head))
    swept, _ = heads.head_sweep(cfg, m.params, ids, mask, z_ref, base, ((0, 2), (1, 0)))
    for i, (layer, head) in enumerate(((0, 2), (1, 0))):
        both = base.head_scale.at[layer, head].set(0.0)
        _, tr = models.forward(
            cfg, m.params, ids, mask, Edits(head_scale=both), Record(resid_post=True, at="last")
        )
        np.testing.assert_allclose(np.asarray(swept[i, 0]), np.asarray(tr.resid_post), atol=ATOL)


# ------------------------------------------------------------------------------ attribution


def _readout_for(cfg, seed=0):
    rng = np.random.default_rng(seed)
    vecs = {
        e: rng.standard_normal((cfg.n_layers + 1, cfg.d_model)).astype(np.float32)
        for e in ("gratitude", "anger", "apology")
    }
    wids = WordIds({"gratitude": (20, 21), "anger": (30, 31, 32), "apology": (40,)}, {})
    return heads.make_readout(cfg, vecs, wids, n_random=3, seed=seed), wids


def test_readout_logit_diff_equals_measures_logit_diff():
    m = models.random_model(three_layer_config("gpt_neox"), seed=4)
    cfg = m.config
    readout, wids = _readout_for(cfg)
    x = jax.random.normal(jax.random.key(1), (5, cfg.d_model))
    _, ld, _ = heads.readout_columns(cfg, m.params, readout, x)
    cols = models.unembed(cfg, m.params, x, jnp.asarray(wids.all_ids()))
    for j, e in enumerate(readout.emotions):
        np.testing.assert_allclose(ld[:, j], logit_diff(cols, wids, e), atol=1e-5)


def test_attribution_is_the_derivative_of_partial_removal():
    """attribution(mean) = -d/de m(z + e (z_mean - z)) at e = 0 and attribution(zero) =
    -d/de m((1 - e) z), checked against central finite differences of plain forwards."""
    m = models.random_model(three_layer_config("gpt_neox"), seed=5)
    cfg = m.config
    ids, mask = ragged_batch(5)
    readout, _ = _readout_for(cfg, 5)
    emo = jnp.asarray([0, 2, 1])
    z_mean = 0.3 * jax.random.normal(jax.random.key(2), (cfg.n_layers, cfg.n_heads, cfg.d_head))
    proj, ld, _ = heads.attribution_scores(cfg, m.params, ids, mask, z_mean, readout, emo)

    @jax.jit
    def measure(layer, head, eps, mean):
        s = jnp.ones((cfg.n_layers, cfg.n_heads)).at[layer, head].set(1.0 - eps)
        _, tr = models.forward(
            cfg,
            m.params,
            ids,
            mask,
            Edits(head_scale=s, head_mean=mean),
            Record(resid_post=True, at="last", logits="none"),
        )
        p, lg, _ = heads.readout_columns(cfg, m.params, readout, tr.resid_post)
        return heads.own_emotion(p, emo), heads.own_emotion(lg, emo)

    eps = 1e-2
    for layer, head in ((0, 1), (1, 3), (2, 0)):
        for k, mean in enumerate((jnp.zeros_like(z_mean), z_mean)):
            (p_hi, l_hi), (p_lo, l_lo) = (
                measure(layer, head, eps, mean),
                measure(layer, head, -eps, mean),
            )
            fd_p = -(p_hi - p_lo) / (2 * eps)
            fd_l = -(l_hi - l_lo) / (2 * eps)
            np.testing.assert_allclose(proj[k, layer, head], fd_p, rtol=2e-2, atol=2e-4)
            np.testing.assert_allclose(ld[k, layer, head], fd_l, rtol=2e-2, atol=2e-4)
            assert np.abs(np.asarray(fd_p)).max() > 1e-3  # the check is not 0 == 0


def test_attribution_forward_and_reverse_modes_agree():
    """With more output columns (2 + R) than kinds x heads, attribution runs one forward-mode
    pass per (kind, head) instead of one backward pass per column: the same numbers."""
    m = models.random_model(three_layer_config("gpt2"), seed=8)
    cfg = m.config
    ids, mask = ragged_batch(8)
    rng = np.random.default_rng(8)
    vecs = {e: rng.standard_normal((4, cfg.d_model)).astype(np.float32) for e in ("a", "b")}
    wids = WordIds({"a": (20, 21), "b": (30,)}, {})
    emo = jnp.asarray([1, 0, 1])
    z_mean = 0.3 * jax.random.normal(jax.random.key(9), (cfg.n_layers, cfg.n_heads, cfg.d_head))
    out = {}
    for n_random in (3, 30):  # 5 columns < 24 (kind, head) pairs < 32 columns
        ro = heads.make_readout(cfg, vecs, wids, n_random=n_random, seed=1)
        out[n_random] = [
            np.asarray(a)
            for a in heads.attribution_scores(cfg, m.params, ids, mask, z_mean, ro, emo, 4)
        ]
    for k in range(2):
        np.testing.assert_allclose(out[30][k], out[3][k], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(out[30][2][..., :3], out[3][2], rtol=1e-3, atol=1e-5)
    assert np.abs(out[3][1]).max() > 1e-3


def test_direct_equals_exact_where_nothing_follows():
    """For a last-layer head with the last MLP switched off, the projection is linear in the
    head's write and nothing reads it later: direct == exact."""
    m = models.random_model(three_layer_config("gpt2"), seed=6)
    cfg = m.config
    blocks = dict(m.params["blocks"])
    mlp = dict(blocks["mlp"])
    mlp["W_out"] = mlp["W_out"].at[2].set(0.0)
    mlp["b_out"] = mlp["b_out"].at[2].set(0.0)
    attn = dict(blocks["attn"])
    attn["W_O"] = attn["W_O"].at[2, 3].multiply(0.01)
    blocks.update(mlp=mlp, attn=attn)
    params = {**m.params, "blocks": blocks}
    ids, mask = ragged_batch(6)
    readout, _ = _readout_for(cfg, 6)
    emo = jnp.asarray([1, 0, 2])
    z_mean = 0.2 * jax.random.normal(jax.random.key(3), (3, 4, cfg.d_head))
    z_ref = jnp.stack([jnp.zeros_like(z_mean), z_mean])
    dp, dl, _ = heads.direct_scores(cfg, params, ids, mask, z_ref, readout, emo)
    ep, el, _, _, _ = heads.exact_scores(cfg, params, ids, mask, z_ref, readout, emo)
    np.testing.assert_allclose(dp[:, 2], ep[:, 2], atol=1e-5)
    assert np.abs(np.asarray(ep[:, 2])).min() > 1e-6
    # The logit difference: direct = the readout with the clean final-LN scale frozen, f(x) -
    # f(x - write) with f linear; checked against that formula computed here from the trace.
    # (Frozen-scale DLA is not the derivative of the exact effect: it drops how the write moves
    # the LN scale, which can be as large as what it keeps.)
    _, tr = models.forward(
        cfg, params, ids, mask, None, Record(z=True, resid_post=True, at="last", logits="none")
    )
    x = np.asarray(tr.resid_post, np.float64)
    write = np.asarray(tr.z[2, :, 3], np.float64) @ np.asarray(
        params["blocks"]["attn"]["W_O"][2, 3]
    )
    sigma = np.sqrt(x.var(-1, keepdims=True) + cfg.ln_eps)
    gamma = np.asarray(params["ln_final"]["scale"])
    W = np.asarray(params["embed"]["W_E"])[np.asarray(readout.vocab_ids)].T
    W = W @ np.asarray(readout.word_weights)

    def f(y):
        return ((y - y.mean(-1, keepdims=True)) / sigma * gamma) @ W

    want = (f(x) - f(x - write))[np.arange(3), np.asarray(emo)]
    np.testing.assert_allclose(np.asarray(dl[0, 2, 3]), want, rtol=1e-4, atol=1e-8)
    assert np.abs(want).min() > 1e-7
    # An earlier head's direct score is not its exact effect (later layers read its write).
    assert np.abs(np.asarray(dp[0, 0] - ep[0, 0])).max() > 1e-4


# ------------------------------------------------------------------------------ planted head


def _small_cfg():
    cfg = sections.heads()
    cfg.logit_words = {e: tuple(f" w{i}" for i in ids) for e, ids in WORDS.items()}
    cfg.n_boot, cfg.n_perm, cfg.n_random, cfg.batch_size = 200, 200, 19, 8
    cfg.vector_label = "planted gratitude direction"
    return cfg


def test_planted_head_is_ranked_first_by_every_method(tmp_path):
    model, vectors = planted_model()
    emo, neutral = planted_prompts()
    res = phase_heads.run_heads(model, emo, neutral, vectors, _small_cfg(), tmp_path)
    top = json.loads((tmp_path / "top_k.json").read_text())["lists"]
    keys = [k for k in top if k.endswith("/gratitude")]
    assert len(keys) == 3 * 2 * 2  # methods x measures x ablation kinds
    for k in keys:
        best = top[k]["top"][0]
        assert (best["layer"], best["head"]) == PLANTED, k
        assert best["ci_lo"] > top[k]["top"][1]["score"], k  # clearly first, not a tie
    # The planted head's projection score lies far outside its random-direction null band.
    row = next(
        r
        for r in res.rows
        if (r["method"], r["measure"], r["ablation"], r["emotion"], r["layer"], r["head"])
        == ("exact", "projection", "zero", "gratitude", *PLANTED)
    )
    assert row["score"] > 3 * max(abs(row["random_dir_lo"]), abs(row["random_dir_hi"]))
    # ... and beats the best head on every random direction: family-wise p = 1 / (1 + 19).
    assert row["p_max_null"] == pytest.approx(1 / 20) and row["clears_max_null"]
    assert row["n_null"] == 19 and row["score"] > row["max_null_hi"]
    for k in keys:
        lists = top[k]
        if "/projection/" in k:
            assert lists["top"][0]["clears_max_null"] and lists["n_clear_max_null"] == 1, k
            assert not lists["top"][1]["clears_max_null"], k
        else:  # the logit difference has no random-direction null
            assert lists["top"][0]["p_max_null"] is None and lists["null"]["n_null"] is None
    # Files: one CSV per method with every head labelled, heatmaps, correlations.
    with open(tmp_path / "scores_exact.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 * 2 * 3 * 3 * 4  # measures x kinds x emotions x layers x heads
    assert {"method", "measure", "ablation", "emotion", "layer", "head"} <= set(table[0])
    assert (tmp_path / "heatmap_attribution_logit_diff.png").stat().st_size > 1000
    corr = [
        c
        for c in res.correlations
        if c["emotion"] == "gratitude" and c["method_b"] == "attribution"
    ]
    assert corr and all(np.isfinite(c["spearman"]) for c in corr)


def test_ablating_the_planted_head_removes_the_effect():
    model, vectors = planted_model()
    cfg = model.config
    emo, neutral = planted_prompts()
    g = model.tokenize(emo["gratitude"], prepend_bos=False)
    n = model.tokenize(neutral, prepend_bos=False)
    v = jnp.asarray(vectors["gratitude"][-1] / np.linalg.norm(vectors["gratitude"][-1]))

    def gap(scale):
        out = []
        for t in (g, n):
            _, tr = model.forward(
                t, edits=Edits(head_scale=scale), record=Record(resid_post=True, at="last")
            )
            out.append(float((tr.resid_post @ v).mean()))
        return out[0] - out[1]

    ones = jnp.ones((cfg.n_layers, cfg.n_heads))
    clean, ablated = gap(ones), gap(ones.at[PLANTED].set(0.0))
    other = gap(ones.at[0, 1].set(0.0))
    assert clean > 0.1  # the planted head makes gratitude prompts project onto the vector
    assert abs(ablated) < 0.1 * clean  # and removing it removes that
    assert abs(other - clean) < 0.1 * clean  # removing another head does not


# ------------------------------------------------------------------------------ small pieces


def test_rank_correlation_and_its_null():
    a = np.arange(144.0)
    same = heads.rank_correlation(a, a**3, n_perm=300)
    rev = heads.rank_correlation(a, -a, n_perm=300)
    assert same["spearman"] == pytest.approx(1.0) and rev["spearman"] == pytest.approx(-1.0)
    assert same["null_lo"] < 0 < same["null_hi"] and same["null_hi"] < 0.3


def test_bad_inputs_raise():
    m = models.random_model(three_layer_config("gpt2"), seed=7)
    wids = WordIds({"gratitude": (1,)}, {})
    with pytest.raises(ValueError, match="n_layers \\+ 1"):
        two = WordIds({"gratitude": (1,), "anger": (2,)}, {})
        heads.make_readout(
            m.config, {"gratitude": np.ones((3, 64)), "anger": np.ones((3, 64))}, two
        )
    with pytest.raises(ValueError, match="at least 2"):
        heads.make_readout(m.config, {"gratitude": np.ones((4, 64))}, wids)
    with pytest.raises(ValueError, match="strategy"):
        heads.RowStrategy("loop")
    ids, mask = ragged_batch(0)
    with pytest.raises(ValueError, match="outside"):
        heads.head_sweep(m.config, m.params, ids, mask, jnp.zeros((1, 3, 4, 16)), heads=((3, 0),))
    with pytest.raises(ValueError, match="base edits"):
        heads.check_base_edits(m.config, Edits(resid_add=jnp.zeros((3, 64))))
    model, vectors = planted_model()
    emo, neutral = planted_prompts()
    emo["anger"] = emo["anger"][:1]
    with pytest.raises(ValueError, match="at least 2"):
        phase_heads.run_heads(model, emo, neutral, vectors, _small_cfg(), "/tmp/unused_heads_dir")


def test_family_max_null_controls_the_family_wise_rate():
    """Simulated maps where the emotion direction is one more random direction (heads of very
    different write norms, so a per-head band alone would flag the loud ones): some head clears
    the max-over-heads null in about 5% of maps, while the per-head bands flag most maps."""
    rng = np.random.default_rng(0)
    R, maps = 99, 400
    any_clear = any_band = 0
    for _ in range(maps):
        norms = rng.lognormal(0, 1, (12, 12, 1))
        draws = norms * rng.standard_normal((12, 12, R + 1))  # column 0: the "emotion"
        out = heads.family_max_null(draws[..., 0], draws[..., 1:], 0.95)
        any_clear += (out["p_max_null"] <= 0.05).any()
        hi = np.percentile(draws[..., 1:], 97.5, axis=-1)
        any_band += (draws[..., 0] > hi).any()
        assert out["n_null"] == R and out["p_max_null"].min() >= 1 / (R + 1)
    assert any_clear / maps <= 0.08, any_clear / maps
    assert any_band / maps > 0.9, any_band / maps


def test_structureless_screen_stays_inside_the_max_null():
    """Structureless negative on models: random models and random 'emotion' vectors (nothing
    planted). Over 5 models x 3 emotions x 2 kinds x 2 methods = 60 maps, some head clears the
    max-over-heads null (19 directions, p <= 0.05) in at most 7 (binomial(60, 0.05): P(>= 8)
    ~ 0.02; maps of one model are correlated, so the bound is loose)."""
    emo, neutral = planted_prompts(n=6, seed=4)
    settings = heads.ScreenSettings(methods=("exact", "direct"), batch_size=8)
    clears, ps = 0, []
    for seed in range(5):
        m = models.random_model(three_layer_config("gpt2"), seed=400 + seed)
        model = dataclasses.replace(m, tokenizer=word_tokenizer())
        cfg = model.config
        rng = np.random.default_rng(seed)
        vecs = {e: rng.standard_normal((cfg.n_layers + 1, cfg.d_model)) for e in WORDS}
        readout = heads.make_readout(cfg, vecs, WordIds(dict(WORDS), {}), n_random=19, seed=seed)
        prompts = phase_heads.prepare_prompts(model, emo, False, 64)
        nt = model.tokenize(neutral, prepend_bos=False)
        z_mean = heads.neutral_mean_z(cfg, model.params, jnp.asarray(nt.ids), jnp.asarray(nt.mask))
        screen = heads.screen_heads(cfg, model.params, prompts, readout, z_mean, settings)
        rows = heads.emotion_scores(screen, n_boot=50, seed=0)
        maps: dict = {}
        for r in rows:
            if r["measure"] == "projection":
                key = (r["method"], r["ablation"], r["emotion"])
                maps.setdefault(key, []).append(r["p_max_null"])
        clears += sum(min(v) <= 0.05 for v in maps.values())
        ps += [min(v) for v in maps.values()]
    assert len(ps) == 60
    assert clears <= 7, (clears, ps)
    assert np.mean(ps) > 0.25, ps
