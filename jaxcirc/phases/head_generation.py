"""Ablation and patching of chosen heads under generation, scored like the steering phases.

For each head set (the named sets, e.g. the study's L0H0, and the screen's top heads per
emotion):

- "ablation": on the emotion's prompts, generate with the set's z -> reference (zero, or the
  neutral prompts' mean z) and without; per prompt, score(edited) - score(clean).
- "patching": on the neutral prompts, generate with the set's z -> its mean z over the emotion's
  prompts (the heads' emotional output patched in) and without; score(edited) - score(clean).

Selection: the top-k sets are chosen on one half of each emotion's prompts (seeded split; the
exact / projection / mean screen averaged over that half) and every effect is measured on the
other half: the ablation on the held-out emotional prompts, the patching with the mean z over
them (on `max_neutral` neutral prompts, a seeded sample; no selection used them). The named
sets (not chosen from data) are measured in the same conditions, so every set of a condition
shares its clean run and its control sets.

Control: `n_control` random head sets per set size and condition (seeded, distinct, drawn from
the heads outside every evaluated set of that size; all possible sets when there are fewer),
edited the same way on the same prompts with the same draws, and generated together with the
clean and edited runs (`batch_rows` rows per call, every prompt set padded to one width: one
compiled generation loop). Each row of head_generation.csv (one per mode, emotion, set, kind
and score) holds:

  delta, ci_lo, ci_hi       mean over prompts of score(edited) - score(clean), paired bootstrap CI
  control_delta, control_lo, control_hi   the control sets' mean delta and its two-level
                            bootstrap CI (prompts and control sets resampled)
  diff_vs_control, diff_lo, diff_hi       delta - control_delta, two-level bootstrap CI
  control_set_lo, control_set_hi          the central band of the per-set mean deltas (where
                            one random set of this size lands)
  p_vs_control              (1 + #{|control set mean| >= |delta|}) / (1 + n_control_sets):
                            is the set unusual among sets of its size (the verdict field)
  beyond_control, p_floor   p_vs_control <= 1 - level; the smallest p the sets allow, 1/(1 + n)
  n_prompts, prompts, selection, n_control_sets, n_new, min_new_tokens, temperature, seed

generation/summary.json (the report reads it): the same figures per named set ("named_sets":
{name: [row, ...]}) and top set ("top_sets": [row, ...]) under explicit names (effect, ci_lo,
ci_hi, control_mean, control_lo, control_hi, control_band_lo, control_band_hi, diff_vs_control,
diff_lo, diff_hi, p_vs_control, beyond_control, p_floor, n_control_sets, n_prompts), the study's
L0H0 sentiment figures ("study"), and the settings. Is a set unusual among random sets of its
size: p_vs_control / beyond_control (and the band); diff_vs_control's CI describes THIS set's
difference from the average random set, which a typical set also shows (see
`jaxcirc.core.head_edits.control_summary`).

Scores are `jaxcirc.core.scoring.score_texts` (sentiment, politeness, kw_<emotion>) of the
generated continuation only. The math is `jaxcirc.core.head_edits`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core import head_edits as core
from jaxcirc.core import scoring
from jaxcirc.core.heads import Screen, neutral_mean_z
from jaxcirc.infra import artifacts
from jaxcirc.report import plots

MODES = ("ablation", "patching")
# The study's L0H0 figures (sentiment; model, emotion, prompts and ablation kind not stated).
STUDY_L0H0 = {"ablation": -0.0349, "patching": 0.1102}
# The screen map the top-k sets are chosen from, and the fallbacks when it was not run.
SELECT_FROM = (
    ("exact", "projection", "mean"),
    ("exact", "projection", "zero"),
    ("attribution", "projection", "mean"),
    ("direct", "projection", "mean"),
)


def generation_settings(gcfg: ml_collections.ConfigDict) -> core.GenerationSettings:
    """The `heads_generation` section's generation settings."""
    return core.GenerationSettings(
        n_new=gcfg.n_new,
        temperature=gcfg.temperature,
        seed=gcfg.seed,
        min_new_tokens=int(gcfg.get("min_new_tokens", 0)),
        n_control=gcfg.n_control,
        n_samples=gcfg.n_samples,
        batch_rows=gcfg.batch_rows,
    )


