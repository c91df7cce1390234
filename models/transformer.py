"""The shared decoder-only transformer: Flax modules for one block, run over stacked layers.

Parameters of the `n_layers` blocks are stacked on a leading layer axis and the blocks run under
`jax.lax.scan`, so compile time does not grow with depth, and a run can start at any layer from a
given residual stream (`run_blocks`), which is what makes sweeps cheap: the layers below the
edited one run once.

Parameter tree (TransformerLens names; layouts chosen so every projection is one contiguous
matmul, d_model first on the way in, d_model last on the way out):

    embed:   W_E [d_vocab, d_model], W_pos [n_ctx, d_model] (learned positions only)
    blocks:  ln1.{scale,bias} [layer, d_model]
             attn.W_Q / W_K / W_V [layer, d_model, head, d_head], b_Q / b_K / b_V [layer, head, d_head]
             attn.W_O [layer, head, d_head, d_model], b_O [layer, d_model]
             ln2.{scale,bias} [layer, d_model]
             mlp.W_in [layer, d_model, d_mlp], b_in [layer, d_mlp]
             mlp.W_out [layer, d_mlp, d_model], b_out [layer, d_model]
    ln_final.{scale,bias} [d_model]
    unembed: W_U [d_model, d_vocab], b_U [d_vocab] (untied models only; tied ones use W_E^T)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models.config import DTYPES, ModelConfig, dtype_name
from models.contract import LAYER_EDIT_FIELDS, Edits, Record, Trace
from models.sharding import constrain_batch, replicate_outputs
from models.validate import check_shapes, check_tokens

Params = dict[str, Any]

_INIT = nn.initializers.normal(stddev=0.02)


def _gelu(x, tanh: bool):
    """GELU computed in fp32 and rounded once to x's dtype (as torch's kernels do; a no-op cast
    in fp32)."""
    return jax.nn.gelu(x.astype(jnp.float32), approximate=tanh).astype(x.dtype)


def _mix(x, patch, mask):
    """`x` where mask is 0, `patch` where it is 1. mask has x's shape without the last axis."""
    if patch is None:
        return x
    m = mask[..., None].astype(x.dtype)
    return x + m * (patch.astype(x.dtype) - x)


def _as_rank(a, rank: int, name: str):
    """Line a per-layer edit up with `[batch, pos, last]` (`rank` dims) by inserting axes.

    Per-layer edits come as [last], [batch, last] or [batch, pos, last] (the scan has already
    sliced the layer axis off): [last] -> [1, 1, last], [batch, last] -> [batch, 1, last].
    """
    if a.ndim > rank:
        raise ValueError(f"edit {name} has {a.ndim + 1} dims with layer; at most {rank + 1}")
    if a.ndim == 1:
        return a.reshape((1,) * (rank - 1) + a.shape)
    return a.reshape(a.shape[:1] + (1,) * (rank - a.ndim) + a.shape[1:])


@dataclasses.dataclass(frozen=True)
class Context:
    """Per-run facts every block needs (not per layer).

    positions: [batch, pos] int, position ids of the queries (from the mask: left padding ok).
    q_slots: [pos] int, the slot index of each query in the key sequence (its cache slot).
    key_valid: [batch, key] bool, which key slots hold real tokens.
    last: [batch] int or None, the index of each row's last real token (for Record.at="last").
    segments: [batch, pos] int or None. Packed rows (several prompts one after another in a
      row): 0 at padding, the same id > 0 over each prompt's contiguous run; a query then sees
      only keys of its own prompt. None: one prompt per row.
    """

    positions: jnp.ndarray
    q_slots: jnp.ndarray
    key_valid: jnp.ndarray
    last: jnp.ndarray | None
    segments: jnp.ndarray | None = None


jax.tree_util.register_dataclass(
    Context, data_fields=["positions", "q_slots", "key_valid", "last", "segments"], meta_fields=[]
)


