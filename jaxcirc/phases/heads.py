"""Study phase 7: a score for every (layer, head, emotion), by three methods, all heads at once.

Every score is a *support* score: how much the head pushes an emotion measure UP on that
emotion's own prompts (positive = the head carries the emotion, negative = it works against it):

| method        | score of head (l, h) for emotion e, one value per prompt of e                       |
|---------------|-------------------------------------------------------------------------------------|
| "exact"       | m_e(clean) - m_e(head removed), the removal applied at every position; exact         |
| "direct"      | what removing the head changes in the final residual directly (its write minus the   |
|               | write of its reference z), read by m_e; later layers ignored; the logit difference   |
|               | uses the clean run's final layer-norm scale (frozen)                                 |
| "attribution" | sum over positions of grad_z m_e . (z - z_ref): the first-order estimate of "exact"  |
|               | (attribution patching), every head from one forward and one backward pass            |

Removal kinds ("ablation"): "zero" (z_ref = 0) and "mean" (z_ref = the head's mean z over the
neutral prompts' real tokens). With "mean", attribution is gradient x (emotional - neutral)
activation difference: the linear estimate of patching the head's neutral output in.

Measures, read at each prompt's last real token after the last block (before the final LN):
  "projection"  resid_post . unit(v_e), v_e the emotion vector's last row (`[n_layers + 1,
                d_model]` vectors: row n_layers is resid_post)
  "logit_diff"  mean logit of e's single-token words - mean logit of the other emotions' words
Control: the projection onto `n_random` random unit directions (seeded), scored the same way on
all emotional prompts, gives each head's null band: a head that writes a large norm in every
direction scores high on any direction, so a projection score only counts outside its band.

The exact sweep ("branch sweep") never recomputes what cannot change: the clean run records
every block's input, attention output and per-head z once; removing head (l, h) changes nothing
before layer l, and in layer l only attn_out, by -(z_h - z_ref) W_O[h], so each head's run
starts from the clean resid_mid of its layer minus that term (parallel-residual models: from the
clean resid_post), runs the rest of its layer's MLP and the later layers, and in the last layer
computes only the last query (keys and values still at every position). The measures need only
the final residual at the last token (projections) and their words' unembedding columns.
Rows (one per head and removal kind) run through the later layers by one of three strategies:
"fold" (rows folded into the batch axis), "vmap" (over rows), "map" (`lax.map` over chunks of
`chunk` rows folded into the batch). benchmarks/bench_heads.py measures them; "map" won (see
`configs.sections.heads()`'s strategy for the numbers).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from scipy import stats as sps

from jaxcirc.core.measures import WordIds, unit, word_token_ids
from jaxcirc.core.stats import bootstrap_ci, summarise_null
from jaxcirc.infra import artifacts
from jaxcirc.report import plots
from models.config import ModelConfig
from models.contract import Edits, Record
from models.transformer import MLP, Context, LayerNorm, make_context, rotary, run_blocks
from models.transformer import forward as model_forward
from models.transformer import unembed as model_unembed

METHODS = ("exact", "direct", "attribution")
MEASURES = ("projection", "logit_diff")
KINDS = ("zero", "mean")
STRATEGIES = ("fold", "vmap", "map")
_BASE_EDIT_FIELDS = ("head_scale", "head_mean", "neuron_scale", "neuron_mean")


# ---------------------------------------------------------------------------------------------
# Config


# ---------------------------------------------------------------------------------------------
# Readout: every measure as columns of the final residual at the last token


@dataclasses.dataclass(frozen=True)
class Readout:
    """What the measures read from a final residual `x [..., d_model]` (before ln_final).

    emotions: names in order; directions `[E, d_model]` unit emotion vectors; random
    `[R, d_model]` unit random directions (control); vocab_ids `[n]` the unembedding columns
    needed; word_weights `[n, E]`: logit_diff_e = logits[vocab_ids] @ word_weights[:, e]
    (+1/|words of e| on e's words, -1/|other words| on the other emotions' words).
    """

    emotions: tuple[str, ...]
    directions: Any
    random: Any
    vocab_ids: Any
    word_weights: Any

    @property
    def n_emotions(self) -> int:
        return len(self.emotions)


jax.tree_util.register_dataclass(
    Readout,
    data_fields=["directions", "random", "vocab_ids", "word_weights"],
    meta_fields=["emotions"],
)


def make_readout(
    cfg: ModelConfig,
    vectors: Mapping[str, Any],
    word_ids: WordIds,
    n_random: int = 16,
    seed: int = 0,
) -> Readout:
    """Readout from per-emotion vectors `[n_layers + 1, d_model]` (last row: resid_post) and word
    ids with the same emotions (in the same order)."""
    emotions = tuple(vectors)
    if len(emotions) < 2:
        raise ValueError(
            f"vectors cover {len(emotions)} emotion(s); the logit difference contrasts an "
            "emotion's words with the others': pass at least 2"
        )
    if tuple(word_ids.ids) != emotions:
        raise ValueError(
            f"word ids cover emotions {tuple(word_ids.ids)} but vectors cover {emotions}; "
            "pass both for the same emotions in the same order"
        )
    rows = []
    for e, v in vectors.items():
        v = np.asarray(v, np.float32)
        if v.shape != (cfg.n_layers + 1, cfg.d_model):
            raise ValueError(
                f"vectors[{e!r}] has shape {v.shape}; expected [n_layers + 1, d_model] = "
                f"{(cfg.n_layers + 1, cfg.d_model)} (hidden-states layout, last row resid_post)"
            )
        if not np.linalg.norm(v[-1]) > 0:
            raise ValueError(f"vectors[{e!r}] has a zero last row; no direction to project on")
        rows.append(v[-1])
    directions = unit(jnp.asarray(np.stack(rows)))
    rng = np.random.default_rng(seed)
    random = unit(jnp.asarray(rng.standard_normal((n_random, cfg.d_model)), jnp.float32))
    sl = word_ids.slices()
    n = len(word_ids.all_ids())
    w = np.zeros((n, len(emotions)), np.float32)
    for j, e in enumerate(emotions):
        pos = np.zeros(n, bool)
        pos[sl[e]] = True
        w[pos, j] = 1.0 / pos.sum()
        w[~pos, j] = -1.0 / (~pos).sum()
    return Readout(emotions, directions, random, jnp.asarray(word_ids.all_ids()), jnp.asarray(w))


def readout_columns(cfg: ModelConfig, params, readout: Readout, x):
    """x `[..., d_model]` final residual -> (projection `[..., E]`, logit_diff `[..., E]`,
    random projection `[..., R]`)."""
    proj = x @ readout.directions.T.astype(x.dtype)
    logits = model_unembed(cfg, params, x, readout.vocab_ids)
    ld = logits @ readout.word_weights.astype(logits.dtype)
    rand = x @ readout.random.T.astype(x.dtype)
    return proj, ld, rand


def own_emotion(cols, emotion_index):
    """cols `[..., batch, E]`, emotion_index `[batch]` -> `[..., batch]`: each prompt's own."""
    idx = jnp.asarray(emotion_index).reshape((1,) * (cols.ndim - 2) + (-1, 1))
    idx = jnp.broadcast_to(idx, cols.shape[:-1] + (1,))
    return jnp.take_along_axis(cols, idx, axis=-1)[..., 0]


