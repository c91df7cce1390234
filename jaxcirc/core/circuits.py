"""Multi-head circuits (the study's future work): which SET of heads carries an emotion, and do
heads act together (joint effect of k heads vs the sum of their single effects)?

Two modes, both on one emotion e and one measure m_e (see `jaxcirc.core.heads`):

- "ablation": on e's prompts, heads of the set S get z -> z_ref (zero, or the neutral mean z);
  effect(S) = m_e(clean) - m_e(S removed), per prompt (support: positive = S carries e).
- "patching": on the neutral prompts, heads of S get z -> their mean z over e's prompts (the
  head's emotional output patched in); effect(S) = m_e(S patched) - m_e(clean).

Beam search (width 1 = greedy) grows S one head at a time from a candidate list (the heads of
largest single effect), keeping the sets of largest mean effect. Each step scores every head
added to every kept set in ONE branch sweep (`heads.head_sweep` with the set as base edits:
layers before a head's run once, the set stays edited in every rerun).

Selection-aware (a set chosen as the best of many beats random sets with no structure at all,
and its joint-minus-sum interaction is biased up by the same choice):

- the candidates and the search see one half of the prompts (`search`), and every reported
  effect of the found set is measured on the other half (`held`): joint, sum of singles and
  their difference (interaction: > 0 the heads reinforce, < 0 they overlap/saturate), each with
  a bootstrap CI over the held-out prompts;
- the control is the SAME search (candidates, beam, held-out scoring) run with a null target:
  random unit directions in place of the emotion vector (projection), or the logit difference
  of random vocabulary words in place of the emotion's words (logit_diff). The held-out joint
  effects of the sets found for `n_null` null targets give, per k, the band and
  p = (1 + #{null >= observed}) / (1 + n_null).

Several targets are searched at once (`search_sets`): at each step the distinct kept sets over
all targets are swept once each, and every sweep is read by every target.
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
from jaxcirc.core.stats import (
    bootstrap_ci,
    paired_bootstrap_diff,
    permutation_pvalue,
    summarise_null,
)
from models import Edits, ModelConfig, Record
from models import forward as model_forward
from models import unembed as model_unembed

MODES = ("ablation", "patching")
Head = tuple[int, int]


# ---------------------------------------------------------------------------------------------
# What a set's effect is read by: one emotion measure, or many null targets at once


@dataclasses.dataclass(frozen=True)
class Directions:
    """Projections of the final residual (before ln_final) on T directions `[T, d_model]`."""

    directions: Any

    def read(self, cfg: ModelConfig, params, x):
        """x `[..., d_model]` -> `[..., T]`."""
        return x @ self.directions.T.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class LogitContrasts:
    """T logit contrasts: logits of `vocab_ids [n]` (through ln_final and the unembedding) times
    weights `[n, T]` (+1/|a| on word set a, -1/|b| on word set b: a logit difference)."""

    vocab_ids: Any
    weights: Any

    def read(self, cfg: ModelConfig, params, x):
        """x `[..., d_model]` -> `[..., T]`."""
        logits = model_unembed(cfg, params, x, self.vocab_ids)
        return logits @ self.weights.astype(logits.dtype)


jax.tree_util.register_dataclass(Directions, data_fields=["directions"], meta_fields=[])
jax.tree_util.register_dataclass(
    LogitContrasts, data_fields=["vocab_ids", "weights"], meta_fields=[]
)


def read_columns(target, cfg: ModelConfig, params, x):
    """Any target's reading as columns `[..., T]` (a `heads.Target` is one column)."""
    out = target.read(cfg, params, x)
    return out[..., None] if isinstance(target, heads.Target) else out


def null_targets(
    cfg: ModelConfig, readout: heads.Readout, emotion: int, measure: str, n: int, seed
):
    """`n` null targets for the search: random unit directions (projection), or logit
    differences of random vocabulary words, as many on each side as the emotion's own contrast
    has (logit_diff). Seeded; the same draws for every emotion and mode."""
    rng = np.random.default_rng(seed)
    if measure == "projection":
        d = rng.standard_normal((n, cfg.d_model))
        return Directions(jnp.asarray(d / np.linalg.norm(d, axis=1, keepdims=True), jnp.float32))
    w = np.asarray(readout.word_weights)[:, emotion]
    n_a, n_b = int((w > 0).sum()), int((w < 0).sum())
    ids = np.stack([rng.choice(cfg.d_vocab, n_a + n_b, replace=False) for _ in range(n)])
    weights = np.zeros((n * (n_a + n_b), n), np.float32)
    for t in range(n):
        rows = t * (n_a + n_b) + np.arange(n_a + n_b)
        weights[rows, t] = np.r_[np.full(n_a, 1.0 / n_a), np.full(n_b, -1.0 / n_b)]
    return LogitContrasts(jnp.asarray(ids.reshape(-1), jnp.int32), jnp.asarray(weights))


