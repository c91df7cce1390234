"""Tests for jaxcirc.core.scoring and the word lists in jaxcirc.data.lexicon."""

import numpy as np
import pytest

from jaxcirc.core import scoring
from jaxcirc.data import lexicon


def test_sentiment_signs_and_range():
    texts = [
        "Thank you so much, this is wonderful and I love it!",
        "This is terrible, I hate it and I am furious.",
        "The meeting is at 3pm in room 4.",
    ]
    s = scoring.sentiment(texts)
    assert s.shape == (3,) and s.dtype == np.float64
    assert s[0] > 0.5
    assert s[1] < -0.5
    assert abs(s[2]) < 0.1
    assert np.all(np.abs(s) <= 1.0)


def test_empty_and_whitespace_score_zero_everywhere():
    scores = scoring.score_texts(["", "   \n", "please"])
    assert set(scores) == {"sentiment", "politeness", "kw_gratitude", "kw_anger", "kw_apology"}
    for key, v in scores.items():
        assert v.shape == (3,), key
        np.testing.assert_array_equal(v[:2], 0.0, err_msg=key)
    assert scoring.score_texts([])["sentiment"].shape == (0,)


def test_politeness_is_rate_per_ten_words():
    # 10 words, markers: "please", "could you" -> 2 hits per 10 words.
    text = "Could you please send the report to me by Friday"
    assert len(text.split()) == 10
    np.testing.assert_allclose(scoring.politeness([text]), [2.0], rtol=0, atol=1e-12)
    # Same hits in twice the words halves the rate.
    longer = text + " and also the slides from the last team meeting today"
    assert len(longer.split()) == 20
    np.testing.assert_allclose(scoring.politeness([longer]), [1.0], rtol=0, atol=1e-12)


def test_politeness_word_boundaries_case_and_longest_match():
    # "Pleasent" / "mighty" / "thanksgiving" must not count; "PLEASE" must.
    assert scoring.politeness(["pleasant mighty thanksgiving dinner"])[0] == 0.0
    np.testing.assert_allclose(scoring.politeness(["PLEASE"]), [10.0])
    # "would you mind" counts once (not also as "would you"); 4 words -> 10 * 1 / 4.
    np.testing.assert_allclose(scoring.politeness(["Would you mind helping"]), [2.5])
    # Hedges count: "perhaps", "I think" in 5 words.
    np.testing.assert_allclose(scoring.politeness(["Perhaps I think it works"]), [4.0])
    # Phrase with a line break between its words, and a curly apostrophe.
    np.testing.assert_allclose(scoring.politeness(["if you don\u2019t\nmind"]), [10.0 / 4])


def test_emotion_keywords_stem_matching_per_emotion():
    texts = [
        "Thanks, I really appreciated it and I am grateful",  # 9 words, 3 gratitude
        "I am angry; this is outrageous and unacceptable",  # 8 words, 3 anger
        "Sorry, we apologise for the delay",  # 6 words, 2 apology
        "He made a mad dash to the annex",  # nothing ("made", "mad" not keywords)
    ]
    kw = scoring.emotion_keywords(texts)
    assert set(kw) == set(lexicon.EMOTIONS)
    np.testing.assert_allclose(kw["gratitude"], [30 / 9, 0, 0, 0], atol=1e-12)
    np.testing.assert_allclose(kw["anger"], [0, 30 / 8, 0, 0], atol=1e-12)
    np.testing.assert_allclose(kw["apology"], [0, 0, 20 / 6, 0], atol=1e-12)
    # score_texts exposes the same numbers under kw_<emotion>.
    s = scoring.score_texts(texts)
    for e in lexicon.EMOTIONS:
        np.testing.assert_array_equal(s[f"kw_{e}"], kw[e])


def test_stem_must_start_a_word():
    # "unthankful" contains "thank" but does not start with it; "reapologize" likewise.
    kw = scoring.emotion_keywords(["unthankful reapologize"])
    assert kw["gratitude"][0] == 0.0 and kw["apology"][0] == 0.0


def test_bad_input_raises_one_line_value_error():
    with pytest.raises(ValueError, match="single str"):
        scoring.score_texts("just one string")
    with pytest.raises(ValueError, match=r"texts\[1\] is int"):
        scoring.politeness(["ok", 3])


def test_lexicon_is_lowercase_and_logit_words_have_leading_space():
    for e, stems in lexicon.EMOTION_KEYWORDS.items():
        assert stems, e
        for s in stems:
            assert s == s.lower() and " " not in s, s
    for p in lexicon.POLITENESS_MARKERS + lexicon.HEDGES:
        assert p == p.lower() and p == p.strip(), p
    assert set(lexicon.EMOTION_LOGIT_WORDS) == set(lexicon.EMOTIONS)
    for e, words in lexicon.EMOTION_LOGIT_WORDS.items():
        for w in words:
            assert w.startswith(" ") and w[1:].isalpha() and w[1:] == w[1:].lower(), (e, w)
        # The logit words of an emotion are also its keywords, so both measures agree in kind.
        kw = scoring.emotion_keywords(["".join(words)])
        assert kw[e][0] == 10.0, (e, kw)
