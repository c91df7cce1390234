"""Multi-head circuits (the study's future work): which SET of heads carries an emotion, and do
heads act together (joint effect of k heads vs the sum of their single effects)?

Two modes, both on one emotion e and one measure m_e (see `jaxcirc.core.heads`):

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
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcirc.core import heads
from jaxcirc.core.head_edits import set_edits
from jaxcirc.core.stats import bootstrap_ci, paired_bootstrap_diff, summarise_null
from models import Edits, ModelConfig, Record
from models import forward as model_forward

MODES = ("ablation", "patching")
Head = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class SetEffect:
    """What the effect of a head set is measured on: tokens, mask `[batch, pos]` (the prompts),
    z_ref `[layer, head, d_head]` (what a set's heads' z becomes) and target (m_e). A pytree."""

    tokens: Any
    mask: Any
    z_ref: Any
    target: heads.Target


jax.tree_util.register_dataclass(
    SetEffect, data_fields=["tokens", "mask", "z_ref", "target"], meta_fields=[]
)


def sign_of(mode: str) -> float:
    """+1 for "ablation" (m(clean) - m(edited)), -1 for "patching" (m(edited) - m(clean))."""
    return 1.0 if mode == "ablation" else -1.0


@functools.partial(jax.jit, static_argnames=("cfg",))
def set_effects(cfg: ModelConfig, params, effect: SetEffect, scales):
    """m_e with each of several head sets edited: scales `[n_sets, layer, head]` (0 = edited).
    Sets are folded into the batch (one forward for all).
    Returns (edited `[n_sets, batch]`, clean `[batch]`)."""
    tokens, mask = effect.tokens, effect.mask
    R, B = scales.shape[0], tokens.shape[0]
    t = jnp.tile(tokens, (R, 1))
    mk = jnp.tile(mask, (R, 1))
    s = jnp.repeat(jnp.moveaxis(scales, 0, 1), B, axis=1)  # [layer, R * B, head]
    rec = Record(resid_post=True, at="last", logits="none")
    _, tr = model_forward(cfg, params, t, mk, Edits(head_scale=s, head_mean=effect.z_ref), rec)
    _, tc = model_forward(cfg, params, tokens, mask, None, rec)
    edited = effect.target.read(cfg, params, tr.resid_post).reshape(R, B)
    return edited, effect.target.read(cfg, params, tc.resid_post)


@functools.partial(jax.jit, static_argnames=("cfg", "candidates", "rows"))
def _step(cfg, params, effect: SetEffect, base, candidates, rows):
    """m_e of (base set + each candidate) `[candidate, batch]` and of the base set `[batch]`."""
    out, base_last = heads.head_sweep(
        cfg, params, effect.tokens, effect.mask, effect.z_ref[None], base, candidates, rows
    )
    return (
        effect.target.read(cfg, params, out[:, 0]),
        effect.target.read(cfg, params, base_last),
    )


# ---------------------------------------------------------------------------------------------
# Search


@dataclasses.dataclass(frozen=True)
class BeamSettings:
    """Beam search: sets up to `k_max` heads, `width` sets kept per step (1 = greedy), rows of
    each step's sweep run as `rows` says."""

    k_max: int
    width: int = 1
    rows: heads.RowStrategy = heads.RowStrategy()


@dataclasses.dataclass(frozen=True)
class CircuitSettings:
    """A circuit search: the beam, `n_random_sets` random sets per k (the control), and the
    bootstrap (resamples, seed of everything random, CI level)."""

    beam: BeamSettings
    n_random_sets: int
    n_boot: int
    seed: int
    level: float = 0.95


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


def _swept(candidates, swept) -> tuple[Head, ...]:
    """The heads each step sweeps, sorted: the same heads are the same static argument (one
    compile), whatever order the candidates come in (ranked by score)."""
    swept = tuple(
        sorted(set(candidates if swept is None else ((int(a), int(b)) for a, b in swept)))
    )
    if not set(candidates) <= set(swept):
        raise ValueError(f"swept heads {swept} do not include every candidate {candidates}")
    return swept


def beam_search(
    cfg: ModelConfig,
    params,
    effect: SetEffect,
    candidates: Sequence[Head],
    beam: BeamSettings,
    sign: float = 1.0,
    swept: Sequence[Head] | None = None,
) -> tuple[list[tuple[tuple[Head, ...], np.ndarray]], dict[Head, np.ndarray]]:
    """Grow head sets from `candidates` by beam search on mean effect.

    effect(S) per prompt = sign * (m_e(clean) - m_e(S edited)) (sign -1 for patching, where the
    effect is m(edited) - m(clean)). Returns (for k = 1..k_max the best set and its per-prompt
    effect `[n]`, and every candidate's single effect per prompt). swept: heads each step
    sweeps (a superset of `candidates`; default the candidates). The sweep is compiled per
    swept tuple, so searches that share one compile once.
    """
    candidates = tuple((int(a), int(b)) for a, b in candidates)
    if not candidates:
        raise ValueError("candidates is empty; pass at least one (layer, head)")
    swept = _swept(candidates, swept)
    col = {h: swept.index(h) for h in candidates}  # the sweep's row of each candidate
    if not 1 <= beam.k_max <= len(candidates):
        raise ValueError(f"k_max={beam.k_max} must be in [1, {len(candidates)}] (the candidates)")
    if beam.width < 1:
        raise ValueError(f"beam={beam.width}; use 1 (greedy) or more")
    effect = SetEffect(
        jnp.asarray(effect.tokens),
        jnp.asarray(effect.mask),
        jnp.asarray(effect.z_ref),
        effect.target,
    )
    vals, clean = _step(cfg, params, effect, set_edits(cfg, (), effect.z_ref), swept, beam.rows)
    singles = {h: sign * np.asarray(clean - vals[col[h]]) for h in candidates}
    beams: list[tuple[tuple[Head, ...], np.ndarray]] = [((), np.zeros(effect.tokens.shape[0]))]
    best = []
    for _k in range(beam.k_max):
        scored: dict[frozenset, tuple[tuple[Head, ...], np.ndarray]] = {}
        for head_set, _ in beams:
            if head_set:
                base = set_edits(cfg, head_set, effect.z_ref)
                vals, _ = _step(cfg, params, effect, base, swept, beam.rows)
            for h in candidates:
                key = frozenset(head_set + (h,))
                if h not in head_set and key not in scored:
                    scored[key] = (head_set + (h,), sign * np.asarray(clean - vals[col[h]]))
        beams = sorted(scored.values(), key=lambda s: -float(s[1].mean()))[: beam.width]
        best.append(beams[0])
    return best, singles