@dataclasses.dataclass
class _Run:
    """What every condition of one `run_head_generation` call shares."""

    model: Any
    gcfg: ml_collections.ConfigDict
    gen: core.GenerationSettings
    scorer: Callable
    label: str

    def tokenize(self, texts):
        return self.model.tokenize(
            list(texts), prepend_bos=self.gcfg.prepend_bos, max_len=self.gcfg.max_len
        )

    def mean_z(self, toks):
        m = self.model
        return neutral_mean_z(m.config, m.params, jnp.asarray(toks.ids), jnp.asarray(toks.mask))


@dataclasses.dataclass(frozen=True)
class Condition:
    """One batch of generations: a mode, emotion and kind, the prompts (`models.Tokens`) and
    what they are, z_ref, and the head sets evaluated {name: (heads, how they were chosen)}."""

    mode: str
    emotion: str
    kind: str
    toks: Any
    prompts: str
    z_ref: Any
    sets: dict


def _controls(run: _Run, cond: Condition, key) -> dict[int, list]:
    """Per set size: `n_control` distinct random sets from the heads outside every evaluated
    set of that size (seeded by the run's seed and `key`)."""
    out = {}
    for size in sorted({len(hs) for hs, _ in cond.sets.values()}):
        taken = [h for hs, _ in cond.sets.values() if len(hs) == size for h in hs]
        seed = (run.gen.seed, *key, size)
        out[size] = core.control_sets(run.model.config, size, run.gen.n_control, seed, taken)
    return out


def _rows(run: _Run, cond: Condition, res: core.SetRun, controls) -> list[dict]:
    """One labelled row per (set, score): the delta with its CI, against its control sets."""
    g = run.gcfg
    rows = []
    for name, (hs, selection) in cond.sets.items():
        ctrl = [res.deltas(cs) for cs in controls[len(hs)]]
        for score, d in res.deltas(hs).items():
            v, lo, hi = core.delta_ci(d, g.n_boot, g.seed, g.level)
            c = np.stack([x[score] for x in ctrl]) if ctrl else np.zeros((0, d.size))
            row = {"model": run.label, "mode": cond.mode, "emotion": cond.emotion}
            row.update(head_set=name, heads=" ".join(f"L{a}H{b}" for a, b in hs))
            row.update(ablation=cond.kind, score=score, delta=v, ci_lo=lo, ci_hi=hi)
            cs = core.control_summary(d, c, g.n_boot, g.seed, g.level)
            row.update(control_delta=cs.pop("control_mean"), diff_vs_control=cs.pop("diff"))
            row.update(cs, n_prompts=int(d.size), n_new=g.n_new)
            row.update(min_new_tokens=run.gen.min_new_tokens, temperature=g.temperature)
            row.update(seed=g.seed, prompts=cond.prompts, selection=selection)
            rows.append(row)
    return rows


def _run_condition(run: _Run, cond: Condition, key) -> tuple[list[dict], dict]:
    """Generate the clean run, every evaluated set and the control sets of one condition in
    shared batches; its rows and sample texts."""
    controls = _controls(run, cond, key)
    every = [hs for hs, _ in cond.sets.values()] + [cs for c in controls.values() for cs in c]
    every = list(dict.fromkeys(every))  # a top set equal to a named one runs once
    res = core.score_sets(run.model, cond.toks, every, cond.z_ref, run.gen, run.scorer)
    samples = {
        f"{cond.mode}/{cond.emotion}/{name}/{cond.kind}": [
            {"prompt": p, "clean": a, "edited": b}
            for p, a, b in zip(
                cond.toks.texts, res.texts[0], res.texts[res.sets.index(hs)], strict=True
            )
        ][: run.gen.n_samples]
        for name, (hs, _) in cond.sets.items()
    }
    return _rows(run, cond, res, controls), samples


def _top_sets(screen: Screen | None, ei: int, choose_on, top_k: int) -> tuple[dict, str]:
    """The top-k sets of emotion `ei` chosen on its prompts `choose_on` (indices within the
    emotion's prompts), and what they were chosen by; ({}, "") without a screen."""
    if screen is None or top_k <= 0:
        return {}, ""
    key = next((k for k in SELECT_FROM if k in screen.values), None)
    if key is None:
        return {}, ""
    idx = np.flatnonzero(screen.emotion_index == ei)[choose_on]
    how = f"top heads by the {'/'.join(key)} screen on a disjoint half (n={len(idx)})"
    return core.top_sets(screen.values[key], idx, top_k), how


