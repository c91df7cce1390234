"""MLP neuron scores (the study's future work): the head-screening machinery over the neurons of a
chosen layer range.

Scores are support scores, as for heads (`jaxcirc.core.heads`): how much the neuron pushes the
emotion measure m_e up on e's prompts. Removal kinds: "zero" (activation -> 0) and "mean" (-> its
mean over the neutral prompts' real tokens), at every position.

- "direct": (post_n - ref_n) W_out[n] read by the measure (final LN scale frozen for logit_diff);
- "attribution": grad_post m_e . (post_n - ref_n) summed over positions, from `neuron_scale`
  gradients (one forward and one backward per kind);
- "exact": for the best neurons by attribution, the exact removal through a branch sweep: the
  clean resid_post of the neuron's layer minus (post_n - ref_n) W_out[n], then the later layers
  (`models.final_at_last`), every neuron a row (`heads.over_rows`).

There are thousands of neurons per layer, so the exact effect is computed for a shortlist (the
best by attribution) and for a seeded random sample of the same size; attribution's rank
correlation with the exact effect is reported on both: the shortlist's is biased (selected by
attribution, on the same prompts), the random sample's is not.

A top-n list picks the largest of thousands of scores, so each listed neuron is compared with
the best neuron's score on each of R random unit directions (`neuron_direct_null`,
`neuron_attribution_null`, `heads.family_max_null`): a family-wise p over the layer range.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcirc.core import heads
from jaxcirc.core.stats import bootstrap_ci
from models import (
    Edits,
    ModelConfig,
    Record,
    final_at_last,
    make_context,
    run_blocks,
    take_last,
)
from models import forward as model_forward

Neuron = tuple[int, int]


def check_layers(cfg: ModelConfig, layers: Sequence[int]) -> range:
    """(first, last + 1) -> the range of layers, checked against the model's."""
    a, b = int(layers[0]), int(layers[1])
    if not 0 <= a < b <= cfg.n_layers:
        raise ValueError(
            f"neuron layers [{a}, {b}) are not inside the model's {cfg.n_layers} layers; "
            f"pass (first, last + 1) with 0 <= first < last + 1 <= {cfg.n_layers}"
        )
    return range(a, b)


@functools.partial(jax.jit, static_argnames=("cfg",))
def neuron_mean(cfg: ModelConfig, params, tokens, mask):
    """Mean activation over real tokens `[layer, d_mlp]`."""
    _, tr = model_forward(cfg, params, tokens, mask, None, Record(mlp_post=True, logits="none"))
    m = jnp.asarray(mask, tr.mlp_post.dtype)[None, :, :, None]
    return (tr.mlp_post * m).sum(axis=(1, 2)) / m.sum(axis=(1, 2))


def _scaled_run(cfg: ModelConfig, params, tokens, mask, ref, read):
    """m(s): the final residual at the last token, read by `read` (`[batch, d_model]` -> `[batch,
    C]`), with every neuron's activation `post <- s post + (1 - s) ref` (ref `[layer, d_mlp]`),
    s `[layer, batch, d_mlp]` one scale per prompt held at every position."""

    def run(s):
        edits = Edits(neuron_scale=s, neuron_mean=ref)
        rec = Record(resid_post=True, at="last", logits="none")
        _, tr = model_forward(cfg, params, tokens, mask, edits, rec)
        return read(tr.resid_post)

    return run


@functools.partial(jax.jit, static_argnames=("cfg",))
def neuron_attribution(cfg: ModelConfig, params, tokens, mask, mu, readout, emotion_index):
    """Attribution patching of every neuron: (projection, logit_diff) each
    `[kind, layer, d_mlp, batch]`, kinds zero (mu ignored) and mean (ref = mu `[layer, d_mlp]`).

    d/ds of the run with `post <- s post + (1 - s) ref` at s = 1 (one s per prompt and neuron,
    held at every position) is grad . (post - ref) summed over positions: one forward and one
    backward (per measure) for each kind.
    """
    B = tokens.shape[0]
    L, M = cfg.n_layers, cfg.d_mlp

    def read(x):
        proj, ld, _ = heads.readout_columns(cfg, params, readout, x)
        p = heads.own_emotion(proj, emotion_index)
        return jnp.stack([p, heads.own_emotion(ld, emotion_index)], axis=1)  # [batch, 2]

    def scores(ref):
        run = _scaled_run(cfg, params, tokens, mask, ref, read)
        out, vjp = jax.vjp(run, jnp.ones((L, B, M), jnp.float32))
        (g,) = heads.vjp_columns(vjp, out, 2)  # [2, L, B, M]
        return g.transpose(0, 1, 3, 2)  # [2, L, M, B]

    both = jnp.stack([scores(jnp.zeros_like(mu)), scores(mu)])  # [kind, 2, L, M, B]
    return both[:, 0], both[:, 1]


