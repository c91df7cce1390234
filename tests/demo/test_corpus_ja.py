"""Tests for jaxcirc.demo.corpus_ja: the Japanese demo stand-in's training corpus."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from jaxcirc.core import scoring_ja
from jaxcirc.data import dataset, prompts_ja
from jaxcirc.demo import corpus, corpus_ja


@pytest.fixture(scope="module")
def lines() -> list[str]:
    return corpus_ja.build_corpus()


def _emotions(text: str) -> set[str]:
    # Independent of corpus_ja.line_emotions: the measures' own keyword rates.
    return {e for e, v in scoring_ja.emotion_keywords([text]).items() if v[0] > 0}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[。！？])", text) if s]


def test_size_distinct_and_deterministic(lines):
    assert len(lines) == 4000 and len(set(lines)) == 4000
    assert all(isinstance(x, str) and x and x.strip() == x for x in lines)
    assert corpus_ja.build_corpus() == lines  # same arguments, same lines, same order
    other = corpus_ja.build_corpus(seed=1)
    assert len(other) == 4000 and other != lines
    assert len(set(other) & set(lines)) < 2000  # a different draw, not a reshuffle


def test_lines_are_japanese_and_never_mix_emotions(lines):
    assert all(re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", x) for x in lines)
    per_line = [_emotions(x) for x in lines]
    assert all(len(e) <= 1 for e in per_line)
    for e in ("gratitude", "anger", "apology"):
        share = sum(e in s for s in per_line) / len(lines)
        assert 0.15 <= share <= 0.40, (e, share)
    neutral = sum(not s for s in per_line) / len(lines)
    assert 0.15 <= neutral <= 0.40, neutral


def test_many_lines_put_emotion_after_neutral_context(lines):
    after = [
        x
        for x in lines
        if len(s := _sentences(x)) >= 2 and not _emotions(s[0]) and any(_emotions(t) for t in s[1:])
    ]
    assert len(after) / len(lines) >= 0.4, len(after)
    assert any("いつもお世話になっております" in x for x in after)  # business mail register


def test_each_emotion_comes_in_plain_and_polite_registers(lines):
    polite = scoring_ja.politeness(lines) > 0
    for e in ("gratitude", "anger", "apology"):
        mine = np.array([_emotions(x) == {e} for x in lines])
        share = polite[mine].mean()
        assert 0.25 <= share <= 0.85, (e, share)


def test_excludes_every_dataset_text(lines):
    texts = [r.text for s in dataset.SETS for r in dataset.build(s, "ja")]
    joined = "\n".join(lines)
    for t in texts:
        assert t.rstrip("。！？") not in joined, t


def test_filter_catches_embedded_prompt_but_not_near_copy():
    banned = corpus_ja._Banned(["素敵な夕食をありがとう。"])
    assert banned.hits("バスは六時に出た。素敵な夕食をありがとう！")
    # The prompt inside a longer form of itself still counts as the prompt.
    assert banned.hits("素敵な夕食をありがとうございました。")
    assert not banned.hits("バスは六時に出た。素敵な夕食に感謝します。")


def test_covers_all_prompt_vocabulary_and_span_forms(lines):
    vocab = {
        w
        for s in dataset.BALANCED_SETS
        for r in dataset.build(s, "ja")
        for w in corpus_ja.words(r.text)
    }
    assert len(vocab) > 500
    assert corpus_ja.prompt_vocabulary() == vocab
    joined = "\n".join(lines)
    assert not {w for w in vocab if w not in joined}
    for e, forms in prompts_ja.SPAN_LEXICON_JA.items():
        for f in forms:
            assert f in joined, (e, f)  # every span form is seen in context


def test_templates_fill_to_their_class():
    rng = random.Random(0)
    for template in corpus_ja.NEUTRAL_CLAUSES + corpus_ja.REVIEW_FACTS:
        for _ in range(10):
            filled = corpus_ja.fill(template, rng)
            assert "{" not in filled and not _emotions(filled), filled
    for e, templates in corpus_ja.EMOTION_CLAUSES.items():
        for template in templates:
            for _ in range(5):
                filled = corpus_ja.fill(template, rng)
                assert _emotions(filled) == {e}, (template, filled)


def test_small_corpus_without_coverage_and_error_when_too_small():
    small = corpus_ja.build_corpus(n_lines=50, cover_prompts=False)
    assert len(small) == 50 and len(set(small)) == 50
    with pytest.raises(ValueError, match="n_lines=50 is smaller"):
        corpus_ja.build_corpus(n_lines=50)
    with pytest.raises(ValueError, match="n_lines=0"):
        corpus_ja.build_corpus(n_lines=0)


def test_split_is_the_english_corpus_split(lines):
    assert corpus_ja.split_corpus is corpus.split_corpus
    train, held = corpus_ja.split_corpus(lines, 0.1, 0)
    assert len(held) == 400 and not set(train) & set(held)
