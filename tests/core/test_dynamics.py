"""jaxcirc.core.dynamics on synthetic trajectories: class structure switched on at a known step
must be found there (within one step), and sequences with nothing planted must stay inside their
family-wise null at its stated rate over many seeds.

The synthetic features mimic checkpoints of one model on the same prompts: each prompt keeps its
own noise from step to step (plus a little drift), so consecutive steps are alike whether or not
the classes differ."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcirc.core import alignment, dynamics, subspace

S, L, PER, D = 6, 3, 30, 16
ONSET = 3  # planted structure switched on at this step index
LABELS = np.repeat(np.arange(4), PER)  # gratitude, anger, apology, neutral


def _trajectory(seed: int, scale=None, drift: float = 0.3) -> np.ndarray:
    """feats [S, L, n, D]: persistent per-prompt noise, drift per step, and class offsets
    along three axes at layers 1..L-1 scaled by `scale[s]` (None: nothing planted)."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((L, LABELS.size, D))
    feats = base[None] + drift * rng.standard_normal((S, L, LABELS.size, D))
    if scale is not None:
        offsets = np.zeros((4, D))
        offsets[0, 1], offsets[1, 2], offsets[2, 3] = 3.0, 3.0, 3.0
        for s in range(S):
            feats[s, 1:] += scale[s] * offsets[LABELS]
    return feats


SWITCH = np.array([0, 0, 0, 1, 1, 1], float)  # off before ONSET, on from it


def test_trajectory_max_t_family_wise():
    """Max-T by hand: 4 draws; cell A's null is (1, 2, 3, 4) (mean 2.5, sd sqrt(1.25)), cell B's
    (0, 0, 0, 2) (mean 0.5, sd sqrt(0.75)). Each draw's largest z is the larger of its two z's."""
    null = np.zeros((4, 1, 2))
    null[:, 0, 0] = [1.0, 2.0, 3.0, 4.0]
    null[:, 0, 1] = [0.0, 0.0, 0.0, 2.0]
    mu, sd = np.array([2.5, 0.5]), np.sqrt([1.25, 0.75])
    z_draws = (null[:, 0] - mu) / sd
    max_t = z_draws.max(axis=1)
    value = np.array([[3.6, 1.0]])
    mask = np.ones((1, 2), bool)
    t = dynamics.trajectory(value, null, mask, seed=0, level=0.6)
    z = (value[0] - mu) / sd
    want = (1 + (max_t[:, None] >= z[None]).sum(axis=0)) / 5
    np.testing.assert_allclose(t.p_adjusted[0], want)
    np.testing.assert_allclose(t.p_value[0], [(1 + 1) / 5, (1 + 1) / 5])
    # level 0.6: beyond <=> at most 1 draw's max-T >= z <=> z > the 2nd largest max-T.
    t_star = np.sort(max_t)[::-1][1]
    np.testing.assert_allclose(t.fw_threshold[0], mu + sd * t_star)
    assert list(t.beyond[0]) == list(want <= 0.4)
    assert list(t.beyond[0]) == list(value[0] > t.fw_threshold[0])
    assert not dynamics.trajectory(value, null, np.zeros((1, 2), bool), 0, 0.6).beyond.any()
    flat = dynamics.trajectory(value, np.zeros((4, 1, 2)), mask, 0, 0.6)  # constant nulls
    assert not flat.beyond.any() and np.isnan(flat.p_adjusted).all()
    with pytest.raises(ValueError, match="step, layer"):
        dynamics.trajectory(value, null[:, :, :1], mask, 0)


def test_max_t_judges_each_cell_on_its_own_scale():
    """A cell with a wide null must not hide a cell with a narrow one: a max-over-cells
    threshold would (the wide cell's draws set it); max-T standardises each cell first."""
    rng = np.random.default_rng(0)
    null = rng.standard_normal((200, 2, 1))
    null[:, 1] *= 10.0  # a wide null in the second cell
    value = np.array([[4.0], [0.0]])  # 4 sd out in the narrow cell
    t = dynamics.trajectory(value, null, np.ones((2, 1), bool), seed=0)
    assert t.beyond[0, 0] and not t.beyond[1, 0]
    assert t.fw_threshold[0, 0] < 4.0 < np.quantile(null.max(axis=(1, 2)), 0.95)


