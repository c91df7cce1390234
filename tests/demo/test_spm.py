"""jaxcirc.demo.spm: the Japanese stand-ins' sentencepiece tokenizer, trained offline on a list of
texts, deterministic, with jaxcirc.demo.bpe's interface so the stand-in code can use either."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import models
from jaxcirc.demo import bpe, spm
from jaxcirc.demo import standins as dm
from models import hf_reference as ref

SUBJECTS = ["田中さん", "私", "先生", "母", "友だち", "店員さん"]
PREDICATES = [
    "に心から感謝しています。",
    "は本当にありがとうございました。",
    "に申し訳ございませんと言った。",
    "は遅刻してすみませんと謝った。",
    "はとても怒っている。",
    "はふざけるなと叫んだ。",
    "は駅まで歩いた。",
    "は今日の天気を確かめた。",
]
WHEN = ["昨日、", "今朝、", "", "週末に"]


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """192 short Japanese lines (written here; the demo's corpus is jaxcirc.data's)."""
    return [w + s + p for w, s, p in itertools.product(WHEN, SUBJECTS, PREDICATES)]


@pytest.fixture(scope="module")
def tok(lines):
    return spm.train_tokenizer(lines, vocab_size=400)


def test_interface_is_bpes():
    for name in ("train_tokenizer", "fingerprint", "save_tokenizer", "load_tokenizer"):
        assert callable(getattr(spm, name)) and callable(getattr(bpe, name))
    assert spm.EOS_ID == bpe.EOS_ID == 0  # dm.pack and the stand-in configs use this id
    assert (spm.FILENAME, bpe.FILENAME) == ("spiece.model", "tokenizer.json")
    assert isinstance(spm.VERSION, int) and spm.MIN_VOCAB == 259


def test_trained_tokenizer(lines, tok):
    assert len(tok) <= 400
    assert tok.convert_ids_to_tokens([spm.EOS_ID]) == [spm.EOS]
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == spm.EOS_ID
    # Any text encodes without UNK and decodes back: corpus lines, unseen kanji (bytes), Latin.
    for t in [lines[0], "鬱陶しい雨ですね", "Hello, 世界"]:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids and tok.decode(ids) == t
    # Frequent strings became pieces: fewer pieces than characters over the corpus.
    assert sum(len(tok.encode(t)) for t in lines) < 0.9 * sum(len(t) for t in lines)
    encoded = dm.encode_lines(tok, lines[:3])  # what the stand-in trainer calls
    assert encoded == [tok.encode(t) for t in lines[:3]]
    ids, mask = dm.pack(encoded, seq_len=64)
    assert ids[0, 0] == spm.EOS_ID and mask[0, : len(encoded[0]) + 1].all()


def test_deterministic_in_this_and_another_process(lines, tok, tmp_path):
    assert spm.to_bytes(spm.train_tokenizer(lines, vocab_size=400)) == spm.to_bytes(tok)
    assert spm.to_bytes(spm.train_tokenizer(lines, vocab_size=400, seed=1)) == spm.to_bytes(tok)
    (tmp_path / "lines.json").write_text(json.dumps(lines, ensure_ascii=False))
    code = (
        "import json, sys; from jaxcirc.demo import spm;"
        "lines = json.load(open(sys.argv[1], encoding='utf-8'));"
        "sys.stdout.write(spm.train_model(lines, 400).hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "lines.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert bytes.fromhex(out.stdout) == spm.to_bytes(tok)
    other = spm.train_tokenizer(lines[:100], vocab_size=400)
    assert spm.fingerprint(other) != spm.fingerprint(tok)


def test_save_load_and_models_load(lines, tok, tmp_path):
    path = spm.save_tokenizer(tok, tmp_path / "standin" / spm.FILENAME)
    back = spm.load_tokenizer(path)
    assert spm.fingerprint(back) == spm.fingerprint(tok)
    # Read back from the stand-ins' cache, it is recorded as trained: a run that loads the
    # cached tokenizer writes the same extraction metadata as the run that trained it.
    assert back.record() == tok.record()
    assert back(lines[5])["input_ids"] == tok(lines[5])["input_ids"]
    # A stand-in folder (config.json + weights beside the saved tokenizer) loads through
    # models.load with the same ids and special tokens.
    hf_cfg = models.tiny_hf_config("gpt2", vocab_size=len(tok), bos_token_id=0, eos_token_id=0)
    ref.hf_model(hf_cfg, seed=2).save_pretrained(path.parent)
    model = models.load(str(path.parent))
    toks = model.tokenize([lines[5]], prepend_bos=True)
    np.testing.assert_array_equal(toks.ids[0, : toks.lengths[0]], [0] + tok.encode(lines[5]))
    assert model.tokenizer.fingerprint() == tok.fingerprint()


def test_bad_input(lines, tmp_path):
    with pytest.raises(ValueError, match="vocab_size=100 is below 259"):
        spm.train_tokenizer(lines, vocab_size=100)
    with pytest.raises(ValueError, match="distinct characters"):
        spm.train_tokenizer([chr(0x4E00 + i) * 3 for i in range(400)], vocab_size=300)
    with pytest.raises(ValueError, match="non-empty list"):
        spm.train_tokenizer("一行だけ")
    with pytest.raises(ValueError, match="no tokenizer"):
        spm.load_tokenizer(tmp_path / "missing.model")