def with_null(target: heads.Target, null):
    """One reader of 1 + n columns: column 0 the emotion's measure `target`, columns 1..n the
    null targets (`null_targets`), so the real and the null searches share every sweep."""
    r, e = target.readout, int(target.emotion)
    if target.measure == "projection":
        return Directions(jnp.concatenate([r.directions[e][None], null.directions]))
    n0, n = r.vocab_ids.shape[0], null.weights.shape[1]
    ids = jnp.concatenate([r.vocab_ids, null.vocab_ids])
    w = jnp.zeros((ids.shape[0], 1 + n), jnp.float32)
    w = w.at[:n0, 0].set(r.word_weights[:, e]).at[n0:, 1:].set(null.weights)
    return LogitContrasts(ids, w)


@dataclasses.dataclass(frozen=True)
class SetEffect:
    """What the effect of a head set is measured on: tokens, mask `[batch, pos]` (the prompts),
    z_ref `[layer, head, d_head]` (what a set's heads' z becomes) and target (m_e: a
    `heads.Target`, or `Directions` / `LogitContrasts` for many targets). A pytree."""

    tokens: Any
    mask: Any
    z_ref: Any
    target: Any

    def arrays(self) -> SetEffect:
        """The same effect with jax arrays (so jitted calls see one argument type)."""
        return SetEffect(
            jnp.asarray(self.tokens), jnp.asarray(self.mask), jnp.asarray(self.z_ref), self.target
        )


jax.tree_util.register_dataclass(
    SetEffect, data_fields=["tokens", "mask", "z_ref", "target"], meta_fields=[]
)


def sign_of(mode: str) -> float:
    """+1 for "ablation" (m(clean) - m(edited)), -1 for "patching" (m(edited) - m(clean))."""
    return 1.0 if mode == "ablation" else -1.0


@functools.partial(jax.jit, static_argnames=("cfg",))
def set_columns(cfg: ModelConfig, params, effect: SetEffect, scales):
    """Every target's reading with each of several head sets edited: scales `[n_sets, layer,
    head]` (0 = edited), sets folded into the batch (one forward for all).
    Returns (edited `[n_sets, batch, T]`, clean `[batch, T]`)."""
    tokens, mask = effect.tokens, effect.mask
    R, B = scales.shape[0], tokens.shape[0]
    t = jnp.tile(tokens, (R, 1))
    mk = jnp.tile(mask, (R, 1))
    s = jnp.repeat(jnp.moveaxis(scales, 0, 1), B, axis=1)  # [layer, R * B, head]
    rec = Record(resid_post=True, at="last", logits="none")
    _, tr = model_forward(cfg, params, t, mk, Edits(head_scale=s, head_mean=effect.z_ref), rec)
    _, tc = model_forward(cfg, params, tokens, mask, None, rec)
    edited = read_columns(effect.target, cfg, params, tr.resid_post)
    return edited.reshape((R, B) + edited.shape[1:]), read_columns(
        effect.target, cfg, params, tc.resid_post
    )


def set_effects(cfg: ModelConfig, params, effect: SetEffect, scales):
    """m_e with each of several head sets edited, for one `heads.Target`: scales `[n_sets,
    layer, head]` (0 = edited). Returns (edited `[n_sets, batch]`, clean `[batch]`)."""
    edited, clean = set_columns(cfg, params, effect, scales)
    return edited[..., 0], clean[..., 0]