class LayerNorm(nn.Module):
    """LayerNorm with the two-pass variance torch uses (flax's fast variance drifts ~1e-6)."""

    eps: float

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,))
        bias = self.param("bias", nn.initializers.zeros, (d,))
        x32 = x.astype(jnp.float32)
        mu = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mu).mean(-1, keepdims=True)
        y = (x32 - mu) * jax.lax.rsqrt(var + self.eps)
        return (y * scale + bias).astype(x.dtype)


def rotary(x, positions, rotary_dim: int, base: float):
    """Rotate the first `rotary_dim` dims of each head (half-split pairs i, i + rotary_dim/2).

    x: [batch, pos, head, d_head]; positions: [batch, pos].
    """
    half = rotary_dim // 2
    inv_freq = 1.0 / (base ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [batch, pos, half]
    cos = jnp.cos(angles)[:, :, None, :].astype(x.dtype)
    sin = jnp.sin(angles)[:, :, None, :].astype(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:rotary_dim], x[..., rotary_dim:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], axis=-1)


def _allowed(ctx: Context, n_keys: int, window, last_query: bool):
    """Which keys each query sees: causal, within `window`, real, and (packed rows) of its own
    prompt. `[batch, 1, query, key]` bool; query = the last real token with `last_query`."""
    key_slots = jnp.arange(n_keys)
    if last_query:
        qs = ctx.last[:, None]  # [batch, 1]: a query's slot is its position index (no cache)
        allowed = (key_slots[None, :] <= qs) & (key_slots[None, :] > qs - window)
        return (allowed & ctx.key_valid)[:, None, None, :]  # [batch, 1, 1, key]
    qs = ctx.q_slots[:, None]
    allowed = (key_slots[None, :] <= qs) & (key_slots[None, :] > qs - window)  # [pos, key]
    allowed = allowed[None, None] & ctx.key_valid[:, None, None, :]
    if ctx.segments is not None:
        seg = ctx.segments
        allowed = allowed & (seg[:, None, :, None] == seg[:, None, None, :])
    return allowed


def _edit_z(z, edits: dict):
    """z `[batch, query, head, d_head]` under the per-layer z patch and head scale (and mean)."""
    z = _mix(z, edits.get("z_patch"), edits.get("z_patch_mask"))
    if edits.get("head_scale") is None:
        return z
    s = _as_rank(edits["head_scale"], 3, "head_scale")[..., None].astype(z.dtype)
    mean = edits.get("head_mean")
    return s * z if mean is None else s * z + (1 - s) * mean.astype(z.dtype)


