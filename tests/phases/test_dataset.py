"""Tests for jaxcirc.data.dataset / jaxcirc.data.prompts (Phase 1) scripts/check_dataset.py and scripts/phase1_dataset.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxcirc.data import dataset, lexicon, prompts
from jaxcirc.data.dataset import EMOTIONS, DatasetError, Record

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built() -> dict[str, list[Record]]:
    return {s: dataset.build(s) for s in dataset.SETS}


def _stem_hits(text: str) -> dict[str, int]:
    """Words starting with a stem of jaxcirc.data.lexicon.EMOTION_KEYWORDS, per emotion."""
    words = re.findall(r"\w+(?:'\w+)*", text.casefold())
    return {
        e: sum(any(w.startswith(s) for s in stems) for w in words)
        for e, stems in lexicon.EMOTION_KEYWORDS.items()
    }


# --------------------------------------------------------------------------- the texts


def test_counts_are_the_studys_and_exactly_balanced(built):
    assert len(built["baseline"]) == 280
    assert len(built["extended"]) == 400
    assert dataset.class_counts(built["baseline"]) == dict.fromkeys(EMOTIONS, 70)
    assert dataset.class_counts(built["extended"]) == dict.fromkeys(EMOTIONS, 100)


def test_realworld_is_35_texts_roughly_balanced_over_emotions_and_registers(built):
    rw = built["realworld"]
    assert len(rw) == 35
    counts = dataset.class_counts(rw)
    assert min(counts.values()) >= 8 and max(counts.values()) <= 9, counts
    regs = {g: sum(r.register == g for r in rw) for g in dataset.REGISTERS}
    assert min(regs.values()) >= 11 and max(regs.values()) <= 12, regs
    for g in dataset.REGISTERS:  # every register holds every emotion
        assert {r.emotion for r in rw if r.register == g} == set(EMOTIONS), g


@pytest.mark.parametrize(("set_name", "target"), [("baseline", 27.7), ("extended", 33.0)])
def test_mean_lengths_match_the_study(built, set_name, target):
    st = dataset.stats(built[set_name])
    # Overall within 1 character of the study's mean; every class within 2.
    assert abs(st["mean_chars"] - target) <= 1.0, st["mean_chars"]
    for e, m in st["mean_chars_by_emotion"].items():
        assert abs(m - target) <= 2.0, (e, m)


@pytest.mark.parametrize("set_name", ["baseline", "extended"])
def test_neutral_length_distribution_matches_each_emotion(built, set_name):
    lengths = {
        e: np.array([len(r.text) for r in built[set_name] if r.emotion == e]) for e in EMOTIONS
    }
    words = {
        e: np.array([len(r.text.split()) for r in built[set_name] if r.emotion == e])
        for e in EMOTIONS
    }
    for e in ("gratitude", "anger", "apology"):
        # Means within 3 characters / 1 word, quartiles within 4 characters.
        assert abs(lengths[e].mean() - lengths["neutral"].mean()) <= 3.0, e
        assert abs(words[e].mean() - words["neutral"].mean()) <= 1.0, e
        q_e = np.percentile(lengths[e], [25, 50, 75])
        q_n = np.percentile(lengths["neutral"], [25, 50, 75])
        np.testing.assert_allclose(q_e, q_n, atol=4.0, err_msg=e)


def test_no_duplicates_within_or_across_sets(built):
    seen: dict[str, str] = {}
    for s, records in built.items():
        for r in records:
            key = " ".join(r.text.casefold().split())
            assert key not in seen, (r.text, seen.get(key), s)
            seen[key] = s
    ids = [r.id for records in built.values() for r in records]
    assert len(ids) == len(set(ids))


def test_texts_are_plain_english_sentences(built):
    for records in built.values():
        for r in records:
            assert r.text.isascii(), r.text
            assert r.text[0].isupper(), r.text
            assert r.text[-1] in ".!?", r.text
            assert "[" not in r.text and "]" not in r.text and "  " not in r.text


def test_spans_are_valid_and_emotional_spans_are_emotion_words(built):
    any_emotion_word = {w for ws in prompts.SPAN_LEXICON.values() for w in ws}
    for records in built.values():
        for r in records:
            assert r.spans, r
            for s, e in r.spans:
                assert 0 <= s < e <= len(r.text), r
            pieces = [p.casefold() for p in r.span_texts()]
            if r.emotion == "neutral":
                assert not set(pieces) & any_emotion_word, r
            else:
                assert set(pieces) <= set(prompts.SPAN_LEXICON[r.emotion]), r
                # Spans sit on word boundaries.
                for s, e in r.spans:
                    assert s == 0 or not r.text[s - 1].isalnum(), r
                    assert e == len(r.text) or not r.text[e].isalnum(), r


def test_texts_agree_with_the_keyword_lexicon(built):
    # Every emotional text scores on its own emotion's keywords and no other; neutral on none.
    for records in built.values():
        for r in records:
            hits = _stem_hits(r.text)
            if r.emotion == "neutral":
                assert sum(hits.values()) == 0, (r.text, hits)
            else:
                assert hits[r.emotion] >= 1, (r.text, hits)
                assert sum(hits.values()) == hits[r.emotion], (r.text, hits)


def test_span_lexicon_entries_are_lexicon_stems():
    for e, words in prompts.SPAN_LEXICON.items():
        for w in words:
            if w in ("my fault", "my mistake"):
                continue  # phrases outside the keyword lexicon; their texts also say "sorry"
            assert any(w.startswith(s) for s in lexicon.EMOTION_KEYWORDS[e]), (e, w)


def test_phrase_spans_come_with_sorry(built):
    for records in built.values():
        for r in records:
            if {p.casefold() for p in r.span_texts()} & {"my fault", "my mistake"}:
                assert "sorry" in r.text.casefold(), r.text


def test_build_rejects_unknown_set():
    with pytest.raises(DatasetError, match="unknown set 'tiny'"):
        dataset.build("tiny")


# --------------------------------------------------------------------------- schema


def test_parse_marked():
    assert dataset.parse_marked("[Thank you] for the [help].") == (
        "Thank you for the help.",
        ((0, 9), (18, 22)),
    )
    for bad in ("[Thanks", "Thanks]", "[[Thanks]]", "[] Thanks"):
        with pytest.raises(DatasetError):
            dataset.parse_marked(bad)


def _rec(**kw) -> Record:
    base = dict(id="x-1", set="baseline", emotion="anger", text="I'm furious.", spans=[[4, 11]])
    base.update(kw)
    return Record(**base)


def test_record_validation():
    r = _rec()
    assert r.spans == ((4, 11),) and r.span_texts() == ("furious",)
    cases = {
        "outside the text": dict(spans=[[4, 40]]),
        "empty or outside": dict(spans=[[4, 4]]),
        "whitespace": dict(spans=[[3, 11]]),
        "overlaps": dict(spans=[[4, 11], [5, 8]]),
        "spans is empty": dict(spans=[]),
        "unknown emotion 'joy'": dict(emotion="joy"),
        "unknown set": dict(set="train"),
        "needs a register": dict(set="realworld"),
        "registers belong": dict(register="social"),
        "leading/trailing whitespace": dict(text=" I'm furious.", spans=[[5, 12]]),
    }
    for msg, kw in cases.items():
        with pytest.raises(DatasetError, match=msg):
            _rec(**kw)
    assert _rec(set="realworld", register="mail").register == "mail"


def test_write_read_roundtrip(tmp_path, built):
    for s, records in built.items():
        path = tmp_path / f"{s}.jsonl"
        dataset.write_jsonl(records, path)
        back = dataset.read_jsonl(path, expect_balanced=s != "realworld")
        assert back == records
    # Atomic write leaves no temp files behind, and overwrites in place.
    dataset.write_jsonl(built["baseline"][:4], tmp_path / "baseline.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "baseline.jsonl",
        "extended.jsonl",
        "realworld.jsonl",
    ]
    assert len((tmp_path / "baseline.jsonl").read_text().splitlines()) == 4


def test_write_refuses_duplicates(tmp_path, built):
    recs = built["baseline"][:2]
    dup = Record(
        id="other",
        set="baseline",
        emotion="gratitude",
        text=recs[0].text.upper(),
        spans=recs[0].spans,
    )
    with pytest.raises(DatasetError, match="duplicate text"):
        dataset.write_jsonl([*recs, dup], tmp_path / "d.jsonl")
    assert not (tmp_path / "d.jsonl").exists()


def _lines(n_per_class: int = 2) -> list[str]:
    """A small valid balanced file's lines (4 emotions x n_per_class)."""
    out = []
    for e in EMOTIONS:
        for i in range(n_per_class):
            text = f"Word{i} {e} text."
            out.append(
                json.dumps(
                    {
                        "id": f"{e}-{i}",
                        "set": "baseline",
                        "emotion": e,
                        "text": text,
                        "spans": [[0, 5]],
                    }
                )
            )
    return out


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_read_small_valid_file(tmp_path):
    recs = dataset.read_jsonl(_write(tmp_path, _lines()))
    assert len(recs) == 8 and dataset.class_counts(recs) == dict.fromkeys(EMOTIONS, 2)


