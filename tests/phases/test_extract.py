"""Phase 2 extraction: packed, batched runs equal one-prompt-at-a-time forwards at real
positions; neither padding nor a row's other prompts leak in; spans map to the right tokens;
files round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

import models
from jaxcirc.data import activations, dataset
from jaxcirc.phases import extract
from tests.support import check_script

ROOT = Path(__file__).resolve().parents[2]

MARKED = [
    ("gratitude", "[Thank you] for the help!"),
    ("gratitude", "We are so [grateful] for the lovely dinner you made."),
    ("anger", "I am [furious] about this delay."),
    ("anger", "This is [outrageous]."),
    ("apology", "I am [sorry] about the late reply to your message yesterday."),
    ("apology", "[Sorry]."),
    ("neutral", "The bus [left] at noon."),
    ("neutral", "We are [meeting] about the rent on Monday morning at nine."),
]


def _records() -> list[dataset.Record]:
    out = []
    for i, (emo, marked) in enumerate(MARKED):
        text, spans = dataset.parse_marked(marked)
        out.append(dataset.Record(f"t-{i}", "baseline", emo, text, spans))
    return out


def _tokenizer():
    texts = [dataset.parse_marked(m)[0] for _, m in MARKED]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts * 20, vocab_size=300, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


@pytest.fixture(scope="module")
def tok():
    return _tokenizer()


_MODELS: dict = {}


def _model(family, tok):
    """One random model per family for the whole module (initialising one is the slow part)."""
    if family not in _MODELS:
        m = models.random_model(models.tiny_hf_config(family), seed=0)
        m.tokenizer = tok
        _MODELS[family] = m
    return _MODELS[family]


# rotary positions (neox) and local attention windows (neo) are where right padding could leak
@pytest.mark.parametrize(
    "family, prepend_bos", [("gpt2", False), ("gpt_neox", False), ("gpt_neo", True)]
)
def test_batched_equals_per_prompt_forward(tok, family, prepend_bos):
    m = _model(family, tok)
    # shortest, two mid-length and the longest prompt: packed, rows hold several prompts each
    # (positions and attention must stay inside each prompt) and end in padding.
    recs = [_records()[i] for i in (0, 3, 5, 7)]
    acts = extract.extract_residuals(m, recs, prepend_bos=prepend_bos, batch_size=3, label="t")
    packed = acts.meta["packing"]
    assert packed["rows"] < len(recs) and packed["slots"] > packed["tokens"], packed
    assert acts.resid.dtype == np.float32
    assert acts.resid.shape[0] == m.config.n_layers + 1 and acts.n == len(recs)
    assert len(set(acts.lengths.tolist())) == len(recs)  # lengths differ: padding is exercised
    for i, r in enumerate(recs):
        one = m.tokenize([r.text], prepend_bos=prepend_bos, pad_to_multiple=1)
        _, tr = m.forward(one, record=models.Record.residuals(logits="none"))
        ref = np.asarray(tr.hidden_states())[:, 0]  # [layer+1, len, d], no padding at all
        n_tok = ref.shape[1]
        assert acts.lengths[i] == n_tok and acts.last[i] == n_tok - 1
        np.testing.assert_allclose(acts.resid[:, i, :n_tok], ref, atol=1e-5, rtol=0)
        # padding leaks nowhere: zeros beyond the prompt, mask False there
        assert not acts.mask[i, n_tok:].any()
        assert np.all(acts.resid[:, i, n_tok:] == 0.0)
        np.testing.assert_array_equal(acts.ids[i, :n_tok], one.ids[0])
    np.testing.assert_allclose(
        activations.sentence_end(acts)[:, 3], acts.resid[:, 3, acts.last[3]], rtol=0, atol=0
    )
    assert acts.labels.tolist() == [dataset.EMOTIONS.index(r.emotion) for r in recs]
    assert acts.meta["tokenization"]["prepend_bos"] is prepend_bos
    assert acts.meta["batch_size"] == 3 and acts.meta["samples_per_s"] > 0


def test_batch_composition_does_not_matter(tok):
    m = _model("gpt2", tok)
    recs = _records()
    a = extract.extract_residuals(m, recs, prepend_bos=False, batch_size=8, pad_to_multiple=16)
    b = extract.extract_residuals(m, recs[::-1], prepend_bos=False, batch_size=1)
    np.testing.assert_allclose(a.resid, b.resid[:, ::-1], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(a.mask, b.mask[::-1])


def test_span_mask_marks_the_emotion_words(tok):
    m = _model("gpt2", tok)
    recs = _records()
    for bos in (False, True):
        acts = extract.extract_residuals(m, recs, prepend_bos=bos, batch_size=4)
        for i, r in enumerate(recs):
            marked = acts.ids[i][acts.span_mask[i]]
            assert marked.size >= 1
            decoded = tok.decode(marked.tolist()).strip()
            assert r.span_texts()[0] in decoded or decoded in r.span_texts()[0]
            assert not acts.span_mask[i, ~acts.mask[i]].any()
            if bos:
                assert not acts.span_mask[i, 0]  # the BOS covers no character
        if not bos:
            assert acts.span_mask[0, 0]  # "Thank you" starts the first prompt
    plain = extract.extract_residuals(m, recs, prepend_bos=False, batch_size=4)
    bosed = extract.extract_residuals(m, recs, prepend_bos=True, batch_size=4)
    np.testing.assert_array_equal(bosed.last, plain.last + 1)
    np.testing.assert_array_equal(bosed.span_mask[:, 1:], plain.span_mask)
    assert activations.same_tokenization(plain, plain) and not activations.same_tokenization(
        plain, bosed
    )


def test_save_load_roundtrip(tmp_path, tok):
    m = _model("gpt_neox", tok)
    acts = extract.extract_residuals(m, _records(), prepend_bos=True, batch_size=4, label="p")
    npz, js = acts.save(tmp_path / "acts" / "activations.npz")
    assert npz.is_file() and js.is_file()
    side = json.loads(js.read_text())
    assert side["model_label"] == "p" and side["layer_names"][0].startswith("embeddings")
    back = activations.Activations.load(npz)
    for f in ("resid", "mask", "ids", "last", "span_mask", "labels"):
        np.testing.assert_array_equal(getattr(back, f), getattr(acts, f))
    assert back.texts == acts.texts and back.record_ids == acts.record_ids
    assert back.prepend_bos and back.meta["tokenization"]["lengths"] == acts.lengths.tolist()
    with pytest.raises(ValueError, match="end in .npz"):
        acts.save(tmp_path / "acts.bin")
    with pytest.raises(ValueError, match="no such file"):
        activations.Activations.load(tmp_path / "missing.npz")


def test_bad_input(tok):
    m = _model("gpt2", tok)
    with pytest.raises(ValueError, match="records"):
        extract.extract_residuals(m, [], prepend_bos=False)
    bare = models.LoadedModel(m.config, m.params)
    with pytest.raises(ValueError, match="no tokenizer"):
        extract.extract_residuals(bare, _records(), prepend_bos=False)
    with pytest.raises(ValueError, match="shape"):
        activations.Activations(
            np.zeros((2, 3, 4, 5), np.float32),
            np.ones((3, 5), bool),
            np.zeros((3, 4)),
            np.zeros(3),
            np.zeros((3, 4), bool),
            np.zeros(3, int),
            False,
            "x",
            ("a", "b", "c"),
        )


def test_phase2_script_calls_run_phase(tmp_path):
    check_script(tmp_path, "phase2_extract.py", "extract")