# ---------------------------------------------------------------------------------------------
# Pieces of a block, run from params outside the Flax Block (for the branch sweep)


def layer_params(blocks, layer: int):
    """The params of one block from the stacked `blocks` tree."""
    return jax.tree_util.tree_map(lambda a: a[layer], blocks)


def _ln(cfg: ModelConfig, p, x):
    return LayerNorm(cfg.ln_eps).apply({"params": p}, x)


def _mlp(cfg: ModelConfig, p, x, edits_l: dict):
    return MLP(cfg).apply({"params": p}, x, edits_l, Record())[0]


def _at_last(a, last):
    """`[batch, pos, ...]` -> `[batch, ...]` at each row's `last` index."""
    return jnp.take_along_axis(a, last.reshape((-1, 1) + (1,) * (a.ndim - 2)), axis=1)[:, 0]


def _edits_at(cfg: ModelConfig, base: Edits | None, layer: int) -> dict:
    """Per-layer slice of the base edits as the dict the Flax modules read."""
    if base is None:
        return {}
    return {k: getattr(base, k)[layer] for k in _BASE_EDIT_FIELDS if getattr(base, k) is not None}


def check_base_edits(cfg: ModelConfig, base: Edits | None) -> None:
    """Base edits of a branch sweep may only scale/replace heads and neurons, without batch axes
    (they hold for every row), so later layers can be rerun under them."""
    if base is None:
        return
    for f in dataclasses.fields(base):
        a = getattr(base, f.name)
        if a is None:
            continue
        if f.name not in _BASE_EDIT_FIELDS:
            raise ValueError(
                f"base edits field {f.name} is not supported in a branch sweep; use only "
                f"{_BASE_EDIT_FIELDS}"
            )
        want = {
            "head_scale": (cfg.n_layers, cfg.n_heads),
            "head_mean": (cfg.n_layers, cfg.n_heads, cfg.d_head),
            "neuron_scale": (cfg.n_layers, cfg.d_mlp),
            "neuron_mean": (cfg.n_layers, cfg.d_mlp),
        }[f.name]
        if tuple(a.shape) != want:
            raise ValueError(f"base edits {f.name} has shape {tuple(a.shape)}; expected {want}")


