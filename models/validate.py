"""Checks of a forward pass's inputs against the model config, each failing with one line that
names the input, what was expected, what came, and the fix.

Shape and dtype checks need no values, so they run anywhere: in `models.forward` they run while
jit traces (once per compiled shape, free afterwards). Value checks (ids inside the vocabulary)
need concrete arrays: under `jax.jit` the ids are tracers whose values are unknown until the
compiled code runs, so those checks are skipped there (`is_traced`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.config import ModelConfig
from models.contract import LAYER_EDIT_FIELDS, Edits

# Edits applied through `_as_rank` in models.transformer: per layer [last], [batch, last] or
# [batch, pos, last].
SCALE_FIELDS = ("resid_add", "head_scale", "neuron_scale")

# The axes after `[batch, pos]` each per-layer edit field meets inside a block.
EDIT_TAIL_AXES = {
    "resid_add": ("d_model",),
    "resid_patch": ("d_model",),
    "resid_patch_mask": (),
    "attn_out_patch": ("d_model",),
    "attn_out_patch_mask": (),
    "mlp_out_patch": ("d_model",),
    "mlp_out_patch_mask": (),
    "z_patch": ("head", "d_head"),
    "z_patch_mask": ("head",),
    "head_scale": ("head",),
    "head_mean": ("head", "d_head"),
    "neuron_scale": ("d_mlp",),
    "neuron_mean": ("d_mlp",),
}


def is_traced(x) -> bool:
    """True for a jax tracer (inside jit, vmap, grad): its shape and dtype are known, its values
    are not."""
    return isinstance(x, jax.core.Tracer)


def model_label(cfg: ModelConfig) -> str:
    """How errors name the model: where it came from, else its family."""
    return cfg.name or cfg.family


def axis_sizes(cfg: ModelConfig) -> dict[str, int]:
    """Sizes of the edit axes after `[batch, pos]`, by TransformerLens name."""
    return {"d_model": cfg.d_model, "head": cfg.n_heads, "d_head": cfg.d_head, "d_mlp": cfg.d_mlp}


def check_tokens(cfg: ModelConfig, tokens):
    """Checks of token ids `[batch, pos]` that need no values (none reads the device): rank,
    integer dtype, and a width within the trained context, for learned (GPT-2, GPT-Neo: W_pos
    has n_ctx rows) and rotary positions (GPT-NeoX: n_ctx = max_position_embeddings, the
    positions it was trained on; past them the rotations were never seen)."""
    if tokens.ndim != 2:
        raise ValueError(
            f"tokens: shape {tokens.shape}; expected [batch, pos] (one prompt: ids[None])"
        )
    # An empty batch carries no id to misread (np.asarray([[]]) is float64).
    if tokens.size and not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(
            f"tokens: dtype {tokens.dtype}; token ids must be integers (a cast would silently "
            "change them): pass an int array, e.g. np.asarray(ids, np.int32), or model.tokenize"
        )
    if tokens.shape[1] > cfg.n_ctx:
        trained = "max_position_embeddings" if cfg.positional == "rotary" else "learned positions"
        raise ValueError(
            f"{tokens.shape[1]} tokens exceed the context length n_ctx={cfg.n_ctx} "
            f"({trained}) of {model_label(cfg)}; truncate the input"
        )


def validate_tokens(cfg: ModelConfig, tokens):
    """Token ids `[batch, pos]` (any array-like, before any cast) must be integers that index the
    vocabulary and fit the context. Values are checked on the host, on the ids as given (an
    int64 id past int32 is refused, not wrapped); a tracer gets the shape and dtype checks only."""
    if is_traced(tokens):
        check_tokens(cfg, tokens)
        return
    try:
        t = np.asarray(tokens)
    except ValueError as e:
        raise ValueError(
            f"tokens: not a [batch, pos] array ({e}); pad every row to one length and pass a "
            "mask (model.tokenize does both)"
        ) from None
    check_tokens(cfg, t)
    if t.size and (t.min() < 0 or t.max() >= cfg.d_vocab):
        raise ValueError(
            f"tokens: ids span [{t.min()}, {t.max()}] but d_vocab is {cfg.d_vocab}; every id "
            f"must be in 0..{cfg.d_vocab - 1} (ids of another tokenizer?)"
        )


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether `shape` broadcasts to `target` without changing it (numpy rules)."""
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(shape[::-1], target[::-1], strict=False))