@pytest.mark.parametrize(
    ("lineno", "edit", "reason"),
    [
        (3, lambda obj: json.dumps(obj)[:-1], "malformed JSON"),
        (2, lambda obj: json.dumps({**obj, "emotion": "joy"}), "unknown emotion 'joy'"),
        (4, lambda obj: json.dumps({**obj, "spans": [[0, 99]]}), "span \\[0, 99\\]"),
        (4, lambda obj: json.dumps({**obj, "spans": [[3, 3]]}), "span \\[3, 3\\]"),
        (
            5,
            lambda obj: json.dumps({k: v for k, v in obj.items() if k != "spans"}),
            "missing field\\(s\\) spans",
        ),
        (6, lambda obj: json.dumps({**obj, "score": 1}), "unknown field\\(s\\) score"),
        (7, lambda obj: json.dumps({**obj, "id": "gratitude-0"}), "duplicate id 'gratitude-0'"),
        (
            8,
            lambda obj: json.dumps({**obj, "text": "WORD0  GRATITUDE text."}),
            "duplicate text .* line 1",
        ),
        (2, lambda obj: "[1, 2]", "expected a JSON object"),
        (2, lambda obj: json.dumps({**obj, "spans": "0-5"}), "spans must be a list"),
    ],
)
def test_read_rejects_bad_line_with_its_number(tmp_path, lineno, edit, reason):
    lines = _lines()
    lines[lineno - 1] = edit(json.loads(lines[lineno - 1]))
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}:{lineno}: {reason}") as err:
        dataset.read_jsonl(path)
    msg = str(err.value)
    assert "; " in msg and "\n" not in msg  # "<where>: <reason>; <how to fix>", one line


