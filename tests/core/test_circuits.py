"""Circuit search: finds planted heads, its joint effects equal plain forwards, searching many
targets at once equals searching each alone; selection-aware control: a planted pair clears the
null searches on held-out prompts, and a model with nothing planted stays inside them."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs import sections
from jaxcirc.core import circuits, head_edits, heads
from jaxcirc.core.measures import WordIds
from jaxcirc.phases import circuits as phase_circuits
from tests.support import WORDS, planted_model, planted_prompts, three_layer_config, word_tokenizer

PLANTED = ((0, 1), (1, 2))


def _setup():
    model, vectors = planted_model(planted=PLANTED)
    emo, neutral = planted_prompts(n=8)
    wids = WordIds({e: WORDS[e] for e in vectors}, {})
    readout = heads.make_readout(model.config, vectors, wids, n_random=0)
    return model, vectors, emo, neutral, readout, wids


def _effect(toks, z_ref, readout, emotion=0, measure="projection"):
    """The effect of a head set on `toks` (`models.Tokens`) for emotion 0's projection."""
    target = heads.Target(readout, emotion, measure)
    return circuits.SetEffect(jnp.asarray(toks.ids), jnp.asarray(toks.mask), z_ref, target)


def _set_effect(model, toks, readout, z_ref, head_set):
    """clean - edited m_e per prompt with every head of `head_set` removed: a plain forward."""
    cfg = model.config
    scales = np.ones((1, cfg.n_layers, cfg.n_heads), np.float32)
    for a, b in head_set:
        scales[0, a, b] = 0.0
    effect = _effect(toks, z_ref, readout)
    edited, clean = circuits.set_effects(cfg, model.params, effect, jnp.asarray(scales))
    return np.asarray(clean - edited[0])


def test_greedy_finds_the_planted_pair_and_its_joint_effect_is_exact():
    model, _, emo, neutral, readout, _ = _setup()
    cfg = model.config
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z_ref = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    all_heads = [(a, b) for a in range(cfg.n_layers) for b in range(cfg.n_heads)]
    best, singles = circuits.beam_search(
        cfg, model.params, _effect(toks, z_ref, readout), all_heads, circuits.BeamSettings(3)
    )
    assert set(best[0][0]) <= set(PLANTED)
    assert set(best[1][0]) == set(PLANTED)
    # The sweep's joint effect of the pair equals a plain forward with both heads ablated.
    want = _set_effect(model, toks, readout, z_ref, best[1][0])
    np.testing.assert_allclose(best[1][1], want, atol=1e-5)
    # The planted heads write independently: joint ~ sum of their single effects.
    joint = best[1][1].mean()
    total = sum(singles[h].mean() for h in PLANTED)
    assert joint > 0.1 and abs(joint - total) < 0.1 * joint
    # A third head adds little next to the pair.
    assert best[2][1].mean() - joint < 0.1 * joint


def test_singles_belong_to_their_heads_whatever_the_candidate_order():
    """Candidates come ranked by score, not by layer; the sweep returns rows layer-major. Each
    single effect must be its own head's (a plain forward with that head removed)."""
    model, _, emo, _, readout, _ = _setup()
    cfg = model.config
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z_ref = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    ranked = [(1, 2), (0, 3), (1, 0), (0, 1)]  # not layer-major
    effect = _effect(toks, z_ref, readout)
    _, singles = circuits.beam_search(cfg, model.params, effect, ranked, circuits.BeamSettings(1))
    for h in ranked:
        want = _set_effect(model, toks, readout, z_ref, [h])
        np.testing.assert_allclose(singles[h], want, atol=1e-5, err_msg=str(h))


def test_many_targets_searched_at_once_equal_each_alone():
    """`search_sets` shares sweeps between targets that keep the same set; every target's best
    sets and effects must equal a search of that target alone (greedy and beam 2)."""
    model, _, emo, _, readout, _ = _setup()
    cfg = model.config
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z_ref = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    null = circuits.null_targets(cfg, readout, 0, "projection", 5, seed=3)
    many = circuits.SetEffect(toks.ids, toks.mask, z_ref, null)
    for width in (1, 2):
        beam = circuits.BeamSettings(3, width)
        together = circuits.search_sets(cfg, model.params, many, None, beam, 1.0, 6)
        for t in range(5):
            one = circuits.Directions(null.directions[t : t + 1])
            alone = circuits.search_sets(
                cfg,
                model.params,
                circuits.SetEffect(toks.ids, toks.mask, z_ref, one),
                None,
                beam,
                1.0,
                6,
            )
            assert together.candidates[t] == alone.candidates[0]
            for (s1, e1), (s2, e2) in zip(together.best[t], alone.best[0], strict=True):
                assert s1 == s2, (width, t)
                np.testing.assert_allclose(e1, e2, atol=1e-5)
    # The held-out joint of a set equals the plain forward with it removed.
    sets = [[((0, 1),), PLANTED]]
    joint = circuits.held_out_joint(
        cfg, model.params, _effect(toks, z_ref, readout), sets, 1.0, chunk=3
    )
    for k, hs in enumerate(sets[0]):
        want = _set_effect(model, toks, readout, z_ref, hs)
        np.testing.assert_allclose(joint[0, k], want, atol=1e-5)


