"""The steering sweep equals single runs; a planted direction is found and random ones are not;
patching replaces what it says it replaces."""

from __future__ import annotations

import csv

import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tok_models
from transformers import PreTrainedTokenizerFast

import models
from configs import sections
from jaxcirc.core.patching import PatchGrid, patch_positions, patching_sweep
from jaxcirc.core.steering import (
    SteeringGrid,
    sensitivity_weights,
    steering_sweep,
    typical_resid_norms,
)
from jaxcirc.phases import steering
from models import Edits, Record
from models.generate import Sampling, generate
from models.scheduler import EngineSettings, Readout

WORDS = (
    "[PAD] [UNK] the a meeting is at noon we will see bus train left report today "
    "thanks thank grateful appreciate angry furious hate outrageous sorry apologize apologies "
    "regret good bad nice great terrible please you it and then so very"
).split()
WORDS += [f"w{i}" for i in range(64 - len(WORDS))]
GRATITUDE = ("thanks", "grateful", "appreciate", "thank")
PROMPTS = [
    "the meeting is at noon",
    "we will see the bus",
    "the train left today",
    "the report is at noon",
    "we will see the report today",
    "a bus left",
]


def _word_tokenizer():
    tok = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def _random_prompts(seed, vocab, n, width, short=()):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (n, width)).astype(np.int32)
    mask = np.ones((n, width), bool)
    for row, length in short:
        mask[row, length:] = False
    return ids, mask


def _planted_model():
    """Tiny Pythia-like model whose unembedding reads ONE residual direction u, and only for the
    gratitude words: their logits are 0.1 * (ln_final(x) . u), every other column has u projected
    out. Steering along u must raise them; a random direction of equal norm (|cos| ~ 1/16 with u
    in 256 dimensions) must barely move them."""
    m = models.random_model(
        models.tiny_hf_config("gpt_neox", vocab_size=len(WORDS), hidden_size=256),
        seed=0,
        tokenizer=_word_tokenizer(),
    )
    d = m.config.d_model
    u = np.random.default_rng(0).standard_normal(d)
    u -= u.mean()  # layer norm removes the mean; keep u inside what survives it
    u /= np.linalg.norm(u)
    W_U = np.asarray(m.params["unembed"]["W_U"], np.float64)
    W_U -= np.outer(u, u @ W_U)
    W_U[:, [WORDS.index(w) for w in GRATITUDE]] = 0.1 * u[:, None]
    m.params["unembed"]["W_U"] = jnp.asarray(W_U, jnp.float32)
    # Quiet blocks: what they write is small beside the residual stream, so an added direction
    # reaches the unembedding mostly as it was (a random model's blocks would scramble it).
    blocks = m.params["blocks"]
    blocks["attn"]["W_O"] = blocks["attn"]["W_O"] * 0.1
    blocks["mlp"]["W_out"] = blocks["mlp"]["W_out"] * 0.1
    return m, u.astype(np.float32)


