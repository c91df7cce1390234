"""English vs Japanese (jaxcirc.phases.cross_language): prompts paired by en_id; two token-fed
networks that read DIFFERENT tokens (two languages) but share planted structure across the paired
prompts are found aligned, above the shuffled-pairing null and the random-init control; with no
shared structure the figure stays inside its null."""

from __future__ import annotations

import numpy as np
import pytest

from configs import sections
from jaxcirc.data import dataset
from jaxcirc.phases import cross_language
from tests import support_representation as rep

M = 6  # dimension of the planted shared "meaning" space


def _cfg():
    cfg = sections.alignment()
    cfg.n_perm = 30
    cfg.n_boot = 30
    cfg.ridges_rel = (0.0,)
    cfg.plots = False
    return cfg


def _language(seed: int, latent: np.ndarray, d: int = 16):
    """(activations, random-init copy) of a network reading its own prompts (of `seed`), with the
    per-prompt latent `latent` [n, M] written through its own random basis at every token of
    layers >= 1 (what a model that understood the prompt holds, in its own coordinates)."""
    ids, mask, labels, span = rep.prompts(seed)
    rng = np.random.default_rng(500 + seed)
    resid = rep.random_net(ids, mask, 100 * seed, d=d)
    resid[1:] += (latent @ rng.standard_normal((M, d)))[None, :, None, :]
    ctrl = rep.random_net(ids, mask, 100 * seed + 7, d=d)
    return tuple(
        rep.activations(x, ids, mask, labels, span, f"{name}")
        for x, name in ((resid, "m"), (ctrl, "c"))
    )


def _latent(seed: int, labels: np.ndarray) -> np.ndarray:
    """Per prompt: its class's point plus its own meaning (what a pair of prompts shares)."""
    rng = np.random.default_rng(seed)
    return 2.0 * rng.standard_normal((4, M))[labels] + rng.standard_normal((labels.size, M))


def _pair(seed: int, shared: bool):
    """English-like and Japanese-like activations over 160 paired prompts (as_paired), with
    their random-init controls: shared=True gives both the same latents, else independent ones."""
    labels = rep.prompts(0)[2]
    z_en = _latent(seed, labels)
    z_ja = z_en if shared else _latent(seed + 1000, labels)
    en, en_ctrl = _language(2 * seed + 1, z_en)
    ja, ja_ctrl = _language(2 * seed + 2, z_ja)
    keys = tuple(f"ja-{i}|en-{i}" for i in range(labels.size))
    acts = [cross_language.as_paired(a, keys) for a in (en, en_ctrl, ja, ja_ctrl)]
    return {"en": acts[0]}, {"ja": acts[2]}, {"en": [acts[1]], "ja": [acts[3]]}


def _entries(out: dict) -> list[dict]:
    return [h for entry in out.values() for d in ("en->ja", "ja->en") for h in entry[d].values()]


def test_planted_correspondence_across_languages_is_found(tmp_path):
    """Shared planted meaning across the paired prompts, different tokens on each side: the
    overlap after the neutral map is high, above its shuffled-pairing null and above the
    random-init control (whose difference has a CI above 0), in both directions."""
    en, ja, ctrl = _pair(0, shared=True)
    out = cross_language.align(en, ja, ctrl, _cfg(), tmp_path)
    entries = _entries(out)
    assert len(entries) == 4  # two directions x two per-prompt pairings, no per-token one
    for h in entries:
        # measured 0.87-0.97 against null bands topping out at 0.51-0.74
        assert h["figure"] > 0.8 and h["above_null"], h["figure"]
        assert h["figure"] - h["null_band"][1] > 0.15
        assert h["random_init"]["above_random_init"]
        assert h["random_init"]["minus_random_init_ci"][0] > 0.1


def test_no_shared_structure_stays_inside_the_null(tmp_path):
    """Each side has class structure of its own, but nothing corresponds across the pairs: the
    neutral map carries nothing, and over 4 seeds x 4 figures at most one leaves its null (the
    band is a central 95% one)."""
    above = []
    for seed in range(4):
        en, ja, ctrl = _pair(seed, shared=False)
        out = cross_language.align(en, ja, ctrl, _cfg(), tmp_path / str(seed))
        above += [h["above_null"] for h in _entries(out)]
    assert len(above) == 16 and sum(above) <= 1


def test_shipped_japanese_prompts_pair_with_english_ones():
    ja = dataset.build("baseline", "ja")
    got_ja, got_en = cross_language.paired_records(ja, cross_language.en_records())
    assert len(got_ja) == len(got_en) > 0 and all(r.en_id for r in got_ja)
    assert [r.id for r in got_en] == [r.en_id for r in got_ja]
    assert all(j.emotion == e.emotion for j, e in zip(got_ja, got_en, strict=True))
    assert {r.emotion for r in got_ja} == {"gratitude", "anger", "apology", "neutral"}


def test_bad_pairing_is_refused():
    ja = dataset.build("baseline", "ja")
    en = cross_language.en_records()
    with pytest.raises(ValueError, match="name no English record"):
        cross_language.paired_records(ja, {})
    first = next(r for r in ja if r.en_id and r.emotion == "gratitude")
    other = next(r for r in en.values() if r.emotion == "anger")
    with pytest.raises(ValueError, match="different emotions"):
        cross_language.paired_records(ja, {**en, first.en_id: other})
    with pytest.raises(ValueError, match="no neutral prompt"):
        cross_language.paired_records([r for r in ja if r.emotion != "neutral"], en)
