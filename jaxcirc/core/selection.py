"""A figure chosen as the largest of several, read against the same choice made on each control.

    stat = per_unit_push(value, alphas)                       # [..., layer, alpha]
    best = best_cell(stat, eligible)                          # the chosen cell and its figure
    test = max_test(best.stat, eligible_max(null_stat, null_eligible))
    layer, test = signflip_max_test(diff, n_flip, seed)        # paired source - control per layer

Picking the best of many cells and comparing it with the control AT that cell alone ignores that
it was picked: with no structure at all, the best of 24 cells falls outside a per-cell band most
of the time. Here every control draw (a random direction, a shuffled labelling, a sign flip) goes
through the same choice, and the observed figure is ranked among the draws' maxima:

    p = (1 + #{draws whose maximum >= observed}) / (1 + n_draws)

which can be no smaller than 1 / (1 + n_draws) (`MaxTest.p_floor`): say it beside every p.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcirc.core import stats

# What a verdict says, by code (summary files carry the codes; the report prints the meanings).
VERDICTS = {
    "beyond_control": "p <= the level: the figure exceeds what the control's draws reach by the "
    "same selection",
    "beyond_all_draws": "the figure exceeds every control draw, but the draws are too few for p "
    "to reach the level (p = its floor 1 / (n + 1))",
    "within_control": "the control's draws reach the figure as often as p says (p > the level)",
    "untestable": "no eligible cell to choose from (e.g. no coherent generation)",
    "no_control": "a cell was chosen but the run has no control draws for this measure",
}


def per_unit_push(value, alphas) -> np.ndarray:
    """|value| / |alpha| over the last axis (alpha): the change per unit of push, NaN at alpha 0.

    Effects grow with the push, so cells of different alphas are compared per unit of it; the
    sign is dropped (a measure that falls as strongly as another rises is as much an effect)."""
    a = np.abs(np.asarray(alphas, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.abs(np.asarray(value, np.float64)) / a
    return np.where(a > 0, out, np.nan)


@dataclasses.dataclass(frozen=True)
class Best:
    """The chosen cell: index into the candidate axes (None when none is eligible) and its
    figure (0 when none)."""

    index: tuple[int, ...] | None
    stat: float


def best_cell(stat, eligible) -> Best:
    """The eligible cell with the largest finite `stat` (same shapes; ties: the first)."""
    stat, ok = np.asarray(stat, np.float64), np.asarray(eligible, bool) & np.isfinite(stat)
    if not ok.any():
        return Best(None, 0.0)
    flat = int(np.argmax(np.where(ok, stat, -np.inf)))
    idx = tuple(int(i) for i in np.unravel_index(flat, stat.shape))
    return Best(idx, float(stat[idx]))


def eligible_max(stat, eligible) -> np.ndarray:
    """[n] each draw's largest finite `stat` over its eligible cells (stat, eligible: [n, ...]);
    0 for a draw with none (the figures are >= 0, so such a draw never beats an observed one)."""
    stat = np.asarray(stat, np.float64)
    ok = np.broadcast_to(np.asarray(eligible, bool), stat.shape) & np.isfinite(stat)
    flat = np.where(ok, stat, 0.0).reshape(stat.shape[0], -1)
    return flat.max(axis=1) if flat.shape[1] else np.zeros(stat.shape[0])


@dataclasses.dataclass(frozen=True)
class MaxTest:
    """observed (the chosen figure) against null_max [n] (each control draw's figure, chosen by
    the same rule): p, its floor 1 / (n + 1), and how many draws reached the observed figure."""

    observed: float
    null_max: np.ndarray
    p: float
    n: int
    p_floor: float
    n_at_least: int

    def quantiles(self, qs=(0.5, 0.95)) -> list[float]:
        """The null maxima's quantiles (default median and 95th percentile)."""
        return [float(np.quantile(self.null_max, q)) for q in qs]

    def verdict(self, level: float) -> str:
        """A `VERDICTS` code at significance `level`."""
        if self.p <= level:
            return "beyond_control"
        if self.n_at_least == 0:
            return "beyond_all_draws"
        return "within_control"


def max_test(observed: float, null_max) -> MaxTest:
    """`MaxTest` of an observed maximum against the draws' maxima [n] (n >= 1)."""
    null = np.asarray(null_max, np.float64).reshape(-1)
    if null.size < 1:
        raise ValueError("null_max: need at least one control draw")
    k = int(stats.at_least(null, observed).sum())
    n = int(null.size)
    return MaxTest(float(observed), null, (1.0 + k) / (1.0 + n), n, 1.0 / (1.0 + n), k)


def signflip_max_test(diff, n_flip: int, seed: int) -> tuple[int, MaxTest]:
    """Paired differences diff [layer, target] (e.g. patched from the emotional source minus
    patched from the control, per target): the layer with the largest |mean over targets| and its
    test against the same maximum over layers after flipping each target's sign at random (one
    flip per target for every layer: under no difference, source and control are exchangeable
    within a target). Returns (layer index, MaxTest)."""
    d = np.asarray(diff, np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise ValueError(f"diff: need [layer, target] with >= 2 targets, got {d.shape}")
    if n_flip < 1:
        raise ValueError(f"n_flip={n_flip}; use >= 1")
    obs = np.abs(d.mean(1))
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_flip, d.shape[1]))
    null = np.abs(signs @ d.T / d.shape[1]).max(axis=1)  # [n_flip]
    return int(np.argmax(obs)), max_test(float(obs.max()), null)
