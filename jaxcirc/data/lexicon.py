"""Word lists for scoring generated text and for logit-difference measures.

Every list is a module constant, lowercase, chosen by hand for the study's three emotions
(gratitude, anger, apology) and for the "politeness" style the study reports under steering.
They are deliberately short and high-precision: a keyword counter is a crude proxy, so a word that
fires in neutral text (e.g. "mad" inside "made", "kind" in "what kind of") is left out rather than
risk counting it.

Matching rules (implemented in `jaxcirc.core.scoring`):

- `EMOTION_KEYWORDS` entries are *stems*, matched at the start of a word: the entry "apolog"
  counts "apology", "apologies", "apologize", "apologise"; "thank" counts "thanks", "thankful".
  Every stem was checked not to be the prefix of a common unrelated word.
- `POLITENESS_MARKERS` and `HEDGES` entries are whole words or phrases, matched case-insensitively
  on word boundaries, any run of whitespace between the words of a phrase. Variants are listed
  explicitly ("thank", "thanks"), and when several entries overlap the longest wins, so
  "would you mind" counts once, not also as "would you".
- `EMOTION_LOGIT_WORDS` entries are strings with a leading space, as GPT-2's byte-level BPE
  tokenizes a word in mid-sentence. They were picked to be common words that are expected to be a
  single GPT-2 token; that cannot be checked here without a tokenizer, so a logit-difference
  measure must tokenize each entry and drop (and report) any that is not a single token for the
  model at hand (Pythia's and GPT-Neo's vocabularies differ from GPT-2's).
"""

from __future__ import annotations

from jaxcirc.data.emotions import EMOTIONAL as EMOTIONS  # noqa: F401 - the emotions lexica cover

# Stems of words that express the emotion directly (not words about the situation that caused it).
# Sources: the study's keyword metric ("emotion keywords" under steering) and the core entries of
# common emotion lexica for these three categories, narrowed to prefixes that are safe to match.
EMOTION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "gratitude": (
        "thank",  # thank, thanks, thankful, thanking
        "grateful",  # grateful, gratefully
        "gratitude",
        "appreciat",  # appreciate(d), appreciation, appreciative
        "indebted",
    ),
    "anger": (
        "angry",
        "anger",  # anger, angered
        "angrily",
        "furious",
        "fury",
        "outrag",  # outrage, outraged, outrageous
        "unacceptable",
        "ridiculous",
        "infuriat",  # infuriate(d), infuriating
        "enrag",  # enraged, enraging
        "livid",
        "irritat",  # irritated, irritating
        "annoy",  # annoyed, annoying, annoyance
        "frustrat",  # frustrated, frustrating, frustration
        "hate",  # hate, hated, hates, hateful
        "disgust",  # disgusted, disgusting
    ),
    "apology": (
        "sorry",
        "apolog",  # apology, apologies, apologize, apologise, apologetic
        "regret",  # regret, regrets, regretful, regrettable
        "forgive",  # forgive, forgiveness
        "pardon",
        "remorse",  # remorse, remorseful
    ),
}

# Markers of polite requests and courtesy. Source: the request/courtesy strategies of standard
# politeness coding schemes (please, gratitude, apology, indirect "could you" requests, "kindly"),
# restricted to surface forms a word-boundary matcher can find without parsing.
POLITENESS_MARKERS: tuple[str, ...] = (
    "please",
    "thank",
    "thanks",
    "thank you",
    "sorry",
    "excuse me",
    "pardon",
    "kindly",
    "appreciate",
    "appreciated",
    "grateful",
    "would you",
    "could you",
    "would you mind",
    "if you don't mind",
    "if you do not mind",
    "if possible",
    "if you could",
    "i would be grateful",
    "i'd be grateful",
    "would it be possible",
    "at your convenience",
)

# Hedges: words that soften a claim, the other half of "negative politeness". Source: the hedge
# lists used in politeness and academic-writing studies, limited to unambiguous entries ("about",
# "quite", "kind of" and "sort of" are left out: in "what kind of" and the like they are not hedges).
HEDGES: tuple[str, ...] = (
    "perhaps",
    "maybe",
    "might",
    "possibly",
    "probably",
    "apparently",
    "somewhat",
    "slightly",
    "i think",
    "i believe",
    "i guess",
    "i suppose",
    "it seems",
    "seems",
    "seem",
    "in my opinion",
    "if i may",
)

# Single words per emotion for logit-difference measures (logit of the emotion's words minus a
# baseline at the next-token position). A leading space because mid-sentence words carry one in
# GPT-2 BPE; expected to be single GPT-2 tokens, but check per model (see module docstring).
EMOTION_LOGIT_WORDS: dict[str, tuple[str, ...]] = {
    "gratitude": (" thank", " thanks", " grateful", " appreciate"),
    "anger": (" angry", " furious", " hate", " outrageous"),
    "apology": (" sorry", " apologize", " apologies", " regret"),
}
