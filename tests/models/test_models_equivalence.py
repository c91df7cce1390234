"""Our forward pass equals transformers' (fp32, eager attention) on random weights.

Tolerance: max abs difference <= 1e-4 on logits and on every layer's hidden state.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import Record
from models import hf_reference as ref

ATOL = 1e-4
FAMILIES = ["gpt2", "gpt_neox", "gpt_neo"]


def _ids(rng, batch, pos, vocab):
    return rng.integers(0, vocab, size=(batch, pos)).astype(np.int32)


def _compare(ours, hf_model, ids, mask=None):
    logits, trace = ours.forward(ids, mask, record=Record.residuals(logits="all"))
    hl, hh = ref.run_hf(hf_model, ids, mask)
    real = np.ones(ids.shape, bool) if mask is None else np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(logits)[real], hl[real], atol=ATOL, rtol=0)
    ours_h = np.asarray(trace.hidden_states())
    # transformers' last hidden state is after the final layer norm; ours is before it.
    np.testing.assert_allclose(ours_h[:-1][:, real], hh[:-1][:, real], atol=ATOL, rtol=0)
    with __import__("torch").no_grad():
        normed = ref.final_ln(hf_model)(__import__("torch").tensor(ours_h[-1])).numpy()
    np.testing.assert_allclose(normed[real], hh[-1][real], atol=ATOL, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_equals_transformers(family):
    hf_cfg = models.tiny_hf_config(family)
    hf = ref.hf_model(hf_cfg)
    ours = ref.convert(hf, hf_cfg)
    _compare(ours, hf, _ids(np.random.default_rng(0), 3, 11, hf_cfg["vocab_size"]))


@pytest.mark.parametrize(
    "family,overrides",
    [
        ("gpt_neox", dict(use_parallel_residual=False)),  # sequential NeoX
        ("gpt_neox", dict(rotary_pct=0.5, rotary_emb_base=500)),  # other partial rotary
        ("gpt_neox", dict(rotary_pct=1.0)),
        ("gpt_neo", dict(window_size=3, num_layers=4)),  # local window shorter than the text
        ("gpt2", dict(n_inner=96, activation_function="gelu")),
    ],
)
def test_variants_equal_transformers(family, overrides):
    hf_cfg = models.tiny_hf_config(family, **overrides)
    hf = ref.hf_model(hf_cfg, seed=1)
    ours = ref.convert(hf, hf_cfg)
    _compare(ours, hf, _ids(np.random.default_rng(1), 2, 13, hf_cfg["vocab_size"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_right_padded_batch(family):
    """Real positions of a right-padded batch equal transformers with the mask, and equal each
    row run alone without padding."""
    hf_cfg = models.tiny_hf_config(family, **({"window_size": 4} if family == "gpt_neo" else {}))
    hf = ref.hf_model(hf_cfg, seed=2)
    ours = ref.convert(hf, hf_cfg)
    rng = np.random.default_rng(2)
    ids = _ids(rng, 3, 10, hf_cfg["vocab_size"])
    mask = np.zeros_like(ids, bool)
    for b, n in enumerate([10, 6, 3]):
        mask[b, :n] = True
    _compare(ours, hf, ids, mask)
    logits, _ = ours.forward(ids, mask)
    for b, n in enumerate([10, 6, 3]):
        alone, _ = ours.forward(ids[b : b + 1, :n])
        np.testing.assert_allclose(np.asarray(logits)[b, :n], np.asarray(alone)[0], atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_positions(family):
    """Left padding: positions come from the mask, so each row equals its unpadded run."""
    hf_cfg = models.tiny_hf_config(family)
    ours = ref.convert(ref.hf_model(hf_cfg, seed=3), hf_cfg)
    ids = _ids(np.random.default_rng(3), 2, 8, hf_cfg["vocab_size"])
    mask = np.ones_like(ids, bool)
    mask[1, :3] = False
    logits, _ = ours.forward(ids, mask)
    alone, _ = ours.forward(ids[1:, 3:])
    np.testing.assert_allclose(np.asarray(logits)[1, 3:], np.asarray(alone)[0], atol=ATOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_scan_equals_unrolled(family):
    hf_cfg = models.tiny_hf_config(family)
    m = models.random_model(hf_cfg, seed=4)
    ids = jnp.asarray(_ids(np.random.default_rng(4), 2, 7, hf_cfg["vocab_size"]))
    rec = Record.everything(parallel_residual=m.config.parallel_residual)
    a = models.forward(m.config, m.params, ids, record=rec)
    b = models.forward(m.config, m.params, ids, record=rec, unroll=True)
    import chex

    chex.assert_trees_all_close(a, b, atol=1e-6)


@pytest.mark.parametrize("name", ["gpt2", "pythia-160m", "gpt-neo-125m"])
def test_full_size_published_config(name):
    """The exact published shapes (12 layers, d_model 768, full vocabulary)."""
    hf_cfg = models.published_hf_config(name)
    hf = ref.hf_model(hf_cfg, seed=5)
    ours = ref.convert(hf, hf_cfg)
    assert ours.config.n_layers == 12 and ours.config.d_model == 768
    _compare(ours, hf, _ids(np.random.default_rng(5), 2, 12, hf_cfg["vocab_size"]))


def test_record_last_matches_all():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=6)
    ids = _ids(np.random.default_rng(6), 3, 9, 512)
    mask = np.zeros_like(ids, bool)
    for b, n in enumerate([9, 4, 6]):
        mask[b, :n] = True
    la, ta = m.forward(ids, mask, record=Record(resid_pre=True, z=True, logits="all"))
    ll, tl = m.forward(ids, mask, record=Record(resid_pre=True, z=True, at="last", logits="last"))
    idx = np.array([8, 3, 5])
    np.testing.assert_allclose(np.asarray(ll), np.asarray(la)[np.arange(3), idx], atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(tl.resid_pre), np.asarray(ta.resid_pre)[:, np.arange(3), idx], atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(tl.z), np.asarray(ta.z)[:, np.arange(3), idx], atol=1e-6)


def test_vocab_ids_selects_columns():
    for family in FAMILIES:
        m = models.random_model(models.tiny_hf_config(family), seed=7)
        ids = _ids(np.random.default_rng(7), 2, 5, 512)
        cols = jnp.asarray([3, 100, 7])
        full, _ = m.forward(ids)
        some, _ = m.forward(ids, vocab_ids=cols)
        np.testing.assert_allclose(np.asarray(some), np.asarray(full)[..., [3, 100, 7]], atol=1e-5)
