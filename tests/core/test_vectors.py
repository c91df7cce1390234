"""Planted emotion directions: centred vectors recover them, raw ones show the anisotropy artefact,
and the label-shuffle null shows each centring's baseline."""

import json

import numpy as np
import pytest

from jaxcirc.core import vectors

K = 4  # classes; 0 = neutral
NEUTRAL = 0
N_PER = 50
D = 48
L = 2


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _planted(seed=0, noise=0.2, amp=5.0, geometry="orthogonal"):
    """Sentence-end acts [L, n, D]: large shared anisotropic offset + class direction + noise.

    Neutral (class 0) carries no direction. geometry "orthogonal": the three emotion directions
    are orthonormal; "opposed": gratitude = +u, anger/apology = -u + 0.3 * (their own direction)
    (the study's token-level Pythia finding). Layer 1 scales the planted directions by 1.5.
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((D, K + 1)))
    offset = 60.0 * q[:, K]  # the shared stream offset, much larger than anything else
    dirs = np.zeros((K, D))
    if geometry == "orthogonal":
        dirs[1:] = q[:, :3].T
    else:
        dirs[1:] = np.stack([q[:, 0], -q[:, 0] + 0.3 * q[:, 1], -q[:, 0] + 0.3 * q[:, 2]])
    labels = np.repeat(np.arange(K), N_PER)
    rng.shuffle(labels)
    # anisotropic noise: a few dims 5x larger
    scales = np.ones(D)
    scales[:4] = 5.0
    acts = np.stack(
        [
            offset
            + amp * (1 + 0.5 * layer) * dirs[labels]
            + noise * scales * rng.standard_normal((labels.size, D))
            for layer in range(L)
        ]
    )
    return acts, labels, dirs, offset


def test_neutral_centred_sentence_end_recovers_planted_directions():
    acts, labels, dirs, _ = _planted()
    v = vectors.sentence_end_vectors(acts, labels, K, "neutral", neutral_index=NEUTRAL)
    assert v.shape == (L, K, D)
    np.testing.assert_allclose(v[:, NEUTRAL], 0.0, atol=1e-12)
    for layer in range(L):
        for c in range(1, K):
            assert _cos(v[layer, c], dirs[c]) > 0.99
    cos = vectors.cosine_matrix(v, vectors.compared_classes(K, "neutral", NEUTRAL))
    off = cos[:, ~np.eye(K - 1, dtype=bool)]
    assert np.all(np.abs(off) < 0.15)  # planted directions are orthogonal


def test_grand_centred_recovers_directions_relative_to_their_mean():
    acts, labels, dirs, _ = _planted()
    v = vectors.sentence_end_vectors(acts, labels, K, "grand")
    target = dirs - dirs.mean(axis=0)  # what grand centring can see: planted minus planted mean
    for c in range(K):
        assert _cos(v[0, c], target[c]) > 0.99
    np.testing.assert_allclose(v.sum(axis=1), 0.0, atol=1e-9)


def test_raw_means_show_anisotropy_artefact_and_centred_do_not():
    acts, labels, _, _ = _planted()
    raw = vectors.cosine_matrix(vectors.sentence_end_vectors(acts, labels, K, "raw"))
    off = ~np.eye(K, dtype=bool)
    assert np.all(raw[:, off] > 0.95)  # "Pythia 0.96-0.99": all emotions look alike
    cen = vectors.cosine_matrix(
        vectors.sentence_end_vectors(acts, labels, K, "neutral", NEUTRAL), [1, 2, 3]
    )
    assert np.all(cen[:, ~np.eye(3, dtype=bool)] < 0.2)


def test_shuffle_null_baselines_per_centring():
    acts, labels, _, _ = _planted()
    off4 = ~np.eye(K, dtype=bool)
    grand = vectors.shuffle_null(acts, labels, K, centre="grand", n_perm=300, seed=1)
    assert grand.mean.shape == (L, K, K)
    # -1/(k-1) holds exactly for <v_i, v_j> in expectation; the cosine's normalisation moves it
    # a little when the variance sits in few dims (here the 3 planted ones), hence two tolerances.
    assert abs(grand.mean[:, off4].mean() - (-1.0 / (K - 1))) < 0.03
    np.testing.assert_allclose(grand.mean[:, off4], -1.0 / (K - 1), atol=0.08)
    assert np.all(grand.lo[:, off4] < grand.mean[:, off4])
    assert np.all(grand.mean[:, off4] < grand.hi[:, off4])
    neutral = vectors.shuffle_null(
        acts, labels, K, centre="neutral", neutral_index=NEUTRAL, n_perm=300, seed=1
    )
    assert neutral.mean.shape == (L, K - 1, K - 1)
    np.testing.assert_allclose(neutral.mean[:, ~np.eye(K - 1, dtype=bool)], 0.5, atol=0.07)
    raw = vectors.shuffle_null(acts, labels, K, centre="raw", n_perm=100, seed=1)
    assert np.all(raw.lo[:, off4] > 0.99)


def test_planted_opposition_against_the_grand_null():
    acts, labels, _, _ = _planted(geometry="opposed")
    obs = vectors.cosine_matrix(vectors.sentence_end_vectors(acts, labels, K, "grand"))
    null = vectors.shuffle_null(acts, labels, K, centre="grand", n_perm=300, seed=1)
    assert np.all(obs[:, 1, 2:] < -0.9)  # gratitude vs anger/apology: opposed
    assert np.all(obs[:, 2, 3] > 0.8)  # anger vs apology: aligned
    # Cosines are scale-free: when the between-prompt variance sits in ~1 dim, shuffled-label
    # cosines also reach +-0.8, so the band is wide (a baseline, not a significance test; the
    # probe and its null judge separability). Its mean is still the -1/(k-1) baseline.
    assert np.all(null.lo[:, 1, 2:] < -0.8) and np.all(null.hi[:, 2, 3] > 0.5)
    off = ~np.eye(K, dtype=bool)
    assert abs(null.mean[:, off].mean() - (-1.0 / (K - 1))) < 0.05


def test_shuffle_null_deterministic_for_seed():
    acts, labels, _, _ = _planted()
    a = vectors.shuffle_null(acts, labels, K, centre="grand", n_perm=20, seed=5, chunk=7)
    b = vectors.shuffle_null(acts, labels, K, centre="grand", n_perm=20, seed=5)
    np.testing.assert_allclose(a.mean, b.mean)
    assert a.seed == 5 and a.n == 20


def _planted_tokens(seed=0, noise=0.2, amp=3.0, n_pos=6):
    """Token acts [L, n, pos, D] whose stream accumulates: each position adds a small random
    update; the emotion word (one position t >= 1 per prompt) adds amp * class direction, which
    then stays in the stream. A shared offset is present at every position."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((D, K + 1)))
    offset = 30.0 * q[:, K]
    dirs = np.zeros((K, D))
    dirs[1:] = q[:, :3].T
    labels = np.repeat(np.arange(K), N_PER)
    n = labels.size
    word_pos = rng.integers(1, n_pos, size=n)
    updates = noise * rng.standard_normal((L, n, n_pos, D))
    updates[:, np.arange(n), word_pos] += amp * dirs[labels]
    acts = offset + np.cumsum(updates, axis=2)
    mask = np.zeros((n, n_pos), dtype=bool)
    mask[np.arange(n), word_pos] = True
    return acts, mask, labels, dirs


