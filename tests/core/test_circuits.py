"""Circuit search finds planted heads, and its joint effects equal plain forwards."""

from __future__ import annotations

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest

from configs import sections
from jaxcirc.core import circuits, heads
from jaxcirc.core.measures import WordIds
from jaxcirc.phases import circuits as phase_circuits
from tests.support import WORDS, planted_model, planted_prompts

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
    single effect must be its own head's (a plain forward with that head removed), also when
    the sweep covers a superset of the candidates (shared by several searches)."""
    model, _, emo, _, readout, _ = _setup()
    cfg = model.config
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z_ref = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    ranked = [(1, 2), (0, 3), (1, 0), (0, 1)]  # not layer-major
    swept = [(a, b) for a in range(cfg.n_layers) for b in range(cfg.n_heads)][::-1]
    effect = _effect(toks, z_ref, readout)
    for sweep in (None, swept):
        _, singles = circuits.beam_search(
            cfg, model.params, effect, ranked, circuits.BeamSettings(1), swept=sweep
        )
        for h in ranked:
            want = _set_effect(model, toks, readout, z_ref, [h])
            np.testing.assert_allclose(singles[h], want, atol=1e-5, err_msg=str(h))
    with pytest.raises(ValueError, match="swept"):
        circuits.beam_search(
            cfg, model.params, effect, ranked, circuits.BeamSettings(1), swept=[(0, 1)]
        )


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


def test_run_circuits_ablation_and_patching(tmp_path):
    model, vectors, emo, neutral, _, wids = _setup()
    ccfg = sections.heads_circuits()
    ccfg.k_max, ccfg.n_candidates, ccfg.n_random_sets, ccfg.n_boot = 2, 0, 8, 200
    ccfg.kind = "mean"
    two = {e: emo[e] for e in ("gratitude", "anger")}
    vecs = {e: vectors[e] for e in two}
    wid2 = WordIds({e: wids.ids[e] for e in two}, {})
    results = phase_circuits.run_circuits(model, two, neutral, vecs, ccfg, tmp_path, word_ids=wid2)
    assert len(results) == 4  # 2 emotions x 2 modes
    for r in results:
        if r.emotion != "gratitude":
            continue
        step2 = r.steps[1]
        assert set(step2.heads) == set(PLANTED), r.mode
        assert step2.joint["lo"] > step2.random["hi"], r.mode  # far above random sets of 2
    with open(tmp_path / "circuits.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 2
    assert {"joint", "sum_singles", "interaction_lo", "random_sets_hi"} <= set(rows[0])
    doc = json.loads((tmp_path / "circuits.json").read_text())
    assert doc["results"][0]["steps"][0]["k"] == 1
    assert (tmp_path / "circuit_patching_gratitude.png").stat().st_size > 1000
