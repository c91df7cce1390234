"""The emotion prompt dataset: record schema, builders, JSONL I/O and statistics (phase 1's data;
the phase runner that writes it into a run is jaxcirc.phases.dataset).

A dataset file is JSONL, one record per line:

    {"id": "baseline-gratitude-000", "set": "baseline", "emotion": "gratitude",
     "text": "Thank you for the lovely dinner.", "spans": [[0, 9]]}

| field      | type                | rule                                                        |
|------------|---------------------|-------------------------------------------------------------|
| `id`       | str                 | non-empty, unique in the file                               |
| `set`      | str                 | one of `SETS`: "baseline", "extended", "realworld"          |
| `emotion`  | str                 | one of `EMOTIONS`: gratitude, anger, apology, neutral       |
| `text`     | str                 | non-empty, no leading/trailing whitespace; unique in the    |
|            |                     | file after case folding and whitespace collapsing           |
| `spans`    | [[start, end], ...] | character offsets into `text`, end exclusive; at least one; |
|            |                     | sorted, non-overlapping, non-empty, inside the text, not    |
|            |                     | starting or ending on whitespace                            |
| `register` | str, optional       | required on "realworld" records and only there: one of      |
|            |                     | `REGISTERS` ("social", "review", "mail")                    |
| `language` | str, optional       | one of `LANGUAGES` ("en", "ja"); absent means "en". A file  |
|            |                     | holds one language                                          |
| `en_id`    | str, optional       | non-English records only: the id of the English prompt this |
|            |                     | one renders (same emotion), e.g. "baseline-neutral-012"     |

What a span means depends on the emotion:

- gratitude / anger / apology: the emotion-bearing words ("Thank you", "furious", "sorry"), so a
  token-based vector can find the tokens that carry the emotion after any tokenizer (map the
  character span through the tokenizer's offsets).
- neutral: a *form-matched anchor*, NOT an emotion word: the content word at the place where the
  emotional texts of the same sentence frame carry theirs ("We are [meeting] about the rent." beside
  "We are [angry] about the rent."). It gives token-level analyses a comparable position in neutral
  text; it says nothing about emotion.

Character offsets are Python `str` indices (code points), which is what tokenizers' offset
mappings use for `str` input.

Japanese (`language` "ja", texts in `jaxcirc.data.prompts_ja`, ids "ja-<set>-<emotion>-<nnn>"):
the same schema and rules; spans cover the morphemes of an emotion keyword, and `en_id` pairs a
text with its English counterpart so the two languages can be compared prompt for prompt
(`read_jsonl(..., en_ids=english_ids())` checks every pointer resolves).

The balanced sets ("baseline", "extended") have exactly the same number of records per emotion;
`read_jsonl` refuses an unbalanced file unless told not to expect balance (the 35 real-world
texts are only roughly balanced, see `jaxcirc.data.prompts.REALWORLD`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from jaxcirc.data import prompts, prompts_ja
from jaxcirc.data.emotions import (
    EMOTIONS,  # noqa: F401 - the record schema's classes
    LANGUAGES,
)
from jaxcirc.infra import artifacts

SETS: tuple[str, ...] = ("baseline", "extended", "realworld")
BALANCED_SETS: tuple[str, ...] = ("baseline", "extended")
REGISTERS: tuple[str, ...] = ("social", "review", "mail")

STUDY_STATS: dict[str, dict[str, float | int | None]] = {
    # What the study reports (Phase 1 and, for realworld, Phase 4-5); None = not reported.
    "baseline": {"total": 280, "per_emotion": 70, "mean_chars": 27.7},
    "extended": {"total": 400, "per_emotion": 100, "mean_chars": 33.0},
    "realworld": {"total": 35, "per_emotion": None, "mean_chars": None},
}

STUDY_STATS_JA: dict[str, dict[str, float | int | None]] = {
    # The study's design sizes for the Japanese sets; it has no Japanese set, so no mean length.
    name: {**figures, "mean_chars": None}
    for name, figures in STUDY_STATS.items()
}


def study_stats(language: str = "en") -> dict[str, dict[str, float | int | None]]:
    """The study's figures to print beside ours for `language` (STUDY_STATS or STUDY_STATS_JA)."""
    if language not in LANGUAGES:
        raise DatasetError(f"unknown language {language!r}; use one of {', '.join(LANGUAGES)}")
    return STUDY_STATS if language == "en" else STUDY_STATS_JA


_FIELDS_REQUIRED = ("id", "set", "emotion", "text", "spans")
_FIELDS_OPTIONAL = ("register", "language", "en_id")


