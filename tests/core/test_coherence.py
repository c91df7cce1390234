"""Coherence of generated text: repetition on known texts, the unsteered model's loss against a
plain forward pass, and the classes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from jaxcirc.core import coherence, scoring
from models import Record


def test_repetition_of_known_texts():
    texts = [
        "I for the s s s s",  # the collapse the issue quotes: 2 of 6 word bigrams repeat
        "I'm so grateful for the update.",  # no repeated bigram
        "The package arrived on Saturday. The package arrived on Saturday.",
        "thanks",  # too short to repeat
        "",
    ]
    rep = scoring.repetition([scoring.words(t) for t in texts], n=2)
    np.testing.assert_allclose(rep[0], 1 - 4 / 6)
    assert rep[1] == 0.0 and rep[3] == 0.0 and rep[4] == 0.0
    np.testing.assert_allclose(rep[2], 1 - 5 / 9)  # 9 bigrams, 5 distinct
    assert rep[0] > 0.3 and rep[2] > 0.3
    # Token ids work the same; unigrams count repeated words.
    np.testing.assert_allclose(scoring.repetition([[5, 5, 5, 5]], n=1), [0.75])
    np.testing.assert_allclose(scoring.repetition([[1, 2, 3, 4]], n=1), [0.0])
    with pytest.raises(ValueError, match="single str"):
        scoring.repetition("I for the s s s s")


def _plain_loss(m, prompt, cont):
    """-mean log p(cont | prompt) by one forward of the concatenation, full logits."""
    ids = jnp.asarray([list(prompt) + list(cont)], jnp.int32)
    logits, _ = m.forward(ids, record=Record(logits="all"))
    logp = jax.nn.log_softmax(np.asarray(logits[0], np.float64), -1)
    p = len(prompt)
    return -np.mean([logp[p - 1 + j, t] for j, t in enumerate(cont)])


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_continuation_loss_equals_plain_forward(family):
    """Each row's loss is the unedited model's mean NLL per token of its continuation up to and
    including the first EOS, whatever the prompt padding, the batching and the duplicates."""
    m = models.random_model(models.tiny_hf_config(family), seed=3)
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 500, (3, 6)).astype(np.int32)
    mask = np.ones((3, 6), bool)
    mask[1, 4:] = False  # right padding
    mask[2, :2] = False  # left padding
    tokens = rng.integers(3, 500, (5, 4)).astype(np.int32)
    tokens[4] = tokens[0]  # a duplicate of row 0 (same prompt below)
    eos = np.array([-1, 1, -1, 3, -1])  # row 1 ends after its second token (EOS included)
    prompt_idx = np.array([0, 1, 2, 1, 0])
    cont = coherence.Continuations(prompt_idx, tokens, eos)
    loss, n_tok = coherence.continuation_loss(m.config, m.params, ids, mask, cont, rows_per_call=2)
    np.testing.assert_array_equal(n_tok, [4, 2, 4, 4, 4])
    for r in range(5):
        prompt = ids[prompt_idx[r]][mask[prompt_idx[r]]]
        want = _plain_loss(m, prompt, tokens[r, : n_tok[r]])
        np.testing.assert_allclose(loss[r], want, rtol=1e-4, atol=1e-4)
    # Batch size changes nothing.
    again, _ = coherence.continuation_loss(m.config, m.params, ids, mask, cont, rows_per_call=64)
    np.testing.assert_allclose(again, loss, rtol=1e-5, atol=1e-5)


def test_token_rows_cut_before_eos():
    rows = coherence.token_rows(np.array([[4, 5, 9, 6], [1, 2, 3, 4]]), np.array([2, -1]))
    assert rows == [[4, 5], [1, 2, 3, 4]]


def test_classes_read_repetition_first():
    th = coherence.Thresholds(repetition_rise=0.2, loss_rise=1.0)
    cls = coherence.classify([0.0, 0.3, 0.0, 0.5, 0.2], [0.5, 0.0, 1.5, 3.0, 1.0], th)
    assert list(cls) == ["coherent", "repetitive", "degraded", "repetitive", "coherent"]
    # Cells: mean paired rises over prompts; an unscored (NaN) loss is left out.
    cc = coherence.cell_coherence(
        np.array([[0.5, 0.5], [0.0, 0.0]]),
        np.array([[1.0, np.nan], [3.0, 2.0]]),
        np.array([0.0, 0.0]),
        np.array([1.0, 1.0]),
        th,
    )
    np.testing.assert_allclose(cc.rep_rise, [0.5, 0.0])
    np.testing.assert_allclose(cc.loss_rise, [0.0, 1.5])
    assert list(cc.cls) == ["repetitive", "degraded"]
