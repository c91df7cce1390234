"""Generation under head edits: the compiled loop equals a plain token-by-token loop, sets
batched together equal separate runs, ablating / patching a planted head moves what is
generated beyond its control sets, a structureless model stays inside them, and the two-level
bootstrap covers set-to-set variance that a prompt-only CI misses."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs import sections
from jaxcirc.core import head_edits as hg
from jaxcirc.core.heads import Screen
from jaxcirc.phases import head_generation as phase_hg
from tests.support import (
    PLANTED,
    planted_model,
    planted_prompts,
    three_layer_config,
    word_tokenizer,
)

GRAT = re.compile(r"\bw2[012]\b")


def grat_words(texts):
    """Gratitude-word tokens (ids 20-22) per continuation: the planted head's signature."""
    return {"grat_words": np.array([len(GRAT.findall(t)) for t in texts], float)}


def test_generate_ids_equals_a_plain_loop():
    model, _ = planted_model(gain=8.0)
    cfg = model.config
    emo, _ = planted_prompts(n=3)
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    edits = hg.set_edits(cfg, [(0, 3)], jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head)))
    ids, mask = jnp.asarray(toks.ids), jnp.asarray(toks.mask)
    for e in (None, edits):
        got = np.asarray(hg.generate_ids(cfg, model.params, ids, mask, e, hg.GenerationSettings(4)))
        for b in range(len(toks.texts)):
            row = list(toks.ids[b, : toks.lengths[b]])
            for _ in range(4):
                logits, _ = model.forward(np.asarray([row], np.int32), edits=e)
                row.append(int(np.argmax(np.asarray(logits)[0, -1])))
            assert list(got[b]) == row[-4:]
    # EOS held back: the loop's choice with EOS's logit removed for the first k tokens.
    eos = int(got[0, 0])
    held_cfg = dataclasses.replace(cfg, eos_token_id=eos)
    hold2 = hg.GenerationSettings(4, 0.0, 0, min_new_tokens=2)
    held = np.asarray(hg.generate_ids(held_cfg, model.params, ids, mask, None, hold2))
    assert not (held[:, :2] == eos).any()
    row = list(toks.ids[0, : toks.lengths[0]])
    for step in range(4):
        logits = np.array(model.forward(np.asarray([row], np.int32))[0])[0, -1]
        if step < 2:
            logits[eos] = -np.inf
        row.append(int(np.argmax(logits)))
    assert list(held[0]) == row[-4:]
    with pytest.raises(ValueError, match="names no EOS"):
        no_eos = dataclasses.replace(cfg, eos_token_id=None)
        hg.generate_ids(no_eos, model.params, ids, mask, None, hold2)


def test_clean_run_shares_the_edited_runs_compiled_loop():
    """The unedited run goes through identity edits: the same tokens as no edits at all, and one
    compile for clean and edited runs together (the demo generated with two per model)."""
    gen_mod = importlib.import_module("models.generate")  # `models.generate` is the function

    model, _ = planted_model(gain=8.0)
    cfg = model.config
    emo, _ = planted_prompts(n=3)
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    gcfg = sections.heads_generation()
    gcfg.n_new = 7  # a length no other test compiles
    gen = phase_hg.generation_settings(gcfg)
    before = gen_mod._generate._cache_size()
    texts, _ = hg.generate_scores(model, toks, None, gen, grat_words)
    z = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    hg.generate_scores(model, toks, hg.set_edits(cfg, [(0, 3)], z), gen, grat_words)
    assert gen_mod._generate._cache_size() - before == 1
    ids, mask = jnp.asarray(toks.ids), jnp.asarray(toks.mask)
    plain = np.asarray(
        hg.generate_ids(cfg, model.params, ids, mask, None, hg.GenerationSettings(7))
    )
    assert texts == hg.decode(model, plain)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sets_batched_together_equal_separate_runs(temperature):
    """`generate_sets` folds sets x prompts into rows (several calls, the last padded); each
    set's texts equal its own run, with the same sampling draws per prompt (row_ids)."""
    model, _ = planted_model(gain=8.0)
    cfg = model.config
    emo, _ = planted_prompts(n=3)
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z = 0.1 * jnp.ones((cfg.n_layers, cfg.n_heads, cfg.d_head))
    gen = hg.GenerationSettings(5, temperature, seed=3, batch_rows=7)  # 2 sets per call
    sets = [(), (PLANTED,), ((0, 0), (2, 3)), ((1, 1),), ((0, 2),)]
    got = hg.generate_sets(model, toks, sets, z, gen)
    ids, mask = jnp.asarray(toks.ids), jnp.asarray(toks.mask)
    for hs, texts in zip(sets, got, strict=True):
        alone = hg.generate_ids(cfg, model.params, ids, mask, hg.set_edits(cfg, hs, z), gen)
        assert texts == hg.decode(model, alone), hs
    assert got[0] != got[1]  # the planted head's edit changes the text: not vacuous