def random_set_band(
    cfg: ModelConfig,
    params,
    effect: SetEffect,
    k: int,
    n_sets: int,
    seed: int,
    sign: float = 1.0,
    level: float = 0.95,
) -> dict:
    """Mean effect of `n_sets` random sets of k heads (drawn from all heads): the control."""
    rng = np.random.default_rng(seed + 1000 * k)
    scales = np.ones((n_sets, cfg.n_layers, cfg.n_heads), np.float32)
    for r in range(n_sets):
        pick = rng.choice(cfg.n_layers * cfg.n_heads, k, replace=False)
        scales[r].reshape(-1)[pick] = 0.0
    effect = SetEffect(
        jnp.asarray(effect.tokens),
        jnp.asarray(effect.mask),
        jnp.asarray(effect.z_ref),
        effect.target,
    )
    edited, clean = set_effects(cfg, params, effect, jnp.asarray(scales))
    effects = sign * np.asarray(clean[None] - edited).mean(axis=1)  # [n_sets]
    band = summarise_null(effects, seed, level, f"random sets of {k} heads")
    return {"mean": float(band.mean), "lo": float(band.lo), "hi": float(band.hi), "n": n_sets}


def _est(values, n_boot, seed, level):
    e = bootstrap_ci(values, n_boot=n_boot, seed=seed, level=level)
    return {"value": float(e.value), "lo": float(e.lo), "hi": float(e.hi), "n": e.n}


def _circuit_step(cfg, params, effect, k, found, singles, settings: CircuitSettings, sign):
    """The step of size k: the found set's joint effect `[n]` beside the sum of its heads'
    single effects, their interaction, and the random-set band."""
    head_set, joint = found
    s = settings
    sums = np.sum([singles[h] for h in head_set], axis=0)
    diff = paired_bootstrap_diff(joint, sums, n_boot=s.n_boot, seed=s.seed, level=s.level)
    return CircuitStep(
        k=k,
        heads=head_set,
        joint_per_prompt=joint,
        sum_per_prompt=sums,
        joint=_est(joint, s.n_boot, s.seed, s.level),
        sum_singles=_est(sums, s.n_boot, s.seed, s.level),
        interaction={
            "value": float(diff.value),
            "lo": float(diff.lo),
            "hi": float(diff.hi),
            "n": diff.n,
        },
        random=random_set_band(cfg, params, effect, k, s.n_random_sets, s.seed, sign, s.level),
    )


def search_circuit(
    cfg: ModelConfig,
    params,
    effect: SetEffect,
    candidates: Sequence[Head],
    settings: CircuitSettings,
    mode: str,
    kind: str,
    swept: Sequence[Head] | None = None,
) -> CircuitResult:
    """Beam search plus, per k, joint vs sum of singles with CIs and the random-set control.
    mode: "ablation" or "patching" (the effect's sign); kind: the ablation kind, recorded;
    swept: heads each search step sweeps (see `beam_search`)."""
    sign = sign_of(mode)
    best, singles = beam_search(cfg, params, effect, candidates, settings.beam, sign, swept)
    steps = [
        _circuit_step(cfg, params, effect, k, found, singles, settings, sign)
        for k, found in enumerate(best, start=1)
    ]
    return CircuitResult(
        mode=mode,
        emotion=effect.target.readout.emotions[effect.target.emotion],
        measure=effect.target.measure,
        kind="emotion mean" if mode == "patching" else kind,
        candidates=tuple(candidates),
        singles={h: float(v.mean()) for h, v in singles.items()},
        steps=steps,
    )


def mean_z(cfg: ModelConfig, params, tokens, mask):
    """Mean z over real tokens per layer and head `[layer, head, d_head]`."""
    return heads.neutral_mean_z(cfg, params, jnp.asarray(tokens), jnp.asarray(mask))


def candidate_heads(
    screen_rows: list[dict] | None, cfg: ModelConfig, emotion: str, measure: str, kind: str, n: int
) -> tuple[Head, ...]:
    """The n best heads of the exact screen (`heads.emotion_scores` rows) for (emotion, measure,
    kind); all heads if no screen or n == 0."""
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
