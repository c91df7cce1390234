"""GPT-NeoX / Pythia (`GPTNeoXForCausalLM`): fused qkv laid out per head (head, qkv, d_head),
rotary on the first `rotary_pct` of each head's dims, parallel residual when the config says so,
exact GELU, untied unembedding (`embed_out`)."""

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

FAMILY = "gpt_neox"
MODEL_TYPES = ("gpt_neox",)

# config.json of the Pythia suite (EleutherAI/pythia-*; the -deduped twins have the same
# shapes): every field that sets the architecture. intermediate_size is 4 * hidden_size in all;
# rotary on 25% of each head's dims, base 10000, parallel residual, untied unembedding; the
# weights ship in fp16. The vocabulary is the tokenizer's 50277 ids padded to a multiple of 128
# times GPT-NeoX's model-parallel degree, so it grows for 6.9B (50432) and 12B (50688).
# Parameter counts are the model card's, checked in tests/models/test_published_configs.py.
#
# Japanese GPT-NeoX checkpoints: sequential residual (use_parallel_residual false), rotary on
# every head dim (rotary_pct 1.0), untied unembedding, intermediate_size 4 * hidden_size.
# cyberagent/open-calm-*: a 52,096-row vocabulary (tokenizer.json, bos = eos = 0), fp16 weights
# (open-calm-small ships only pytorch_model.bin, read with torch.load(weights_only=True)).
# rinna/japanese-gpt-neox-small: sentencepiece (spiece.model), 44,416 rows, bos 2 / eos 3, fp32.
# Values from the hub config.json files as shown on huggingface.co (found with the docs search):
# open-calm-small at 0a44e4c, -medium at a176b39, -1b at main; -large from a fine-tune's copy
# (Mizuiro-sakura/open-calm-large-finetuned-databricks-dolly, "_name_or_path":
# "open-calm-large"); japanese-gpt-neox-small from a transformers 4.46 re-save of the hub file
# (RichardErkhov/rinna_-_japanese-gpt-neox-small-awq), rinna's own file unread.
_OPEN_CALM = dict(
    vocab_size=52096, rotary_pct=1.0, use_parallel_residual=False, bos_token_id=0, eos_token_id=0
)
_RINNA = dict(
    vocab_size=44416, rotary_pct=1.0, use_parallel_residual=False, bos_token_id=2, eos_token_id=3
)
PUBLISHED = {
    "pythia-14m": dict(num_hidden_layers=6, hidden_size=128, num_attention_heads=4),
    "pythia-70m": dict(num_hidden_layers=6, hidden_size=512, num_attention_heads=8),
    "pythia-160m": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12),
    "pythia-410m": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16),
    "pythia-1b": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=8),
    "pythia-1.4b": dict(num_hidden_layers=24, hidden_size=2048, num_attention_heads=16),
    "pythia-2.8b": dict(num_hidden_layers=32, hidden_size=2560, num_attention_heads=32),
    "pythia-6.9b": dict(
        num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, vocab_size=50432
    ),
    "pythia-12b": dict(
        num_hidden_layers=36, hidden_size=5120, num_attention_heads=40, vocab_size=50688
    ),
    "open-calm-small": dict(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, **_OPEN_CALM
    ),
    "open-calm-medium": dict(
        num_hidden_layers=24, hidden_size=1024, num_attention_heads=16, **_OPEN_CALM
    ),
    "open-calm-large": dict(
        num_hidden_layers=24, hidden_size=1536, num_attention_heads=16, **_OPEN_CALM
    ),
    "open-calm-1b": dict(
        num_hidden_layers=24, hidden_size=2048, num_attention_heads=16, **_OPEN_CALM
    ),
    "japanese-gpt-neox-small": dict(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, **_RINNA
    ),
}
_BASE = dict(
    model_type="gpt_neox",
    vocab_size=50304,
    max_position_embeddings=2048,
    hidden_act="gelu",
    rotary_pct=0.25,
    rotary_emb_base=10000,
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=0,
)

_HANDLED = {
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "rotary_pct",
    "rotary_emb_base",
    "rope_parameters",
    "rope_scaling",
    "rope_theta",
    "partial_rotary_factor",
    "layer_norm_eps",
    "use_parallel_residual",
    "attention_bias",
}
_IGNORED = COMMON_IGNORED | {"attention_dropout", "hidden_dropout"}


def published_config(name: str) -> dict:
    """The HF config.json dict of a published Pythia, open-calm or rinna GPT-NeoX size."""
    p = PUBLISHED[name]
    return {**_BASE, "intermediate_size": 4 * p["hidden_size"], **p}


def with_layers(hf: dict, n_layers: int) -> dict:
    """`hf` with `n_layers` blocks and every other setting kept (reduced-depth tests)."""
    return {**hf, "num_hidden_layers": n_layers}