def test_logit_null_targets_are_logit_differences_of_random_words():
    model, _, emo, _, readout, _ = _setup()
    cfg = model.config
    null = circuits.null_targets(cfg, readout, 0, "logit_diff", 4, seed=1)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((3, cfg.d_model)), jnp.float32)
    got = np.asarray(null.read(cfg, model.params, x))
    ids = np.asarray(null.vocab_ids).reshape(4, -1)
    logits = np.asarray(models.unembed(cfg, model.params, x))
    n_a = int((np.asarray(readout.word_weights)[:, 0] > 0).sum())
    for t in range(4):
        want = logits[:, ids[t, :n_a]].mean(1) - logits[:, ids[t, n_a:]].mean(1)
        np.testing.assert_allclose(got[:, t], want, atol=1e-4)


def test_beam_search_rejects_bad_arguments():
    model, _, emo, _, readout, _ = _setup()
    cfg = model.config
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    effect = _effect(toks, z, readout)
    with pytest.raises(ValueError, match="k_max"):
        circuits.beam_search(cfg, model.params, effect, [(0, 0)], circuits.BeamSettings(2))
    with pytest.raises(ValueError, match="empty"):
        circuits.beam_search(cfg, model.params, effect, [], circuits.BeamSettings(1))
    with pytest.raises(ValueError, match="split"):
        head_edits.split_halves(3, 0)


def _ccfg(n_null=19):
    ccfg = sections.heads_circuits()
    ccfg.k_max, ccfg.n_candidates, ccfg.n_null, ccfg.n_boot = 2, 0, n_null, 200
    ccfg.kind = "mean"
    return ccfg


def test_planted_pair_clears_the_null_search_on_held_out_prompts(tmp_path):
    """Planted positive: the pair is found on the search half, and its held-out joint effect
    lies above every null search's (p = 1 / (1 + n_null)), in both modes."""
    model, vectors, emo, neutral, _, wids = _setup()
    two = {e: emo[e] for e in ("gratitude", "anger")}
    vecs = {e: vectors[e] for e in two}
    wid2 = WordIds({e: wids.ids[e] for e in two}, {})
    ccfg = _ccfg()
    results = phase_circuits.run_circuits(model, two, neutral, vecs, ccfg, tmp_path, word_ids=wid2)
    assert len(results) == 4  # 2 emotions x 2 modes
    for r in results:
        assert r.split == {"n_search": 4, "n_held_out": 4}
        if r.emotion != "gratitude":
            continue
        step2 = r.steps[1]
        assert set(step2.heads) == set(PLANTED), r.mode
        assert step2.joint["lo"] > step2.null["hi"], r.mode
        assert step2.null["p"] == pytest.approx(1 / 20) and step2.null["n"] == 19
        # Independent writers: the held-out interaction is small beside the joint effect.
        assert abs(step2.interaction["value"]) < 0.05 * step2.joint["value"], r.mode
    with open(tmp_path / "circuits.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2
    want = {"joint", "sum_singles", "interaction_lo", "search_joint", "null_hi", "p_vs_null"}
    assert want <= set(rows[0]) and rows[0]["n_held_out"] == "4"
    doc = json.loads((tmp_path / "circuits.json").read_text())
    assert doc["results"][0]["steps"][0]["null"]["n"] == 19
    assert (tmp_path / "circuit_patching_gratitude.png").stat().st_size > 1000


def test_structureless_model_stays_inside_the_null_search():
    """Structureless negative: a random model and a random 'emotion' vector (exchangeable with
    the null's random directions, so p is uniform on {1/20, ..., 1}). The found set's effect on
    the search half is biased up (it was chosen there), yet its held-out effect stays within
    the null searches at the stated rate: over 6 models x 2 sizes, p <= 0.05 at most twice
    (binomial(12, 0.05): P(>= 3) = 0.02)."""
    emo, neutral = planted_prompts(n=12, seed=5)
    ccfg = _ccfg()
    settings = phase_circuits.circuit_settings(ccfg)
    ps, bias = [], []
    for seed in range(6):
        m = models.random_model(three_layer_config("gpt2"), seed=100 + seed)
        model = dataclasses.replace(m, tokenizer=word_tokenizer())
        cfg = model.config
        rng = np.random.default_rng(seed)
        vecs = {e: rng.standard_normal((cfg.n_layers + 1, cfg.d_model)) for e in WORDS}
        readout = heads.make_readout(cfg, vecs, WordIds(dict(WORDS), {}), n_random=0)
        target = heads.Target(readout, 0, "projection")
        search_i, held_i = head_edits.split_halves(12, seed)
        texts = emo["gratitude"]
        toks = [
            model.tokenize([texts[i] for i in idx], prepend_bos=False) for idx in (search_i, held_i)
        ]
        z = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
        search, held = (circuits.SetEffect(t.ids, t.mask, z, target) for t in toks)
        null = circuits.null_targets(cfg, readout, 0, "projection", ccfg.n_null, seed=0)
        labels = {"mode": "ablation", "emotion": "gratitude", "measure": "projection"}
        r = circuits.search_circuit(
            cfg, model.params, search, held, settings, {**labels, "kind": "zero"}, null
        )
        ps += [s.null["p"] for s in r.steps]
        bias += [s.search_joint - s.joint["value"] for s in r.steps]
    assert sum(p <= 0.05 for p in ps) <= 2, ps
    assert np.mean(ps) > 0.25, ps
    assert np.mean(bias) > 0, bias  # what searching and scoring on the same prompts would add
