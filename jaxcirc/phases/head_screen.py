"""Study phase 7: screen every head for every emotion by three methods; write the tables.

The math (methods, measures, removal kinds, the branch sweep) is `jaxcirc.core.heads`; this
runner tokenises the prompts, runs the screen with the `heads` config section, labels the rows
and writes scores_<method>.csv, rank_correlation.csv, heatmap_<method>_<measure>.png,
top_k.json, clean_measures.json and words.json.

Fields added for multiple comparisons (projection measure; None for logit_diff), in every
scores_<method>.csv row and in top_k.json's lists: p_max_null (the head's score against the
max over all heads of the map on each of `n_random` random unit directions: family-wise p over
the heads), clears_max_null (p_max_null <= 1 - level), max_null_hi (the level quantile of that
max: the max-stat threshold), and p_min_null / clears_min_null / min_null_lo (the same for
suppressive heads, with the min), n_null. top_k.json also holds per list "null" (threshold and
n_null), n_clear_max_null / n_clear_min_null (heads clearing it) and n_heads; its "ci" says the
CIs are per head, not adjusted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core import heads as core
from jaxcirc.core.measures import WordIds, word_token_ids
from jaxcirc.infra import artifacts
from jaxcirc.report import plots


@dataclasses.dataclass
class HeadResults:
    """What `run_heads` computed and wrote.

    screen: per-prompt scores (`Screen`); rows: the labelled score table; correlations: rank
    correlations between methods; top: top-k lists; word_ids: the logit words used (and dropped);
    files: name -> path of every file written.
    """

    screen: core.Screen
    rows: list[dict]
    correlations: list[dict]
    top: dict
    word_ids: WordIds
    files: dict[str, Path]


def _tokenize(model, texts: Sequence[str], prepend_bos: bool, max_len: int):
    toks = model.tokenize(list(texts), prepend_bos=prepend_bos, max_len=max_len)
    return toks.ids, toks.mask


def prepare_prompts(
    model, emotional_prompts: Mapping[str, Sequence[str]], prepend_bos: bool, max_len: int
) -> core.Prompts:
    """Tokenise the emotional prompts (emotion order = dict order), each tagged with its
    emotion's index."""
    if not emotional_prompts:
        raise ValueError("emotional_prompts is empty; pass {emotion: [prompt, ...]}")
    texts, emo = [], []
    for i, (e, ps) in enumerate(emotional_prompts.items()):
        if len(ps) < 2:
            raise ValueError(f"emotional_prompts[{e!r}] has {len(ps)} prompts; need at least 2")
        texts += list(ps)
        emo += [i] * len(ps)
    ids, mask = _tokenize(model, texts, prepend_bos, max_len)
    return core.Prompts(ids, mask, np.asarray(emo, np.int32))


def screen_settings(cfg: ml_collections.ConfigDict) -> core.ScreenSettings:
    """The `heads` section's screen settings (methods, kinds, batch size, row strategy)."""
    rows = core.RowStrategy(cfg.strategy, cfg.chunk)
    return core.ScreenSettings(
        tuple(cfg.methods), tuple(cfg.kinds), cfg.batch_size, rows, cfg.grad_chunk
    )


