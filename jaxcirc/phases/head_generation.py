"""Ablation and patching of chosen heads under generation, scored like the steering phases.

For each head set (the study's named case L0H0, and the screen's top heads per emotion):

- "ablation": on the emotion's prompts, generate with the set's z -> reference (zero, or the
  neutral prompts' mean z) and without; per prompt, score(edited) - score(clean).
- "patching": on the neutral prompts, generate with the set's z -> its mean z over the emotion's
  prompts (the heads' emotional output patched in) and without; score(edited) - score(clean).

Scores are `jaxcirc.core.scoring.score_texts` (sentiment, politeness, kw_<emotion>) of the generated
continuation only. Each delta comes with a paired bootstrap CI over prompts, and beside it the
control: the same edit on random head sets of the same size (`n_control` sets, seeded, drawn
from the heads outside the set), pooled over sets.

Generation is `models.generate.generate` (KV-cached, one compiled loop) with the head edits held
at every position; the clean run of a prompt set is generated once and shared by every edit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core import scoring
from jaxcirc.core.stats import paired_bootstrap_diff
from jaxcirc.infra import artifacts
from jaxcirc.phases import heads
from jaxcirc.report import plots
from models.config import ModelConfig
from models.contract import Edits
from models.generate import Sampling, generate

Head = tuple[int, int]
MODES = ("ablation", "patching")


# ---------------------------------------------------------------------------------------------
# Generation


def generate_ids(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    edits: Edits | None,
    n_new: int,
    temperature: float = 0.0,
    seed: int = 0,
    min_new_tokens: int = 0,
):
    """Continue each prompt by `n_new` tokens: `[batch, n_new]` int32, with `edits` held at
    every position, prompt and generated (so no position axis). KV-cached, one compiled call
    (`models.generate.generate`); temperature 0 = greedy, else sampling seeded per row by `seed`
    (the same draws for a clean and an edited run: paired comparisons). min_new_tokens: EOS
    (`cfg.eos_token_id`) held back for that many tokens."""
    sampling = Sampling(float(temperature), 0, int(min_new_tokens))
    eos_id = None
    if min_new_tokens:
        if cfg.eos_token_id is None:
            raise ValueError(
                f"heads_generation.min_new_tokens={min_new_tokens}: the model's config names no "
                "EOS token to hold back; set min_new_tokens=0"
            )
        eos_id = int(cfg.eos_token_id)
    gen = generate(
        cfg,
        params,
        tokens,
        mask,
        n_new,
        edits=edits,
        sampling=sampling,
        seed=int(seed),
        eos_id=eos_id,
    )
    return gen.tokens


def decode(model, new_ids) -> list[str]:
    """Continuations as text, each cut at the first EOS."""
    eos = model.config.eos_token_id
    texts = []
    for row in np.asarray(new_ids):
        row = list(row)
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(model.tokenizer.decode(row))
    return texts


# ---------------------------------------------------------------------------------------------
# Experiments


def set_edits(cfg: ModelConfig, head_set: Sequence[Head], z_ref) -> Edits:
    """z -> z_ref (`[layer, head, d_head]`) on every head of the set."""
    s = np.ones((cfg.n_layers, cfg.n_heads), np.float32)
    for a, b in head_set:
        if not (0 <= a < cfg.n_layers and 0 <= b < cfg.n_heads):
            raise ValueError(f"head ({a}, {b}) is outside {cfg.n_layers} x {cfg.n_heads} heads")
        s[a, b] = 0.0
    return Edits(head_scale=jnp.asarray(s), head_mean=jnp.asarray(z_ref))


def control_sets(cfg: ModelConfig, head_set: Sequence[Head], n: int, seed: int):
    """`n` random head sets of the same size, drawn from the heads outside `head_set`."""
    rng = np.random.default_rng(seed)
    pool = [
        (a, b)
        for a in range(cfg.n_layers)
        for b in range(cfg.n_heads)
        if (a, b) not in set(head_set)
    ]
    return [
        tuple(pool[i] for i in rng.choice(len(pool), len(head_set), replace=False))
        for _ in range(n)
    ]


def identity_edits(cfg: ModelConfig) -> Edits:
    """Edits that change nothing (every head kept: z -> 1 * z + 0 * 0) with the pytree and
    shapes of `set_edits`, so clean and edited runs share one compiled generation loop (one
    compile instead of two per model) and the paired runs go through the same arithmetic."""
    return Edits(
        head_scale=jnp.ones((cfg.n_layers, cfg.n_heads), jnp.float32),
        head_mean=jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head), jnp.float32),
    )


def _generate_scores(model, toks, edits, gcfg, scorer):
    if edits is None:
        edits = identity_edits(model.config)
    ids = generate_ids(
        model.config,
        model.params,
        jnp.asarray(toks.ids),
        jnp.asarray(toks.mask),
        edits,
        gcfg.n_new,
        gcfg.temperature,
        gcfg.seed,
        int(gcfg.get("min_new_tokens", 0)),
    )
    texts = decode(model, ids)
    return texts, scorer(texts)


def edit_effect(model, toks, z_ref, head_set, gcfg, scorer=scoring.score_texts, clean=None):
    """Per score name: delta per prompt `[n]` (edited - clean), its control deltas
    `[n_control, n]`, and sample texts. The same sampling draws for clean and edited runs.
    clean: `(texts, scores)` of the unedited run of `toks`, if already generated."""
    if clean is None:
        clean = _generate_scores(model, toks, None, gcfg, scorer)
    clean_texts, clean = clean
    texts, edited = _generate_scores(
        model, toks, set_edits(model.config, head_set, z_ref), gcfg, scorer
    )
    ctrl = {k: [] for k in clean}
    for cs in control_sets(model.config, head_set, gcfg.n_control, gcfg.seed):
        _, c = _generate_scores(model, toks, set_edits(model.config, cs, z_ref), gcfg, scorer)
        for k in clean:
            ctrl[k].append(c[k] - clean[k])
    deltas = {k: edited[k] - clean[k] for k in clean}
    samples = [
        {"prompt": p, "clean": a, "edited": b}
        for p, a, b in zip(toks.texts, clean_texts, texts, strict=True)
    ][: gcfg.n_samples]
    return deltas, {k: np.stack(v) for k, v in ctrl.items()}, samples


def _ci(values, gcfg):
    e = paired_bootstrap_diff(
        values, np.zeros_like(values), n_boot=gcfg.n_boot, seed=gcfg.seed, level=gcfg.level
    )
    return float(e.value), float(e.lo), float(e.hi)


def head_sets_from_screen(screen_rows, emotions, top_k) -> dict[str, dict[str, tuple[Head, ...]]]:
    """Per emotion: {"top1": ((l, h),), "top2": ..., ...} from the exact/projection/mean screen."""
    out = {}
    for e in emotions:
        rows = [
            r
            for r in screen_rows
            if (r["method"], r["measure"], r["ablation"], r["emotion"])
            == ("exact", "projection", "mean", e)
        ]
        rows.sort(key=lambda r: -r["score"])
        best = [(r["layer"], r["head"]) for r in rows[:top_k]]
        out[e] = {f"top{k}": tuple(best[:k]) for k in range(1, len(best) + 1)}
    return out


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
    tok = lambda texts: model.tokenize(
        list(texts),
        prepend_bos=gcfg.prepend_bos,  # noqa: E731
        max_len=gcfg.max_len,
    )
    n_toks = tok(neutral_prompts)
    z_neutral = heads.neutral_mean_z(
        mc, model.params, jnp.asarray(n_toks.ids), jnp.asarray(n_toks.mask)
    )
    named = {k: tuple((int(a), int(b)) for a, b in v) for k, v in gcfg.named_sets.items()}
    from_screen = (
        head_sets_from_screen(screen_rows, emotional_prompts, gcfg.top_k) if screen_rows else {}
    )
    label = gcfg.model_label or mc.name or mc.family
    rows, samples = [], {}
    clean_runs = {}  # prompt set -> its unedited (texts, scores), generated once

    def clean_of(which, toks):
        if which not in clean_runs:
            clean_runs[which] = _generate_scores(model, toks, None, gcfg, scorer)
        return clean_runs[which]

    for e, prompts in emotional_prompts.items():
        e_toks = tok(prompts)
        z_emotion = heads.neutral_mean_z(
            mc, model.params, jnp.asarray(e_toks.ids), jnp.asarray(e_toks.mask)
        )
        sets = {**named, **from_screen.get(e, {})}
        for mode in gcfg.modes:
            if mode == "ablation":
                conds = [
                    (
                        k,
                        ("emotion", e),
                        e_toks,
                        z_neutral if k == "mean" else jnp.zeros_like(z_neutral),
                    )
                    for k in gcfg.kinds
                ]
            else:
                conds = [("emotion mean", ("neutral",), n_toks, z_emotion)]
            for name, head_set in sets.items():
                for kind, which, toks, z_ref in conds:
                    deltas, ctrl, smp = edit_effect(
                        model, toks, z_ref, head_set, gcfg, scorer, clean_of(which, toks)
                    )
                    samples[f"{mode}/{e}/{name}/{kind}"] = smp
                    for score, d in deltas.items():
                        v, lo, hi = _ci(d, gcfg)
                        cv, clo, chi = _ci(ctrl[score].mean(axis=0), gcfg)
                        rows.append(
                            {
                                "model": label,
                                "mode": mode,
                                "emotion": e,
                                "head_set": name,
                                "heads": " ".join(f"L{a}H{b}" for a, b in head_set),
                                "ablation": kind,
                                "score": score,
                                "delta": v,
                                "ci_lo": lo,
                                "ci_hi": hi,
                                "control_delta": cv,
                                "control_lo": clo,
                                "control_hi": chi,
                                "n_prompts": int(d.size),
                                "n_control_sets": gcfg.n_control,
                                "n_new": gcfg.n_new,
                                "min_new_tokens": int(gcfg.get("min_new_tokens", 0)),
                                "temperature": gcfg.temperature,
                                "seed": gcfg.seed,
                                "prompts": "emotional" if mode == "ablation" else "neutral",
                            }
                        )
    out = Path(out_dir)
    artifacts.write_csv(out / "head_generation.csv", rows)
    artifacts.write_json(
        out / "head_generation_samples.json",
        {
            "what": "continuations (generated part only) without and with the head edit",
            "model": label,
            "samples": samples,
        },
    )
    score0 = (
        "sentiment"
        if rows and any(r["score"] == "sentiment" for r in rows)
        else (rows[0]["score"] if rows else None)
    )
    for mode in gcfg.modes:
        for e in emotional_prompts:
            sub = [
                r for r in rows if r["mode"] == mode and r["emotion"] == e and r["score"] == score0
            ]
            if not sub:
                continue
            labels = [f"{r['head_set']} {r['ablation']}" for r in sub]

            def col(f, sub=sub):
                return np.array([r[f] for r in sub])

            fig = plots.bar_with_ci(
                labels,
                {
                    "head set": (col("delta"), col("ci_lo"), col("ci_hi")),
                    "random sets (control)": (
                        col("control_delta"),
                        col("control_lo"),
                        col("control_hi"),
                    ),
                },
                ylabel=f"{score0}: edited - clean (mean over prompts)",
                title=f"{label}: {mode} of heads, {e}, {gcfg.n_new} generated tokens",
            )
            artifacts.save_figure(out / f"head_generation_{mode}_{e}.png", fig)
    return rows
