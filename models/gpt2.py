"""GPT-2 (`GPT2LMHeadModel`): Conv1D weights stored [in, out], fused q|k|v, learned positions,
tanh GELU, unembedding tied to the token embedding."""

from __future__ import annotations

import sys

import numpy as np

from models.config import ModelConfig
from models.convert import (
    COMMON_IGNORED,
    ConversionError,
    Take,
    activation,
    check_config_keys,
    convert_state,
    first_id,
    layer_norm,
)

FAMILY = "gpt2"
MODEL_TYPES = ("gpt2",)

# config.json of the hub checkpoints (openai-community/gpt2, gpt2-medium, gpt2-large, gpt2-xl):
# every field that sets the architecture. n_inner is null in all four (MLP width 4 * n_embd);
# the weights ship in fp32. Parameter counts (embeddings once) are checked in
# tests/models/test_published_configs.py.
#
# rinna's Japanese GPT-2s (rinna/japanese-gpt2-xsmall, -small, -medium, rinna/japanese-gpt-1b):
# the same architecture with a sentencepiece vocabulary (spiece.model, models.spm_tokenizer) and
# an explicit n_inner, which for xsmall is 4.5 * n_embd (2304 for 512), not 4 * n_embd.
# japanese-gpt-1b uses gelu_fast (the tanh GELU, as gelu_new), a 44,928-row vocabulary (the
# sentencepiece pieces padded to a multiple of 128) and bos 2 / eos 3; the GPT-2s bos 1 / eos 2.
# Values from the hub config.json files as shown on huggingface.co (found with the docs search):
# japanese-gpt2-small at its first commit 0ba6572, japanese-gpt2-xsmall at 7ca3df4 (n_ctx 768
# there, ignored: n_positions 1024 is what the weights hold), japanese-gpt2-medium via
# fine-tunes' copies (huranokuma/es2, "_name_or_path": "rinna/japanese-gpt2-medium"),
# japanese-gpt-1b at main (8a10e98). rinna's GPT-2s ship fp32 weights, japanese-gpt-1b fp16.
_RINNA = dict(vocab_size=32000, bos_token_id=1, eos_token_id=2)
PUBLISHED = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),  # 124,439,808 parameters
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),  # 354,823,168
    "gpt2-large": dict(n_layer=36, n_embd=1280, n_head=20),  # 774,030,080
    "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25),  # 1,557,611,200
    "japanese-gpt2-xsmall": dict(n_layer=6, n_embd=512, n_head=8, n_inner=2304, **_RINNA),
    "japanese-gpt2-small": dict(n_layer=12, n_embd=768, n_head=12, n_inner=3072, **_RINNA),
    "japanese-gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16, n_inner=4096, **_RINNA),
    "japanese-gpt-1b": dict(
        n_layer=24,
        n_embd=2048,
        n_head=16,
        n_inner=8192,
        vocab_size=44928,
        activation_function="gelu_fast",
        bos_token_id=2,
        eos_token_id=3,
    ),
}
_BASE = dict(
    model_type="gpt2",
    vocab_size=50257,
    n_positions=1024,
    n_ctx=1024,
    n_inner=None,
    activation_function="gelu_new",
    layer_norm_epsilon=1e-5,
    bos_token_id=50256,
    eos_token_id=50256,
)

_HANDLED = {
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
    "activation_function",
    "layer_norm_epsilon",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
    "reorder_and_upcast_attn",
    "add_cross_attention",
}
# n_special / predict_special_tokens: left in gpt2-medium's config.json by OpenAI GPT's config
# class; GPT-2's code never reads them.
_IGNORED = COMMON_IGNORED | {
    "resid_pdrop",
    "embd_pdrop",
    "attn_pdrop",
    "n_special",
    "predict_special_tokens",
}


def published_config(name: str) -> dict:
    """The HF config.json dict of a published GPT-2 size (OpenAI's or rinna's)."""
    return {**_BASE, **PUBLISHED[name]}


def with_layers(hf: dict, n_layers: int) -> dict:
    """`hf` with `n_layers` blocks and every other setting kept (reduced-depth tests)."""
    return {**hf, "n_layer": n_layers}