def test_token_delta_recovers_directions_even_raw():
    acts, mask, labels, dirs = _planted_tokens()
    delta = vectors.token_delta_vectors(acts, mask, labels, K, "raw")
    for c in range(1, K):
        assert _cos(delta[0, c], dirs[c]) > 0.99
    # the shared offset cancels in h[t] - h[t-1]: raw delta vectors are NOT all alike
    cos = vectors.cosine_matrix(delta, [1, 2, 3])
    assert np.all(cos[:, ~np.eye(3, dtype=bool)] < 0.2)
    # whereas raw token-level means are dominated by the offset
    tok = vectors.cosine_matrix(vectors.token_vectors(acts, mask, labels, K, "raw"))
    assert np.all(tok[:, ~np.eye(K, dtype=bool)] > 0.95)
    # and neutral-centred token means recover the directions
    tokc = vectors.token_vectors(acts, mask, labels, K, "neutral", NEUTRAL)
    for c in range(1, K):
        assert _cos(tokc[0, c], dirs[c]) > 0.97


def test_token_mask_is_respected_and_t0_excluded_from_delta():
    acts, mask, labels, dirs = _planted_tokens()
    ref_tok = vectors.token_vectors(acts, mask, labels, K, "neutral", NEUTRAL)
    ref_delta = vectors.token_delta_vectors(acts, mask, labels, K, "raw")
    # garbage at unmarked positions changes nothing
    noisy = acts.copy()
    noisy[:, ~mask] += 1e3 * np.random.default_rng(9).standard_normal((L, int((~mask).sum()), D))
    # ...except through the predecessor h[t-1] used by the delta; so restore those positions
    prev = np.zeros_like(mask)
    prev[:, :-1] = mask[:, 1:]
    noisy[:, prev] = acts[:, prev]
    np.testing.assert_allclose(
        vectors.token_vectors(noisy, mask, labels, K, "neutral", NEUTRAL), ref_tok, atol=1e-9
    )
    np.testing.assert_allclose(
        vectors.token_delta_vectors(noisy, mask, labels, K, "raw"), ref_delta, atol=1e-9
    )
    # a mark at t = 0 counts for the token mean but has no predecessor: ignored by the delta
    mask0 = mask.copy()
    mask0[:, 0] = True
    np.testing.assert_allclose(
        vectors.token_delta_vectors(acts, mask0, labels, K, "raw"), ref_delta, atol=1e-9
    )
    assert not np.allclose(vectors.token_vectors(acts, mask0, labels, K, "raw"), ref_tok)


