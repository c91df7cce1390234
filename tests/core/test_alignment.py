"""Planted alignment: X_B = X_A R + noise is found (and R recovered); independent spaces are not;
n < d is flagged; every overlap comes with a null that behaves as it should."""

import json
import warnings

import numpy as np
import pytest

from jaxcirc.core import alignment, subspace

D = 64
K = 3
S = alignment.AlignSettings


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _rotated(n_fit, n_test=128, seed=0, noise=0.05):
    """Anisotropic X_A, X_B = X_A R + offset + noise; emotion basis in A and its image in B."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 3.0, D)
    xa = rng.standard_normal((n_fit + n_test, D)) * scales + 2.0
    r = _rotation(D, rng)
    xb = xa @ r + 5.0 + noise * rng.standard_normal(xa.shape)
    basis_a, _ = np.linalg.qr(rng.standard_normal((D, K)))
    basis_b = r.T @ basis_a  # the same directions seen in B's coordinates
    return xa[:n_fit], xb[:n_fit], xa[n_fit:], xb[n_fit:], basis_a, basis_b, r


def test_planted_rotation_is_found_with_enough_data():
    xa, xb, xat, xbt, ba, bb, r = _rotated(n_fit=4 * D)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # n = 4d must not warn
        rep = alignment.align(xa, xb, xat, xbt, ba, bb, S(ridge=0.0, n_perm=50, seed=0))
    assert rep.overlap_linear > 0.98
    assert rep.overlap_procrustes > 0.98
    assert rep.r2_test_linear > 0.95 and rep.r2_test_procrustes > 0.95
    assert rep.overlap_linear_null.mean < 0.2  # near k/d = 0.047, nowhere near the real fit
    assert rep.overlap_linear_null.hi < 0.3
    assert rep.r2_test_linear_null.hi < 0.05
    assert rep.r2_test_procrustes_null.hi < 0.05
    assert rep.overlap_raw < 0.3 and rep.delta_cos2_linear > 0.6
    assert rep.delta_angle_rad_linear > 0.5
    assert rep.warnings == []
    assert rep.n_over_d == pytest.approx(4.0)
    assert rep.cka_fit > 0.99 and rep.cka_fit_pvalue == pytest.approx(1 / 51)
    blob = json.loads(rep.to_json())
    assert blob["seed"] == 0 and blob["overlap_linear_null"]["n"] == 50


def test_procrustes_recovers_rotation():
    xa, xb, *_, r = _rotated(n_fit=4 * D)
    m = alignment.fit_procrustes(xa, xb)
    assert m.kind == "procrustes"
    assert np.linalg.norm(m.R - r) / np.linalg.norm(r) < 0.05
    assert m.scale == pytest.approx(1.0, abs=0.02)
    np.testing.assert_allclose(m.R.T @ m.R, np.eye(D), atol=1e-10)
    np.testing.assert_allclose(m.b, 5.0, atol=0.2)


def test_semi_orthogonal_procrustes_when_dims_differ():
    rng = np.random.default_rng(1)
    xa = rng.standard_normal((200, 20))
    q, _ = np.linalg.qr(rng.standard_normal((30, 20)))  # embed 20 dims into 30
    xb = xa @ q.T
    m = alignment.fit_procrustes(xa, xb, scale=False)
    assert m.W.shape == (20, 30)
    np.testing.assert_allclose(m.W @ m.W.T, np.eye(20), atol=1e-10)
    np.testing.assert_allclose(m.W, q.T, atol=1e-8)


def test_procrustes_with_fewer_samples_than_dims_is_the_partial_isometry_and_stable():
    """n - 1 < d: the data fix the rotation on the span of the centred samples only. The map is
    that partial isometry (zero on the rest), so a 1e-7 relative change of the inputs (a sharded
    matmul's summation order) moves it by rounding only; U V^T's arbitrary completion moved
    O(1) (the old code fails the first check)."""
    rng = np.random.default_rng(3)
    n, d = 20, 32
    xa = rng.standard_normal((n, d))
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    xb = xa @ q + 0.01 * rng.standard_normal((n, d))
    m = alignment.fit_procrustes(xa, xb, scale=False)
    nudged = xa * (1.0 + 1e-7 * rng.standard_normal(xa.shape))
    np.testing.assert_allclose(alignment.fit_procrustes(nudged, xb, scale=False).W, m.W, atol=1e-5)
    xac = xa - xa.mean(axis=0)
    span = np.linalg.svd(xac, full_matrices=False)[2][: n - 1]  # [n-1, d] rows the data span
    rest = np.linalg.svd(span.T @ span - np.eye(d))[0][:, : d - (n - 1)]  # [d, d-n+1]
    np.testing.assert_allclose(rest.T @ m.W, 0.0, atol=1e-8)  # nothing fitted, nothing mapped
    np.testing.assert_allclose(m.W.T @ m.W, (m.W.T @ m.W) @ (m.W.T @ m.W), atol=1e-8)
    np.testing.assert_allclose(np.linalg.matrix_rank(m.W), n - 1)


def test_fit_linear_exact_and_ridge_shrinks():
    rng = np.random.default_rng(2)
    xa = rng.standard_normal((100, 10))
    w = rng.standard_normal((10, 4))
    xb = xa @ w + [1.0, 2.0, 3.0, 4.0]
    m = alignment.fit_linear(xa, xb)
    np.testing.assert_allclose(m.W, w, atol=1e-10)
    np.testing.assert_allclose(m.b, [1.0, 2.0, 3.0, 4.0], atol=1e-10)
    assert alignment.r2(m, xa, xb) == pytest.approx(1.0)
    # ridge equals the normal-equation solution on centred data
    ridge = 7.0
    xac, xbc = xa - xa.mean(0), xb - xb.mean(0)
    w_ref = np.linalg.solve(xac.T @ xac + ridge * np.eye(10), xac.T @ xbc)
    np.testing.assert_allclose(alignment.fit_linear(xa, xb, ridge).W, w_ref, atol=1e-10)
    # n < d: the min-norm map interpolates the fit data exactly
    few_a, few_b = rng.standard_normal((8, 30)), rng.standard_normal((8, 5))
    interp = alignment.fit_linear(few_a, few_b)
    np.testing.assert_allclose(alignment.apply_map(interp, few_a), few_b, atol=1e-9)


def test_n_below_d_warns_and_report_says_so():
    xa, xb, xat, xbt, ba, bb, _ = _rotated(n_fit=D // 2)
    with pytest.warns(UserWarning, match="a full-rank map can fit almost anything"):
        rep = alignment.align(xa, xb, xat, xbt, ba, bb, S(n_perm=20, seed=0))
    assert any(f"n={D // 2} <= d={D}" in w for w in rep.warnings)
    assert rep.n_over_d == pytest.approx(0.5)


def test_independent_spaces_overlap_near_random_and_r2_not_positive():
    rng = np.random.default_rng(4)
    n_fit, n_test = 4 * D, 128
    xa = rng.standard_normal((n_fit + n_test, D))
    xb = rng.standard_normal((n_fit + n_test, D))
    ba, _ = np.linalg.qr(rng.standard_normal((D, K)))
    bb, _ = np.linalg.qr(rng.standard_normal((D, K)))
    with pytest.warns(UserWarning, match="inside the shuffled-pairing null band"):
        rep = alignment.align(
            xa[:n_fit], xb[:n_fit], xa[n_fit:], xb[n_fit:], ba, bb, S(n_perm=50, seed=1)
        )
    expected = subspace.random_overlap_expectation(K, D)
    assert abs(rep.overlap_linear - expected) < 0.1
    assert rep.overlap_random_null.lo <= rep.overlap_linear <= rep.overlap_random_null.hi
    assert rep.r2_test_linear <= 0.02
    assert rep.overlap_linear <= rep.overlap_linear_null.hi


def test_cka_rotated_is_one_and_independent_sits_at_its_null():
    rng = np.random.default_rng(5)
    xa = rng.standard_normal((100, 20)) * np.linspace(0.5, 2, 20)
    r = _rotation(20, rng)
    assert alignment.linear_cka(xa, 3.0 * xa @ r + 1.0) == pytest.approx(1.0, abs=1e-10)
    xb = rng.standard_normal((100, 30))
    cka = alignment.linear_cka(xa, xb)
    null = alignment.cka_permutation_null(xa, xb, n_perm=500, seed=0)
    assert null.lo <= cka <= null.hi
    assert 0.1 < null.mean < 0.4  # not zero: independent data in these n, d
    assert abs(cka - null.mean) < 0.1


def test_shuffled_null_matches_explicit_refits():
    """The vectorised null equals refitting on each permuted pairing explicitly."""
    xa, xb, xat, xbt, ba, bb, _ = _rotated(n_fit=80, n_test=20, seed=3)
    nulls = alignment.shuffled_pairing_null(
        xa, xb, xat, xbt, ba, bb, S(ridge=2.0, n_perm=5, seed=9)
    )
    rng = np.random.default_rng(9)
    perms = rng.permuted(np.broadcast_to(np.arange(80), (5, 80)), axis=1)
    lin = [alignment.fit_linear(xa, xb[p], 2.0) for p in perms]
    pro = [alignment.fit_procrustes(xa, xb[p]) for p in perms]
    ov_lin = [alignment.mapped_subspace_overlap(m, ba, bb) for m in lin]
    r2_pro = [alignment.r2(m, xat, xbt) for m in pro]
    assert nulls["overlap_linear"].mean == pytest.approx(np.mean(ov_lin), rel=1e-9)
    assert nulls["r2_procrustes"].mean == pytest.approx(np.mean(r2_pro), rel=1e-9)
    r2_lin = [alignment.r2(m, xat, xbt) for m in lin]
    assert nulls["r2_linear"].lo == pytest.approx(np.percentile(r2_lin, 2.5), rel=1e-9)


def test_angle_improvement_definition():
    e = np.eye(4)
    m = alignment.LinearMap(W=np.eye(4)[:, [1, 0, 2, 3]], b=np.zeros(4), ridge=0.0, n=0, dA=4, dB=4)
    ch = alignment.angle_improvement(m, e[:, [0]], e[:, [1]])  # the map swaps e0 and e1
    assert ch.overlap_before == pytest.approx(0.0) and ch.overlap_after == pytest.approx(1.0)
    assert ch.delta_cos2 == pytest.approx(1.0)
    assert ch.delta_angle_rad == pytest.approx(np.pi / 2)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="row counts"):
        alignment.fit_linear(np.ones((5, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="ridge"):
        alignment.fit_linear(np.ones((5, 2)), np.ones((5, 2)), ridge=-1.0)
    with pytest.raises(ValueError, match="constant"):
        alignment.linear_cka(np.ones((5, 2)), np.random.default_rng(0).normal(size=(5, 2)))


# --------------------------------------------------------------------------------------------
# Whole-prompt nulls, point figures, the whole-prompt bootstrap
# --------------------------------------------------------------------------------------------


def test_prompt_permutations_move_whole_prompts_to_the_same_positions():
    lengths = [3, 2, 3, 3, 2, 4]
    groups = np.repeat(np.arange(6), lengths)
    pos = np.concatenate([np.arange(n) for n in lengths])
    perms = alignment.prompt_permutations(groups, 50, seed=0)
    assert perms.shape == (50, groups.size)
    moved = 0
    for p in perms:
        assert sorted(p) == list(range(groups.size))  # a permutation of the rows
        np.testing.assert_array_equal(pos[p], pos)  # every row keeps its position
        for g in range(6):
            src = groups[p[groups == g]]
            assert len(set(src)) == 1  # a prompt's rows all come from ONE prompt...
            assert lengths[src[0]] == lengths[g]  # ...of the same length
        moved += np.any(groups[p] != groups)
    assert moved > 40
    assert groups[alignment.prompt_permutations(groups, 1, 0)[0][groups == 5]].tolist() == [5] * 4
    design = alignment.permutation_design(groups)
    assert design == {"unit": "whole prompt", "prompts": 6, "strata": 3, "fixed_prompts": 1}


def test_one_row_per_prompt_permutes_as_a_plain_row_permutation():
    n = 30
    rng = np.random.default_rng(4)
    expect = rng.permuted(np.broadcast_to(np.arange(n), (7, n)), axis=1)
    np.testing.assert_array_equal(alignment.prompt_permutations(np.arange(n), 7, 4), expect)


def test_figures_equal_the_point_figures_of_align():
    xa, xb, xat, xbt, ba, bb, _ = _rotated(n_fit=2 * D, seed=2)
    s = S(ridge=3.0, n_perm=5, seed=0)
    rep = alignment.align(xa, xb, xat, xbt, ba, bb, s)
    f = alignment.figures(xa, xb, xat, xbt, ba, bb, s)
    assert f["overlap_linear"] == pytest.approx(rep.overlap_linear)
    assert f["overlap_procrustes"] == pytest.approx(rep.overlap_procrustes)
    assert f["r2_test_linear"] == pytest.approx(rep.r2_test_linear)
    assert f["r2_test_procrustes"] == pytest.approx(rep.r2_test_procrustes)
    assert f["cka_fit"] == pytest.approx(rep.cka_fit) and f["overlap_raw"] == rep.overlap_raw
    assert set(rep.null_samples) == {
        "overlap_linear", "r2_linear", "overlap_procrustes", "r2_procrustes", "cka_fit"
    }  # fmt: skip
    assert rep.null_design["unit"] == "prompt (one row each)"


def test_linear_r2_null_matches_explicit_refits_with_whole_prompts():
    xa, xb, xat, xbt, *_ = _rotated(n_fit=60, n_test=20, seed=5)
    groups = np.repeat(np.arange(20), 3)
    s = S(ridge=1.5, n_perm=6, seed=3)
    null = alignment.linear_r2_null_samples(xa, xb, xat, xbt, s, groups)
    perms = alignment.prompt_permutations(groups, 6, 3)
    explicit = [alignment.r2(alignment.fit_linear(xa, xb[p], 1.5), xat, xbt) for p in perms]
    np.testing.assert_allclose(null, explicit, rtol=1e-9)
    samples = alignment.shuffled_pairing_samples(
        xa, xb, xat, xbt, np.eye(D)[:, :2], np.eye(D)[:, :2], s, groups, procrustes=False
    )
    assert set(samples) == {"overlap_linear", "r2_linear"}
    np.testing.assert_allclose(samples["r2_linear"], explicit, rtol=1e-9)


def _boot_world(seed, rotated: bool, n_per=12, rows=4, d=8):
    """BootData of 4 classes x n_per prompts, `rows` fit rows per neutral prompt. B = A rotated
    (shared structure) or independent. Class sums carry planted class directions in A."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), n_per)
    neutral = np.flatnonzero(labels == 3)
    xa = rng.standard_normal((neutral.size * rows, d)) * np.linspace(0.5, 2.0, d)
    dirs = 3.0 * rng.standard_normal((4, d))
    sums_a = dirs[labels] + rng.standard_normal((labels.size, d))
    r = _rotation(d, rng)
    if rotated:
        xb, sums_b = xa @ r + 0.01 * rng.standard_normal(xa.shape), sums_a @ r
    else:
        xb = rng.standard_normal(xa.shape)
        sums_b = 3.0 * rng.standard_normal((4, d))[labels] + rng.standard_normal(sums_a.shape)
    side = lambda x, s: alignment.BootSide(x, s, np.ones(labels.size))  # noqa: E731
    return alignment.BootData(
        labels, np.repeat(neutral, rows), side(xa, sums_a), [side(xb, sums_b)], 3, 0.0
    )


def test_bootstrap_overlaps_with_unit_counts_equal_the_point_figures():
    """One prompt per class: every resample draws each prompt once, so every bootstrap value is
    the point figure of the fitted maps."""
    rng = np.random.default_rng(0)
    d, rows = 6, 40
    xa = rng.standard_normal((rows, d))
    xb = xa @ _rotation(d, rng) + rng.standard_normal((rows, d))
    sums_a, sums_b = rng.standard_normal((4, d)), rng.standard_normal((4, d))
    data = alignment.BootData(
        np.arange(4),
        np.full(rows, 3),
        alignment.BootSide(xa, sums_a, np.ones(4)),
        [alignment.BootSide(xb, sums_b, np.ones(4))],
        k=3,
        ridge_rel=0.5,
    )
    boot = alignment.bootstrap_overlaps(data, n_boot=3, seed=0)
    qa, qb = subspace.difference_basis(sums_a, 3), subspace.difference_basis(sums_b, 3)
    ridge = 0.5 * np.sum((xa - xa.mean(0)) ** 2) / d
    lin, pro = alignment.fit_linear(xa, xb, ridge), alignment.fit_procrustes(xa, xb)
    np.testing.assert_allclose(boot["overlap_raw"], subspace.overlap(qa, qb))
    np.testing.assert_allclose(
        boot["overlap_linear"], alignment.mapped_subspace_overlap(lin, qa, qb), rtol=1e-8
    )
    np.testing.assert_allclose(
        boot["overlap_procrustes"], alignment.mapped_subspace_overlap(pro, qa, qb), rtol=1e-8
    )
    assert boot["overlap_linear"].shape == (3, 1)


def test_bootstrap_overlaps_planted_and_independent():
    """Planted (B = A rotated): the CI of the mapped overlap sits near 1. Independent B: it sits
    low, well below the planted one, and covers values near the k/d scale."""
    rot = alignment.bootstrap_overlaps(_boot_world(0, True), n_boot=100, seed=0)
    ind = alignment.bootstrap_overlaps(_boot_world(0, False), n_boot=100, seed=0)
    assert np.percentile(rot["overlap_linear"], 2.5) > 0.95
    assert np.percentile(rot["overlap_procrustes"], 2.5) > 0.95
    assert np.percentile(ind["overlap_linear"], 97.5) < 0.9
    assert np.nanmean(ind["overlap_procrustes"]) < 0.7
