"""Phase 2: every layer's residual stream at every position, for every prompt of a dataset.

    acts = extract_residuals(model, records, prepend_bos=False, label="gpt2")
    acts.save(run_dir / "activations.npz")        # + activations.json beside it
    run(Inputs(model, records, "gpt2"), section, out_dir)   # the same, as the study runs it

The result is the activations artifact (`jaxcirc.data.activations.Activations`: its layer axis,
`sentence_end`, `span_mean`, save/load).

Prompts are tokenised once and packed (`jaxcirc.core.packing`): several prompts share a row of one
width (a multiple of `pad_to_multiple`), each seeing only its own tokens and positions, so little
compute goes to padding and every call has one shape (one compile). About `batch_size` prompts'
tokens go through per call. Padding positions of the result hold zeros and `mask` is False there.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
import numpy as np

import models
from jaxcirc.core import packing
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations
from jaxcirc.infra.progress import progress

NAME = "extract"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Inputs:
    """model: a LoadedModel with a tokenizer; records: the prompts, in the order of the result's
    rows; label: the model's name in every output."""

    model: models.LoadedModel
    records: Sequence[dataset.Record]
    label: str


def run(inputs: Inputs, cfg: ml_collections.ConfigDict, out_dir: Path) -> None:
    """Extract the residual streams (`cfg.prepend_bos`, `cfg.batch_size`) and write
    `activations.npz` + `activations.json` under `out_dir`; the files say everything (None)."""
    acts = extract_residuals(
        inputs.model,
        inputs.records,
        prepend_bos=cfg.prepend_bos,
        batch_size=cfg.batch_size,
        label=inputs.label,
    )
    acts.save(Path(out_dir) / "activations.npz")


@functools.partial(jax.jit, static_argnames=("cfg",))
def packed_residuals(cfg: models.ModelConfig, params, ids, segments):
    """The jitted forward `extract_residuals` runs: packed rows `ids` `[rows, width]` with their
    `segments` (`packing.Call.arrays`) -> `[layer + 1, rows, width, d_model]`; no unembedding."""
    rec = models.Record.residuals(logits="none")
    _, trace = models.forward(cfg, params, ids, None, None, rec, segments=segments)
    return trace.hidden_states()


def plan_batches(cfg: models.ModelConfig, lengths, batch_size: int, pad_to_multiple: int):
    """How `extract_residuals` packs prompts of `lengths` tokens into calls (`packing.Plan`):
    about `batch_size` prompts' tokens per call, rows of one width (one compile)."""
    d = cfg.d_model
    per_token = 8 * d * d + 4 * d * cfg.d_mlp  # matmul FLOPs per token per layer, / 2
    return packing.pack(
        lengths,
        batch_size=batch_size,
        pad_to_multiple=pad_to_multiple,
        max_width=cfg.n_ctx,
        key_cost=4 * d / per_token,
    )


def _check_args(records, batch_size: int, pad_to_multiple: int) -> None:
    if not records:
        raise ValueError("records: empty; pass the dataset's records")
    if batch_size < 1 or pad_to_multiple < 1:
        raise ValueError(
            f"batch_size/pad_to_multiple: need >= 1, got {batch_size}/{pad_to_multiple}"
        )


def _tokenise(model: models.LoadedModel, records, prepend_bos: bool):
    """(tokens, ids `[n, width]`, mask `[n, width]`, span mask `[n, width]`), cut to the longest
    prompt (packing pads each call itself)."""
    toks = model.tokenize([r.text for r in records], prepend_bos=prepend_bos, pad_to_multiple=1)
    width = int(toks.lengths.max())
    ids, mask = toks.ids[:, :width], toks.mask[:, :width]
    span = toks.span_mask([list(r.spans) for r in records])[:, :width]
    models.validate_tokens(model.config, ids)
    return toks, ids, mask, span


def _model_meta(model: models.LoadedModel, label: str) -> dict:
    cfg = model.config
    return {
        "label": label,
        "source": model.source,
        "revision": model.revision,
        "family": cfg.family,
        "n_layers": cfg.n_layers,
        "d_model": cfg.d_model,
    }


def extract_residuals(
    model: models.LoadedModel,
    records: Sequence[dataset.Record],
    prepend_bos: bool,
    batch_size: int = 32,
    label: str = "",
    pad_to_multiple: int = 8,
) -> Activations:
    """Run every record through `model` and keep the whole residual stream (see module docstring).

    Rows of the result are in `records` order. `meta` records the tokenisation (prepend_bos,
    pad id, lengths), the packing (row width, rows per call, share of computed slots that hold
    a real token), and wall time / samples per second (compilation included, as a user
    experiences it).
    """
    _check_args(records, batch_size, pad_to_multiple)
    label = label or model.config.name or model.source or model.config.family
    t0 = time.perf_counter()
    toks, ids, mask, span = _tokenise(model, records, prepend_bos)
    lengths = toks.lengths
    labels = np.array([dataset.EMOTIONS.index(r.emotion) for r in records], np.int64)
    cfg, n = model.config, len(records)
    resid = np.zeros((cfg.n_layers + 1, n, ids.shape[1], cfg.d_model), np.float32)
    plan = plan_batches(cfg, lengths, batch_size, pad_to_multiple)
    desc = f"extract {label} ({n} prompts, {plan.n_calls} calls of {plan.rows_per_call} rows)"
    for call in progress(plan.calls(), desc=desc):
        b_ids, b_seg = call.arrays(ids, toks.pad_id)
        # Across processes each feeds only its devices' rows (models.feed_batch).
        b_ids, b_seg = models.feed_batch(b_ids), models.feed_batch(b_seg)
        h = np.asarray(packed_residuals(cfg, model.params, b_ids, b_seg), np.float32)
        resid[:, call.prompt, call.pos] = h[:, call.row, call.slot]
    seconds = time.perf_counter() - t0
    meta = {
        "model": _model_meta(model, label),
        "tokenization": {**toks.record(), "lengths": lengths.tolist()},
        "batch_size": batch_size,
        "pad_to_multiple": pad_to_multiple,
        "packing": plan.record(),
        "seconds": seconds,
        "samples_per_s": n / seconds if seconds > 0 else None,
        "backend": jax.default_backend(),
        "layer_axis": "0 = embeddings (lexical baseline); l = after block l-1; L = resid_post",
    }
    return Activations(
        resid=resid,
        mask=mask,
        ids=ids.astype(np.int32),
        last=(lengths - 1).astype(np.int64),
        span_mask=span,
        labels=labels,
        prepend_bos=bool(prepend_bos),
        model_label=label,
        texts=tuple(r.text for r in records),
        record_ids=tuple(r.id for r in records),
        meta=meta,
    )
