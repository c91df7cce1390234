"""Emotion vectors per layer (study phases 3 and 3.5) and their cosine matrices with a label null.

Three ways to read a class direction out of the residual stream:

- "sentence_end": the residual of each prompt's last real token, `acts [layer, n, d_model]`.
- "token": all emotion-word tokens of the prompts (for the neutral class, the form-matched anchor
  tokens), `acts [layer, n, pos, d_model]` with `token_mask [n, pos]`; class mean over all marked
  tokens (a prompt with more marked tokens weighs more).
- "token_delta": the change the marked token makes to the stream, h[t] - h[t-1], averaged over
  marked tokens t >= 1 (a mark at t = 0 has no predecessor and is ignored).

Three centrings, and every number must say which one it is:

- "raw": the class mean itself. Residual streams are anisotropic (a large shared offset, a few
  huge-norm dimensions), so raw class means all point the same way and their cosines sit near 1
  whatever the emotions do. The study's Pythia 0.96-0.99 "no separation" is this artefact.
- "neutral": class mean minus the neutral class mean (`neutral_index`). The neutral vector is then
  zero and is dropped from the comparison. All vectors share the term -mean(neutral), so the noise
  in the neutral mean alone pushes their cosines UP (towards +0.5 for equal-size classes).
- "grand": class mean minus the mean of the k class means (neutral included if present). The k
  centred vectors sum to zero, which pushes their cosines DOWN, towards -1/(k-1) (-1/3 for k=4).

`shuffle_null` permutes the labels and recomputes the cosine matrix, so each cosine comes with
the baseline its method and centring give on structureless labels; read a cosine against it.
`label_shuffled_vectors` returns the shuffled-label vectors themselves: the steering phase's
control directions (a direction that is about its label must do what they do not).

The functions above take arrays; `emotion_class_vectors`, `emotion_vectors` and
`emotion_label_shuffled` (at the end) take an activations artifact (`jaxcirc.data.activations.Activations`) and the study's four classes.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from jaxcirc.core.stats import (
    NullBand,
    percentile_band,
    stratified_counts,
    summarise_null,
    to_jsonable,
)
from jaxcirc.data.activations import Activations, sentence_end
from jaxcirc.data.emotions import EMOTIONAL, EMOTIONS, NEUTRAL_INDEX

CENTRES = ("raw", "neutral", "grand")
METHODS = ("sentence_end", "token", "token_delta")


# ---------------------------------------------------------------------------------------------
# Per-prompt sums: every method reduces to a per-prompt sum S [layer, n, d] and a count c [n];
# the class mean is sum_{i in class} S_i / sum_{i in class} c_i. A label permutation then only
# changes a one-hot matrix, so the null is a batched matmul.
# ---------------------------------------------------------------------------------------------


def prompt_sums(method: str, acts, token_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt sums S `[layer, n, d]` (float64) and counts c `[n]` of `method`: a class mean is
    sum_i w_i S_i / sum_i w_i c_i over the class's prompts (w = 1, or bootstrap counts)."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} not supported; use one of {METHODS}")
    acts = np.asarray(acts)
    if "float" in acts.dtype.name and not np.issubdtype(acts.dtype, np.floating):
        acts = acts.astype(np.float32)  # bfloat16 and other ml_dtypes floats
    if not np.issubdtype(acts.dtype, np.floating):
        raise ValueError(f"acts: need a float array, got dtype {acts.dtype}")
    if method == "sentence_end":
        acts = acts.astype(np.float64)
        if acts.ndim != 3:
            raise ValueError(
                f"acts: sentence_end needs [layer, n, d_model], got shape {acts.shape}"
            )
        return acts, np.ones(acts.shape[1])
    if acts.ndim != 4:
        raise ValueError(f"acts: {method} needs [layer, n, pos, d_model], got shape {acts.shape}")
    if token_mask is None:
        raise ValueError(f"token_mask: required for method {method!r}; pass [n, pos] bools")
    mask = np.asarray(token_mask, dtype=bool)
    if mask.shape != acts.shape[1:3]:
        raise ValueError(
            f"token_mask: shape {mask.shape} must equal acts [n, pos] {acts.shape[1:3]}"
        )
    # Sum in the activations' own dtype (no float64 copy of a [layer, n, pos, d] array; a sum
    # over the marked tokens of one prompt is short), then continue in float64.
    m = mask.astype(acts.dtype)
    if method == "token":
        sums = np.einsum("np,lnpd->lnd", m, acts)
        return sums.astype(np.float64), mask.sum(axis=1).astype(np.float64)
    # sum_t m[t] (h[t] - h[t-1]) for t >= 1, without materialising the difference array
    m1 = m[:, 1:]
    sums = np.einsum("np,lnpd->lnd", m1, acts[:, :, 1:]).astype(np.float64) - np.einsum(
        "np,lnpd->lnd", m1, acts[:, :, :-1]
    ).astype(np.float64)
    return sums, mask[:, 1:].sum(axis=1).astype(np.float64)


def _check_labels(labels, n: int, n_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels: shape {labels.shape} must be [n]=({n},) matching acts")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: need integer class ids, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels: ids must lie in [0, {n_classes}); got {labels.min()}..{labels.max()}"
        )
    return labels


def _check_centre(centre: str, n_classes: int, neutral_index: int | None) -> None:
    if centre not in CENTRES:
        raise ValueError(f"centre: {centre!r} not supported; use one of {CENTRES}")
    if centre == "neutral":
        if neutral_index is None:
            raise ValueError("neutral_index: required for centre='neutral'; pass the neutral id")
        if not 0 <= neutral_index < n_classes:
            raise ValueError(f"neutral_index: {neutral_index} outside [0, {n_classes})")
    if centre == "grand" and n_classes < 2:
        raise ValueError("n_classes: centre='grand' needs at least 2 classes")


def _class_means(sums, counts, onehot) -> np.ndarray:
    """sums [L, n, d], counts [n], onehot [..., n, k] -> class means [..., L, k, d]."""
    class_counts = onehot.swapaxes(-1, -2) @ counts  # [..., k]
    if np.any(class_counts == 0):
        raise ValueError("labels/token_mask: a class has no (marked) tokens; check the mask")
    n_layers, n, d = sums.shape
    lead = onehot.shape[:-2]
    k = onehot.shape[-1]
    # One GEMM [(...)*k, n] @ [n, L*d] (einsum would not use BLAS for this contraction).
    flat = onehot.swapaxes(-1, -2).reshape(-1, n) @ sums.transpose(1, 0, 2).reshape(n, -1)
    class_sums = np.moveaxis(flat.reshape(*lead, k, n_layers, d), -2, -3)  # [..., L, k, d]
    return class_sums / class_counts[..., None, :, None]


def _centre(means, centre: str, neutral_index: int | None) -> np.ndarray:
    if centre == "raw":
        return means
    if centre == "neutral":
        return means - means[..., neutral_index : neutral_index + 1, :]
    return means - means.mean(axis=-2, keepdims=True)


def _onehot(labels, n_classes: int) -> np.ndarray:
    return (np.asarray(labels)[..., None] == np.arange(n_classes)).astype(np.float64)


def weighted_class_means(sums, counts, labels, weights, n_classes: int) -> np.ndarray:
    """Class means `[B, layer, k, d]` with prompt i weighted by weights `[B, n]` (e.g. bootstrap
    counts from `stats.stratified_counts`); sums `[layer, n, d]`, counts `[n]` from
    `prompt_sums`."""
    w = np.asarray(weights, dtype=np.float64)
    onehot = _onehot(labels, n_classes)[None] * w[:, :, None]  # [B, n, k]
    return _class_means(np.asarray(sums, np.float64), np.asarray(counts, np.float64), onehot)


def class_vectors(
    method: str,
    acts,
    labels,
    n_classes: int,
    centre: str = "raw",
    neutral_index: int | None = None,
    token_mask=None,
) -> np.ndarray:
    """Class vectors `[layer, n_classes, d_model]` by `method` (see module docstring)."""
    sums, counts = prompt_sums(method, acts, token_mask)
    labels = _check_labels(labels, sums.shape[1], n_classes)
    _check_centre(centre, n_classes, neutral_index)
    means = _class_means(sums, counts, _onehot(labels, n_classes))
    return _centre(means, centre, neutral_index)


def sentence_end_vectors(
    acts, labels, n_classes: int, centre: str = "raw", neutral_index: int | None = None
) -> np.ndarray:
    """acts `[layer, n, d_model]` (last real token of each prompt) -> `[layer, n_classes, d_model]`."""
    return class_vectors("sentence_end", acts, labels, n_classes, centre, neutral_index)


def token_vectors(
    acts, token_mask, labels, n_classes: int, centre: str = "raw", neutral_index: int | None = None
) -> np.ndarray:
    """acts `[layer, n, pos, d_model]`, token_mask `[n, pos]` -> mean over marked tokens per class,
    `[layer, n_classes, d_model]`."""
    return class_vectors("token", acts, labels, n_classes, centre, neutral_index, token_mask)


def token_delta_vectors(
    acts, token_mask, labels, n_classes: int, centre: str = "raw", neutral_index: int | None = None
) -> np.ndarray:
    """Mean over marked tokens t >= 1 of h[t] - h[t-1], per class: `[layer, n_classes, d_model]`.

    The shared stream offset cancels in the difference, so even "raw" delta vectors are not
    dominated by the residual stream's anisotropic mean.
    """
    return class_vectors("token_delta", acts, labels, n_classes, centre, neutral_index, token_mask)


def compared_classes(n_classes: int, centre: str, neutral_index: int | None = None) -> list[int]:
    """Class ids that enter the cosine comparison (all but neutral when centre='neutral')."""
    _check_centre(centre, n_classes, neutral_index)
    if centre == "neutral":
        return [c for c in range(n_classes) if c != neutral_index]
    return list(range(n_classes))


def cosine_matrix(vectors, keep=None) -> np.ndarray:
    """vectors `[..., k, d]` -> cosines `[..., k, k]` (rows `keep` only, if given).

    A zero vector (e.g. neutral under centre='neutral') gives NaN in its row and column; pass
    `keep=compared_classes(...)` to drop it.
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim < 2:
        raise ValueError(f"vectors: need [..., k, d], got shape {v.shape}")
    if keep is not None:
        v = v[..., list(keep), :]
    norms = np.linalg.norm(v, axis=-1)
    gram = v @ v.swapaxes(-1, -2)
    denom = norms[..., :, None] * norms[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, gram / np.where(denom > 0, denom, 1.0), np.nan)


