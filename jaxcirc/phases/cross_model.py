"""Cross-model patching (the study's future work): does emotion transfer through the alignment map?

For every ordered pair of models (A -> B): fit the linear map A -> B on NEUTRAL activations at the
same relative depth (rows paired as in phase 6: per token when both models tokenise identically,
else per prompt), carry A's emotion vector through it (a shift u in A's stream is u @ W in B's,
since x_B ~ x_A W + b), and steer B with the mapped vector. Beside it, in the same batched sweep:
B's OWN emotion vector at that layer (the ceiling) and random directions of equal norm (the
control). Before any generation, the cosine between the mapped vector and B's own vector is
reported with its null: random directions of A mapped through the same W (a map of low effective
rank sends everything to similar directions, so a high raw cosine alone means little).

The map is fit on the fit split of the neutral prompts (`cross_model.test_fraction` held out BY
PROMPT, seeded by `cross_model.seed`), and the map that steers is that one: its held-out R^2 on
the held-out prompts' rows is reported beside the held-out R^2 of maps refit on `n_perm`
whole-prompt shuffled pairings (`jaxcirc.core.cross_model.fit_map`).

Files per pair under `<A>__to__<B>/`: `mapped/` (steering outputs: effects with CIs, random
controls, plots, samples) and `vectors.json` (cosines, nulls, layers, map settings, held-out
R^2). B's own-vector run does not depend on A, so it is run once per model, under `own__<B>/`.
The map, the mapped vectors and their null are `jaxcirc.core.cross_model`'s; this runner writes
and steers.

Summary fields (`summary["pairs"]["A -> B"]`, what `pair_vectors` returns plus the steering
runs): `layer_a`, `layer_b`, `pairing`, `n_fit_rows`, `n_fit_prompts`, `n_test_prompts`, `d_a`,
`n_over_d`, `ridge`, `ridge_rel`, `map_r2_fit`, `map_r2_test` (held-out) with
`map_r2_test_null` {mean, lo, hi, n, seed, what}; `cosines[emotion]`: `cos_mapped_vs_own` with
`null_random_A_directions_mapped` {mean, lo, hi, n, seed}, `beyond_null` (above the band's hi)
and `cos_raw_A_vs_own_B` (same width only); `random_init[emotion]` {per_draw, max,
above_random_init} (the cosine with B replaced by random-init copies of it, from
`Inputs.controls`) or None with `random_init_note`; `steer_mapped` / `steer_own`: the steering
summaries as `phases.steering.run_steering` returns them.

Two random-init networks fed the same tokens share the tokens' structure, so a mapped vector can
leave the random-direction null with nothing learnt (tests/phases/test_phase_cross_model.py);
the random-init copies are the control for that.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import ml_collections
import numpy as np

from jaxcirc.core.cross_model import (
    MapSettings,
    cosine,
    fit_map,
    mapped_vectors,
    random_mapped_null,
)
from jaxcirc.core.vectors import emotion_vectors
from jaxcirc.data.activations import Activations
from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts
from jaxcirc.phases import steering

NAME = "cross_model"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 3  # 3: null draws within rounding of the observed count as ties (stats.TIE_RTOL)

EMOTIONS = EMOTIONAL


def steer_config(cfg, layer: int) -> ml_collections.ConfigDict:
    sc = ml_collections.ConfigDict(cfg.steering.to_dict())
    sc.layers = (layer,)
    alphas = sorted(set(float(a) for a in cfg.cross_model.alphas) | {0.0})
    sc.alphas = tuple(alphas)
    sc.n_random_seeds = int(cfg.cross_model.n_random_seeds)
    return sc


def broadcast(vec: np.ndarray, n_layers: int) -> np.ndarray:
    """A [d] vector as the [n_layers, d] table steering takes (only the swept layer is read)."""
    return np.broadcast_to(np.asarray(vec, np.float32), (n_layers, vec.shape[-1])).copy()


def layers_at(ma, mb, relative_depth: float) -> tuple[int, int]:
    """(layer of A, layer of B) at `relative_depth`, each below its model's last block."""
    la = int(round(relative_depth * ma.config.n_layers))
    lb = int(round(relative_depth * mb.config.n_layers))
    return min(la, ma.config.n_layers - 1), min(lb, mb.config.n_layers - 1)


