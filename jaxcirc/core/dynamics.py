"""Across training checkpoints: when the emotion structure forms, every figure beside its null.

The inputs are per-prompt features of S checkpoints of ONE model on the SAME prompts,
`feats [step, layer, n, d]` (e.g. the residual at each prompt's last token; layer 0 = the
embeddings, the lexical baseline), and `labels [n]` indexing `jaxcirc.data.emotions.EMOTIONS`.

One null for every step. The prompts are the same at every checkpoint, so one label permutation is
applied to every step and layer at once, and a null sample is a whole trajectory. Each cell
(step, layer) gets its permutation p-value, and a FAMILY-WISE verdict over the steps and layers
looked at by the single-step max-T method (Westfall and Young): each cell is standardised by its
own null's mean and sd, and is beyond its null when its z exceeds the level-quantile of a null
trajectory's largest z. On a sequence with nothing planted, the chance that ANY step and layer is
beyond is then at most 1 - level, however many were looked at, and cells whose nulls differ (an
early step against the final one, a layer with more spread) are each judged on their own scale
(`Trajectory.p_adjusted`, `fw_threshold`, `beyond`). A rank-based min-p adjustment would need
many more permutations than cells / (1 - level) to reject anything at all; max-T does not. The
pointwise band and p-value of each cell are given beside it, uncorrected.

- `probe_step` / `trajectory`: per-step probe accuracy (`probe.probe_accuracy`) with its
  label-shuffle null (`probe.probe_shuffle_null`, which draws the same permutations at every step
  for the same labels and seed).
- `overlap_with_final`: each step's emotion subspace (top-k principal directions of the
  differences between the four class means, as `subspace.emotion_subspaces`) against the final
  step's: mean cos^2 of the principal angles (`subspace.overlap`), beside the random-subspace
  null (`subspace.random_overlap_null`, about k/d) and a paired label-shuffle null (one
  permutation at both steps). The second is the one to judge by: a network that changes little
  between two steps keeps EVERY direction, so two arbitrary groupings of the same prompts also
  overlap far above k/d.
- `consecutive_maps`: a ridge map fit on neutral prompts from step s to step s+1
  (`alignment.fit_linear`), its held-out R^2 (`alignment.r2`) beside the shuffled-pairing null
  (the same fit with the rows paired at random). Two networks fed the same tokens beat that null
  whatever they learnt, so R^2 measures how continuous the representation is between steps, not
  shared emotion structure.
- `onset`: per emotion, its separation from neutral per step and layer (`separation`), the first
  step beyond the family-wise null (over steps and block layers 1..L), with a percentile bootstrap
  CI over prompts.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np

from jaxcirc.core import alignment, probe, stats
from jaxcirc.core.stats import NullBand, to_jsonable
from jaxcirc.core.subspace import SUBSPACE_RTOL, random_overlap_expectation, random_overlap_null

# Null and bootstrap draws are processed in chunks of about this many float64 values.
_CHUNK_VALUES = 8_000_000


def _check_feats(feats, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(feats)
    if x.ndim != 4:
        raise ValueError(f"feats: need [step, layer, n, d], got shape {x.shape}")
    y = np.asarray(labels)
    if y.shape != (x.shape[2],) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels: need integer [n]=({x.shape[2]},), got {y.shape} {y.dtype}")
    return x, y


def _permutations(labels, n_perm: int, seed: int) -> np.ndarray:
    """`[n_perm, n]` label permutations (class sizes kept), drawn as the core's nulls draw them."""
    if n_perm < 1:
        raise ValueError(f"n_perm: {n_perm} < 1")
    rng = np.random.default_rng(seed)
    return rng.permuted(np.broadcast_to(labels, (n_perm, len(labels))), axis=1)


