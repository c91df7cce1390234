"""MLP neurons (the study's future work): score the neurons of a layer range for every emotion
and write the tables. The math is `jaxcirc.core.neurons`; files: neurons_scores.npz,
neurons_top.csv, neurons_exact.csv, neurons_summary.json and neurons_<emotion>.png.

neurons_top.csv (top_k neurons per method, measure, kind and emotion): score, ci_lo, ci_hi (a
per-neuron bootstrap CI, not adjusted for the n_neurons listed from), rank, and for the
projection p_max_null (the score against the best neuron of the range on each of `n_random`
random unit directions: family-wise over the n_neurons), clears_max_null (p <= 1 - level),
max_null_hi (the level quantile of that max), n_null; empty for logit_diff (no null).
neurons_exact.csv: the exact removal effect beside attribution, "set" = "shortlist" (the best
n_exact by attribution) or "random_sample" (n_exact drawn uniformly, seeded).
neurons_summary.json "values"[emotion]: "shortlist" and "random_sample", each with
exact_vs_attribution (Spearman rho, its p and permutation band), n_neurons and "how" (how the
set was chosen: the shortlist's rho is biased toward agreement, the random sample's is not),
and "kind" (the removal kind they use).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core import heads
from jaxcirc.core import neurons as core
from jaxcirc.core.measures import WordIds, word_token_ids
from jaxcirc.data import lexicon
from jaxcirc.infra import artifacts
from jaxcirc.phases.head_screen import prepare_prompts
from jaxcirc.report import plots


@dataclasses.dataclass(frozen=True)
class _Run:
    """What every table of one `run_neurons` call shares."""

    model: Any
    ncfg: ml_collections.ConfigDict
    readout: heads.Readout
    prompts: heads.Prompts  # tokens and mask as jax arrays, emotion_index numpy
    layers: range
    kinds: list[str]
    label: str


def _nulls(run: _Run, mu) -> dict[str, np.ndarray]:
    """Per method: every neuron's mean score on each of the readout's random unit directions,
    per emotion `[kind, emotion, layers, d_mlp, R]` (projection measure's null)."""
    if run.readout.random.shape[0] == 0:
        return {}
    emo = run.prompts.emotion_index
    n_emotions = len(run.readout.emotions)
    weights = np.stack([(emo == e) / max(1, (emo == e).sum()) for e in range(n_emotions)])
    mc, params = run.model.config, run.model.params
    args = (run.prompts.tokens, run.prompts.mask, mu, run.readout.random, jnp.asarray(weights))
    lr = (run.layers.start, run.layers.stop)
    return {
        "direct": np.asarray(core.neuron_direct_null(mc, params, *args, lr)),
        "attribution": np.asarray(
            core.neuron_attribution_null(mc, params, *args, lr, run.ncfg.grad_chunk)
        ),
    }


def _top_tables(run: _Run, scores, nulls) -> tuple[dict, list[dict]]:
    """Per (method, measure, kind, emotion): the mean score of every neuron (the npz arrays)
    and the labelled top-k rows with CIs and (projection) the max-over-neurons null."""
    c, lr = run.ncfg, run.layers
    arrays, top_rows = {}, []
    for (method, measure), v in scores.items():
        for ki, kind in enumerate(heads.KINDS):
            if kind not in run.kinds:
                continue
            for ei, e in enumerate(run.readout.emotions):
                sel = run.prompts.emotion_index == ei
                vals = v[ki, lr.start : lr.stop][..., sel]  # [layers, d_mlp, n_e]
                arrays[f"{method}/{measure}/{kind}/{e}"] = vals.mean(-1)
                labels = {"model": run.label, "method": method, "measure": measure}
                labels.update(ablation=kind, emotion=e)
                vector = c.vector_label if measure == "projection" else "logit words"
                null = nulls[method][ki, ei] if measure == "projection" and nulls else None
                top = core.top_neurons(vals, c.top_k, c.n_boot, c.seed, c.level, lr.start, null)
                for r in top:
                    row = {**labels, **r, "n_prompts": int(sel.sum()), "seed": c.seed}
                    top_rows.append({**row, "vector": vector})
    return arrays, top_rows


_SETS = {
    "shortlist": "the n_exact best neurons by attribution on the same prompts (selected by "
    "attribution: biased toward agreement)",
    "random_sample": "n_exact neurons drawn uniformly from the layer range (seeded; not "
    "selected: the unbiased agreement)",
}


def _agreement(exact_mean, attr_mean, seed: int) -> dict | None:
    """Rank correlation of exact vs attribution over one set of neurons (None under 3)."""
    if len(exact_mean) < 3:
        return None
    return heads.rank_correlation(exact_mean, attr_mean, n_perm=500, seed=seed)


def _exact_for_emotion(run: _Run, ei: int, attr, refs, out: Path):
    """The exact effects of one emotion's shortlist and random sample (one sweep): labelled
    rows, the rank-correlation summary of each set, and the shortlist's bar plot's path."""
    c, e, lr = run.ncfg, run.readout.emotions[ei], run.layers
    mc, params = run.model.config, run.model.params
    sel = run.prompts.emotion_index == ei
    kind_i = heads.KINDS.index(run.kinds[0])
    sets = {
        "shortlist": core.shortlist(
            attr[kind_i, lr.start : lr.stop][..., sel].mean(-1), c.n_exact, lr.start
        ),
        "random_sample": core.random_sample(lr, mc.d_mlp, c.n_exact, c.seed + 1 + ei),
    }
    swept = tuple(dict.fromkeys(sets["shortlist"] + sets["random_sample"]))
    on = heads.Prompts(run.prompts.tokens[sel], run.prompts.mask[sel])
    target = heads.Target(run.readout, ei, c.measure)
    exact = core.exact_effects(mc, params, on, refs, swept, target, c.chunk)  # [n, kind, n_e]
    row_of = {nr: j for j, nr in enumerate(swept)}
    rows, summary = [], {"kind": run.kinds[0]}
    for name, neurons in sets.items():
        for layer, i in neurons:
            for ki, kind in enumerate(heads.KINDS):
                if kind not in run.kinds:
                    continue
                rows.append(
                    {
                        **{"model": run.label, "measure": c.measure, "ablation": kind},
                        **{"emotion": e, "set": name, "layer": layer, "neuron": i},
                        "exact": float(exact[row_of[(layer, i)], ki].mean()),
                        "attribution": float(attr[ki, layer, i][sel].mean()),
                        "n_prompts": int(sel.sum()),
                    }
                )
        ex = np.array([exact[row_of[nr], kind_i].mean() for nr in neurons])
        at = np.array([attr[kind_i, a, b][sel].mean() for a, b in neurons])
        summary[name] = {
            "exact_vs_attribution": _agreement(ex, at, c.seed),
            "n_neurons": len(neurons),
            "how": _SETS[name],
        }
    short = sets["shortlist"][:10]
    fig = plots.bar_with_ci(
        [f"L{a}N{b}" for a, b in short],
        {
            "exact": (np.array([exact[row_of[nr], kind_i].mean() for nr in short]), None, None),
            "attribution": (
                np.array([attr[kind_i, a, b][sel].mean() for a, b in short]),
                None,
                None,
            ),
        },
        ylabel=f"{c.measure}: m(clean) - m(neuron removed)",
        title=f"{run.label}: top neurons for {e}, {run.kinds[0]}-ablation, layers "
        f"{lr.start}-{lr.stop - 1}",
    )
    return rows, summary, artifacts.save_figure(out / f"neurons_{e}.png", fig)


def _exact_tables(run: _Run, attr, mu, out: Path) -> tuple[list[dict], dict, dict]:
    """Every emotion's exact shortlist and random sample: rows, rank-correlation summaries per
    emotion, and the files written (bar plots, neurons_exact.csv, neurons_summary.json)."""
    refs = jnp.stack([jnp.zeros_like(mu), mu])
    exact_rows, summary, files = [], {}, {}
    for ei, e in enumerate(run.readout.emotions):
        rows, summary[e], files[f"bar_{e}"] = _exact_for_emotion(run, ei, attr, refs, out)
        exact_rows += rows
    files["exact_csv"] = artifacts.write_csv(out / "neurons_exact.csv", exact_rows)
    files["summary"] = artifacts.write_json(
        out / "neurons_summary.json",
        {
            "what": "rank correlation of exact removal vs attribution, per emotion, over the "
            "shortlist (selected by attribution: biased) and over a random sample (unbiased)",
            "model": run.label,
            "layers": [run.layers.start, run.layers.stop],
            "n_exact": run.ncfg.n_exact,
            "seed": run.ncfg.seed,
            "values": summary,
        },
    )
    return exact_rows, summary, files


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
    """Score every neuron of `ncfg.layers` for every emotion (direct, attribution) with the
    random-direction nulls, the best `n_exact` and a random `n_exact` exactly; write
    neurons_scores.npz (all neurons), neurons_top.csv (labelled top lists with CIs and the
    max-over-neurons null), neurons_exact.csv (both sets beside attribution, with their rank
    correlations in neurons_summary.json) and one bar plot per emotion (module doc)."""
    mc, params = model.config, model.params
    lr = core.check_layers(mc, ncfg.layers)
    if word_ids is None:
        words = logit_words or lexicon.EMOTION_LOGIT_WORDS
        word_ids = word_token_ids(model.tokenizer, {e: tuple(words[e]) for e in emotional_prompts})
    readout = heads.make_readout(mc, vectors, word_ids, ncfg.n_random, ncfg.seed)
    p = prepare_prompts(model, emotional_prompts, ncfg.prepend_bos, ncfg.max_len)
    n_toks = model.tokenize(
        list(neutral_prompts), prepend_bos=ncfg.prepend_bos, max_len=ncfg.max_len
    )
    mu = core.neuron_mean(mc, params, jnp.asarray(n_toks.ids), jnp.asarray(n_toks.mask))
    prompts = heads.Prompts(jnp.asarray(p.tokens), jnp.asarray(p.mask), p.emotion_index)
    scores = core.neuron_scores(mc, params, prompts, mu, readout)
    kinds = [k for k in heads.KINDS if k in ncfg.kinds]
    label = ncfg.model_label or mc.name or mc.family
    run = _Run(model, ncfg, readout, prompts, lr, kinds, label)
    arrays, top_rows = _top_tables(run, scores, _nulls(run, mu))
    out = Path(out_dir)
    files = {
        "scores_npz": artifacts.write_npz(
            out / "neurons_scores.npz", **{k.replace("/", "__"): a for k, a in arrays.items()}
        ),
        "top_csv": artifacts.write_csv(out / "neurons_top.csv", top_rows),
    }
    # Exact shortlist per emotion: the best n_exact by attribution (first kind, chosen measure).
    attr = scores[("attribution", "projection" if ncfg.measure == "projection" else "logit_diff")]
    exact_rows, summary, exact_files = _exact_tables(run, attr, mu, out)
    files.update(exact_files)
    return {
        "scores": arrays,
        "top": top_rows,
        "exact": exact_rows,
        "summary": summary,
        "files": files,
    }
