"""GPT-Neo (`GPTNeoForCausalLM`): separate q/k/v projections without bias, attention scores NOT
scaled by 1/sqrt(d_head), alternating global / local (windowed) attention layers, learned
positions, tanh GELU, tied unembedding."""

from __future__ import annotations

import numpy as np

from models.config import GLOBAL_WINDOW, ModelConfig
from models.convert import (
    COMMON_IGNORED,
    ConversionError,
    StateReader,
    activation,
    check_config_keys,
    first_id,
)

FAMILY = "gpt_neo"
MODEL_TYPES = ("gpt_neo",)

PUBLISHED = {
    "gpt-neo-125m": dict(num_layers=12, hidden_size=768, num_heads=12),
    "gpt-neo-1.3b": dict(num_layers=24, hidden_size=2048, num_heads=16),
    "gpt-neo-2.7b": dict(num_layers=32, hidden_size=2560, num_heads=20),
}
_BASE = dict(
    model_type="gpt_neo",
    vocab_size=50257,
    max_position_embeddings=2048,
    activation_function="gelu_new",
    layer_norm_epsilon=1e-5,
    window_size=256,
    bos_token_id=50256,
    eos_token_id=50256,
)

_HANDLED = {
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "activation_function",
    "max_position_embeddings",
    "layer_norm_epsilon",
    "window_size",
    "attention_types",
    "attention_layers",
}
_IGNORED = COMMON_IGNORED | {"attention_dropout", "embed_dropout", "resid_dropout"}


def published_config(name: str) -> dict:
    p = PUBLISHED[name]
    n = p["num_layers"]
    return {**_BASE, **p, "attention_types": [[["global", "local"], n // 2]]}


def _layer_types(hf: dict) -> list[str]:
    if hf.get("attention_layers"):
        return list(hf["attention_layers"])
    kinds = []
    for pattern, repeat in hf.get(
        "attention_types", [[["global", "local"], hf["num_layers"] // 2]]
    ):
        kinds.extend(list(pattern) * repeat)
    return kinds


def config_from_hf(hf: dict, name: str = "", strict: bool = True) -> ModelConfig:
    if strict:
        check_config_keys(hf, _HANDLED, _IGNORED, FAMILY)
    kinds = _layer_types(hf)
    n = hf["num_layers"]
    if len(kinds) != n or not set(kinds) <= {"global", "local"}:
        raise ConversionError(
            f"gpt_neo attention types {kinds} do not give one of global/local per layer ({n})"
        )
    window = hf.get("window_size", 256)
    d, heads = hf["hidden_size"], hf["num_heads"]
    return ModelConfig(
        family=FAMILY,
        n_layers=n,
        d_model=d,
        n_heads=heads,
        d_head=d // heads,
        d_mlp=hf.get("intermediate_size") or 4 * d,
        d_vocab=hf["vocab_size"],
        n_ctx=hf.get("max_position_embeddings", 2048),
        ln_eps=hf.get("layer_norm_epsilon", 1e-5),
        gelu_tanh=activation(hf.get("activation_function", "gelu_new"), FAMILY),
        positional="learned",
        scale_attn=False,
        attn_windows=tuple(window if k == "local" else GLOBAL_WINDOW for k in kinds),
        qkv_bias=False,
        tied_unembed=True,
        bos_token_id=first_id(hf.get("bos_token_id")),
        eos_token_id=first_id(hf.get("eos_token_id")),
        name=name,
    )


def convert(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    d, h, e, m, n = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp, cfg.n_layers
    r = StateReader(
        state,
        ("transformer.",),
        skip=(r"h\.\d+\.attn\.attention\.(masked_)?bias", r"lm_head\.weight"),
    )
    qkv = lambda a: a.T.reshape(d, h, e)  # torch Linear [out, in] -> [d_model, head, d_head]
    attn = {
        f"W_{x.upper()}": r.take_layers(f"h.{{}}.attn.attention.{x}_proj.weight", n, (d, d), qkv)
        for x in "qkv"
    }
    attn["W_O"] = r.take_layers(
        "h.{}.attn.attention.out_proj.weight", n, (d, d), lambda a: a.T.reshape(h, e, d)
    )
    attn["b_O"] = r.take_layers("h.{}.attn.attention.out_proj.bias", n, (d,))
    blocks = {
        "ln1": {
            "scale": r.take_layers("h.{}.ln_1.weight", n, (d,)),
            "bias": r.take_layers("h.{}.ln_1.bias", n, (d,)),
        },
        "attn": attn,
        "ln2": {
            "scale": r.take_layers("h.{}.ln_2.weight", n, (d,)),
            "bias": r.take_layers("h.{}.ln_2.bias", n, (d,)),
        },
        "mlp": {
            "W_in": r.take_layers("h.{}.mlp.c_fc.weight", n, (m, d), np.transpose),
            "b_in": r.take_layers("h.{}.mlp.c_fc.bias", n, (m,)),
            "W_out": r.take_layers("h.{}.mlp.c_proj.weight", n, (d, m), np.transpose),
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