@functools.partial(jax.jit, static_argnames=("cfg", "layers", "grad_chunk"))
def neuron_attribution_null(
    cfg: ModelConfig, params, tokens, mask, mu, random, weights, layers, grad_chunk: int = 4
):
    """Attribution of every neuron of `layers` (static (first, last + 1)) to the projection on
    each random unit direction `random [R, d_model]`, averaged over each group of prompts:
    weights `[G, batch]` (e.g. 1/n_e on emotion e's prompts) -> `[kind, G, n_layers_in_range,
    d_mlp, R]`, kinds zero and mean (ref = mu).

    A neuron reaches the output only through its MLP's write, so grad_post n = grad_resid .
    W_out[n], with grad_resid the gradient at the residual after its block (read through an
    additive `resid_add` on the next block's input): one backward pass per direction from the
    range's second layer on (`grad_chunk` at a time; 4 ran fastest on the 2-core CPU) serves
    both kinds and every neuron of the range, each reduced to group means at once (per-prompt
    values for R directions would be R times the scores' size). The last layer's write reaches
    only the final residual: there attribution is the direct effect (`neuron_direct_null`)."""
    a, b = layers
    L = cfg.n_layers
    _, tr = model_forward(
        cfg, params, tokens, mask, None, Record(resid_pre=True, mlp_post=True, logits="none")
    )
    refs = jnp.stack([jnp.zeros_like(mu), mu])  # [kind, layer, d_mlp]
    parts = []
    inner = range(a, min(b, L - 1))  # layers whose write later blocks read
    if len(inner):
        s0, ctx = inner.start + 1, make_context(tokens, mask, Record(at="last"))

        def run(add):  # [L - s0, batch, pos, d_model]: added to the inputs of blocks s0..L-1
            full = jnp.zeros((L,) + add.shape[1:], add.dtype).at[s0:].set(add)
            x, _, _ = run_blocks(
                cfg,
                params["blocks"],
                tr.resid_pre[s0],
                ctx,
                Edits(resid_add=full),
                Record(),
                range(s0, L),
            )
            return take_last(x, ctx.last) @ random.T.astype(x.dtype)

        out, vjp = jax.vjp(run, jnp.zeros((L - s0,) + tr.resid_pre.shape[1:], jnp.float32))
        W_out = params["blocks"]["mlp"]["W_out"]  # [layer, d_mlp, d_model]

        def reduce(g):  # ([c, L - s0, B, P, d],) -> [c, kind, G, len(inner), d_mlp]
            per = []
            for layer in inner:
                grad_post = jnp.einsum("cbpd,md->cbpm", g[0][:, layer + 1 - s0], W_out[layer])
                act = tr.mlp_post[layer][None] - refs[:, layer][:, None, None]  # [kind, B, P, M]
                per.append(jnp.einsum("cbpm,kbpm,gb->ckgm", grad_post, act, weights))
            return jnp.stack(per, axis=3)

        parts.append(jnp.moveaxis(heads.vjp_columns(vjp, out, grad_chunk, reduce), 0, -1))
    if b == L:
        last = (L - 1, L)
        parts.append(neuron_direct_null(cfg, params, tokens, mask, mu, random, weights, last))
    return jnp.concatenate(parts, axis=2)


@functools.partial(jax.jit, static_argnames=("cfg", "layers"))
def neuron_direct_null(cfg: ModelConfig, params, tokens, mask, mu, random, weights, layers):
    """Direct effect of every neuron of `layers` on the projection on each random unit
    direction, averaged over each group of prompts (weights `[G, batch]`): `[kind, G,
    n_layers_in_range, d_mlp, R]`. Linear in the activation, so it is the group's mean
    activation at the last token minus the reference, times W_out[n] . r."""
    rec = Record(mlp_post=True, at="last", logits="none")
    _, tr = model_forward(cfg, params, tokens, mask, None, rec)
    a, b = layers
    W_out = params["blocks"]["mlp"]["W_out"][a:b]  # [layers, d_mlp, d_model]
    reads = W_out @ random.T.astype(W_out.dtype)  # [layers, d_mlp, R]
    mean_post = jnp.einsum("lbm,gb->glm", tr.mlp_post[a:b], weights)  # [G, layers, d_mlp]
    out = [(mean_post - ref[a:b][None])[..., None] * reads[None] for ref in (0.0 * mu, mu)]
    return jnp.stack(out)