def _chunk(per_draw: int) -> int:
    return max(1, _CHUNK_VALUES // max(per_draw, 1))


# ---------------------------------------------------------------------------------------------
# Trajectories and their family-wise null


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """A figure per step (or step pair) and layer with its permutation null.

    value, null_mean, null_lo, null_hi, p_value: `[step, layer]`. lo/hi are the pointwise central
    `level` band; p_value the pointwise permutation p, (1 + #draws >= value) / (1 + n_perm),
    draws within rounding of the value counted (stats.at_least)
    (alternative "greater", uncorrected). p_adjusted `[step, layer]`: the max-T family-wise
    adjusted p over the cells of `fw_mask` (module docstring, `maxt_adjust`); beyond `[step, layer]`:
    p_adjusted <= 1 - level inside fw_mask. fw_threshold `[step, layer]`: the same verdict in
    the figure's units, value > fw_threshold <=> beyond (inf where no value could be).
    """

    value: np.ndarray
    null_mean: np.ndarray
    null_lo: np.ndarray
    null_hi: np.ndarray
    p_value: np.ndarray
    p_adjusted: np.ndarray
    fw_threshold: np.ndarray
    fw_mask: np.ndarray
    beyond: np.ndarray
    n_perm: int
    seed: int
    level: float
    what: str = ""

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self))


def block_layers(n_steps: int, n_layers_plus_one: int) -> np.ndarray:
    """`[step, layer]` mask of the block outputs 1..L at every step (layer 0, the embeddings, is
    the lexical baseline and is left out of family-wise adjustments)."""
    mask = np.ones((n_steps, n_layers_plus_one), bool)
    mask[:, 0] = False
    return mask


