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
run does not depend on A, so it is run once per model, under `own__<B>/`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import ml_collections
import numpy as np

from jaxcirc.core import alignment
from jaxcirc.data import dataset
from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts
from jaxcirc.phases import steering
from jaxcirc.phases.alignment import features, pairings
from jaxcirc.phases.vectors import emotion_vectors

NEUTRAL = dataset.EMOTIONS.index("neutral")
EMOTIONS = EMOTIONAL


def _cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def fit_map(acts_a, acts_b, layer_a: int, layer_b: int, ridge_rel: float):
    """Linear map A -> B fit on every neutral prompt's rows at the given layers.

    Returns (LinearMap, pairing name). ridge = ridge_rel * ||X_A centred||_F^2 / d_A, so one
    value means the same shrinkage at any layer scale.
    """
    pairing = pairings(acts_a, acts_b, "all_tokens")[0]
    idx = np.flatnonzero(acts_a.labels == NEUTRAL)
    xa = features(acts_a, pairing, layer_a, idx)
    xb = features(acts_b, pairing, layer_b, idx)
    xc = xa - xa.mean(0)
    ridge = float(ridge_rel) * float((xc**2).sum()) / xa.shape[1]
    return alignment.fit_linear(xa, xb, ridge=ridge), pairing


def mapped_vectors(m, vecs_a: dict, layer_a: int) -> dict[str, np.ndarray]:
    """{emotion: [d_B]} = v_A[layer_a] @ W."""
    W = np.asarray(m.W)
    return {e: np.asarray(v[layer_a], np.float64) @ W for e, v in vecs_a.items()}


def random_mapped_null(m, d_a: int, target: np.ndarray, n: int, seed: int, level: float = 0.95):
    """Cosines between `target` and random isotropic A-directions mapped through W."""
    W = np.asarray(m.W)
    r = np.random.default_rng(seed).standard_normal((n, d_a)) @ W
    c = r @ target / (np.linalg.norm(r, axis=1) * np.linalg.norm(target) + 1e-30)
    lo, hi = np.quantile(c, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(c.mean()), "lo": float(lo), "hi": float(hi), "n": n, "seed": seed}


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


def run_cross_model(models: dict, acts: dict, prompts: list[str], cfg, out_dir) -> dict:
    """Steer each model with every other model's mapped emotion vectors; see module docstring.

    models: {label: LoadedModel}; acts: {label: extract.Activations} (the phase-2 activations);
    prompts: neutral prompts to steer; cfg: the study config (sections cross_model, steering).
    """
    cm = cfg.cross_model
    out = Path(out_dir)
    summary = {
        "what": "steering model B with model A's emotion vector mapped through a linear map fit "
        "on neutral activations (A -> B), vs B's own vector and random directions of equal norm",
        "vector_method": cfg.steering.vector_method,
        "vector_centre": cfg.steering.vector_centre,
        "relative_depth": float(cm.relative_depth),
        "ridge_rel": float(cm.ridge),
        "pairs": {},
    }
    labels = list(acts)
    own_runs = {}  # B -> its own-vector steering summary (shared by every A -> B)
    for a, b in itertools.permutations(labels, 2):
        ma, mb = models[a], models[b]
        la = int(round(cm.relative_depth * ma.config.n_layers))
        lb = int(round(cm.relative_depth * mb.config.n_layers))
        lb = min(lb, mb.config.n_layers - 1)
        la = min(la, ma.config.n_layers - 1)
        lin, pairing = fit_map(acts[a], acts[b], la, lb, cm.ridge)
        vecs_a = emotion_vectors(acts[a], cfg.steering.vector_method, cfg.steering.vector_centre)
        vecs_b = emotion_vectors(acts[b], cfg.steering.vector_method, cfg.steering.vector_centre)
        mapped = mapped_vectors(lin, vecs_a, la)
        pair_dir = out / f"{artifacts.slug(a)}__to__{artifacts.slug(b)}"
        cos = {}
        for i, e in enumerate(EMOTIONS):
            own = np.asarray(vecs_b[e][lb], np.float64)
            cos[e] = {
                "cos_mapped_vs_own": _cos(mapped[e], own),
                "null_random_A_directions_mapped": random_mapped_null(
                    lin, ma.config.d_model, own, 200, int(cm.seed) + i
                ),
                "cos_raw_A_vs_own_B": (
                    _cos(np.asarray(vecs_a[e][la], np.float64), own)
                    if ma.config.d_model == mb.config.d_model
                    else None
                ),
            }
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
            "cosines": cos,
        }
        artifacts.write_json(pair_dir / "vectors.json", info)
        sc = _steer_cfg(cfg, lb)
        n_b = mb.config.n_layers
        mapped_tab = {e: _broadcast(mapped[e], n_b) for e in EMOTIONS}
        own_tab = {e: _broadcast(vecs_b[e][lb], n_b) for e in EMOTIONS}
        (pair_dir / "mapped").mkdir(parents=True, exist_ok=True)
        info["steer_mapped"] = steering.run_steering(
            mb, prompts, mapped_tab, sc, pair_dir / "mapped", label=f"neutral, vectors from {a}"
        )
        if b not in own_runs:
            own_dir = out / f"own__{artifacts.slug(b)}"
            own_dir.mkdir(parents=True, exist_ok=True)
            own_runs[b] = steering.run_steering(
                mb, prompts, own_tab, sc, own_dir, label=f"neutral, {b}'s own vectors"
            )
        info["steer_own"] = own_runs[b]
        info["own_dir"] = f"own__{artifacts.slug(b)}"
        summary["pairs"][f"{a} -> {b}"] = info
    return summary