@functools.partial(jax.jit, static_argnames=("cfg",))
def neuron_direct(cfg: ModelConfig, params, tokens, mask, mu, readout, emotion_index):
    """Direct effect of every neuron: (projection, logit_diff) `[kind, layer, d_mlp, batch]`."""
    rec = Record(mlp_post=True, resid_post=True, at="last", logits="none")
    _, tr = model_forward(cfg, params, tokens, mask, None, rec)
    W_out = params["blocks"]["mlp"]["W_out"]  # [layer, d_mlp, d_model]
    post = tr.mlp_post  # [layer, batch, d_mlp]
    dirs = readout.directions[emotion_index]  # [batch, d_model]
    w_read = jnp.einsum("lmd,bd->lmb", W_out, dirs)  # [layer, d_mlp, batch]
    x = tr.resid_post.astype(jnp.float32)
    sigma = jnp.sqrt(jnp.var(x, axis=-1) + cfg.ln_eps)
    wu = heads.unembed_matrix(cfg, params, readout.vocab_ids) @ readout.word_weights  # [d, E]
    wu = params["ln_final"]["scale"][:, None] * wu
    centred = W_out - W_out.mean(-1, keepdims=True)
    ld_read = jnp.einsum("lmd,de->lme", centred, wu)[..., emotion_index] / sigma  # [l, m, b]
    out_p, out_l = [], []
    for ref in (jnp.zeros_like(mu), mu):
        a = jnp.moveaxis(post, 1, 2) - ref[..., None]  # [layer, d_mlp, batch]
        out_p.append(a * w_read)
        out_l.append(a * ld_read)
    return jnp.stack(out_p), jnp.stack(out_l)


def _by_layer(cfg: ModelConfig, neurons) -> dict[int, list[int]]:
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        if not (0 <= layer < cfg.n_layers and 0 <= i < cfg.d_mlp):
            raise ValueError(
                f"neuron ({layer}, {i}) is outside {cfg.n_layers} layers x {cfg.d_mlp}"
            )
        by_layer.setdefault(int(layer), []).append(int(i))
    return dict(sorted(by_layer.items()))


@functools.partial(jax.jit, static_argnames=("cfg", "neurons", "chunk"))
def neuron_sweep(cfg: ModelConfig, params, tokens, mask, refs, neurons, chunk: int = 16):
    """Final residual at the last token with each neuron removed: `[n_neurons, kind, batch,
    d_model]`, and the clean one `[batch, d_model]`. refs `[kind, layer, d_mlp]` (what a removed
    neuron's activation becomes); neurons: static tuple of (layer, index); rows run through the
    later layers in chunks of `chunk` (`RowStrategy("map", chunk)`)."""
    _, tr = model_forward(
        cfg, params, tokens, mask, None, Record(resid_pre=True, resid_post=True, mlp_post=True)
    )
    ctx = make_context(tokens, mask, Record(at="last"))
    n = cfg.n_layers
    W_out = params["blocks"]["mlp"]["W_out"]
    outs, order = [], []
    for layer, idx in _by_layer(cfg, neurons).items():
        ii = jnp.asarray(idx)
        a = tr.mlp_post[layer][..., ii]  # [batch, pos, k]
        da = a[None] - refs[:, layer, ii][:, None, None]  # [kind, batch, pos, k]
        delta = jnp.einsum("cbpk,kd->kcbpd", da, W_out[layer, ii])
        K = delta.shape[1]
        delta = delta.reshape((len(idx) * K,) + delta.shape[2:])
        post = tr.resid_pre[layer + 1] if layer + 1 < n else tr.resid_post
        if layer == n - 1:
            last = take_last(post, ctx.last)[None]
            out = last - jax.vmap(lambda d: take_last(d, ctx.last))(delta)
        else:

            def rest(x, c, layer=layer):
                return final_at_last(cfg, params["blocks"], x, c, layer + 1, None)

            rows = heads.RowStrategy("map", chunk)
            out = heads.over_rows(rest, post[None] - delta, ctx, rows)
        outs.append(out.reshape((len(idx), K) + out.shape[1:]))
        order += [(layer, i) for i in idx]
    result = jnp.concatenate(outs)
    pos = {nr: j for j, nr in enumerate(order)}
    result = result[jnp.asarray([pos[(int(a), int(b))] for a, b in neurons])]
    return result, take_last(tr.resid_post, ctx.last)


def single_neuron_removal(cfg: ModelConfig, params, tokens, mask, layer, i, ref=None):
    """Reference for `neuron_sweep`: a plain forward with Edits(neuron_scale=...)."""
    s = jnp.ones((cfg.n_layers, cfg.d_mlp)).at[layer, i].set(0.0)
    _, tr = model_forward(
        cfg,
        params,
        tokens,
        mask,
        Edits(neuron_scale=s, neuron_mean=ref),
        Record(resid_post=True, at="last", logits="none"),
    )
    return tr.resid_post


