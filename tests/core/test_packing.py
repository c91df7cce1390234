"""Packed rows: several prompts in one row give each prompt what it gets alone (positions restart,
attention stays inside the prompt, GPT-Neo's local window too), and the packing plan places every
token exactly once, within the row width, with little padding."""

from __future__ import annotations

import numpy as np
import pytest

import models
from jaxcirc.core import packing
from models import Record

_MODELS: dict = {}


def _model(family):
    if family not in _MODELS:
        _MODELS[family] = models.random_model(models.tiny_hf_config(family), seed=1)
    return _MODELS[family]


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gpt_neo"])
def test_packed_rows_equal_each_prompt_alone(family):
    m = _model(family)
    rng = np.random.default_rng(0)
    # two rows; the neo tiny config's local window is 4, shorter than the 5- and 7-token prompts
    rows = [[5, 3, 7], [2, 6]]
    width = 18
    ids = np.zeros((2, width), np.int32)
    seg = np.zeros((2, width), np.int32)
    prompts = []
    for r, lens in enumerate(rows):
        o = 0
        for k, n_tok in enumerate(lens, start=1):
            t = rng.integers(0, m.config.d_vocab, n_tok).astype(np.int32)
            ids[r, o : o + n_tok], seg[r, o : o + n_tok] = t, k
            prompts.append((r, o, t))
            o += n_tok
    rec = Record.residuals(logits="all")
    logits, trace = m.forward(ids, segments=seg, record=rec)
    hs, logits = np.asarray(trace.hidden_states()), np.asarray(logits)
    for r, o, t in prompts:
        ref_logits, ref = m.forward(t[None], record=rec)
        n_tok = len(t)
        np.testing.assert_allclose(
            hs[:, r, o : o + n_tok], np.asarray(ref.hidden_states())[:, 0], atol=1e-5, rtol=0
        )
        np.testing.assert_allclose(
            logits[r, o : o + n_tok], np.asarray(ref_logits)[0], atol=1e-4, rtol=0
        )


def test_packed_rows_refuse_what_has_no_meaning():
    m = _model("gpt2")
    ids = np.zeros((1, 6), np.int32)
    seg = np.array([[1, 1, 2, 2, 2, 0]], np.int32)
    with pytest.raises(ValueError, match="no single last token"):
        m.forward(ids, segments=seg, record=Record(at="last"))
    with pytest.raises(ValueError, match="segments: shape"):
        m.forward(ids, segments=seg[:, :5])
    with pytest.raises(ValueError, match="mask and segments disagree"):
        m.forward(ids, np.ones((1, 6), bool), segments=seg)
    with pytest.raises(ValueError, match="one contiguous run"):
        m.forward(ids, segments=np.array([[1, 1, 2, 1, 0, 0]], np.int32))


def test_best_fit_decreasing_places_every_prompt_once_within_width():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 30, 500)
    rows = packing.best_fit_decreasing(lengths, 32)
    flat = sorted(i for r in rows for i in r)
    assert flat == list(range(500))
    assert max(sum(lengths[i] for i in r) for r in rows) <= 32
    # a lower bound on rows is total / width: best fit gets within a few percent of it here
    assert len(rows) <= 1.05 * np.ceil(lengths.sum() / 32) + 1
    with pytest.raises(ValueError, match="shorter than the longest"):
        packing.best_fit_decreasing(lengths, 20)


def test_plan_packs_short_prompts_densely_and_covers_every_token_once():
    rng = np.random.default_rng(0)
    lengths = rng.integers(8, 13, 400)  # the extraction benchmark's prompts
    plan = packing.pack(lengths, batch_size=64, pad_to_multiple=8, max_width=1024, key_cost=2e-4)
    assert plan.width % 8 == 0 and plan.width >= 12
    # padded to 12 they would fill 10/12 = 83%, to a multiple of 8 ~70%: packed, nearly all
    assert plan.fill > 0.94, plan.record()
    seen = np.zeros((400, 12), int)
    for call in plan.calls():
        assert call.rows == plan.rows_per_call and call.width == plan.width
        assert np.all(call.slot < plan.width) and np.all(call.pos < lengths[call.prompt])
        np.add.at(seen, (call.prompt, call.pos), 1)
        # slots are used once per call
        slots = set(zip(call.row.tolist(), call.slot.tolist(), strict=True))
        assert len(slots) == len(call.row)
    assert np.array_equal(seen, (np.arange(12)[None] < lengths[:, None]).astype(int))
    # about batch_size prompts per call
    per_call = 400 / plan.n_calls
    assert 32 <= per_call <= 128, plan.record()


def test_plan_respects_max_width_and_rejects_bad_input():
    plan = packing.pack([30, 20, 10], batch_size=4, pad_to_multiple=8, max_width=32)
    assert plan.width == 32 and len(plan.rows) == 2
    with pytest.raises(ValueError, match="exceeds 32"):
        packing.pack([40], batch_size=4, max_width=32)
    with pytest.raises(ValueError, match="lengths"):
        packing.pack([], batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        packing.pack([3], batch_size=0)
