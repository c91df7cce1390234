"""A maximum read against the same maximum over control draws: the p formula, its floor, and its
calibration with nothing planted (the best of many cells is NOT beyond the control more often
than the level says)."""

from __future__ import annotations

import numpy as np
import pytest

from jaxcirc.core import selection


def test_p_counts_draws_at_least_the_observed():
    t = selection.max_test(0.5, [0.1, 0.6, 0.5, 0.2])
    assert t.p == pytest.approx(3 / 5) and t.n_at_least == 2 and t.p_floor == pytest.approx(0.2)
    assert t.verdict(0.05) == "within_control"
    t = selection.max_test(0.9, np.zeros(10))
    assert t.p == pytest.approx(1 / 11) and t.verdict(0.05) == "beyond_all_draws"
    assert t.verdict(0.1) == "beyond_control"
    assert selection.max_test(0.9, np.zeros(99)).verdict(0.05) == "beyond_control"
    with pytest.raises(ValueError, match="at least one"):
        selection.max_test(1.0, [])


def test_best_cell_and_eligible_max():
    stat = selection.per_unit_push(np.array([[0.8, 0.0, 4.0], [-1.0, 0.0, 1.0]]), [-2, 0, 4])
    np.testing.assert_allclose(stat, [[0.4, np.nan, 1.0], [0.5, np.nan, 0.25]])
    ok = np.array([[True, True, False], [True, True, True]])
    best = selection.best_cell(stat, ok)
    assert best.index == (1, 0) and best.stat == pytest.approx(0.5)
    assert selection.best_cell(stat, np.zeros_like(ok)).index is None
    # Per draw, over its own eligible cells; a draw with none counts as 0.
    null = np.stack([stat, 2 * stat, stat])
    elig = np.stack([ok, ok, np.zeros_like(ok)])
    np.testing.assert_allclose(selection.eligible_max(null, elig), [0.5, 1.0, 0.0])


def test_max_over_cells_is_calibrated_with_nothing_planted():
    """An 'emotion' draw exchangeable with 19 control draws, each the best of 24 noisy cells
    (some ineligible): the share of p <= 0.05 stays at 0.05, where comparing the best cell with
    the control AT that cell calls most of them effects."""
    rng = np.random.default_rng(0)
    n_rep, hits, naive = 2000, 0, 0
    alphas = np.array([-4.0, -2.0, 2.0, 4.0])
    for _ in range(n_rep):
        value = rng.standard_normal((20, 6, 4)) * np.abs(alphas)  # effects grow with the push
        ok = rng.random((20, 6, 4)) > 0.2
        stat = selection.per_unit_push(value, alphas)
        best = selection.best_cell(stat[0], ok[0])
        t = selection.max_test(best.stat, selection.eligible_max(stat[1:], ok[1:]))
        hits += t.p <= 0.05
        cell = np.abs(value[1:][(slice(None),) + best.index])
        naive += (1 + (cell >= abs(value[0][best.index])).sum()) / 20 <= 0.05
    assert abs(hits / n_rep - 0.05) < 0.015
    assert naive / n_rep > 0.3  # the uncorrected comparison the issue found: ~0.5


def test_signflip_finds_a_planted_shift_and_not_noise():
    rng = np.random.default_rng(1)
    diff = rng.standard_normal((4, 30))
    diff[2] += 1.0  # layer 2: source beats control on every target by 1 SD on average
    layer, t = selection.signflip_max_test(diff, 999, seed=0)
    assert layer == 2 and t.p == pytest.approx(1 / 1000) and t.verdict(0.05) == "beyond_control"
    ps = [
        selection.signflip_max_test(rng.standard_normal((4, 30)), 199, s)[1].p for s in range(300)
    ]
    assert abs(np.mean(np.asarray(ps) <= 0.05) - 0.05) < 0.035