class Attention(nn.Module):
    """Multi-head attention. `last_query=True`: only each row's last real token (`ctx.last`) is a
    query (keys and values still at every position), for runs that read nothing else."""

    cfg: ModelConfig
    last_query: bool = False

    @nn.compact
    def __call__(self, x, ctx: Context, window, edits: dict, record: Record, cache=None):
        """x: [batch, pos, d_model] (already layer-normed). Returns (attn_out, rec, cache);
        attn_out [batch, query, d_model], query = pos (or 1 with `last_query`).

        cache: None, or (K, V) each [batch, key, head, d_head]; this call's keys and values are
        written at slots `ctx.q_slots` and attention runs over the whole cache.
        """
        c = self.cfg
        dm, h, e = c.d_model, c.n_heads, c.d_head
        if self.last_query and (cache is not None or ctx.last is None):
            raise ValueError("last_query needs ctx.last (Record(at='last')) and no KV cache")
        W_Q = self.param("W_Q", _INIT, (dm, h, e))
        W_K = self.param("W_K", _INIT, (dm, h, e))
        W_V = self.param("W_V", _INIT, (dm, h, e))
        W_O = self.param("W_O", _INIT, (h, e, dm))
        x_q = take_last(x, ctx.last)[:, None] if self.last_query else x  # [batch, query, d]
        q = jnp.einsum("bsd,dhe->bshe", x_q, W_Q)
        k = jnp.einsum("bsd,dhe->bshe", x, W_K)
        v = jnp.einsum("bsd,dhe->bshe", x, W_V)
        if c.qkv_bias:
            q = q + self.param("b_Q", nn.initializers.zeros, (h, e))
            k = k + self.param("b_K", nn.initializers.zeros, (h, e))
            v = v + self.param("b_V", nn.initializers.zeros, (h, e))
        if c.positional == "rotary":
            q_pos = ctx.positions  # [batch, query]
            if self.last_query:
                q_pos = take_last(ctx.positions, ctx.last)[:, None]
            q = rotary(q, q_pos, c.rotary_dim, c.rotary_base)
            k = rotary(k, ctx.positions, c.rotary_dim, c.rotary_base)
        if cache is not None:
            start = ctx.q_slots[0]
            K = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, start, 0, 0))
            V = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, start, 0, 0))
            k, v, cache = K, V, (K, V)

        # Scores in fp32 whatever the param dtype (GPT-Neo and Pythia upcast; harmless for GPT-2).
        scores = jnp.einsum("bqhe,bkhe->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
        if c.scale_attn:
            scores = scores * (e**-0.5)
        if ctx.segments is not None and cache is not None:
            raise ValueError("packed rows (segments) cannot decode with a KV cache")
        allowed = _allowed(ctx, k.shape[1], window, self.last_query)
        # One finite minimum, so a row with every key masked (padding) stays finite.
        scores = jnp.where(allowed, scores, jnp.finfo(jnp.float32).min)
        pattern = jax.nn.softmax(scores, axis=-1)
        z = _edit_z(jnp.einsum("bhqk,bkhe->bqhe", pattern.astype(v.dtype), v), edits)
        out = jnp.einsum("bqhe,hed->bqd", z, W_O)
        if c.out_bias:
            out = out + self.param("b_O", nn.initializers.zeros, (dm,))
        out = _mix(out, edits.get("attn_out_patch"), edits.get("attn_out_patch_mask"))
        rec = {}
        if record.z:
            rec["z"] = z
        if record.result:
            rec["result"] = jnp.einsum("bqhe,hed->bqhd", z, W_O)
        if record.pattern:
            rec["pattern"] = pattern
        return out, rec, cache


class MLP(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, edits: dict, record: Record):
        c = self.cfg
        W_in = self.param("W_in", _INIT, (c.d_model, c.d_mlp))
        W_out = self.param("W_out", _INIT, (c.d_mlp, c.d_model))
        pre = x @ W_in
        if c.mlp_bias:
            pre = pre + self.param("b_in", nn.initializers.zeros, (c.d_mlp,))
        post = _gelu(pre, c.gelu_tanh)
        if edits.get("neuron_scale") is not None:
            s = _as_rank(edits["neuron_scale"], 3, "neuron_scale").astype(post.dtype)
            mean = edits.get("neuron_mean")
            post = s * post if mean is None else s * post + (1 - s) * mean.astype(post.dtype)
        out = post @ W_out
        if c.mlp_bias:
            out = out + self.param("b_out", nn.initializers.zeros, (c.d_model,))
        out = _mix(out, edits.get("mlp_out_patch"), edits.get("mlp_out_patch_mask"))
        return out, ({"mlp_post": post} if record.mlp_post else {})


class Block(nn.Module):
    """One transformer block. Sequential (GPT-2, GPT-Neo) or parallel residual (Pythia)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, ctx: Context, window, edits: dict, record: Record, cache=None):
        """x: resid_pre [batch, pos, d_model] -> (resid_post, rec: dict of [batch, pos, ...], cache)."""
        c = self.cfg
        x = _mix(x, edits.get("resid_patch"), edits.get("resid_patch_mask"))
        if edits.get("resid_add") is not None:
            x = x + _as_rank(edits["resid_add"], 3, "resid_add").astype(x.dtype)
        ln1 = LayerNorm(c.ln_eps, name="ln1")
        ln2 = LayerNorm(c.ln_eps, name="ln2")
        attn_out, rec, cache = Attention(c, name="attn")(ln1(x), ctx, window, edits, record, cache)
        if c.parallel_residual:
            mlp_out, mrec = MLP(c, name="mlp")(ln2(x), edits, record)
            mid = None
            post = x + attn_out + mlp_out
        else:
            mid = x + attn_out
            mlp_out, mrec = MLP(c, name="mlp")(ln2(mid), edits, record)
            post = mid + mlp_out
        rec.update(mrec)
        if record.resid_pre:
            rec["resid_pre"] = x
        if record.resid_mid:
            rec["resid_mid"] = mid
        if record.attn_out:
            rec["attn_out"] = attn_out
        if record.mlp_out:
            rec["mlp_out"] = mlp_out
        return post, rec, cache


class Embed(nn.Module):
    cfg: ModelConfig

    @nn.compact
    def __call__(self, tokens, positions):
        c = self.cfg
        W_E = self.param("W_E", _INIT, (c.d_vocab, c.d_model))
        x = jnp.take(W_E, tokens, axis=0)
        if c.positional == "learned":
            W_pos = self.param("W_pos", nn.initializers.normal(0.01), (c.n_ctx, c.d_model))
            x = x + jnp.take(W_pos, positions, axis=0)
        return x


class Unembed(nn.Module):
    """Final layer norm and the unembedding (W_E^T when tied)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x, W_E, vocab_ids=None):
        """x: [..., d_model] -> logits [..., d_vocab] (or [..., len(vocab_ids)])."""
        c = self.cfg
        x = LayerNorm(c.ln_eps, name="ln_final")(x)
        if c.tied_unembed:
            W = W_E if vocab_ids is None else W_E[vocab_ids]
            logits = jnp.einsum("...d,vd->...v", x, W)
        else:
            W_U = self.param("W_U", _INIT, (c.d_model, c.d_vocab))
            logits = x @ (W_U if vocab_ids is None else W_U[:, vocab_ids])
        if c.unembed_bias:
            b_U = self.param("b_U", nn.initializers.zeros, (c.d_vocab,))
            logits = logits + (b_U if vocab_ids is None else b_U[vocab_ids])
        return logits