def shuffle_null(
    acts,
    labels,
    n_classes: int,
    method: str = "sentence_end",
    centre: str = "raw",
    n_perm: int = 1000,
    seed: int = 0,
    token_mask=None,
    neutral_index: int | None = None,
    level: float = 0.95,
    chunk: int = 128,
) -> NullBand:
    """Cosine matrix under label permutation: NullBand with mean/lo/hi `[layer, k', k']`.

    k' = len(compared_classes(...)). lo/hi are the 2.5/97.5 percentiles for level=0.95.
    Labels are permuted across prompts (class sizes kept), the vectors recomputed with the same
    method and centring, in batches of `chunk` permutations.

    Baselines this null exposes (no structure at all, so they are pure artefacts of the method):
    raw means in an anisotropic stream -> cosines near 1; vectors that all subtract one neutral
    mean share that mean's noise -> cosines pushed up (about +0.5 for equal class sizes); vectors
    centred on the mean of the k class means sum to zero -> cosines about -1/(k-1) (exact for the
    inner products; the cosine's normalisation moves it a little when variance sits in few dims).

    The band is a baseline, not a significance test of class structure: cosines are scale-free,
    so when the between-prompt variance lies in one or two directions, shuffled class means
    point along them too and the band spans most of [-1, 1]. Judge separability with
    `probe.probe_accuracy` against `probe.probe_shuffle_null`.
    """
    sums, counts = prompt_sums(method, acts, token_mask)
    labels = _check_labels(labels, sums.shape[1], n_classes)
    keep = compared_classes(n_classes, centre, neutral_index)
    if n_perm < 1 or chunk < 1:
        raise ValueError(f"n_perm/chunk: need positive ints, got {n_perm}/{chunk}")
    rng = np.random.default_rng(seed)
    n = labels.shape[0]
    perm_labels = rng.permuted(np.broadcast_to(labels, (n_perm, n)), axis=1)  # [P, n]
    out = []
    for start in range(0, n_perm, chunk):
        onehot = _onehot(perm_labels[start : start + chunk], n_classes)  # [c, n, k]
        vecs = _centre(_class_means(sums, counts, onehot), centre, neutral_index)
        out.append(cosine_matrix(vecs, keep))  # [c, L, k', k']
    samples = np.concatenate(out, axis=0)
    return summarise_null(samples, seed=seed, level=level, what=f"{method}/{centre} label shuffle")