class DatasetError(ValueError):
    """A record or dataset file breaks the schema. Message: "<where>: <reason>; <how to fix>"."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One prompt. Validated on construction (raises DatasetError "<reason>; <how to fix>").

    spans: tuple of (start, end) character offsets into `text`, end exclusive. For emotional
    records they cover emotion words; for neutral records form-matched anchor words (see the
    module docstring).
    """

    id: str
    set: str
    emotion: str
    text: str
    spans: tuple[tuple[int, int], ...]
    register: str | None = None
    language: str = "en"
    en_id: str | None = None

    def __post_init__(self):
        # Accept lists (as read from JSON) but store tuples, so records hash and compare.
        try:
            spans = tuple(tuple(s) for s in self.spans)
        except TypeError:
            raise DatasetError(
                f"spans must be a list of [start, end] pairs, got {self.spans!r}; "
                "write spans as [[start, end], ...]"
            ) from None
        object.__setattr__(self, "spans", spans)
        _check_record(self)

    def span_texts(self) -> tuple[str, ...]:
        """The spanned substrings, in order."""
        return tuple(self.text[s:e] for s, e in self.spans)

    def to_json(self) -> dict:
        """The record as a JSON-ready dict (`register` only when set)."""
        out = {
            "id": self.id,
            "set": self.set,
            "emotion": self.emotion,
            "text": self.text,
            "spans": [list(s) for s in self.spans],
        }
        if self.register is not None:
            out["register"] = self.register
        if self.language != "en":  # absent means English: English files read as before
            out["language"] = self.language
        if self.en_id is not None:
            out["en_id"] = self.en_id
        return out


def _check_record(r: Record) -> None:
    if not isinstance(r.id, str) or not r.id.strip():
        raise DatasetError(f"id must be a non-empty string, got {r.id!r}; give the record an id")
    if r.set not in SETS:
        raise DatasetError(f"unknown set {r.set!r}; use one of {', '.join(SETS)}")
    if r.emotion not in EMOTIONS:
        raise DatasetError(f"unknown emotion {r.emotion!r}; use one of {', '.join(EMOTIONS)}")
    if not isinstance(r.text, str) or not r.text.strip():
        raise DatasetError(f"text must be a non-empty string, got {r.text!r}; write the prompt")
    if r.text != r.text.strip():
        raise DatasetError(f"text {r.text!r} has leading/trailing whitespace; strip it")
    _check_language(r)
    if r.set == "realworld":
        if r.register not in REGISTERS:
            raise DatasetError(
                f"realworld record needs a register, got {r.register!r}; "
                f"set register to one of {', '.join(REGISTERS)}"
            )
    elif r.register is not None:
        raise DatasetError(
            f"register {r.register!r} on a {r.set!r} record; registers belong to realworld "
            "records only, remove the field"
        )
    if not r.spans:
        raise DatasetError(
            "spans is empty; mark at least one span (the emotion word, or for neutral the "
            "form-matched anchor word)"
        )
    prev_end = 0
    for span in r.spans:
        if len(span) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in span):
            raise DatasetError(f"span {list(span)!r} is not a pair of ints; write [start, end]")
        s, e = span
        if not 0 <= s < e <= len(r.text):
            raise DatasetError(
                f"span [{s}, {e}] is empty or outside the text (length {len(r.text)}); "
                "spans are [start, end) character offsets with 0 <= start < end <= len(text)"
            )
        if s < prev_end:
            raise DatasetError(
                f"span [{s}, {e}] overlaps or precedes the previous span; sort spans by start "
                "and merge overlapping ones"
            )
        piece = r.text[s:e]
        if piece != piece.strip():
            raise DatasetError(
                f"span [{s}, {e}] = {piece!r} starts or ends on whitespace; trim it to the word"
            )
        prev_end = e


def _check_language(r: Record) -> None:
    if r.language not in LANGUAGES:
        raise DatasetError(f"unknown language {r.language!r}; use one of {', '.join(LANGUAGES)}")
    if r.en_id is None:
        return
    if r.language == "en":
        raise DatasetError(
            f"en_id {r.en_id!r} on an English record; en_id points from another language's "
            "record to its English counterpart, remove it"
        )
    if not isinstance(r.en_id, str) or not r.en_id.strip():
        raise DatasetError(
            f"en_id must be a non-empty string, got {r.en_id!r}; name the English prompt's id "
            "or drop the field"
        )


