"""Cross-model alignment (study phase 6): map model A's activations onto model B's, then compare
emotion subspaces through the map; every figure with a held-out fit and a null.

Convention: rows are samples, x_B ~ x_A @ W + b with W `[dA, dB]`. A direction u (a column in
A's space) therefore maps to W^T u in B's space; a subspace span(basis_A) maps to
span(W^T basis_A) (the intercept moves points, not directions).

The study fits the map on NEUTRAL activations (same prompts through both models) and then
compares emotion subspaces. With n prompts in d dimensions and n <= d, the centred least-squares
map interpolates the fit data exactly (rank n - 1 <= d), so it can carry almost any subspace onto
almost any other: overlap after mapping is then not evidence of shared structure. Hence the
held-out R^2, the ridge strength, n/d, and `shuffled_pairing_null` (the same map refit on
row-shuffled pairings, which destroys the prompt correspondence and keeps everything else) beside
every overlap figure.

Nulls permute WHOLE PROMPTS, never single rows: with per-token rows, the tokens of one prompt
are not exchangeable with another prompt's (they share its context and positions), so
`prompt_permutations` sends every row of a prompt to the row at the same position of another
prompt with as many rows (prompts are permuted among those of equal length; a prompt alone in
its length moves nowhere, which only makes the null harder to beat). With one row per prompt this
is the plain row permutation. Such a null still cannot tell a network that has learnt something
from any network fed the same tokens (a randomly initialised one included): both encode the
tokens, so any true pairing beats a shuffled one. That needs a random-init control:
`figures` of the same rows with model B replaced by a random-init copy of it (the phase's
`controls`).

"Angle improvement" (the study reports +0.84..0.87 beside an overlap ~0.99 after mapping and a
raw overlap 0.13-0.15, i.e. 0.99 - 0.14) is taken here as the INCREASE IN MEAN cos^2 of the
principal angles, overlap_after - overlap_before (`AngleChange.delta_cos2`). The decrease of the
mean principal angle in radians is reported beside it (`delta_angle_rad`). "Before" compares the
bases in raw coordinates and needs dA == dB.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np

from jaxcirc.core.stats import (
    NullBand,
    permutation_pvalue,
    stratified_counts,
    summarise_null,
    to_jsonable,
)
from jaxcirc.core.subspace import (
    difference_basis,
    orthonormalise,
    overlap,
    principal_angles,
    random_overlap_expectation,
    random_overlap_null,
)
from jaxcirc.core.vectors import weighted_class_means


@dataclasses.dataclass(frozen=True)
class LinearMap:
    """x_B ~ x_A @ W + b. kind "linear" (ridge least squares) or "procrustes" (W = scale * R)."""

    W: np.ndarray  # [dA, dB]
    b: np.ndarray  # [dB]
    ridge: float
    n: int
    dA: int
    dB: int
    kind: str = "linear"
    scale: float = 1.0

    @property
    def R(self) -> np.ndarray:
        """The (semi-)orthogonal part of a Procrustes map, W / scale."""
        return self.W / self.scale


@dataclasses.dataclass(frozen=True)
class AlignSettings:
    """How `align` and `shuffled_pairing_null` fit the maps and draw their nulls."""

    ridge: float = 0.0  # penalty on W of the linear map (absolute: scale it to the data yourself)
    n_perm: int = 100  # shuffled pairings (and CKA row permutations) per null
    seed: int = 0  # of every permutation
    level: float = 0.95  # central band of every null
    procrustes_scale: bool = True  # Procrustes W = s R with s fitted (else s = 1)


def _pair(xa, xb, name="XA, XB"):
    xa = np.asarray(xa, dtype=np.float64)
    xb = np.asarray(xb, dtype=np.float64)
    if xa.ndim != 2 or xb.ndim != 2:
        raise ValueError(f"{name}: need [n, dA] and [n, dB], got {xa.shape} and {xb.shape}")
    if xa.shape[0] != xb.shape[0]:
        raise ValueError(f"{name}: row counts differ ({xa.shape[0]} vs {xb.shape[0]}); pair rows")
    if xa.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 paired rows, got {xa.shape[0]}")
    return xa, xb


def _ridge_operator(xac, ridge: float) -> np.ndarray:
    """op `[dA, n]` with W = op @ XBc: (XAc^T XAc + ridge I)^+ XAc^T, via SVD (min-norm if ridge=0)."""
    u, s, vt = np.linalg.svd(xac, full_matrices=False)
    if ridge > 0:
        f = s / (s**2 + ridge)
    else:
        cutoff = max(xac.shape) * np.finfo(np.float64).eps * s.max(initial=0.0)
        f = np.where(s > cutoff, 1.0 / np.where(s > cutoff, s, 1.0), 0.0)
    return (vt.T * f) @ u.T


def fit_linear(xa, xb, ridge: float = 0.0) -> LinearMap:
    """Least squares with intercept, ridge penalty on W only: XA `[n, dA]`, XB `[n, dB]`.

    Solved on centred data by SVD (stable when n < d; ridge=0 then gives the minimum-norm
    interpolating map). b = mean_B - mean_A @ W.
    """
    xa, xb = _pair(xa, xb)
    if ridge < 0:
        raise ValueError(f"ridge: {ridge} < 0; use ridge >= 0")
    ma, mb = xa.mean(axis=0), xb.mean(axis=0)
    w = _ridge_operator(xa - ma, ridge) @ (xb - mb)
    return LinearMap(w, mb - ma @ w, float(ridge), xa.shape[0], xa.shape[1], xb.shape[1])


# Singular values of the cross-covariance XAc^T XBc at or below this fraction of the largest
# count as zero. With n samples the centred cross-covariance has rank at most n - 1; when that is
# below min(dA, dB), U V^T's columns past the rank are whatever the SVD's rounding makes of a
# null space: a 1e-7 change in the inputs (a sharded matmul summing in another order) moved a
# mapped overlap by 2% (n=52, d=64, measured 2026-12-01). Those directions are left out (mapped
# to zero), as the linear map's minimum-norm solution leaves them out.
RANK_RTOL = 1e-9


def procrustes_rotation(u, sv, vt) -> np.ndarray:
    """R `[..., dA, dB]` = U V^T over the singular directions the data determine (singular value
    above RANK_RTOL x the largest), from the SVD u `[..., dA, r]`, sv `[..., r]`, vt
    `[..., r, dB]` of the centred cross-covariance. Full rank: the orthogonal Procrustes
    rotation; rank-deficient (n - 1 < min(dA, dB)): the partial isometry on the fitted span,
    unique where the full completion is not."""
    keep = sv > RANK_RTOL * sv[..., :1]
    return (u * keep[..., None, :]) @ vt


def fit_procrustes(xa, xb, scale: bool = True) -> LinearMap:
    """Orthogonal Procrustes on centred data: W = s R, R `[dA, dB]` with R^T R = I (dA >= dB) or
    R R^T = I (dA < dB) when the data determine it (n - 1 >= min(dA, dB)); with fewer samples,
    the partial isometry on the span they fit (`procrustes_rotation`). s = tr(Sigma)/||XAc||_F^2
    if scale else 1."""
    xa, xb = _pair(xa, xb)
    ma, mb = xa.mean(axis=0), xb.mean(axis=0)
    xac = xa - ma
    u, sv, vt = np.linalg.svd(xac.T @ (xb - mb), full_matrices=False)
    r = procrustes_rotation(u, sv, vt)
    s = float(sv.sum() / np.sum(xac**2)) if scale else 1.0
    w = s * r
    return LinearMap(w, mb - ma @ w, 0.0, xa.shape[0], xa.shape[1], xb.shape[1], "procrustes", s)


def apply_map(m: LinearMap, xa) -> np.ndarray:
    """XA `[n, dA]` -> predicted XB `[n, dB]`."""
    xa = np.asarray(xa, dtype=np.float64)
    if xa.ndim != 2 or xa.shape[1] != m.dA:
        raise ValueError(f"xa: need [n, {m.dA}], got shape {xa.shape}")
    return xa @ m.W + m.b


def r2(m: LinearMap, xa_test, xb_test) -> float:
    """Held-out R^2 = 1 - SSE/SST pooled over all B dims; SST around the TEST mean of XB.

    0 = no better than predicting the test mean; negative = worse.
    """
    xa, xb = _pair(xa_test, xb_test, "xa_test, xb_test")
    sse = np.sum((xb - apply_map(m, xa)) ** 2)
    sst = np.sum((xb - xb.mean(axis=0)) ** 2)
    return float(1.0 - sse / sst)


def mapped_subspace_overlap(m: LinearMap, basis_a, basis_b) -> float:
    """overlap(orth(W^T basis_A), basis_B): mean cos^2 of principal angles in B's space."""
    basis_a = np.asarray(basis_a, dtype=np.float64)
    if basis_a.ndim != 2 or basis_a.shape[0] != m.dA:
        raise ValueError(f"basis_a: need [{m.dA}, k], got shape {basis_a.shape}")
    return overlap(orthonormalise(m.W.T @ basis_a), basis_b)


