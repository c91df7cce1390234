"""Carrying one model's emotion vectors into another through a linear map (the cross-model
patching phase): fit the map A -> B on neutral rows, map the vectors, and the null their cosine
with B's own vectors is read against.

A shift u in A's stream is u @ W in B's, since x_B ~ x_A W + b (`jaxcirc.core.alignment`). A map
of low effective rank sends every direction to similar ones, so a high cosine between a mapped
vector and B's own means little alone: `random_mapped_null` maps random A-directions through the
same W.
"""

from __future__ import annotations

import numpy as np

from jaxcirc.core import alignment
from jaxcirc.core.pairing import features, pairings
from jaxcirc.data.activations import Activations
from jaxcirc.data.emotions import NEUTRAL_INDEX


def cosine(a, b) -> float:
    """Cosine of two vectors `[d]`; 0 (not NaN) when one is zero."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def fit_map(
    acts_a: Activations, acts_b: Activations, layer_a: int, layer_b: int, ridge_rel: float
) -> tuple[alignment.LinearMap, str]:
    """Linear map A -> B fit on every neutral prompt's rows at the given layers.

    Returns (LinearMap, pairing name; rows paired as `pairing.pairings(..., "all_tokens")`
    gives first). ridge = ridge_rel * ||X_A centred||_F^2 / d_A, so one value means the same
    shrinkage at any layer scale.
    """
    pairing = pairings(acts_a, acts_b, "all_tokens")[0]
    idx = np.flatnonzero(acts_a.labels == NEUTRAL_INDEX)
    xa = features(acts_a, pairing, layer_a, idx)
    xb = features(acts_b, pairing, layer_b, idx)
    xc = xa - xa.mean(0)
    ridge = float(ridge_rel) * float((xc**2).sum()) / xa.shape[1]
    return alignment.fit_linear(xa, xb, ridge=ridge), pairing


def mapped_vectors(m: alignment.LinearMap, vecs_a: dict, layer_a: int) -> dict[str, np.ndarray]:
    """{emotion: `[d_B]`} = v_A[layer_a] @ W, for vecs_a {emotion: `[layer + 1, d_A]`}."""
    W = np.asarray(m.W)
    return {e: np.asarray(v[layer_a], np.float64) @ W for e, v in vecs_a.items()}


def random_mapped_null(
    m: alignment.LinearMap, d_a: int, target: np.ndarray, n: int, seed: int, level: float = 0.95
) -> dict:
    """Cosines between `target` `[d_B]` and n random isotropic A-directions mapped through W:
    {"mean", "lo", "hi" (the central `level` band), "n", "seed"}."""
    W = np.asarray(m.W)
    r = np.random.default_rng(seed).standard_normal((n, d_a)) @ W
    c = r @ target / (np.linalg.norm(r, axis=1) * np.linalg.norm(target) + 1e-30)
    lo, hi = np.quantile(c, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(c.mean()), "lo": float(lo), "hi": float(hi), "n": n, "seed": seed}