def config_from_hf(hf: dict, name: str = "", strict: bool = True) -> ModelConfig:
    if strict:
        check_config_keys(hf, _HANDLED, _IGNORED, FAMILY)
    if hf.get("scale_attn_by_inverse_layer_idx", False):
        raise ConversionError("gpt2 scale_attn_by_inverse_layer_idx=True is not supported")
    if hf.get("add_cross_attention", False):
        raise ConversionError("gpt2 add_cross_attention=True (an encoder-decoder) is not supported")
    if not hf.get("scale_attn_weights", True):
        raise ConversionError("gpt2 scale_attn_weights=False is not supported")
    # reorder_and_upcast_attn only changes where the fp32 upcast happens; we always score in fp32.
    d = hf["n_embd"]
    return ModelConfig(
        family=FAMILY,
        n_layers=hf["n_layer"],
        d_model=d,
        n_heads=hf["n_head"],
        d_head=d // hf["n_head"],
        d_mlp=hf.get("n_inner") or 4 * d,
        d_vocab=hf["vocab_size"],
        n_ctx=hf["n_positions"],
        ln_eps=hf.get("layer_norm_epsilon", 1e-5),
        gelu_tanh=activation(hf.get("activation_function", "gelu_new"), FAMILY),
        positional="learned",
        tied_unembed=True,
        bos_token_id=first_id(hf.get("bos_token_id")),
        eos_token_id=first_id(hf.get("eos_token_id")),
        name=name,
    )


# Checkpoint names start with these (stripped before the plan's names); tensors that are not
# parameters: causal-mask buffers, and lm_head (tied: the token embedding).
PREFIXES = ("transformer.",)
SKIP = (r"h\.\d+\.attn\.(masked_)?bias", r"lm_head\.weight")


def plan(cfg: ModelConfig, has=None) -> list[Take]:
    """Every checkpoint tensor and the params it fills (`models.convert.Take`). Conv1D weights
    are stored [in, out]: rows run along d_model (c_attn, c_fc) or the heads' (head, d_head)
    (attn c_proj) or d_mlp (mlp c_proj)."""
    d, h, e, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    attn = lambda w: ("blocks", "attn", w)
    mlp = lambda w: ("blocks", "mlp", w)

    def qkv(a):  # [rows, 3 * d_model] -> three [rows, head, d_head]
        a = a.reshape(a.shape[0], 3, h, e)
        return a[:, 0], a[:, 1], a[:, 2]

    return [
        Take("wte.weight", (cfg.d_vocab, d), (("embed", "W_E"),), axis=0),
        Take("wpe.weight", (cfg.n_ctx, d), (("embed", "W_pos"),), axis=0),
        *layer_norm("h.{}.ln_1", "blocks/ln1", d),
        Take(
            "h.{}.attn.c_attn.weight", (d, 3 * d), (attn("W_Q"), attn("W_K"), attn("W_V")), qkv, 0
        ),
        Take(
            "h.{}.attn.c_attn.bias",
            (3 * d,),
            (attn("b_Q"), attn("b_K"), attn("b_V")),
            lambda a: tuple(a.reshape(3, h, e)),
        ),
        Take(
            "h.{}.attn.c_proj.weight", (d, d), (attn("W_O"),), lambda a: a.reshape(-1, e, d), 0, e
        ),
        Take("h.{}.attn.c_proj.bias", (d,), (attn("b_O"),)),
        *layer_norm("h.{}.ln_2", "blocks/ln2", d),
        Take("h.{}.mlp.c_fc.weight", (d, m), (mlp("W_in"),), axis=0),
        Take("h.{}.mlp.c_fc.bias", (m,), (mlp("b_in"),)),
        Take("h.{}.mlp.c_proj.weight", (m, d), (mlp("W_out"),), axis=0),
        Take("h.{}.mlp.c_proj.bias", (d,), (mlp("b_out"),)),
        *layer_norm("ln_f", "ln_final", d),
    ]


def convert(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF state dict (numpy) -> jaxcirc params (numpy fp32, layers stacked)."""
    return convert_state(state, cfg, sys.modules[__name__])
