"""jaxcirc.core.measures.word_token_ids on the two tokenizer kinds: a sentencepiece tokenizer puts
a lone `▁` piece before a word encoded alone, which must not make the word two tokens; a
byte-level BPE word with its leading space stays exactly as before."""

from __future__ import annotations

import itertools

import pytest

from jaxcirc.core import measures
from jaxcirc.demo import bpe, spm

SUBJECTS = ["田中さん", "私", "先生", "母"]
PREDICATES = [
    "に感謝しています。",
    "はありがとうと言った。",
    "は怒りを感じた。",
    "は駅まで歩いた。",
]


@pytest.fixture(scope="module")
def sp_tok():
    lines = [s + p for s, p in itertools.product(SUBJECTS, PREDICATES)] * 4
    # Made pieces whatever their counts, so the test knows they are single pieces in context.
    return spm.train_tokenizer(lines, 400, symbols=("感謝", "怒り"))


def test_lone_sentencepiece_prefix_is_not_part_of_the_word(sp_tok):
    alone = sp_tok("感謝", add_special_tokens=False)["input_ids"]
    assert sp_tok.convert_ids_to_tokens(alone)[0] == "▁" and len(alone) == 2
    in_text = sp_tok("母に感謝", add_special_tokens=False)["input_ids"]
    assert measures.word_pieces(sp_tok, "感謝") == [alone[1]] == in_text[-1:]
    got = measures.word_token_ids(sp_tok, {"gratitude": ("感謝",), "anger": ("怒り",)})
    assert got.ids == {
        "gratitude": (alone[1],),
        "anger": tuple(measures.word_pieces(sp_tok, "怒り")),
    }
    assert got.dropped == {"gratitude": (), "anger": ()}


def test_a_word_of_several_pieces_is_still_dropped(sp_tok):
    """Only the lone prefix is ignored: a word spelt in two real pieces stays two and is
    dropped (and reported)."""
    assert len(measures.word_pieces(sp_tok, "感謝怒り")) == 2
    got = measures.word_token_ids(sp_tok, {"gratitude": ("感謝", "感謝怒り")})
    assert got.dropped == {"gratitude": ("感謝怒り",)}


def test_byte_level_bpe_words_are_unchanged():
    """Including a lone leading space: " thank" where only "thank" (line-initial) is a token is
    two tokens, "Ġ" + "thank", and stays so (the model predicts the space first)."""
    lines = ["thank you so much", "I am angry now", "sorry about that", "thank me later"] * 20
    tok = bpe.train_tokenizer(lines, 300)
    split = tok(" thank", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(split) == ["Ġ", "thank"]
    for w in (" thank", " angry", " sorry", "thank"):
        assert measures.word_pieces(tok, w) == tok(w, add_special_tokens=False)["input_ids"]
    got = measures.word_token_ids(tok, {"gratitude": (" thank", "thank")})
    assert got.dropped == {"gratitude": (" thank",)}