def test_control_sets_are_distinct_and_outside_the_excluded_heads():
    cfg = models.random_model(three_layer_config("gpt2"), seed=0).config  # 3 x 4 heads
    some = hg.control_sets(cfg, 2, 10, seed=1, exclude=[(0, 0), (1, 2)])
    assert len(some) == 10 and len({frozenset(s) for s in some}) == 10
    assert all((0, 0) not in s and (1, 2) not in s and len(s) == 2 for s in some)
    every = hg.control_sets(cfg, 1, 50, seed=1, exclude=[(0, 0)])  # only 11 exist: all of them
    assert sorted(every) == sorted(
        ((a, b),) for a in range(3) for b in range(4) if (a, b) != (0, 0)
    )


def test_control_fields_are_calibrated_when_the_set_is_one_more_random_set():
    """Structureless negative for the control: the set's deltas come from the same distribution
    as the control sets' (each set its own mean: set-to-set variance, plus prompt noise).
    p_vs_control is uniform (P(p <= 1/11) = 1/11 with 10 sets); the two-level CI of the control
    mean covers the sets' population mean (0) at about its level, where a CI over prompts
    alone (the old one) covers far less. The diff CI, by contrast, is about THIS set: it
    leaves 0 often for a typical set, so it is no verdict."""
    rng = np.random.default_rng(0)
    n, C, reps = 30, 10, 300
    low_p = cover_two = cover_one = diff_holds_0 = 0
    for _ in range(reps):
        means = rng.normal(0, 1.0, C + 1)  # set-to-set spread
        d = means[:, None] + rng.normal(0, 1.0, (C + 1, n))
        s = hg.control_summary(d[0], d[1:], n_boot=400, seed=int(rng.integers(1 << 30)), level=0.9)
        low_p += s["p_vs_control"] <= 1 / (C + 1) + 1e-9
        cover_two += s["control_lo"] <= 0 <= s["control_hi"]
        _, lo, hi = hg.delta_ci(d[1:].mean(0), 400, 0, 0.9)
        cover_one += lo <= 0 <= hi
        diff_holds_0 += s["diff_lo"] <= 0 <= s["diff_hi"]
    assert low_p / reps <= 0.15, low_p / reps
    assert 0.8 <= cover_two / reps <= 0.97, cover_two / reps
    assert cover_one / reps < 0.6, cover_one / reps
    assert diff_holds_0 / reps < 0.6, diff_holds_0 / reps
    assert s["n_control_sets"] == C and s["beyond_control"] == (s["p_vs_control"] <= 0.1)
    assert hg.control_summary(d[0], d[:0], 400, 0, 0.9)["p_vs_control"] is None


def test_top_sets_are_chosen_on_one_half_only():
    """The selection half decides the top heads: a head best on the held-out half only is not
    chosen."""
    values = np.zeros((3, 4, 8))
    choose, held = np.arange(4), np.arange(4, 8)
    values[1, 2, choose] = 5.0  # best where it is chosen
    values[2, 0, held] = 9.0  # best only where it is evaluated
    values[0, 3, choose] = 1.0
    sets = hg.top_sets(values, choose, 2)
    assert sets == {"top1": ((1, 2),), "top2": ((1, 2), (0, 3))}


def _gcfg(**kw):
    gcfg = sections.heads_generation()
    gcfg.kinds, gcfg.n_new, gcfg.n_control, gcfg.n_boot = ("zero",), 6, 20, 200
    for k, v in kw.items():
        gcfg[k] = v
    return gcfg


