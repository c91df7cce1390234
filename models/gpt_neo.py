"""GPT-Neo (`GPTNeoForCausalLM`): separate q/k/v projections without bias, attention scores NOT
scaled by 1/sqrt(d_head), alternating global / local (windowed) attention layers, learned
positions, tanh GELU, tied unembedding."""

from __future__ import annotations

import sys

import numpy as np

from models.config import GLOBAL_WINDOW, ModelConfig
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

FAMILY = "gpt_neo"
MODEL_TYPES = ("gpt_neo",)

# config.json of the hub checkpoints (EleutherAI/gpt-neo-125M, -1.3B, -2.7B): every field that
# sets the architecture. Layers alternate global / local attention (window 256) from layer 0;
# intermediate_size is null (MLP width 4 * hidden_size); the weights ship in fp32.
PUBLISHED = {
    "gpt-neo-125m": dict(num_layers=12, hidden_size=768, num_heads=12),
    "gpt-neo-1.3b": dict(num_layers=24, hidden_size=2048, num_heads=16),
    "gpt-neo-2.7b": dict(num_layers=32, hidden_size=2560, num_heads=20),
    # yellowback/gpt-neo-japanese-1.3B: GPT-Neo-1.3B's shape with a 32,000-token byte-level BPE
    # (tokenizer.json), bos = eos = 0 (pad 1, which the forward never reads); fp32 weights. From
    # the hub config.json at its first commit 500e541 as shown on huggingface.co (the later "rm
    # path" commit removed only _name_or_path, going by the file sizes, 1,256 -> 1.21 kB).
    "gpt-neo-japanese-1.3b": dict(
        num_layers=24,
        hidden_size=2048,
        num_heads=16,
        vocab_size=32000,
        bos_token_id=0,
        eos_token_id=0,
    ),
}
_BASE = dict(
    model_type="gpt_neo",
    vocab_size=50257,
    max_position_embeddings=2048,
    intermediate_size=None,
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
    """The HF config.json dict of a published GPT-Neo size."""
    p = PUBLISHED[name]
    return with_layers({**_BASE, **p}, p["num_layers"])


def with_layers(hf: dict, n_layers: int) -> dict:
    """`hf` with `n_layers` blocks, alternating global / local from layer 0 as published (an
    even count), every other setting kept. A stale `attention_layers` list is dropped."""
    if n_layers % 2:
        raise ValueError(f"gpt_neo layers alternate global/local: n_layers={n_layers} is odd")
    out = {k: v for k, v in hf.items() if k != "attention_layers"}
    return {
        **out,
        "num_layers": n_layers,
        "attention_types": [[["global", "local"], n_layers // 2]],
    }


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


# Checkpoint names start with this (stripped before the plan's names); tensors that are not
# parameters: causal-mask buffers, and lm_head (tied: the token embedding).
PREFIXES = ("transformer.",)
SKIP = (r"h\.\d+\.attn\.attention\.(masked_)?bias", r"lm_head\.weight")


def plan(cfg: ModelConfig, has=None) -> list[Take]:
    """Every checkpoint tensor and the params it fills (`models.convert.Take`). torch Linear
    weights are stored [out, in]: q/k/v rows run over the heads' (head, d_head), out_proj and
    c_proj rows over d_model, c_fc rows over d_mlp."""
    d, h, e, m = cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    attn = lambda w: ("blocks", "attn", w)
    mlp = lambda w: ("blocks", "mlp", w)
    proj = lambda a: a.T.reshape(
        d, -1, e
    )  # [(head, d_head) rows, d_model] -> [d_model, head, d_head]
    takes = [
        Take("wte.weight", (cfg.d_vocab, d), (("embed", "W_E"),), axis=0),
        Take("wpe.weight", (cfg.n_ctx, d), (("embed", "W_pos"),), axis=0),
        *layer_norm("h.{}.ln_1", "blocks/ln1", d),
    ]
    for x in "qkv":
        key = f"h.{{}}.attn.attention.{x}_proj.weight"
        takes.append(Take(key, (d, d), (attn(f"W_{x.upper()}"),), fn=proj, axis=1, unit=e))
    return takes + [
        Take(
            "h.{}.attn.attention.out_proj.weight",
            (d, d),
            (attn("W_O"),),
            fn=lambda a: a.T.reshape(h, e, -1),  # rows: d_model out -> W_O [head, d_head, rows]
            axis=2,
        ),
        Take("h.{}.attn.attention.out_proj.bias", (d,), (attn("b_O"),)),
        *layer_norm("h.{}.ln_2", "blocks/ln2", d),
        Take("h.{}.mlp.c_fc.weight", (m, d), (mlp("W_in"),), np.transpose, axis=1),
        Take("h.{}.mlp.c_fc.bias", (m,), (mlp("b_in"),)),
        Take("h.{}.mlp.c_proj.weight", (d, m), (mlp("W_out"),), np.transpose, axis=1),
        Take("h.{}.mlp.c_proj.bias", (d,), (mlp("b_out"),)),
        *layer_norm("ln_f", "ln_final", d),
    ]


def convert(state: dict[str, np.ndarray], cfg: ModelConfig) -> dict:
    """HF state dict (numpy) -> jaxcirc params (numpy fp32, layers stacked)."""
    return convert_state(state, cfg, sys.modules[__name__])