def check_row_array(name: str, shape: tuple[int, ...], tokens_shape: tuple[int, ...], what: str):
    """`mask` / `segments`: `[batch, pos]` like the tokens (size-1 axes broadcast)."""
    if len(shape) != 2 or not broadcasts_to(shape, tokens_shape):
        raise ValueError(
            f"{name}: shape {shape}; expected the tokens' [batch, pos] = {tokens_shape} ({what})"
        )


def edit_forms(cfg: ModelConfig, name: str, batch: int, pos: int) -> str:
    """The shapes edit field `name` may take, spelled with this run's sizes."""
    sizes = axis_sizes(cfg)
    tail = ", ".join(f"{a}={sizes[a]}" for a in EDIT_TAIL_AXES[name])
    layer = f"layer={cfg.n_layers}"
    if name in SCALE_FIELDS:
        return (
            f"[{layer}, {tail}], [{layer}, batch={batch}, {tail}] or "
            f"[{layer}, batch={batch}, pos={pos}, {tail}]"
        )
    full = ", ".join(a for a in (layer, f"batch={batch}", f"pos={pos}", tail) if a)
    return f"[{full}] (axes after layer may be 1, or left off from the left, to broadcast)"


def edit_fits(cfg: ModelConfig, name: str, shape: tuple[int, ...], batch: int, pos: int) -> bool:
    """Whether an edit of `shape` (layer axis first) meets its block tensor `[batch, pos, ...]`
    the way models.transformer applies it, without changing that tensor's shape."""
    if not shape or shape[0] != cfg.n_layers:
        return False
    sizes = axis_sizes(cfg)
    target = (batch, pos) + tuple(sizes[a] for a in EDIT_TAIL_AXES[name])
    per_layer = shape[1:]
    if name in SCALE_FIELDS:
        if len(per_layer) > 3:
            return False
        # _as_rank: [last] -> [1, 1, last], [batch, last] -> [batch, 1, last].
        if len(per_layer) <= 1:
            per_layer = (1,) * (2 - len(per_layer)) + per_layer
        elif len(per_layer) == 2:
            per_layer = (per_layer[0], 1, per_layer[1])
    return broadcasts_to(per_layer, target)


def check_edits(cfg: ModelConfig, edits: Edits | None, tokens_shape: tuple[int, ...]):
    """Every present `Edits` field against the config and the tokens' `[batch, pos]`."""
    if edits is None:
        return
    batch, pos = tokens_shape
    for name in LAYER_EDIT_FIELDS:
        a = getattr(edits, name)
        if a is None:
            continue
        shape = tuple(jnp.shape(a))
        if not edit_fits(cfg, name, shape, batch, pos):
            layer = (
                ""
                if shape[:1] == (cfg.n_layers,)
                else f"layer axis first, n_layers={cfg.n_layers}: "
            )
            raise ValueError(
                f"edits.{name}: shape {shape}; expected {layer}"
                f"{edit_forms(cfg, name, batch, pos)}; reshape the edit (see models.Edits)"
            )


def check_shapes(cfg: ModelConfig, tokens_shape, mask=None, edits=None, segments=None):
    """`mask`, `segments` and `edits` against the tokens' shape `[batch, pos]` and the config
    (no values read: safe at trace time)."""
    tokens_shape = tuple(tokens_shape)
    if mask is not None:
        check_row_array("mask", tuple(jnp.shape(mask)), tokens_shape, "1 = real token")
    if segments is not None:
        check_row_array("segments", tuple(jnp.shape(segments)), tokens_shape, "0 = padding")
    check_edits(cfg, edits, tokens_shape)
