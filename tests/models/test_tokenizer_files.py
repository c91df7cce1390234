"""tokenizer.json checkpoints (open-calm's layout: tokenizer.json + tokenizer_config.json naming
GPTNeoXTokenizer) tokenise as the file says. transformers 5 rebuilds GPTNeoXTokenizer from the
vocabulary and merges with its own normaliser and pre-tokenizer; models.load keeps that class when
it agrees with the file and builds from the file when it does not."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, trainers
from tokenizers import models as tok_models

import models
from models import hf_reference as ref

TEXTS = ["ありがとうございます。本当に助かりました。", "今日は晴れです。 Hello world 123"]
PROBE = "ＡＢＣです、ありがとうございます。 Hello"
SPECIAL = ["<|endoftext|>", "<|padding|>"]  # ids 0 and 1, as open-calm's


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _trained(byte_level: bool) -> Tokenizer:
    """A BPE with GPT-NeoX's pipeline (NFC, byte-level), or a sentencepiece-like one (NFKC,
    `▁` for spaces) that GPTNeoXTokenizer's rebuild would not reproduce."""
    tok = Tokenizer(tok_models.BPE())
    if byte_level:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        alphabet = list(set("".join(TEXTS + [PROBE])))
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(TEXTS * 20, trainer=trainer)
    return tok


def _folder(tmp_path, tok: Tokenizer, name: str):
    folder = tmp_path / name
    hf_cfg = {**models.published_hf_config("open-calm-small"), "vocab_size": 512}
    hf_cfg = {**hf_cfg, "num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4}
    hf_cfg["intermediate_size"] = 256
    ref.hf_model(hf_cfg, seed=1).save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    settings = {
        "tokenizer_class": "GPTNeoXTokenizer",
        "add_prefix_space": False,
        "bos_token": SPECIAL[0],
        "eos_token": SPECIAL[0],
        "unk_token": SPECIAL[0],
        "pad_token": SPECIAL[1],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.parametrize("byte_level", [True, False])
def test_ids_are_the_files_own(tmp_path, byte_level):
    tok = _trained(byte_level)
    model = models.load(str(_folder(tmp_path, tok, f"calm-{byte_level}")))
    for text in TEXTS + [PROBE]:
        toks = model.tokenize([text], prepend_bos=False)
        assert toks.ids[0, : toks.lengths[0]].tolist() == tok.encode(text).ids
    assert (model.tokenizer.bos_token_id, model.tokenizer.pad_token_id) == (0, 1)
    with_bos = model.tokenize([PROBE], prepend_bos=True)
    assert with_bos.ids[0, 0] == 0 and with_bos.lengths[0] == len(tok.encode(PROBE).ids) + 1
    # transformers' own class is kept when it tokenises as the file does (open-calm's case).
    assert (type(model.tokenizer).__name__ == "GPTNeoXTokenizer") is byte_level


def test_the_rebuild_differs_where_it_is_replaced(tmp_path):
    """The structure the check exists for: transformers' class alone gives other ids."""
    from transformers import AutoTokenizer

    tok = _trained(byte_level=False)
    folder = _folder(tmp_path, tok, "calm-metaspace")
    rebuilt = AutoTokenizer.from_pretrained(str(folder))
    assert rebuilt(PROBE, add_special_tokens=False)["input_ids"] != tok.encode(PROBE).ids
