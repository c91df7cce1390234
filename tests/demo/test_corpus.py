"""Tests for jaxcirc.demo.corpus: the demo models' training corpus."""

from __future__ import annotations

import random
import re

import pytest

from jaxcirc.data import dataset, lexicon, prompts
from jaxcirc.demo import corpus


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return corpus.build_corpus()


def _norm(text: str) -> str:
    # Independent of corpus.words: letters/digits/apostrophes, case-folded, space-padded.
    return " " + " ".join(re.findall(r"[a-z0-9']+", text.casefold())) + " "


def _emotions(text: str) -> set[str]:
    t = _norm(text)
    return {e for e, ws in corpus.CORPUS_EMOTION_WORDS.items() if any(f" {w} " in t for w in ws)}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def test_size_distinct_and_deterministic(lines):
    assert len(lines) == 4000
    assert len({x.casefold() for x in lines}) == 4000
    assert all(isinstance(x, str) and x.strip() == x and x for x in lines)
    assert corpus.build_corpus() == lines  # same arguments, same lines, same order
    other = corpus.build_corpus(seed=1)
    assert len(other) == 4000 and other != lines
    assert len(set(other) & set(lines)) < 2000  # a different draw, not a reshuffle


def test_many_lines_put_emotion_after_neutral_context(lines):
    after = [
        x
        for x in lines
        if len(s := _sentences(x)) >= 2 and not _emotions(s[0]) and any(_emotions(t) for t in s[1:])
    ]
    assert len(after) / len(lines) >= 0.4, len(after)
    assert any(x.startswith("Hi ") or x.startswith("Dear ") for x in after)  # mail register


def test_all_classes_covered_and_never_mixed(lines):
    per_line = [_emotions(x) for x in lines]
    assert all(len(e) <= 1 for e in per_line)  # no line mixes two emotions
    for e in corpus.CORPUS_EMOTION_WORDS:
        share = sum(e in s for s in per_line) / len(lines)
        assert 0.15 <= share <= 0.40, (e, share)
    neutral = sum(not s for s in per_line) / len(lines)
    assert 0.15 <= neutral <= 0.40, neutral


def test_excludes_every_dataset_text(lines):
    texts = [r.text for s in dataset.SETS for r in dataset.build(s)]
    joined = "\n".join(x.casefold() for x in lines)
    for t in texts:
        assert t.casefold() not in joined, t
    # Also word by word, punctuation and case ignored: "thank you for the help" inside a line
    # ending in "!" would still be the prompt.
    normed = [_norm(x) for x in lines]
    bodies = [_norm(t) for t in texts]
    for b in bodies:
        assert not any(b in x for x in normed), b


def test_filter_catches_embedded_prompt_but_not_near_copy():
    banned = corpus._Banned(["Thank you for the lovely dinner."])
    assert banned.hits("The bus left at six. THANK YOU for the lovely dinner!!")
    assert not banned.hits("The bus left at six. Many thanks for the lovely dinner.")


def test_covers_all_prompt_vocabulary(lines):
    vocab = {
        w for s in dataset.BALANCED_SETS for r in dataset.build(s) for w in corpus.words(r.text)
    }
    assert len(vocab) > 500
    assert corpus.prompt_vocabulary() == vocab
    have = {w for x in lines for w in corpus.words(x)}
    assert not vocab - have, sorted(vocab - have)[:20]


def test_corpus_words_agree_with_span_and_keyword_lexicons(lines):
    for e, words in prompts.SPAN_LEXICON.items():
        assert set(words) <= set(corpus.CORPUS_EMOTION_WORDS[e]), e
    all_words = [w for ws in corpus.CORPUS_EMOTION_WORDS.values() for w in ws]
    assert len(all_words) == len(set(all_words))  # each word belongs to one emotion
    text = "\n".join(_norm(x) for x in lines)
    for e, words in corpus.CORPUS_EMOTION_WORDS.items():
        for w in words:
            assert f" {w} " in text, (e, w)  # every listed word is used
            if w not in ("my fault", "my mistake"):
                assert any(w.startswith(s) for s in lexicon.EMOTION_KEYWORDS[e]), (e, w)


def test_neutral_templates_carry_no_emotion_keywords():
    rng = random.Random(0)
    stems = [s for ss in lexicon.EMOTION_KEYWORDS.values() for s in ss]
    for template in corpus.NEUTRAL_CLAUSES + corpus.REVIEW_FACTS:
        for _ in range(20):
            filled = corpus._fill(template, rng)
            assert "{" not in filled
            words = re.findall(r"\w+", filled.casefold())
            assert not any(w.startswith(s) for w in words for s in stems), filled
    for e, templates in corpus.EMOTION_CLAUSES.items():
        for template in templates:
            assert _emotions(corpus._fill(template, rng)) == {e}, template


def test_small_corpus_without_coverage_and_error_when_too_small():
    small = corpus.build_corpus(n_lines=50, cover_prompts=False)
    assert len(small) == 50 and len(set(small)) == 50
    with pytest.raises(ValueError, match="n_lines=50 is smaller"):
        corpus.build_corpus(n_lines=50)
    with pytest.raises(ValueError, match="n_lines=0"):
        corpus.build_corpus(n_lines=0)


def test_split_corpus(lines):
    train, held = corpus.split_corpus(lines, held_out_frac=0.1, seed=0)
    assert len(held) == 400 and len(train) == 3600
    assert not set(train) & set(held) and set(train) | set(held) == set(lines)
    # Each part keeps the input order.
    pos = {x: i for i, x in enumerate(lines)}
    assert [pos[x] for x in train] == sorted(pos[x] for x in train)
    assert [pos[x] for x in held] == sorted(pos[x] for x in held)
    assert corpus.split_corpus(lines, 0.1, 0) == (train, held)
    assert corpus.split_corpus(lines, 0.1, 1)[1] != held
    tiny_train, tiny_held = corpus.split_corpus(["a", "b"], 0.01)  # at least one held out
    assert len(tiny_train) == len(tiny_held) == 1
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="held_out_frac"):
            corpus.split_corpus(lines, bad)
    with pytest.raises(ValueError, match="at least 2"):
        corpus.split_corpus(["a"], 0.5)