@pytest.mark.parametrize("sampling", [Sampling(), Sampling(1.5, top_k=5)], ids=["greedy", "topk"])
def test_sweep_equals_loop_of_single_runs(sampling):
    """Every (direction, layer, alpha) cell of the batched sweep (re-runs from layer L, rows of
    different layers decoded together, padded batches) equals its own `generate` call."""
    m = models.random_model(
        models.tiny_hf_config(
            "gpt_neo", num_layers=3, attention_types=[[["local", "global", "local"], 1]]
        ),
        seed=1,
    )
    cfg = m.config
    ids, mask = _random_prompts(0, cfg.d_vocab, 5, 7, short=[(1, 5), (3, 3)])
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((2, cfg.n_layers, cfg.d_model)).astype(np.float32)
    scales = np.array([0.5, 1.0, 1.5], np.float32)
    layers, alphas = (0, 2), (-2.0, 0.0, 3.0)
    vocab_ids = np.arange(0, cfg.d_vocab, 9)
    # Sizes that divide nothing: partial re-run chunks, padded decode batches mixing layers.
    settings = EngineSettings(6, sampling, seed=3, batch_rows=8, prefill_rows=3, exact_batches=True)
    grid = SteeringGrid(dirs, scales, layers, alphas)
    readout = Readout(vocab_ids, dirs[:, -1])
    sw = steering_sweep(cfg, m.params, ids, mask, grid, settings, readout)
    assert sw.rows_run == 5 + 2 * 2 * 2 * 5  # alpha = 0 once, not once per layer and direction
    units = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    for di in range(2):
        for li, layer in enumerate(layers):
            for ai, alpha in enumerate(alphas):
                add = np.zeros((cfg.n_layers, cfg.d_model), np.float32)
                add[layer] = alpha * scales[layer] * units[di, layer]
                g = generate(
                    cfg,
                    m.params,
                    ids,
                    mask,
                    6,
                    edits=Edits(resid_add=jnp.asarray(add)),
                    sampling=sampling,
                    seed=3,
                    vocab_ids=vocab_ids,
                    proj_dirs=dirs[:, -1],
                )
                np.testing.assert_array_equal(sw.out.tokens[di, li, ai], np.asarray(g.tokens))
                np.testing.assert_allclose(sw.out.cols[di, li, ai], np.asarray(g.cols), atol=1e-4)
                np.testing.assert_allclose(sw.out.proj[di, li, ai], np.asarray(g.proj), atol=1e-4)
    # The steering did something (else the equality above proves little).
    assert (sw.out.tokens[:, :, 0] != sw.out.tokens[:, :, 1]).any()


def test_typical_norms_skip_first_token():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=2)
    ids, mask = _random_prompts(1, 512, 3, 6, short=[(2, 4)])
    norms = typical_resid_norms(m.config, m.params, ids, mask)
    _, tr = m.forward(ids, mask, record=Record(resid_pre=True, logits="none"))
    n = np.linalg.norm(np.asarray(tr.resid_pre), axis=-1)  # [layer, batch, pos]
    keep = mask.copy()
    keep[:, 0] = False
    np.testing.assert_allclose(norms, np.median(n[:, keep], axis=1), rtol=1e-6)