def normalize_text(text: str) -> str:
    """Key for duplicate detection: case-folded, whitespace runs collapsed to one space."""
    return " ".join(text.casefold().split())


def parse_marked(marked: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Strip span brackets: '[Thank you] for the help.' -> ('Thank you for the help.', ((0, 9),)).

    Raises DatasetError for unbalanced or nested brackets, or an empty "[]".
    """
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    start = None
    for ch in marked:
        if ch == "[":
            if start is not None:
                raise DatasetError(f"nested '[' in {marked!r}; close each span before the next")
            start = len(out)
        elif ch == "]":
            if start is None or start == len(out):
                raise DatasetError(f"stray or empty ']' in {marked!r}; mark spans as [words]")
            spans.append((start, len(out)))
            start = None
        else:
            out.append(ch)
    if start is not None:
        raise DatasetError(f"unclosed '[' in {marked!r}; close the span with ']'")
    return "".join(out), tuple(spans)


def check_unique(records: Sequence[Record], where: str = "records") -> None:
    """Raise DatasetError naming the first duplicate id or (normalised) text."""
    ids: dict[str, int] = {}
    texts: dict[str, int] = {}
    for i, r in enumerate(records):
        if r.id in ids:
            raise DatasetError(
                f"{where}: duplicate id {r.id!r} (records {ids[r.id]} and {i}); "
                "give every record a unique id"
            )
        key = normalize_text(r.text)
        if key in texts:
            raise DatasetError(
                f"{where}: duplicate text {r.text!r} (records {texts[key]} and {i}, after case "
                "and whitespace normalisation); remove or reword one of them"
            )
        ids[r.id] = i
        texts[key] = i


def class_counts(records: Iterable[Record]) -> dict[str, int]:
    """Records per emotion, every emotion present (0 where none), in `EMOTIONS` order."""
    counts = dict.fromkeys(EMOTIONS, 0)
    for r in records:
        counts[r.emotion] += 1
    return counts


def check_balance(records: Sequence[Record], where: str = "records") -> None:
    """Raise DatasetError unless every emotion has the same, non-zero number of records."""
    counts = class_counts(records)
    if len(set(counts.values())) != 1 or not records:
        shown = ", ".join(f"{e}={n}" for e, n in counts.items())
        raise DatasetError(
            f"{where}: unbalanced classes ({shown}); every emotion needs the same number of "
            "records (or read with expect_balanced=False for an unbalanced set such as realworld)"
        )


def build(set_name: str, language: str = "en") -> list[Record]:
    """The records of one set ("baseline", "extended" or "realworld") in `language` ("en": from
    `jaxcirc.data.prompts`; "ja": from `jaxcirc.data.prompts_ja`).

    Ordered by emotion (`EMOTIONS` order), then as written; ids are "<set>-<emotion>-<nnn>", with
    "<language>-" in front for a language other than English. Japanese records carry `en_id`, the
    id of the English prompt they render, where they have one. Checks what the texts promise:
    spans of emotional records are entries of the language's span lexicon, neutral spans are
    not, every `en_id` names an English prompt of the same emotion, no duplicates, balanced sets
    are balanced.
    """
    if set_name not in SETS:
        raise DatasetError(f"unknown set {set_name!r}; use one of {', '.join(SETS)}")
    if language not in LANGUAGES:
        raise DatasetError(f"unknown language {language!r}; use one of {', '.join(LANGUAGES)}")
    prefix = "" if language == "en" else f"{language}-"
    en_ids = english_ids() if language != "en" else {}
    records = []
    seen = dict.fromkeys(EMOTIONS, 0)
    items = _marked_items(set_name, language)
    for emo, reg, en, marked in sorted(items, key=lambda it: EMOTIONS.index(it[0])):
        text, spans = parse_marked(marked)
        rec = Record(
            id=f"{prefix}{set_name}-{emo}-{seen[emo]:03d}",
            set=set_name,
            emotion=emo,
            text=text,
            spans=spans,
            register=reg,
            language=language,
            en_id=None if en is None else f"{set_name}-{emo}-{en:03d}",
        )
        seen[emo] += 1
        _check_lexicon(rec)
        try:
            check_pair(rec, en_ids)
        except DatasetError as e:
            raise DatasetError(f"{rec.id}: {e}") from None
        records.append(rec)
    check_unique(records, where=f"set {set_name!r} ({language})")
    if set_name in BALANCED_SETS:
        check_balance(records, where=f"set {set_name!r} ({language})")
    return records


def _marked_items(set_name: str, language: str) -> list[tuple[str, str | None, int | None, str]]:
    """(emotion, register, English index or None, marked text) of one shipped set."""
    if language == "en":
        if set_name == "realworld":
            return [(emo, reg, None, marked) for reg, emo, marked in prompts.REALWORLD]
        return [(e, None, None, m) for e in EMOTIONS for m in prompts.PROMPTS[set_name][e]]
    if set_name == "realworld":
        return [(emo, reg, en, marked) for reg, emo, en, marked in prompts_ja.REALWORLD_JA]
    return [(e, None, en, m) for e in EMOTIONS for en, m in prompts_ja.PROMPTS_JA[set_name][e]]


@functools.cache
def _english_ids() -> tuple[tuple[str, str], ...]:
    return tuple((r.id, r.emotion) for s in SETS for r in build(s, "en"))


def english_ids() -> dict[str, str]:
    """{id: emotion} of every shipped English record (all three sets): what an `en_id` may name."""
    return dict(_english_ids())


def check_pair(rec: Record, en_ids: Mapping[str, str]) -> None:
    """Raise DatasetError unless rec.en_id (if any) is a key of `en_ids` ({English id: emotion})
    whose emotion is rec's."""
    if rec.en_id is None:
        return
    if rec.en_id not in en_ids:
        raise DatasetError(
            f"en_id {rec.en_id!r} names no English prompt; use the id of an English record "
            "(e.g. 'baseline-neutral-012') or drop the field"
        )
    if en_ids[rec.en_id] != rec.emotion:
        raise DatasetError(
            f"en_id {rec.en_id!r} names an English {en_ids[rec.en_id]!r} prompt but this record "
            f"is {rec.emotion!r}; pair prompts of the same emotion"
        )


def _check_lexicon(rec: Record) -> None:
    lexicon = prompts.SPAN_LEXICON if rec.language == "en" else prompts_ja.SPAN_LEXICON_JA
    all_words = {w for ws in lexicon.values() for w in ws}
    name = "SPAN_LEXICON" if rec.language == "en" else "SPAN_LEXICON_JA"
    for piece in rec.span_texts():
        word = piece.casefold()
        if rec.emotion == "neutral":
            if word in all_words:
                raise DatasetError(
                    f"{rec.id}: neutral anchor {piece!r} is an emotion word; pick a neutral "
                    "content word"
                )
        elif word not in lexicon[rec.emotion]:
            raise DatasetError(
                f"{rec.id}: span {piece!r} is not in {name}[{rec.emotion!r}]; add it "
                "there or mark the emotion word"
            )


def write_jsonl(records: Sequence[Record], path: str | os.PathLike) -> None:
    """Write records as JSONL, atomically (temp file in the same directory, then os.replace).

    Refuses duplicate ids or texts (DatasetError) before writing anything.
    """
    check_unique(records, where=str(path))
    text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
    artifacts.atomic_write_bytes(path, text.encode("utf-8"))


def read_jsonl(
    path: str | os.PathLike,
    expect_balanced: bool = True,
    language: str | None = None,
    en_ids: Mapping[str, str] | None = None,
) -> list[Record]:
    """Read and validate a dataset file.

    Blank lines are skipped (line numbers still count them). Raises DatasetError
    "<path>:<line>: <reason>; <how to fix>" for malformed JSON, a non-object line, missing or
    unknown fields, wrong types, an unknown set/emotion/register/language, a bad span, a duplicate
    id or text, a record in another language than `language` (None: than the file's first
    record), an `en_id` that `en_ids` ({English id: emotion}, e.g. `english_ids()`; None: not
    checked) does not hold with the same emotion; and "<path>: unbalanced classes (...)" when
    `expect_balanced` and the per-emotion counts differ.
    """
    path = Path(path)
    if language is not None and language not in LANGUAGES:
        raise DatasetError(f"unknown language {language!r}; use one of {', '.join(LANGUAGES)}")
    try:
        # split("\n"), not splitlines(): JSON strings may hold U+2028 and friends, which
        # splitlines() would treat as line ends and so shift every reported line number.
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file; check the path") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
    records: list[Record] = []
    seen = _Seen()
    for lineno, line in enumerate(lines, start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            rec = _record_from_line(line)
            seen.check(rec, language or (records[0].language if records else None), language)
            if en_ids is not None:
                check_pair(rec, en_ids)
        except DatasetError as e:
            raise DatasetError(f"{path}:{lineno}: {e}") from None
        seen.add(rec, lineno)
        records.append(rec)
    if not records:
        raise DatasetError(f"{path}: no records; write one JSON object per line")
    if expect_balanced:
        check_balance(records, where=str(path))
    return records


class _Seen:
    """Ids and normalised texts read so far, with their line numbers (for read_jsonl)."""

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.texts: dict[str, int] = {}

    def check(self, rec: Record, language: str | None, asked: str | None) -> None:
        if rec.id in self.ids:
            raise DatasetError(
                f"duplicate id {rec.id!r} (first on line {self.ids[rec.id]}); "
                "give every record a unique id"
            )
        key = normalize_text(rec.text)
        if key in self.texts:
            raise DatasetError(
                f"duplicate text {rec.text!r} (same as line {self.texts[key]} after case "
                "and whitespace normalisation); remove or reword one of them"
            )
        if language is not None and rec.language != language:
            why = "the file is read as" if asked else "the file's first record is"
            raise DatasetError(
                f"record language {rec.language!r} but {why} {language!r}; a file holds one "
                'language (an absent "language" field means "en")'
            )

    def add(self, rec: Record, lineno: int) -> None:
        self.ids[rec.id] = lineno
        self.texts[normalize_text(rec.text)] = lineno


def _record_from_line(line: str) -> Record:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"malformed JSON ({e.msg} at column {e.colno}); write one JSON object per line"
        ) from None
    if not isinstance(obj, dict):
        raise DatasetError(
            f"expected a JSON object, got {type(obj).__name__}; write one object per line"
        )
    missing = [k for k in _FIELDS_REQUIRED if k not in obj]
    if missing:
        raise DatasetError(
            f"missing field(s) {', '.join(missing)}; every record needs "
            f"{', '.join(_FIELDS_REQUIRED)}"
        )
    extra = sorted(set(obj) - set(_FIELDS_REQUIRED) - set(_FIELDS_OPTIONAL))
    if extra:
        raise DatasetError(
            f"unknown field(s) {', '.join(extra)}; allowed fields are "
            f"{', '.join(_FIELDS_REQUIRED + _FIELDS_OPTIONAL)}"
        )
    for key in ("id", "set", "emotion", "text"):
        if not isinstance(obj[key], str):
            raise DatasetError(
                f"field {key!r} must be a string, got {type(obj[key]).__name__}; quote it"
            )
    for key in _FIELDS_OPTIONAL:
        if key in obj and not isinstance(obj[key], str):
            raise DatasetError(f"field {key!r} must be a string; quote it or drop the field")
    spans = obj["spans"]
    if not isinstance(spans, list) or not all(isinstance(s, list) for s in spans):
        raise DatasetError(
            f"spans must be a list of [start, end] pairs, got {spans!r}; "
            "write spans as [[start, end], ...]"
        )
    return Record(
        id=obj["id"],
        set=obj["set"],
        emotion=obj["emotion"],
        text=obj["text"],
        spans=spans,
        register=obj.get("register"),
        language=obj.get("language", "en"),
        en_id=obj.get("en_id"),
    )


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else 0.0


def stats(records: Sequence[Record]) -> dict:
    """Summary statistics of a list of records (plain JSON types).

    Keys: total, count {emotion: n}, balanced (all emotions equal and non-zero), mean_chars,
    mean_chars_by_emotion, mean_words, mean_words_by_emotion (words = whitespace-separated
    tokens; by-emotion means are 0.0 for an absent emotion), sets (sorted names present), and
    registers {register: n} when any record has one. When any record is not English, the word
    means are None (Japanese is written without spaces: whitespace-separated tokens count
    nothing) and "language" names the languages present, joined by "+".
    """
    counts = class_counts(records)
    english = all(r.language == "en" for r in records)

    def mean_words(rs: Sequence[Record]) -> float | None:
        return _mean([len(r.text.split()) for r in rs]) if english else None

    out = {
        "total": len(records),
        "count": counts,
        "balanced": bool(records) and len(set(counts.values())) == 1,
        "mean_chars": _mean([len(r.text) for r in records]),
        "mean_chars_by_emotion": {
            e: _mean([len(r.text) for r in records if r.emotion == e]) for e in EMOTIONS
        },
        "mean_words": mean_words(records),
        "mean_words_by_emotion": {
            e: mean_words([r for r in records if r.emotion == e]) for e in EMOTIONS
        },
        "sets": sorted({r.set for r in records}),
    }
    regs = [r.register for r in records if r.register is not None]
    if regs:
        out["registers"] = {g: regs.count(g) for g in REGISTERS if g in regs}
    if not english:
        out["language"] = "+".join(sorted({r.language for r in records}))
    return out
