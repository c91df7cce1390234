"""The published Japanese checkpoints' configs: each converts with the shape its config.json
states, its parameter count is transformers' for the same config, and at 2 layers (every width
kept) it equals transformers (fp32, random weights, tolerance 1e-4 as
tests/models/test_published_configs.py). abeja's GPT-NeoX-Japanese is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import models
from models import families
from models import hf_reference as ref
from models.config import GLOBAL_WINDOW
from tests import support

JAPANESE = [
    "rinna/japanese-gpt2-xsmall",
    "rinna/japanese-gpt2-small",
    "rinna/japanese-gpt2-medium",
    "rinna/japanese-gpt-1b",
    "cyberagent/open-calm-small",
    "cyberagent/open-calm-medium",
    "cyberagent/open-calm-large",
    "cyberagent/open-calm-1b",
    "rinna/japanese-gpt-neox-small",
    "yellowback/gpt-neo-japanese-1.3B",
]

# (family, n_layers, d_model, n_heads, d_mlp, d_vocab, bos, eos) as each config.json states them.
SHAPES = {
    "rinna/japanese-gpt2-xsmall": ("gpt2", 6, 512, 8, 2304, 32000, 1, 2),
    "rinna/japanese-gpt2-small": ("gpt2", 12, 768, 12, 3072, 32000, 1, 2),
    "rinna/japanese-gpt2-medium": ("gpt2", 24, 1024, 16, 4096, 32000, 1, 2),
    "rinna/japanese-gpt-1b": ("gpt2", 24, 2048, 16, 8192, 44928, 2, 3),
    "cyberagent/open-calm-small": ("gpt_neox", 12, 768, 12, 3072, 52096, 0, 0),
    "cyberagent/open-calm-medium": ("gpt_neox", 24, 1024, 16, 4096, 52096, 0, 0),
    "cyberagent/open-calm-large": ("gpt_neox", 24, 1536, 16, 6144, 52096, 0, 0),
    "cyberagent/open-calm-1b": ("gpt_neox", 24, 2048, 16, 8192, 52096, 0, 0),
    "rinna/japanese-gpt-neox-small": ("gpt_neox", 12, 768, 12, 3072, 44416, 2, 3),
    "yellowback/gpt-neo-japanese-1.3B": ("gpt_neo", 24, 2048, 16, 8192, 32000, 0, 0),
}

# Run at 2 layers against transformers (japanese-gpt-1b: gelu_fast, 2048 wide, 44,928 rows).
AT_TWO_LAYERS = [
    "rinna/japanese-gpt2-xsmall",
    "rinna/japanese-gpt2-small",
    "rinna/japanese-gpt-1b",
    "rinna/japanese-gpt-neox-small",
    "cyberagent/open-calm-small",
    "cyberagent/open-calm-1b",
    "yellowback/gpt-neo-japanese-1.3B",
]


def test_every_japanese_checkpoint_is_published():
    assert {n.split("/")[-1].lower() for n in JAPANESE} <= set(families.published_names())


@pytest.mark.parametrize("name", JAPANESE)
def test_converts_with_its_stated_shape_and_transformers_parameter_count(name):
    hf_cfg = models.published_hf_config(name)
    cfg = models.config_from_hf(hf_cfg, strict=True)
    got = (cfg.family, cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.d_vocab)
    assert got + (cfg.bos_token_id, cfg.eos_token_id) == SHAPES[name]
    assert cfg.n_params() == support.hf_param_count(hf_cfg)


def test_what_the_japanese_families_change():
    """xsmall's MLP is 4.5 x d_model; gpt-1b's gelu_fast is the tanh GELU; GPT-NeoX ones are
    sequential, fully rotary and untied; the Japanese GPT-Neo alternates windows of 256."""
    xs = models.config_from_hf(models.published_hf_config("japanese-gpt2-xsmall"))
    assert xs.d_mlp == 2304 != 4 * xs.d_model and xs.tied_unembed
    one_b = models.published_hf_config("japanese-gpt-1b")
    assert one_b["activation_function"] == "gelu_fast" and models.config_from_hf(one_b).gelu_tanh
    for name in ("open-calm-small", "open-calm-1b", "japanese-gpt-neox-small"):
        c = models.config_from_hf(models.published_hf_config(name))
        assert not c.parallel_residual and c.rotary_dim == c.d_head and not c.tied_unembed
        assert not c.gelu_tanh  # hidden_act "gelu": exact erf
    pythia = models.config_from_hf(models.published_hf_config("pythia-160m"))
    assert pythia.parallel_residual and pythia.rotary_dim == pythia.d_head // 4
    neo = models.config_from_hf(models.published_hf_config("gpt-neo-japanese-1.3b"))
    assert neo.attn_windows[:2] == (GLOBAL_WINDOW, 256) and not neo.scale_attn


@pytest.mark.parametrize("name", AT_TWO_LAYERS)
def test_at_two_layers_equals_transformers(name):
    """Every width of the published config (d_model, heads, d_head, d_mlp, vocabulary,
    positions), 2 layers, random weights: logits and every hidden state."""
    hf_cfg = families.with_layers(models.published_hf_config(name), 2)
    hf = ref.hf_model(hf_cfg, seed=9)
    ours = ref.convert(hf, hf_cfg)
    ids = np.random.default_rng(9).integers(0, hf_cfg["vocab_size"], (2, 9)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    mask[1, 6:] = False  # a padded row too
    ref.assert_matches(ours, hf, ids, mask)


def test_abeja_gpt_neox_japanese_is_refused_by_name(tmp_path):
    hf_cfg = {
        "model_type": "gpt_neox_japanese",
        "hidden_size": 2560,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "intermediate_multiple_size": 4,
        "vocab_size": 32000,
    }
    with pytest.raises(models.ConversionError, match="abeja.*not GPT-NeoX") as e:
        models.config_from_hf(hf_cfg)
    assert "\n" not in str(e.value) and "gpt_neox_japanese" in str(e.value)
    (tmp_path / "config.json").write_text(json.dumps(hf_cfg))
    with pytest.raises(models.ConversionError, match="abeja"):
        models.load(str(tmp_path))  # refused before any weights are looked for


def test_open_calm_bin_as_shipped_loads(tmp_path, monkeypatch):
    """open-calm-small ships only a pytorch_model.bin saved by transformers 4.27: fp16 tensors,
    the head named embed_out, and the attention buffers (causal mask, masked_bias, rotary
    inv_freq) beside the weights. models.load reads it with torch.load(weights_only=True)."""
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))
    hf_cfg = families.with_layers(models.published_hf_config("open-calm-small"), 2)
    hf = ref.hf_model(hf_cfg, seed=12)
    with torch.no_grad():  # the reference holds the fp16-rounded weights the file stores
        for p in hf.parameters():
            p.copy_(p.half().float())
    state = {}
    for k, v in hf.state_dict().items():
        state["embed_out.weight" if k == "lm_head.weight" else k] = v.half().clone()
    d_head = hf_cfg["hidden_size"] // hf_cfg["num_attention_heads"]
    for i in range(2):
        layer = f"gpt_neox.layers.{i}.attention"
        state[f"{layer}.bias"] = torch.tril(torch.ones(2048, 2048, dtype=torch.bool))[None, None]
        state[f"{layer}.masked_bias"] = torch.tensor(-1e9)
        state[f"{layer}.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, d_head, 2) / d_head)
    folder = tmp_path / "open-calm-small"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps({**hf_cfg, "torch_dtype": "float16"}))
    calls = []
    real_load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda *a, **kw: calls.append(kw.get("weights_only")) or real_load(*a, **kw)
    )
    loaded = models.load(str(folder), with_tokenizer=False)
    assert calls == [True]
    ids = np.random.default_rng(12).integers(0, hf_cfg["vocab_size"], (2, 9)).astype(np.int32)
    ref.assert_matches(loaded, hf, ids)