def test_planted_direction_steers_random_does_not(tmp_path):
    m, u = _planted_model()
    cfg = sections.steering()
    cfg.alphas = (-8.0, 0.0, 8.0)
    cfg.n_random_seeds = 4
    cfg.max_new_tokens = 5
    cfg.n_boot = 300
    cfg.batch_rows = 64
    cfg.prefill_rows = 32
    vectors = {"gratitude": np.tile(u, (m.config.n_layers, 1))}
    summary = steering.run_steering(m, PROMPTS, vectors, cfg, tmp_path, label="toy")
    rows = list(csv.DictReader(open(tmp_path / "effects.csv")))

    def get(measure, layer, alpha, direction):
        (r,) = [
            r
            for r in rows
            if r["measure"] == measure
            and int(r["layer"]) == layer
            and float(r["alpha"]) == alpha
            and r["direction"] == direction
        ]
        return float(r["effect"]), float(r["ci_lo"]), float(r["ci_hi"])

    randoms = [f"random_{1000 + i}" for i in range(4)]
    for layer in (0, 1):
        up, lo, _ = get("logit_diff_gratitude", layer, 8.0, "gratitude")
        down, _, hi = get("logit_diff_gratitude", layer, -8.0, "gratitude")
        assert lo > 0 and hi < 0  # along raises the planted words, against lowers them
        for alpha, planted in ((8.0, up), (-8.0, down)):
            worst = max(abs(get("logit_diff_gratitude", layer, alpha, r)[0]) for r in randoms)
            assert abs(planted) > 3 * worst
    # Text: steering the last block's input along u makes the generations gratitude words.
    kw, kw_lo, _ = get("kw_gratitude", 1, 8.0, "gratitude")
    assert kw > 5 and kw_lo > 0  # hits per 10 words
    assert abs(get("kw_gratitude", 1, 8.0, "random_mean_of_4")[0]) < 1
    assert summary["best_layer"]["gratitude"]["logit_diff_gratitude"]["layer"] == 1
    # The share of unsteered continuations with nothing to score: EOS as the first new token.
    base = np.load(tmp_path / "sweep.npz")["base_tokens"]
    eos = m.config.eos_token_id
    expected = float(np.mean(base[:, 0] == eos)) if eos is not None else 0.0
    assert summary["empty_continuations"]["unsteered"] == pytest.approx(expected)
    assert 0.0 <= summary["empty_continuations"]["steered"] <= 1.0
    # EOS held back for every new token: no continuation ends at once, and the summary says why.
    cfg.min_new_tokens = cfg.max_new_tokens
    held = steering.run_steering(m, PROMPTS, vectors, cfg, tmp_path / "held", label="toy")
    assert held["empty_continuations"]["min_new_tokens"] == cfg.max_new_tokens
    assert held["empty_continuations"]["unsteered"] == 0.0
    assert held["empty_continuations"]["steered"] == 0.0
    held_tokens = np.load(tmp_path / "held" / "sweep.npz")["base_tokens"]
    assert not (held_tokens == eos).any()
    # Every number is labelled; the random rows say so.
    r0 = rows[0]
    for col in ("vector_method", "vector_centre", "layer", "alpha", "added_norm", "control"):
        assert r0[col] != ""
    assert {r["control"] for r in rows if r["direction"].startswith("random")} == {"random"}
    assert (tmp_path / "plots" / "steering_vs_layer.png").stat().st_size > 10_000
    text = (tmp_path / "samples" / "gratitude.txt").read_text()
    assert "layer 1, alpha +8" in text and "thanks" in text


def test_full_position_patch_reproduces_source():
    """Replacing resid_pre[L] at every position with a same-length source's makes the prompt-end
    logits the source's at every L; at L = 0 the generation is the source's too."""
    m = models.random_model(models.tiny_hf_config("gpt2", n_layer=3), seed=4)
    cfg = m.config
    t_ids, t_mask = _random_prompts(2, cfg.d_vocab, 3, 6)
    s_ids, s_mask = _random_prompts(3, cfg.d_vocab, 3, 6)
    every = np.arange(cfg.d_vocab)
    settings = EngineSettings(4, batch_rows=16, prefill_rows=8)
    grid = PatchGrid((0, 1, 2), ("resid_pre",), "all")
    res = patching_sweep(
        cfg, m.params, t_ids, t_mask, s_ids, s_mask, grid, settings, Readout(every)
    )
    src_logits, _ = m.forward(s_ids, s_mask, record=Record(logits="last"))
    out = res.out["resid_pre"]  # [layer, condition, target]
    for li in range(3):
        np.testing.assert_allclose(out.cols[li, 0, :, 0], np.asarray(src_logits), atol=1e-4)
    src_gen = generate(cfg, m.params, s_ids, s_mask, 4)
    np.testing.assert_array_equal(out.tokens[0, 0], np.asarray(src_gen.tokens))
    # Control rows patch from target i + 1: their prompt-end logits are that target's.
    t_logits, _ = m.forward(t_ids, t_mask, record=Record(logits="last"))
    np.testing.assert_allclose(
        out.cols[1, 1, :, 0], np.roll(np.asarray(t_logits), -1, axis=0), atol=1e-4
    )


