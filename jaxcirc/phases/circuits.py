"""Multi-head circuits (the study's future work): search head sets for every emotion and mode and
write the tables. The math is `jaxcirc.core.circuits`; files: circuits.csv, circuits.json and
circuit_<mode>_<emotion>.png.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core import circuits as core
from jaxcirc.core import heads
from jaxcirc.core.measures import WordIds, word_token_ids
from jaxcirc.data import lexicon
from jaxcirc.infra import artifacts
from jaxcirc.report import plots


def circuit_settings(ccfg: ml_collections.ConfigDict) -> core.CircuitSettings:
    """The `heads_circuits` section's search settings."""
    beam = core.BeamSettings(ccfg.k_max, ccfg.beam, heads.RowStrategy(ccfg.strategy, ccfg.chunk))
    return core.CircuitSettings(beam, ccfg.n_random_sets, ccfg.n_boot, ccfg.seed, ccfg.level)


def _check(ccfg) -> None:
    for mode in ccfg.modes:
        if mode not in core.MODES:
            raise ValueError(f"mode {mode!r} unknown; use a subset of {core.MODES}")
    if ccfg.measure not in heads.MEASURES:
        raise ValueError(f"measure {ccfg.measure!r} unknown; use one of {heads.MEASURES}")
    if ccfg.kind not in heads.KINDS:
        raise ValueError(f"kind {ccfg.kind!r} unknown; use one of {heads.KINDS}")


def _swept(cands_by: dict[str, tuple]) -> list | None:
    """One sweep over every emotion's candidates compiles once for all searches; worth it while
    the union is not much larger than one emotion's list (small models, overlapping lists)."""
    union = sorted(set().union(*cands_by.values()))
    return union if len(union) <= 1.5 * max(len(c) for c in cands_by.values()) else None


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
) -> list[core.CircuitResult]:
    """Search circuits for every emotion and mode; write circuits.csv, circuits.json and a plot
    per (mode, emotion): joint effect vs k beside the sum of singles and the random-set band.

    screen_rows: `heads.run_heads(...).rows` to take candidates from (else all heads);
    tokenize_cfg: prompt settings (prepend_bos, max_len, logit_words: the `heads` section); when
      None, no BOS, prompts of at most 64 tokens and the lexicon's logit words.
    """
    tcfg = tokenize_cfg or ml_collections.ConfigDict(
        {"prepend_bos": False, "max_len": 64, "logit_words": lexicon.EMOTION_LOGIT_WORDS}
    )
    _check(ccfg)
    mc, params = model.config, model.params
    if word_ids is None:
        words = {e: tuple(tcfg.logit_words[e]) for e in emotional_prompts}
        word_ids = word_token_ids(model.tokenizer, words)
    readout = heads.make_readout(mc, vectors, word_ids, 0, ccfg.seed)
    tok = lambda texts: model.tokenize(  # noqa: E731
        list(texts), prepend_bos=tcfg.prepend_bos, max_len=tcfg.max_len
    )
    n_toks = tok(neutral_prompts)
    z_neutral = core.mean_z(mc, params, n_toks.ids, n_toks.mask)
    cands_by = {
        emo: core.candidate_heads(screen_rows, mc, emo, ccfg.measure, ccfg.kind, ccfg.n_candidates)
        for emo in emotional_prompts
    }
    swept, settings = _swept(cands_by), circuit_settings(ccfg)
    results = []
    for j, (emo, prompts) in enumerate(emotional_prompts.items()):
        e_toks = tok(prompts)
        target = heads.Target(readout, j, ccfg.measure)
        for mode in ccfg.modes:
            if mode == "ablation":
                z_ref = z_neutral if ccfg.kind == "mean" else jnp.zeros_like(z_neutral)
                effect = core.SetEffect(e_toks.ids, e_toks.mask, z_ref, target)
            else:
                z_ref = core.mean_z(mc, params, e_toks.ids, e_toks.mask)
                effect = core.SetEffect(n_toks.ids, n_toks.mask, z_ref, target)
            results.append(
                core.search_circuit(
                    mc, params, effect, cands_by[emo], settings, mode, ccfg.kind, swept
                )
            )
    write_circuits(out_dir, results, ccfg, model)
    return results


def circuit_rows(results: list[core.CircuitResult], ccfg, label: str) -> list[dict]:
    """One labelled row per (result, k): the circuits.csv table."""
    rows = []
    for r in results:
        vector = ccfg.vector_label if r.measure == "projection" else "logit words"
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
                    "vector": vector,
                    "seed": ccfg.seed,
                }
            )
    return rows


def _result_json(r: core.CircuitResult) -> dict:
    steps = [
        {
            "k": s.k,
            "heads": [list(h) for h in s.heads],
            "joint": s.joint,
            "sum_singles": s.sum_singles,
            "interaction": s.interaction,
            "random_sets": s.random,
        }
        for s in r.steps
    ]
    return {
        "mode": r.mode,
        "emotion": r.emotion,
        "measure": r.measure,
        "kind": r.kind,
        "candidates": [list(h) for h in r.candidates],
        "singles": {f"L{a}H{b}": v for (a, b), v in r.singles.items()},
        "steps": steps,
    }


def _plot(r: core.CircuitResult, label: str):
    """Joint effect vs k beside the sum of singles and the random-set band."""
    ks = np.array([s.k for s in r.steps])

    def band(f):
        return tuple(np.array([getattr(s, f)[x] for s in r.steps]) for x in ("value", "lo", "hi"))

    rand = tuple(np.array([s.random[x] for s in r.steps]) for x in ("mean", "lo", "hi"))
    return plots.line_with_band(
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


def write_circuits(out_dir, results: list[core.CircuitResult], ccfg, model) -> dict[str, Path]:
    """circuits.csv, circuits.json and circuit_<mode>_<emotion>.png; returns name -> path."""
    out = Path(out_dir)
    label = ccfg.model_label or model.config.name or model.config.family
    files = {
        "circuits_csv": artifacts.write_csv(
            out / "circuits.csv", circuit_rows(results, ccfg, label)
        )
    }
    files["circuits_json"] = artifacts.write_json(
        out / "circuits.json",
        {
            "what": "greedy/beam head sets; effect = m(clean) - m(set ablated) on the emotion's "
            "prompts (ablation) or m(set patched with the emotion's mean z) - m(clean) on "
            "neutral prompts (patching); interaction = joint - sum of single effects",
            "model": label,
            "config": ccfg.to_dict(),
            "results": [_result_json(r) for r in results],
        },
    )
    for r in results:
        name = f"circuit_{r.mode}_{r.emotion}"
        files[name] = artifacts.save_figure(out / f"{name}.png", _plot(r, label))
    return files