def _check_inputs(emotional_prompts, neutral_prompts, vectors, cfg) -> core.ScreenSettings:
    if tuple(vectors) != tuple(emotional_prompts):
        raise ValueError(
            f"vectors cover {tuple(vectors)} but emotional_prompts cover "
            f"{tuple(emotional_prompts)}; pass the same emotions in the same order"
        )
    if len(neutral_prompts) < 1:
        raise ValueError("neutral_prompts is empty; the mean-ablation reference needs some")
    if cfg.strategy not in core.STRATEGIES:
        raise ValueError(f"cfg.strategy={cfg.strategy!r}; use one of {core.STRATEGIES}")
    return screen_settings(cfg)


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
    {emotion: [n_layers + 1, d_model]} (same emotions, same order); cfg: the `heads` section
    (configs/sections.py); word_ids: the logit words as ids (default: cfg.logit_words through
    the model's tokenizer).

    Files in out_dir: scores_<method>.csv (one labelled row per method, measure, ablation,
    emotion, layer, head), rank_correlation.csv, heatmap_<method>_<measure>.png (a
    layer x head panel per emotion and ablation kind), top_k.json, clean_measures.json, words.json.
    """
    settings = _check_inputs(emotional_prompts, neutral_prompts, vectors, cfg)
    mc, params = model.config, model.params
    if word_ids is None:
        if model.tokenizer is None:
            raise ValueError("the model has no tokenizer; pass word_ids for the logit measure")
        words = {e: tuple(cfg.logit_words[e]) for e in emotional_prompts}
        word_ids = word_token_ids(model.tokenizer, words)
    readout = core.make_readout(mc, vectors, word_ids, cfg.n_random, cfg.seed)
    prompts = prepare_prompts(model, emotional_prompts, cfg.prepend_bos, cfg.max_len)
    neutral = core.Prompts(*_tokenize(model, neutral_prompts, cfg.prepend_bos, cfg.max_len))
    z_mean = core.neutral_mean_z(mc, params, jnp.asarray(neutral.tokens), jnp.asarray(neutral.mask))
    screen = core.screen_heads(mc, params, prompts, readout, z_mean, settings, neutral)
    rows = core.emotion_scores(screen, cfg.n_boot, cfg.seed, cfg.level)
    label = cfg.model_label or mc.name or mc.family
    for r in rows:
        r["model"] = label
        r["vector"] = cfg.vector_label if r["measure"] == "projection" else "logit words"
        r["definition"] = _DEFINITION[r["method"]]
        r["seed"] = cfg.seed
    correlations = core.method_correlations(rows, screen, cfg.n_perm, cfg.seed)
    top = core.top_heads(rows, cfg.top_k)
    files = write_head_outputs(out_dir, rows, correlations, top, screen, word_ids, cfg, label)
    return HeadResults(screen, rows, correlations, top, word_ids, files)


_DEFINITION = {
    "exact": "mean over the emotion's prompts of m(clean) - m(head removed at every position)",
    "direct": "mean over the emotion's prompts of the head's direct write minus its reference's, "
    "read by m (final LN scale frozen for logit_diff)",
    "attribution": "mean over the emotion's prompts of sum_pos grad_z m . (z - z_ref)",
}

_NULL_TEXT = (
    "projection only: each head's score against the best head's (max over all heads of the "
    "map) score on each of {n} random unit directions (seed {seed}), scored the same way on "
    "the same prompts; p_max_null = (1 + #directions whose best head >= the score) / (1 + {n}) "
    "is family-wise over the heads; clears_max_null: p_max_null <= {alpha:.2f}; p_min_null / "
    "clears_min_null: the same with the min (suppressive heads); logit_diff: no null (null)"
)

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
    "p_max_null",
    "clears_max_null",
    "max_null_hi",
    "p_min_null",
    "clears_min_null",
    "min_null_lo",
    "n_null",
    "vector",
    "seed",
    "definition",
)


def _write_heatmaps(out: Path, rows, screen: core.Screen, cfg, label) -> dict[str, Path]:
    """heatmap_<method>_<measure>.png: a layer x head panel per emotion and ablation kind."""
    files = {}
    n_cells = screen.n_layers * screen.n_heads
    for method in core.METHODS:
        for measure in core.MEASURES:
            mats = {
                f"{emo}, {kind}-ablation": core.score_matrix(
                    rows, method, measure, kind, emo, screen.n_layers, screen.n_heads
                )
                for kind in core.KINDS
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


def write_head_outputs(out_dir, rows, correlations, top, screen, word_ids, cfg, label) -> dict:
    """Write the CSV tables, PNG heatmaps and JSON lists; returns name -> path."""
    out = Path(out_dir)
    files = {}
    for method in core.METHODS:
        sub = [r for r in rows if r["method"] == method]
        if sub:
            path = out / f"scores_{method}.csv"
            files[f"scores_{method}"] = artifacts.write_csv(path, sub, _COLUMNS)
    files["rank_correlation"] = artifacts.write_csv(out / "rank_correlation.csv", correlations)
    files["top_k"] = artifacts.write_json(
        out / "top_k.json",
        {
            "k": cfg.top_k,
            "model": label,
            "score": "support: m(clean) - m(removed), mean over the emotion's prompts",
            "ci": f"{cfg.level:.0%} bootstrap CI over prompts, per head (not adjusted)",
            "null": _NULL_TEXT.format(n=cfg.n_random, seed=cfg.seed, alpha=1.0 - cfg.level),
            "n_null": cfg.n_random,
            "level": cfg.level,
            "lists": top,
        },
    )
    files["clean_measures"] = artifacts.write_json(
        out / "clean_measures.json",
        {
            "what": "clean measure at the last real token, on each emotion's prompts and on the "
            "neutral prompts (the reference)",
            "model": label,
            "values": core.clean_means(screen),
        },
    )
    files["words"] = artifacts.write_json(
        out / "words.json", {"ids": word_ids.ids, "dropped": word_ids.dropped}
    )
    files.update(_write_heatmaps(out, rows, screen, cfg, label))
    return files