@pytest.mark.parametrize("site", ["attn_out", "mlp_out"])
def test_last_position_patch_equals_forward_edit(site):
    """Patching block L's attn/mlp output at the last token equals the forward pass with the same
    `Edits` (different lengths: the sweep's left alignment must put the patch on the last token)."""
    m = models.random_model(models.tiny_hf_config("gpt_neox"), seed=6)
    cfg = m.config
    t_ids, t_mask = _random_prompts(4, cfg.d_vocab, 3, 6, short=[(0, 4)])
    s_ids, s_mask = _random_prompts(5, cfg.d_vocab, 2, 5, short=[(1, 3)])
    vocab_ids = np.arange(0, cfg.d_vocab, 5)
    # Re-run pieces of 2 rows: the two length-4 rows run over a 4-slot window of the 6.
    settings = EngineSettings(3, batch_rows=16, prefill_rows=2, exact_batches=True)
    grid = PatchGrid((1,), (site,), "last")
    res = patching_sweep(
        cfg, m.params, t_ids, t_mask, s_ids, s_mask, grid, settings, Readout(vocab_ids)
    )
    _, s_tr = m.forward(s_ids, s_mask, record=Record(**{site: True}, at="last", logits="none"))
    src_last = np.asarray(getattr(s_tr, site))  # [layer, source, d]
    t_last = t_mask.sum(1) - 1
    plain, _ = m.forward(t_ids, t_mask, record=Record(logits="last"))
    for i in range(3):
        patch = np.zeros((cfg.n_layers, 1, 6, cfg.d_model), np.float32)
        pmask = np.zeros((cfg.n_layers, 1, 6), np.float32)
        patch[1, 0, t_last[i]] = src_last[1, i % 2]
        pmask[1, 0, t_last[i]] = 1.0
        field = {"attn_out": "attn_out_patch", "mlp_out": "mlp_out_patch"}[site]
        edits = Edits(**{field: jnp.asarray(patch), field + "_mask": jnp.asarray(pmask)})
        want, _ = m.forward(t_ids[i : i + 1], t_mask[i : i + 1], edits, Record(logits="last"))
        got = res.out[site].cols[0, 0, i, 0]
        np.testing.assert_allclose(got, np.asarray(want)[0, vocab_ids], atol=1e-4)
        assert np.abs(got - np.asarray(plain)[i, vocab_ids]).max() > 1e-3  # it changed something


def test_run_patching_writes_labelled_effects(tmp_path):
    m, u = _planted_model()
    cfg = sections.steering()
    cfg.max_new_tokens = 3
    cfg.n_boot = 100
    cfg.batch_rows = 64
    cfg.prefill_rows = 32
    cfg.patch_sites = ("resid_pre",)
    sources = ["thanks you very nice", "grateful and thanks", "thank you so very good"]
    summary = steering.run_patching(
        m,
        PROMPTS[:4],
        sources,
        cfg,
        tmp_path,
        source_label="gratitude",
        vectors={"gratitude": np.tile(u, (m.config.n_layers, 1))},
    )
    rows = list(csv.DictReader(open(tmp_path / "patching_effects.csv")))
    assert {r["condition"] for r in rows} == {"source", "control"}
    assert len(rows) == 2 * m.config.n_layers * len({r["measure"] for r in rows})
    assert summary["rows_generated"] == 4 + 2 * m.config.n_layers * 4
    assert (tmp_path / "samples" / "patching.txt").read_text().count("control   ->") == 2 * 3


def test_bad_inputs():
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=0)
    ids, mask = _random_prompts(0, 512, 2, 4)
    zero = np.zeros((1, m.config.n_layers, m.config.d_model), np.float32)
    with pytest.raises(ValueError, match="zero"):
        steering_sweep(m.config, m.params, ids, mask, SteeringGrid(zero, np.ones(2), (0,), (1.0,)))
    with pytest.raises(ValueError, match="out of range"):
        grid = SteeringGrid(zero + 1, np.ones(2), (5,), (1.0,))
        steering_sweep(m.config, m.params, ids, mask, grid)
    with pytest.raises(ValueError, match="positions"):
        patch_positions(mask, mask, "first")
    with pytest.raises(ValueError, match="non-zero alpha"):
        sensitivity_weights([0.0])
