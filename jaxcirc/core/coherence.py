"""Is a generated continuation still text? Two measures per row and a class per cell.

    loss, n_tok = continuation_loss(cfg, params, ids, mask, Continuations(prompt_idx, tokens, eos_at))
    rep = scoring.repetition(token_rows(tokens, eos_at), n)
    cls = classify(rep_rise, loss_rise, Thresholds(repetition_rise, loss_rise))

- repetition (`jaxcirc.core.scoring.repetition`): share of a continuation's token n-grams that
  repeat an earlier one (1 - distinct-n). Steering pushed too hard loops: "I for the s s s s".
- loss: the UNSTEERED model's mean negative log-likelihood per token (nats) of the continuation
  given its prompt, one forward of prompt + continuation with no edit. Text the model itself
  would not write (word salad, another language's bytes) scores high; a loop can score low, which
  is why repetition is read first.

A continuation is its generated tokens up to and including the first EOS (all of them when none
was generated): what the text measures read, plus the choice to stop.

Cells (a direction, layer and alpha over the prompts) are classed against the unsteered
continuations of the same prompts, paired per prompt (`classify`): "repetitive" (collapse into
repetition) when the mean repetition rose by more than `repetition_rise`, else "degraded" when the
mean loss rose by more than `loss_rise` nats per token, else "coherent".
"""

from __future__ import annotations

import dataclasses
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from models.contract import Record
from models.transformer import forward, unembed

CLASSES = ("coherent", "repetitive", "degraded")


@dataclasses.dataclass(frozen=True)
class Continuations:
    """Generated rows to score: prompt_idx [n] (the prompt each row continues), tokens [n, new]
    and eos_at [n] (index of the first EOS in tokens, -1 when none), as `models.scheduler.RunOut`
    holds them."""

    prompt_idx: np.ndarray
    tokens: np.ndarray
    eos_at: np.ndarray

    def lengths(self) -> np.ndarray:
        """[n] tokens in each continuation: up to and including the first EOS."""
        eos = np.asarray(self.eos_at)
        return np.where(eos >= 0, eos + 1, np.asarray(self.tokens).shape[1])


def token_rows(tokens, eos_at) -> list[list[int]]:
    """Each continuation's token ids up to (not including) the first EOS: the units repetition
    counts (the text the measures read)."""
    out = []
    for row, e in zip(np.asarray(tokens), np.asarray(eos_at), strict=True):
        out.append([int(t) for t in (row[:e] if e >= 0 else row)])
    return out


@functools.partial(jax.jit, static_argnames=("cfg",))
def _row_nll(cfg, params, ids, mask, qpos, tgt, tmask):
    """Sum of -log p(tgt | prefix) over tmask and its count, per row. ids, mask [B, W]; qpos,
    tgt, tmask [B, new]: the position predicting each target, the target, 1 where it counts."""
    _, trace = forward(cfg, params, ids, mask, None, Record(resid_post=True, logits="none"))
    x = jnp.take_along_axis(trace.resid_post, qpos[..., None], axis=1)  # [B, new, d_model]
    logp = jax.nn.log_softmax(unembed(cfg, params, x).astype(jnp.float32), axis=-1)
    picked = jnp.take_along_axis(logp, tgt[..., None], axis=-1)[..., 0]  # [B, new]
    return -(picked * tmask).sum(1), tmask.sum(1)


def _unique_rows(cont: Continuations) -> tuple[np.ndarray, np.ndarray]:
    """(index of one row per distinct (prompt, continuation), inverse [n] mapping rows to them):
    a small push often leaves the continuation as it was, and its loss need not be paid twice."""
    toks = np.asarray(cont.tokens, np.int64)
    keep = np.arange(toks.shape[1])[None] < cont.lengths()[:, None]
    key = np.concatenate(
        [np.asarray(cont.prompt_idx, np.int64)[:, None], np.where(keep, toks, -1)], 1
    )
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