@functools.partial(jax.jit, static_argnames=("cfg", "rows"))
def _step(cfg, params, effect: SetEffect, base, rows):
    """Every target's reading with (base set + each head) removed `[layer * head, batch, T]`
    (layer-major) and with the base set alone `[batch, T]`."""
    out, base_last = heads.head_sweep(
        cfg, params, effect.tokens, effect.mask, effect.z_ref[None], base, None, rows
    )
    return (
        read_columns(effect.target, cfg, params, out[:, 0]),
        read_columns(effect.target, cfg, params, base_last),
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
    """A circuit search: the beam; candidates = the `n_candidates` heads of largest single
    effect on the search half (0: every head); `n_null` null targets searched the same way (the
    control); the bootstrap (resamples, seed of everything random, CI level); `set_chunk` head
    sets per forward when the found sets are scored on the held-out half."""

    beam: BeamSettings
    n_candidates: int
    n_null: int
    n_boot: int
    seed: int
    level: float = 0.95
    set_chunk: int = 32


Found = tuple[tuple[Head, ...], np.ndarray]  # a head set and its effect per prompt [n]


def _all_heads(cfg: ModelConfig) -> tuple[Head, ...]:
    return tuple((a, b) for a in range(cfg.n_layers) for b in range(cfg.n_heads))


def _check_search(cfg: ModelConfig, candidates, beam: BeamSettings) -> None:
    for cands in candidates:
        if not cands:
            raise ValueError("candidates is empty; pass at least one (layer, head)")
        for a, b in cands:
            if not (0 <= a < cfg.n_layers and 0 <= b < cfg.n_heads):
                raise ValueError(f"head ({a}, {b}) is outside {cfg.n_layers} x {cfg.n_heads}")
        if not 1 <= beam.k_max <= len(cands):
            raise ValueError(f"k_max={beam.k_max} must be in [1, {len(cands)}] (the candidates)")
    if beam.width < 1:
        raise ValueError(f"beam={beam.width}; use 1 (greedy) or more")


@dataclasses.dataclass(frozen=True)
class Search:
    """What `search_sets` found, per target t: best[t][k - 1] the best set of size k and its
    effect per prompt `[n]`; singles[t] every head's single effect per prompt; candidates[t]
    the heads sets were grown from."""

    best: list[list[Found]]
    singles: list[dict[Head, np.ndarray]]
    candidates: list[tuple[Head, ...]]


def search_sets(
    cfg: ModelConfig,
    params,
    effect: SetEffect,
    candidates: Sequence[Sequence[Head]] | None,
    beam: BeamSettings,
    sign: float = 1.0,
    n_candidates: int = 0,
) -> Search:
    """Grow head sets by beam search on mean effect, for every target of `effect` at once.

    effect(S) per prompt and target = sign * (m(clean) - m(S edited)) (sign -1 for patching).
    candidates: per target, the heads to grow sets from; None: per target the `n_candidates`
    heads of largest single effect (0: every head). Each step sweeps every head once per
    distinct kept set over all targets, read by every target (see `Search`).
    """
    effect = effect.arrays()
    vals0, clean = _step(cfg, params, effect, set_edits(cfg, (), effect.z_ref), beam.rows)
    vals0, clean = np.asarray(vals0), np.asarray(clean)  # [L*H, n, T], [n, T]
    T, every = clean.shape[1], _all_heads(cfg)
    col = {h: i for i, h in enumerate(every)}  # the sweep's row of each head (layer-major)
    singles = [{h: sign * (clean[:, t] - vals0[col[h], :, t]) for h in every} for t in range(T)]
    if candidates is None:
        n = n_candidates if 0 < n_candidates < len(every) else len(every)
        candidates = [sorted(every, key=lambda h, s=s: -float(s[h].mean()))[:n] for s in singles]
    candidates = [tuple((int(a), int(b)) for a, b in c) for c in candidates]
    if len(candidates) != T:
        raise ValueError(f"{len(candidates)} candidate lists for {T} targets; pass one each")
    _check_search(cfg, candidates, beam)
    beams: list[list[Found]] = [[((), np.zeros(clean.shape[0]))] for _ in range(T)]
    best: list[list[Found]] = [[] for _ in range(T)]
    for _k in range(beam.k_max):
        vals = {(): vals0}
        for head_set in {frozenset(hs) for b in beams for hs, _ in b} - {frozenset()}:
            base = set_edits(cfg, tuple(sorted(head_set)), effect.z_ref)
            vals[head_set] = np.asarray(_step(cfg, params, effect, base, beam.rows)[0])
        for t in range(T):
            scored: dict[frozenset, Found] = {}
            for head_set, _ in beams[t]:
                v = vals[frozenset(head_set)] if head_set else vals0
                for h in candidates[t]:
                    key = frozenset(head_set + (h,))
                    if h not in head_set and key not in scored:
                        scored[key] = (head_set + (h,), sign * (clean[:, t] - v[col[h], :, t]))
            beams[t] = sorted(scored.values(), key=lambda s: -float(s[1].mean()))[: beam.width]
            best[t].append(beams[t][0])
    return Search(best, singles, candidates)


def beam_search(
    cfg: ModelConfig,
    params,
    effect: SetEffect,
    candidates: Sequence[Head],
    beam: BeamSettings,
    sign: float = 1.0,
) -> tuple[list[Found], dict[Head, np.ndarray]]:
    """`search_sets` for one target (`heads.Target`) and one candidate list: (for k = 1..k_max
    the best set and its effect per prompt `[n]`, every candidate's single effect per prompt)."""
    candidates = tuple((int(a), int(b)) for a, b in candidates)
    found = search_sets(cfg, params, effect, [candidates], beam, sign)
    return found.best[0], {h: found.singles[0][h] for h in candidates}


# ---------------------------------------------------------------------------------------------
# Held-out scoring and the null search


def held_out_joint(
    cfg: ModelConfig,
    params,
    effect: SetEffect,
    sets: Sequence[Sequence[tuple[Head, ...]]],
    sign: float,
    chunk: int,
) -> np.ndarray:
    """Effect per prompt of each target's sets on `effect`'s prompts, each read by its own
    target: sets[t][k] -> `[T, K, n]`. Each distinct set runs once (null searches often find
    the same sets), `chunk` sets per forward (the last chunk padded with unedited copies, so
    every call has one compiled shape)."""
    effect = effect.arrays()
    unique = list(dict.fromkeys(frozenset(hs) for ts in sets for hs in ts))
    edited = []
    for start in range(0, len(unique), chunk):
        part = unique[start : start + chunk]
        scales = np.ones((chunk, cfg.n_layers, cfg.n_heads), np.float32)
        for i, hs in enumerate(part):
            for a, b in hs:
                scales[i, a, b] = 0.0
        e, clean = (np.asarray(x) for x in set_columns(cfg, params, effect, scales))
        edited.append(e[: len(part)])
    edited = np.concatenate(edited)  # [n_unique, n, T]
    row = {hs: i for i, hs in enumerate(unique)}
    return np.stack(
        [
            np.stack([sign * (clean[:, t] - edited[row[frozenset(hs)], :, t]) for hs in ts])
            for t, ts in enumerate(sets)
        ]
    )


def held_out_singles(cfg: ModelConfig, params, effect: SetEffect, sign: float, rows):
    """Every head's single effect per prompt and target on `effect`'s prompts: `[T, L*H, n]`
    (heads layer-major)."""
    effect = effect.arrays()
    vals, clean = _step(cfg, params, effect, set_edits(cfg, (), effect.z_ref), rows)
    return sign * np.moveaxis(np.asarray(clean)[None] - np.asarray(vals), 2, 0)


@dataclasses.dataclass
class CircuitStep:
    """The best set of size k (found on the search half) and its effects on the held-out half.

    joint: effect of editing the whole set; sum_singles: sum of each head's single effect;
    interaction: joint - sum_singles; each a dict (value, lo, hi, n) over the held-out prompts;
    search_joint: the set's mean effect on the search half (what it was chosen by: biased up);
    null: the same search on `n` null targets, their held-out joint effects' mean and central
    band (lo, hi), p (one-sided, >=), and the band of their held-out interactions.
    """

    k: int
    heads: tuple[Head, ...]
    joint_per_prompt: np.ndarray
    sum_per_prompt: np.ndarray
    joint: dict
    sum_singles: dict
    interaction: dict
    search_joint: float
    null: dict


@dataclasses.dataclass
class CircuitResult:
    """One search: its labels, candidates (on the search half), every candidate's single effect
    on the held-out half, the steps, and the split (n_search, n_held_out, seed)."""

    mode: str
    emotion: str
    measure: str
    kind: str
    candidates: tuple[Head, ...]
    singles: dict[Head, float]
    steps: list[CircuitStep]
    split: dict


def _est(values, n_boot, seed, level):
    e = bootstrap_ci(values, n_boot=n_boot, seed=seed, level=level)
    return {"value": float(e.value), "lo": float(e.lo), "hi": float(e.hi), "n": e.n}


@dataclasses.dataclass(frozen=True)
class Scored:
    """Found sets scored on the held-out half: search (`Search` on the search half), joint
    `[T, K, n]` and the sum of the sets' heads' single effects `[T, K, n]`, and every head's
    single effect `[T, L*H, n]` (layer-major), all on the held-out prompts."""

    search: Search
    joint: np.ndarray
    sums: np.ndarray
    singles: np.ndarray


def search_and_score(cfg, params, search: SetEffect, held: SetEffect, settings, sign) -> Scored:
    """`search_sets` on the search half (candidates by single effect there), then every found
    set's joint effect and sum of singles on the held-out half (same targets)."""
    s = settings
    found = search_sets(cfg, params, search, None, s.beam, sign, s.n_candidates)
    sets = [[hs for hs, _ in f] for f in found.best]
    joint = held_out_joint(cfg, params, held, sets, sign, s.set_chunk)
    singles = held_out_singles(cfg, params, held, sign, s.beam.rows)  # [T, L*H, n]
    col = {h: i for i, h in enumerate(_all_heads(cfg))}
    sums = np.stack(
        [
            np.stack([singles[t, [col[h] for h in hs]].sum(0) for hs in ts])
            for t, ts in enumerate(sets)
        ]
    )
    return Scored(found, joint, sums, singles)


def _null_summary(scored: Scored, k: int, s: CircuitSettings) -> dict:
    """Step k's control: the null searches' (targets 1..n) held-out joint effects (band, p
    against target 0's) and interactions; all None without null targets."""
    keys = ("mean", "lo", "hi", "p", "n", "interaction_mean", "interaction_lo", "interaction_hi")
    if scored.joint.shape[0] < 2:
        return dict.fromkeys(keys)
    obs = float(scored.joint[0, k].mean())
    null_joint = scored.joint[1:, k].mean(axis=1)  # [n_null]
    band = summarise_null(null_joint, s.seed, s.level, f"held-out joint of null sets of {k + 1}")
    inter = (scored.joint[1:, k] - scored.sums[1:, k]).mean(axis=1)
    inter = summarise_null(inter, s.seed, s.level)
    values = (band.mean, band.lo, band.hi, permutation_pvalue(obs, null_joint, "greater"))
    values += (null_joint.size, inter.mean, inter.lo, inter.hi)
    return {key: float(v) if key != "n" else int(v) for key, v in zip(keys, values, strict=True)}


def _step_of(real: Scored, k: int, s: CircuitSettings) -> CircuitStep:
    """Step k (0-based) of target 0's search (the emotion's), scored on the held-out half."""
    head_set, in_sample = real.search.best[0][k]
    joint, sums = real.joint[0, k], real.sums[0, k]
    diff = paired_bootstrap_diff(joint, sums, n_boot=s.n_boot, seed=s.seed, level=s.level)
    return CircuitStep(
        k=k + 1,
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
        search_joint=float(in_sample.mean()),
        null=_null_summary(real, k, s),
    )


def search_circuit(
    cfg: ModelConfig,
    params,
    search: SetEffect,
    held: SetEffect,
    settings: CircuitSettings,
    labels: dict,
    null: Any = None,
) -> CircuitResult:
    """The selection-aware circuit search of one target (`heads.Target`).

    search / held: the same target and z_ref kind on the two halves of the prompts; labels:
    mode ("ablation" or "patching": the effect's sign), emotion, measure and kind (recorded);
    null: the null targets (`null_targets`: `Directions` or `LogitContrasts`; None or
    n_null = 0: no control, null fields None), searched together with the target
    (`with_null`). Per k: the found set's held-out joint, sum of singles and interaction with
    CIs, its search-half effect, and the null searches' band and p.
    """
    s, sign = settings, sign_of(labels["mode"])
    if null is not None and s.n_null > 0:
        both = with_null(search.target, null)
        search, held = (dataclasses.replace(e, target=both) for e in (search, held))
    scored = search_and_score(cfg, params, search, held, s, sign)
    col = {h: i for i, h in enumerate(_all_heads(cfg))}
    cands = scored.search.candidates[0]
    return CircuitResult(
        mode=labels["mode"],
        emotion=labels["emotion"],
        measure=labels["measure"],
        kind=labels["kind"],
        candidates=cands,
        singles={h: float(scored.singles[0, col[h]].mean()) for h in cands},
        steps=[_step_of(scored, k, s) for k in range(s.beam.k_max)],
        split={"n_search": int(search.tokens.shape[0]), "n_held_out": int(held.tokens.shape[0])},
    )


def mean_z(cfg: ModelConfig, params, tokens, mask):
    """Mean z over real tokens per layer and head `[layer, head, d_head]`."""
    return heads.neutral_mean_z(cfg, params, jnp.asarray(tokens), jnp.asarray(mask))