def _conditions(run: _Run, e: str, sets: dict, held, n_toks, z_neutral) -> list[Condition]:
    """The conditions of one emotion: ablation (each kind) on its held-out prompts, patching
    on the neutral prompts with the mean z over its held-out prompts. held: the held-out
    half's tokens, mean z and description; sets: {name: (heads, selection)}."""
    out = []
    for mode in run.gcfg.modes:
        if mode == "ablation":
            for k in run.gcfg.kinds:
                z = z_neutral if k == "mean" else jnp.zeros_like(z_neutral)
                where = f"emotional ({held['what']})"
                out.append(Condition(mode, e, k, held["toks"], where, z, sets))
        else:
            n = len(n_toks.texts)
            where = f"neutral (n={n}); z from the emotion's prompts ({held['what']})"
            out.append(Condition(mode, e, "emotion mean", n_toks, where, held["z"], sets))
    return out


def _neutral_sample(neutral_prompts: Sequence[str], gcfg) -> list[str]:
    """The neutral prompts patched: a seeded sample of `max_neutral` (0 = all), in order."""
    n = len(neutral_prompts)
    if not 0 < gcfg.max_neutral < n:
        return list(neutral_prompts)
    pick = np.sort(np.random.default_rng((gcfg.seed, 0)).permutation(n)[: gcfg.max_neutral])
    return [neutral_prompts[i] for i in pick]