def test_onset_found_at_the_planted_step():
    feats = _trajectory(0, SWITCH)
    settings = dynamics.OnsetSettings(n_perm=200, n_boot=200, seed=0)
    for e in range(3):
        got = dynamics.onset(feats, LABELS, e, 3, settings=settings)
        # Within one checkpoint of the switch (a pre-onset step may cross by chance: 5%).
        assert abs(got.index - ONSET) <= 1, (e, got.best, got.traj.p_adjusted)
        assert got.traj.beyond[ONSET:, 1:].any(axis=1).all()
        lo, hi = got.ci_index
        assert lo is not None and hi is not None and lo <= got.index <= hi <= ONSET + 1
        assert got.share_with_onset > 0.95
        assert abs(got.sustained_index - ONSET) <= 1
        lo, hi = got.sustained_ci_index
        assert lo is not None and lo <= got.sustained_index <= hi <= ONSET + 1
        assert not got.traj.beyond[:, 0].any()  # layer 0 (lexical) is outside the family
        assert set(got.best_layer[ONSET:]) <= {1, 2}
        assert np.all(got.best_p[ONSET:] <= 1 / 201 + 1e-12)
        assert np.all(got.best[ONSET:] > got.best_threshold[ONSET:])
    # A ramp 0 -> 1 is found within one step of where it starts.
    ramp = np.array([0, 0, 0, 0.35, 0.7, 1.0])
    got = dynamics.onset(_trajectory(1, ramp), LABELS, 0, 3, settings=settings)
    assert got.index in (ONSET, ONSET + 1)


def test_onset_stays_inside_its_null_with_nothing_planted():
    """Family-wise over 6 steps x 2 block layers at level 0.95: any onset at all in at most ~5%
    of (seed, emotion) runs. 20 seeds x 3 emotions; 9 or more would have probability ~1% at 5%."""
    settings = dynamics.OnsetSettings(n_perm=200, n_boot=20, seed=0)
    found = 0
    for seed in range(20):
        feats = _trajectory(100 + seed)
        for e in range(3):
            got = dynamics.onset(feats, LABELS, e, 3, settings=settings)
            found += got.index is not None
            assert abs(np.nanmean(got.traj.value)) < 0.1  # separation about 0 without structure
    assert found <= 8, found


def test_separation_is_unbiased_without_a_difference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 1, 1, 20, 50))  # 200 repeats, 10 vs 10 rows in 50 dims
    w = np.repeat(np.eye(2), 10, axis=1)  # rows: the first 10, the last 10
    vals = [dynamics.separation(xi, w[:1], w[1:])[0, 0, 0] for xi in x]
    assert abs(np.mean(vals)) < 0.03  # the plain squared distance would be ~0.2 here
    shifted = x[0].copy()
    shifted[..., :10, 0] += 3.0
    assert dynamics.separation(shifted, w[:1], w[1:])[0, 0, 0] > 0.1


def test_subspace_bases_match_the_core_subspaces():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, D))
    q, rank = dynamics.subspace_bases(means, 3)
    assert rank == 3
    ref = subspace.emotion_subspace(means, 3, centre=True)
    assert subspace.overlap(q, ref) == pytest.approx(1.0)
    a, b = rng.standard_normal((D, 3)), rng.standard_normal((D, 3))
    qa, qb = subspace.orthonormalise(a), subspace.orthonormalise(b)
    got = dynamics.bases_overlap(qa, np.array(3), qb, np.array(3))
    assert got == pytest.approx(subspace.overlap(a, b))
    # Means that differ in one direction only: rank 1, the other columns zero.
    flat = np.outer([0.0, 1.0, 2.0, 3.0], np.eye(D)[0]) + 5.0
    q1, r1 = dynamics.subspace_bases(flat, 3)
    assert r1 == 1 and np.allclose(q1[:, 1:], 0.0)


