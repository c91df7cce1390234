"""MLP neurons: the exact neuron sweep equals plain forwards; attribution is the derivative it
claims to be; the random-direction nulls are the scores they stand for; a planted neuron is found
by every method, clears the max-over-neurons null, and its removal removes the effect; with
nothing planted the top neurons stay inside that null at its stated rate."""

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
from jaxcirc.core import heads, neurons
from jaxcirc.core.measures import WordIds
from jaxcirc.phases import neurons as phase_neurons
from models import Edits, Record
from tests.support import (
    WORDS,
    planted_model,
    planted_prompts,
    ragged_batch,
    three_layer_config,
    word_tokenizer,
)

PICKS = ((1, 17), (0, 5), (2, 100), (1, 3))  # unordered on purpose: results keep this order


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_neuron_sweep_equals_single_runs(family):
    m = models.random_model(three_layer_config(family), seed=11)
    cfg = m.config
    ids, mask = ragged_batch(11)
    mu = 0.2 * jax.random.normal(jax.random.key(4), (cfg.n_layers, cfg.d_mlp))
    refs = jnp.stack([jnp.zeros_like(mu), mu])
    swept, clean = neurons.neuron_sweep(cfg, m.params, ids, mask, refs, PICKS, 3)
    for j, (layer, i) in enumerate(PICKS):
        for k in range(2):
            single = neurons.single_neuron_removal(cfg, m.params, ids, mask, layer, i, refs[k])
            np.testing.assert_allclose(np.asarray(swept[j, k]), np.asarray(single), atol=1e-5)
    assert np.abs(np.asarray(swept[:, 0] - clean[None])).max(axis=(1, 2)).min() > 1e-6


def test_neuron_attribution_is_a_derivative():
    m = models.random_model(three_layer_config("gpt2"), seed=12)
    cfg = m.config
    ids, mask = ragged_batch(12)
    rng = np.random.default_rng(12)
    vecs = {e: rng.standard_normal((4, cfg.d_model)).astype(np.float32) for e in ("a", "b")}
    readout = heads.make_readout(cfg, vecs, WordIds({"a": (3, 4), "b": (5,)}, {}), n_random=0)
    emo = jnp.asarray([0, 1, 0])
    mu = 0.1 * jax.random.normal(jax.random.key(5), (cfg.n_layers, cfg.d_mlp))
    proj, ld = neurons.neuron_attribution(cfg, m.params, ids, mask, mu, readout, emo)

    @jax.jit
    def measure(layer, i, s, ref):
        sc = jnp.ones((cfg.n_layers, cfg.d_mlp)).at[layer, i].set(s)
        _, tr = models.forward(
            cfg,
            m.params,
            ids,
            mask,
            Edits(neuron_scale=sc, neuron_mean=ref),
            Record(resid_post=True, at="last", logits="none"),
        )
        p, lg, _ = heads.readout_columns(cfg, m.params, readout, tr.resid_post)
        return heads.own_emotion(p, emo), heads.own_emotion(lg, emo)

    eps = 1e-2
    for layer, i in ((0, 7), (1, 200)):
        for k, ref in enumerate((jnp.zeros_like(mu), mu)):
            (p1, l1), (p0, l0) = measure(layer, i, 1 + eps, ref), measure(layer, i, 1 - eps, ref)
            np.testing.assert_allclose(
                proj[k, layer, i], (p1 - p0) / (2 * eps), rtol=2e-2, atol=2e-5
            )
            np.testing.assert_allclose(ld[k, layer, i], (l1 - l0) / (2 * eps), rtol=2e-2, atol=2e-5)
            assert np.abs(np.asarray(p1 - p0)).max() > 1e-6


def test_random_direction_nulls_are_the_scores_they_stand_for():
    """neuron_attribution_null / neuron_direct_null for direction r and a group of prompts equal
    the per-prompt attribution / direct scores of a readout whose emotion vector is r, averaged
    over the group (the null reads each neuron's gradient through its MLP's write: the same
    numbers)."""
    m = models.random_model(three_layer_config("gpt2"), seed=14)
    cfg = m.config
    ids, mask = ragged_batch(14)
    rng = np.random.default_rng(14)
    r = rng.standard_normal((2, cfg.d_model)).astype(np.float32)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    vecs = {"a": np.tile(r[0], (4, 1)), "b": np.tile(r[1], (4, 1))}
    readout = heads.make_readout(cfg, vecs, WordIds({"a": (3,), "b": (5,)}, {}), n_random=0)
    mu = 0.1 * jax.random.normal(jax.random.key(6), (cfg.n_layers, cfg.d_mlp))
    weights = jnp.asarray([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])  # two groups of prompts
    args = (ids, mask, mu, jnp.asarray(r), weights, (0, 3))  # two inner layers and the last
    attr = np.asarray(neurons.neuron_attribution_null(cfg, m.params, *args, grad_chunk=1))
    direct = np.asarray(neurons.neuron_direct_null(cfg, m.params, *args))
    assert attr.shape == direct.shape == (2, 2, 3, cfg.d_mlp, 2)  # kind, group, layer, d_mlp, R
    for j in range(2):
        emo = jnp.full((3,), j)
        ap, _ = neurons.neuron_attribution(cfg, m.params, ids, mask, mu, readout, emo)
        dp, _ = neurons.neuron_direct(cfg, m.params, ids, mask, mu, readout, emo)
        for name, got, per in (("attr", attr, ap), ("direct", direct, dp)):
            want = np.einsum("klmb,gb->kglm", np.asarray(per), np.asarray(weights))
            np.testing.assert_allclose(got[..., j], want, rtol=1e-4, atol=1e-6, err_msg=name)
    assert np.abs(attr).max() > 1e-4


