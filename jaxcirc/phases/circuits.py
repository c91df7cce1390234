"""Multi-head circuits (the study's future work): which SET of heads carries an emotion, and do
heads act together (joint effect of k heads vs the sum of their single effects)?

Two modes, both on one emotion e and one measure m_e (see `jaxcirc.phases.heads`):

- "ablation": on e's prompts, heads of the set S get z -> z_ref (zero, or the neutral mean z);
  effect(S) = m_e(clean) - m_e(S removed), per prompt (support: positive = S carries e).
- "patching": on the neutral prompts, heads of S get z -> their mean z over e's prompts (the
  head's emotional output patched in); effect(S) = m_e(S patched) - m_e(clean).

Beam search (width 1 = greedy) grows S one head at a time from a candidate list, keeping the sets
of largest mean effect. Each step scores every candidate added to every kept set in ONE branch
sweep (`heads.head_sweep` with the set as base edits: layers before a candidate's run once, the
set stays edited in every rerun), so a step costs about half a forward per candidate.

For each k the result holds the joint effect, the sum of the single effects of the same heads,
their difference (interaction: > 0 the heads reinforce, < 0 they overlap/saturate), each with a
bootstrap CI over prompts, and the control: the joint effect of random head sets of size k.
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

from jaxcirc.core.measures import WordIds, word_token_ids
from jaxcirc.core.stats import bootstrap_ci, paired_bootstrap_diff, summarise_null
from jaxcirc.data import lexicon
from jaxcirc.infra import artifacts
from jaxcirc.phases import heads
from jaxcirc.report import plots
from models.config import ModelConfig
from models.contract import Edits, Record
from models.transformer import forward as model_forward

MODES = ("ablation", "patching")
Head = tuple[int, int]


# ---------------------------------------------------------------------------------------------
# Edits for a set of heads


def set_edits(cfg: ModelConfig, head_set: Sequence[Head], z_ref) -> Edits:
    """Edits putting z -> z_ref (`[layer, head, d_head]`) on every head of the set."""
    scale = np.ones((cfg.n_layers, cfg.n_heads), np.float32)
    for layer, h in head_set:
        scale[layer, h] = 0.0
    return Edits(head_scale=jnp.asarray(scale), head_mean=jnp.asarray(z_ref))


def _measure(cfg, params, readout, x, emotion: int, measure: str):
    proj, ld, _ = heads.readout_columns(cfg, params, readout, x)
    return (proj if measure == "projection" else ld)[..., emotion]


@functools.partial(jax.jit, static_argnames=("cfg", "measure"))
def set_effects(cfg: ModelConfig, params, tokens, mask, scales, z_ref, readout, emotion, measure):
    """m_e with each of several head sets edited: scales `[n_sets, layer, head]` (0 = edited),
    z_ref `[layer, head, d_head]`. Sets are folded into the batch (one forward for all).
    Returns (edited `[n_sets, batch]`, clean `[batch]`)."""
    R, B = scales.shape[0], tokens.shape[0]
    t = jnp.tile(tokens, (R, 1))
    mk = jnp.tile(mask, (R, 1))
    s = jnp.repeat(jnp.moveaxis(scales, 0, 1), B, axis=1)  # [layer, R * B, head]
    rec = Record(resid_post=True, at="last", logits="none")
    _, tr = model_forward(cfg, params, t, mk, Edits(head_scale=s, head_mean=z_ref), rec)
    _, tc = model_forward(cfg, params, tokens, mask, None, rec)
    edited = _measure(cfg, params, readout, tr.resid_post, emotion, measure).reshape(R, B)
    return edited, _measure(cfg, params, readout, tc.resid_post, emotion, measure)


@functools.partial(jax.jit, static_argnames=("cfg", "candidates", "measure", "strategy", "chunk"))
def _step(
    cfg, params, tokens, mask, base, z_ref, readout, candidates, emotion, measure, strategy, chunk
):
    """m_e of (base set + each candidate) `[candidate, batch]` and of the base set `[batch]`."""
    out, base_last = heads.head_sweep(
        cfg, params, tokens, mask, z_ref[None], base, candidates, strategy, chunk
    )
    return (
        _measure(cfg, params, readout, out[:, 0], emotion, measure),
        _measure(cfg, params, readout, base_last, emotion, measure),
    )


# ---------------------------------------------------------------------------------------------
# Search


@dataclasses.dataclass
class CircuitStep:
    """The best set of size k and its effects (per prompt arrays `[n]`, and summaries).

    joint: effect of editing the whole set; sum_singles: sum of each head's single effect;
    interaction: joint - sum_singles; each an `Estimate`-like dict (value, lo, hi, n);
    random: the control band (mean, lo, hi) of random sets of size k.
    """

    k: int
    heads: tuple[Head, ...]
    joint_per_prompt: np.ndarray
    sum_per_prompt: np.ndarray
    joint: dict
    sum_singles: dict
    interaction: dict
    random: dict


@dataclasses.dataclass
class CircuitResult:
    mode: str
    emotion: str
    measure: str
    kind: str
    candidates: tuple[Head, ...]
    singles: dict[Head, float]
    steps: list[CircuitStep]


def beam_search(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    readout: heads.Readout,
    emotion: int,
    measure: str,
    z_ref,
    candidates: Sequence[Head],
    k_max: int,
    sign: float = 1.0,
    beam: int = 1,
    strategy: str = "fold",
    chunk: int = 4,
    swept: Sequence[Head] | None = None,
) -> tuple[list[tuple[tuple[Head, ...], np.ndarray]], dict[Head, np.ndarray]]:
    """Grow head sets from `candidates` by beam search on mean effect.

    effect(S) per prompt = sign * (m_e(clean) - m_e(S edited)) (sign -1 for patching, where the
    effect is m(edited) - m(clean)). Returns (for k = 1..k_max the best set and its per-prompt
    effect `[n]`, and every candidate's single effect per prompt). swept: heads each step
    sweeps (a superset of `candidates`; default the candidates). The sweep is compiled per
    swept tuple, so searches that share one (`run_circuits`) compile once.
    """
    candidates = tuple((int(a), int(b)) for a, b in candidates)
    if not candidates:
        raise ValueError("candidates is empty; pass at least one (layer, head)")
    # Sorted: the same heads are the same static argument (one compile), whatever order the
    # candidates come in (ranked by score). Rows of the sweep are looked up by head (`col`).
    swept = tuple(
        sorted(set(candidates if swept is None else ((int(a), int(b)) for a, b in swept)))
    )
    if not set(candidates) <= set(swept):
        raise ValueError(f"swept heads {swept} do not include every candidate {candidates}")
    col = {h: swept.index(h) for h in candidates}
    if not 1 <= k_max <= len(candidates):
        raise ValueError(f"k_max={k_max} must be in [1, {len(candidates)}] (the candidates)")
    if beam < 1:
        raise ValueError(f"beam={beam}; use 1 (greedy) or more")
    tokens, mask = jnp.asarray(tokens), jnp.asarray(mask)
    z_ref = jnp.asarray(z_ref)
    args = (readout, swept, emotion, measure, strategy, chunk)
    empty = set_edits(cfg, (), z_ref)
    vals, clean = _step(cfg, params, tokens, mask, empty, z_ref, *args)
    singles = {h: sign * np.asarray(clean - vals[col[h]]) for h in candidates}
    beams: list[tuple[tuple[Head, ...], np.ndarray]] = [((), np.zeros(tokens.shape[0]))]
    best = []
    for _k in range(k_max):
        scored: dict[frozenset, tuple[tuple[Head, ...], np.ndarray]] = {}
        for head_set, _ in beams:
            if head_set:
                vals, _ = _step(
                    cfg, params, tokens, mask, set_edits(cfg, head_set, z_ref), z_ref, *args
                )
            for h in candidates:
                if h in head_set:
                    continue
                key = frozenset(head_set + (h,))
                if key not in scored:
                    scored[key] = (head_set + (h,), sign * np.asarray(clean - vals[col[h]]))
        ranked = sorted(scored.values(), key=lambda s: -float(s[1].mean()))
        beams = ranked[:beam]
        best.append(beams[0])
    return best, singles


def random_set_band(
    cfg,
    params,
    tokens,
    mask,
    readout,
    emotion,
    measure,
    z_ref,
    k,
    n_sets,
    seed,
    sign=1.0,
    level=0.95,
):
    """Mean effect of `n_sets` random sets of k heads (drawn from all heads): the control."""
    rng = np.random.default_rng(seed + 1000 * k)
    scales = np.ones((n_sets, cfg.n_layers, cfg.n_heads), np.float32)
    for r in range(n_sets):
        pick = rng.choice(cfg.n_layers * cfg.n_heads, k, replace=False)
        scales[r].reshape(-1)[pick] = 0.0
    edited, clean = set_effects(
        cfg,
        params,
        jnp.asarray(tokens),
        jnp.asarray(mask),
        jnp.asarray(scales),
        jnp.asarray(z_ref),
        readout,
        emotion,
        measure,
    )
    effects = sign * np.asarray(clean[None] - edited).mean(axis=1)  # [n_sets]
    band = summarise_null(effects, seed, level, f"random sets of {k} heads")
    return {"mean": float(band.mean), "lo": float(band.lo), "hi": float(band.hi), "n": n_sets}


def _est(values, n_boot, seed, level):
    e = bootstrap_ci(values, n_boot=n_boot, seed=seed, level=level)
    return {"value": float(e.value), "lo": float(e.lo), "hi": float(e.hi), "n": e.n}


def search_circuit(
    cfg,
    params,
    tokens,
    mask,
    readout,
    emotion,
    measure,
    z_ref,
    candidates,
    ccfg,
    mode: str,
    kind: str,
    swept=None,
) -> CircuitResult:
    """Beam search plus, per k, joint vs sum of singles with CIs and the random-set control.
    swept: heads each search step sweeps (see `beam_search`)."""
    sign = 1.0 if mode == "ablation" else -1.0
    best, singles = beam_search(
        cfg,
        params,
        tokens,
        mask,
        readout,
        emotion,
        measure,
        z_ref,
        candidates,
        ccfg.k_max,
        sign,
        ccfg.beam,
        ccfg.strategy,
        ccfg.chunk,
        swept,
    )
    steps = []
    for k, (head_set, joint) in enumerate(best, start=1):
        sums = np.sum([singles[h] for h in head_set], axis=0)
        diff = paired_bootstrap_diff(
            joint, sums, n_boot=ccfg.n_boot, seed=ccfg.seed, level=ccfg.level
        )
        steps.append(
            CircuitStep(
                k=k,
                heads=head_set,
                joint_per_prompt=joint,
                sum_per_prompt=sums,
                joint=_est(joint, ccfg.n_boot, ccfg.seed, ccfg.level),
                sum_singles=_est(sums, ccfg.n_boot, ccfg.seed, ccfg.level),
                interaction={
                    "value": float(diff.value),
                    "lo": float(diff.lo),
                    "hi": float(diff.hi),
                    "n": diff.n,
                },
                random=random_set_band(
                    cfg,
                    params,
                    tokens,
                    mask,
                    readout,
                    emotion,
                    measure,
                    z_ref,
                    k,
                    ccfg.n_random_sets,
                    ccfg.seed,
                    sign,
                    ccfg.level,
                ),
            )
        )
    return CircuitResult(
        mode=mode,
        emotion=readout.emotions[emotion],
        measure=measure,
        kind="emotion mean" if mode == "patching" else kind,
        candidates=tuple(candidates),
        singles={h: float(v.mean()) for h, v in singles.items()},
        steps=steps,
    )


# ---------------------------------------------------------------------------------------------
# The phase


def mean_z(cfg: ModelConfig, params, tokens, mask):
    """Mean z over real tokens per layer and head `[layer, head, d_head]`."""
    return heads.neutral_mean_z(cfg, params, jnp.asarray(tokens), jnp.asarray(mask))


def candidate_heads(
    screen_rows: list[dict] | None, cfg: ModelConfig, emotion: str, measure: str, kind: str, n: int
) -> tuple[Head, ...]:
    """The n best heads of the exact screen for (emotion, measure, kind); all heads if no screen
    or n == 0."""
    if not screen_rows or n <= 0:
        return tuple((a, b) for a in range(cfg.n_layers) for b in range(cfg.n_heads))
    rows = [
        r
        for r in screen_rows
        if (r["method"], r["measure"], r["ablation"], r["emotion"])
        == ("exact", measure, kind, emotion)
    ]
    if not rows:
        raise ValueError(f"the screen has no exact/{measure}/{kind}/{emotion} rows; run it first")
    rows.sort(key=lambda r: -r["score"])
    return tuple((r["layer"], r["head"]) for r in rows[:n])


def run_circuits(
    model,
    emotional_prompts: Mapping[str, Sequence[str]],
    neutral_prompts: Sequence[str],
    vectors: Mapping[str, Any],
    ccfg: ml_collections.ConfigDict,
    out_dir,
    screen_rows: list[dict] | None = None,
    word_ids: WordIds | None = None,
    tokenize_cfg: ml_collections.ConfigDict | None = None,
) -> list[CircuitResult]:
    """Search circuits for every emotion and mode; write circuits.csv, circuits.json and a plot
    per (mode, emotion): joint effect vs k beside the sum of singles and the random-set band.

    screen_rows: `heads.run_heads(...).rows` to take candidates from (else all heads);
    tokenize_cfg: prompt settings (prepend_bos, max_len, logit_words: the `heads` section); when
      None, no BOS, prompts of at most 64 tokens and the lexicon's logit words.
    """
    tcfg = tokenize_cfg or ml_collections.ConfigDict(
        {"prepend_bos": False, "max_len": 64, "logit_words": lexicon.EMOTION_LOGIT_WORDS}
    )
    for mode in ccfg.modes:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} unknown; use a subset of {MODES}")
    if ccfg.measure not in heads.MEASURES:
        raise ValueError(f"measure {ccfg.measure!r} unknown; use one of {heads.MEASURES}")
    if ccfg.kind not in heads.KINDS:
        raise ValueError(f"kind {ccfg.kind!r} unknown; use one of {heads.KINDS}")
    mc, params = model.config, model.params
    if word_ids is None:
        words = {e: tuple(tcfg.logit_words[e]) for e in emotional_prompts}
        word_ids = word_token_ids(model.tokenizer, words)
    readout = heads.make_readout(mc, vectors, word_ids, 0, ccfg.seed)
    n_toks = model.tokenize(
        list(neutral_prompts), prepend_bos=tcfg.prepend_bos, max_len=tcfg.max_len
    )
    z_neutral = mean_z(mc, params, n_toks.ids, n_toks.mask)
    cands_by = {
        emo: candidate_heads(screen_rows, mc, emo, ccfg.measure, ccfg.kind, ccfg.n_candidates)
        for emo in emotional_prompts
    }
    # One sweep over every emotion's candidates compiles once for all searches; worth it while
    # the union is not much larger than one emotion's list (small models, overlapping lists).
    union = sorted(set().union(*cands_by.values()))
    swept = union if len(union) <= 1.5 * max(len(c) for c in cands_by.values()) else None
    results = []
    for j, (emo, prompts) in enumerate(emotional_prompts.items()):
        e_toks = model.tokenize(list(prompts), prepend_bos=tcfg.prepend_bos, max_len=tcfg.max_len)
        cands = cands_by[emo]
        for mode in ccfg.modes:
            if mode == "ablation":
                toks = e_toks
                z_ref = z_neutral if ccfg.kind == "mean" else jnp.zeros_like(z_neutral)
            else:
                toks = n_toks
                z_ref = mean_z(mc, params, e_toks.ids, e_toks.mask)
            results.append(
                search_circuit(
                    mc,
                    params,
                    toks.ids,
                    toks.mask,
                    readout,
                    j,
                    ccfg.measure,
                    z_ref,
                    cands,
                    ccfg,
                    mode,
                    ccfg.kind,
                    swept,
                )
            )
    write_circuits(out_dir, results, ccfg, model)
    return results


def write_circuits(out_dir, results: list[CircuitResult], ccfg, model) -> dict[str, Path]:
    out = Path(out_dir)
    label = ccfg.model_label or model.config.name or model.config.family
    rows = []
    for r in results:
        for s in r.steps:
            rows.append(
                {
                    "model": label,
                    "mode": r.mode,
                    "emotion": r.emotion,
                    "measure": r.measure,
                    "ablation": r.kind,
                    "k": s.k,
                    "heads": " ".join(f"L{a}H{b}" for a, b in s.heads),
                    "joint": s.joint["value"],
                    "joint_lo": s.joint["lo"],
                    "joint_hi": s.joint["hi"],
                    "sum_singles": s.sum_singles["value"],
                    "sum_lo": s.sum_singles["lo"],
                    "sum_hi": s.sum_singles["hi"],
                    "interaction": s.interaction["value"],
                    "interaction_lo": s.interaction["lo"],
                    "interaction_hi": s.interaction["hi"],
                    "random_sets_mean": s.random["mean"],
                    "random_sets_lo": s.random["lo"],
                    "random_sets_hi": s.random["hi"],
                    "n_prompts": s.joint["n"],
                    "vector": ccfg.vector_label if r.measure == "projection" else "logit words",
                    "seed": ccfg.seed,
                }
            )
    files = {"circuits_csv": artifacts.write_csv(out / "circuits.csv", rows)}
    files["circuits_json"] = artifacts.write_json(
        out / "circuits.json",
        {
            "what": "greedy/beam head sets; effect = m(clean) - m(set ablated) on the emotion's "
            "prompts (ablation) or m(set patched with the emotion's mean z) - m(clean) on "
            "neutral prompts (patching); interaction = joint - sum of single effects",
            "model": label,
            "config": ccfg.to_dict(),
            "results": [
                {
                    "mode": r.mode,
                    "emotion": r.emotion,
                    "measure": r.measure,
                    "kind": r.kind,
                    "candidates": [list(h) for h in r.candidates],
                    "singles": {f"L{a}H{b}": v for (a, b), v in r.singles.items()},
                    "steps": [
                        {
                            "k": s.k,
                            "heads": [list(h) for h in s.heads],
                            "joint": s.joint,
                            "sum_singles": s.sum_singles,
                            "interaction": s.interaction,
                            "random_sets": s.random,
                        }
                        for s in r.steps
                    ],
                }
                for r in results
            ],
        },
    )
    for r in results:
        ks = np.array([s.k for s in r.steps])

        def band(f, steps=r.steps):
            return tuple(np.array([getattr(s, f)[x] for s in steps]) for x in ("value", "lo", "hi"))

        rand = tuple(np.array([s.random[x] for s in r.steps]) for x in ("mean", "lo", "hi"))
        fig = plots.line_with_band(
            ks,
            {
                "joint (set edited)": band("joint"),
                "sum of single effects": band("sum_singles"),
                "random head sets": rand,
            },
            xlabel="heads in the set (k)",
            ylabel=f"{r.measure} effect",
            title=f"{label}: {r.mode} circuit for {r.emotion} ({r.measure}, {r.kind})",
            dashed=("random head sets",),
        )
        name = f"circuit_{r.mode}_{r.emotion}"
        files[name] = artifacts.save_figure(out / f"{name}.png", fig)
    return files
