"""Multi-head circuits (the study's future work): search head sets for every emotion and mode and
write the tables. The math is `jaxcirc.core.circuits`; files: circuits.csv, circuits.json and
circuit_<mode>_<emotion>.png.

Selection-aware (`jaxcirc.core.circuits`): each emotion's prompts (ablation) or the neutral
prompts and the emotion's prompts their mean z comes from (patching) are split in two halves
(seeded); candidates and the search see the search half, every reported effect is measured on
the held-out half, and the control is the same search run on `n_null` null targets (random
unit directions for the projection; random-word logit differences for logit_diff), scored on
the held-out half the same way.

circuits.csv columns (one row per mode, emotion and k): joint / joint_lo / joint_hi (held-out
joint effect and CI), sum_singles / sum_lo / sum_hi, interaction / interaction_lo /
interaction_hi (held-out), search_joint (the set's effect on the search half, biased up by the
search), null_mean / null_lo / null_hi (the null searches' held-out joint effects: mean and
central band), p_vs_null ((1 + #null >= joint) / (1 + n_null)), null_interaction_lo / _hi,
n_null, n_search, n_held_out (prompts in each half), n_prompts (= n_held_out). The random head
set columns (random_sets_*) of earlier runs are gone: random sets are no control for a set
chosen as the best of many.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from jaxcirc.core import circuits as core
from jaxcirc.core import head_edits, heads
from jaxcirc.core.measures import WordIds, word_token_ids
from jaxcirc.data import lexicon
from jaxcirc.infra import artifacts
from jaxcirc.report import plots


def circuit_settings(ccfg: ml_collections.ConfigDict) -> core.CircuitSettings:
    """The `heads_circuits` section's search settings."""
    beam = core.BeamSettings(ccfg.k_max, ccfg.beam, heads.RowStrategy(ccfg.strategy, ccfg.chunk))
    return core.CircuitSettings(
        beam, ccfg.n_candidates, ccfg.n_null, ccfg.n_boot, ccfg.seed, ccfg.level, ccfg.set_chunk
    )


def _check(ccfg) -> None:
    for mode in ccfg.modes:
        if mode not in core.MODES:
            raise ValueError(f"mode {mode!r} unknown; use a subset of {core.MODES}")
    if ccfg.measure not in heads.MEASURES:
        raise ValueError(f"measure {ccfg.measure!r} unknown; use one of {heads.MEASURES}")
    if ccfg.kind not in heads.KINDS:
        raise ValueError(f"kind {ccfg.kind!r} unknown; use one of {heads.KINDS}")


def _halves(model, tcfg, texts: Sequence[str], seed) -> list:
    """The two halves (search, held-out) of `texts`, tokenised."""
    search, held = head_edits.split_halves(len(texts), seed)
    return [
        model.tokenize([texts[i] for i in idx], prepend_bos=tcfg.prepend_bos, max_len=tcfg.max_len)
        for idx in (search, held)
    ]


def _padded(toks, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) right-padded to `width` (masked): every prompt set of the search has one
    width, so each compiled sweep serves all of them (one compile, not one per half)."""
    pad = width - toks.ids.shape[1]
    return np.pad(toks.ids, ((0, 0), (0, pad))), np.pad(toks.mask, ((0, 0), (0, pad)))


def _effects(model, mode, halves, z_neutral, target, kind) -> tuple:
    """(search, held-out) `SetEffect`s of one mode: ablation on the emotion's halves (z_ref:
    the neutral mean z, or zeros); patching on the neutral halves, z_ref = the mean z over the
    emotion's prompts of the same half. halves: {"neutral"/"emotion": [(ids, mask)] x 2}."""
    mc, params = model.config, model.params
    if mode == "ablation":
        z_ref = z_neutral if kind == "mean" else np.zeros_like(z_neutral)
        return tuple(core.SetEffect(*t, z_ref, target) for t in halves["emotion"])
    return tuple(
        core.SetEffect(*n, core.mean_z(mc, params, *e), target)
        for n, e in zip(halves["neutral"], halves["emotion"], strict=True)
    )