def test_float32_token_acts_match_float64():
    acts, mask, labels, _ = _planted_tokens()
    for fn in (vectors.token_vectors, vectors.token_delta_vectors):
        np.testing.assert_allclose(
            fn(acts.astype(np.float32), mask, labels, K, "grand"),
            fn(acts, mask, labels, K, "grand"),
            atol=1e-4,
        )


def test_shuffle_null_equals_explicit_recomputation():
    acts, labels, _, _ = _planted()
    null = vectors.shuffle_null(
        acts, labels, K, centre="neutral", neutral_index=0, n_perm=1, seed=4
    )
    perm = np.random.default_rng(4).permuted(labels[None], axis=1)[0]
    v = vectors.sentence_end_vectors(acts, perm, K, "neutral", 0)
    np.testing.assert_allclose(null.mean, vectors.cosine_matrix(v, [1, 2, 3]), atol=1e-12)


def test_token_shuffle_null_runs_for_delta_method():
    acts, mask, labels, _ = _planted_tokens()
    null = vectors.shuffle_null(
        acts, labels, K, "token_delta", "grand", n_perm=100, seed=0, token_mask=mask
    )
    np.testing.assert_allclose(null.mean[:, ~np.eye(K, dtype=bool)], -1 / 3, atol=0.06)


def test_cosine_analysis_result_and_json():
    acts, labels, _, _ = _planted()
    names = ["neutral", "gratitude", "anger", "apology"]
    res = vectors.cosine_analysis(
        acts, labels, names, centre="neutral", neutral_index=0, layers=[6, 7], n_perm=50, seed=2
    )
    assert res.class_names == ["gratitude", "anger", "apology"]
    assert res.matrix.shape == res.null_mean.shape == (L, 3, 3)
    blob = json.loads(res.to_json())
    assert blob["seed"] == 2 and blob["centre"] == "neutral" and blob["layers"] == [6, 7]
    np.testing.assert_allclose(np.array(blob["matrix"]), res.matrix)