def run_head_generation(
    model,
    emotional_prompts: Mapping[str, Sequence[str]],
    neutral_prompts: Sequence[str],
    gcfg: ml_collections.ConfigDict,
    out_dir,
    screen: Screen | None = None,
    scorer: Callable[[list[str]], dict[str, np.ndarray]] = scoring.score_texts,
) -> list[dict]:
    """Every (mode, emotion, head set, kind) with generation and scores; writes
    head_generation.csv (columns in the module doc), head_generation_samples.json,
    summary.json (what the report reads) and one bar plot per (mode, emotion).

    screen: the head screen (`jaxcirc.core.heads.Screen`, per-prompt scores) the top-k sets
    are chosen from on a half of each emotion's prompts; None: named sets only."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; generation needs one to decode and score")
    for mode in gcfg.modes:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} unknown; use a subset of {MODES}")
    mc = model.config
    run = _Run(
        model, gcfg, generation_settings(gcfg), scorer, gcfg.model_label or mc.name or mc.family
    )
    named = {
        k: (tuple((int(a), int(b)) for a, b in v), "named (not chosen from data)")
        for k, v in gcfg.named_sets.items()
    }
    splits = {
        e: core.split_halves(len(p), (gcfg.seed, j + 1))
        for j, (e, p) in enumerate(emotional_prompts.items())
    }
    toks = {e: run.tokenize([p[i] for i in splits[e][1]]) for e, p in emotional_prompts.items()}
    toks["/neutral"] = run.tokenize(_neutral_sample(neutral_prompts, gcfg))
    width = max(t.ids.shape[1] for t in toks.values())
    toks = {k: t.padded(width) for k, t in toks.items()}  # one width: one compile for all
    n_toks = toks["/neutral"]
    z_neutral = run.mean_z(run.tokenize(neutral_prompts))  # the reference: every neutral prompt
    rows, samples = [], {}
    for j, e in enumerate(emotional_prompts):
        choose_on, held_i = splits[e]
        top, how = _top_sets(screen, j, choose_on, gcfg.top_k)
        how += f"; evaluated on the other half (n={len(held_i)})"
        sets = {**named, **{k: (v, how) for k, v in top.items() if k not in named}}
        held = {
            "toks": toks[e],
            "z": run.mean_z(toks[e]),
            "what": f"held-out half, n={len(held_i)}",
        }
        for ci, cond in enumerate(_conditions(run, e, sets, held, n_toks, z_neutral)):
            r, s = _run_condition(run, cond, (j, ci))
            rows += r
            samples.update(s)
    write_outputs(run, rows, samples, list(emotional_prompts), Path(out_dir))
    return rows


_SUMMARY_KEYS = {
    "delta": "effect",
    "ci_lo": "ci_lo",
    "ci_hi": "ci_hi",
    "control_delta": "control_mean",
    "control_lo": "control_lo",
    "control_hi": "control_hi",
    "control_set_lo": "control_band_lo",
    "control_set_hi": "control_band_hi",
    "diff_vs_control": "diff_vs_control",
    "diff_lo": "diff_lo",
    "diff_hi": "diff_hi",
    "p_vs_control": "p_vs_control",
    "beyond_control": "beyond_control",
    "p_floor": "p_floor",
    "n_control_sets": "n_control_sets",
    "n_prompts": "n_prompts",
}
_LABEL_KEYS = ("mode", "emotion", "head_set", "heads", "ablation", "score", "prompts", "selection")


def summary(rows: list[dict], gcfg, label: str, named: Sequence[str]) -> dict:
    """What generation/summary.json holds (see the module doc): every row under explicit
    names, the named sets' apart, the study's figures and the settings."""

    def entry(r):
        return {**{k: r[k] for k in _LABEL_KEYS}, **{v: r[k] for k, v in _SUMMARY_KEYS.items()}}

    return {
        "what": "head sets edited during generation: effect = mean over prompts of "
        "score(edited) - score(clean) with a paired bootstrap CI; control = random head sets "
        "of the same size, the same edit, prompts and draws: control_mean and diff_vs_control "
        "with two-level bootstrap CIs (prompts and control sets resampled), control_band = "
        "central band of the per-set means, p_vs_control = (1 + #|set mean| >= |effect|) / "
        "(1 + n_control_sets)",
        "model": label,
        "level": gcfg.level,
        "study": {
            "L0H0": {**STUDY_L0H0, "score": "sentiment"},
            "note": "the study's L0H0 sentiment changes; its model, emotion, prompts, ablation "
            "kind and scorer are not stated, and it reports no control or CI",
        },
        "named_sets": {n: [entry(r) for r in rows if r["head_set"] == n] for n in named},
        "top_sets": [entry(r) for r in rows if r["head_set"] not in named],
        "settings": {
            k: gcfg[k]
            for k in ("n_new", "temperature", "min_new_tokens", "n_control", "n_boot", "seed")
        },
    }


def write_outputs(run: _Run, rows, samples, emotions, out: Path) -> None:
    """head_generation.csv, head_generation_samples.json, summary.json and the bar plots."""
    artifacts.write_csv(out / "head_generation.csv", rows)
    artifacts.write_json(
        out / "head_generation_samples.json",
        {
            "what": "continuations (generated part only) without and with the head edit",
            "model": run.label,
            "samples": samples,
        },
    )
    artifacts.write_json(
        out / "summary.json", summary(rows, run.gcfg, run.label, list(run.gcfg.named_sets))
    )
    _plots(run, rows, emotions, out)


def _plots(run: _Run, rows, emotions, out: Path) -> None:
    """One bar plot per (mode, emotion) of the first score's deltas beside the control."""
    scores = [r["score"] for r in rows]
    score0 = "sentiment" if "sentiment" in scores else (scores[0] if scores else None)
    for mode in run.gcfg.modes:
        for e in emotions:
            sub = [
                r for r in rows if r["mode"] == mode and r["emotion"] == e and r["score"] == score0
            ]
            if not sub:
                continue

            def col(f, sub=sub):
                return np.array([np.nan if r[f] is None else r[f] for r in sub], float)

            fig = plots.bar_with_ci(
                [f"{r['head_set']} {r['ablation']}" for r in sub],
                {
                    "head set": (col("delta"), col("ci_lo"), col("ci_hi")),
                    "random sets (control)": (
                        col("control_delta"),
                        col("control_lo"),
                        col("control_hi"),
                    ),
                },
                ylabel=f"{score0}: edited - clean (mean over prompts)",
                title=f"{run.label}: {mode} of heads, {e}, {run.gcfg.n_new} generated tokens",
            )
            artifacts.save_figure(out / f"head_generation_{mode}_{e}.png", fig)