def maxt_adjust(value, null, mask, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Single-step max-T adjustment over the cells of `mask`: value `[C...]`, null `[P, C...]`.

    Each cell is standardised by its null's mean and sd, z = (x - mean) / sd, so cells whose
    nulls differ in location or spread are comparable; a null draw's largest z over the masked
    cells is its max-T. A cell's adjusted p is (1 + #draws whose max-T >= its z) / (1 + P).
    Returns (adjusted p `[C...]`, threshold `[C...]` in the figure's units: adjusted p <=
    1 - level <=> value > threshold). Cells with a constant or undefined null are never beyond
    (adjusted p NaN)."""
    v = np.asarray(value, np.float64)
    null = np.asarray(null, np.float64)
    with warnings.catch_warnings():  # all-NaN cells stay NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        mu, sd = np.nanmean(null, axis=0), np.nanstd(null, axis=0)
    # A null whose spread is rounding (a figure equal to its null by construction) is constant.
    ok = np.isfinite(sd) & (sd > stats.TIE_RTOL * np.abs(mu))
    sd_ = np.where(ok, sd, 1.0)
    z_draws = np.where(ok & np.asarray(mask, bool), (null - mu) / sd_, -np.inf)
    max_t = np.max(np.nan_to_num(z_draws, nan=-np.inf).reshape(len(null), -1), axis=1)  # [P]
    z = np.where(ok, (v - mu) / sd_, np.nan)
    n = len(null)
    adjusted = (1.0 + np.sum(stats.at_least(max_t[:, None], z.reshape(-1)[None, :]), axis=0)) / (
        1.0 + n
    )
    adjusted = np.where(np.isnan(z.reshape(-1)), np.nan, adjusted).reshape(v.shape)
    # beyond <=> #draws with max-T >= z <= k <=> z > the (k + 1)-th largest max-T
    k = int(np.floor((1.0 - level) * (1 + n) - 1.0 + 1e-9))
    if k < 0:
        t_star = np.inf
    elif k >= n:
        t_star = -np.inf
    else:
        t_star = float(-np.sort(-max_t)[k])
    with np.errstate(over="ignore", invalid="ignore"):  # t_star may be +-inf
        threshold = np.where(ok, mu + sd_ * t_star, np.inf)
    return adjusted, threshold


def trajectory(
    value, null_samples, fw_mask, seed: int, level: float = 0.95, what: str = ""
) -> Trajectory:
    """A `Trajectory` from `value [step, layer]` and null draws `[draw, step, layer]` made with
    ONE permutation per draw for every step and layer. NaN cells (undefined figures) are left
    out of every statistic."""
    v = np.asarray(value, np.float64)
    null = np.asarray(null_samples, np.float64)
    mask = np.asarray(fw_mask, bool)
    if null.ndim != 3 or null.shape[1:] != v.shape or mask.shape != v.shape:
        raise ValueError(
            f"value {v.shape}, null_samples {null.shape}, fw_mask {mask.shape}: need "
            "[step, layer], [draw, step, layer], [step, layer]"
        )
    if not 0 < level < 1:
        raise ValueError(f"level: {level} must lie in (0, 1)")
    alpha = 100.0 * (1.0 - level) / 2.0
    with warnings.catch_warnings():  # all-NaN cells (undefined figures) stay NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(null, [alpha, 100.0 - alpha], axis=0)
        mean = np.nanmean(null, axis=0)
    p = (1.0 + np.sum(stats.at_least(null, v), axis=0)) / (1.0 + null.shape[0])
    p = np.where(np.isnan(v), np.nan, p)
    adjusted, threshold = maxt_adjust(v, null, mask, level)
    return Trajectory(
        value=v,
        null_mean=mean,
        null_lo=lo,
        null_hi=hi,
        p_value=p,
        p_adjusted=adjusted,
        fw_threshold=threshold,
        fw_mask=mask,
        beyond=mask & (np.nan_to_num(adjusted, nan=1.0) <= 1.0 - level),
        n_perm=int(null.shape[0]),
        seed=seed,
        level=level,
        what=what,
    )


def probe_step(
    x, labels, n_folds: int, n_perm: int, seed: int, shrinkage="ledoit_wolf"
) -> tuple[np.ndarray, np.ndarray]:
    """One checkpoint's probe: (accuracy `[layer]`, label-shuffle null draws `[n_perm, layer]`)
    of `probe.probe_accuracy` / `probe.probe_shuffle_null` on x `[layer, n, d]`. With the same
    labels and seed every step gets the same folds and the same permutations, so the draws of all
    steps stacked on axis 1 are trajectories (`trajectory`)."""
    res = probe.probe_accuracy(x, labels, n_folds, seed, shrinkage)
    null = probe.probe_shuffle_null(x, labels, n_folds, n_perm, seed, shrinkage)
    return res.accuracy, null.samples


# ---------------------------------------------------------------------------------------------
# Emotion subspaces against the final step's


def _class_means(x, onehot) -> np.ndarray:
    """x `[S, L, n, d]`, onehot `[..., n, k]` -> class means `[..., S, L, k, d]` (one GEMM)."""
    s, l_, n, d = x.shape
    flat = np.swapaxes(onehot, -1, -2) @ x.transpose(2, 0, 1, 3).reshape(n, -1)  # [..., k, SLd]
    counts = onehot.sum(axis=-2)  # [..., k]
    means = flat.reshape(*flat.shape[:-1], s, l_, d) / counts[..., :, None, None, None]
    return np.moveaxis(means, -4, -2)


def subspace_bases(means, k: int) -> tuple[np.ndarray, np.ndarray]:
    """means `[..., c, d]` -> (basis `[..., d, k]`, rank `[...]`): the top-k principal
    directions of the differences between the c class means, as `subspace.emotion_subspaces`
    takes them: directions whose singular value is at most SUBSPACE_RTOL of the largest are
    rounding, not data, and their columns are zero (rank counts the rest, at most k)."""
    m = np.asarray(means, np.float64)
    c = m - m.mean(axis=-2, keepdims=True)
    _, sv, vt = np.linalg.svd(c, full_matrices=False)
    top = np.maximum(sv.max(axis=-1, initial=0.0), 1e-300)
    rank = np.minimum(np.sum(sv > SUBSPACE_RTOL * top[..., None], axis=-1), k)
    keep = np.arange(k) < rank[..., None]  # [..., k]
    return np.swapaxes(vt[..., :k, :], -1, -2) * keep[..., None, :], rank


def bases_overlap(qa, ra, qb, rb) -> np.ndarray:
    """Mean cos^2 of the principal angles between orthonormal bases `[..., d, k]` with `ra`/`rb`
    real columns (zero columns after them): sum (qa^T qb)^2 / min(ra, rb), as `subspace.overlap`;
    NaN where either spans nothing."""
    k = np.minimum(ra, rb)
    s = np.sum((np.swapaxes(qa, -1, -2) @ qb) ** 2, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(k > 0, s / np.where(k > 0, k, 1), np.nan)


@dataclasses.dataclass(frozen=True)
class OverlapResult:
    """Each step's emotion subspace against the reference (final) step's, per layer.

    traj.value `[step, layer]`: mean cos^2 of the principal angles; its null is the paired label
    shuffle (the same permutation at both steps), family-wise over the steps other than the
    reference and the block layers. rank `[step, layer]`: the subspace's dimension (< k where the
    class means differ in fewer directions). random_expectation = k/d and random_band (lo, hi):
    two independent uniformly random k-dim subspaces of R^d (`random_overlap_null`).
    """

    traj: Trajectory
    rank: np.ndarray
    k: int
    ref_index: int
    random_expectation: float
    random_band: NullBand


def overlap_with_final(
    feats, labels, k: int = 3, n_perm: int = 200, seed: int = 0, level: float = 0.95
) -> OverlapResult:
    """Overlap of every step's emotion subspace with the LAST step's, per layer (see
    `OverlapResult`); feats `[step, layer, n, d]`, labels `[n]` over the classes present."""
    x, y = _check_feats(feats, labels)
    s_, l_, _, d = x.shape
    classes = np.unique(y)
    onehot = (y[:, None] == classes).astype(np.float64)
    q, rank = subspace_bases(_class_means(x, onehot), k)  # [S, L, d, k], [S, L]
    value = bases_overlap(q, rank, q[-1:], rank[-1:])
    perms = _permutations(y, n_perm, seed)
    draws, c = [], _chunk(s_ * l_ * len(classes) * d)
    for start in range(0, n_perm, c):
        oh = perms[start : start + c, :, None] == classes
        qp, rp = subspace_bases(_class_means(x, oh.astype(np.float64)), k)  # [c, S, L, d, k]
        draws.append(bases_overlap(qp, rp, qp[:, -1:], rp[:, -1:]))
    mask = block_layers(s_, l_)
    mask[-1] = False  # the final step against itself is 1 by construction
    traj = trajectory(
        value,
        np.concatenate(draws),
        mask,
        seed,
        level,
        f"emotion subspace (k={k}) overlap with the final step's, mean cos^2 of principal "
        "angles; null: paired label shuffle",
    )
    return OverlapResult(
        traj=traj,
        rank=rank,
        k=k,
        ref_index=s_ - 1,
        random_expectation=random_overlap_expectation(k, d),
        random_band=random_overlap_null(k, d, n_perm, seed, level),
    )


# ---------------------------------------------------------------------------------------------
# Neutral-fit maps between consecutive steps


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, test rows) of n: a seeded shuffle, round(test_fraction * n) rows held out
    (at least 1; at least 2 left to fit)."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction: {test_fraction}; use a share between 0 and 1")
    n_test = max(1, int(round(test_fraction * n)))
    if n - n_test < 2:
        raise ValueError(f"n: {n} rows leave fewer than 2 to fit after holding out {n_test}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def map_r2(xa, xb, fit, test, ridge_rel: float, perms) -> tuple[float, np.ndarray]:
    """Held-out R^2 of the ridge map xa -> xb fit on rows `fit`, and of the same fit with the
    fit rows of xb permuted by each of `perms [P, n_fit]` (`[P]`).

    The map is linear in its targets: W = op @ (xb_fit - mean), with op the ridge operator of the
    centred inputs, which `fit_linear` returns as W when the targets are the identity (op sends
    the all-ones vector to zero: it lies outside the centred inputs' row space). So every
    permuted fit costs two small matmuls."""
    xa_f, xb_f, xa_t, xb_t = xa[fit], xb[fit], xa[test], xb[test]
    xac = xa_f - xa_f.mean(axis=0)
    ridge = ridge_rel * float(np.sum(xac**2)) / xa.shape[1]
    observed = alignment.r2(alignment.fit_linear(xa_f, xb_f, ridge), xa_t, xb_t)
    op = alignment.fit_linear(xa_f, np.eye(len(fit)), ridge).W  # [d, n_fit]
    e = (xa_t - xa_f.mean(axis=0)) @ op  # [t, n_fit]
    mb = xb_f.mean(axis=0)
    xbc = xb_f - mb
    sst = np.sum((xb_t - xb_t.mean(axis=0)) ** 2)
    out, c = [], _chunk(len(test) * xb.shape[1])
    for start in range(0, len(perms), c):
        pred = e @ xbc[perms[start : start + c]] + mb
        out.append(1.0 - np.sum((xb_t - pred) ** 2, axis=(-2, -1)) / sst)
    return observed, np.concatenate(out)


def consecutive_maps(
    x,
    test_fraction: float = 0.25,
    ridge_rel: float = 1.0,
    n_perm: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> Trajectory:
    """Held-out R^2 of the map from step s to step s+1, per layer: x `[step, layer, n, d]` holds
    the SAME prompts (the neutral ones) at every step. Ridge = ridge_rel * ||X_fit,c||_F^2 / d
    (the mean eigenvalue of the inputs' scatter, as the alignment phase scales it). Returns a
    `Trajectory` over step pairs `[step - 1, layer]` whose null refits with the fit rows paired
    at random (one pairing per draw for every step pair and layer), family-wise over the block
    layers."""
    x = np.asarray(x, np.float64)
    if x.ndim != 4 or x.shape[0] < 2:
        raise ValueError(f"x: need [step >= 2, layer, n, d], got shape {x.shape}")
    s_, l_, n, _ = x.shape
    fit, test = split_rows(n, test_fraction, seed)
    perms = _permutations(np.arange(len(fit)), n_perm, seed)
    value = np.zeros((s_ - 1, l_))
    null = np.zeros((n_perm, s_ - 1, l_))
    for s in range(s_ - 1):
        for li in range(l_):
            value[s, li], null[:, s, li] = map_r2(
                x[s, li], x[s + 1, li], fit, test, ridge_rel, perms
            )
    what = (
        f"held-out R^2 of the ridge map (ridge_rel={ridge_rel}) from step s to step s+1, fit on "
        f"{len(fit)} neutral prompts, {len(test)} held out; null: shuffled pairing"
    )
    return trajectory(value, null, block_layers(s_ - 1, l_), seed, level, what)


# ---------------------------------------------------------------------------------------------
# Onset: when each emotion first separates from neutral


def standardise(feats) -> np.ndarray:
    """feats `[step, layer, n, d]` z-scored per step, layer and dimension over all n prompts
    (label-free, so every label permutation sees the same features)."""
    x = np.asarray(feats, np.float64)
    sd = x.std(axis=2, keepdims=True)
    return (x - x.mean(axis=2, keepdims=True)) / np.where(sd > 0, sd, 1.0)


def separation(x, wa, wb) -> np.ndarray:
    """Separation of two weighted groups of prompts: x `[S, L, m, d]`, weights `[B, m]` (0/1
    membership, or bootstrap counts) -> `[B, S, L]`

        (||mean_a - mean_b||^2 - tr(S_a)/n_a - tr(S_b)/n_b) / ((tr(S_a) + tr(S_b)) / 2)

    S_c the group's sample covariance (ddof 1): the squared distance between the means with its
    expected value under no difference subtracted (an unbiased estimate of the squared distance
    between the population means), in units of the mean within-group variance (total over dims).
    About 0 when the groups do not differ, whatever d and the group sizes; > 0 when they do."""
    s_, l_, m, d = x.shape
    xf = x.transpose(2, 0, 1, 3).reshape(m, -1)  # [m, S*L*d]
    qf = np.sum(x**2, axis=-1).transpose(2, 0, 1).reshape(m, -1)  # [m, S*L]
    out = []
    for w in (np.asarray(wa, np.float64), np.asarray(wb, np.float64)):
        n = w.sum(axis=1)[:, None, None]  # [B, 1, 1]
        mean = (w @ xf).reshape(-1, s_, l_, d) / n[..., None]
        tr = ((w @ qf).reshape(-1, s_, l_) - n * np.sum(mean**2, axis=-1)) / (n - 1)
        out.append((mean, tr, n))
    (ma, ta, na), (mb, tb, nb) = out
    dist = np.sum((ma - mb) ** 2, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (dist - ta / na - tb / nb) / ((ta + tb) / 2.0)


def _separations(x, wa, wb) -> np.ndarray:
    """`separation` in chunks of draws (memory: a chunk x S x L x d means at a time)."""
    c = _chunk(2 * int(np.prod(x.shape[:2])) * x.shape[-1])
    return np.concatenate(
        [separation(x, wa[i : i + c], wb[i : i + c]) for i in range(0, len(wa), c)]
    )


@dataclasses.dataclass(frozen=True)
class Onset:
    """When one emotion first separates from neutral.

    traj: the separation `[step, layer]` (`separation`) with its label-shuffle null (labels
    permuted among this emotion's and the neutral prompts), family-wise over every step and the
    block layers 1..L; traj.value[:, 0] is the embeddings' (lexical) separation.
    best `[step]`: max over block layers; best_layer `[step]` where; best_p `[step]`: permutation
    p of best against the same max over block layers of the null at that step (pointwise);
    best_null (mean, lo, hi) `[step]` each: that null's mean and central `level` band;
    best_threshold `[step]`: traj.fw_threshold at best_layer.
    index: the first step beyond its null at some block layer (traj.beyond; None: none is).
    ci_index (lo, hi): percentile bootstrap CI of that step index, prompts resampled within each
    class, each cell's draws recentred on its value (bias correction), the threshold held fixed;
    hi None when more than (1 - level)/2 of the draws find no
    onset. share_with_onset: share of bootstrap draws that find one. A first crossing is fragile
    under resampling: where the steps before the onset sit near the threshold, some resamples
    cross early, and the CI's low end reaches back to them.
    sustained_index, sustained_ci_index: the same for the first step from which EVERY later
    step is beyond the threshold (the structure formed and stayed); an early excursion that
    falls back does not count.
    """

    emotion: str
    traj: Trajectory
    best: np.ndarray
    best_layer: np.ndarray
    best_p: np.ndarray
    best_null: tuple[np.ndarray, np.ndarray, np.ndarray]
    best_threshold: np.ndarray
    index: int | None
    ci_index: tuple[int | None, int | None]
    share_with_onset: float
    sustained_index: int | None
    sustained_ci_index: tuple[int | None, int | None]
    n_boot: int


def _first_beyond(hit) -> np.ndarray:
    """hit `[..., step]` bool -> the first step index that is True `[...]` (n_steps where none)."""
    return np.where(hit.any(axis=-1), hit.argmax(axis=-1), hit.shape[-1])


def _first_sustained(hit) -> np.ndarray:
    """hit `[..., step]` bool -> the first step index from which every later step is True
    `[...]` (n_steps where the last step is not)."""
    trailing = np.cumprod(hit[..., ::-1], axis=-1).sum(axis=-1)  # True steps at the end
    return hit.shape[-1] - trailing


def _onset_ci(boot_index, n_steps: int, level: float) -> tuple[int | None, int | None]:
    alpha = 100.0 * (1.0 - level) / 2.0
    lo = int(np.percentile(boot_index, alpha, method="lower"))
    hi = int(np.percentile(boot_index, 100.0 - alpha, method="higher"))
    return (lo if lo < n_steps else None), (hi if hi < n_steps else None)


def _boot_weights(rng, idx_a, idx_b, m: int, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap counts `[n_boot, m]` of each group, resampled within the group."""
    out = []
    for idx in (idx_a, idx_b):
        w = np.zeros((n_boot, m))
        w[:, idx] = rng.multinomial(len(idx), np.full(len(idx), 1.0 / len(idx)), size=n_boot)
        out.append(w)
    return out[0], out[1]


@dataclasses.dataclass(frozen=True)
class OnsetSettings:
    """How `onset` draws its null and bootstrap."""

    n_perm: int = 200  # label permutations (family-wise threshold, p-values)
    n_boot: int = 1000  # bootstrap resamples of the prompts (the onset's CI)
    seed: int = 0
    level: float = 0.95  # family-wise level of the threshold and the CI's coverage


def onset(
    feats, labels, emotion: int, neutral: int, names=None, settings: OnsetSettings = OnsetSettings()
) -> Onset:
    """The step at which class `emotion` first separates from class `neutral` (see `Onset`).

    feats `[step, layer, n, d]` are z-scored per step, layer and dimension first
    (`standardise`), so a few huge-norm residual dimensions do not decide the distance."""
    x, y = _check_feats(feats, labels)
    s_, l_ = x.shape[:2]
    rows = np.flatnonzero((y == emotion) | (y == neutral))
    x = standardise(x)[:, :, rows]
    y = y[rows]
    is_a = (y == emotion).astype(np.float64)
    value = separation(x, is_a[None], 1.0 - is_a[None])[0]
    perms = _permutations(y, settings.n_perm, settings.seed) == emotion
    null = _separations(x, perms.astype(np.float64), (~perms).astype(np.float64))
    mask = block_layers(s_, l_)
    name = names[emotion] if names is not None else str(emotion)
    what = f"separation {name} vs neutral (bias-corrected squared mean distance / within variance)"
    traj = trajectory(value, null, mask, settings.seed, settings.level, what)
    best = np.nanmax(np.where(mask, value, -np.inf), axis=1)
    null_best = np.nanmax(np.where(mask, null, -np.inf), axis=2)  # [P, S]
    rng = np.random.default_rng(settings.seed)
    wa, wb = _boot_weights(
        rng, np.flatnonzero(is_a), np.flatnonzero(is_a == 0), len(y), settings.n_boot
    )
    boot = _separations(x, wa, wb)
    # A resample's separation is centred on the plug-in distance of the sample, which sits the
    # bias correction above `value`: recentre every cell's draws on `value` (bootstrap bias
    # correction), else the CI would sit early.
    boot = boot - (np.nanmean(boot, axis=0) - value)
    boot_hit = (mask & (boot > traj.fw_threshold)).any(axis=2)  # [B, S]
    hit = traj.beyond.any(axis=1)  # [S]: beyond at some block layer
    index, sustained = int(_first_beyond(hit)), int(_first_sustained(hit))
    boot_index = _first_beyond(boot_hit)
    best_layer = np.argmax(np.where(mask, value, -np.inf), axis=1)
    alpha = 100.0 * (1.0 - settings.level) / 2.0
    return Onset(
        emotion=name,
        traj=traj,
        best=best,
        best_layer=best_layer,
        best_p=(1.0 + np.sum(stats.at_least(null_best, best), axis=0)) / (1.0 + settings.n_perm),
        best_null=(null_best.mean(axis=0), *np.percentile(null_best, [alpha, 100 - alpha], axis=0)),
        best_threshold=traj.fw_threshold[np.arange(s_), best_layer],
        index=index if index < s_ else None,
        ci_index=_onset_ci(boot_index, s_, settings.level),
        share_with_onset=float(np.mean(boot_index < s_)),
        sustained_index=sustained if sustained < s_ else None,
        sustained_ci_index=_onset_ci(_first_sustained(boot_hit), s_, settings.level),
        n_boot=settings.n_boot,
    )