def run_circuits(
    model,
    emotional_prompts: Mapping[str, Sequence[str]],
    neutral_prompts: Sequence[str],
    vectors: Mapping[str, Any],
    ccfg: ml_collections.ConfigDict,
    out_dir,
    word_ids: WordIds | None = None,
    tokenize_cfg: ml_collections.ConfigDict | None = None,
) -> list[core.CircuitResult]:
    """Search circuits for every emotion and mode (search half), score them and the null
    searches on the held-out half; write circuits.csv, circuits.json and a plot per (mode,
    emotion): held-out joint effect vs k beside the sum of singles and the null band.

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
    n_all = model.tokenize(
        list(neutral_prompts), prepend_bos=tcfg.prepend_bos, max_len=tcfg.max_len
    )
    z_neutral = np.asarray(core.mean_z(mc, params, n_all.ids, n_all.mask))
    settings = circuit_settings(ccfg)
    toks = {"neutral": _halves(model, tcfg, neutral_prompts, ccfg.seed)}
    for j, prompts in enumerate(emotional_prompts.values()):
        toks[j] = _halves(model, tcfg, prompts, (ccfg.seed, j + 1))
    width = max(t.ids.shape[1] for pair in toks.values() for t in pair)
    halves = {"neutral": [_padded(t, width) for t in toks["neutral"]]}
    results = []
    for j, emo in enumerate(emotional_prompts):
        halves["emotion"] = [_padded(t, width) for t in toks[j]]
        target = heads.Target(readout, j, ccfg.measure)
        null = core.null_targets(mc, readout, j, ccfg.measure, ccfg.n_null, ccfg.seed)
        for mode in ccfg.modes:
            search, held = _effects(model, mode, halves, z_neutral, target, ccfg.kind)
            kind = "emotion mean" if mode == "patching" else ccfg.kind
            labels = {"mode": mode, "emotion": emo, "measure": ccfg.measure, "kind": kind}
            results.append(core.search_circuit(mc, params, search, held, settings, labels, null))
    write_circuits(out_dir, results, ccfg, model)
    return results


def circuit_rows(results: list[core.CircuitResult], ccfg, label: str) -> list[dict]:
    """One labelled row per (result, k): the circuits.csv table (columns in the module doc)."""
    rows = []
    for r in results:
        vector = ccfg.vector_label if r.measure == "projection" else "logit words"
        for s in r.steps:
            row = {"model": label, "mode": r.mode, "emotion": r.emotion, "measure": r.measure}
            row.update(ablation=r.kind, k=s.k, heads=" ".join(f"L{a}H{b}" for a, b in s.heads))
            row.update(joint=s.joint["value"], joint_lo=s.joint["lo"], joint_hi=s.joint["hi"])
            row.update(sum_singles=s.sum_singles["value"])
            row.update(sum_lo=s.sum_singles["lo"], sum_hi=s.sum_singles["hi"])
            row.update(interaction=s.interaction["value"])
            row.update(interaction_lo=s.interaction["lo"], interaction_hi=s.interaction["hi"])
            row.update(search_joint=s.search_joint)
            row.update(null_mean=s.null["mean"], null_lo=s.null["lo"], null_hi=s.null["hi"])
            row.update(p_vs_null=s.null["p"])
            row.update(null_interaction_lo=s.null["interaction_lo"])
            row.update(null_interaction_hi=s.null["interaction_hi"], n_null=s.null["n"])
            row.update(n_search=r.split["n_search"], n_held_out=r.split["n_held_out"])
            row.update(n_prompts=s.joint["n"], vector=vector, seed=ccfg.seed)
            rows.append(row)
    return rows


def result_json(r: core.CircuitResult) -> dict:
    """One search as circuits.json holds it (and the phase summary)."""
    steps = [
        {
            "k": s.k,
            "heads": [list(h) for h in s.heads],
            "joint": s.joint,
            "sum_singles": s.sum_singles,
            "interaction": s.interaction,
            "search_joint": s.search_joint,
            "null": s.null,
        }
        for s in r.steps
    ]
    return {
        "mode": r.mode,
        "emotion": r.emotion,
        "measure": r.measure,
        "kind": r.kind,
        "candidates": [list(h) for h in r.candidates],
        "singles_held_out": {f"L{a}H{b}": v for (a, b), v in r.singles.items()},
        "split": r.split,
        "steps": steps,
    }


def _plot(r: core.CircuitResult, label: str):
    """Held-out joint effect vs k beside the sum of singles and the null searches' band."""
    ks = np.array([s.k for s in r.steps])

    def band(f):
        return tuple(np.array([getattr(s, f)[x] for s in r.steps]) for x in ("value", "lo", "hi"))

    curves = {"joint (set edited)": band("joint"), "sum of single effects": band("sum_singles")}
    if r.steps[0].null["n"]:
        null = tuple(np.array([s.null[x] for s in r.steps]) for x in ("mean", "lo", "hi"))
        curves["same search, null targets"] = null
    return plots.line_with_band(
        ks,
        curves,
        xlabel="heads in the set (k)",
        ylabel=f"{r.measure} effect, held-out half (n={r.split['n_held_out']})",
        title=f"{label}: {r.mode} circuit for {r.emotion} ({r.measure}, {r.kind})",
        dashed=("same search, null targets",),
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
            "what": "greedy/beam head sets found on a search half of the prompts, every effect "
            "measured on the held-out half; effect = m(clean) - m(set ablated) on the emotion's "
            "prompts (ablation) or m(set patched with the emotion's mean z) - m(clean) on "
            "neutral prompts (patching); interaction = joint - sum of single effects; null = the "
            "same search on random targets (random unit directions for the projection, random-"
            "word logit differences for logit_diff), scored the same way; p = (1 + #null >= "
            "joint) / (1 + n_null)",
            "model": label,
            "config": ccfg.to_dict(),
            "results": [result_json(r) for r in results],
        },
    )
    for r in results:
        name = f"circuit_{r.mode}_{r.emotion}"
        files[name] = artifacts.save_figure(out / f"{name}.png", _plot(r, label))
    return files
