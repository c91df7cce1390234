"""Head scores: a score for every (layer, head, emotion), by three methods, all heads at once.

Every score is a *support* score: how much the head pushes an emotion measure UP on that
emotion's own prompts (positive = the head carries the emotion, negative = it works against it):

| method        | score of head (l, h) for emotion e, one value per prompt of e                       |
|---------------|-------------------------------------------------------------------------------------|
| "exact"       | m_e(clean) - m_e(head removed), the removal applied at every position; exact         |
| "direct"      | what removing the head changes in the final residual directly (its write minus the   |
|               | write of its reference z), read by m_e; later layers ignored; the logit difference   |
|               | uses the clean run's final layer-norm scale (frozen)                                 |
| "attribution" | sum over positions of grad_z m_e . (z - z_ref): the first-order estimate of "exact"  |
|               | (attribution patching), every head at once: one backward pass per output column, or  |
|               | one forward-mode pass per (kind, head), whichever is fewer                            |

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
A top-k list picks the largest of L x H scores, so each head is also compared with the BEST
head's score on each random direction (`family_max_null`: family-wise p over all heads,
smallest possible p = 1/(1 + n_random)). The logit difference has no such null (None).

The exact sweep ("branch sweep") never recomputes what cannot change: the clean run records
every block's input, attention output and per-head z once; removing head (l, h) changes nothing
before layer l, and in layer l only attn_out, by -(z_h - z_ref) W_O[h], so each head's run
starts from the clean resid_mid of its layer minus that term (parallel-residual models: from the
clean resid_post), runs the rest of its layer's MLP and the later layers, and in the last layer
computes only the last query (`models.final_at_last`: keys and values still at every position).
The measures need only the final residual at the last token (projections) and their words'
unembedding columns. Rows (one per head and removal kind) run through the later layers by one of
three strategies (`RowStrategy`): "fold" (rows folded into the batch axis), "vmap" (over rows),
"map" (`lax.map` over chunks of `chunk` rows folded into the batch). benchmarks/bench_heads.py
measures them; "map" won (see `configs.sections.heads()`'s strategy for the numbers).

Pure functions over arrays: the runner that tokenises prompts and writes files is
`jaxcirc.phases.head_screen`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats as sps

from jaxcirc.core.measures import WordIds, unit
from jaxcirc.core.stats import bootstrap_ci, permutation_pvalue, summarise_null
from models import (
    Context,
    Edits,
    ModelConfig,
    Record,
    final_at_last,
    finish_block,
    make_context,
    take_last,
    to_host,
)
from models import forward as model_forward
from models import unembed as model_unembed

METHODS = ("exact", "direct", "attribution")
MEASURES = ("projection", "logit_diff")
KINDS = ("zero", "mean")
STRATEGIES = ("fold", "vmap", "map")
BASE_EDIT_FIELDS = ("head_scale", "head_mean", "neuron_scale", "neuron_mean")


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


def _last_rows(cfg: ModelConfig, vectors: Mapping[str, Any]) -> list[np.ndarray]:
    """Each vector's last row (resid_post), checked: `[d_model]` per emotion."""
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
    return rows


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
    directions = unit(jnp.asarray(np.stack(_last_rows(cfg, vectors))))
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


@dataclasses.dataclass(frozen=True)
class Target:
    """One emotion's measure m_e: column `emotion` (an index into `readout.emotions`) of
    `measure` ("projection" or "logit_diff"). A pytree: the emotion index is traced under jit."""

    readout: Readout
    emotion: Any
    measure: str

    def read(self, cfg: ModelConfig, params, x):
        """Final residual `[..., d_model]` -> m_e `[...]`."""
        proj, ld, _ = readout_columns(cfg, params, self.readout, x)
        return (proj if self.measure == "projection" else ld)[..., self.emotion]


jax.tree_util.register_dataclass(
    Target, data_fields=["readout", "emotion"], meta_fields=["measure"]
)


def unembed_matrix(cfg: ModelConfig, params, vocab_ids):
    """`[d_model, n]` unembedding columns of `vocab_ids` (W_E^T's for tied models)."""
    if cfg.tied_unembed:
        return params["embed"]["W_E"][vocab_ids].T
    return params["unembed"]["W_U"][:, vocab_ids]


# ---------------------------------------------------------------------------------------------
# Rows through the later layers