def test_bad_inputs_raise_value_error():
    acts, labels, _, _ = _planted()
    with pytest.raises(ValueError, match="neutral_index"):
        vectors.sentence_end_vectors(acts, labels, K, "neutral")
    with pytest.raises(ValueError, match="centre"):
        vectors.sentence_end_vectors(acts, labels, K, "median")
    with pytest.raises(ValueError, match="labels"):
        vectors.sentence_end_vectors(acts, labels[:-1], K)
    with pytest.raises(ValueError, match="acts"):
        vectors.sentence_end_vectors(acts[0], labels, K)
    with pytest.raises(ValueError, match="token_mask"):
        vectors.token_vectors(acts[:, :, None], None, labels, K)


# ---------------------------------------------------------------------------------------------
# Prompt-bootstrap CIs of the cosines
# ---------------------------------------------------------------------------------------------


def test_bootstrap_cosine_ci_covers_the_planted_cosine():
    """Planted positive: with a modest class signal the grand-centred cosine is noisy; over 20
    data sets its 95% CI covers the population cosine (that of the planted class means) at
    about the nominal rate, and is not trivially wide."""
    covered, widths = [], []
    for seed in range(20):
        acts, labels, dirs, _ = _planted(seed=seed, noise=1.0, amp=4.0)
        boot = vectors.bootstrap_cosine_samples(
            acts, labels, K, "sentence_end", "grand", n_boot=400, seed=seed
        )
        assert boot.shape == (400, L, K, K)
        lo, hi = np.percentile(boot[:, 0], [2.5, 97.5], axis=0)
        truth = vectors.cosine_matrix(dirs - dirs.mean(axis=0))
        iu = np.triu_indices(K, 1)
        covered += list((lo[iu] <= truth[iu]) & (truth[iu] <= hi[iu]))
        widths += list(hi[iu] - lo[iu])
    assert np.mean(covered) >= 0.85, np.mean(covered)
    assert np.mean(widths) < 0.6


def test_cosine_analysis_ci_fields_and_structureless_labels():
    """Structureless negative: with labels that carry nothing, every grand-centred cosine sits
    inside its label-shuffle band (at the band's 5% rate) and its CI overlaps the band."""
    inside, overlaps = [], []
    for seed in range(6):
        acts, _, _, _ = _planted(seed=seed)
        labels = np.random.default_rng(100 + seed).permutation(np.repeat(np.arange(K), N_PER))
        res = vectors.cosine_analysis(
            acts, labels, ["n", "a", "b", "c"], centre="grand", n_perm=200, seed=seed, n_boot=200
        )
        assert res.ci_lo.shape == res.matrix.shape and res.n_boot == 200
        off = ~np.eye(K, dtype=bool)
        inside += list(((res.null_lo <= res.matrix) & (res.matrix <= res.null_hi))[:, off])
        overlaps += list(((res.ci_lo <= res.null_hi) & (res.null_lo <= res.ci_hi))[:, off])
    assert np.mean(inside) >= 0.85 and np.mean(overlaps) >= 0.95
    assert vectors.cosine_analysis(acts, labels, ["n", "a", "b", "c"], n_perm=5).ci_lo is None


def test_weighted_class_means_equal_repeated_prompts():
    acts, labels, _, _ = _planted()
    sums, counts = vectors.prompt_sums("sentence_end", acts)
    w = np.random.default_rng(0).integers(0, 3, (2, labels.size)).astype(float)
    w[:, :K] = 1.0  # keep every class present
    means = vectors.weighted_class_means(sums, counts, labels, w, K)
    for b in range(2):
        rep = np.repeat(np.arange(labels.size), w[b].astype(int))
        direct = vectors.sentence_end_vectors(acts[:, rep], labels[rep], K)
        np.testing.assert_allclose(means[b], direct, rtol=1e-10)