def label_shuffled_vectors(
    method: str,
    acts,
    labels,
    n_classes: int,
    shuffled: tuple[int, ...],
    n: int,
    seed: int,
    centre: str = "raw",
    neutral_index: int | None = None,
    token_mask=None,
    chunk: int = 128,
) -> np.ndarray:
    """`[n, layer, d_model]` class vectors on permuted labels: the control a direction read out
    of these prompts by `method` and `centre` must beat to be about its label.

    Draw j permutes the labels of the prompts whose class is in `shuffled` among themselves
    (seeded; class sizes kept, every other prompt keeps its label) and returns the vector of
    class shuffled[j % len(shuffled)], made exactly as `class_vectors` makes the real one (same
    method, centring and weights). One vector per permutation, so the draws are independent
    given the prompts; with equal class sizes each draw is distributed as any shuffled class's.
    """
    sums, counts = prompt_sums(method, acts, token_mask)
    labels = _check_labels(labels, sums.shape[1], n_classes)
    _check_centre(centre, n_classes, neutral_index)
    pick = np.asarray(shuffled, dtype=np.int64)
    if n < 1 or chunk < 1 or pick.size < 1:
        raise ValueError(f"n/chunk/shuffled: need n >= 1, chunk >= 1, a class; got {n}/{chunk}")
    idx = np.flatnonzero(np.isin(labels, pick))
    rng = np.random.default_rng(seed)
    perm = np.array(np.broadcast_to(labels, (n, labels.size)))
    perm[:, idx] = rng.permuted(np.broadcast_to(labels[idx], (n, idx.size)), axis=1)
    cls = pick[np.arange(n) % pick.size]
    out = []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        means = _class_means(sums, counts, _onehot(perm[start:stop], n_classes))
        vecs = _centre(means, centre, neutral_index)  # [c, L, k, d]
        out.append(vecs[np.arange(stop - start), :, cls[start:stop]])  # [c, L, d]
    return np.concatenate(out, axis=0)


