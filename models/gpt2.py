"""GPT-2 (`GPT2LMHeadModel`): Conv1D weights stored [in, out], fused q|k|v, learned positions,
tanh GELU, unembedding tied to the token embedding."""

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

FAMILY = "gpt2"
MODEL_TYPES = ("gpt2",)

# Published shapes (config.json of the hub checkpoints), for random-weight models and tests.
PUBLISHED = {
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
    "gpt2-large": dict(n_layer=36, n_embd=1280, n_head=20),
    "gpt2-xl": dict(n_layer=48, n_embd=1600, n_head=25),
}
_BASE = dict(
    model_type="gpt2",
    vocab_size=50257,
    n_positions=1024,
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
_IGNORED = COMMON_IGNORED | {"resid_pdrop", "embd_pdrop", "attn_pdrop"}


def published_config(name: str) -> dict:
    """The HF config.json dict of a published GPT-2 size."""
    return {**_BASE, **PUBLISHED[name]}


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


def convert(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF state dict (numpy) -> jaxcirc params (numpy, layers stacked)."""
    d, h, e, m, n = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers
    r = StateReader(
        state, ("transformer.",), skip=(r"h\.\d+\.attn\.(masked_)?bias", r"lm_head\.weight")
    )
    qkv_w = r.take_layers("h.{}.attn.c_attn.weight", n, (d, 3 * d), lambda a: a.reshape(d, 3, h, e))
    qkv_b = r.take_layers("h.{}.attn.c_attn.bias", n, (3 * d,), lambda a: a.reshape(3, h, e))
    blocks = {
        "ln1": {
            "scale": r.take_layers("h.{}.ln_1.weight", n, (d,)),
            "bias": r.take_layers("h.{}.ln_1.bias", n, (d,)),
        },
        "attn": {
            "W_Q": qkv_w[:, :, 0],
            "W_K": qkv_w[:, :, 1],
            "W_V": qkv_w[:, :, 2],
            "b_Q": qkv_b[:, 0],
            "b_K": qkv_b[:, 1],
            "b_V": qkv_b[:, 2],
            "W_O": r.take_layers(
                "h.{}.attn.c_proj.weight", n, (d, d), lambda a: a.reshape(h, e, d)
            ),
            "b_O": r.take_layers("h.{}.attn.c_proj.bias", n, (d,)),
        },
        "ln2": {
            "scale": r.take_layers("h.{}.ln_2.weight", n, (d,)),
            "bias": r.take_layers("h.{}.ln_2.bias", n, (d,)),
        },
        "mlp": {
            "W_in": r.take_layers("h.{}.mlp.c_fc.weight", n, (d, m)),
            "b_in": r.take_layers("h.{}.mlp.c_fc.bias", n, (m,)),
            "W_out": r.take_layers("h.{}.mlp.c_proj.weight", n, (m, d)),
            "b_out": r.take_layers("h.{}.mlp.c_proj.bias", n, (d,)),
        },
    }
    params = {
        "embed": {
            "W_E": r.take("wte.weight", (cfg.d_vocab, d)),
            "W_pos": r.take("wpe.weight", (cfg.n_ctx, d)),
        },
        "blocks": blocks,
        "ln_final": {"scale": r.take("ln_f.weight", (d,)), "bias": r.take("ln_f.bias", (d,))},
    }
    r.finish()
    return params