def _attn_last_query(cfg: ModelConfig, p, x_ln, ctx: Context, window, edits_l: dict):
    """Attention output at each row's last real token only: `[batch, d_model]`.

    x_ln: ln1 of the block input, `[batch, pos, d_model]` (keys and values need every position).
    Same arithmetic as models.transformer.Attention (q_slots are 0..pos-1: no cache).
    """
    e = cfg.d_head
    x_q = _at_last(x_ln, ctx.last)[:, None]  # [batch, 1, d_model]
    q = jnp.einsum("bsd,dhe->bshe", x_q, p["W_Q"])
    k = jnp.einsum("bsd,dhe->bshe", x_ln, p["W_K"])
    v = jnp.einsum("bsd,dhe->bshe", x_ln, p["W_V"])
    if cfg.qkv_bias:
        q, k, v = q + p["b_Q"], k + p["b_K"], v + p["b_V"]
    if cfg.positional == "rotary":
        q_pos = _at_last(ctx.positions, ctx.last)[:, None]
        q = rotary(q, q_pos, cfg.rotary_dim, cfg.rotary_base)
        k = rotary(k, ctx.positions, cfg.rotary_dim, cfg.rotary_base)
    scores = jnp.einsum("bqhe,bkhe->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    if cfg.scale_attn:
        scores = scores * (e**-0.5)
    keys = jnp.arange(k.shape[1])
    qs = ctx.last[:, None]  # query slot = its position index
    allowed = (keys[None, :] <= qs) & (keys[None, :] > qs - window) & ctx.key_valid
    scores = jnp.where(allowed[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
    pattern = jax.nn.softmax(scores, axis=-1)
    z = jnp.einsum("bhqk,bkhe->bqhe", pattern.astype(v.dtype), v)
    if edits_l.get("head_scale") is not None:
        s = edits_l["head_scale"][:, None].astype(z.dtype)
        mean = edits_l.get("head_mean")
        z = s * z if mean is None else s * z + (1 - s) * mean.astype(z.dtype)
    out = jnp.einsum("bqhe,hed->bqd", z, p["W_O"])[:, 0]
    if cfg.out_bias:
        out = out + p["b_O"]
    return out


def _last_block_at_last(cfg: ModelConfig, blocks, x, ctx: Context, base: Edits | None):
    """The last block, for the last token only: x `[batch, pos, d]` -> resid_post `[batch, d]`."""
    L = cfg.n_layers - 1
    p = layer_params(blocks, L)
    ed = _edits_at(cfg, base, L)
    attn = _attn_last_query(cfg, p["attn"], _ln(cfg, p["ln1"], x), ctx, cfg.windows[L], ed)
    x_last = _at_last(x, ctx.last)
    if cfg.parallel_residual:
        return x_last + attn + _mlp(cfg, p["mlp"], _ln(cfg, p["ln2"], x_last), ed)
    mid = x_last + attn
    return mid + _mlp(cfg, p["mlp"], _ln(cfg, p["ln2"], mid), ed)


def final_at_last(cfg: ModelConfig, blocks, x, ctx: Context, start: int, base: Edits | None):
    """From the input of block `start` (`[batch, pos, d]`, every position) to the final residual
    at each row's last token `[batch, d]`; start == n_layers means x already is the final one."""
    n = cfg.n_layers
    if start >= n:
        return _at_last(x, ctx.last)
    if start < n - 1:
        x, _, _ = run_blocks(cfg, blocks, x, ctx, base, Record(), layers=range(start, n - 1))
    return _last_block_at_last(cfg, blocks, x, ctx, base)


def tile_context(ctx: Context, r: int) -> Context:
    """The context of a batch repeated `r` times along the batch axis (row-major: copy, batch)."""
    t = lambda a: None if a is None else jnp.tile(a, (r,) + (1,) * (a.ndim - 1))  # noqa: E731
    return Context(t(ctx.positions), ctx.q_slots, t(ctx.key_valid), t(ctx.last))


def over_rows(fn, rows, ctx: Context, strategy: str, chunk: int):
    """Apply `fn(x [n, ...], ctx_n) -> [n, ...]` to every row of `rows [R, batch, ...]`.

    "fold": rows folded into the batch axis (one call on R*batch); "vmap": vmapped over R;
    "map": `lax.map` over chunks of `chunk` rows, each chunk folded into the batch axis.
    """
    R, B = rows.shape[:2]
    if strategy == "fold":
        out = fn(rows.reshape((R * B,) + rows.shape[2:]), tile_context(ctx, R))
        return out.reshape((R, B) + out.shape[1:])
    if strategy == "vmap":
        return jax.vmap(lambda x: fn(x, ctx))(rows)
    if strategy == "map":
        c = max(1, min(chunk, R))
        n_chunks = -(-R // c)
        pad = n_chunks * c - R
        if pad:  # repeat the last row; its results are dropped
            rows = jnp.concatenate([rows, jnp.repeat(rows[-1:], pad, axis=0)])
        xs = rows.reshape((n_chunks, c * B) + rows.shape[2:])
        ctx_c = tile_context(ctx, c)
        out = jax.lax.map(lambda x: fn(x, ctx_c), xs)
        return out.reshape((n_chunks * c, B) + out.shape[2:])[:R]
    raise ValueError(f"strategy={strategy!r}; use one of {STRATEGIES}")


# ---------------------------------------------------------------------------------------------
# The exact sweep


def _group_heads(cfg: ModelConfig, heads) -> dict[int, tuple[int, ...]]:
    if heads is None:
        return {layer: tuple(range(cfg.n_heads)) for layer in range(cfg.n_layers)}
    out: dict[int, list[int]] = {}
    for layer, h in heads:
        if not (0 <= layer < cfg.n_layers and 0 <= h < cfg.n_heads):
            raise ValueError(
                f"head ({layer}, {h}) is outside the model's {cfg.n_layers} x {cfg.n_heads} heads"
            )
        out.setdefault(int(layer), []).append(int(h))
    return {layer: tuple(hs) for layer, hs in sorted(out.items())}


@functools.partial(jax.jit, static_argnames=("cfg", "heads", "strategy", "chunk"))
def head_sweep(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    z_ref,
    base: Edits | None = None,
    heads: tuple[tuple[int, int], ...] | None = None,
    strategy: str = "fold",
    chunk: int = 4,
):
    """Final residual at each prompt's last token with each head removed, exactly, in one call.

    tokens, mask: `[batch, pos]`; z_ref: `[kind, layer, head, d_head]` (what a removed head's z
    becomes at every position: zeros for zero-ablation, a mean for mean-ablation); base: edits in
    force in every run, the clean one included (heads / neurons only, no batch axis: see
    `check_base_edits`); heads: which (layer, head) to remove (static; default all, layer-major).
    Returns (removed `[n_heads_swept, kind, batch, d_model]`, rows in the order of `heads`,
    clean `[batch, d_model]`).
    A head already removed by `base` gets the clean result (its z already is its reference).
    """
    check_base_edits(cfg, base)
    record = Record(resid_pre=True, attn_out=True, z=True, resid_post=True)
    _, tr = model_forward(cfg, params, tokens, mask, base, record)
    ctx = make_context(tokens, mask, Record(at="last"))
    blocks = params["blocks"]
    n = cfg.n_layers
    clean_last = _at_last(tr.resid_post, ctx.last)
    outs = []
    for layer, hs in _group_heads(cfg, heads).items():
        p = layer_params(blocks, layer)
        ed = _edits_at(cfg, base, layer)
        idx = jnp.asarray(hs)
        z = tr.z[layer][:, :, idx]  # [batch, pos, h, d_head]
        dz = z[None] - z_ref[:, layer, idx][:, None, None]  # [kind, batch, pos, h, d_head]
        delta = jnp.einsum("kbphe,hed->hkbpd", dz, p["attn"]["W_O"][idx])
        K = delta.shape[1]
        delta = delta.reshape((len(hs) * K,) + delta.shape[2:])  # rows: head-major, then kind
        post_l = tr.resid_pre[layer + 1] if layer + 1 < n else tr.resid_post
        if layer == n - 1:  # the last layer: only the last token is ever read
            d_last = jax.vmap(lambda d: _at_last(d, ctx.last))(delta)
            if cfg.parallel_residual:
                out = _at_last(post_l, ctx.last)[None] - d_last
            else:
                mid = _at_last(tr.resid_pre[layer] + tr.attn_out[layer], ctx.last)[None] - d_last
                out = mid + _mlp(cfg, p["mlp"], _ln(cfg, p["ln2"], mid), ed)
        else:
            if cfg.parallel_residual:  # the MLP read ln2(resid_pre): unchanged by the head
                rows = post_l[None] - delta

                def rest(x, c, layer=layer):
                    return final_at_last(cfg, blocks, x, c, layer + 1, base)
            else:
                rows = (tr.resid_pre[layer] + tr.attn_out[layer])[None] - delta

                def rest(x, c, layer=layer, p=p, ed=ed):
                    x = x + _mlp(cfg, p["mlp"], _ln(cfg, p["ln2"], x), ed)
                    return final_at_last(cfg, blocks, x, c, layer + 1, base)

            out = over_rows(rest, rows, ctx, strategy, chunk)
        outs.append(out.reshape((len(hs), K) + out.shape[1:]))
    out = jnp.concatenate(outs, axis=0)  # layer-major
    if heads is not None:  # rows in the order asked for
        order = [(layer, h) for layer, hs in _group_heads(cfg, heads).items() for h in hs]
        pos = {lh: j for j, lh in enumerate(order)}
        out = out[jnp.asarray([pos[(int(a), int(b))] for a, b in heads])]
    return out, clean_last


@functools.partial(jax.jit, static_argnames=("cfg",))
def single_removal(cfg: ModelConfig, params, tokens, mask, layer, head, z_ref=None):
    """Reference for `head_sweep`: one plain forward with head (layer, head) removed via
    `Edits(head_scale=...)` (z -> z_ref `[layer, head, d_head]`, zeros when None).
    Returns the final residual at the last token `[batch, d_model]`."""
    scale = jnp.ones((cfg.n_layers, cfg.n_heads)).at[layer, head].set(0.0)
    _, tr = model_forward(
        cfg,
        params,
        tokens,
        mask,
        Edits(head_scale=scale, head_mean=z_ref),
        Record(resid_post=True, at="last", logits="none"),
    )
    return tr.resid_post


# ---------------------------------------------------------------------------------------------
# Direct attribution and attribution patching


def _unembed_matrix(cfg: ModelConfig, params, vocab_ids):
    """`[d_model, n]` unembedding columns of `vocab_ids`."""
    if cfg.tied_unembed:
        return params["embed"]["W_E"][vocab_ids].T
    return params["unembed"]["W_U"][:, vocab_ids]


@functools.partial(jax.jit, static_argnames=("cfg",))
def clean_columns(cfg: ModelConfig, params, tokens, mask, readout: Readout):
    """The clean run's measures at the last token: (projection `[batch, E]`, logit_diff
    `[batch, E]`, random `[batch, R]`)."""
    _, tr = model_forward(
        cfg, params, tokens, mask, None, Record(resid_post=True, at="last", logits="none")
    )
    return readout_columns(cfg, params, readout, tr.resid_post)


@functools.partial(jax.jit, static_argnames=("cfg", "strategy", "chunk"))
def exact_scores(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    z_ref,
    readout,
    emotion_index,
    strategy: str = "fold",
    chunk: int = 4,
):
    """The exact sweep read by the measures, per prompt on its own emotion.

    z_ref `[kind, layer, head, d_head]`. Returns (projection `[kind, layer, head, batch]`,
    logit_diff `[kind, layer, head, batch]`, random `[kind, layer, head, batch, R]`) support
    scores m(clean) - m(removed), and the clean (projection, logit_diff) `[batch]`.
    """
    removed, clean = head_sweep(cfg, params, tokens, mask, z_ref, None, None, strategy, chunk)
    proj, ld, rand = readout_columns(cfg, params, readout, removed)  # [L*H, kind, batch, .]
    cp, cl, cr = readout_columns(cfg, params, readout, clean)
    cp, cl = own_emotion(cp, emotion_index), own_emotion(cl, emotion_index)
    L, H = cfg.n_layers, cfg.n_heads

    def arrange(a):  # [L*H, kind, batch, ...] -> [kind, L, H, batch, ...]
        a = a.reshape((L, H) + a.shape[1:])
        return jnp.moveaxis(a, 2, 0)

    sp = arrange(cp - own_emotion(proj, emotion_index))
    sl = arrange(cl - own_emotion(ld, emotion_index))
    sr = arrange(cr - rand)
    return sp, sl, sr, cp, cl


@functools.partial(jax.jit, static_argnames=("cfg",))
def direct_scores(cfg: ModelConfig, params, tokens, mask, z_ref, readout: Readout, emotion_index):
    """Direct attribution of every head, per prompt: what removing it changes directly.

    z_ref `[kind, layer, head, d_head]`. Returns (projection `[kind, layer, head, batch]`,
    logit_diff `[kind, layer, head, batch]`, random `[kind, layer, head, batch, R]`): the head's
    write minus its reference's write, read by the measure. The logit difference goes through
    the final layer norm with the clean run's scale frozen (its mean subtraction is linear and
    kept), the usual direct-logit-attribution convention; it ignores how the head moves that
    scale, so it is not the derivative of the exact effect.
    """
    _, tr = model_forward(
        cfg, params, tokens, mask, None, Record(z=True, resid_post=True, at="last", logits="none")
    )
    W_O = params["blocks"]["attn"]["W_O"]  # [layer, head, d_head, d_model]
    dz = tr.z[None] - z_ref[:, :, None]  # [kind, layer, batch, head, d_head]
    write = jnp.einsum("klbhe,lhed->klhbd", dz, W_O)
    proj = own_emotion(write @ readout.directions.T, emotion_index)
    rand = write @ readout.random.T
    x = tr.resid_post.astype(jnp.float32)  # [batch, d]
    sigma = jnp.sqrt(jnp.var(x, axis=-1) + cfg.ln_eps)  # [batch]
    w = _unembed_matrix(cfg, params, readout.vocab_ids) @ readout.word_weights  # [d, E]
    w = params["ln_final"]["scale"][:, None] * w
    centred = write - write.mean(-1, keepdims=True)
    ld = own_emotion((centred @ w) / sigma[:, None], emotion_index)
    return proj, ld, rand


@functools.partial(jax.jit, static_argnames=("cfg",))
def attribution_scores(cfg: ModelConfig, params, tokens, mask, z_mean, readout, emotion_index):
    """Attribution patching of every head from one forward and one backward pass, per prompt.

    z_mean `[layer, head, d_head]`: the "mean" kind's reference; emotion_index `[batch]`: which
    emotion each prompt is scored on. Returns (projection `[kind, layer, head, batch]`,
    logit_diff `[kind, layer, head, batch]`, random `[kind, layer, head, batch, R]`), kinds in
    KINDS order: zero = grad . z, mean = grad . (z - z_mean), summed over positions.

    How both kinds come from one pass: z is replaced by `z + m (z_mean - z)` and then scaled by
    `s`; at m = 0, s = 1 the run is the clean one, d/dm = grad . (z_mean - z) per position and
    d/ds = grad . z per prompt and head. The backward pass runs once per output column
    (2 measures + R random directions), batched.
    """
    B, P = tokens.shape
    L, H = cfg.n_layers, cfg.n_heads
    patch = jnp.broadcast_to(z_mean[:, None, None], (L, 1, 1) + z_mean.shape[1:])

    def run(m, s):
        edits = Edits(z_patch=patch, z_patch_mask=m, head_scale=s)
        _, tr = model_forward(
            cfg, params, tokens, mask, edits, Record(resid_post=True, at="last", logits="none")
        )
        proj, ld, rand = readout_columns(cfg, params, readout, tr.resid_post)
        own = [own_emotion(proj, emotion_index)[:, None], own_emotion(ld, emotion_index)[:, None]]
        return jnp.concatenate(own + [rand], axis=1)  # [batch, 2 + R]

    m0 = jnp.zeros((L, B, P, H), jnp.float32)
    s0 = jnp.ones((L, B, H), jnp.float32)
    out, vjp = jax.vjp(run, m0, s0)
    eye = jnp.eye(out.shape[1], dtype=out.dtype)
    gm, gs = jax.vmap(lambda c: vjp(jnp.broadcast_to(c, out.shape)))(eye)  # per output column
    # gm [C, L, B, P, H] = grad.(z_mean - z): the support of "mean" is minus that. gs [C, L, B, H]
    mean_k = -gm.sum(axis=3).transpose(0, 1, 3, 2)  # [C, L, H, B]
    zero_k = gs.transpose(0, 1, 3, 2)
    both = jnp.stack([zero_k, mean_k])  # [kind, C, L, H, B]
    return both[:, 0], both[:, 1], jnp.moveaxis(both[:, 2:], 1, -1)


@functools.partial(jax.jit, static_argnames=("cfg",))
def neutral_mean_z(cfg: ModelConfig, params, tokens, mask):
    """Mean z over all real tokens, per layer and head: `[layer, head, d_head]`."""
    _, tr = model_forward(cfg, params, tokens, mask, None, Record(z=True, logits="none"))
    m = jnp.asarray(mask, tr.z.dtype)[None, :, :, None, None]
    return (tr.z * m).sum(axis=(1, 2)) / m.sum(axis=(1, 2))


# ---------------------------------------------------------------------------------------------
# Screening over batches of prompts


@dataclasses.dataclass
class Screen:
    """Per-prompt support scores of every head.

    values[(method, measure, kind)]: `[layer, head, n_prompts]` numpy, each prompt scored on its
    own emotion; random[(method, kind)]: `[layer, head, n_prompts, R]` projections onto random
    directions (the control); emotion_index `[n_prompts]`; clean[measure]: `[n_prompts]` the
    clean measure of each prompt on its own emotion; neutral_clean[measure]: `[n_neutral, E]`.
    """

    emotions: tuple[str, ...]
    values: dict[tuple[str, str, str], np.ndarray]
    random: dict[tuple[str, str], np.ndarray]
    emotion_index: np.ndarray
    clean: dict[str, np.ndarray]
    neutral_clean: dict[str, np.ndarray]
    n_layers: int
    n_heads: int


def pad_rows(a, size: int):
    """Pad axis 0 to `size` by repeating row 0 (so every batch has one compiled shape)."""
    a = np.asarray(a)
    if a.shape[0] == size:
        return a
    return np.concatenate([a, np.repeat(a[:1], size - a.shape[0], axis=0)])


def screen_heads(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    emotion_index,
    readout: Readout,
    z_mean,
    neutral_tokens=None,
    neutral_mask=None,
    methods: Sequence[str] = METHODS,
    kinds: Sequence[str] = KINDS,
    batch_size: int = 32,
    strategy: str = "fold",
    chunk: int = 4,
) -> Screen:
    """All chosen methods over every head, per prompt (tokens `[n, pos]`, emotion_index `[n]`).

    Prompts run in batches of `batch_size` (the last one padded with copies, then trimmed).
    """
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"method {m!r} unknown; use a subset of {METHODS}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"ablation kind {k!r} unknown; use a subset of {KINDS}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}; use one of {STRATEGIES}")
    tokens, mask = np.asarray(tokens, np.int32), np.asarray(mask, bool)
    emotion_index = np.asarray(emotion_index, np.int32)
    n = tokens.shape[0]
    bs = min(batch_size, n)
    z_mean = jnp.asarray(z_mean)
    z_refs = jnp.stack([jnp.zeros_like(z_mean), z_mean])  # KINDS order
    # The exact sweep runs only the kinds asked for (the others cost a full sweep each).
    exact_kinds = [k for k in KINDS if k in kinds]
    z_exact = jnp.stack([z_refs[KINDS.index(k)] for k in exact_kinds])
    acc: dict[tuple, list] = {}
    clean: dict[str, list] = {"projection": [], "logit_diff": []}
    for start in range(0, n, bs):
        cnt = min(start + bs, n) - start
        t = jnp.asarray(pad_rows(tokens[start : start + cnt], bs))
        mk = jnp.asarray(pad_rows(mask[start : start + cnt], bs))
        emo = jnp.asarray(pad_rows(emotion_index[start : start + cnt], bs))
        cp, cl, _ = clean_columns(cfg, params, t, mk, readout)
        clean["projection"].append(np.asarray(own_emotion(cp, emo))[:cnt])
        clean["logit_diff"].append(np.asarray(own_emotion(cl, emo))[:cnt])
        for method in methods:
            if method == "exact":
                part = exact_scores(cfg, params, t, mk, z_exact, readout, emo, strategy, chunk)
                full = []  # back to KINDS order, zeros where a kind was not run
                for a in part[:3]:
                    slots = [
                        a[exact_kinds.index(k)] if k in exact_kinds else jnp.zeros_like(a[0])
                        for k in KINDS
                    ]
                    full.append(jnp.stack(slots))
                out = tuple(full)
            elif method == "direct":
                out = direct_scores(cfg, params, t, mk, z_refs, readout, emo)
            else:
                out = attribution_scores(cfg, params, t, mk, z_mean, readout, emo)
            proj, ld, rand = (np.asarray(a) for a in out)
            for ki, kind in enumerate(KINDS):
                if kind in kinds:
                    acc.setdefault((method, "projection", kind), []).append(proj[ki, ..., :cnt])
                    acc.setdefault((method, "logit_diff", kind), []).append(ld[ki, ..., :cnt])
                    acc.setdefault((method, kind), []).append(rand[ki, :, :, :cnt])
    values = {k: np.concatenate(v, axis=-1) for k, v in acc.items() if len(k) == 3}
    random = {k: np.concatenate(v, axis=2) for k, v in acc.items() if len(k) == 2}
    neutral_clean = {}
    if neutral_tokens is not None:
        cp, cl, _ = clean_columns(
            cfg,
            params,
            jnp.asarray(neutral_tokens, jnp.int32),
            jnp.asarray(neutral_mask, bool),
            readout,
        )
        neutral_clean = {"projection": np.asarray(cp), "logit_diff": np.asarray(cl)}
    return Screen(
        emotions=readout.emotions,
        values=values,
        random=random,
        emotion_index=emotion_index,
        clean={k: np.concatenate(v) for k, v in clean.items()},
        neutral_clean=neutral_clean,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
    )


# ---------------------------------------------------------------------------------------------
# Tables: per-emotion means with CIs, rank correlations, top-k


def emotion_scores(screen: Screen, n_boot: int, seed: int, level: float = 0.95) -> list[dict]:
    """One labelled row per (method, measure, kind, emotion, layer, head): mean support score
    over that emotion's prompts, its bootstrap CI, its rank, and (projection) the random-direction
    null band of the same head."""
    rows = []
    alpha = 100.0 * (1.0 - level) / 2.0
    for (method, measure, kind), v in screen.values.items():
        rnd = screen.random.get((method, kind))
        for ei, emo in enumerate(screen.emotions):
            sel = screen.emotion_index == ei
            if sel.sum() < 2:
                raise ValueError(f"emotion {emo!r} has {sel.sum()} prompts; need at least 2")
            est = bootstrap_ci(v[..., sel], n_boot=n_boot, seed=seed, level=level)
            value = np.asarray(est.value)
            order = np.argsort(-value, axis=None, kind="stable")
            rank = np.empty(value.size, int)
            rank[order] = np.arange(1, value.size + 1)
            rank = rank.reshape(value.shape)
            null_lo = null_hi = None
            if measure == "projection" and rnd is not None:
                per_dir = rnd[:, :, sel].mean(axis=2)  # [L, H, R]
                null_lo, null_hi = np.percentile(per_dir, [alpha, 100 - alpha], axis=-1)
            for layer in range(screen.n_layers):
                for head in range(screen.n_heads):
                    row = {
                        "method": method,
                        "measure": measure,
                        "ablation": kind,
                        "emotion": emo,
                        "layer": layer,
                        "head": head,
                        "score": float(value[layer, head]),
                        "ci_lo": float(np.asarray(est.lo)[layer, head]),
                        "ci_hi": float(np.asarray(est.hi)[layer, head]),
                        "rank": int(rank[layer, head]),
                        "n_prompts": int(sel.sum()),
                        "random_dir_lo": None if null_lo is None else float(null_lo[layer, head]),
                        "random_dir_hi": None if null_hi is None else float(null_hi[layer, head]),
                    }
                    rows.append(row)
    return rows


def score_matrix(rows: list[dict], method, measure, kind, emotion, n_layers, n_heads):
    """`[layer, head]` scores for one (method, measure, kind, emotion) from `emotion_scores`."""
    m = np.full((n_layers, n_heads), np.nan)
    for r in rows:
        if (r["method"], r["measure"], r["ablation"], r["emotion"]) == (
            method,
            measure,
            kind,
            emotion,
        ):
            m[r["layer"], r["head"]] = r["score"]
    return m


def rank_correlation(a, b, n_perm: int = 1000, seed: int = 0) -> dict:
    """Spearman rho between two score arrays (flattened), scipy's p-value, and a permutation
    null band (95%) of rho under shuffled head labels."""
    a, b = np.ravel(np.asarray(a, float)), np.ravel(np.asarray(b, float))
    if a.shape != b.shape or a.size < 3:
        raise ValueError(f"rank_correlation needs two equal-length arrays of >= 3, got {a.size}")
    res = sps.spearmanr(a, b)
    rb = sps.rankdata(b)
    ra = sps.rankdata(a)
    rng = np.random.default_rng(seed)
    perms = np.argsort(rng.random((n_perm, a.size)), axis=1)
    null = np.array([np.corrcoef(ra, rb[p])[0, 1] for p in perms])
    band = summarise_null(null, seed, 0.95, "spearman rho, head labels shuffled")
    return {
        "spearman": float(res.statistic),
        "p_value": float(res.pvalue),
        "null_lo": float(band.lo),
        "null_hi": float(band.hi),
        "n_heads": int(a.size),
        "n_perm": n_perm,
        "seed": seed,
    }


def method_correlations(rows, screen: Screen, n_perm: int, seed: int) -> list[dict]:
    """Rank correlation between every pair of methods, per (measure, kind, emotion)."""
    methods = sorted({k[0] for k in screen.values}, key=METHODS.index)
    out = []
    for measure in MEASURES:
        for kind in KINDS:
            for emo in screen.emotions:
                mats = {
                    m: score_matrix(rows, m, measure, kind, emo, screen.n_layers, screen.n_heads)
                    for m in methods
                    if (m, measure, kind) in screen.values
                }
                names = list(mats)
                for i in range(len(names)):
                    for j in range(i + 1, len(names)):
                        rc = rank_correlation(mats[names[i]], mats[names[j]], n_perm, seed)
                        out.append(
                            {
                                "method_a": names[i],
                                "method_b": names[j],
                                "measure": measure,
                                "ablation": kind,
                                "emotion": emo,
                                **rc,
                            }
                        )
    return out


def top_heads(rows: list[dict], k: int) -> dict:
    """Per "method/measure/ablation/emotion": the k most supportive and k most suppressive heads
    with score and CI."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(
            f"{r['method']}/{r['measure']}/{r['ablation']}/{r['emotion']}", []
        ).append(r)
    out = {}
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: -r["score"])
        pick = lambda sub: [  # noqa: E731
            {f: r[f] for f in ("layer", "head", "score", "ci_lo", "ci_hi", "rank")} for r in sub
        ]
        out[key] = {"top": pick(rs[:k]), "bottom": pick(rs[::-1][:k])}
    return out


# ---------------------------------------------------------------------------------------------
# The phase: prompts in, files out


@dataclasses.dataclass
class HeadResults:
    """What `run_heads` computed and wrote.

    screen: per-prompt scores (`Screen`); rows: the labelled score table; correlations: rank
    correlations between methods; top: top-k lists; word_ids: the logit words used (and dropped);
    files: name -> path of every file written.
    """

    screen: Screen
    rows: list[dict]
    correlations: list[dict]
    top: dict
    word_ids: WordIds
    files: dict[str, Path]


def _tokenize(model, texts, cfg):
    toks = model.tokenize(list(texts), prepend_bos=cfg.prepend_bos, max_len=cfg.max_len)
    return toks.ids, toks.mask


def prepare_prompts(model, emotional_prompts: Mapping[str, Sequence[str]], cfg):
    """Tokenise the emotional prompts (emotion order = dict order): (ids, mask, emotion_index)."""
    if not emotional_prompts:
        raise ValueError("emotional_prompts is empty; pass {emotion: [prompt, ...]}")
    texts, emo = [], []
    for i, (e, ps) in enumerate(emotional_prompts.items()):
        if len(ps) < 2:
            raise ValueError(f"emotional_prompts[{e!r}] has {len(ps)} prompts; need at least 2")
        texts += list(ps)
        emo += [i] * len(ps)
    ids, mask = _tokenize(model, texts, cfg)
    return ids, mask, np.asarray(emo, np.int32)


def run_heads(
    model,
    emotional_prompts: Mapping[str, Sequence[str]],
    neutral_prompts: Sequence[str],
    vectors: Mapping[str, Any],
    cfg: ml_collections.ConfigDict,
    out_dir,
    word_ids: WordIds | None = None,
) -> HeadResults:
    """Screen every head for every emotion by every method; write tables, heatmaps, top-k lists.

    model: a `models.LoadedModel` with a tokenizer; emotional_prompts: {emotion: [text, ...]}
    (at least 2 each); neutral_prompts: [text, ...] (mean-ablation reference); vectors:
    {emotion: [n_layers + 1, d_model]} (same emotions, same order); cfg: the `heads` section (configs/sections.py);
    word_ids: the logit words as ids (default: cfg.logit_words through the model's tokenizer).

    Files in out_dir: scores_<method>.csv (one labelled row per method, measure, ablation,
    emotion, layer, head), rank_correlation.csv, heatmap_<method>_<measure>.png (a
    layer x head panel per emotion and ablation kind), top_k.json, clean_measures.json, words.json.
    """
    if tuple(vectors) != tuple(emotional_prompts):
        raise ValueError(
            f"vectors cover {tuple(vectors)} but emotional_prompts cover "
            f"{tuple(emotional_prompts)}; pass the same emotions in the same order"
        )
    if len(neutral_prompts) < 1:
        raise ValueError("neutral_prompts is empty; the mean-ablation reference needs some")
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"cfg.strategy={cfg.strategy!r}; use one of {STRATEGIES}")
    mc, params = model.config, model.params
    if word_ids is None:
        if model.tokenizer is None:
            raise ValueError("the model has no tokenizer; pass word_ids for the logit measure")
        words = {e: tuple(cfg.logit_words[e]) for e in emotional_prompts}
        word_ids = word_token_ids(model.tokenizer, words)
    readout = make_readout(mc, vectors, word_ids, cfg.n_random, cfg.seed)
    ids, mask, emo = prepare_prompts(model, emotional_prompts, cfg)
    n_ids, n_mask = _tokenize(model, neutral_prompts, cfg)
    z_mean = neutral_mean_z(mc, params, jnp.asarray(n_ids), jnp.asarray(n_mask))
    screen = screen_heads(
        mc,
        params,
        ids,
        mask,
        emo,
        readout,
        z_mean,
        n_ids,
        n_mask,
        tuple(cfg.methods),
        tuple(cfg.kinds),
        cfg.batch_size,
        cfg.strategy,
        cfg.chunk,
    )
    rows = emotion_scores(screen, cfg.n_boot, cfg.seed, cfg.level)
    label = cfg.model_label or mc.name or mc.family
    for r in rows:
        r["model"] = label
        r["vector"] = cfg.vector_label if r["measure"] == "projection" else "logit words"
        r["definition"] = _DEFINITION[r["method"]]
        r["seed"] = cfg.seed
    correlations = method_correlations(rows, screen, cfg.n_perm, cfg.seed)
    top = top_heads(rows, cfg.top_k)
    files = write_head_outputs(out_dir, rows, correlations, top, screen, word_ids, cfg, label)
    return HeadResults(screen, rows, correlations, top, word_ids, files)


_DEFINITION = {
    "exact": "mean over the emotion's prompts of m(clean) - m(head removed at every position)",
    "direct": "mean over the emotion's prompts of the head's direct write minus its reference's, "
    "read by m (final LN scale frozen for logit_diff)",
    "attribution": "mean over the emotion's prompts of sum_pos grad_z m . (z - z_ref)",
}

_COLUMNS = (
    "model",
    "method",
    "measure",
    "ablation",
    "emotion",
    "layer",
    "head",
    "score",
    "ci_lo",
    "ci_hi",
    "rank",
    "n_prompts",
    "random_dir_lo",
    "random_dir_hi",
    "vector",
    "seed",
    "definition",
)


def write_head_outputs(out_dir, rows, correlations, top, screen, word_ids, cfg, label) -> dict:
    """Write the CSV tables, PNG heatmaps and JSON lists; returns name -> path."""
    out = Path(out_dir)
    files = {}
    for method in METHODS:
        sub = [r for r in rows if r["method"] == method]
        if sub:
            files[f"scores_{method}"] = artifacts.write_csv(
                out / f"scores_{method}.csv", sub, _COLUMNS
            )
    files["rank_correlation"] = artifacts.write_csv(out / "rank_correlation.csv", correlations)
    files["top_k"] = artifacts.write_json(
        out / "top_k.json",
        {"k": cfg.top_k, "model": label, "score": "support: m(clean) - m(removed)", "lists": top},
    )
    clean = {}
    for measure, v in screen.clean.items():
        for ei, emo in enumerate(screen.emotions):
            sel = screen.emotion_index == ei
            entry = {"emotional_mean": float(v[sel].mean()), "n_emotional": int(sel.sum())}
            if measure in screen.neutral_clean:
                nv = screen.neutral_clean[measure][:, ei]
                entry.update(neutral_mean=float(nv.mean()), n_neutral=int(nv.size))
            clean[f"{measure}/{emo}"] = entry
    files["clean_measures"] = artifacts.write_json(
        out / "clean_measures.json",
        {
            "what": "clean measure at the last real token, on each emotion's prompts and on the "
            "neutral prompts (the reference)",
            "model": label,
            "values": clean,
        },
    )
    files["words"] = artifacts.write_json(
        out / "words.json", {"ids": word_ids.ids, "dropped": word_ids.dropped}
    )
    n_cells = screen.n_layers * screen.n_heads
    for method in METHODS:
        for measure in MEASURES:
            mats = {
                f"{emo}, {kind}-ablation": score_matrix(
                    rows, method, measure, kind, emo, screen.n_layers, screen.n_heads
                )
                for kind in KINDS
                if (method, measure, kind) in screen.values
                for emo in screen.emotions
            }
            if not mats:
                continue
            fig = plots.heatmap_grid(
                mats,
                [f"L{i}" for i in range(screen.n_layers)],
                [f"H{i}" for i in range(screen.n_heads)],
                title=f"{label}: {method} {measure} support score per head "
                "(mean over the emotion's prompts, last token)",
                cbar_label=f"{measure}: m(clean) - m(removed)",
                annotate=n_cells <= cfg.annotate_max_cells,
                ncols=len(screen.emotions),
            )
            name = f"heatmap_{method}_{measure}"
            files[name] = artifacts.save_figure(out / f"{name}.png", fig)
    return files