def test_planted_head_drives_generation_beyond_its_control_sets(tmp_path):
    """Planted positive: ablating the planted head removes gratitude words and patching its
    gratitude output adds them, beyond every control head (p = 1 / (1 + sets)), with the
    two-level CI of the difference away from 0; the report's summary file holds the named
    sets' rows with numbers."""
    model, _ = planted_model(gain=8.0)
    emo, neutral = planted_prompts(n=8)
    two = {"gratitude": emo["gratitude"], "anger": emo["anger"]}
    # 12 heads: 10 single-head control sets, so p >= 1/11; beyond_control needs level 0.9.
    gcfg = _gcfg(named_sets={"planted": (PLANTED,), "L0H0": ((0, 0),)}, level=0.9)
    rows = phase_hg.run_head_generation(model, two, neutral, gcfg, tmp_path, scorer=grat_words)
    by = {(r["mode"], r["emotion"], r["head_set"]): r for r in rows}
    abl = by[("ablation", "gratitude", "planted")]
    n_sets = abl["n_control_sets"]
    assert n_sets == 10  # every single head outside planted and L0H0
    assert abl["ci_hi"] < 0 and abl["diff_hi"] < 0 and abl["beyond_control"]
    assert abl["p_vs_control"] == pytest.approx(1 / (1 + n_sets))
    assert abl["n_prompts"] == 4 and "held-out half" in abl["prompts"]
    pat = by[("patching", "gratitude", "planted")]
    assert pat["ci_lo"] > 0 and pat["diff_lo"] > 0
    assert pat["p_vs_control"] == pytest.approx(1 / (1 + n_sets))
    assert by[("patching", "anger", "planted")]["delta"] < 0.25 * pat["delta"]
    with open(tmp_path / "head_generation.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 2 * 2 * 2  # emotions x sets x modes (one score, kind)
    summary = json.loads((tmp_path / "summary.json").read_text())
    l0 = summary["named_sets"]["L0H0"]
    assert len(l0) == 4 and all(isinstance(r["effect"], float) for r in l0)
    assert {"control_band_lo", "p_vs_control", "n_control_sets", "diff_lo"} <= set(l0[0])
    assert summary["study"]["L0H0"]["ablation"] == -0.0349
    samples = json.loads((tmp_path / "head_generation_samples.json").read_text())["samples"]
    assert samples["ablation/gratitude/planted/zero"][0]["clean"]


def _random_words(texts):
    """A score any edit can move: tokens among ids 100-299 per continuation."""
    ids = [[int(w[1:]) for w in t.split() if w[1:].isdigit()] for t in texts]
    return {"mid_words": np.array([sum(100 <= i < 300 for i in row) for row in ids], float)}


def test_structureless_model_stays_inside_its_control_sets(tmp_path):
    """Structureless negative: random models with nothing planted, a score any edit moves. L0H0
    and the top heads (chosen on the other half by a fake screen) are heads like any other:
    over 4 models x 2 modes x 2 sets, p <= 0.1 at most twice and the two-level CI of the
    difference holds 0 in most rows (a weak check: see the test above)."""
    emo, neutral = planted_prompts(n=8, seed=3)
    gcfg = _gcfg(named_sets={"L0H0": ((0, 0),)}, top_k=1, n_new=8)
    ps, covered = [], []
    for seed in range(4):
        m = models.random_model(three_layer_config("gpt2"), seed=200 + seed)
        model = dataclasses.replace(m, tokenizer=word_tokenizer())
        cfg = model.config
        rng = np.random.default_rng(seed)
        screen = Screen(
            emotions=("gratitude",),
            values={("exact", "projection", "mean"): rng.normal(size=(3, 4, 8))},
            random={},
            emotion_index=np.zeros(8, int),
            clean={},
            neutral_clean={},
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
        )
        one = {"gratitude": emo["gratitude"]}
        rows = phase_hg.run_head_generation(
            model, one, neutral, gcfg, tmp_path / str(seed), screen=screen, scorer=_random_words
        )
        for r in rows:
            ps.append(r["p_vs_control"])
            covered.append(r["diff_lo"] <= 0 <= r["diff_hi"])
    assert len(ps) == 4 * 2 * 2
    assert sum(p <= 0.1 for p in ps) <= 2, ps
    assert np.mean(covered) >= 0.75, covered


def test_edit_effect_pairs_a_set_with_its_controls():
    model, _ = planted_model(gain=8.0)
    cfg = model.config
    emo, _ = planted_prompts(n=4)
    toks = model.tokenize(emo["gratitude"], prepend_bos=False)
    z = jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head))
    gen = hg.GenerationSettings(5, n_control=3, n_samples=2)
    deltas, controls, samples = hg.edit_effect(model, toks, z, (PLANTED,), gen, grat_words)
    assert deltas["grat_words"].shape == (4,) and deltas["grat_words"].mean() < 0
    assert controls["grat_words"].shape == (3, 4) and len(samples) == 2
    assert abs(controls["grat_words"].mean()) < abs(deltas["grat_words"].mean())
