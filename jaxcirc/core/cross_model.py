"""Carrying one model's emotion vectors into another through a linear map (the cross-model
patching phase): fit the map A -> B on neutral rows, map the vectors, and the null their cosine
with B's own vectors is read against.

A shift u in A's stream is u @ W in B's, since x_B ~ x_A W + b (`jaxcirc.core.alignment`). A map
of low effective rank sends every direction to similar ones, so a high cosine between a mapped
vector and B's own means little alone: `random_mapped_null` maps random A-directions through the
same W. The map is fit on the neutral prompts of a fit split and scored on the held-out neutral
prompts (split by prompt, `pairing.split_neutral`): `MapFit.r2_test`, beside the held-out R^2 of
maps refit on whole-prompt shuffled pairings (`MapFit.r2_test_null`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcirc.core import alignment
from jaxcirc.core.pairing import features, pairings, row_prompts, split_neutral
from jaxcirc.core.stats import percentile_band
from jaxcirc.data.activations import Activations


def cosine(a, b) -> float:
    """Cosine of two vectors `[d]`; 0 (not NaN) when one is zero."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


@dataclasses.dataclass(frozen=True)
class MapSettings:
    """How `fit_map` fits and scores the map: ridge = ridge_rel * ||X_A centred||_F^2 / d_A (one
    value means the same shrinkage at any layer scale); test_fraction of the neutral prompts
    held out by prompt (split seeded by `seed`); n_perm whole-prompt shuffled pairings for the
    held-out R^2 null, its central `level` band."""

    ridge_rel: float = 1.0
    test_fraction: float = 0.25
    seed: int = 0
    n_perm: int = 100
    level: float = 0.95


@dataclasses.dataclass(frozen=True)
class MapFit:
    """The map A -> B that is used, and how well it predicts B on held-out neutral prompts.

    r2_fit / r2_test: R^2 on the fit rows / on the held-out prompts' rows (pooled over B's dims,
    around the held-out mean: 0 = no better than that mean); r2_test_null: {"mean", "lo", "hi",
    "n", "seed", "what"} of maps refit on whole-prompt shuffled pairings.
    """

    map: alignment.LinearMap
    pairing: str
    layer_a: int
    layer_b: int
    n_fit_prompts: int
    n_test_prompts: int
    n_fit_rows: int
    n_test_rows: int
    r2_fit: float
    r2_test: float
    r2_test_null: dict
    ridge_rel: float


def fit_map(
    acts_a: Activations, acts_b: Activations, layer_a: int, layer_b: int, settings: MapSettings
) -> MapFit:
    """Linear map A -> B fit on the fit split of the neutral prompts at the given layers, rows
    paired as `pairing.pairings(..., "all_tokens")` gives first; scored on the held-out ones."""
    pairing = pairings(acts_a, acts_b, "all_tokens")[0]
    fit_p, test_p = split_neutral(acts_a.labels, settings.test_fraction, settings.seed)
    xa, xb = features(acts_a, pairing, layer_a, fit_p), features(acts_b, pairing, layer_b, fit_p)
    xat = features(acts_a, pairing, layer_a, test_p)
    xbt = features(acts_b, pairing, layer_b, test_p)
    xc = xa - xa.mean(0)
    ridge = float(settings.ridge_rel) * float((xc**2).sum()) / xa.shape[1]
    lin = alignment.fit_linear(xa, xb, ridge=ridge)
    s = alignment.AlignSettings(ridge=ridge, n_perm=settings.n_perm, seed=settings.seed)
    null = alignment.linear_r2_null_samples(
        xa, xb, xat, xbt, s, row_prompts(acts_a, pairing, fit_p)
    )
    lo, hi = percentile_band(null, settings.level)
    return MapFit(
        map=lin,
        pairing=pairing,
        layer_a=int(layer_a),
        layer_b=int(layer_b),
        n_fit_prompts=int(fit_p.size),
        n_test_prompts=int(test_p.size),
        n_fit_rows=int(xa.shape[0]),
        n_test_rows=int(xat.shape[0]),
        r2_fit=alignment.r2(lin, xa, xb),
        r2_test=alignment.r2(lin, xat, xbt),
        r2_test_null={
            "mean": float(null.mean()),
            "lo": float(lo),
            "hi": float(hi),
            "n": settings.n_perm,
            "seed": settings.seed,
            "what": "held-out R^2 of the map refit on shuffled pairings (whole prompts permuted)",
        },
        ridge_rel=float(settings.ridge_rel),
    )


def mapped_vectors(m: alignment.LinearMap, vecs_a: dict, layer_a: int) -> dict[str, np.ndarray]:
    """{emotion: `[d_B]`} = v_A[layer_a] @ W, for vecs_a {emotion: `[layer + 1, d_A]`}."""
    W = np.asarray(m.W)
    return {e: np.asarray(v[layer_a], np.float64) @ W for e, v in vecs_a.items()}


def random_mapped_null(
    m: alignment.LinearMap, d_a: int, target: np.ndarray, n: int, seed: int, level: float = 0.95
) -> dict:
    """Cosines between `target` `[d_B]` and n random isotropic A-directions mapped through W:
    {"mean", "lo", "hi" (the central `level` band), "n", "seed", "level"}."""
    W = np.asarray(m.W)
    r = np.random.default_rng(seed).standard_normal((n, d_a)) @ W
    c = r @ target / (np.linalg.norm(r, axis=1) * np.linalg.norm(target) + 1e-30)
    lo, hi = np.quantile(c, [(1 - level) / 2, (1 + level) / 2])
    return {
        "mean": float(c.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "n": n,
        "seed": seed,
        "level": level,
    }