def test_read_line_numbers_count_blank_lines(tmp_path):
    lines = _lines()
    lines.insert(1, "")
    lines[3] = lines[3][:-1]  # physical line 4
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}:4: malformed JSON"):
        dataset.read_jsonl(path)


def test_read_rejects_unbalanced_file_with_counts_and_no_line(tmp_path):
    lines = _lines()
    del lines[2]  # one anger record fewer
    path = _write(tmp_path, lines)
    with pytest.raises(DatasetError) as err:
        dataset.read_jsonl(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: unbalanced classes")
    assert "gratitude=2, anger=1, apology=2, neutral=2" in msg
    assert not re.match(rf"{re.escape(str(path))}:\d+:", msg)
    assert len(dataset.read_jsonl(path, expect_balanced=False)) == 7


def test_read_missing_and_empty_files(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        dataset.read_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(DatasetError, match="no records"):
        dataset.read_jsonl(_write(tmp_path, [""]))


def test_stats_on_known_records():
    recs = [
        _rec(id="a", text="I'm furious.", spans=[[4, 11]]),  # 12 chars, 2 words
        _rec(id="b", text="So very angry today.", spans=[[8, 13]]),  # 20 chars, 4 words
        _rec(id="c", emotion="neutral", text="Lunch at noon.", spans=[[0, 5]]),  # 14, 3
    ]
    st = dataset.stats(recs)
    assert st["total"] == 3
    assert st["count"] == {"gratitude": 0, "anger": 2, "apology": 0, "neutral": 1}
    assert st["balanced"] is False
    assert st["mean_chars"] == pytest.approx(46 / 3)
    assert st["mean_chars_by_emotion"]["anger"] == pytest.approx(16.0)
    assert st["mean_chars_by_emotion"]["gratitude"] == 0.0
    assert st["mean_words"] == pytest.approx(3.0)
    assert st["mean_words_by_emotion"]["neutral"] == pytest.approx(3.0)
    assert st["sets"] == ["baseline"] and "registers" not in st
    json.dumps(st)  # plain JSON types


# --------------------------------------------------------------------------- CLI


def _cli(*args: str, script: str = "check_dataset.py") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_check_dataset_tabulates_a_file_beside_the_study(tmp_path):
    recs = dataset.build("baseline")
    path = tmp_path / "prompts.jsonl"
    dataset.write_jsonl(recs, path)
    res = _cli(f"--file={path}")
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout and "27.7" in res.stdout  # the study's figure beside ours
    rw = tmp_path / "realworld.jsonl"
    dataset.write_jsonl(dataset.build("realworld"), rw)
    res = _cli(f"--file={rw}")
    assert res.returncode == 0 and "realworld" in res.stdout, res.stderr


def test_phase1_script_writes_the_dataset_phase(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "from configs import demo\n\ndef get_config(arg=''):\n"
        "    c = demo.get_config('smoke')\n    c.phases = ['dataset']\n    return c\n"
    )
    res = _cli(f"--config={cfg}", f"--workdir={tmp_path / 'run'}", script="phase1_dataset.py")
    assert res.returncode == 0, res.stderr
    got = dataset.read_jsonl(tmp_path / "run" / "dataset" / "prompts.jsonl")
    assert len(got) == 280
    assert len(dataset.read_jsonl(tmp_path / "run" / "dataset" / "realworld.jsonl", False)) == 35


def test_cli_exits_2_on_broken_file_and_usage_errors(tmp_path):
    lines = _lines()
    lines[2] = lines[2][:-1]
    bad = _write(tmp_path, lines)
    res = _cli(f"--file={bad}")
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and f"{bad}:3: malformed JSON" in res.stderr
    unbalanced = _write(tmp_path, _lines()[1:])
    res = _cli(f"--file={unbalanced}")
    assert res.returncode == 2 and "unbalanced classes" in res.stderr
    for args in ([], [f"--file={tmp_path / 'missing.jsonl'}"], ["--no_such_flag=1"]):
        res = _cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.strip() and res.stderr.strip().count("\n") == 0, res.stderr