# ---------------------------------------------------------------------------------------------
# Tables


def neuron_scores(cfg: ModelConfig, params, prompts: heads.Prompts, mu, readout):
    """Attribution and direct scores of every neuron, per prompt on its own emotion:
    {(method, measure): `[kind, layer, d_mlp, n_prompts]` numpy}, kinds in `heads.KINDS` order
    (zero, mean = mu `[layer, d_mlp]`)."""
    args = (jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask), mu, readout)
    emo = jnp.asarray(prompts.emotion_index)
    attr_p, attr_l = (np.asarray(a) for a in neuron_attribution(cfg, params, *args, emo))
    dir_p, dir_l = (np.asarray(a) for a in neuron_direct(cfg, params, *args, emo))
    return {
        ("attribution", "projection"): attr_p,
        ("attribution", "logit_diff"): attr_l,
        ("direct", "projection"): dir_p,
        ("direct", "logit_diff"): dir_l,
    }


def top_neurons(vals, k: int, n_boot: int, seed: int, level: float, first_layer: int, null=None):
    """The k neurons of largest mean score: vals `[layer, d_mlp, n_prompts]` (layers from
    `first_layer`) -> rows of layer, neuron, score (mean), bootstrap CI (per neuron, not
    adjusted for the thousands listed from) and rank; with null `[layer, d_mlp, R]` (each
    neuron's mean score on R random unit directions, same prompts) also the family-wise
    comparison with the best neuron of each direction (`heads.family_max_null`): p_max_null,
    clears_max_null (p <= 1 - level), max_null_hi (the level quantile of the max over neurons)
    and n_null; None without a null."""
    est = bootstrap_ci(vals, n_boot=n_boot, seed=seed, level=level)
    value = np.asarray(est.value)
    fam = None if null is None else heads.family_max_null(value, null, level)
    rows = []
    for rank, flat in enumerate(np.argsort(-value, axis=None)[:k], start=1):
        li, ni = np.unravel_index(flat, value.shape)
        p = None if fam is None else float(fam["p_max_null"][li, ni])
        rows.append(
            {
                "layer": first_layer + int(li),
                "neuron": int(ni),
                "score": float(value[li, ni]),
                "ci_lo": float(np.asarray(est.lo)[li, ni]),
                "ci_hi": float(np.asarray(est.hi)[li, ni]),
                "rank": rank,
                "p_max_null": p,
                "clears_max_null": None if p is None else bool(p <= 1.0 - level),
                "max_null_hi": None if fam is None else fam["max_null_hi"],
                "n_null": None if fam is None else fam["n_null"],
                "n_neurons": int(value.size),
            }
        )
    return rows


def random_sample(layers: range, d_mlp: int, n: int, seed: int) -> tuple[Neuron, ...]:
    """n neurons drawn uniformly without replacement from `layers` x d_mlp (seeded): the
    unselected set the exact-vs-attribution agreement is measured on beside the shortlist."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(len(layers) * d_mlp, min(n, len(layers) * d_mlp), replace=False)
    return tuple((layers.start + int(f) // d_mlp, int(f) % d_mlp) for f in np.sort(flat))


def shortlist(mean_scores, n: int, first_layer: int) -> tuple[Neuron, ...]:
    """The n neurons of largest score in `mean_scores [layer, d_mlp]` (layers from
    `first_layer`), best first."""
    flat = np.argsort(-mean_scores, axis=None)[:n]
    return tuple(
        (first_layer + int(a), int(b))
        for a, b in zip(*np.unravel_index(flat, mean_scores.shape), strict=True)
    )


@functools.partial(jax.jit, static_argnames=("cfg", "neurons", "chunk"))
def _exact(cfg: ModelConfig, params, tokens, mask, refs, neurons, target, chunk):
    removed, clean = neuron_sweep(cfg, params, tokens, mask, refs, neurons, chunk)
    return target.read(cfg, params, clean)[None, None] - target.read(cfg, params, removed)


def exact_effects(cfg: ModelConfig, params, prompts: heads.Prompts, refs, neurons, target, chunk):
    """m(clean) - m(neuron removed) per neuron, kind and prompt `[n_neurons, kind, n_prompts]`
    (numpy) for `target` (`heads.Target`), refs `[kind, layer, d_mlp]`. The sweep and its
    reading compile as one program (read outside, every small op compiled on its own)."""
    neurons = tuple((int(a), int(b)) for a, b in neurons)
    t, m = jnp.asarray(prompts.tokens), jnp.asarray(prompts.mask)
    return np.asarray(_exact(cfg, params, t, m, refs, neurons, target, chunk))