def test_planted_neuron_is_found_and_its_removal_removes_the_effect(tmp_path):
    neuron = (1, 7)
    model, vectors = planted_model(planted=(), neuron=neuron)
    emo, neutral = planted_prompts(n=6, trigger_last=True)
    ncfg = sections.heads_neurons()
    ncfg.layers, ncfg.n_exact, ncfg.top_k, ncfg.n_boot, ncfg.chunk = (0, 3), 8, 5, 200, 4
    ncfg.n_random = 19
    wids = WordIds({e: WORDS[e] for e in vectors}, {})
    res = phase_neurons.run_neurons(model, emo, neutral, vectors, ncfg, tmp_path, word_ids=wids)
    with open(tmp_path / "neurons_top.csv") as f:
        table = list(csv.DictReader(f))
    top = [r for r in table if r["emotion"] == "gratitude" and r["rank"] == "1"]
    assert len(top) == 2 * 2 * 2  # methods x measures x kinds
    for r in top:
        assert (int(r["layer"]), int(r["neuron"])) == neuron, r
        if r["measure"] == "projection":  # the max over 3 x 256 neurons on 19 directions
            assert float(r["p_max_null"]) == pytest.approx(1 / 20) and r["clears_max_null"]
            assert r["n_null"] == "19" and r["n_neurons"] == str(3 * 256)
        else:
            assert r["p_max_null"] == ""  # no null for the logit difference
    second = [r for r in table if r["emotion"] == "gratitude" and r["rank"] == "2"]
    assert not any(r["clears_max_null"] == "True" for r in second)
    exact = [r for r in res["exact"] if r["emotion"] == "gratitude" and r["ablation"] == "zero"]
    best = max(exact, key=lambda r: r["exact"])
    assert (best["layer"], best["neuron"]) == neuron and best["set"] == "shortlist"
    assert {r["set"] for r in exact} == {"shortlist", "random_sample"}
    summary = json.loads((tmp_path / "neurons_summary.json").read_text())["values"]["gratitude"]
    assert summary["shortlist"]["n_neurons"] == summary["random_sample"]["n_neurons"] == 8
    assert "biased" in summary["shortlist"]["how"] and "seeded" in summary["random_sample"]["how"]
    assert np.isfinite(summary["random_sample"]["exact_vs_attribution"]["spearman"])
    # Removing the neuron removes the gratitude-vs-neutral gap of the projection.
    cfg = model.config
    v = jnp.asarray(vectors["gratitude"][-1] / np.linalg.norm(vectors["gratitude"][-1]))
    g = model.tokenize(emo["gratitude"], prepend_bos=False)
    n = model.tokenize(neutral, prepend_bos=False)

    def gap(scale):
        out = []
        for t in (g, n):
            _, tr = model.forward(
                t, edits=Edits(neuron_scale=scale), record=Record(resid_post=True, at="last")
            )
            out.append(float((tr.resid_post @ v).mean()))
        return out[0] - out[1]

    ones = jnp.ones((cfg.n_layers, cfg.d_mlp))
    clean, ablated = gap(ones), gap(ones.at[neuron].set(0.0))
    other = gap(ones.at[1, 8].set(0.0))
    # What is left is the trigger token's own (non-neuron) difference from neutral text.
    assert clean > 0.1 and abs(ablated) < 0.2 * clean
    assert abs(other - clean) < 0.05 * clean


def test_bad_layer_range_raises():
    m = models.random_model(three_layer_config("gpt2"), seed=13)
    with pytest.raises(ValueError, match="layers"):
        neurons.check_layers(m.config, (2, 5))


def test_structureless_top_neurons_stay_inside_the_max_null(tmp_path):
    """Structureless negative: random models, random 'emotion' vectors (exchangeable with the
    null's random directions), nothing planted. The best neuron of a family clears the
    max-over-neurons null (p <= 0.05 with 19 directions: it must beat all 19) at about 5%:
    over 4 models x 3 emotions x 2 methods x 2 kinds = 48 families, at most 6 clear."""
    emo, neutral = planted_prompts(n=6, seed=9)
    ncfg = sections.heads_neurons()
    ncfg.layers, ncfg.n_exact, ncfg.top_k, ncfg.n_boot, ncfg.chunk = (1, 3), 3, 1, 100, 4
    ncfg.n_random = 19
    wids = WordIds({e: WORDS[e] for e in WORDS}, {})
    ps = []
    for seed in range(4):
        m = models.random_model(three_layer_config("gpt2"), seed=300 + seed)
        model = dataclasses.replace(m, tokenizer=word_tokenizer())
        rng = np.random.default_rng(seed)
        vecs = {e: rng.standard_normal((4, m.config.d_model)) for e in WORDS}
        res = phase_neurons.run_neurons(
            model, emo, neutral, vecs, ncfg, tmp_path / str(seed), word_ids=wids
        )
        ps += [r["p_max_null"] for r in res["top"] if r["measure"] == "projection"]
    assert len(ps) == 48
    assert sum(p <= 0.05 for p in ps) <= 6, ps
    assert np.mean(ps) > 0.3, ps