# ---------------------------------------------------------------------------------------------
# Initialisation


def param_shapes(cfg: ModelConfig) -> Params:
    """The parameter tree as `jax.ShapeDtypeStruct`s (traced abstractly: nothing is computed)."""

    def build(key):
        k_embed, k_blocks, k_unembed = jax.random.split(key, 3)
        tokens = jnp.zeros((1, 1), jnp.int32)
        embed = Embed(cfg).init(k_embed, tokens, tokens)["params"]
        ctx = Context(tokens, jnp.zeros((1,), jnp.int32), jnp.ones((1, 1), bool), None)
        x = jnp.zeros((1, 1, cfg.d_model))

        def one_block(k):
            return Block(cfg).init(k, x, ctx, 1, {}, Record())["params"]

        blocks = jax.vmap(one_block)(jax.random.split(k_blocks, cfg.n_layers))
        unembed = Unembed(cfg).init(k_unembed, x, embed["W_E"])["params"]
        params = {"embed": embed, "blocks": blocks, "ln_final": unembed["ln_final"]}
        rest = {k: v for k, v in unembed.items() if k != "ln_final"}
        if rest:
            params["unembed"] = rest
        return params

    return jax.eval_shape(build, jax.random.key(0))


def init_params(cfg: ModelConfig, key: int | jax.Array = 0, std: float = 0.02) -> Params:
    """Random parameters: weights normal(0, std) (positions std/2), biases 0, layer-norm gains 1;
    layers stacked. Drawn with numpy from the integer seed `key` (an XLA-compiled initialiser
    takes seconds to compile; this takes none)."""
    seed = int(jax.random.key_data(key).sum()) if isinstance(key, jax.Array) else int(key)
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale":
            return jnp.ones(leaf.shape, leaf.dtype)
        if name.startswith("b") or name == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        s = std / 2 if name == "W_pos" else std
        return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * s)

    return jax.tree_util.tree_map_with_path(draw, param_shapes(cfg))


def cast_params(params: Params, dtype) -> Params:
    """Every leaf in `dtype` ('float32', 'bfloat16', 'float16', or a jnp dtype); leaves already in
    it are returned as they are. Layer-norm gains and biases are cast too, as transformers'
    `model.to(dtype)` does: their arithmetic still runs in fp32 (see models.contract)."""
    dt = DTYPES[dtype_name(dtype)]
    return jax.tree_util.tree_map(lambda a: a if a.dtype == dt else jnp.asarray(a, dt), params)