def bootstrap_cosine_samples(
    acts,
    labels,
    n_classes: int,
    method: str = "sentence_end",
    centre: str = "raw",
    n_boot: int = 1000,
    seed: int = 0,
    token_mask=None,
    neutral_index: int | None = None,
    chunk: int = 128,
) -> np.ndarray:
    """Cosine matrices `[n_boot, layer, k', k']` over prompt-bootstrap resamples: the prompts of
    each class drawn with replacement within the class (`stats.stratified_counts`: class sizes
    kept), vectors and cosines recomputed with the same method and centring. A percentile band
    of these over axis 0 is the cosine's CI (prompt sampling only; the model is fixed).

    The percentile CI does not correct the estimator's bias: with noisy class means, cosines
    near +-1 are pulled toward 0, and neutral-centred ones share the neutral mean's noise and
    are pushed up, so their CIs cover the population cosine less often than nominal (the
    grand-centred ones about as often: tests/core/test_vectors.py). Read every cosine against
    its label-shuffle null first."""
    sums, counts = prompt_sums(method, acts, token_mask)
    labels = _check_labels(labels, sums.shape[1], n_classes)
    keep = compared_classes(n_classes, centre, neutral_index)
    if n_boot < 1 or chunk < 1:
        raise ValueError(f"n_boot/chunk: need positive ints, got {n_boot}/{chunk}")
    weights = stratified_counts(labels, n_boot, seed)
    out = []
    for start in range(0, n_boot, chunk):
        means = weighted_class_means(
            sums, counts, labels, weights[start : start + chunk], n_classes
        )
        out.append(cosine_matrix(_centre(means, centre, neutral_index), keep))
    return np.concatenate(out, axis=0)


@dataclasses.dataclass(frozen=True)
class CosineResult:
    """Cosine matrices between class vectors, per layer, with the label-shuffle null.

    matrix, null_mean, null_lo, null_hi: `[layer, k', k']` over `class_names` (the compared
    classes: neutral is absent under centre='neutral'). `layers` labels the layer axis (0 is the
    embedding output when the caller passes resid_pre of every block plus the final stream).
    ci_lo, ci_hi: `[layer, k', k']` percentile CI at `level` over `n_boot` prompt-bootstrap
    resamples (`bootstrap_cosine_samples`), None when n_boot = 0.
    """

    method: str
    centre: str
    layers: list[int]
    class_names: list[str]
    matrix: np.ndarray
    null_mean: np.ndarray
    null_lo: np.ndarray
    null_hi: np.ndarray
    n_perm: int
    seed: int
    level: float = 0.95
    ci_lo: np.ndarray | None = None
    ci_hi: np.ndarray | None = None
    n_boot: int = 0

    def to_json(self) -> str:
        return json.dumps(to_jsonable(self))