@dataclasses.dataclass(frozen=True)
class RowStrategy:
    """How rows (heads or neurons x removal kinds) run through the later layers: "fold" (rows
    folded into the batch axis, one call), "vmap" (over rows), "map" (`lax.map` over chunks of
    `chunk` rows, each chunk folded into the batch axis). Hashable: a static jit argument."""

    strategy: str = "fold"
    chunk: int = 4

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}; use one of {STRATEGIES}")


def check_base_edits(cfg: ModelConfig, base: Edits | None) -> None:
    """Base edits of a branch sweep may only scale/replace heads and neurons, without batch axes
    (they hold for every row), so later layers can be rerun under them."""
    if base is None:
        return
    for f in dataclasses.fields(base):
        a = getattr(base, f.name)
        if a is None:
            continue
        if f.name not in BASE_EDIT_FIELDS:
            raise ValueError(
                f"base edits field {f.name} is not supported in a branch sweep; use only "
                f"{BASE_EDIT_FIELDS}"
            )
        want = {
            "head_scale": (cfg.n_layers, cfg.n_heads),
            "head_mean": (cfg.n_layers, cfg.n_heads, cfg.d_head),
            "neuron_scale": (cfg.n_layers, cfg.d_mlp),
            "neuron_mean": (cfg.n_layers, cfg.d_mlp),
        }[f.name]
        if tuple(a.shape) != want:
            raise ValueError(f"base edits {f.name} has shape {tuple(a.shape)}; expected {want}")


def tile_context(ctx: Context, r: int) -> Context:
    """The context of a batch repeated `r` times along the batch axis (row-major: copy, batch)."""
    t = lambda a: None if a is None else jnp.tile(a, (r,) + (1,) * (a.ndim - 1))  # noqa: E731
    return Context(t(ctx.positions), ctx.q_slots, t(ctx.key_valid), t(ctx.last))