N_RANDOM_MAPPED = 200  # random A-directions sent through the map: the cosine's null


def _cosines(lin, vecs_a: dict, vecs_b: dict, mapped: dict, layers, seed: int, level) -> dict:
    """Per emotion: cos(mapped, B's own) beside random A-directions mapped through the same map,
    and (same width only) cos(A's raw vector, B's own)."""
    la, lb = layers
    d_a, d_b = lin.dA, lin.dB
    cos = {}
    for i, e in enumerate(EMOTIONS):
        own = np.asarray(vecs_b[e][lb], np.float64)
        c = cosine(mapped[e], own)
        null = random_mapped_null(lin, d_a, own, N_RANDOM_MAPPED, seed + i, level)
        cos[e] = {
            "cos_mapped_vs_own": c,
            "null_random_A_directions_mapped": null,
            "beyond_null": bool(c > null["hi"]),
            "cos_raw_A_vs_own_B": (
                cosine(np.asarray(vecs_a[e][la], np.float64), own) if d_a == d_b else None
            ),
        }
    return cos


def _settings(cm) -> MapSettings:
    return MapSettings(
        ridge_rel=float(cm.ridge),
        test_fraction=float(cm.test_fraction),
        seed=int(cm.seed),
        n_perm=int(cm.n_perm),
        level=float(cm.level),
    )


def _random_init(acts_a, controls: list, layers, cfg, cosines: dict) -> dict | None:
    """The same cosines with B replaced by each random-init copy of it (its own map and its own
    vectors): {emotion: {"per_draw": [...], "max", "above_random_init"}}; None without copies.
    Two networks fed the same tokens share the tokens' structure, so a mapped vector can leave
    the random-direction null for a random-init B too; only a cosine above every copy's says
    more. With one copy, p cannot go below 1/2: the draws are reported, not tested."""
    if not controls:
        return None
    method, centre = cfg.steering.vector_method, cfg.steering.vector_centre
    vecs_a = emotion_vectors(acts_a, method, centre)
    per = {e: [] for e in EMOTIONS}
    for c in controls:
        fit = fit_map(acts_a, c, *layers, _settings(cfg.cross_model))
        mapped = mapped_vectors(fit.map, vecs_a, layers[0])
        own = emotion_vectors(c, method, centre)
        for e in EMOTIONS:
            per[e].append(cosine(mapped[e], np.asarray(own[e][layers[1]], np.float64)))
    return {
        e: {
            "per_draw": v,
            "max": max(v),
            "above_random_init": bool(cosines[e]["cos_mapped_vs_own"] > max(v)),
        }
        for e, v in per.items()
    }


def pair_vectors(acts_a, acts_b, layers: tuple[int, int], cfg, controls=()) -> tuple[dict, dict]:
    """Everything of one ordered pair A -> B before any steering: the map fit on the neutral fit
    prompts at layers = (layer of A, layer of B), its held-out R^2 and null, A's emotion vectors
    mapped through it and their cosines with B's own, and (given random-init copies of B in
    `controls`) the same cosines with B replaced by each copy. cfg: the study config (sections
    cross_model, steering). Returns (info for vectors.json and the summary, {emotion: mapped
    vector `[d_B]`})."""
    method, centre = cfg.steering.vector_method, cfg.steering.vector_centre
    la, lb = layers
    settings = _settings(cfg.cross_model)
    fit = fit_map(acts_a, acts_b, la, lb, settings)
    vecs_a = emotion_vectors(acts_a, method, centre)
    vecs_b = emotion_vectors(acts_b, method, centre)
    mapped = mapped_vectors(fit.map, vecs_a, la)
    cosines = _cosines(fit.map, vecs_a, vecs_b, mapped, layers, settings.seed, settings.level)
    info = {
        "model_a": acts_a.model_label,
        "model_b": acts_b.model_label,
        "layer_a": la,
        "layer_b": lb,
        "pairing": fit.pairing,
        "n_fit_rows": fit.n_fit_rows,
        "n_test_rows": fit.n_test_rows,
        "n_fit_prompts": fit.n_fit_prompts,
        "n_test_prompts": fit.n_test_prompts,
        "d_a": int(fit.map.dA),
        "n_over_d": float(fit.map.n / fit.map.dA),
        "ridge": float(fit.map.ridge),
        "ridge_rel": fit.ridge_rel,
        "map_r2_fit": fit.r2_fit,
        "map_r2_test": fit.r2_test,
        "map_r2_test_null": fit.r2_test_null,
        "map_r2_what": "R^2 of the map that steers, on the rows of the held-out neutral prompts "
        "(split by prompt); null: maps refit on shuffled pairings, whole prompts permuted",
        "cosines": cosines,
        "random_init": _random_init(acts_a, list(controls), layers, cfg, cosines),
        "random_init_note": None
        if controls
        else "no random-init control was run (cross_model's Inputs.controls was empty)",
    }
    return info, mapped


