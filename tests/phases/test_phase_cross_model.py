"""Cross-model patching before any steering (`phases.cross_model.pair_vectors` over
`core.cross_model`): the map A -> B fit on the neutral fit prompts, its held-out R^2 on the
held-out prompts beside the shuffled-pairing null, and the cosine of A's mapped emotion vectors
with B's own beside random A-directions sent through the same map.

Planted: B's residuals are an invertible (not orthogonal) linear transform of A's, so the map
recovers it, the held-out R^2 is ~1 and every mapped vector is B's own (cos ~1), beyond the
null. Structureless: A and B are independent random networks fed the same tokens, each with
classes of its own; the mapped vectors sit inside the random-mapped null.
"""

from __future__ import annotations

import ml_collections
import numpy as np
import pytest

from configs.common import base_config
from jaxcirc.core.cross_model import MapSettings, fit_map
from jaxcirc.core.pairing import split_neutral
from jaxcirc.phases import cross_model as phase_cm
from tests import support_representation as rep


def _cfg(ridge=0.0, method="sentence_end"):
    base = base_config()
    cfg = ml_collections.ConfigDict(
        {"cross_model": base.cross_model.to_dict(), "steering": base.steering.to_dict()}
    )
    cfg.cross_model.ridge = ridge
    cfg.cross_model.n_perm = 50
    cfg.steering.vector_method = method
    cfg.steering.vector_centre = "neutral"
    return cfg


def _classes(seed: int, acts, d: int, amp: float = 2.0):
    """acts with class directions of its own planted at every token of layers >= 1."""
    rng = np.random.default_rng(seed)
    dirs = amp * rng.standard_normal((4, d))
    acts.resid[1:] += (dirs[acts.labels][None, :, None, :] * acts.mask[None, :, :, None]).astype(
        np.float32
    )
    return acts


def _planted(seed: int, d: int = 16):
    ids, mask, labels, span = rep.prompts(seed)
    a = _classes(
        seed, rep.activations(rep.random_net(ids, mask, seed, d=d), ids, mask, labels, span, "a"), d
    )
    rng = np.random.default_rng(50 + seed)
    m = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)  # invertible, not orthogonal
    assert np.linalg.cond(m) < 50
    res_b = a.resid @ m.astype(np.float32) + 0.001 * rng.standard_normal(a.resid.shape)
    b = rep.activations(res_b, ids, mask, labels, span, "b")
    return a, b, m


@pytest.mark.parametrize("method", ["sentence_end", "token"])
def test_planted_linear_transform_carries_every_vector(method):
    a, b, _ = _planted(0)
    info, mapped = phase_cm.pair_vectors(a, b, (2, 2), _cfg(method=method))
    assert info["pairing"] == "token"  # both read the same tokens
    fit_p, test_p = split_neutral(a.labels, 0.25, 0)
    assert info["n_fit_prompts"] == fit_p.size and info["n_test_prompts"] == test_p.size
    assert info["n_fit_rows"] == int(a.mask[fit_p].sum())  # the held-out prompts are not fit
    assert info["map_r2_test"] > 0.99 and info["map_r2_test"] > info["map_r2_test_null"]["hi"]
    # whole prompts keep their positions in the null, so it explains some variance
    assert info["map_r2_test_null"]["hi"] < 0.8 and info["map_r2_test_null"]["n"] == 50
    for e, c in info["cosines"].items():
        assert mapped[e].shape == (16,)
        assert c["cos_mapped_vs_own"] > 0.99 and c["beyond_null"], (e, c)
        assert c["null_random_A_directions_mapped"]["hi"] < 0.9


def _independent(seed: int, d: int = 16):
    """(A, B): A a random network with classes planted; B independent Gaussian activations (no
    shared tokens, nothing shared at all) with classes of its own, on the same prompts."""
    ids, mask, labels, span = rep.prompts(seed)
    a = rep.activations(rep.random_net(ids, mask, seed), ids, mask, labels, span, "a")
    noise = np.random.default_rng(70 + seed).standard_normal(a.resid.shape)
    b = rep.activations(noise, ids, mask, labels, span, "b")
    return _classes(seed, a, d), _classes(90 + seed, b, d)


def test_structureless_independent_models_stay_inside_the_null():
    """Structureless negative over 6 seeds x 3 emotions: the mapped vectors' cosine with B's own
    sits inside the random-mapped null's 95% band (at about its 5% rate), and the held-out R^2
    inside its null."""
    inside, r2_inside = [], []
    for seed in range(6):
        a, b = _independent(seed)
        info, _ = phase_cm.pair_vectors(a, b, (2, 2), _cfg(ridge=1.0))
        for c in info["cosines"].values():
            nl = c["null_random_A_directions_mapped"]
            inside.append(nl["lo"] <= c["cos_mapped_vs_own"] <= nl["hi"])
            assert c["beyond_null"] == (c["cos_mapped_vs_own"] > nl["hi"])
        r2_inside.append(info["map_r2_test"] <= info["map_r2_test_null"]["hi"])
        assert info["random_init"] is None and "no random-init" in info["random_init_note"]
    assert np.mean(inside) >= 0.85, inside
    assert np.mean(r2_inside) >= 5 / 6


def test_random_init_networks_need_the_random_init_control():
    """Two random-init networks fed the same tokens (nothing learnt, classes of their own): the
    mapped vector leaves the random-direction null far more often than the band's 2.5% (both
    encode the tokens), but it is above every one of 9 random-init copies of B no more often
    than chance (1/10), over 8 seeds x 3 emotions."""
    beyond, above = [], []
    for seed in range(8):
        nets = rep.random_nets(seed, 11)
        a, b, copies = nets[0], nets[1], nets[2:]
        for j, n in enumerate(nets):
            _classes(40 * seed + j, n, 16)
        info, _ = phase_cm.pair_vectors(a, b, (2, 2), _cfg(ridge=1.0), copies)
        for e, c in info["cosines"].items():
            beyond.append(c["beyond_null"])
            ri = info["random_init"][e]
            assert len(ri["per_draw"]) == 9 and ri["max"] == max(ri["per_draw"])
            above.append(ri["above_random_init"])
    assert np.mean(beyond) >= 0.1  # the confound: 4x the band's one-sided 2.5%
    assert np.mean(above) <= 0.2


def test_planted_transform_is_above_its_random_init_copies():
    a, b, _ = _planted(3)
    ids, mask, labels, span = rep.prompts(3)
    copies = [
        _classes(s, rep.activations(rep.random_net(ids, mask, s), ids, mask, labels, span, "c"), 16)
        for s in (500, 501)
    ]
    info, _ = phase_cm.pair_vectors(a, b, (2, 2), _cfg(), copies)
    assert all(v["above_random_init"] for v in info["random_init"].values())
    assert info["random_init_note"] is None


def test_fit_map_scores_the_map_it_returns():
    a, b, m = _planted(1)
    fit = fit_map(a, b, 1, 1, MapSettings(ridge_rel=0.0, test_fraction=0.3, seed=2, n_perm=20))
    assert fit.pairing == "token" and fit.layer_a == fit.layer_b == 1
    np.testing.assert_allclose(fit.map.W, m, atol=0.05)
    assert fit.r2_fit > 0.999 and fit.r2_test > 0.999 and fit.n_test_rows > 0
    assert fit.r2_test_null["n"] == 20 and "whole prompts" in fit.r2_test_null["what"]
