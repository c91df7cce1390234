"""Generation under head edits: the compiled loop equals a plain token-by-token loop, and
ablating / patching a planted head moves what is generated while random heads do not."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import re

import jax.numpy as jnp
import numpy as np
import pytest

from configs import sections
from jaxcirc.core import head_edits as hg
from jaxcirc.phases import head_generation as phase_hg
from models import Edits
from tests.support import PLANTED, planted_model, planted_prompts

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


def test_planted_head_drives_generation_and_random_heads_do_not(tmp_path):
    model, _ = planted_model(gain=8.0)
    emo, neutral = planted_prompts(n=8)
    two = {"gratitude": emo["gratitude"], "anger": emo["anger"]}
    gcfg = sections.heads_generation()
    gcfg.named_sets = {"planted": (PLANTED,), "L0H0": ((0, 0),)}
    gcfg.kinds, gcfg.n_new, gcfg.n_control, gcfg.n_boot = ("zero",), 6, 2, 200
    rows = phase_hg.run_head_generation(model, two, neutral, gcfg, tmp_path, scorer=grat_words)
    by = {(r["mode"], r["emotion"], r["head_set"]): r for r in rows}
    abl = by[("ablation", "gratitude", "planted")]
    assert abl["ci_hi"] < 0  # removing the head removes gratitude words
    assert abs(abl["control_delta"]) < 0.25 * abs(abl["delta"])
    pat = by[("patching", "gratitude", "planted")]
    assert pat["ci_lo"] > 0  # patching its gratitude output into neutral prompts adds them
    assert abs(pat["control_delta"]) < 0.25 * pat["delta"]
    assert by[("patching", "anger", "planted")]["delta"] < 0.25 * pat["delta"]
    with open(tmp_path / "head_generation.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) == 2 * 2 * 2  # emotions x sets x modes (one score, kind)
    samples = json.loads((tmp_path / "head_generation_samples.json").read_text())["samples"]
    assert samples["ablation/gratitude/planted/zero"][0]["clean"]


def test_bad_head_set_raises():
    model, _ = planted_model()
    cfg = model.config
    with pytest.raises(ValueError, match="outside"):
        hg.set_edits(cfg, [(5, 0)], jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head)))
    assert isinstance(hg.set_edits(cfg, [], jnp.zeros((3, 4, 16))), Edits)