def params_dtype(params: Params) -> str:
    """The dtype the model computes in: its token embedding's ('float32', 'bfloat16', ...)."""
    return dtype_name(params["embed"]["W_E"].dtype)


# ---------------------------------------------------------------------------------------------
# Running


def make_context(tokens, mask, record: Record, segments=None) -> Context:
    """Positions, slots and key validity for a full (non-cached) pass. mask: [batch, pos].

    segments: None, or [batch, pos] int for packed rows (see `Context`): positions then restart
    at 0 where each segment starts, and `mask` is taken as `segments > 0`.
    """
    q_slots = jnp.arange(tokens.shape[1], dtype=jnp.int32)
    if segments is not None:
        if record.at == "last" or record.logits == "last":
            raise ValueError(
                "segments: packed rows have no single last token; use Record(at='all') and "
                "logits 'all' or 'none', and read each prompt's last position yourself"
            )
        segments = segments.astype(jnp.int32)
        mask = segments > 0
        starts = jnp.concatenate(
            [jnp.ones_like(mask[:, :1]), segments[:, 1:] != segments[:, :-1]], axis=1
        )
        first = jax.lax.cummax(jnp.where(starts, q_slots[None, :], 0), axis=1)
        positions = jnp.where(mask, q_slots[None, :] - first, 0).astype(jnp.int32)
        return Context(positions, q_slots, mask, None, segments)
    mask = mask.astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    last = None
    if record.at == "last" or record.logits == "last":
        last = last_index(mask)
    return Context(positions, q_slots, mask, last)


def last_index(mask):
    """[batch, pos] mask -> [batch] index of each row's last real token."""
    pos = jnp.arange(mask.shape[1])
    return jnp.max(jnp.where(mask.astype(bool), pos, -1), axis=1).astype(jnp.int32)