def continuation_loss(cfg, params, ids, mask, cont: Continuations, rows_per_call: int = 64):
    """([n] mean NLL per token in nats, [n] tokens scored) of each continuation under the
    unedited model, given its prompt (ids, mask [n_prompts, P], any padding; rows are P + new
    wide).

    Each distinct (prompt, continuation) is run once as prompt + continuation, rows_per_call rows
    per call (one compiled shape; memory ~ rows_per_call * new * d_vocab * 4 bytes for the
    log-probabilities, plus the activations of rows_per_call * (P + new) tokens). Only the
    positions that predict a continuation token are unembedded.
    """
    ids, mask = np.asarray(ids), np.asarray(mask, bool)
    n = len(cont.prompt_idx)
    new = np.asarray(cont.tokens).shape[1]
    if n == 0:
        return np.zeros(0), np.zeros(0, np.int64)
    first, inverse = _unique_rows(cont)
    prompts = [ids[i][mask[i]] for i in range(len(ids))]
    # The prompts' padded width, not their longest: prompt sets padded to one width share the
    # compiled shape (the right padding is masked: the loss does not change).
    width = ids.shape[1] + new
    u_ids = np.zeros((len(first), width), np.int32)
    u_mask = np.zeros((len(first), width), bool)
    qpos = np.zeros((len(first), new), np.int32)
    lengths = cont.lengths()
    for r, row in enumerate(first):
        p = prompts[int(cont.prompt_idx[row])]
        c = int(lengths[row])
        u_ids[r, : len(p)] = p
        u_ids[r, len(p) : len(p) + c] = np.asarray(cont.tokens)[row, :c]
        u_mask[r, : len(p) + c] = True
        qpos[r] = np.minimum(len(p) - 1 + np.arange(new), width - 1)
    tgt = np.asarray(cont.tokens, np.int32)[first]
    tmask = (np.arange(new)[None] < lengths[first][:, None]).astype(np.float32)
    total, count = np.zeros(len(first)), np.zeros(len(first))
    size = max(1, int(rows_per_call))  # one shape for every call, small ones padded up
    for s in range(0, len(first), size):
        sl = np.arange(s, min(s + size, len(first)))
        pad = np.concatenate([sl, np.zeros(size - len(sl), np.int64)])  # one compiled shape
        args = (u_ids[pad], u_mask[pad], qpos[pad], tgt[pad], tmask[pad])
        t, c = _row_nll(cfg, params, *(jnp.asarray(a) for a in args))
        total[sl], count[sl] = np.asarray(t)[: len(sl)], np.asarray(c)[: len(sl)]
    loss = total / np.maximum(count, 1)
    return loss[inverse], count[inverse].astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """How far a cell's mean may move from the unsteered continuations of the same prompts and
    still count as coherent: repetition_rise (share of repeated n-grams, 0-1) and loss_rise
    (nats per token of the unsteered model's loss)."""

    repetition_rise: float
    loss_rise: float


def classify(rep_rise, loss_rise, th: Thresholds) -> np.ndarray:
    """Cells' classes (`CLASSES`, same shape as the inputs) from their mean paired rises in
    repetition and loss over the unsteered continuations: repetition is read first (a loop can
    have a low loss)."""
    rep_rise, loss_rise = np.asarray(rep_rise, np.float64), np.asarray(loss_rise, np.float64)
    out = np.full(rep_rise.shape, "coherent", dtype=object)
    out[loss_rise > th.loss_rise] = "degraded"
    out[rep_rise > th.repetition_rise] = "repetitive"
    return out


@dataclasses.dataclass
class CellCoherence:
    """Coherence of a sweep's cells. rep, loss: [..., prompt] per row (loss in nats per token);
    base_rep, base_loss: [prompt], the unsteered continuations; rep_rise, loss_rise: [...] mean
    over prompts of the paired rise (row minus its prompt's unsteered one; the loss over the
    prompts it was scored on, NaN elsewhere); cls: [...] classes."""

    rep: np.ndarray
    loss: np.ndarray
    base_rep: np.ndarray
    base_loss: np.ndarray
    rep_rise: np.ndarray
    loss_rise: np.ndarray
    cls: np.ndarray


def cell_coherence(rep, loss, base_rep, base_loss, th: Thresholds) -> CellCoherence:
    """`CellCoherence` of rows rep, loss [..., prompt] against the unsteered base_rep, base_loss
    [prompt], classed by `classify`. NaN losses (prompts whose loss was not scored) are left out
    of the mean loss rise."""
    rep, loss = np.asarray(rep, np.float64), np.asarray(loss, np.float64)
    base_rep, base_loss = np.asarray(base_rep, np.float64), np.asarray(base_loss, np.float64)
    rep_rise = (rep - base_rep).mean(-1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a cell with no scored prompt: NaN
        loss_rise = np.nanmean(loss - base_loss, axis=-1)
    return CellCoherence(
        rep, loss, base_rep, base_loss, rep_rise, loss_rise, classify(rep_rise, loss_rise, th)
    )