def test_overlap_with_final_planted_and_structureless():
    feats = _trajectory(0, SWITCH)
    res = dynamics.overlap_with_final(feats, LABELS, k=3, n_perm=100, seed=0)
    t = res.traj
    assert t.value.shape == (S, L) and np.allclose(t.value[-1], 1.0)
    # From the onset on the three planted axes are the subspace: overlap ~1, beyond the null.
    assert t.beyond[ONSET:-1, 1:].all() and (t.value[ONSET:, 1:] > 0.9).all()
    assert not t.beyond[:ONSET].any()
    assert res.random_expectation == pytest.approx(3 / D)
    # Nothing planted: persistent prompt noise makes the overlap far exceed the random-subspace
    # null (k/d), but not the paired label-shuffle null. 20 seeds, family-wise at 5%.
    beyond = 0
    for seed in range(20):
        r = dynamics.overlap_with_final(_trajectory(200 + seed), LABELS, 3, 100, seed)
        beyond += bool(r.traj.beyond.any())
        assert np.nanmean(r.traj.value[-2, 1:]) > 3 * r.random_expectation
    assert beyond <= 4, beyond


def test_consecutive_maps_planted_and_independent():
    rng = np.random.default_rng(0)
    n, d = 60, 8
    x = np.empty((4, 2, n, d))
    x[0] = rng.standard_normal((2, n, d))
    for s in range(1, 4):  # each step a rotation of the last, plus a little noise
        rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
        x[s] = x[s - 1] @ rot + 0.1 * rng.standard_normal((2, n, d))
    t = dynamics.consecutive_maps(x, test_fraction=0.25, ridge_rel=0.01, n_perm=100, seed=0)
    assert t.value.shape == (3, 2) and (t.value > 0.9).all() and t.beyond[:, 1].all()
    # The vectorised null equals refitting with the fit rows permuted; identity = observed.
    fit, test = dynamics.split_rows(n, 0.25, 0)
    rng = np.random.default_rng(1)
    perms = np.stack([np.arange(len(fit))] + [rng.permutation(len(fit)) for _ in range(3)])
    xa, xb = x[0, 1], x[1, 1]
    observed, null = dynamics.map_r2(xa, xb, fit, test, 0.01, perms)
    assert observed == pytest.approx(t.value[0, 1]) and null[0] == pytest.approx(observed)
    xa_f = xa[fit]
    ridge = 0.01 * np.sum((xa_f - xa_f.mean(0)) ** 2) / d
    for p in (1, 2, 3):
        m = alignment.fit_linear(xa_f, xb[fit][perms[p]], ridge)
        assert null[p] == pytest.approx(alignment.r2(m, xa[test], xb[test]), abs=1e-9)
    # Independent steps: inside the null (family-wise, 20 seeds at 5%).
    beyond = 0
    for seed in range(20):
        z = np.random.default_rng(300 + seed).standard_normal((4, 2, n, d))
        beyond += bool(dynamics.consecutive_maps(z, 0.25, 0.1, 100, seed).beyond.any())
    assert beyond <= 4, beyond


def test_probe_trajectory_planted_and_structureless():
    feats = _trajectory(0, SWITCH)
    accs, nulls = zip(*(dynamics.probe_step(f, LABELS, 5, 100, 0) for f in feats), strict=True)
    t = dynamics.trajectory(
        np.stack(accs), np.stack(nulls, axis=1), dynamics.block_layers(S, L), seed=0
    )
    assert t.beyond[ONSET:, 1:].all() and not t.beyond[: ONSET - 1].any()
    assert (t.value[ONSET:, 1:] > 0.5).all() and abs(t.null_mean.mean() - 0.25) < 0.05
    beyond = 0
    for seed in range(6):
        feats = _trajectory(400 + seed)
        accs, nulls = zip(*(dynamics.probe_step(f, LABELS, 5, 100, 0) for f in feats), strict=True)
        tr = dynamics.trajectory(np.stack(accs), np.stack(nulls, axis=1), t.fw_mask, 0)
        beyond += bool(tr.beyond.any())
    assert beyond <= 2, beyond
