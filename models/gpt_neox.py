"""GPT-NeoX / Pythia (`GPTNeoXForCausalLM`): fused qkv laid out per head (head, qkv, d_head),
rotary on the first `rotary_pct` of each head's dims, parallel residual when the config says so,
exact GELU, untied unembedding (`embed_out`)."""

from __future__ import annotations

import numpy as np

from models.config import ModelConfig
from models.convert import (
    COMMON_IGNORED,
    ConversionError,
    StateReader,
    activation,
    check_config_keys,
    first_id,
)

FAMILY = "gpt_neox"
MODEL_TYPES = ("gpt_neox",)

# (n_layers, d_model, n_heads) of the Pythia suite (config.json of EleutherAI/pythia-*).
PUBLISHED = {
    "pythia-14m": dict(num_hidden_layers=6, hidden_size=128, num_attention_heads=4),
    "pythia-70m": dict(num_hidden_layers=6, hidden_size=512, num_attention_heads=8),
    "pythia-160m": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12),
    "pythia-410m": dict(num_hidden_layers=24, hidden_size=1024, num_attention_heads=16),
    "pythia-1b": dict(num_hidden_layers=16, hidden_size=2048, num_attention_heads=8),
    "pythia-1.4b": dict(num_hidden_layers=24, hidden_size=2048, num_attention_heads=16),
    "pythia-2.8b": dict(num_hidden_layers=32, hidden_size=2560, num_attention_heads=32),
    "pythia-6.9b": dict(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32),
    "pythia-12b": dict(num_hidden_layers=36, hidden_size=5120, num_attention_heads=40),
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
    p = PUBLISHED[name]
    return {**_BASE, **p, "intermediate_size": 4 * p["hidden_size"]}


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


def convert(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    d, h, e, m, n = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers
    r = StateReader(
        state,
        ("gpt_neox.",),
        skip=(r"layers\.\d+\.attention\.(masked_)?bias", r".*rotary_emb\.inv_freq"),
    )
    # torch Linear weight [out, in]; out index = head*(3*e) + qkv*e + i.
    qkv_w = r.take_layers(
        "layers.{}.attention.query_key_value.weight",
        n,
        (3 * d, d),
        lambda a: a.reshape(h, 3, e, d).transpose(1, 3, 0, 2),  # [3, d_model, head, d_head]
    )
    attn = {"W_Q": qkv_w[:, 0], "W_K": qkv_w[:, 1], "W_V": qkv_w[:, 2]}
    attn["W_O"] = r.take_layers(
        "layers.{}.attention.dense.weight", n, (d, d), lambda a: a.T.reshape(h, e, d)
    )
    if cfg.qkv_bias:
        qkv_b = r.take_layers(
            "layers.{}.attention.query_key_value.bias",
            n,
            (3 * d,),
            lambda a: a.reshape(h, 3, e).transpose(1, 0, 2),
        )
        attn.update(b_Q=qkv_b[:, 0], b_K=qkv_b[:, 1], b_V=qkv_b[:, 2])
    if cfg.out_bias:
        attn["b_O"] = r.take_layers("layers.{}.attention.dense.bias", n, (d,))
    blocks = {
        "ln1": {
            "scale": r.take_layers("layers.{}.input_layernorm.weight", n, (d,)),
            "bias": r.take_layers("layers.{}.input_layernorm.bias", n, (d,)),
        },
        "attn": attn,
        "ln2": {
            "scale": r.take_layers("layers.{}.post_attention_layernorm.weight", n, (d,)),
            "bias": r.take_layers("layers.{}.post_attention_layernorm.bias", n, (d,)),
        },
        "mlp": {
            "W_in": r.take_layers("layers.{}.mlp.dense_h_to_4h.weight", n, (m, d), np.transpose),
            "b_in": r.take_layers("layers.{}.mlp.dense_h_to_4h.bias", n, (m,)),
            "W_out": r.take_layers("layers.{}.mlp.dense_4h_to_h.weight", n, (d, m), np.transpose),
            "b_out": r.take_layers("layers.{}.mlp.dense_4h_to_h.bias", n, (d,)),
        },
    }
    # Older checkpoints name the head `embed_out`; transformers 5 names it `lm_head`.
    head_key = "embed_out.weight" if r.has("embed_out.weight") else "lm_head.weight"
    params = {
        "embed": {"W_E": r.take("embed_in.weight", (cfg.d_vocab, d))},
        "blocks": blocks,
        "ln_final": {
            "scale": r.take("final_layer_norm.weight", (d,)),
            "bias": r.take("final_layer_norm.bias", (d,)),
        },
        "unembed": {"W_U": r.take(head_key, (cfg.d_vocab, d)).T},
    }
    r.finish()
    return params