@dataclasses.dataclass(frozen=True)
class AngleChange:
    """Subspace comparison before (raw coordinates) and after mapping A's basis through W.

    delta_cos2 = overlap_after - overlap_before (mean cos^2 of principal angles; this module's
    reading of the study's "angle improvement"). delta_angle_rad = mean angle before - after
    (radians; positive = the subspaces got closer).
    """

    overlap_before: float
    overlap_after: float
    delta_cos2: float
    mean_angle_before_rad: float
    mean_angle_after_rad: float
    delta_angle_rad: float


def angle_improvement(m: LinearMap, basis_a, basis_b) -> AngleChange:
    """How much mapping A's basis through W brings it closer to B's basis (needs dA == dB)."""
    if m.dA != m.dB:
        raise ValueError(
            f"map: 'before' compares raw coordinates and needs dA == dB, got {m.dA}, {m.dB}"
        )
    before = principal_angles(basis_a, basis_b)
    after = principal_angles(orthonormalise(m.W.T @ np.asarray(basis_a, np.float64)), basis_b)
    ob, oa = float(np.mean(np.cos(before) ** 2)), float(np.mean(np.cos(after) ** 2))
    return AngleChange(
        overlap_before=ob,
        overlap_after=oa,
        delta_cos2=oa - ob,
        mean_angle_before_rad=float(before.mean()),
        mean_angle_after_rad=float(after.mean()),
        delta_angle_rad=float(before.mean() - after.mean()),
    )