def take_last(a, last):
    """[batch, pos, ...] -> [batch, ...] at each row's `last` index `[batch]`."""
    return jnp.take_along_axis(a, last.reshape((-1, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]


def _edit_slices(cfg: ModelConfig, edits: Edits | None, layers: range):
    """The per-layer edit fields present, cut to `layers`, as a dict scanned over layer."""
    if edits is None:
        return {}
    out = {}
    for name in LAYER_EDIT_FIELDS:
        a = getattr(edits, name)
        if a is None:
            continue
        if a.shape[0] != cfg.n_layers:
            raise ValueError(
                f"edit {name} has leading axis {a.shape[0]}; it must be n_layers={cfg.n_layers}"
            )
        out[name] = a[layers.start : layers.stop]
    return out


def run_blocks(
    cfg: ModelConfig,
    blocks: Params,
    x,
    ctx: Context,
    edits: Edits | None = None,
    record: Record = Record(),
    layers: range | None = None,
    cache=None,
    unroll: bool = False,
):
    """Run blocks `layers` (default all) from residual `x` [batch, pos, d_model].

    `blocks` holds ALL layers' stacked params; `edits` cover all layers. Returns
    (resid after the last block run, rec: dict of stacked `[layer_run, ...]` arrays, cache).
    cache: None or (K, V) each [layer, batch, key, head, d_head] for the layers run.
    `unroll=True` runs a Python loop instead of a scan (same numbers; for checking the scan).
    """
    layers = layers if layers is not None else range(cfg.n_layers)
    if record.resid_mid and cfg.parallel_residual:
        raise ValueError(f"{cfg.name or cfg.family} has parallel residual: no resid_mid to record")
    # The scan runs over layer indices and each step reads its layer out of the full stack: a
    # static slice `blocks[start:stop]` as the scan's xs would be a copy of those layers' weights
    # per call, and a sweep that starts runs at many layers in one program (heads.head_sweep,
    # steering) kept all of them alive at once (memory growing with layers^2 x layer size).
    windows = jnp.asarray(cfg.windows[layers.start : layers.stop], jnp.int32)
    index = jnp.arange(layers.start, layers.stop, dtype=jnp.int32)
    xs = {"i": index, "window": windows, "edits": _edit_slices(cfg, edits, layers)}
    if cache is not None:
        xs["cache"] = cache
    block = Block(cfg)

    def step(x, xs_l):
        p = jax.tree_util.tree_map(
            lambda a: jax.lax.dynamic_index_in_dim(a, xs_l["i"], keepdims=False), blocks
        )
        y, rec, new_cache = block.apply(
            {"params": p}, x, ctx, xs_l["window"], xs_l["edits"], record, xs_l.get("cache")
        )
        if record.at == "last":
            rec = {k: (v if k == "pattern" else take_last(v, ctx.last)) for k, v in rec.items()}
        return y, (rec, new_cache)

    if unroll:
        recs, caches = [], []
        for i in range(len(layers)):
            x, (rec, c) = step(x, jax.tree_util.tree_map(lambda a, i=i: a[i], xs))
            recs.append(rec)
            caches.append(c)
        stack = lambda *a: jnp.stack(a)
        rec = jax.tree_util.tree_map(stack, *recs) if recs else {}
        new_cache = jax.tree_util.tree_map(stack, *caches) if cache is not None else None
        return x, rec, new_cache
    x, (rec, new_cache) = jax.lax.scan(step, x, xs)
    return x, rec, new_cache


# Edits `final_at_last` and `finish_block` can hold: per layer, no position axis (one query).
AT_LAST_EDIT_FIELDS = ("head_scale", "head_mean", "neuron_scale", "neuron_mean")


def _layer_edits(cfg: ModelConfig, edits: Edits | None, layer: int) -> dict:
    """The per-layer edit fields present, at one layer, as the dict the modules read."""
    return {k: a[0] for k, a in _edit_slices(cfg, edits, range(layer, layer + 1)).items()}


def _check_at_last_edits(edits: Edits | None):
    if edits is None:
        return
    for name in LAYER_EDIT_FIELDS:
        if name not in AT_LAST_EDIT_FIELDS and getattr(edits, name) is not None:
            raise ValueError(
                f"edit {name} cannot run at the last query only; use {AT_LAST_EDIT_FIELDS}"
            )


def finish_block(cfg: ModelConfig, blocks: Params, layer: int, resid_mid, edits: Edits | None):
    """The MLP half of sequential block `layer`: resid_mid `[..., d_model]` -> resid_post.

    `blocks` and `edits` cover all layers (edits: `AT_LAST_EDIT_FIELDS` only). Parallel-residual
    models have no resid_mid: their MLP reads the block input.
    """
    if cfg.parallel_residual:
        raise ValueError(f"{cfg.name or cfg.family} has parallel residual: no resid_mid")
    _check_at_last_edits(edits)
    p = jax.tree_util.tree_map(lambda a: a[layer], blocks)
    ed = _layer_edits(cfg, edits, layer)
    ln2 = LayerNorm(cfg.ln_eps).apply({"params": p["ln2"]}, resid_mid)
    return resid_mid + MLP(cfg).apply({"params": p["mlp"]}, ln2, ed, Record())[0]


def block_at_last(
    cfg: ModelConfig, blocks: Params, layer: int, x, ctx: Context, edits: Edits | None
):
    """Block `layer` for each row's last token only (`ctx.last`): resid_pre `[batch, pos,
    d_model]` (every position: keys and values need them) -> resid_post `[batch, d_model]`.

    The same arithmetic as `Block` at that token; edits: `AT_LAST_EDIT_FIELDS` only.
    """
    _check_at_last_edits(edits)
    p = jax.tree_util.tree_map(lambda a: a[layer], blocks)
    ed = _layer_edits(cfg, edits, layer)
    ln1 = LayerNorm(cfg.ln_eps).apply({"params": p["ln1"]}, x)
    attn = Attention(cfg, last_query=True)
    window = cfg.windows[layer]
    attn_out = attn.apply({"params": p["attn"]}, ln1, ctx, window, ed, Record())[0][:, 0]
    x_last = take_last(x, ctx.last)

    def mlp(y):  # [batch, d_model]; a position axis of 1 lines neuron edits up with it
        y = LayerNorm(cfg.ln_eps).apply({"params": p["ln2"]}, y)
        return MLP(cfg).apply({"params": p["mlp"]}, y[:, None], ed, Record())[0][:, 0]

    if cfg.parallel_residual:
        return x_last + attn_out + mlp(x_last)
    mid = x_last + attn_out
    return mid + mlp(mid)


def final_at_last(cfg: ModelConfig, blocks: Params, x, ctx: Context, start: int, edits=None):
    """From resid_pre of block `start` (`[batch, pos, d_model]`, every position) to the final
    residual at each row's last token `[batch, d_model]` (before ln_final): blocks `start` to
    n_layers - 2 in full, the last one for the last query only (`block_at_last`). start ==
    n_layers: x already is the final residual. ctx: `make_context(..., Record(at="last"))`;
    edits: all layers, `AT_LAST_EDIT_FIELDS` only, without batch or position axes.
    """
    n = cfg.n_layers
    if start >= n:
        return take_last(x, ctx.last)
    if start < n - 1:
        x, _, _ = run_blocks(cfg, blocks, x, ctx, edits, Record(), layers=range(start, n - 1))
    return block_at_last(cfg, blocks, n - 1, x, ctx, edits)


def embed(cfg: ModelConfig, params: Params, tokens, positions):
    """tokens, positions [batch, pos] -> resid_pre[0] [batch, pos, d_model], split over the
    mesh's 'data' axis when one is in context (models.sharding.constrain_batch)."""
    return constrain_batch(Embed(cfg).apply({"params": params["embed"]}, tokens, positions))


def unembed(cfg: ModelConfig, params: Params, x, vocab_ids=None):
    """Final residual [..., d_model] -> logits [..., d_vocab] (or the `vocab_ids` columns)."""
    p = {"ln_final": params["ln_final"], **params.get("unembed", {})}
    return Unembed(cfg).apply({"params": p}, x, params["embed"]["W_E"], vocab_ids)


@functools.partial(jax.jit, static_argnames=("cfg", "record", "unroll", "dtype"))
def forward(
    cfg: ModelConfig,
    params: Params,
    tokens,
    mask=None,
    edits: Edits | None = None,
    record: Record = Record(),
    vocab_ids=None,
    unroll: bool = False,
    segments=None,
    dtype: str | None = None,
):
    """logits, trace = forward(cfg, params, tokens, mask, edits, record).

    tokens: [batch, pos] int32; mask: [batch, pos] (1 = real token; right or left padding);
    edits: `Edits` or None; record: `Record` (static). vocab_ids: optional [n] int, to compute
    only those unembedding columns. segments: optional [batch, pos] int for packed rows (several
    prompts per row, each a contiguous run of one id > 0, padding 0 at the end; replaces `mask`):
    every prompt gets the positions and attention it would get alone. Returns logits per
    `record.logits` (None for "none") and a `Trace` (shapes in `Record`'s docstring).

    The run computes in the params' dtype (fp32 unless loaded otherwise); `dtype` ('bfloat16',
    'float16', 'float32'; static) casts the params inside the compiled call first. Logits and
    trace come out in that dtype, attention `pattern` in fp32 (models.contract: Numerics).
    """
    if dtype is not None:
        params = cast_params(params, dtype)
    # Shapes and dtypes only: this body runs at trace time, where ids have no values.
    check_tokens(cfg, tokens)
    check_shapes(cfg, tokens.shape, mask, edits, segments)
    if mask is None:
        mask = jnp.ones(tokens.shape, bool)
    ctx = make_context(tokens, mask, record, segments)
    x = embed(cfg, params, tokens, ctx.positions)
    x, rec, _ = run_blocks(cfg, params["blocks"], x, ctx, edits, record, unroll=unroll)
    if record.resid_post:
        rec["resid_post"] = take_last(x, ctx.last) if record.at == "last" else x
    logits = None
    if record.logits == "last":
        logits = unembed(cfg, params, take_last(x, ctx.last), vocab_ids)
    elif record.logits == "all":
        logits = unembed(cfg, params, x, vocab_ids)
    return replicate_outputs((logits, Trace(**rec)))
