"""MLP neurons (the study's future work): the head-screening machinery over the neurons of a
chosen layer range.

Scores are support scores, as for heads (`jaxcirc.phases.heads`): how much the neuron pushes the emotion
measure m_e up on e's prompts. Removal kinds: "zero" (activation -> 0) and "mean" (-> its mean
over the neutral prompts' real tokens), at every position.

- "direct": (post_n - ref_n) W_out[n] read by the measure (final LN scale frozen for logit_diff);
- "attribution": grad_post m_e . (post_n - ref_n) summed over positions, from `neuron_scale`
  gradients (one forward and one backward per kind);
- "exact": for the best `n_exact` neurons by attribution, the exact removal through a branch
  sweep: the clean resid_post of the neuron's layer minus (post_n - ref_n) W_out[n], then the
  later layers (`heads.final_at_last`), every neuron a row (`heads.over_rows`).

There are thousands of neurons per layer, so the exact effect is computed for a shortlist and
its rank correlation with attribution is reported on that shortlist.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core.measures import WordIds, word_token_ids
from jaxcirc.core.stats import bootstrap_ci
from jaxcirc.data import lexicon
from jaxcirc.infra import artifacts
from jaxcirc.phases import heads
from jaxcirc.report import plots
from models.config import ModelConfig
from models.contract import Edits, Record
from models.transformer import forward as model_forward
from models.transformer import make_context

Neuron = tuple[int, int]


def check_layers(cfg: ModelConfig, layers: Sequence[int]) -> range:
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


@functools.partial(jax.jit, static_argnames=("cfg",))
def neuron_attribution(cfg: ModelConfig, params, tokens, mask, mu, readout, emotion_index):
    """Attribution patching of every neuron: (projection, logit_diff) each
    `[kind, layer, d_mlp, batch]`, kinds zero (mu ignored) and mean (ref = mu `[layer, d_mlp]`).

    d/ds of the run with `post <- s post + (1 - s) ref` at s = 1 is grad . (post - ref) per
    position: one forward and one backward (per measure) for each kind.
    """
    B, P = tokens.shape
    L, M = cfg.n_layers, cfg.d_mlp

    def scores(ref):
        def run(s):
            edits = Edits(neuron_scale=s, neuron_mean=ref)
            rec = Record(resid_post=True, at="last", logits="none")
            _, tr = model_forward(cfg, params, tokens, mask, edits, rec)
            proj, ld, _ = heads.readout_columns(cfg, params, readout, tr.resid_post)
            p = heads.own_emotion(proj, emotion_index)
            return jnp.stack([p, heads.own_emotion(ld, emotion_index)], axis=1)  # [batch, 2]

        out, vjp = jax.vjp(run, jnp.ones((L, B, P, M), jnp.float32))
        eye = jnp.eye(2, dtype=out.dtype)
        (g,) = jax.vmap(lambda c: vjp(jnp.broadcast_to(c, out.shape)))(eye)  # [2, L, B, P, M]
        return g.sum(axis=3).transpose(0, 1, 3, 2)  # [2, L, M, B]

    both = jnp.stack([scores(jnp.zeros_like(mu)), scores(mu)])  # [kind, 2, L, M, B]
    return both[:, 0], both[:, 1]


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
    wu = heads._unembed_matrix(cfg, params, readout.vocab_ids) @ readout.word_weights  # [d, E]
    wu = params["ln_final"]["scale"][:, None] * wu
    centred = W_out - W_out.mean(-1, keepdims=True)
    ld_read = jnp.einsum("lmd,de->lme", centred, wu)[..., emotion_index] / sigma  # [l, m, b]
    out_p, out_l = [], []
    for ref in (jnp.zeros_like(mu), mu):
        a = jnp.moveaxis(post, 1, 2) - ref[..., None]  # [layer, d_mlp, batch]
        out_p.append(a * w_read)
        out_l.append(a * ld_read)
    return jnp.stack(out_p), jnp.stack(out_l)


@functools.partial(jax.jit, static_argnames=("cfg", "neurons", "chunk"))
def neuron_sweep(cfg: ModelConfig, params, tokens, mask, refs, neurons, chunk: int = 16):
    """Final residual at the last token with each neuron removed: `[n_neurons, kind, batch,
    d_model]`, and the clean one `[batch, d_model]`. refs `[kind, layer, d_mlp]` (what a removed
    neuron's activation becomes); neurons: static tuple of (layer, index)."""
    _, tr = model_forward(
        cfg, params, tokens, mask, None, Record(resid_pre=True, resid_post=True, mlp_post=True)
    )
    ctx = make_context(tokens, mask, Record(at="last"))
    n = cfg.n_layers
    W_out = params["blocks"]["mlp"]["W_out"]
    outs = []
    by_layer: dict[int, list[int]] = {}
    for layer, i in neurons:
        if not (0 <= layer < n and 0 <= i < cfg.d_mlp):
            raise ValueError(f"neuron ({layer}, {i}) is outside {n} layers x {cfg.d_mlp}")
        by_layer.setdefault(int(layer), []).append(int(i))
    order = []
    for layer, idx in sorted(by_layer.items()):
        ii = jnp.asarray(idx)
        a = tr.mlp_post[layer][..., ii]  # [batch, pos, k]
        da = a[None] - refs[:, layer, ii][:, None, None]  # [kind, batch, pos, k]
        delta = jnp.einsum("cbpk,kd->kcbpd", da, W_out[layer, ii])
        K = delta.shape[1]
        delta = delta.reshape((len(idx) * K,) + delta.shape[2:])
        post = tr.resid_pre[layer + 1] if layer + 1 < n else tr.resid_post
        if layer == n - 1:
            last = heads._at_last(post, ctx.last)[None]
            out = last - jax.vmap(lambda d: heads._at_last(d, ctx.last))(delta)
        else:

            def rest(x, c, layer=layer):
                return heads.final_at_last(cfg, params["blocks"], x, c, layer + 1, None)

            out = heads.over_rows(rest, post[None] - delta, ctx, "map", chunk)
        outs.append(out.reshape((len(idx), K) + out.shape[1:]))
        order += [(layer, i) for i in idx]
    result = jnp.concatenate(outs)
    pos = {nr: j for j, nr in enumerate(order)}
    result = result[jnp.asarray([pos[(int(a), int(b))] for a, b in neurons])]
    return result, heads._at_last(tr.resid_post, ctx.last)


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
# The phase


def run_neurons(
    model,
    emotional_prompts: Mapping[str, Sequence[str]],
    neutral_prompts: Sequence[str],
    vectors: Mapping[str, Any],
    ncfg: ml_collections.ConfigDict,
    out_dir,
    word_ids: WordIds | None = None,
    logit_words: Mapping[str, Sequence[str]] | None = None,
) -> dict:
    """Score every neuron of `ncfg.layers` for every emotion (direct, attribution), the best
    `n_exact` exactly; write neurons_scores.npz (all neurons), neurons_top.csv (labelled top
    lists with CIs), neurons_exact.csv (the exact shortlist beside attribution, with their rank
    correlation in neurons_summary.json) and one heatmap-free bar plot per emotion."""
    mc, params = model.config, model.params
    lr = check_layers(mc, ncfg.layers)
    if word_ids is None:
        words = logit_words or lexicon.EMOTION_LOGIT_WORDS
        word_ids = word_token_ids(model.tokenizer, {e: tuple(words[e]) for e in emotional_prompts})
    readout = heads.make_readout(mc, vectors, word_ids, 0, ncfg.seed)
    tcfg = ml_collections.ConfigDict({"prepend_bos": ncfg.prepend_bos, "max_len": ncfg.max_len})
    ids, mask, emo = heads.prepare_prompts(model, emotional_prompts, tcfg)
    n_toks = model.tokenize(
        list(neutral_prompts), prepend_bos=ncfg.prepend_bos, max_len=ncfg.max_len
    )
    mu = neuron_mean(mc, params, jnp.asarray(n_toks.ids), jnp.asarray(n_toks.mask))
    ids_j, mask_j, emo_j = jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(emo)
    attr_p, attr_l = (
        np.asarray(a) for a in neuron_attribution(mc, params, ids_j, mask_j, mu, readout, emo_j)
    )
    dir_p, dir_l = (
        np.asarray(a) for a in neuron_direct(mc, params, ids_j, mask_j, mu, readout, emo_j)
    )
    kinds = [k for k in heads.KINDS if k in ncfg.kinds]
    scores = {
        ("attribution", "projection"): attr_p,
        ("attribution", "logit_diff"): attr_l,
        ("direct", "projection"): dir_p,
        ("direct", "logit_diff"): dir_l,
    }
    label = ncfg.model_label or mc.name or mc.family
    out = Path(out_dir)
    files = {}
    arrays = {}
    top_rows = []
    for (method, measure), v in scores.items():
        for ki, kind in enumerate(heads.KINDS):
            if kind not in kinds:
                continue
            for ei, e in enumerate(readout.emotions):
                sel = emo == ei
                vals = v[ki, lr.start : lr.stop][..., sel]  # [layers, d_mlp, n_e]
                arrays[f"{method}/{measure}/{kind}/{e}"] = vals.mean(-1)
                est = bootstrap_ci(vals, n_boot=ncfg.n_boot, seed=ncfg.seed, level=ncfg.level)
                value = np.asarray(est.value)
                order = np.argsort(-value, axis=None)[: ncfg.top_k]
                for rank, flat in enumerate(order, start=1):
                    li, ni = np.unravel_index(flat, value.shape)
                    top_rows.append(
                        {
                            "model": label,
                            "method": method,
                            "measure": measure,
                            "ablation": kind,
                            "emotion": e,
                            "layer": lr.start + int(li),
                            "neuron": int(ni),
                            "score": float(value[li, ni]),
                            "ci_lo": float(np.asarray(est.lo)[li, ni]),
                            "ci_hi": float(np.asarray(est.hi)[li, ni]),
                            "rank": rank,
                            "n_prompts": int(sel.sum()),
                            "seed": ncfg.seed,
                            "vector": ncfg.vector_label
                            if measure == "projection"
                            else "logit words",
                        }
                    )
    files["scores_npz"] = artifacts.write_npz(
        out / "neurons_scores.npz", **{k.replace("/", "__"): a for k, a in arrays.items()}
    )
    files["top_csv"] = artifacts.write_csv(out / "neurons_top.csv", top_rows)
    # Exact shortlist per emotion: the best n_exact by attribution (first kind, chosen measure).
    m_idx = 0 if ncfg.measure == "projection" else 1
    attr = (attr_p, attr_l)[m_idx]
    refs = jnp.stack([jnp.zeros_like(mu), mu])
    exact_rows, summary = [], {}
    for ei, e in enumerate(readout.emotions):
        sel = emo == ei
        kind_i = heads.KINDS.index(kinds[0])
        mean_attr = attr[kind_i, lr.start : lr.stop][..., sel].mean(-1)
        flat = np.argsort(-mean_attr, axis=None)[: ncfg.n_exact]
        short = tuple(
            (lr.start + int(a), int(b))
            for a, b in zip(*np.unravel_index(flat, mean_attr.shape), strict=True)
        )
        removed, clean = neuron_sweep(mc, params, ids_j[sel], mask_j[sel], refs, short, ncfg.chunk)
        cols = heads.readout_columns(mc, params, readout, removed)[m_idx][..., ei]
        ccols = heads.readout_columns(mc, params, readout, clean)[m_idx][..., ei]
        exact = np.asarray(ccols[None, None] - cols)  # [n, kind, n_e]
        for j, (layer, i) in enumerate(short):
            for ki, kind in enumerate(heads.KINDS):
                if kind not in kinds:
                    continue
                exact_rows.append(
                    {
                        "model": label,
                        "measure": ncfg.measure,
                        "ablation": kind,
                        "emotion": e,
                        "layer": layer,
                        "neuron": i,
                        "exact": float(exact[j, ki].mean()),
                        "attribution": float(attr[ki, layer, i][sel].mean()),
                        "n_prompts": int(sel.sum()),
                    }
                )
        if len(short) >= 3:
            rc = heads.rank_correlation(
                exact[:, kind_i].mean(-1),
                np.array([attr[kind_i, a, b][sel].mean() for a, b in short]),
                n_perm=500,
                seed=ncfg.seed,
            )
            summary[e] = {"exact_vs_attribution": rc, "kind": kinds[0], "n_neurons": len(short)}
        fig = plots.bar_with_ci(
            [f"L{a}N{b}" for a, b in short[:10]],
            {
                "exact": (exact[:10, kind_i].mean(-1), None, None),
                "attribution": (
                    np.array([attr[kind_i, a, b][sel].mean() for a, b in short[:10]]),
                    None,
                    None,
                ),
            },
            ylabel=f"{ncfg.measure}: m(clean) - m(neuron removed)",
            title=f"{label}: top neurons for {e}, {kinds[0]}-ablation, layers "
            f"{lr.start}-{lr.stop - 1}",
        )
        files[f"bar_{e}"] = artifacts.save_figure(out / f"neurons_{e}.png", fig)
    files["exact_csv"] = artifacts.write_csv(out / "neurons_exact.csv", exact_rows)
    files["summary"] = artifacts.write_json(
        out / "neurons_summary.json",
        {
            "what": "rank correlation of exact removal vs attribution over each emotion's shortlist",
            "model": label,
            "layers": [lr.start, lr.stop],
            "values": summary,
        },
    )
    return {
        "scores": arrays,
        "top": top_rows,
        "exact": exact_rows,
        "summary": summary,
        "files": files,
    }
