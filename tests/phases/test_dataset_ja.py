"""Tests for the Japanese emotion set: jaxcirc.data.prompts_ja, the language and en_id fields of
jaxcirc.data.dataset, the dataset phase's language setting and scripts/check_dataset.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import common, demo
from jaxcirc import config_check
from jaxcirc.core import scoring_ja
from jaxcirc.data import dataset, lexicon_ja, prompts_ja
from jaxcirc.data.dataset import EMOTIONS, DatasetError, Record
from jaxcirc.phases import dataset as phase

REPO = Path(__file__).resolve().parents[2]
EMOTIONAL = ("gratitude", "anger", "apology")


@pytest.fixture(scope="module")
def built() -> dict[str, list[Record]]:
    return {s: dataset.build(s, "ja") for s in dataset.SETS}


@pytest.fixture(scope="module")
def english() -> dict[str, Record]:
    return {r.id: r for s in dataset.SETS for r in dataset.build(s)}


def _matches(entries, morphs) -> set[tuple[int, int]]:
    """Character spans of the lexicon entries found in a text."""
    return {(morphs[a].start, morphs[b - 1].end) for a, b in scoring_ja.find(entries, morphs)}


# --------------------------------------------------------------------------- the texts


def test_counts_are_the_studys_design_and_balanced(built):
    assert dataset.class_counts(built["baseline"]) == dict.fromkeys(EMOTIONS, 70)
    assert dataset.class_counts(built["extended"]) == dict.fromkeys(EMOTIONS, 100)
    rw = built["realworld"]
    assert len(rw) == 35
    assert dataset.class_counts(rw) == {"gratitude": 9, "anger": 9, "apology": 8, "neutral": 9}
    regs = {g: sum(r.register == g for r in rw) for g in dataset.REGISTERS}
    assert regs == {"social": 12, "review": 12, "mail": 11}
    for records in built.values():
        assert all(r.language == "ja" and r.id.startswith("ja-") for r in records)


def test_texts_are_japanese_sentences_without_duplicates(built, english):
    seen = set()
    for records in built.values():
        for r in records:
            assert re.search(r"[\u3040-\u30ff\u4e00-\u9fff]", r.text), r.text  # kana or kanji
            assert r.text[-1] in "。！？", r.text
            assert "[" not in r.text and "]" not in r.text, r.text
            key = dataset.normalize_text(r.text)
            assert key not in seen, r.text
            seen.add(key)
    assert not seen & {dataset.normalize_text(r.text) for r in english.values()}


@pytest.mark.parametrize("set_name", ["baseline", "extended"])
def test_neutral_lengths_match_each_emotion(built, set_name):
    lengths = {
        e: np.array([len(r.text) for r in built[set_name] if r.emotion == e]) for e in EMOTIONS
    }
    q_n = np.percentile(lengths["neutral"], [25, 50, 75])
    for e in EMOTIONAL:
        # Japanese texts are about half as long as English ones: means within 2 characters,
        # quartiles within 3 (English: 3 and 4).
        assert abs(lengths[e].mean() - lengths["neutral"].mean()) <= 2.0, e
        np.testing.assert_allclose(np.percentile(lengths[e], [25, 50, 75]), q_n, atol=3.0)
    # Extended texts are longer than baseline ones, as in the study.
    if set_name == "extended":
        base = np.mean([len(r.text) for r in built["baseline"]])
        assert np.mean([len(r.text) for r in built["extended"]]) > base + 2


def test_every_class_mixes_plain_and_polite_registers(built):
    # About half the texts of each class carry a keigo marker, so no class is a register.
    for s in dataset.BALANCED_SETS:
        share = {
            e: np.mean([scoring_ja.politeness([r.text])[0] > 0 for r in built[s] if r.emotion == e])
            for e in EMOTIONS
        }
        for e, v in share.items():
            assert 0.35 <= v <= 0.65, (s, e, share)


def test_emotional_spans_are_exactly_keyword_matches_of_their_emotion(built):
    for records in built.values():
        for r in records:
            morphs = scoring_ja.morphemes(r.text)
            found = {e: _matches(kw, morphs) for e, kw in lexicon_ja.EMOTION_KEYWORDS_JA.items()}
            if r.emotion == "neutral":
                assert not any(found.values()), (r.text, found)  # no emotion word at all
                bounds = {m.start for m in morphs} | {m.end for m in morphs}
                assert all(s in bounds and e in bounds for s, e in r.spans), r.text
                continue
            assert set(r.spans) <= found[r.emotion], (r.text, r.spans, found[r.emotion])
            assert set(r.span_texts()) <= set(prompts_ja.SPAN_LEXICON_JA[r.emotion]), r.text
            others = {e: v for e, v in found.items() if e != r.emotion and v}
            assert not others, (r.text, others)


def test_spans_leave_keigo_outside_the_emotion_words(built):
    # Politeness markers inside a span only where the keyword is itself a polite form
    # (すみません, 許せません: 済む/許す + ます + ず).
    polite_forms = {"すみません", "すいません", "許せません"}
    for records in built.values():
        for r in records:
            if r.emotion == "neutral":
                continue
            marks = _matches(lexicon_ja.POLITENESS_MARKERS_JA, scoring_ja.morphemes(r.text))
            for s, e in r.spans:
                inside = [(a, b) for a, b in marks if s <= a and b <= e]
                assert not inside or r.text[s:e] in polite_forms, (r.text, r.text[s:e])


def test_span_lexicon_entries_are_all_used(built):
    used = {e: set() for e in EMOTIONAL}
    for records in built.values():
        for r in records:
            if r.emotion != "neutral":
                used[r.emotion] |= set(r.span_texts())
    for e in EMOTIONAL:
        assert used[e] == set(prompts_ja.SPAN_LEXICON_JA[e]), e


# --------------------------------------------------------------------------- pairs


def test_pairs_resolve_to_english_prompts_of_the_same_set_and_emotion(built, english):
    for s, records in built.items():
        targets = [r.en_id for r in records if r.en_id is not None]
        assert len(targets) == len(set(targets)), s  # one Japanese text per English prompt
        for r in records:
            if r.en_id is None:
                continue
            en = english[r.en_id]
            assert (en.set, en.emotion) == (r.set, r.emotion), (r.id, r.en_id)


def test_neutral_prompts_are_all_paired(built):
    for s in dataset.SETS:
        neutral = [r for r in built[s] if r.emotion == "neutral"]
        assert all(r.en_id is not None for r in neutral), s
    paired = sum(r.en_id is not None for r in built["baseline"] if r.emotion == "neutral")
    assert paired == 70 >= 50  # the cross-language map is fit on paired neutral prompts
    for s in dataset.BALANCED_SETS:
        for e in EMOTIONAL:
            n = sum(r.en_id is not None for r in built[s] if r.emotion == e)
            assert n >= 0.9 * dataset.class_counts(built[s])[e], (s, e, n)


def test_paired_neutral_prompts_keep_the_english_order(built):
    # ja-baseline-neutral-012 renders baseline-neutral-012: the two sets line up row for row.
    for s in dataset.BALANCED_SETS:
        for r in built[s]:
            if r.emotion == "neutral":
                assert r.en_id == r.id.removeprefix("ja-"), r.id


# --------------------------------------------------------------------------- schema and files


def test_english_records_are_written_as_before(tmp_path):
    rec = dataset.build("baseline")[0]
    assert rec.language == "en" and rec.en_id is None
    assert set(rec.to_json()) == {"id", "set", "emotion", "text", "spans"}


def test_write_read_roundtrip_with_language_and_pairs(tmp_path, built):
    for s, records in built.items():
        path = tmp_path / f"{s}.jsonl"
        dataset.write_jsonl(records, path)
        line = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        assert line["language"] == "ja" and "en_id" in line
        back = dataset.read_jsonl(
            path, expect_balanced=s != "realworld", language="ja", en_ids=dataset.english_ids()
        )
        assert back == records


def _rec(**kw) -> Record:
    base = dict(
        id="x", set="baseline", emotion="anger", text="腹が立つ。", spans=[[0, 4]], language="ja"
    )
    base.update(kw)
    return Record(**base)


def test_record_validation_of_language_and_en_id():
    assert _rec(en_id="baseline-anger-000").en_id == "baseline-anger-000"
    cases = {
        "unknown language 'fr'": dict(language="fr"),
        "en_id 'baseline-anger-000' on an English record": dict(
            language="en", en_id="baseline-anger-000"
        ),
        "en_id must be a non-empty string": dict(en_id=" "),
    }
    for msg, kw in cases.items():
        with pytest.raises(DatasetError, match=msg):
            _rec(**kw)
    en_ids = {"baseline-anger-000": "anger", "baseline-neutral-000": "neutral"}
    dataset.check_pair(_rec(en_id="baseline-anger-000"), en_ids)
    with pytest.raises(DatasetError, match="names no English prompt"):
        dataset.check_pair(_rec(en_id="baseline-anger-999"), en_ids)
    with pytest.raises(DatasetError, match="English 'neutral' prompt but this record is 'anger'"):
        dataset.check_pair(_rec(en_id="baseline-neutral-000"), en_ids)


def _ja_file(tmp_path: Path, edit=None, lineno: int = 0) -> Path:
    """The Japanese baseline set as a file, line `lineno` (1-based) replaced by edit(obj)."""
    lines = [json.dumps(r.to_json(), ensure_ascii=False) for r in dataset.build("baseline", "ja")]
    if edit is not None:
        lines[lineno - 1] = edit(json.loads(lines[lineno - 1]))
    path = tmp_path / "ja.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("lineno", "edit", "language", "reason"),
    [
        (
            5,
            lambda o: json.dumps({**o, "en_id": "baseline-gratitude-999"}),
            None,
            "en_id .* names no",
        ),
        (
            7,
            lambda o: json.dumps({**o, "en_id": "baseline-anger-000"}),
            None,
            "en_id 'baseline-anger-000' names an English 'anger' prompt but this record is 'grat",
        ),
        (
            9,
            lambda o: json.dumps({k: v for k, v in o.items() if k not in ("language", "en_id")}),
            None,
            "record language 'en' but the file's first record is 'ja'",
        ),
        (1, lambda o: json.dumps(o), "en", "record language 'ja' but the file is read as 'en'"),
        (3, lambda o: json.dumps({**o, "language": 3}), None, "field 'language' must be a string"),
    ],
)
def test_read_names_the_line_of_a_broken_record(tmp_path, lineno, edit, language, reason):
    path = _ja_file(tmp_path, edit, lineno)
    with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}:{lineno}: {reason}"):
        dataset.read_jsonl(path, language=language, en_ids=dataset.english_ids())


def test_stats_of_a_japanese_set_count_characters_not_words(built):
    st = dataset.stats(built["baseline"])
    assert st["language"] == "ja" and st["mean_words"] is None
    assert st["mean_words_by_emotion"] == dict.fromkeys(EMOTIONS)
    assert 10 < st["mean_chars"] < 20
    json.dumps(st)
    assert "language" not in dataset.stats(dataset.build("baseline"))  # English as before
    assert dataset.study_stats("ja")["baseline"] == {
        "total": 280,
        "per_emotion": 70,
        "mean_chars": None,
    }


# --------------------------------------------------------------------------- config and CLI


def test_dataset_phase_loads_the_configured_language():
    cfg = common.base_config()
    assert cfg.dataset.language == "en"
    cfg.dataset.language = "ja"
    inputs = phase.load_inputs(cfg.dataset)
    assert len(inputs.prompts) == 280 and len(inputs.realworld) == 35
    assert all(r.language == "ja" for r in inputs.prompts + inputs.realworld)
    study = demo.get_config("smoke")
    study.dataset.language = "fr"
    with pytest.raises(ValueError, match="config.dataset.language='fr': choose one of"):
        config_check.check(study)


def test_dataset_phase_refuses_a_file_in_another_language(tmp_path):
    cfg = common.base_config()
    cfg.dataset.path = str(_ja_file(tmp_path))
    with pytest.raises(DatasetError, match=":1: record language 'ja' but the file is read as 'en'"):
        phase.load_inputs(cfg.dataset)
    cfg.dataset.language = "ja"
    assert len(phase.load_inputs(cfg.dataset).prompts) == 280


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "check_dataset.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_check_dataset_cli_accepts_the_shipped_japanese_files(tmp_path, built):
    for s, records in built.items():
        path = tmp_path / f"{s}.jsonl"
        dataset.write_jsonl(records, path)
        res = _cli(f"--file={path}", "--language=ja")
        assert res.returncode == 0, res.stderr
        assert "OK" in res.stdout and "language: ja" in res.stdout and s in res.stdout
    res = _cli(f"--file={tmp_path / 'baseline.jsonl'}")  # the file's own language
    assert res.returncode == 0, res.stderr
    assert "27.7" not in res.stdout  # no English length figure beside a Japanese set


def test_check_dataset_cli_names_the_line_of_a_broken_japanese_file(tmp_path):
    bad = _ja_file(tmp_path, lambda o: json.dumps({**o, "en_id": "nope"}, ensure_ascii=False), 12)
    res = _cli(f"--file={bad}", "--language=ja")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert f"{bad}:12: en_id 'nope' names no English prompt" in res.stderr
    res = _cli(f"--file={_ja_file(tmp_path)}", "--language=en")
    assert res.returncode == 2 and ":1: record language 'ja'" in res.stderr
    res = _cli(f"--file={_ja_file(tmp_path)}", "--language=fr")
    assert res.returncode == 2 and "unknown language 'fr'" in res.stderr