# --------------------------------------------------------------------------------------------
# CKA
# --------------------------------------------------------------------------------------------


def _centred_grams(xa, xb):
    xa, xb = _pair(xa, xb)
    xa = xa - xa.mean(axis=0)
    xb = xb - xb.mean(axis=0)
    return xa @ xa.T, xb @ xb.T


def linear_cka(xa, xb) -> float:
    """Linear CKA (Kornblith et al. 2019) of paired rows XA `[n, dA]`, XB `[n, dB]`, in [0, 1].

    Invariant to rotations and isotropic scaling of either side; 1 for XB = XA R.
    """
    ka, kb = _centred_grams(xa, xb)
    denom = np.linalg.norm(ka) * np.linalg.norm(kb)
    if denom == 0:
        raise ValueError("xa, xb: one side is constant across rows; CKA is undefined")
    return float(np.sum(ka * kb) / denom)


def prompt_permutations(groups, n_perm: int, seed: int) -> np.ndarray:
    """Row permutations `[n_perm, r]` that move whole prompts: groups `[r]` names the prompt of
    each row (a prompt's rows in position order); every row of prompt i goes to the row at the
    same position of prompt pi(i), pi permuting the prompts with the same number of rows.

    With one row per prompt (groups all distinct) this is a plain row permutation, drawn exactly
    as `rng.permuted(arange(r))` would draw it.
    """
    groups = np.asarray(groups)
    if groups.ndim != 1 or n_perm < 1:
        raise ValueError(
            f"groups/n_perm: need [rows] and n_perm >= 1, got {groups.shape}, {n_perm}"
        )
    order = np.argsort(groups, kind="stable")  # rows grouped by prompt, positions kept in order
    _, starts, sizes = np.unique(groups[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)
    out = np.empty((n_perm, groups.size), dtype=np.int64)
    for size in np.unique(sizes):
        heads = starts[sizes == size]  # the prompts with `size` rows
        rows = order[heads[:, None] + np.arange(size)]  # [m, size]
        pi = rng.permuted(np.broadcast_to(np.arange(heads.size), (n_perm, heads.size)), axis=1)
        out[:, rows] = rows[pi]  # [P, m, size]
    return out


def permutation_design(groups) -> dict:
    """What `prompt_permutations` can move: {"unit", "prompts", "strata" (distinct row counts),
    "fixed_prompts" (alone in their stratum, never moved)}."""
    groups = np.asarray(groups)
    _, sizes = np.unique(groups, return_counts=True)
    _, per_size = np.unique(sizes, return_counts=True)
    return {
        "unit": "whole prompt" if sizes.max(initial=1) > 1 else "prompt (one row each)",
        "prompts": int(sizes.size),
        "strata": int(per_size.size),
        "fixed_prompts": int(np.sum(per_size == 1)),
    }


def _cka_null_samples(xa, xb, n_perm: int, seed: int, chunk: int = 64, groups=None) -> np.ndarray:
    ka, kb = _centred_grams(xa, xb)
    denom = np.linalg.norm(ka) * np.linalg.norm(kb)
    n = ka.shape[0]
    perms = prompt_permutations(np.arange(n) if groups is None else groups, n_perm, seed)
    out = []
    for start in range(0, n_perm, chunk):
        p = perms[start : start + chunk]
        kbp = kb[p[:, :, None], p[:, None, :]]  # rows of XB permuted: P Kb P^T, [c, n, n]
        out.append(kbp.reshape(p.shape[0], -1) @ ka.ravel() / denom)
    return np.concatenate(out)


def cka_permutation_null(
    xa, xb, n_perm: int = 1000, seed: int = 0, level: float = 0.95, groups=None
) -> NullBand:
    """Linear CKA with the rows of XB permuted (pairing destroyed): NullBand of n_perm samples.
    groups `[n]` (the prompt of each row): whole prompts move (`prompt_permutations`).

    For independent data CKA is not near 0 but near this null, which grows with d/n.
    """
    if n_perm < 1:
        raise ValueError(f"n_perm: {n_perm} < 1")
    samples = _cka_null_samples(xa, xb, n_perm, seed, groups=groups)
    return summarise_null(samples, seed=seed, level=level, what="linear CKA, rows of B permuted")


# --------------------------------------------------------------------------------------------
# Shuffled-pairing null for the mapped overlap and held-out R^2
# --------------------------------------------------------------------------------------------


def _batched_overlap(mapped, qb) -> np.ndarray:
    """mapped `[c, dB, k]` (not orthonormal), qb `[dB, kb]` orthonormal -> overlap `[c]`."""
    q, _ = np.linalg.qr(mapped)
    return np.sum((q.swapaxes(-1, -2) @ qb) ** 2, axis=(-2, -1)) / min(q.shape[-1], qb.shape[-1])


def _batched_r2(pred_c, xbt_c, sst) -> np.ndarray:
    return 1.0 - np.sum((xbt_c - pred_c) ** 2, axis=(-2, -1)) / sst


def _shuffled_samples(
    xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b, settings, perms, chunk, procrustes=True
):
    """Per-permutation overlap and held-out R^2 of the linear (and Procrustes) maps, `[P]` each."""
    ridge, procrustes_scale = settings.ridge, settings.procrustes_scale
    ma, mb = xa_fit.mean(axis=0), xb_fit.mean(axis=0)
    xac, xbc = xa_fit - ma, xb_fit - mb
    qa, qb = orthonormalise(basis_a), orthonormalise(basis_b)
    xat = xa_test - ma  # test inputs centred on the FIT mean, as apply_map does
    xbt = xb_test - mb  # residual target relative to the intercept mean_B
    sst = np.sum((xb_test - xb_test.mean(axis=0)) ** 2)
    # Linear: W_p = op @ XBc[p]; never formed: W_p^T qa = XBc[p]^T (op^T qa), XAt W_p = (XAt op) XBc[p]
    op = _ridge_operator(xac, ridge)  # [dA, n]
    c_lin = op.T @ qa  # [n, k]
    e_lin = xat @ op  # [t, n]
    xa_norm2 = np.sum(xac**2)
    out = {"overlap_linear": [], "r2_linear": []}
    if procrustes:
        out |= {"overlap_procrustes": [], "r2_procrustes": []}
    for start in range(0, perms.shape[0], chunk):
        xbp = xbc[perms[start : start + chunk]]  # [c, n, dB]
        out["overlap_linear"].append(_batched_overlap(xbp.swapaxes(-1, -2) @ c_lin, qb))
        out["r2_linear"].append(_batched_r2(e_lin @ xbp, xbt, sst))
        if not procrustes:
            continue
        u, sv, vt = np.linalg.svd(xac.T @ xbp, full_matrices=False)
        rot = procrustes_rotation(u, sv, vt)  # [c, dA, dB]
        s = sv.sum(axis=-1) / xa_norm2 if procrustes_scale else np.ones(sv.shape[0])  # [c]
        out["overlap_procrustes"].append(_batched_overlap(rot.swapaxes(-1, -2) @ qa, qb))
        pred = s[:, None, None] * (xat @ rot)
        out["r2_procrustes"].append(_batched_r2(pred, xbt, sst))
    return {k: np.concatenate(v) for k, v in out.items()}


def shuffled_pairing_samples(
    xa_fit,
    xb_fit,
    xa_test,
    xb_test,
    basis_a,
    basis_b,
    settings: AlignSettings = AlignSettings(),
    groups=None,
    procrustes: bool = True,
) -> dict[str, np.ndarray]:
    """The maps refit on shuffled pairings, settings.n_perm times: {"overlap_linear",
    "r2_linear"[, "overlap_procrustes", "r2_procrustes"]} -> samples `[n_perm]`.

    groups `[n]` names the prompt of each fit row: whole prompts are permuted
    (`prompt_permutations`); None = one row per prompt. The permutations depend only on
    (groups, n_perm, seed), so calls at different layers with the same rows draw the same ones
    and their samples can be averaged over layers draw by draw. Vectorised: the SVD of XA_fit
    is shared by every permutation of the linear fit, which then costs O(n d k) per
    permutation; the Procrustes refit needs one dA x dB SVD per permutation (about 0.25 s at
    d=768 on one CPU thread), which dominates the cost.
    """
    xa_fit, xb_fit = _pair(xa_fit, xb_fit, "xa_fit, xb_fit")
    xa_test, xb_test = _pair(xa_test, xb_test, "xa_test, xb_test")
    if settings.n_perm < 1:
        raise ValueError(f"n_perm: {settings.n_perm} < 1")
    n = xa_fit.shape[0]
    groups = np.arange(n) if groups is None else np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups: need one prompt id per fit row, [{n}], got {groups.shape}")
    perms = prompt_permutations(groups, settings.n_perm, settings.seed)
    return _shuffled_samples(
        xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b, settings, perms, 16, procrustes
    )


def linear_r2_null_samples(
    xa_fit, xb_fit, xa_test, xb_test, settings: AlignSettings = AlignSettings(), groups=None
) -> np.ndarray:
    """Held-out R^2 `[n_perm]` of the linear map (ridge settings.ridge) refit on whole-prompt
    shuffled pairings (`prompt_permutations` of groups `[n]`; None = one row per prompt): the
    null of `r2(fit_linear(...), xa_test, xb_test)` with no basis to compare."""
    xa_fit, xb_fit = _pair(xa_fit, xb_fit, "xa_fit, xb_fit")
    xa_test, xb_test = _pair(xa_test, xb_test, "xa_test, xb_test")
    n = xa_fit.shape[0]
    perms = prompt_permutations(
        np.arange(n) if groups is None else groups, settings.n_perm, settings.seed
    )
    ma, mb = xa_fit.mean(axis=0), xb_fit.mean(axis=0)
    e_lin = (xa_test - ma) @ _ridge_operator(xa_fit - ma, settings.ridge)  # [t, n]
    xbc, xbt = xb_fit - mb, xb_test - mb
    sst = np.sum((xb_test - xb_test.mean(axis=0)) ** 2)
    out = [
        _batched_r2(e_lin @ xbc[p], xbt, sst) for p in np.array_split(perms, -(-len(perms) // 16))
    ]
    return np.concatenate(out)


def shuffled_pairing_null(
    xa_fit,
    xb_fit,
    xa_test,
    xb_test,
    basis_a,
    basis_b,
    settings: AlignSettings = AlignSettings(),
    groups=None,
) -> dict[str, NullBand]:
    """NullBands of `shuffled_pairing_samples` for "overlap_linear", "r2_linear",
    "overlap_procrustes", "r2_procrustes": what mapped-subspace overlap and held-out R^2 look
    like when the map has learned no prompt correspondence, with this n, d, ridge and these
    bases."""
    seed = settings.seed
    samples = shuffled_pairing_samples(
        xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b, settings, groups
    )
    unit = "whole prompts" if groups is not None else "rows"
    return {
        k: summarise_null(
            v,
            seed=seed,
            level=settings.level,
            what=f"{k}, shuffled pairing ({unit} permuted), ridge={settings.ridge}",
        )
        for k, v in samples.items()
    }


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlignmentReport:
    """Every phase-6 figure with its null. Overlaps are mean cos^2 of principal angles.

    overlap_raw compares the bases in raw coordinates (None when dA != dB); its null is the
    random-subspace expectation/band. Mapped overlaps and held-out R^2 come with the
    shuffled-pairing null; cka_fit (on the fit rows) with its permutation null and p-value; both
    permute whole prompts (`null_design`: `permutation_design` of the fit rows' prompts).
    null_samples: {"overlap_linear", "r2_linear", "overlap_procrustes", "r2_procrustes",
    "cka_fit"} -> `[n_perm]` draws (the same permutations at every layer with the same rows).
    delta_cos2_* = overlap after mapping - overlap_raw (the study's "angle improvement", see the
    module docstring). n_over_d = n_fit / dA.
    """

    n_fit: int
    n_test: int
    dA: int
    dB: int
    k_a: int
    k_b: int
    n_over_d: float
    ridge: float
    n_perm: int
    seed: int
    level: float
    overlap_raw: float | None
    overlap_random_expectation: float
    overlap_random_null: NullBand | None
    overlap_linear: float
    overlap_linear_null: NullBand
    overlap_procrustes: float
    overlap_procrustes_null: NullBand
    delta_cos2_linear: float | None
    delta_cos2_procrustes: float | None
    delta_angle_rad_linear: float | None
    delta_angle_rad_procrustes: float | None
    r2_fit_linear: float
    r2_test_linear: float
    r2_test_linear_null: NullBand
    r2_test_procrustes: float
    r2_test_procrustes_null: NullBand
    procrustes_scale: float
    cka_fit: float
    cka_fit_null: NullBand
    cka_fit_pvalue: float
    warnings: list[str]
    null_design: dict = dataclasses.field(default_factory=dict)
    null_samples: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self))


def _checked_rows(xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b):
    """The fit and test rows as float64 pairs and both bases orthonormalised, or ValueError."""
    xa_fit, xb_fit = _pair(xa_fit, xb_fit, "xa_fit, xb_fit")
    xa_test, xb_test = _pair(xa_test, xb_test, "xa_test, xb_test")
    if xa_test.shape[1] != xa_fit.shape[1] or xb_test.shape[1] != xb_fit.shape[1]:
        raise ValueError("xa_test, xb_test: feature dims must match the fit data")
    qa, qb = orthonormalise(basis_a), orthonormalise(basis_b)
    da, db = xa_fit.shape[1], xb_fit.shape[1]
    if qa.shape[0] != da or qb.shape[0] != db:
        raise ValueError(
            f"basis_a, basis_b: need [{da}, k] and [{db}, k], got {qa.shape}, {qb.shape}"
        )
    return xa_fit, xb_fit, xa_test, xb_test, qa, qb


def _raw_coordinates(lin: LinearMap, pro: LinearMap, qa, qb) -> dict:
    """AlignmentReport fields that compare the bases in raw coordinates (None when dA != dB)."""
    same_space = lin.dA == lin.dB
    ch_lin = angle_improvement(lin, qa, qb) if same_space else None
    ch_pro = angle_improvement(pro, qa, qb) if same_space else None
    return {
        "overlap_raw": overlap(qa, qb) if same_space else None,
        "delta_cos2_linear": ch_lin.delta_cos2 if ch_lin else None,
        "delta_cos2_procrustes": ch_pro.delta_cos2 if ch_pro else None,
        "delta_angle_rad_linear": ch_lin.delta_angle_rad if ch_lin else None,
        "delta_angle_rad_procrustes": ch_pro.delta_angle_rad if ch_pro else None,
    }


def _cka_fields(xa_fit, xb_fit, s: AlignSettings, groups) -> tuple[dict, np.ndarray]:
    """AlignmentReport's linear CKA on the fit rows with its whole-prompt permutation null, and
    the null's samples `[n_perm]`."""
    cka_samples = _cka_null_samples(xa_fit, xb_fit, s.n_perm, s.seed, groups=groups)
    cka = linear_cka(xa_fit, xb_fit)
    fields = {
        "cka_fit": cka,
        "cka_fit_null": summarise_null(
            cka_samples, s.seed, s.level, "linear CKA on fit rows, whole prompts of B permuted"
        ),
        "cka_fit_pvalue": float(permutation_pvalue(cka, cka_samples)),
    }
    return fields, cka_samples


def _caveats(n: int, da: int, overlaps: dict[str, float], nulls: dict[str, NullBand]) -> list[str]:
    """The warnings `align` records: n_fit <= dA, and each mapped overlap inside its null."""
    notes = []
    if n <= da:
        notes.append(
            f"n={n} <= d={da}: a full-rank map can fit almost anything; overlap after mapping "
            "is not evidence of shared structure"
        )
    for name, value in overlaps.items():
        band = nulls[f"overlap_{name}"]
        if value <= band.hi:
            notes.append(
                f"overlap after {name} map {value:.3f} is inside the shuffled-pairing null band "
                f"(<= {band.hi:.3f}); not distinguishable from a map with no correspondence"
            )
    return notes


def figures(
    xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b, settings: AlignSettings = AlignSettings()
) -> dict[str, float | None]:
    """The point figures of `align` without any null: {"overlap_raw" (None when dA != dB),
    "overlap_linear", "overlap_procrustes", "r2_test_linear", "r2_test_procrustes",
    "cka_fit"}. What a random-init control is read with: the same rows and bases, another B."""
    xa_fit, xb_fit, xa_test, xb_test, qa, qb = _checked_rows(
        xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b
    )
    lin = fit_linear(xa_fit, xb_fit, settings.ridge)
    pro = fit_procrustes(xa_fit, xb_fit, settings.procrustes_scale)
    return {
        "overlap_raw": overlap(qa, qb) if lin.dA == lin.dB else None,
        "overlap_linear": mapped_subspace_overlap(lin, qa, qb),
        "overlap_procrustes": mapped_subspace_overlap(pro, qa, qb),
        "r2_test_linear": r2(lin, xa_test, xb_test),
        "r2_test_procrustes": r2(pro, xa_test, xb_test),
        "cka_fit": linear_cka(xa_fit, xb_fit),
    }


def _sizes(n: int, n_test: int, dims, ks, s: AlignSettings) -> dict:
    """AlignmentReport's sizes and settings, and the random-subspace baseline of the overlap."""
    (da, db), (ka, kb) = dims, ks
    return {
        "n_fit": n,
        "n_test": n_test,
        "dA": da,
        "dB": db,
        "k_a": ka,
        "k_b": kb,
        "n_over_d": n / da,
        "ridge": float(s.ridge),
        "n_perm": s.n_perm,
        "seed": s.seed,
        "level": s.level,
        "overlap_random_expectation": random_overlap_expectation(ka, db, kb),
        "overlap_random_null": (
            random_overlap_null(ka, db, s.n_perm, s.seed, s.level) if ka == kb else None
        ),
    }


def align(
    xa_fit,
    xb_fit,
    xa_test,
    xb_test,
    basis_a,
    basis_b,
    settings: AlignSettings = AlignSettings(),
    groups=None,
) -> AlignmentReport:
    """Fit linear and Procrustes maps A -> B on the fit rows `[n, dA]` / `[n, dB]`, evaluate on
    the test rows, compare span(basis_a) `[dA, k_a]` with span(basis_b) `[dB, k_b]` before/after,
    with all nulls (`settings`: ridge, n_perm, seed, level, Procrustes scaling). groups `[n]`:
    the prompt of each fit row, so the nulls permute whole prompts (None: one row per prompt).

    Emits (warnings.warn) and records a warning when n_fit <= dA (the centred map can interpolate
    the fit data) and when a mapped overlap does not exceed its null band.
    """
    s = settings
    xa_fit, xb_fit, xa_test, xb_test, qa, qb = _checked_rows(
        xa_fit, xb_fit, xa_test, xb_test, basis_a, basis_b
    )
    n, da = xa_fit.shape
    groups = np.arange(n) if groups is None else np.asarray(groups)
    lin = fit_linear(xa_fit, xb_fit, s.ridge)
    pro = fit_procrustes(xa_fit, xb_fit, s.procrustes_scale)
    samples = shuffled_pairing_samples(xa_fit, xb_fit, xa_test, xb_test, qa, qb, s, groups)
    what = f"shuffled pairing (whole prompts permuted), ridge={s.ridge}"
    nulls = {k: summarise_null(v, s.seed, s.level, f"{k}, {what}") for k, v in samples.items()}
    ov_lin = mapped_subspace_overlap(lin, qa, qb)
    ov_pro = mapped_subspace_overlap(pro, qa, qb)
    notes = _caveats(n, da, {"linear": ov_lin, "procrustes": ov_pro}, nulls)
    raw = _raw_coordinates(lin, pro, qa, qb)
    cka, cka_samples = _cka_fields(xa_fit, xb_fit, s, groups)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return AlignmentReport(
        **_sizes(n, xa_test.shape[0], (da, xb_fit.shape[1]), (qa.shape[1], qb.shape[1]), s),
        overlap_linear=ov_lin,
        overlap_linear_null=nulls["overlap_linear"],
        overlap_procrustes=ov_pro,
        overlap_procrustes_null=nulls["overlap_procrustes"],
        r2_fit_linear=r2(lin, xa_fit, xb_fit),
        r2_test_linear=r2(lin, xa_test, xb_test),
        r2_test_linear_null=nulls["r2_linear"],
        r2_test_procrustes=r2(pro, xa_test, xb_test),
        r2_test_procrustes_null=nulls["r2_procrustes"],
        procrustes_scale=pro.scale,
        warnings=notes,
        null_design=permutation_design(groups),
        null_samples={**samples, "cka_fit": cka_samples},
        **raw,
        **cka,
    )


# --------------------------------------------------------------------------------------------
# Whole-prompt bootstrap of the overlaps
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BootSide:
    """One model at one layer, for `bootstrap_overlaps`: its fit rows `[r, d]` (paired row for
    row with the other side's) and, per prompt of the whole set, the sums `[n, d]` and counts
    `[n]` whose class means define its emotion basis (`vectors.prompt_sums`)."""

    rows: np.ndarray
    sums: np.ndarray
    counts: np.ndarray


@dataclasses.dataclass(frozen=True)
class BootData:
    """Inputs of `bootstrap_overlaps` at one layer pair: the class `[n]` of every prompt, the
    prompt (index into labels) of every fit row `[r]`, model A, and one or more B sides (B
    itself first, then e.g. its random-init controls), all on the same prompts; k: basis
    dimension (at most; fewer where a resample's class means span fewer); ridge_rel: the linear
    map's ridge relative to ||X_A,c||_F^2 / d_A, recomputed per resample."""

    labels: np.ndarray
    row_prompt: np.ndarray
    a: BootSide
    bs: list[BootSide]
    k: int
    ridge_rel: float


def _weighted_centred(x, w):
    """sqrt(w) * (x - weighted mean) for rows x `[r, d]`, weights w `[r]` > 0."""
    mean = (w @ x) / w.sum()
    return np.sqrt(w)[:, None] * (x - mean)


def _ridge_apply(xac, ridge: float, q) -> np.ndarray:
    """op^T q `[r, k]` for op = `_ridge_operator(xac, ridge)` `[dA, r]` and q `[dA, k]`, from the
    eigendecomposition of the smaller Gram matrix (XAc^T XAc or XAc XAc^T) instead of an SVD of
    XAc: about 3x cheaper, and the bootstrap calls it once per resample. With ridge = 0 the
    pseudo-inverse keeps eigenvalues above max(shape) * eps * the largest (singular values above
    ~1e-7 of the largest, where the SVD keeps ~1e-13): a difference only in directions the fit
    rows barely span."""
    r, d = xac.shape
    wide = r < d
    lam, v = np.linalg.eigh(xac @ xac.T if wide else xac.T @ xac)
    if ridge > 0:
        f = 1.0 / (lam + ridge)
    else:
        keep = lam > max(r, d) * np.finfo(np.float64).eps * lam.max(initial=0.0)
        f = np.where(keep, 1.0 / np.where(keep, lam, 1.0), 0.0)
    # op = (XAc^T XAc + ridge)^+ XAc^T = XAc^T (XAc XAc^T + ridge)^+
    if wide:
        return (v * f) @ (v.T @ (xac @ q))
    return xac @ ((v * f) @ (v.T @ q))


def _one_resample(data: BootData, counts) -> np.ndarray:
    """`[n_sides, 3]` (raw, linear, Procrustes overlap) for prompt counts `[n]`."""
    n_cls = int(data.labels.max()) + 1
    w = counts[data.row_prompt]
    keep = w > 0
    xac = _weighted_centred(data.a.rows[keep], w[keep])
    ridge = data.ridge_rel * float(np.sum(xac**2)) / xac.shape[1]

    def basis(side):
        means = weighted_class_means(
            side.sums[None], side.counts, data.labels, counts[None], n_cls
        )[0, 0]
        return difference_basis(means, data.k)

    qa = basis(data.a)
    c_lin = _ridge_apply(xac, ridge, qa)  # op^T qa, [r', k]
    out = np.full((len(data.bs), 3), np.nan)
    for j, side in enumerate(data.bs):
        qb = basis(side)
        if qa.shape[1] == 0 or qb.shape[1] == 0:
            continue
        xbc = _weighted_centred(side.rows[keep], w[keep])
        if qa.shape[0] == qb.shape[0]:
            out[j, 0] = overlap(qa, qb)
        out[j, 1] = overlap(orthonormalise(xbc.T @ c_lin), qb)
        u, sv, vt = np.linalg.svd(xac.T @ xbc, full_matrices=False)
        out[j, 2] = overlap(orthonormalise(procrustes_rotation(u, sv, vt).T @ qa), qb)
    return out


def bootstrap_overlaps(data: BootData, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Subspace overlaps over whole-prompt bootstrap resamples: {"overlap_raw",
    "overlap_linear", "overlap_procrustes"} -> `[n_boot, n_sides]` (NaN where undefined: raw
    when dA != dB, or a resample whose class means do not differ).

    Each resample draws the prompts of every class with replacement within the class
    (`stats.stratified_counts`, the same draws for every side and, given the same labels and
    seed, at every layer): a drawn prompt weighs its count in the class means that define both
    bases and, with all its rows, in the fit of both maps (linear ridge, Procrustes), which are
    refit. The held-out prompts are not used. Costs one SVD of the fit rows and one dA x dB
    SVD per side per resample.
    """
    counts = stratified_counts(data.labels, n_boot, seed)
    vals = np.stack([_one_resample(data, c) for c in counts])  # [B, sides, 3]
    return {
        "overlap_raw": vals[..., 0],
        "overlap_linear": vals[..., 1],
        "overlap_procrustes": vals[..., 2],
    }
