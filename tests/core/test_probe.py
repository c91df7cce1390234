"""Shrinkage-LDA probe: finds planted separable classes, sits at chance on random labels, and its
closed form matches a direct d x d implementation."""

import json

import numpy as np
import pytest

from jaxcirc.core import probe

K = 4
N_PER = 30
D = 24


def _planted(seed=0):
    """acts [2, n, D]: layer 0 pure anisotropic noise, layer 1 adds well-separated class means."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(K), N_PER)
    rng.shuffle(labels)
    scales = np.ones(D)
    scales[:3] = 20.0  # huge-norm dims that carry no class information
    noise = scales * rng.standard_normal((2, labels.size, D))
    means = 3.0 * rng.standard_normal((K, D))
    means[:, :3] = 0.0
    acts = noise.copy()
    acts[1] += means[labels]
    return acts, labels


def test_planted_layer_separable_and_noise_layer_at_chance():
    acts, labels = _planted()
    res = probe.probe_accuracy(acts, labels, n_folds=5, seed=0)
    assert res.per_fold.shape == (2, 5)
    assert res.chance == pytest.approx(1 / K)
    assert res.accuracy[1] > 0.95
    assert abs(res.accuracy[0] - 1 / K) < 0.15
    null = probe.probe_shuffle_null(acts, labels, n_folds=5, n_perm=40, seed=1)
    np.testing.assert_allclose(null.mean, 1 / K, atol=0.06)
    assert res.accuracy[1] > null.p95[1]
    assert null.samples.shape == (40, 2)
    assert json.loads(res.to_json())["seed"] == 0


def test_random_labels_give_chance_accuracy():
    acts, _ = _planted()
    labels = np.random.default_rng(5).permutation(np.repeat(np.arange(K), N_PER))
    res = probe.probe_accuracy(acts, labels, seed=2)
    assert np.all(np.abs(res.accuracy - 1 / K) < 0.15)


def test_fixed_shrinkage_and_unstandardised_also_find_planted_layer():
    acts, labels = _planted()
    for shrink, std in ((0.5, True), ("ledoit_wolf", False), (0.1, False)):
        res = probe.probe_accuracy(acts, labels, seed=0, shrinkage=shrink, standardize=std)
        assert res.accuracy[1] > 0.9, (shrink, std, res.accuracy)


def _reference_scores(xtr, ytr, xte, lam):
    """Direct d x d shrinkage LDA, written from the textbook formula."""
    k = ytr.max() + 1
    means = np.stack([xtr[ytr == c].mean(0) for c in range(k)])
    xc = xtr - means[ytr]
    s = xc.T @ xc / xtr.shape[0]
    mu = np.trace(s) / s.shape[0]
    sigma = (1 - lam) * s + lam * mu * np.eye(s.shape[0])
    inv = np.linalg.inv(sigma)
    prior = np.bincount(ytr) / ytr.size
    return xte @ inv @ means.T - 0.5 * np.einsum("kd,de,ke->k", means, inv, means) + np.log(prior)


@pytest.mark.parametrize("m", [20, 60])  # m < d (Woodbury path) and m > d (direct solve)
def test_lda_scores_match_direct_formula(m):
    rng = np.random.default_rng(m)
    d = 32
    ytr = np.arange(m) % 3
    xtr = rng.standard_normal((m, d)) + ytr[:, None] * 0.5
    xte = rng.standard_normal((7, d))
    onehot = np.eye(3)[ytr]
    scores, lam = probe.lda_scores(xtr, onehot, xte, shrinkage=0.3)
    np.testing.assert_allclose(scores, _reference_scores(xtr, ytr, xte, 0.3), rtol=1e-8, atol=1e-8)
    # batched over a leading axis gives the same as one at a time
    b_scores, _ = probe.lda_scores(np.stack([xtr, 2 * xtr]), onehot, np.stack([xte, 2 * xte]), 0.3)
    np.testing.assert_allclose(b_scores[0], scores, rtol=1e-10, atol=1e-10)


def test_class_absent_from_training_gets_minus_inf():
    rng = np.random.default_rng(0)
    xtr, xte = rng.standard_normal((12, 30)), rng.standard_normal((4, 30))
    onehot = np.eye(3)[np.arange(12) % 2]  # class 2 never seen
    scores, _ = probe.lda_scores(xtr, onehot, xte)
    assert np.all(np.isneginf(scores[:, 2])) and np.all(np.isfinite(scores[:, :2]))


def test_ledoit_wolf_matches_textbook_formula():
    rng = np.random.default_rng(0)
    for m, d in ((15, 40), (80, 10)):
        x = rng.standard_normal((m, d)) * np.linspace(0.5, 3, d)
        x -= x.mean(0)
        s = x.T @ x / m
        mu = np.trace(s) / d
        delta = np.sum((s - mu * np.eye(d)) ** 2) / d
        beta = sum(np.sum((np.outer(r, r) - s) ** 2) for r in x) / (m**2 * d)
        expected = min(beta, delta) / delta
        assert probe.ledoit_wolf_shrinkage(x) == pytest.approx(expected, rel=1e-9)


def test_stratified_folds_balanced_and_seeded():
    labels = np.repeat(np.arange(3), 10)
    f = probe.stratified_folds(labels, 5, seed=0)
    for c in range(3):
        np.testing.assert_array_equal(np.bincount(f[labels == c], minlength=5), [2] * 5)
    np.testing.assert_array_equal(f, probe.stratified_folds(labels, 5, seed=0))
    assert not np.array_equal(f, probe.stratified_folds(labels, 5, seed=1))
    with pytest.raises(ValueError, match="n_folds"):
        probe.stratified_folds(np.repeat(np.arange(3), 3), 5, seed=0)


def test_bad_inputs_raise_value_error():
    acts, labels = _planted()
    with pytest.raises(ValueError, match="acts"):
        probe.probe_accuracy(acts[0], labels)
    with pytest.raises(ValueError, match="labels"):
        probe.probe_accuracy(acts, labels[:-1])
    with pytest.raises(ValueError, match="shrinkage"):
        probe.probe_accuracy(acts, labels, shrinkage="oas")
