"""Helpers the representation tests share (alignment, cross-model, report): prompts of token ids
with one class word each, randomly initialised token-fed "networks" over them, and their
activations artifacts.

A random-init network fed the same tokens as another encodes the same tokens, so any true row
pairing between the two beats a shuffled one: the situation the alignment's random-init control
exists for. Tests import these from here, never from each other.
"""

from __future__ import annotations

import numpy as np

from jaxcirc.data.activations import Activations

VOCAB, POS = 60, 8
# Class words: gratitude, anger, apology, neutral (the neutral class's form-matched anchors).
CLASS_WORDS = {0: (10, 11, 12), 1: (20, 21, 22), 2: (30, 31, 32), 3: (40, 41, 42)}
FILLER = np.r_[1:10, 50:60]


def prompts(seed: int, per_class: int = 40):
    """(ids `[n, POS]`, mask, labels `[n]`, span mask): 5..8 real tokens of filler, one class
    word at a random position before the last, and the shared final token 0 ("." in text)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), per_class)
    lengths = rng.integers(5, POS + 1, labels.size)
    ids = rng.choice(FILLER, size=(labels.size, POS))
    span = np.zeros(ids.shape, bool)
    for i, y in enumerate(labels):
        t = rng.integers(0, lengths[i] - 1)
        ids[i, t] = rng.choice(CLASS_WORDS[y])
        span[i, t] = True
        ids[i, lengths[i] - 1] = 0
    mask = np.arange(POS)[None] < lengths[:, None]
    return ids, mask & True, labels, span & mask


def random_net(ids, mask, seed: int, n_layers: int = 2, d: int = 16) -> np.ndarray:
    """Residual stream `[n_layers + 1, n, POS, d]` of a randomly initialised causal network:
    token + position embeddings, then per layer h += tanh(LN(causal mean of h) @ W1) @ W2."""
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((VOCAB, d))[ids] + 0.5 * rng.standard_normal((POS, d))[None]
    out = [h]
    m = mask[:, :, None].astype(float)
    for _ in range(n_layers):
        w1 = rng.standard_normal((d, 4 * d)) / np.sqrt(d)
        w2 = rng.standard_normal((4 * d, d)) / np.sqrt(4 * d)
        ctx = np.cumsum(h * m, axis=1) / np.maximum(np.cumsum(m, axis=1), 1.0)
        ctx = (ctx - ctx.mean(-1, keepdims=True)) / (ctx.std(-1, keepdims=True) + 1e-6)
        h = h + np.tanh(ctx @ w1) @ w2
        out.append(h)
    return np.stack(out)


def activations(resid, ids, mask, labels, span, label: str) -> Activations:
    """The activations artifact of `resid` `[layer + 1, n, POS, d]` over these prompts."""
    return Activations(
        resid=(resid * mask[None, :, :, None]).astype(np.float32),
        mask=mask,
        ids=np.where(mask, ids, 0).astype(np.int32),
        last=mask.sum(axis=1) - 1,
        span_mask=span,
        labels=labels,
        prepend_bos=False,
        model_label=label,
        texts=tuple(f"prompt {i}" for i in range(labels.size)),
    )


def random_nets(seed: int, count: int, **kw) -> list[Activations]:
    """`count` random-init networks (seeds 100 * seed + j) fed the same prompts (of `seed`)."""
    ids, mask, labels, span = prompts(seed)
    return [
        activations(random_net(ids, mask, 100 * seed + j, **kw), ids, mask, labels, span, f"m{j}")
        for j in range(count)
    ]


def planted_pair(seed: int, d: int = 16):
    """(A, B, random-init copy of B): A = a random net plus class directions planted at every
    token of layers >= 1 (a network that has learnt the classes); B = A in another basis (a
    random rotation) plus a little noise; the copy = a fresh random net of B's shape."""
    ids, mask, labels, span = prompts(seed)
    rng = np.random.default_rng(1000 + seed)
    resid = random_net(ids, mask, 100 * seed, d=d)
    dirs = 2.0 * rng.standard_normal((4, d))
    resid[1:] += dirs[labels][None, :, None, :]
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    rot = q * np.sign(np.diag(r))
    res_b = resid @ rot + 0.01 * rng.standard_normal(resid.shape)
    ctrl = random_net(ids, mask, 100 * seed + 7, d=d)
    return tuple(
        activations(x, ids, mask, labels, span, name)
        for x, name in ((resid, "a"), (res_b, "b"), (ctrl, "b random-init"))
    )