def config_from_hf(hf: dict, name: str = "", strict: bool = True) -> ModelConfig:
    if strict:
        check_config_keys(hf, _HANDLED, _IGNORED, FAMILY)
    if hf.get("tie_word_embeddings", False):
        raise ConversionError("gpt_neox with tie_word_embeddings=True is not supported")
    rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ConversionError(f"gpt_neox rope_type={rope_type!r} is not supported (only default)")
    pct = rope.get(
        "partial_rotary_factor", hf.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
    )
    base = rope.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10000)))
    d, heads = hf["hidden_size"], hf["num_attention_heads"]
    d_head = d // heads
    bias = hf.get("attention_bias", True)
    return ModelConfig(
        family=FAMILY,
        n_layers=hf["num_hidden_layers"],
        d_model=d,
        n_heads=heads,
        d_head=d_head,
        d_mlp=hf.get("intermediate_size") or 4 * d,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        ln_eps=hf.get("layer_norm_eps", 1e-5),
        gelu_tanh=activation(hf.get("hidden_act", "gelu"), FAMILY),
        positional="rotary",
        rotary_dim=int(d_head * pct),
        rotary_base=float(base),
        parallel_residual=hf.get("use_parallel_residual", True),
        qkv_bias=bias,
        out_bias=bias,
        tied_unembed=False,
        bos_token_id=first_id(hf.get("bos_token_id")),
        eos_token_id=first_id(hf.get("eos_token_id")),
        name=name,
    )


# Checkpoint names start with this (stripped before the plan's names); tensors that are not
# parameters: causal-mask buffers and rotary caches.
PREFIXES = ("gpt_neox.",)
SKIP = (r"layers\.\d+\.attention\.(masked_)?bias", r".*rotary_emb\.inv_freq")


def plan(cfg: ModelConfig, has) -> list[Take]:
    """Every checkpoint tensor and the params it fills (`models.convert.Take`). torch Linear
    weights are stored [out, in]; the fused query_key_value's out index is head*(3*e) + qkv*e + i,
    so its rows run over whole heads in units of 3 * d_head. `has(name)`: whether the checkpoint
    holds a tensor (the unembedding is `embed_out` in older checkpoints, `lm_head` in
    transformers 5)."""
    d, h, e, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    attn = lambda w: ("blocks", "attn", w)
    mlp = lambda w: ("blocks", "mlp", w)
    qkv_dest = (attn("W_Q"), attn("W_K"), attn("W_V"))

    def qkv(a):  # [heads * 3 * e, d_model] -> three [d_model, heads, d_head]
        w = a.reshape(-1, 3, e, d).transpose(1, 3, 0, 2)
        return w[0], w[1], w[2]

    def qkv_bias(a):  # [3 * d_model] -> three [head, d_head]
        return tuple(a.reshape(h, 3, e).transpose(1, 0, 2))

    takes = [
        Take("embed_in.weight", (cfg.d_vocab, d), (("embed", "W_E"),), axis=0),
        *layer_norm("layers.{}.input_layernorm", "blocks/ln1", d),
        Take(
            "layers.{}.attention.query_key_value.weight",
            (3 * d, d),
            qkv_dest,
            fn=qkv,
            axis=1,  # heads: rows come 3 * d_head per head
            unit=3 * e,
        ),
        Take(
            "layers.{}.attention.dense.weight",
            (d, d),
            (attn("W_O"),),
            fn=lambda a: a.T.reshape(h, e, -1),  # rows: d_model out -> W_O [head, d_head, rows]
            axis=2,
        ),
        *layer_norm("layers.{}.post_attention_layernorm", "blocks/ln2", d),
        Take("layers.{}.mlp.dense_h_to_4h.weight", (m, d), (mlp("W_in"),), np.transpose, axis=1),
        Take("layers.{}.mlp.dense_h_to_4h.bias", (m,), (mlp("b_in"),)),
        Take("layers.{}.mlp.dense_4h_to_h.weight", (d, m), (mlp("W_out"),), np.transpose, axis=1),
        Take("layers.{}.mlp.dense_4h_to_h.bias", (d,), (mlp("b_out"),)),
        *layer_norm("final_layer_norm", "ln_final", d),
        # Older checkpoints name the head `embed_out`; transformers 5 names it `lm_head`.
        Take(
            "embed_out.weight" if has("embed_out.weight") else "lm_head.weight",
            (cfg.d_vocab, d),
            (("unembed", "W_U"),),
            np.transpose,
            axis=1,
        ),
    ]
    if cfg.qkv_bias:
        key = "layers.{}.attention.query_key_value.bias"
        takes.append(Take(key, (3 * d,), (attn("b_Q"), attn("b_K"), attn("b_V")), qkv_bias))
    if cfg.out_bias:
        takes.append(Take("layers.{}.attention.dense.bias", (d,), (attn("b_O"),)))
    return takes


def convert(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF state dict (numpy) -> jaxcirc params (numpy fp32, layers stacked)."""
    return convert_state(state, cfg, sys.modules[__name__])