def cosine_analysis(
    acts,
    labels,
    class_names: list[str],
    method: str = "sentence_end",
    centre: str = "raw",
    token_mask=None,
    neutral_index: int | None = None,
    layers: list[int] | None = None,
    n_perm: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    n_boot: int = 0,
) -> CosineResult:
    """Vectors + cosine matrix + label-shuffle null (+ prompt-bootstrap CI if n_boot > 0)."""
    k = len(class_names)
    vecs = class_vectors(method, acts, labels, k, centre, neutral_index, token_mask)
    keep = compared_classes(k, centre, neutral_index)
    matrix = cosine_matrix(vecs, keep)
    null = shuffle_null(
        acts, labels, k, method, centre, n_perm, seed, token_mask, neutral_index, level
    )
    n_layers = matrix.shape[0]
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(layers) != n_layers:
        raise ValueError(f"layers: {len(layers)} labels for {n_layers} layers in acts")
    ci_lo = ci_hi = None
    if n_boot > 0:
        boot = bootstrap_cosine_samples(
            acts, labels, k, method, centre, n_boot, seed, token_mask, neutral_index
        )
        ci_lo, ci_hi = percentile_band(boot, level)
    return CosineResult(
        method=method,
        centre=centre,
        layers=layers,
        class_names=[class_names[c] for c in keep],
        matrix=matrix,
        null_mean=null.mean,
        null_lo=null.lo,
        null_hi=null.hi,
        n_perm=n_perm,
        seed=seed,
        level=level,
        ci_lo=ci_lo,
        ci_hi=ci_hi,
        n_boot=n_boot,
    )


# ---------------------------------------------------------------------------------------------
# Over an activations artifact: the study's four classes in `EMOTIONS` order
# ---------------------------------------------------------------------------------------------


def method_inputs(acts: Activations, method: str) -> tuple[np.ndarray, np.ndarray | None]:
    """What `class_vectors` / `cosine_analysis` take for `method`: (`[layer + 1, n, d_model]` at
    each prompt's last token and None for "sentence_end"; else the whole stream
    `[layer + 1, n, pos, d_model]` and the span mask `[n, pos]`)."""
    if method == "sentence_end":
        return sentence_end(acts), None
    return acts.resid, acts.span_mask


def emotion_class_vectors(acts: Activations, method: str, centre: str) -> np.ndarray:
    """`[layer + 1, 4, d_model]` class vectors of `acts` in `EMOTIONS` order (float64)."""
    x, tm = method_inputs(acts, method)
    return class_vectors(method, x, acts.labels, len(EMOTIONS), centre, NEUTRAL_INDEX, tm)


def emotion_label_shuffled(
    acts: Activations, method: str, centre: str, n: int, seed: int
) -> np.ndarray:
    """`[n, layer + 1, d_model]` float32 `label_shuffled_vectors` of `acts`: emotion labels
    permuted among the emotional prompts (gratitude, anger, apology; neutral prompts keep
    theirs), the same method and centring as `emotion_vectors`; draw j is a shuffled
    EMOTIONAL[j % 3]."""
    x, tm = method_inputs(acts, method)
    shuffled = tuple(EMOTIONS.index(e) for e in EMOTIONAL)
    v = label_shuffled_vectors(
        method, x, acts.labels, len(EMOTIONS), shuffled, n, seed, centre, NEUTRAL_INDEX, tm
    )
    return v.astype(np.float32)


def emotion_vectors(acts: Activations, method: str, centre: str) -> dict[str, np.ndarray]:
    """{emotion: `[layer + 1, d_model]` float32} for gratitude, anger, apology (the directions
    that steering adds and the heads phase scores against)."""
    v = emotion_class_vectors(acts, method, centre)
    return {e: v[:, EMOTIONS.index(e)].astype(np.float32) for e in EMOTIONAL}
