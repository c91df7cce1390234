"""Ablation and patching of chosen heads under generation, scored like the steering phases.

For each head set (the study's named case L0H0, and the screen's top heads per emotion):

- "ablation": on the emotion's prompts, generate with the set's z -> reference (zero, or the
  neutral prompts' mean z) and without; per prompt, score(edited) - score(clean).
- "patching": on the neutral prompts, generate with the set's z -> its mean z over the emotion's
  prompts (the heads' emotional output patched in) and without; score(edited) - score(clean).

Scores are `jaxcirc.core.scoring.score_texts` (sentiment, politeness, kw_<emotion>) of the
generated continuation only. Each delta comes with a paired bootstrap CI over prompts, and beside
it the control: the same edit on random head sets of the same size (`n_control` sets, seeded,
drawn from the heads outside the set), pooled over sets. The math is `jaxcirc.core.head_edits`;
the clean run of a prompt set is generated once and shared by every edit.
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
from jaxcirc.core.heads import neutral_mean_z
from jaxcirc.infra import artifacts
from jaxcirc.report import plots

MODES = ("ablation", "patching")


def generation_settings(gcfg: ml_collections.ConfigDict) -> core.GenerationSettings:
    """The `heads_generation` section's generation settings."""
    return core.GenerationSettings(
        n_new=gcfg.n_new,
        temperature=gcfg.temperature,
        seed=gcfg.seed,
        min_new_tokens=int(gcfg.get("min_new_tokens", 0)),
        n_control=gcfg.n_control,
        n_samples=gcfg.n_samples,
    )


@dataclasses.dataclass
class _Run:
    """What every edit of one `run_head_generation` call shares; `clean` holds each prompt
    set's unedited (texts, scores), generated once."""

    model: Any
    gcfg: ml_collections.ConfigDict
    gen: core.GenerationSettings
    scorer: Callable
    label: str
    clean: dict = dataclasses.field(default_factory=dict)

    def tokenize(self, texts):
        return self.model.tokenize(
            list(texts), prepend_bos=self.gcfg.prepend_bos, max_len=self.gcfg.max_len
        )

    def mean_z(self, toks):
        m = self.model
        return neutral_mean_z(m.config, m.params, jnp.asarray(toks.ids), jnp.asarray(toks.mask))

    def clean_of(self, which, toks):
        if which not in self.clean:
            self.clean[which] = core.generate_scores(self.model, toks, None, self.gen, self.scorer)
        return self.clean[which]


def _rows(run: _Run, labels: dict, deltas, ctrl) -> list[dict]:
    """One labelled row per score: the delta with its CI, the control's, and the settings."""
    g = run.gcfg
    rows = []
    for score, d in deltas.items():
        v, lo, hi = core.delta_ci(d, g.n_boot, g.seed, g.level)
        cv, clo, chi = core.delta_ci(ctrl[score].mean(axis=0), g.n_boot, g.seed, g.level)
        row = {**labels, "score": score, "delta": v, "ci_lo": lo, "ci_hi": hi}
        row.update(control_delta=cv, control_lo=clo, control_hi=chi, n_prompts=int(d.size))
        row.update(n_control_sets=g.n_control, n_new=g.n_new, min_new_tokens=run.gen.min_new_tokens)
        row.update(temperature=g.temperature, seed=g.seed)
        row["prompts"] = "emotional" if labels["mode"] == "ablation" else "neutral"
        rows.append(row)
    return rows


def _conditions(run: _Run, mode, e, e_toks, n_toks, z_neutral, z_emotion):
    """(kind, prompt-set key, prompts, z_ref) per condition of one mode and emotion."""
    if mode == "ablation":
        return [
            (k, ("emotion", e), e_toks, z_neutral if k == "mean" else jnp.zeros_like(z_neutral))
            for k in run.gcfg.kinds
        ]
    return [("emotion mean", ("neutral",), n_toks, z_emotion)]


def _plots(run: _Run, rows, emotions, out: Path) -> None:
    """One bar plot per (mode, emotion) of the first score's deltas beside the control."""
    score0 = (
        "sentiment"
        if rows and any(r["score"] == "sentiment" for r in rows)
        else (rows[0]["score"] if rows else None)
    )
    for mode in run.gcfg.modes:
        for e in emotions:
            sub = [
                r for r in rows if r["mode"] == mode and r["emotion"] == e and r["score"] == score0
            ]
            if not sub:
                continue

            def col(f, sub=sub):
                return np.array([r[f] for r in sub])

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


def run_head_generation(
    model,
    emotional_prompts: Mapping[str, Sequence[str]],
    neutral_prompts: Sequence[str],
    gcfg: ml_collections.ConfigDict,
    out_dir,
    screen_rows: list[dict] | None = None,
    scorer: Callable[[list[str]], dict[str, np.ndarray]] = scoring.score_texts,
) -> list[dict]:
    """Every (mode, emotion, head set, kind) with generation and scores; writes
    head_generation.csv (one labelled row per score: delta, CI, control delta and CI),
    samples.json, and one bar plot per (mode, emotion) of sentiment deltas with the control."""
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; generation needs one to decode and score")
    for mode in gcfg.modes:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} unknown; use a subset of {MODES}")
    mc = model.config
    run = _Run(
        model, gcfg, generation_settings(gcfg), scorer, gcfg.model_label or mc.name or mc.family
    )
    n_toks = run.tokenize(neutral_prompts)
    z_neutral = run.mean_z(n_toks)
    named = {k: tuple((int(a), int(b)) for a, b in v) for k, v in gcfg.named_sets.items()}
    from_screen = (
        core.head_sets_from_screen(screen_rows, emotional_prompts, gcfg.top_k)
        if screen_rows
        else {}
    )
    rows, samples = [], {}
    for e, prompts in emotional_prompts.items():
        e_toks = run.tokenize(prompts)
        z_emotion = run.mean_z(e_toks)
        sets = {**named, **from_screen.get(e, {})}
        for mode in gcfg.modes:
            conds = _conditions(run, mode, e, e_toks, n_toks, z_neutral, z_emotion)
            for name, head_set in sets.items():
                for kind, which, toks, z_ref in conds:
                    clean = run.clean_of(which, toks)
                    deltas, ctrl, smp = core.edit_effect(
                        model, toks, z_ref, head_set, run.gen, scorer, clean
                    )
                    samples[f"{mode}/{e}/{name}/{kind}"] = smp
                    heads_text = " ".join(f"L{a}H{b}" for a, b in head_set)
                    labels = {"model": run.label, "mode": mode, "emotion": e, "head_set": name}
                    labels.update(heads=heads_text, ablation=kind)
                    rows += _rows(run, labels, deltas, ctrl)
    out = Path(out_dir)
    artifacts.write_csv(out / "head_generation.csv", rows)
    artifacts.write_json(
        out / "head_generation_samples.json",
        {
            "what": "continuations (generated part only) without and with the head edit",
            "model": run.label,
            "samples": samples,
        },
    )
    _plots(run, rows, emotional_prompts, out)
    return rows
