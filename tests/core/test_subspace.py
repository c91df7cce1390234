"""Principal angles of constructed subspaces, the k/d random baseline, PCA subspaces."""

import numpy as np
import pytest

from jaxcirc.core import subspace


def test_principal_angles_of_constructed_subspaces():
    d = 6
    e = np.eye(d)
    theta = 0.7
    a = e[:, [0, 1]]
    b = np.stack([np.cos(theta) * e[0] + np.sin(theta) * e[2], e[1]], axis=1)
    np.testing.assert_allclose(subspace.principal_angles(a, b), [0.0, theta], atol=1e-7)
    assert subspace.overlap(a, b) == pytest.approx((1 + np.cos(theta) ** 2) / 2)
    # non-orthonormal inputs spanning the same planes give the same angles
    np.testing.assert_allclose(
        subspace.principal_angles(a @ [[2.0, 1.0], [0.0, 3.0]], b * 5), [0.0, theta], atol=1e-7
    )
    # orthogonal subspaces
    np.testing.assert_allclose(subspace.principal_angles(a, e[:, [3, 4]]), [np.pi / 2] * 2)
    assert subspace.overlap(a, e[:, [3, 4]]) == pytest.approx(0.0, abs=1e-12)


def test_identical_subspaces_overlap_one():
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((50, 3)))
    mix = np.random.default_rng(1).standard_normal((3, 3))
    assert subspace.overlap(q, q @ mix) == pytest.approx(1.0, abs=1e-10)


def test_random_overlap_expectation_matches_monte_carlo():
    for k, d in ((3, 50), (5, 40), (3, 300)):
        null = subspace.random_overlap_null(k, d, n=2000, seed=0)
        assert null.mean == pytest.approx(subspace.random_overlap_expectation(k, d), abs=0.01)
        assert null.lo < k / d < null.hi
        assert null.seed == 0 and null.n == 2000
    # unequal dims: mean over min(ka, kb) angles -> max(ka, kb) / d
    rng = np.random.default_rng(3)
    qa, _ = np.linalg.qr(rng.standard_normal((1000, 30, 2)))
    qb, _ = np.linalg.qr(rng.standard_normal((1000, 30, 5)))
    mc = np.mean(np.sum((qa.swapaxes(1, 2) @ qb) ** 2, axis=(1, 2)) / 2)
    assert mc == pytest.approx(subspace.random_overlap_expectation(2, 30, 5), abs=0.01)


def test_emotion_subspace_recovers_planted_span():
    rng = np.random.default_rng(0)
    d = 40
    q, _ = np.linalg.qr(rng.standard_normal((d, 3)))
    offset = 50.0 * rng.standard_normal(d)
    # 200 activations = offset + planted 3-dim structure + small noise
    x = offset + rng.standard_normal((200, 3)) * [5.0, 4.0, 3.0] @ q.T
    x += 0.05 * rng.standard_normal(x.shape)
    basis = subspace.emotion_subspace(x, 3, centre=True)
    assert basis.shape == (d, 3)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-10)
    assert subspace.overlap(basis, q) > 0.99
    # uncentred, the offset takes the first direction and the planted span is not recovered
    raw = subspace.emotion_subspace(x, 3, centre=False)
    assert subspace.overlap(raw, q) < 0.8
    # k class vectors, centred: at most k - 1 dims
    with pytest.raises(ValueError, match="k_dims"):
        subspace.emotion_subspace(x[:3], 3, centre=True)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="different spaces"):
        subspace.principal_angles(np.eye(4)[:, :2], np.eye(5)[:, :2])
    with pytest.raises(ValueError, match="zero"):
        subspace.overlap(np.zeros((4, 2)), np.eye(4)[:, :2])
    with pytest.raises(ValueError, match="k, k_b, d"):
        subspace.random_overlap_expectation(10, 5)


def test_difference_basis_rank_and_span():
    rng = np.random.default_rng(0)
    means = rng.standard_normal((4, 10))
    q = subspace.difference_basis(means, 3)
    assert q.shape == (10, 3)
    np.testing.assert_allclose(q.T @ q, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(q, subspace.emotion_subspace(means, 3), atol=1e-12)
    # two distinct rows only: one direction, whatever k asks
    flat = np.stack([means[0], means[0], means[1], means[1]])
    assert subspace.difference_basis(flat, 3).shape == (10, 1)
    assert subspace.difference_basis(np.ones((4, 10)), 3).shape == (10, 0)
