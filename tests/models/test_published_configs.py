"""Every published size of the three families: its config.json converts, its parameter count is
the published one, and a 2-layer model of the widest of each family equals transformers (fp32,
random weights, tolerance 1e-4 as tests/models/test_models_equivalence.py)."""

from __future__ import annotations

import numpy as np
import pytest

import models
from models import families
from models import hf_reference as ref
from tests import support

# Parameters, embeddings counted once (tied unembeddings once): Pythia's from its model card
# ("Total params"), GPT-2's and GPT-Neo's as transformers' num_parameters() reports them for the
# hub checkpoints. The test below also counts each against transformers built from the config.
PARAM_COUNTS = {
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
    "pythia-70m": 70_426_624,
    "pythia-160m": 162_322_944,
    "pythia-410m": 405_334_016,
    "pythia-1b": 1_011_781_632,
    "pythia-1.4b": 1_414_647_808,
    "pythia-2.8b": 2_775_208_960,
    "pythia-6.9b": 6_857_302_016,
    "pythia-12b": 11_846_072_320,
    "gpt-neo-125m": 125_198_592,
    "gpt-neo-1.3b": 1_315_575_808,
    "gpt-neo-2.7b": 2_651_307_520,
}

# The widest published size of each family, run at 2 layers. Pythia-12B's 2 layers and 50688 x
# 5120 embeddings take ~40 s and 13 GB on 2 cores (transformers' model, its copy, ours): slow
# (`pytest -m slow`; `make test` leaves it out), so Pythia-6.9B's width (4096) runs by default.
WIDEST = [
    "gpt2-xl",
    "pythia-6.9b",
    pytest.param("pythia-12b", marks=pytest.mark.slow),
    "gpt-neo-2.7b",
]


def test_every_size_is_listed():
    assert set(PARAM_COUNTS) <= set(families.published_names())


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_published_config_converts_with_its_parameter_count(name):
    hf_cfg = models.published_hf_config(name)
    cfg = models.config_from_hf(hf_cfg, strict=True)
    assert cfg.n_params() == PARAM_COUNTS[name]
    assert support.hf_param_count(hf_cfg) == PARAM_COUNTS[name]


def test_published_shapes_of_the_largest():
    """The facts each family's largest size adds: GPT-2 XL's 25 heads of 64, Pythia-12B's
    padded vocabulary and 32-dim rotary, GPT-Neo-2.7B's 128-dim heads and alternating windows."""
    xl = models.config_from_hf(models.published_hf_config("gpt2-xl"))
    assert (xl.n_layers, xl.d_model, xl.n_heads, xl.d_head, xl.d_mlp) == (48, 1600, 25, 64, 6400)
    assert (xl.d_vocab, xl.n_ctx, xl.tied_unembed) == (50257, 1024, True)
    p12 = models.config_from_hf(models.published_hf_config("EleutherAI/pythia-12b-deduped"))
    assert (p12.n_layers, p12.d_model, p12.n_heads, p12.d_mlp) == (36, 5120, 40, 20480)
    assert (p12.d_vocab, p12.rotary_dim, p12.rotary_base, p12.parallel_residual) == (
        50688,
        32,
        10000.0,
        True,
    )
    assert models.config_from_hf(models.published_hf_config("pythia-6.9b")).d_vocab == 50432
    neo = models.config_from_hf(models.published_hf_config("EleutherAI/gpt-neo-2.7B"))
    assert (neo.n_layers, neo.d_model, neo.n_heads, neo.d_head, neo.n_ctx) == (
        32,
        2560,
        20,
        128,
        2048,
    )
    assert neo.attn_windows[:4] == (models.config.GLOBAL_WINDOW, 256) * 2
    assert not neo.scale_attn and neo.tied_unembed


def test_with_layers_keeps_widths():
    for name in ("gpt2-xl", "pythia-12b", "gpt-neo-2.7b"):
        hf_cfg = models.published_hf_config(name)
        cut = families.with_layers(hf_cfg, 2)
        a, b = models.config_from_hf(hf_cfg), models.config_from_hf(cut)
        assert b.n_layers == 2
        assert b.replace(n_layers=a.n_layers, attn_windows=a.attn_windows) == a


@pytest.mark.parametrize("name", WIDEST)
def test_widest_at_two_layers_equals_transformers(name):
    """Every width of the family's largest size (d_model, heads, d_head, d_mlp, vocabulary,
    positions), 2 layers, random weights."""
    hf_cfg = families.with_layers(models.published_hf_config(name), 2)
    hf = ref.hf_model(hf_cfg, seed=8)
    ours = ref.convert(hf, hf_cfg)
    ids = np.random.default_rng(8).integers(0, hf_cfg["vocab_size"], (2, 9)).astype(np.int32)
    ref.assert_matches(ours, hf, ids)
