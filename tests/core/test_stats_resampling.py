"""Resampling helpers of core.stats: stratified bootstrap counts keep class sizes, the share of
resamples picking each argmax, percentile bands."""

import numpy as np
import pytest

from jaxcirc.core import stats


def test_stratified_counts_keep_class_sizes_and_seed():
    labels = np.repeat([0, 1, 2], [5, 7, 9])
    c = stats.stratified_counts(labels, 300, seed=1)
    assert c.shape == (300, 21)
    for k, size in ((0, 5), (1, 7), (2, 9)):
        np.testing.assert_array_equal(c[:, labels == k].sum(axis=1), size)
    np.testing.assert_allclose(c.mean(axis=0), 1.0, atol=0.2)
    np.testing.assert_array_equal(c, stats.stratified_counts(labels, 300, seed=1))
    with pytest.raises(ValueError, match="labels"):
        stats.stratified_counts(np.zeros((2, 2)), 5, 0)


def test_argmax_shares():
    x = np.array([[0.0, 1.0, 0.5], [2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [0.0, 5.0, 0.0]])
    np.testing.assert_allclose(stats.argmax_shares(x), [0.25, 0.5, 0.25])


def test_percentile_band():
    lo, hi = stats.percentile_band(np.arange(101.0), 0.9)
    assert (lo, hi) == pytest.approx((5.0, 95.0))