def _header(cfg) -> dict:
    """The summary's description of the run; "pairs" is filled per ordered pair."""
    return {
        "what": "steering model B with model A's emotion vector mapped through a linear map fit "
        "on neutral activations (A -> B), vs B's own vector and random directions of equal norm",
        "vector_method": cfg.steering.vector_method,
        "vector_centre": cfg.steering.vector_centre,
        "relative_depth": float(cfg.cross_model.relative_depth),
        "ridge_rel": float(cfg.cross_model.ridge),
        "test_fraction": float(cfg.cross_model.test_fraction),
        "pairs": {},
    }


def run_cross_model(
    models: dict, acts: dict, prompts: list[str], cfg, out_dir, controls: dict | None = None
) -> dict:
    """Steer each model with every other model's mapped emotion vectors; see module docstring.

    models: {label: LoadedModel}; acts: {label: `jaxcirc.data.activations.Activations`} (the
    phase-2 activations); prompts: neutral prompts to steer; cfg: the study config (sections
    cross_model, steering).
    """
    cm, method, centre = cfg.cross_model, cfg.steering.vector_method, cfg.steering.vector_centre
    out = Path(out_dir)
    summary = _header(cfg)
    own_runs = {}  # B -> its own-vector steering summary (shared by every A -> B)
    for a, b in itertools.permutations(list(acts), 2):
        ma, mb = models[a], models[b]
        la, lb = layers_at(ma, mb, cm.relative_depth)
        info, mapped = pair_vectors(acts[a], acts[b], (la, lb), cfg, (controls or {}).get(b, ()))
        info["model_a"], info["model_b"] = a, b
        vecs_b = emotion_vectors(acts[b], method, centre)
        pair_dir = out / f"{artifacts.slug(a)}__to__{artifacts.slug(b)}"
        artifacts.write_json(pair_dir / "vectors.json", info)
        sc, n_b = steer_config(cfg, lb), mb.config.n_layers
        (pair_dir / "mapped").mkdir(parents=True, exist_ok=True)
        info["steer_mapped"] = steering.run_steering(
            mb,
            prompts,
            {e: broadcast(mapped[e], n_b) for e in EMOTIONS},
            sc,
            pair_dir / "mapped",
            label=f"neutral, vectors from {a}",
        )
        if b not in own_runs:
            own_dir = out / f"own__{artifacts.slug(b)}"
            own_dir.mkdir(parents=True, exist_ok=True)
            own_tab = {e: broadcast(vecs_b[e][lb], n_b) for e in EMOTIONS}
            own_runs[b] = steering.run_steering(
                mb, prompts, own_tab, sc, own_dir, label=f"neutral, {b}'s own vectors"
            )
        info["steer_own"] = own_runs[b]
        info["own_dir"] = f"own__{artifacts.slug(b)}"
        summary["pairs"][f"{a} -> {b}"] = info
    return summary


@dataclasses.dataclass(frozen=True)
class Inputs:
    """models: {label: LoadedModel}; acts: {label: its activations (phase 2)}, the models to
    pair; prompts: the neutral prompts to steer."""

    models: dict
    acts: dict[str, Activations]
    prompts: list[str]
    # {model label: [activations of random-init copies of it]}: the same as alignment's
    # Inputs.controls (optional; empty = no random-init control, the summary says so).
    controls: dict[str, list[Activations]] = dataclasses.field(default_factory=dict)


def run(inputs: Inputs, cfg, out_dir: str | Path) -> dict:
    """The phase behind the runner interface: `run_cross_model` with `cfg` holding the
    cross_model and steering sections."""
    return run_cross_model(
        inputs.models, inputs.acts, inputs.prompts, cfg, out_dir, controls=inputs.controls
    )
