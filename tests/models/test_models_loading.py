"""models.load: local folders, a fake HF cache (no hub here), shards, .bin, the orbax param cache,
and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

import models
from models import checkpoint, param_cache
from models import hf_reference as ref

TEXTS = ["Thank you so much for the help!", "I am furious about this delay.", "The bus left."]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _tokenizer(vocab_size=300):
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS * 20, vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>"
    )


def _saved(tmp_path, family="gpt2", name="ckpt", **save_kw):
    hf_cfg = models.tiny_hf_config(family)
    hf = ref.hf_model(hf_cfg, seed=11)
    folder = tmp_path / name
    hf.save_pretrained(folder, **save_kw)
    _tokenizer().save_pretrained(folder)
    return hf, folder


def _check_same(hf, loaded):
    ids = np.random.default_rng(0).integers(0, 300, (2, 7)).astype(np.int32)
    ours, _ = loaded.forward(ids)
    theirs, _ = ref.run_hf(hf, ids)
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gpt_neo"])
def test_load_local_folder_safetensors(tmp_path, family):
    hf, folder = _saved(tmp_path, family)
    assert (folder / "model.safetensors").is_file()
    loaded = models.load(str(folder))
    _check_same(hf, loaded)
    toks = loaded.tokenize(TEXTS, prepend_bos=True)
    assert toks.prepend_bos and (toks.ids[:, 0] == loaded.tokenizer.bos_token_id).all()
    plain = loaded.tokenize(TEXTS, prepend_bos=False)
    assert (plain.lengths == toks.lengths - 1).all() and plain.record()["prepend_bos"] is False


def test_sharded_safetensors(tmp_path):
    hf, folder = _saved(tmp_path, max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    _check_same(hf, models.load(str(folder)))


def test_bin_checkpoint_read_with_weights_only(tmp_path, monkeypatch):
    import torch

    hf, folder = _saved(tmp_path)
    state = {k: v.clone().contiguous() for k, v in hf.state_dict().items()}
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    calls = []
    real_load = torch.load

    def spy(*a, **kw):
        calls.append(kw.get("weights_only"))
        return real_load(*a, **kw)

    monkeypatch.setattr(torch, "load", spy)
    _check_same(hf, models.load(str(folder)))
    assert calls == [True]


def _fake_cache(tmp_path, folder, repo="gpt2", revision="main", commit="a" * 40):
    """The layout huggingface_hub keeps: models--<org>--<name>/{refs/<rev>, snapshots/<commit>/}."""
    cache = tmp_path / "hf_cache"
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    snap = repo_dir / "snapshots" / commit
    shutil.copytree(folder, snap)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return cache


def test_hub_name_resolves_from_offline_cache(tmp_path):
    hf, folder = _saved(tmp_path)
    cache = _fake_cache(tmp_path, folder, repo="openai-community/gpt2")
    # The study's short name finds the cache entry of the canonical id.
    loaded = models.load("gpt2", cache_dir=str(cache))
    _check_same(hf, loaded)
    assert loaded.tokenizer is not None


def test_revision_selects_snapshot(tmp_path):
    hf_a, folder_a = _saved(tmp_path, "gpt_neox", name="a")
    cache = _fake_cache(
        tmp_path, folder_a, repo="EleutherAI/pythia-14m", revision="step1000", commit="b" * 40
    )
    with pytest.raises(checkpoint.CheckpointNotFound):
        models.load("EleutherAI/pythia-14m", cache_dir=str(cache))  # no "main" ref
    _check_same(
        hf_a, models.load("EleutherAI/pythia-14m", revision="step1000", cache_dir=str(cache))
    )


def test_missing_weights_one_line_error(tmp_path):
    with pytest.raises(checkpoint.CheckpointNotFound) as e:
        models.load("EleutherAI/pythia-160m", cache_dir=str(tmp_path / "empty"))
    msg = str(e.value)
    assert "\n" not in msg
    assert "HF cache" in msg and "local folder" in msg and "pythia-160m" in msg


def test_folder_without_config(tmp_path):
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(checkpoint.CheckpointNotFound, match="no config.json"):
        models.load(str(tmp_path / "empty_model"))


def test_folder_without_weights(tmp_path):
    d = tmp_path / "cfg_only"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(models.tiny_hf_config("gpt2")))
    with pytest.raises(checkpoint.CheckpointNotFound, match="no weights"):
        models.load(str(d))


def test_unsupported_architecture(tmp_path):
    d = tmp_path / "llama"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64}))
    with pytest.raises(models.ConversionError, match="unsupported architecture.*llama"):
        models.load(str(d))


def test_unknown_config_field_refused_unless_lenient(tmp_path):
    hf, folder = _saved(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["mystery_switch"] = True
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(models.ConversionError, match="mystery_switch"):
        models.load(str(folder))
    _check_same(hf, models.load(str(folder), strict_config=False))


def test_tokens_beyond_context_and_vocab():
    m = models.random_model(models.tiny_hf_config("gpt2"))  # n_ctx 128, vocab 512
    with pytest.raises(ValueError, match="exceed the context length n_ctx=128"):
        m.forward(np.zeros((1, 129), np.int32))
    with pytest.raises(ValueError, match="d_vocab is 512"):
        m.forward(np.full((1, 3), 600, np.int32))


def test_param_cache_reused_and_keyed(tmp_path, monkeypatch):
    hf, folder = _saved(tmp_path)
    first = models.load(str(folder))
    assert first.cache_key and (param_cache.cache_root() / first.cache_key).is_dir()
    from models import gpt2

    def no_convert(*a, **k):
        raise AssertionError("converted again instead of using the cache")

    monkeypatch.setattr(gpt2, "convert", no_convert)
    second = models.load(str(folder))
    _check_same(hf, second)
    assert second.cache_key == first.cache_key
    # A different checkpoint in the same folder never reuses the entry.
    monkeypatch.undo()
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))
    hf2 = ref.hf_model(models.tiny_hf_config("gpt2"), seed=99)
    weights = folder / "model.safetensors"
    before = weights.stat()
    hf2.save_pretrained(folder)
    # Same size and, as on a filesystem with a coarse clock, the same modification time: only the
    # content tells the two checkpoints apart.
    assert weights.stat().st_size == before.st_size
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    third = models.load(str(folder))
    assert third.cache_key != first.cache_key
    _check_same(hf2, third)


def test_corrupt_cache_entry_rebuilt(tmp_path):
    hf, folder = _saved(tmp_path)
    first = models.load(str(folder))
    entry = param_cache.cache_root() / first.cache_key
    for f in Path(entry).rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    _check_same(hf, models.load(str(folder)))
