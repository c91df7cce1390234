"""Emotion subspaces, principal angles between subspaces, and the random-subspace baseline.

A subspace is an orthonormal basis `[d, k]` (columns). Overlap of two subspaces is the mean of
cos^2 of their principal angles, in [0, 1]: 1 for identical subspaces, 0 for orthogonal ones.
Two independent uniformly random k-dim subspaces of R^d have expected overlap k/d (0.004 for
k=3, d=768): far below what anisotropic residual streams give, so compare an overlap with both
this expectation and a data-driven null (see alignment.shuffled_pairing_null).

`emotion_subspaces` reads one per layer out of an activations artifact.
"""

from __future__ import annotations

import numpy as np

from jaxcirc.core.stats import NullBand, summarise_null
from jaxcirc.core.vectors import emotion_class_vectors
from jaxcirc.data.activations import Activations


def orthonormalise(a, tol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis `[d, r]` of the column span of a `[d, k]` (rank-revealing via SVD)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"basis: need [d, k], got shape {a.shape}")
    u, s, _ = np.linalg.svd(a, full_matrices=False)
    rank = int(np.sum(s > tol * max(s.max(initial=0.0), 1e-300)))
    if rank == 0:
        raise ValueError("basis: all columns are zero; it spans no subspace")
    return u[:, :rank]


def emotion_subspace(x, k_dims: int, centre: bool = True) -> np.ndarray:
    """Top-`k_dims` principal directions of the rows of x, as an orthonormal basis `[d, k_dims]`.

    x is `[k, d]` class vectors or `[n, d]` class-conditional activations. With centre=True (the
    default) the row mean is subtracted first, so the basis spans the DIFFERENCES between rows
    (at most k-1 dims for k class vectors) and the shared stream offset is excluded; with
    centre=False the basis spans the rows themselves, offset included. Say which in every report.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"x: need [k, d] vectors or [n, d] activations, got shape {x.shape}")
    if centre:
        x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    rank = int(np.sum(s > 1e-10 * max(s.max(initial=0.0), 1e-300)))
    if not 1 <= k_dims <= rank:
        raise ValueError(
            f"k_dims: {k_dims} not in [1, rank={rank}] of the {'centred ' if centre else ''}rows"
        )
    return vt[:k_dims].T


def principal_angles(a, b) -> np.ndarray:
    """Principal angles (radians, ascending) between span(a) `[d, ka]` and span(b) `[d, kb]`.

    Inputs need not be orthonormal (they are orthonormalised); min(ka, kb) angles are returned.
    """
    qa, qb = orthonormalise(a), orthonormalise(b)
    if qa.shape[0] != qb.shape[0]:
        raise ValueError(f"a, b: bases live in different spaces, d={qa.shape[0]} vs {qb.shape[0]}")
    s = np.linalg.svd(qa.T @ qb, compute_uv=False)  # cosines, descending
    return np.arccos(np.clip(s, -1.0, 1.0))


def overlap(a, b) -> float:
    """Mean cos^2 of the principal angles between span(a) and span(b), in [0, 1]."""
    return float(np.mean(np.cos(principal_angles(a, b)) ** 2))


def random_overlap_expectation(k: int, d: int, k_b: int | None = None) -> float:
    """E[overlap] of independent uniformly random subspaces of R^d of dims k and k_b (default k).

    E||Qa^T Qb||_F^2 = k * k_b / d, averaged over min(k, k_b) angles: max(k, k_b) / d; k/d when
    the dims are equal.
    """
    k_b = k if k_b is None else k_b
    if not (1 <= k <= d and 1 <= k_b <= d):
        raise ValueError(f"k, k_b, d: need 1 <= k, k_b <= d, got k={k}, k_b={k_b}, d={d}")
    return max(k, k_b) / d


def random_overlap_null(k: int, d: int, n: int, seed: int, level: float = 0.95) -> NullBand:
    """Overlap of n pairs of independent uniformly random k-dim subspaces of R^d (sampled)."""
    if not 1 <= k <= d or n < 1:
        raise ValueError(f"k, d, n: need 1 <= k <= d and n >= 1, got k={k}, d={d}, n={n}")
    rng = np.random.default_rng(seed)
    # QR of a Gaussian matrix gives a Haar-uniform k-frame; batched over the n pairs.
    qa, _ = np.linalg.qr(rng.standard_normal((n, d, k)))
    qb, _ = np.linalg.qr(rng.standard_normal((n, d, k)))
    samples = np.sum((qa.swapaxes(-1, -2) @ qb) ** 2, axis=(-2, -1)) / k
    return summarise_null(
        samples, seed=seed, level=level, what=f"random {k}-dim subspaces in R^{d}"
    )


SUBSPACE_RTOL = 1e-6
"""A direction of the class-mean differences counts only if its singular value exceeds this
fraction of the largest: activations are float32, so anything smaller is rounding, not data."""


def difference_basis(means, k: int, rtol: float = SUBSPACE_RTOL) -> np.ndarray:
    """Orthonormal `[d, k_used]`: the top principal directions of class means `[c, d]` minus their
    mean, k_used = min(k, number of directions whose singular value exceeds rtol x the largest)
    (0 columns when the means are all equal)."""
    m = np.asarray(means, dtype=np.float64)
    _, sv, vt = np.linalg.svd(m - m.mean(axis=0), full_matrices=False)
    rank = int(np.sum(sv > rtol * max(sv.max(initial=0.0), 1e-300)))
    return vt[: min(k, rank)].T


def emotion_subspaces(
    acts: Activations, method: str, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per layer, the top-k principal directions of the differences between the four raw class
    means of `acts` (`vectors.emotion_class_vectors` by `method`).

    Returns (basis `[layer + 1, d_model, k]`, singular values `[layer + 1, 3]`, k_used
    `[layer + 1]`). Where the differences span fewer than k directions (e.g. Pythia's layer 0 at
    the last token: no position embedding, and most prompts end in the same token, so the class
    means differ in fewer directions), only the first k_used columns are a basis and the rest are
    zero; k_used = 0 means the classes do not differ at that layer.
    """
    means = emotion_class_vectors(acts, method, "raw")
    bases = np.zeros((means.shape[0], means.shape[2], k))
    svals, k_used = [], []
    for li, m in enumerate(means):
        sv = np.linalg.svd(m - m.mean(axis=0), compute_uv=False)[: len(m) - 1]
        rank = int(np.sum(sv > SUBSPACE_RTOL * max(sv.max(initial=0.0), 1e-300)))
        kk = min(k, rank)
        if kk:
            bases[li, :, :kk] = emotion_subspace(m, kk, centre=True)
        svals.append(sv)
        k_used.append(kk)
    return bases, np.stack(svals), np.array(k_used)
