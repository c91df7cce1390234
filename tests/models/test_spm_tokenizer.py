"""Sentencepiece checkpoints (rinna's layout: spiece.model + tokenizer_config.json) through
models.load: the ids are sentencepiece's own encoding of the text under the documented
normalisation (lower-casing iff do_lower_case), BOS only when asked, EOS never appended, offsets
into the original text, and BOS / EOS ids checked against config.json."""

from __future__ import annotations

import io
import json
import shutil
import unicodedata

import numpy as np
import pytest
import sentencepiece as spm

import models
from models import checkpoint
from models import hf_reference as ref
from models.spm_tokenizer import SentencePieceTokenizer

# Lower-case Latin only: an upper-case letter is then unknown to the model unless lower-cased.
CORPUS = [
    "ありがとうございます。本当に助かりました。",
    "申し訳ございません、遅くなってしまいました。",
    "今日はとても良い天気ですね。",
    "ふざけるな、もう我慢できない！",
    "田中さんはabc社で働いています。",
    "東京駅で友だちに会いました。",
    "心から感謝しております。",
    "hello worldと書いてあります。",
    "本日は晴れのち曇りでした。",
]
TEXT = "ＡＢＣ社の田中です。本日はありがとうございました！"
SPECIAL = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "pad_token": "[PAD]",
    "unk_token": "<unk>",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def spm_model() -> bytes:
    """A unigram sentencepiece model with rinna's ids ([PAD] 0, <s> 1, </s> 2, <unk> 3) and
    normaliser (nmt_nfkc), trained here on a few Japanese sentences."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 30),
        model_writer=out,
        vocab_size=200,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        pad_id=0,
        pad_piece="[PAD]",
        bos_id=1,
        eos_id=2,
        unk_id=3,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"],
        num_threads=1,
        minloglevel=2,
    )
    return out.getvalue()


def _folder(tmp_path, model: bytes, do_lower_case=True, bos=1, eos=2, name="rinna"):
    """A checkpoint folder laid out as rinna's: spiece.model, tokenizer_config.json,
    special_tokens_map.json, config.json and random GPT-2 weights (vocabulary padded to 256)."""
    folder = tmp_path / name
    hf_cfg = models.tiny_hf_config("gpt2", vocab_size=256, bos_token_id=bos, eos_token_id=eos)
    ref.hf_model(hf_cfg, seed=3).save_pretrained(folder)
    (folder / "spiece.model").write_bytes(model)
    settings = {**SPECIAL, "do_lower_case": do_lower_case, "extra_ids": 0}
    (folder / "tokenizer_config.json").write_text(
        json.dumps({**settings, "tokenizer_class": "T5Tokenizer"})
    )
    (folder / "special_tokens_map.json").write_text(json.dumps(SPECIAL))
    return folder


def _reference(folder, text):
    return spm.SentencePieceProcessor(model_file=str(folder / "spiece.model")).encode(text)


def test_ids_are_sentencepiece_of_the_lowered_text(tmp_path, spm_model):
    folder = _folder(tmp_path, spm_model, do_lower_case=True)
    model = models.load(str(folder))
    assert isinstance(model.tokenizer, SentencePieceTokenizer)
    expected = _reference(folder, TEXT.lower())
    assert expected != _reference(folder, TEXT)  # lower-casing changes the ids of this text
    toks = model.tokenize([TEXT], prepend_bos=False)
    assert toks.ids[0, : toks.lengths[0]].tolist() == expected
    assert model.tokenizer.unk_token_id not in expected  # "ａｂｃ" is known once lowered
    # The same model without do_lower_case encodes the text as it is.
    plain = models.load(str(_folder(tmp_path, spm_model, do_lower_case=False, name="plain")))
    toks = plain.tokenize([TEXT], prepend_bos=False)
    assert toks.ids[0, : toks.lengths[0]].tolist() == _reference(folder, TEXT)


def test_bos_only_when_asked_and_eos_never_appended(tmp_path, spm_model):
    folder = _folder(tmp_path, spm_model)
    model = models.load(str(folder))
    tok = model.tokenizer
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    assert (
        tok.unk_token_id == 3
        and len(tok) == spm.SentencePieceProcessor(model_proto=spm_model).get_piece_size()
    )
    expected = _reference(folder, TEXT.lower())
    texts = [TEXT, "ありがとう"]
    with_bos = model.tokenize(texts, prepend_bos=True)
    without = model.tokenize(texts, prepend_bos=False)
    assert (with_bos.lengths == without.lengths + 1).all()
    assert (with_bos.ids[:, 0] == 1).all() and 1 not in without.ids[0, : without.lengths[0]]
    assert with_bos.ids[0, 1 : with_bos.lengths[0]].tolist() == expected
    for t in (with_bos, without):
        last = t.ids[np.arange(2), t.last]
        assert (last != tok.eos_token_id).all()  # T5Tokenizer would have put </s> here
    assert (without.ids[1, without.lengths[1] :] == tok.pad_token_id).all()
    rec = with_bos.record()["tokenizer"]
    assert rec["appends_eos"] is False and rec["do_lower_case"] is True
    assert rec["special_ids"] == {"bos": 1, "eos": 2, "pad": 0, "unk": 3}
    assert rec["special_pieces"]["eos"] == "</s>"
    with pytest.raises(ValueError, match="never appends"):
        tok(TEXT, add_special_tokens=True)


def test_offsets_point_into_the_original_text(tmp_path, spm_model):
    model = models.load(str(_folder(tmp_path, spm_model)))
    tok = model.tokenizer
    # Full-width letters (NFKC), an upper-case letter that lowers to two characters ('İ').
    for text in (TEXT, "İabc社でありがとう", "ありがとう ございます"):
        ids, offsets = tok.encode_with_offsets(text)
        assert ids == _reference_of(tok, text)
        for i, (s, e) in zip(ids, offsets, strict=True):
            assert 0 <= s <= e <= len(text)
            piece = tok.convert_ids_to_tokens([i])[0].replace("▁", " ").strip()
            if e > s and i != tok.unk_token_id:
                assert unicodedata.normalize("NFKC", text[s:e]).lower().strip() == piece
    toks = model.tokenize([TEXT], prepend_bos=True)
    start = TEXT.index("ありがとう")
    marked = toks.span_mask([[(start, start + len("ありがとう"))]])[0]
    pieces = tok.convert_ids_to_tokens(toks.ids[0][marked])
    assert "".join(pieces).replace("▁", "") == "ありがとう"
    assert not marked[0]  # the BOS covers no character


def _reference_of(tok, text):
    return spm.SentencePieceProcessor(model_proto=tok.model_proto).encode(text.lower())


def test_decode(tmp_path, spm_model):
    tok = models.load(str(_folder(tmp_path, spm_model))).tokenizer
    ids = tok.encode("ありがとうございます。")
    assert tok.decode(ids) == "ありがとうございます。"
    assert tok.decode([1] + ids + [2]) == "<s>ありがとうございます。</s>"
    assert tok.decode([1] + ids + [2], skip_special_tokens=True) == "ありがとうございます。"
    assert tok.decode(ids + [255]) == "ありがとうございます。 ⁇ "  # an id past the pieces


def test_hub_name_from_offline_cache(tmp_path, spm_model):
    """The layout huggingface_hub keeps: models--<org>--<name>/{refs/main, snapshots/<commit>/}."""
    folder = _folder(tmp_path, spm_model)
    repo_dir = tmp_path / "hf_cache" / "models--rinna--japanese-gpt2-small"
    shutil.copytree(folder, repo_dir / "snapshots" / ("c" * 40))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("c" * 40)
    model = models.load("rinna/japanese-gpt2-small", cache_dir=str(tmp_path / "hf_cache"))
    assert isinstance(model.tokenizer, SentencePieceTokenizer)
    assert (
        model.tokenize([TEXT], prepend_bos=False).ids[0, 0] == _reference(folder, TEXT.lower())[0]
    )
    assert "spiece.model" in checkpoint.TOKENIZER_PATTERNS  # fetched with the weights


def test_special_ids_disagreeing_with_config_are_refused(tmp_path, spm_model):
    with pytest.raises(checkpoint.CheckpointError, match="eos token has id 2.*eos_token_id 7"):
        models.load(str(_folder(tmp_path, spm_model, eos=7)))
    folder = _folder(tmp_path, spm_model, name="nobos")
    (folder / "special_tokens_map.json").write_text(json.dumps({**SPECIAL, "bos_token": "<S>"}))
    with pytest.raises(checkpoint.CheckpointError, match="'<S>' .* not a piece"):
        models.load(str(folder))
    (folder / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(checkpoint.CheckpointError, match="not a sentencepiece model"):
        models.load(str(folder))


def test_unnamed_roles_take_the_models_own_ids(spm_model):
    tok = SentencePieceTokenizer(spm_model)  # no settings files: sentencepiece's own ids
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id) == (1, 2, 0, 3)
    assert not tok.do_lower_case and tok.encode(TEXT) == _reference_of_raw(spm_model, TEXT)


def _reference_of_raw(model, text):
    return spm.SentencePieceProcessor(model_proto=model).encode(text)
