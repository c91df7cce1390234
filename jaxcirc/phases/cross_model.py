"""Cross-model patching (the study's future work): does emotion transfer through the alignment map?

For every ordered pair of models (A -> B): fit the linear map A -> B on NEUTRAL activations at the
same relative depth (rows paired as in phase 6: per token when both models tokenise identically,
else per prompt), carry A's emotion vector through it (a shift u in A's stream is u @ W in B's,
since x_B ~ x_A W + b), and steer B with the mapped vector. Beside it, in the same batched sweep:
B's OWN emotion vector at that layer (the ceiling) and random directions of equal norm (the
control). Before any generation, the cosine between the mapped vector and B's own vector is
reported with its null: random directions of A mapped through the same W (a map of low effective
rank sends everything to similar directions, so a high raw cosine alone means little).

Files per pair under `<A>__to__<B>/`: `mapped/` (steering outputs: effects with CIs, random
controls, plots, samples) and `vectors.json` (cosines, nulls, layers, map settings). B's own-vector
run does not depend on A, so it is run once per model, under `own__<B>/`. The map, the mapped
vectors and their null are `jaxcirc.core.cross_model`'s; this runner writes and steers.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import ml_collections
import numpy as np

from jaxcirc.core.cross_model import cosine, fit_map, mapped_vectors, random_mapped_null
from jaxcirc.core.vectors import emotion_vectors
from jaxcirc.data.activations import Activations
from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts
from jaxcirc.phases import steering

NAME = "cross_model"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 1

EMOTIONS = EMOTIONAL


def _steer_cfg(cfg, layer: int) -> ml_collections.ConfigDict:
    sc = ml_collections.ConfigDict(cfg.steering.to_dict())
    sc.layers = (layer,)
    alphas = sorted(set(float(a) for a in cfg.cross_model.alphas) | {0.0})
    sc.alphas = tuple(alphas)
    sc.n_random_seeds = int(cfg.cross_model.n_random_seeds)
    return sc


def _broadcast(vec: np.ndarray, n_layers: int) -> np.ndarray:
    """A [d] vector as the [n_layers, d] table steering takes (only the swept layer is read)."""
    return np.broadcast_to(np.asarray(vec, np.float32), (n_layers, vec.shape[-1])).copy()


def _layers(ma, mb, relative_depth: float) -> tuple[int, int]:
    """(layer of A, layer of B) at `relative_depth`, each below its model's last block."""
    la = int(round(relative_depth * ma.config.n_layers))
    lb = int(round(relative_depth * mb.config.n_layers))
    return min(la, ma.config.n_layers - 1), min(lb, mb.config.n_layers - 1)


def _cosines(lin, vecs_a: dict, vecs_b: dict, mapped: dict, layers, d_models, seed: int) -> dict:
    """Per emotion: cos(mapped, B's own) beside random A-directions mapped through the same map,
    and (same width only) cos(A's raw vector, B's own)."""
    (la, lb), (d_a, d_b) = layers, d_models
    cos = {}
    for i, e in enumerate(EMOTIONS):
        own = np.asarray(vecs_b[e][lb], np.float64)
        cos[e] = {
            "cos_mapped_vs_own": cosine(mapped[e], own),
            "null_random_A_directions_mapped": random_mapped_null(lin, d_a, own, 200, seed + i),
            "cos_raw_A_vs_own_B": (
                cosine(np.asarray(vecs_a[e][la], np.float64), own) if d_a == d_b else None
            ),
        }
    return cos


def _header(cfg) -> dict:
    """The summary's description of the run; "pairs" is filled per ordered pair."""
    return {
        "what": "steering model B with model A's emotion vector mapped through a linear map fit "
        "on neutral activations (A -> B), vs B's own vector and random directions of equal norm",
        "vector_method": cfg.steering.vector_method,
        "vector_centre": cfg.steering.vector_centre,
        "relative_depth": float(cfg.cross_model.relative_depth),
        "ridge_rel": float(cfg.cross_model.ridge),
        "pairs": {},
    }


def run_cross_model(models: dict, acts: dict, prompts: list[str], cfg, out_dir) -> dict:
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
        la, lb = _layers(ma, mb, cm.relative_depth)
        lin, pairing = fit_map(acts[a], acts[b], la, lb, cm.ridge)
        vecs_a = emotion_vectors(acts[a], method, centre)
        vecs_b = emotion_vectors(acts[b], method, centre)
        mapped = mapped_vectors(lin, vecs_a, la)
        pair_dir = out / f"{artifacts.slug(a)}__to__{artifacts.slug(b)}"
        d_models = (ma.config.d_model, mb.config.d_model)
        info = {
            "model_a": a,
            "model_b": b,
            "layer_a": la,
            "layer_b": lb,
            "pairing": pairing,
            "n_fit_rows": int(lin.n),
            "d_a": int(lin.dA),
            "n_over_d": float(lin.n / lin.dA),
            "ridge": float(lin.ridge),
            "cosines": _cosines(lin, vecs_a, vecs_b, mapped, (la, lb), d_models, int(cm.seed)),
        }
        artifacts.write_json(pair_dir / "vectors.json", info)
        sc, n_b = _steer_cfg(cfg, lb), mb.config.n_layers
        (pair_dir / "mapped").mkdir(parents=True, exist_ok=True)
        info["steer_mapped"] = steering.run_steering(
            mb,
            prompts,
            {e: _broadcast(mapped[e], n_b) for e in EMOTIONS},
            sc,
            pair_dir / "mapped",
            label=f"neutral, vectors from {a}",
        )
        if b not in own_runs:
            own_dir = out / f"own__{artifacts.slug(b)}"
            own_dir.mkdir(parents=True, exist_ok=True)
            own_tab = {e: _broadcast(vecs_b[e][lb], n_b) for e in EMOTIONS}
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


def run(inputs: Inputs, cfg, out_dir: str | Path) -> dict:
    """The phase behind the runner interface: `run_cross_model` with `cfg` holding the
    cross_model and steering sections."""
    return run_cross_model(inputs.models, inputs.acts, inputs.prompts, cfg, out_dir)