def over_rows(fn, rows, ctx: Context, how: RowStrategy):
    """Apply `fn(x [n, ...], ctx_n) -> [n, ...]` to every row of `rows [R, batch, ...]`, as
    `how` says (see `RowStrategy`)."""
    R, B = rows.shape[:2]
    if how.strategy == "fold":
        out = fn(rows.reshape((R * B,) + rows.shape[2:]), tile_context(ctx, R))
        return out.reshape((R, B) + out.shape[1:])
    if how.strategy == "vmap":
        return jax.vmap(lambda x: fn(x, ctx))(rows)
    c = max(1, min(how.chunk, R))
    n_chunks = -(-R // c)
    pad = n_chunks * c - R
    if pad:  # repeat the last row; its results are dropped
        rows = jnp.concatenate([rows, jnp.repeat(rows[-1:], pad, axis=0)])
    xs = rows.reshape((n_chunks, c * B) + rows.shape[2:])
    ctx_c = tile_context(ctx, c)
    out = jax.lax.map(lambda x: fn(x, ctx_c), xs)
    return out.reshape((n_chunks * c, B) + out.shape[2:])[:R]


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


@dataclasses.dataclass(frozen=True)
class _CleanRun:
    """What every branch of a sweep starts from: the clean run's trace (resid_pre, attn_out, z,
    resid_post, every position), its context (`Record(at="last")`) and the base edits."""

    cfg: ModelConfig
    blocks: Any
    trace: Any
    ctx: Context
    base: Edits | None


def _removed_at_layer(run: _CleanRun, layer: int, hs, z_ref, rows: RowStrategy):
    """Final residual at the last token with each head `hs` of `layer` removed, per kind:
    `[len(hs), kind, batch, d_model]`."""
    cfg, tr, ctx, n = run.cfg, run.trace, run.ctx, run.cfg.n_layers
    idx = jnp.asarray(hs)
    z = tr.z[layer][:, :, idx]  # [batch, pos, h, d_head]
    dz = z[None] - z_ref[:, layer, idx][:, None, None]  # [kind, batch, pos, h, d_head]
    W_O = run.blocks["attn"]["W_O"][layer]  # [head, d_head, d_model]
    delta = jnp.einsum("kbphe,hed->hkbpd", dz, W_O[idx])
    K = delta.shape[1]
    delta = delta.reshape((len(hs) * K,) + delta.shape[2:])  # rows: head-major, then kind
    post_l = tr.resid_pre[layer + 1] if layer + 1 < n else tr.resid_post
    if layer == n - 1:  # the last layer: only the last token is ever read
        d_last = jax.vmap(lambda d: take_last(d, ctx.last))(delta)
        if cfg.parallel_residual:
            out = take_last(post_l, ctx.last)[None] - d_last
        else:
            mid = take_last(tr.resid_pre[layer] + tr.attn_out[layer], ctx.last)[None] - d_last
            out = finish_block(cfg, run.blocks, layer, mid, run.base)
    elif cfg.parallel_residual:  # the MLP read ln2(resid_pre): unchanged by the head

        def rest(x, c):
            return final_at_last(cfg, run.blocks, x, c, layer + 1, run.base)

        out = over_rows(rest, post_l[None] - delta, ctx, rows)
    else:

        def rest(x, c):
            x = finish_block(cfg, run.blocks, layer, x, run.base)
            return final_at_last(cfg, run.blocks, x, c, layer + 1, run.base)

        out = over_rows(rest, (tr.resid_pre[layer] + tr.attn_out[layer])[None] - delta, ctx, rows)
    return out.reshape((len(hs), K) + out.shape[1:])


@functools.partial(jax.jit, static_argnames=("cfg", "heads", "rows"))
def head_sweep(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    z_ref,
    base: Edits | None = None,
    heads: tuple[tuple[int, int], ...] | None = None,
    rows: RowStrategy = RowStrategy(),
):
    """Final residual at each prompt's last token with each head removed, exactly, in one call.

    tokens, mask: `[batch, pos]`; z_ref: `[kind, layer, head, d_head]` (what a removed head's z
    becomes at every position: zeros for zero-ablation, a mean for mean-ablation); base: edits in
    force in every run, the clean one included (heads / neurons only, no batch axis: see
    `check_base_edits`); heads: which (layer, head) to remove (static; default all, layer-major);
    rows: how the rows run through the later layers. Returns (removed `[n_heads_swept, kind,
    batch, d_model]`, rows in the order of `heads`, clean `[batch, d_model]`).
    A head already removed by `base` gets the clean result (its z already is its reference).
    """
    check_base_edits(cfg, base)
    record = Record(resid_pre=True, attn_out=True, z=True, resid_post=True)
    _, tr = model_forward(cfg, params, tokens, mask, base, record)
    ctx = make_context(tokens, mask, Record(at="last"))
    run = _CleanRun(cfg, params["blocks"], tr, ctx, base)
    groups = _group_heads(cfg, heads)
    out = jnp.concatenate(
        [_removed_at_layer(run, layer, hs, z_ref, rows) for layer, hs in groups.items()], axis=0
    )  # layer-major
    if heads is not None:  # rows in the order asked for
        order = [(layer, h) for layer, hs in groups.items() for h in hs]
        pos = {lh: j for j, lh in enumerate(order)}
        out = out[jnp.asarray([pos[(int(a), int(b))] for a, b in heads])]
    return out, take_last(tr.resid_post, ctx.last)


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
# Scores of every head: exact, direct attribution, attribution patching


@functools.partial(jax.jit, static_argnames=("cfg",))
def clean_columns(cfg: ModelConfig, params, tokens, mask, readout: Readout):
    """The clean run's measures at the last token: (projection `[batch, E]`, logit_diff
    `[batch, E]`, random `[batch, R]`)."""
    _, tr = model_forward(
        cfg, params, tokens, mask, None, Record(resid_post=True, at="last", logits="none")
    )
    return readout_columns(cfg, params, readout, tr.resid_post)


@functools.partial(jax.jit, static_argnames=("cfg", "rows"))
def exact_scores(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    z_ref,
    readout,
    emotion_index,
    rows: RowStrategy = RowStrategy(),
):
    """The exact sweep read by the measures, per prompt on its own emotion.

    z_ref `[kind, layer, head, d_head]`. Returns (projection `[kind, layer, head, batch]`,
    logit_diff `[kind, layer, head, batch]`, random `[kind, layer, head, batch, R]`) support
    scores m(clean) - m(removed), and the clean (projection, logit_diff) `[batch]`.
    """
    removed, clean = head_sweep(cfg, params, tokens, mask, z_ref, None, None, rows)
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
    w = unembed_matrix(cfg, params, readout.vocab_ids) @ readout.word_weights  # [d, E]
    w = params["ln_final"]["scale"][:, None] * w
    centred = write - write.mean(-1, keepdims=True)
    ld = own_emotion((centred @ w) / sigma[:, None], emotion_index)
    return proj, ld, rand


def vjp_columns(vjp, out, chunk: int, reduce=None):
    """The pullback `vjp` of every output column of `out [batch, C]`: a pytree like `vjp`'s
    result with a leading axis C. Columns run `chunk` at a time (vmap inside `lax.map`): the
    backward pass's intermediates exist `chunk` times at once, not C times (C = 2 + R columns
    with R ~ 100 random directions would hold ~100 backward passes of GPT-2 in memory).
    reduce: applied to each chunk's pullbacks (leading axis `chunk`) before they are stacked,
    so only what it keeps is held for every column."""
    C = out.shape[1]
    c = max(1, min(chunk, C))
    n = -(-C // c)
    eye = jnp.eye(n * c, C, dtype=out.dtype)  # padded rows: zero cotangents, trimmed below

    def block(cols):  # [c, C] -> pullbacks of c columns
        g = jax.vmap(lambda col: vjp(jnp.broadcast_to(col, out.shape)))(cols)
        return g if reduce is None else reduce(g)

    res = jax.lax.map(block, eye.reshape(n, c, C))
    return jax.tree_util.tree_map(lambda a: a.reshape((n * c,) + a.shape[2:])[:C], res)


def _attribution_run(cfg: ModelConfig, params, tokens, mask, z_mean):
    """(run, m0, s0): run(m, s) = the final residual at the last token `[batch, d_model]` with
    z -> z + m (z_mean - z), then scaled by s (m `[layer, batch, pos, head]`, s `[layer,
    batch, head]`); at (m0, s0) = (0, 1) the clean run."""
    B, P = tokens.shape
    L, H = cfg.n_layers, cfg.n_heads
    patch = jnp.broadcast_to(z_mean[:, None, None], (L, 1, 1) + z_mean.shape[1:])

    def run(m, s):
        edits = Edits(z_patch=patch, z_patch_mask=m, head_scale=s)
        rec = Record(resid_post=True, at="last", logits="none")
        return model_forward(cfg, params, tokens, mask, edits, rec)[1].resid_post

    return run, jnp.zeros((L, B, P, H), jnp.float32), jnp.ones((L, B, H), jnp.float32)


def _attribution_reverse(cfg, params, tokens, mask, z_mean, readout, emotion_index, chunk):
    """Attribution by one backward pass per output column (2 measures + R directions)."""
    run, m0, s0 = _attribution_run(cfg, params, tokens, mask, z_mean)

    def cols(m, s):
        proj, ld, rand = readout_columns(cfg, params, readout, run(m, s))
        own = [own_emotion(proj, emotion_index)[:, None], own_emotion(ld, emotion_index)[:, None]]
        return jnp.concatenate(own + [rand], axis=1)  # [batch, 2 + R]

    out, vjp = jax.vjp(cols, m0, s0)
    gm, gs = vjp_columns(vjp, out, chunk)  # per output column
    # gm [C, L, B, P, H] = grad.(z_mean - z): the support of "mean" is minus that. gs [C, L, B, H]
    mean_k = -gm.sum(axis=3).transpose(0, 1, 3, 2)  # [C, L, H, B]
    zero_k = gs.transpose(0, 1, 3, 2)
    both = jnp.stack([zero_k, mean_k])  # [kind, C, L, H, B]
    return both[:, 0], both[:, 1], jnp.moveaxis(both[:, 2:], 1, -1)


def _attribution_forward(cfg, params, tokens, mask, z_mean, readout, emotion_index, chunk):
    """Attribution by one forward-mode pass per (kind, head): the change u `[batch, d_model]`
    of the final residual, read by every column at once (projections are linear in u; the
    logit difference through its gradient at the clean residual)."""
    run, m0, s0 = _attribution_run(cfg, params, tokens, mask, z_mean)
    L, H = cfg.n_layers, cfg.n_heads
    x0 = run(m0, s0)

    def ld_sum(x):  # prompts are independent: the gradient's row b is prompt b's own
        return own_emotion(readout_columns(cfg, params, readout, x)[1], emotion_index).sum()

    g_ld = jax.grad(ld_sum)(x0)  # [batch, d_model]

    def change(i):  # i < L*H: head i's "zero" tangent (d/ds); else head i - L*H's "mean" (d/dm)
        one = jax.nn.one_hot(i % (L * H), L * H, dtype=jnp.float32).reshape(L, H)
        ts = jnp.where(i < L * H, 1.0, 0.0) * jnp.broadcast_to(one[:, None], s0.shape)
        tm = jnp.where(i < L * H, 0.0, -1.0) * jnp.broadcast_to(one[:, None, None], m0.shape)
        return jax.jvp(run, (m0, s0), (tm, ts))[1]  # support: + d/ds, - d/dm

    n, c = 2 * L * H, max(1, min(chunk, 2 * L * H))
    idx = jnp.arange(-(-n // c) * c).reshape(-1, c) % n  # padded with repeats, trimmed below
    u = jax.lax.map(jax.vmap(change), idx).reshape((-1,) + x0.shape)[:n]  # [2LH, batch, d]
    u = u.reshape((2, L, H) + x0.shape)  # [kind, L, H, batch, d_model]
    dirs = readout.directions[emotion_index]  # [batch, d_model]
    proj = jnp.einsum("klhbd,bd->klhb", u, dirs)
    ld = jnp.einsum("klhbd,bd->klhb", u, g_ld)
    return proj, ld, u @ readout.random.T.astype(u.dtype)


@functools.partial(jax.jit, static_argnames=("cfg", "grad_chunk"))
def attribution_scores(
    cfg: ModelConfig, params, tokens, mask, z_mean, readout, emotion_index, grad_chunk: int = 16
):
    """Attribution patching of every head, per prompt.

    z_mean `[layer, head, d_head]`: the "mean" kind's reference; emotion_index `[batch]`: which
    emotion each prompt is scored on. Returns (projection `[kind, layer, head, batch]`,
    logit_diff `[kind, layer, head, batch]`, random `[kind, layer, head, batch, R]`), kinds in
    KINDS order: zero = grad . z, mean = grad . (z - z_mean), summed over positions.

    How both kinds come from one run: z is replaced by `z + m (z_mean - z)` and then scaled by
    `s`; at m = 0, s = 1 the run is the clean one, d/dm = grad . (z_mean - z) per position and
    d/ds = grad . z per prompt and head. Whichever needs fewer passes runs, `grad_chunk` at a
    time: one backward pass per output column (2 measures + R random directions,
    `vjp_columns`), or one forward-mode pass per kind and head (2 L H; the demo's 4 x 4 heads
    with R = 99: 32 passes instead of 101).
    """
    n_cols = 2 + readout.random.shape[0]
    how = _attribution_forward if 2 * cfg.n_layers * cfg.n_heads < n_cols else _attribution_reverse
    return how(cfg, params, tokens, mask, z_mean, readout, emotion_index, grad_chunk)


@functools.partial(jax.jit, static_argnames=("cfg",))
def neutral_mean_z(cfg: ModelConfig, params, tokens, mask):
    """Mean z over all real tokens, per layer and head: `[layer, head, d_head]`."""
    _, tr = model_forward(cfg, params, tokens, mask, None, Record(z=True, logits="none"))
    m = jnp.asarray(mask, tr.z.dtype)[None, :, :, None, None]
    return (tr.z * m).sum(axis=(1, 2)) / m.sum(axis=(1, 2))


# ---------------------------------------------------------------------------------------------
# Screening over batches of prompts


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Tokenised prompts: tokens, mask `[n, pos]`; emotion_index `[n]` (the emotion each prompt
    is scored on; None for neutral prompts)."""

    tokens: Any
    mask: Any
    emotion_index: Any = None


@dataclasses.dataclass(frozen=True)
class ScreenSettings:
    """What `screen_heads` runs: methods (subset of METHODS), removal kinds (subset of KINDS),
    prompts per compiled call (the last batch padded with copies, then trimmed), how the
    exact sweep's rows run, and how many output columns attribution pulls back at once
    (`vjp_columns`)."""

    methods: tuple[str, ...] = METHODS
    kinds: tuple[str, ...] = KINDS
    batch_size: int = 32
    rows: RowStrategy = RowStrategy()
    grad_chunk: int = 16

    def __post_init__(self):
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"method {m!r} unknown; use a subset of {METHODS}")
        for k in self.kinds:
            if k not in KINDS:
                raise ValueError(f"ablation kind {k!r} unknown; use a subset of {KINDS}")


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


@dataclasses.dataclass(frozen=True)
class _References:
    """What a removed head's z becomes: mean `[layer, head, d_head]` (the "mean" kind), every
    kind `[kind, layer, head, d_head]` in KINDS order, and only the kinds the exact sweep runs
    (each costs a full sweep) `[len(exact_kinds), layer, head, d_head]`."""

    mean: Any
    every: Any
    exact_kinds: tuple[str, ...]
    exact: Any

    @classmethod
    def of(cls, z_mean, kinds) -> _References:
        z_mean = jnp.asarray(z_mean)
        every = jnp.stack([jnp.zeros_like(z_mean), z_mean])  # KINDS order
        exact_kinds = tuple(k for k in KINDS if k in kinds)
        exact = jnp.stack([every[KINDS.index(k)] for k in exact_kinds])
        return cls(z_mean, every, exact_kinds, exact)


def _method_scores(cfg, params, method: str, batch: Prompts, readout, refs, settings):
    """One method's (projection, logit_diff, random) support scores of a batch, kinds in KINDS
    order (zeros where the exact sweep did not run a kind)."""
    t, mk, emo = batch.tokens, batch.mask, batch.emotion_index
    if method == "direct":
        return direct_scores(cfg, params, t, mk, refs.every, readout, emo)
    if method == "attribution":
        return attribution_scores(cfg, params, t, mk, refs.mean, readout, emo, settings.grad_chunk)
    part = exact_scores(cfg, params, t, mk, refs.exact, readout, emo, settings.rows)
    full = []
    for a in part[:3]:
        slots = [
            a[refs.exact_kinds.index(k)] if k in refs.exact_kinds else jnp.zeros_like(a[0])
            for k in KINDS
        ]
        full.append(jnp.stack(slots))
    return tuple(full)


@dataclasses.dataclass
class _ScreenParts:
    """A screen's per-batch pieces, concatenated over batches at the end: values, random and
    clean hold lists of `Screen`'s fields (keyed the same way), one entry per batch."""

    kinds: tuple[str, ...]
    values: dict[tuple[str, str, str], list] = dataclasses.field(default_factory=dict)
    random: dict[tuple[str, str], list] = dataclasses.field(default_factory=dict)
    clean: dict[str, list] = dataclasses.field(
        default_factory=lambda: {"projection": [], "logit_diff": []}
    )

    def add(self, method: str, scores, cnt: int):
        proj, ld, rand = to_host(tuple(scores))
        for ki, kind in enumerate(KINDS):
            if kind in self.kinds:
                self.values.setdefault((method, "projection", kind), []).append(proj[ki, ..., :cnt])
                self.values.setdefault((method, "logit_diff", kind), []).append(ld[ki, ..., :cnt])
                self.random.setdefault((method, kind), []).append(rand[ki, :, :, :cnt])


def _neutral_clean(cfg, params, neutral: Prompts | None, readout) -> dict[str, np.ndarray]:
    if neutral is None:
        return {}
    t, mk = jnp.asarray(neutral.tokens, jnp.int32), jnp.asarray(neutral.mask, bool)
    cp, cl, _ = clean_columns(cfg, params, t, mk, readout)
    return {"projection": np.asarray(cp), "logit_diff": np.asarray(cl)}


def screen_heads(
    cfg: ModelConfig,
    params,
    prompts: Prompts,
    readout: Readout,
    z_mean,
    settings: ScreenSettings = ScreenSettings(),
    neutral: Prompts | None = None,
) -> Screen:
    """All chosen methods over every head, per prompt (tokens `[n, pos]`, emotion_index `[n]`),
    z_mean `[layer, head, d_head]` the "mean" kind's reference; neutral: prompts whose clean
    measures are recorded beside (the reference), or None."""
    tokens, mask = np.asarray(prompts.tokens, np.int32), np.asarray(prompts.mask, bool)
    emotion_index = np.asarray(prompts.emotion_index, np.int32)
    n = tokens.shape[0]
    bs = min(settings.batch_size, n)
    refs = _References.of(z_mean, settings.kinds)
    parts = _ScreenParts(tuple(settings.kinds))
    for start in range(0, n, bs):
        cnt = min(start + bs, n) - start
        batch = Prompts(
            *(
                jnp.asarray(pad_rows(a[start : start + cnt], bs))
                for a in (tokens, mask, emotion_index)
            )
        )
        cp, cl, _ = clean_columns(cfg, params, batch.tokens, batch.mask, readout)
        parts.clean["projection"].append(np.asarray(own_emotion(cp, batch.emotion_index))[:cnt])
        parts.clean["logit_diff"].append(np.asarray(own_emotion(cl, batch.emotion_index))[:cnt])
        for method in settings.methods:
            scores = _method_scores(cfg, params, method, batch, readout, refs, settings)
            parts.add(method, scores, cnt)
    return Screen(
        emotions=readout.emotions,
        values={k: np.concatenate(v, axis=-1) for k, v in parts.values.items()},
        random={k: np.concatenate(v, axis=2) for k, v in parts.random.items()},
        emotion_index=emotion_index,
        clean={k: np.concatenate(v) for k, v in parts.clean.items()},
        neutral_clean=_neutral_clean(cfg, params, neutral, readout),
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
    )


# ---------------------------------------------------------------------------------------------
# Tables: per-emotion means with CIs, rank correlations, top-k


def _ranks(value) -> np.ndarray:
    """1 = largest, ties broken by position (stable), in `value`'s shape."""
    order = np.argsort(-value, axis=None, kind="stable")
    rank = np.empty(value.size, int)
    rank[order] = np.arange(1, value.size + 1)
    return rank.reshape(value.shape)


def family_max_null(value, per_dir, level: float) -> dict:
    """Each unit's score against the max-over-units null of its family (family-wise over all
    units: the L x H heads of a map, or the neurons of a layer range, `jaxcirc.core.neurons`).

    value `[L, H]`: every head's mean score on an emotion; per_dir `[L, H, R]`: every head's mean
    score on R random unit directions (scored like the emotion vector, same prompts). Under the
    null that the emotion direction is one more random direction, the best head's score is one
    draw of `per_dir.max(axis=(0, 1))`; comparing every head with that distribution controls
    the family-wise error over the L x H heads (the max-statistic method). Returns, per head,
    p_max_null = (1 + #{r: max over heads of per_dir[..., r] >= value}) / (1 + R) (support
    side) and p_min_null likewise with the min over heads and <= (suppression side), both
    `[L, H]`; max_null_hi: the `level` quantile of the max (the max-stat threshold),
    min_null_lo: the 1 - level quantile of the min, and n_null = R. The smallest p is 1/(1+R).
    """
    per_dir = np.asarray(per_dir, np.float64)
    maxes, mins = per_dir.max(axis=(0, 1)), per_dir.min(axis=(0, 1))  # [R]
    v = np.asarray(value, np.float64)
    return {
        "p_max_null": np.asarray(permutation_pvalue(v, maxes[:, None, None], "greater")),
        "p_min_null": np.asarray(permutation_pvalue(v, mins[:, None, None], "less")),
        "max_null_hi": float(np.percentile(maxes, 100.0 * level)),
        "min_null_lo": float(np.percentile(mins, 100.0 * (1.0 - level))),
        "n_null": int(maxes.size),
    }


def _null_fields(per_dir, value, level: float):
    """Per-head row fields of the random-direction nulls, as a function of (layer, head): the
    head's own band and the family-wise max-over-heads comparison (`family_max_null`).
    None when the map has no random directions (logit_diff, or n_random = 0)."""
    if per_dir is None or per_dir.shape[-1] == 0:
        keys = ("random_dir_lo", "random_dir_hi", "p_max_null", "p_min_null", "max_null_hi")
        keys += ("min_null_lo", "clears_max_null", "clears_min_null", "n_null")
        return lambda at: dict.fromkeys(keys)
    alpha = 100.0 * (1.0 - level) / 2.0
    own_lo, own_hi = np.percentile(per_dir, [alpha, 100 - alpha], axis=-1)
    mx = family_max_null(value, per_dir, level)

    def fields(at):
        return {
            "random_dir_lo": float(own_lo[at]),
            "random_dir_hi": float(own_hi[at]),
            "p_max_null": float(mx["p_max_null"][at]),
            "p_min_null": float(mx["p_min_null"][at]),
            "max_null_hi": mx["max_null_hi"],
            "min_null_lo": mx["min_null_lo"],
            "clears_max_null": bool(mx["p_max_null"][at] <= 1.0 - level),
            "clears_min_null": bool(mx["p_min_null"][at] <= 1.0 - level),
            "n_null": mx["n_null"],
        }

    return fields


def emotion_scores(screen: Screen, n_boot: int, seed: int, level: float = 0.95) -> list[dict]:
    """One labelled row per (method, measure, kind, emotion, layer, head): mean support score
    over that emotion's prompts, its bootstrap CI (per head, not adjusted for the L x H heads),
    its rank, and (projection) the random-direction nulls: the head's own band
    (random_dir_lo/hi) and the family-wise max-over-heads comparison (`family_max_null`:
    p_max_null, p_min_null, max_null_hi, min_null_lo, clears_max_null / clears_min_null =
    p <= 1 - level, n_null). Fields without a null (logit_diff) are None."""
    rows = []
    for (method, measure, kind), v in screen.values.items():
        rnd = screen.random.get((method, kind)) if measure == "projection" else None
        for ei, emo in enumerate(screen.emotions):
            sel = screen.emotion_index == ei
            if sel.sum() < 2:
                raise ValueError(f"emotion {emo!r} has {sel.sum()} prompts; need at least 2")
            est = bootstrap_ci(v[..., sel], n_boot=n_boot, seed=seed, level=level)
            value = np.asarray(est.value)
            lo, hi, rank = np.asarray(est.lo), np.asarray(est.hi), _ranks(value)
            per_dir = None if rnd is None else rnd[:, :, sel].mean(axis=2)  # [L, H, R]
            nulls = _null_fields(per_dir, value, level)
            labels = {"method": method, "measure": measure, "ablation": kind, "emotion": emo}
            for layer in range(screen.n_layers):
                for head in range(screen.n_heads):
                    at = (layer, head)
                    rows.append(
                        {
                            **labels,
                            "layer": layer,
                            "head": head,
                            "score": float(value[at]),
                            "ci_lo": float(lo[at]),
                            "ci_hi": float(hi[at]),
                            "rank": int(rank[at]),
                            "n_prompts": int(sel.sum()),
                            **nulls(at),
                        }
                    )
    return rows


def clean_means(screen: Screen) -> dict[str, dict]:
    """Per "measure/emotion": the clean measure's mean on the emotion's prompts and (where
    recorded) on the neutral prompts."""
    clean = {}
    for measure, v in screen.clean.items():
        for ei, emo in enumerate(screen.emotions):
            sel = screen.emotion_index == ei
            entry = {"emotional_mean": float(v[sel].mean()), "n_emotional": int(sel.sum())}
            if measure in screen.neutral_clean:
                nv = screen.neutral_clean[measure][:, ei]
                entry.update(neutral_mean=float(nv.mean()), n_neutral=int(nv.size))
            clean[f"{measure}/{emo}"] = entry
    return clean


def score_matrix(rows: list[dict], method, measure, kind, emotion, n_layers, n_heads):
    """`[layer, head]` scores for one (method, measure, kind, emotion) from `emotion_scores`."""
    m = np.full((n_layers, n_heads), np.nan)
    want = (method, measure, kind, emotion)
    for r in rows:
        if (r["method"], r["measure"], r["ablation"], r["emotion"]) == want:
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
                        labels = {"method_a": names[i], "method_b": names[j], "measure": measure}
                        out.append({**labels, "ablation": kind, "emotion": emo, **rc})
    return out


def top_heads(rows: list[dict], k: int) -> dict:
    """Per "method/measure/ablation/emotion": the k most supportive ("top", with p_max_null and
    clears_max_null) and k most suppressive ("bottom", with p_min_null and clears_min_null)
    heads with score and CI; "null": the max-over-heads threshold (max_null_hi, min_null_lo)
    and n_null; how many of the n_heads clear each side (None fields: no null, logit_diff)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(
            f"{r['method']}/{r['measure']}/{r['ablation']}/{r['emotion']}", []
        ).append(r)
    out = {}
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: -r["score"])
        pick = lambda sub, side: [  # noqa: E731
            {f: r.get(f) for f in ("layer", "head", "score", "ci_lo", "ci_hi", "rank") + side}
            for r in sub
        ]
        out[key] = {
            "top": pick(rs[:k], ("p_max_null", "clears_max_null")),
            "bottom": pick(rs[::-1][:k], ("p_min_null", "clears_min_null")),
            "null": {f: rs[0].get(f) for f in ("max_null_hi", "min_null_lo", "n_null")},
            "n_clear_max_null": sum(bool(r.get("clears_max_null")) for r in rs),
            "n_clear_min_null": sum(bool(r.get("clears_min_null")) for r in rs),
            "n_heads": len(rs),
        }
    return out
