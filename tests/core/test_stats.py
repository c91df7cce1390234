"""Bootstrap coverage, determinism, paired differences, permutation p-values."""

import json

import numpy as np
import pytest

from jaxcirc.core import stats


def test_bootstrap_ci_covers_true_mean_at_nominal_rate():
    # 200 independent experiments of n=40 skewed samples (exponential, true mean 1.0), one
    # vectorised call: the percentile CI should cover the truth in >= 90% of them (nominal 95%).
    rng = np.random.default_rng(123)
    values = rng.exponential(1.0, size=(200, 40))
    est = stats.bootstrap_ci(values, n_boot=2000, seed=7)
    covered = (est.lo <= 1.0) & (1.0 <= est.hi)
    assert est.lo.shape == (200,)
    assert covered.mean() >= 0.90, covered.mean()
    # and the CI is not trivially wide: mean width close to 2 * 1.96 * sigma / sqrt(n)
    np.testing.assert_allclose(np.mean(est.hi - est.lo), 2 * 1.96 / np.sqrt(40), rtol=0.15)


def test_bootstrap_ci_deterministic_for_seed_and_records_it():
    x = np.random.default_rng(0).normal(size=50)
    a = stats.bootstrap_ci(x, seed=3, what="toy")
    b = stats.bootstrap_ci(x, seed=3, what="toy")
    c = stats.bootstrap_ci(x, seed=4, what="toy")
    assert (a.lo, a.hi) == (b.lo, b.hi)
    assert (a.lo, a.hi) != (c.lo, c.hi)
    assert a.seed == 3 and a.n == 50 and a.n_boot == 2000
    assert a.value == pytest.approx(x.mean())
    assert json.loads(a.to_json())["what"] == "toy"


def test_bootstrap_median_and_leading_axes_share_resamples():
    x = np.random.default_rng(1).normal(size=(3, 25))
    est = stats.bootstrap_ci(x, stat="median", seed=0)
    np.testing.assert_allclose(est.value, np.median(x, axis=-1))
    assert np.all(est.lo <= est.value) and np.all(est.value <= est.hi)
    # The same seed on one row reproduces that row's CI (same resample indices for every row).
    row = stats.bootstrap_ci(x[1], stat="median", seed=0)
    assert row.lo == pytest.approx(est.lo[1]) and row.hi == pytest.approx(est.hi[1])


def test_paired_diff_is_narrower_than_unpaired_when_pairs_correlate():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 5, size=60)  # large per-prompt variation shared by both conditions
    a = base + 0.5 + rng.normal(0, 0.3, size=60)
    b = base + rng.normal(0, 0.3, size=60)
    d = stats.paired_bootstrap_diff(a, b, seed=0)
    assert d.lo > 0.3 and d.hi < 0.7  # the planted +0.5 effect, tightly
    wide_a = stats.bootstrap_ci(a, seed=0)
    assert (d.hi - d.lo) < 0.2 * (wide_a.hi - wide_a.lo)
    with pytest.raises(ValueError, match="paired"):
        stats.paired_bootstrap_diff(a, b[:-1])


def test_permutation_pvalue_plus_one_correction():
    null = np.arange(99, dtype=float)  # 0..98
    assert stats.permutation_pvalue(1000.0, null) == pytest.approx(1 / 100)
    assert stats.permutation_pvalue(-1.0, null) == pytest.approx(1.0)
    assert stats.permutation_pvalue(49.0, null) == pytest.approx((1 + 50) / 100)
    assert stats.permutation_pvalue(-1.0, null, "less") == pytest.approx(1 / 100)
    two = stats.permutation_pvalue(3.0, np.array([-4.0, 1.0, 2.0, -1.0]), "two-sided")
    assert two == pytest.approx(2 / 5)
    # vectorised over trailing axes
    p = stats.permutation_pvalue(np.array([1000.0, -1.0]), np.stack([null, null], axis=1))
    np.testing.assert_allclose(p, [0.01, 1.0])


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="values"):
        stats.bootstrap_ci([1.0])
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_ci([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="stat"):
        stats.bootstrap_ci([1.0, 2.0], stat="mode")
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_ci([1.0, 2.0], level=95)


def test_draws_equal_to_the_observed_up_to_rounding_count_as_ties():
    """A figure equal to its null by construction (every draw 1 up to rounding, as an overlap of
    a subspace with itself): p is 1 whichever way rounding fell, not a count of rounding signs
    (the old strict >= gave 0.12 here); a draw 1e-6 below still counts as below."""
    from jaxcirc.core import dynamics, selection

    rng = np.random.default_rng(0)
    null = 1.0 + 1e-15 * rng.standard_normal(40)
    observed = 1.0 + 1e-15
    assert stats.permutation_pvalue(observed, null) == 1.0
    assert stats.permutation_pvalue(-observed, -null, alternative="less") == 1.0
    assert selection.max_test(observed, null).p == 1.0
    assert stats.permutation_pvalue(1.0, np.full(9, 1.0 - 1e-6)) == 0.1
    # A trajectory cell whose null spread is rounding is constant: p 1, never beyond.
    value = np.array([[0.5, observed]])
    draws = np.stack([rng.uniform(0, 1, 40), null], axis=-1)[:, None, :]  # [draw, 1, 2]
    traj = dynamics.trajectory(value, draws, np.ones_like(value, bool), seed=0)
    assert traj.p_value[0, 1] == 1.0 and not traj.beyond[0, 1]
