"""Pairing two models' activations row for row, the inputs of a cross-model map (phase 6 and the
cross-model patching): which layers go together, which rows, and which prompts fit the map.

- Layers: models of different depth are compared at the same relative depth, layer l of A
  (0 = embeddings ... L_A = resid_post) with layer round(l * L_B / L_A) of B (`matched_layers`).
- Rows: per token ("token") only when both models split every prompt into the same tokens
  (`jaxcirc.data.activations.same_tokenization`); otherwise per prompt, at the last real token
  ("sentence_end") or as the mean over the prompt's real tokens ("prompt_mean") (`pairings`,
  `features`). A prepended BOS is left out of token rows and means: its residual is the same in
  every prompt.
- Prompts: the map is fit on NEUTRAL prompts only, split by prompt into fit / held-out
  (`split_neutral`), so all tokens of a prompt fall on one side. `row_prompts` names the prompt
  of every row, so nulls and bootstraps move whole prompts.
"""

from __future__ import annotations

import numpy as np

from jaxcirc.data.activations import Activations, same_tokenization
from jaxcirc.data.emotions import NEUTRAL_INDEX


def matched_layers(n_a: int, n_b: int, stride: int = 1) -> list[tuple[int, int]]:
    """[(layer of A, layer of B)] at the same relative depth; n_a, n_b = blocks (L), layers are
    0..L with 0 = embeddings. A's layers: every `stride`-th, the last always included."""
    la = sorted(set(range(0, n_a + 1, stride)) | {n_a})
    return [(a, int(np.floor(a * n_b / n_a + 0.5))) for a in la]


def pairings(a: Activations, b: Activations, fit_on: str) -> list[str]:
    """Row pairings used for models a and b: [fit_on] unless fit_on is "all_tokens", which means
    ["token"] when both tokenise identically, else ["sentence_end", "prompt_mean"]."""
    if fit_on != "all_tokens":
        return [fit_on]
    return ["token"] if same_tokenization(a, b) else ["sentence_end", "prompt_mean"]


def split_neutral(labels, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit prompt indices, held-out prompt indices) among the neutral prompts, sorted."""
    idx = np.flatnonzero(np.asarray(labels) == NEUTRAL_INDEX)
    n_test = int(round(test_fraction * idx.size))
    if n_test < 2 or idx.size - n_test < 2:
        raise ValueError(
            f"labels: {idx.size} neutral prompts give {idx.size - n_test} fit / {n_test} held-out "
            "with this test_fraction; need at least 2 each, add neutral prompts"
        )
    perm = np.random.default_rng(seed).permutation(idx)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _real(acts: Activations, prompts) -> np.ndarray:
    """[len(prompts), pos] mask of real tokens, BOS excluded."""
    m = acts.mask[prompts].copy()
    if acts.prepend_bos:
        m[:, 0] = False
    return m


def features(acts: Activations, pairing: str, layer: int, prompts) -> np.ndarray:
    """Rows `[rows, d_model]` (float64) of `prompts` at `layer` under `pairing`. For "token",
    rows are (prompt, position) in prompt order then position order."""
    h = acts.resid[layer, prompts]  # [p, pos, d]
    if pairing == "sentence_end":
        return h[np.arange(len(prompts)), acts.last[prompts]].astype(np.float64)
    m = _real(acts, prompts)
    if pairing == "token":
        return h[m].astype(np.float64)
    if pairing == "prompt_mean":
        counts = m.sum(axis=1, keepdims=True)
        if np.any(counts == 0):
            raise ValueError("acts: a prompt has no real token besides BOS; drop empty prompts")
        return np.einsum("pt,ptd->pd", m / counts, h.astype(np.float64))
    raise ValueError(f"pairing: {pairing!r}; use token, sentence_end or prompt_mean")


def row_prompts(acts: Activations, pairing: str, prompts) -> np.ndarray:
    """`[rows]`: the prompt (its index in `acts`) of every row `features(acts, pairing, _,
    prompts)` returns, in the same order."""
    prompts = np.asarray(prompts)
    if pairing == "token":
        return np.repeat(prompts, _real(acts, prompts).sum(axis=1))
    if pairing in ("sentence_end", "prompt_mean"):
        return prompts.copy()
    raise ValueError(f"pairing: {pairing!r}; use token, sentence_end or prompt_mean")