def test_label_shuffled_vectors_permute_only_the_shuffled_classes():
    """Prompts as one-hot rows (acts = identity): a class mean marks its members. Each draw's
    members are a class-sized set of emotional prompts; neutral's part of the neutral-centred
    vector is exactly the (unshuffled) neutral mean; draws cycle through the classes, differ
    from each other, and repeat for the same seed."""
    labels = np.repeat(np.arange(K), 6)
    n = labels.size
    acts = np.eye(n)[None]  # [1, n, d = n]
    emo = (1, 2, 3)
    v = vectors.label_shuffled_vectors(
        "sentence_end", acts, labels, K, emo, 7, 0, "neutral", NEUTRAL
    )
    assert v.shape == (7, 1, n)
    for j in range(7):
        row = v[j, 0]
        np.testing.assert_allclose(row[labels == NEUTRAL], -1 / 6, atol=1e-12)
        members = np.flatnonzero(np.abs(row - 1 / 6) < 1e-12)
        assert members.size == 6 and set(labels[members]) <= set(emo)
    assert len({tuple(np.round(v[j, 0], 9)) for j in range(7)}) == 7
    again = vectors.label_shuffled_vectors(
        "sentence_end", acts, labels, K, emo, 7, 0, "neutral", NEUTRAL
    )
    np.testing.assert_array_equal(v, again)
    # chunks of permutations give the same draws as one batch
    chunked = vectors.label_shuffled_vectors(
        "sentence_end", acts, labels, K, emo, 7, 0, "neutral", NEUTRAL, chunk=3
    )
    np.testing.assert_allclose(chunked, v, atol=1e-12)


def test_label_shuffled_vectors_lose_the_planted_direction():
    """Planted orthogonal class directions: the real neutral-centred vector of a class lies
    along its own direction (cos > 0.99); label-shuffled ones mix the three classes (cos with
    any one direction about 1/sqrt(3), never near 1)."""
    acts, labels, dirs, _ = _planted()
    real = vectors.sentence_end_vectors(acts, labels, K, "neutral", neutral_index=NEUTRAL)
    shuf = vectors.label_shuffled_vectors(
        "sentence_end", acts, labels, K, (1, 2, 3), 60, 1, "neutral", NEUTRAL
    )
    assert _cos(real[0, 1], dirs[1]) > 0.99
    cos = np.array([[_cos(shuf[j, 0], dirs[c]) for c in (1, 2, 3)] for j in range(60)])
    assert cos.max() < 0.85
    np.testing.assert_allclose(cos.mean(), 1 / np.sqrt(3), atol=0.08)
    with pytest.raises(ValueError, match="n/chunk/shuffled"):
        vectors.label_shuffled_vectors("sentence_end", acts, labels, K, (1,), 0, 0)


def test_emotion_label_shuffled_reads_an_activations_artifact():
    """Over an activations artifact: [n, layer + 1, d_model] float32, by every method. Only the
    emotional prompts are shuffled: a shuffled class mean averages to the mean of all emotional
    prompts, so the neutral-centred draws average to the mean of the three real emotion
    vectors (400 draws: the average's deviation is ~1/20 of one draw's, asserted < 0.15)."""
    from tests import support_representation as rep

    (acts,) = rep.random_nets(0, 1)
    for method in vectors.METHODS:
        v = vectors.emotion_label_shuffled(acts, method, "neutral", 6, 0)
        assert v.shape == (6, acts.n_layers_plus_one, acts.d_model) and v.dtype == np.float32
    target = vectors.emotion_class_vectors(acts, "sentence_end", "neutral")[:, :3].mean(1)
    v = vectors.emotion_label_shuffled(acts, "sentence_end", "neutral", 400, 0)
    spread = np.linalg.norm(v - target, axis=-1).mean()
    assert np.linalg.norm(v.mean(0) - target, axis=-1).max() < 0.15 * spread
