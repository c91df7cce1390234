"""Phase 2: every layer's residual stream at every position, for every prompt of a dataset.

    acts = extract_residuals(model, records, prepend_bos=False, label="gpt2")
    acts.save(run_dir / "activations.npz")        # + activations.json beside it
    acts = Activations.load(run_dir / "activations.npz")
    se = sentence_end(acts)                       # [layer + 1, n, d_model] at the last token

Layer axis: index 0 is the embedding output (token + learned position embeddings; the study's
"layer 0" and the LEXICAL baseline of every per-layer analysis), index l in 1..L is the residual
stream after block l-1 (`resid_pre[l]`), index L is `resid_post` (before the final layer norm).
This equals transformers' `hidden_states[:-1]` plus our pre-LN final stream.

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
import numpy as np

import models
from jaxcirc.core import packing
from jaxcirc.data import dataset
from jaxcirc.infra import artifacts
from jaxcirc.infra.progress import progress

FORMAT = "jaxcirc.activations/1"


def layer_names(n_layers_plus_one: int) -> list[str]:
    """Human labels of the layer axis: "embeddings (lexical baseline)", "block 0 out", ..."""
    return ["embeddings (lexical baseline)"] + [
        f"block {i} out" + (" (resid_post)" if i == n_layers_plus_one - 2 else "")
        for i in range(n_layers_plus_one - 1)
    ]


@dataclasses.dataclass(eq=False)
class Activations:
    """Residual streams of n prompts through one model.

    resid: float32 `[layer + 1, n, pos, d_model]` (see the module docstring for the layer axis);
      zeros where `mask` is False.
    mask: bool `[n, pos]`, True at real tokens (right padding).
    ids: int32 `[n, pos]` token ids (`pad_id` at padding).
    last: int `[n]` index of each prompt's last real token.
    span_mask: bool `[n, pos]`, tokens whose character offsets overlap the record's spans (emotion
      words; for neutral records the form-matched anchor words). A prepended BOS is never marked.
    labels: int `[n]`, index into `dataset.EMOTIONS` (gratitude, anger, apology, neutral).
    prepend_bos: whether a BOS token was put in front of every prompt (shifts every position).
    model_label: which model (the study's label, e.g. "gpt2").
    texts, record_ids: the prompts, in row order.
    meta: JSON-able facts about the run (model source, tokenisation, timing).
    """

    resid: np.ndarray
    mask: np.ndarray
    ids: np.ndarray
    last: np.ndarray
    span_mask: np.ndarray
    labels: np.ndarray
    prepend_bos: bool
    model_label: str
    texts: tuple[str, ...]
    record_ids: tuple[str, ...] = ()
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n_l, n, pos, _ = _shape4(self.resid)
        for name, shape in (("mask", (n, pos)), ("ids", (n, pos)), ("span_mask", (n, pos))):
            got = np.shape(getattr(self, name))
            if got != shape:
                raise ValueError(f"Activations.{name}: shape {got}, expected {shape} from resid")
        for name in ("last", "labels"):
            if np.shape(getattr(self, name)) != (n,):
                raise ValueError(f"Activations.{name}: need shape ({n},) matching resid's n")
        if len(self.texts) != n:
            raise ValueError(f"Activations.texts: {len(self.texts)} texts for {n} prompts")
        if self.record_ids and len(self.record_ids) != n:
            raise ValueError(f"Activations.record_ids: {len(self.record_ids)} ids for {n} rows")
        self.texts = tuple(self.texts)
        self.record_ids = tuple(self.record_ids)
        del n_l

    @property
    def n_layers_plus_one(self) -> int:
        return self.resid.shape[0]

    @property
    def n(self) -> int:
        return self.resid.shape[1]

    @property
    def d_model(self) -> int:
        return self.resid.shape[3]

    @property
    def lengths(self) -> np.ndarray:
        """[n] real tokens per prompt (BOS included when prepended)."""
        return self.mask.sum(axis=1)

    def layer_names(self) -> list[str]:
        return layer_names(self.n_layers_plus_one)

    def subset(self, rows) -> Activations:
        """The prompts at `rows` (indices or a bool mask over n), same layers and positions."""
        rows = np.arange(self.n)[np.asarray(rows)]
        return dataclasses.replace(
            self,
            resid=self.resid[:, rows],
            mask=self.mask[rows],
            ids=self.ids[rows],
            last=self.last[rows],
            span_mask=self.span_mask[rows],
            labels=self.labels[rows],
            texts=tuple(self.texts[i] for i in rows),
            record_ids=tuple(self.record_ids[i] for i in rows) if self.record_ids else (),
        )

    def save(self, path: str | Path) -> tuple[Path, Path]:
        """Write `<path>` (.npz: arrays) and `<path minus .npz>.json` (strings, metadata), each
        atomically; returns both paths (list both as stage outputs)."""
        npz_path, json_path = _paths(path)
        artifacts.write_npz(
            npz_path,
            resid=self.resid.astype(np.float32, copy=False),
            mask=self.mask,
            ids=self.ids,
            last=self.last,
            span_mask=self.span_mask,
            labels=self.labels,
        )
        artifacts.write_json(
            json_path,
            {
                "format": FORMAT,
                "npz": npz_path.name,
                "model_label": self.model_label,
                "prepend_bos": bool(self.prepend_bos),
                "classes": list(dataset.EMOTIONS),
                "shape": {
                    "layer+1": self.n_layers_plus_one,
                    "n": self.n,
                    "pos": self.resid.shape[2],
                    "d_model": self.d_model,
                },
                "layer_names": self.layer_names(),
                "texts": list(self.texts),
                "record_ids": list(self.record_ids),
                "meta": self.meta,
            },
        )
        return npz_path, json_path

    @classmethod
    def load(cls, path: str | Path) -> Activations:
        """Read what `save` wrote; raises ValueError if the two files do not belong together."""
        npz_path, json_path = _paths(path)
        for p in (npz_path, json_path):
            if not p.is_file():
                raise ValueError(f"{p}: no such file; run the extraction phase first")
        side = artifacts.read_json(json_path)
        if side.get("format") != FORMAT:
            raise ValueError(f"{json_path}: format {side.get('format')!r}, expected {FORMAT!r}")
        arr = artifacts.read_npz(npz_path)
        shape = side["shape"]
        want = (shape["layer+1"], shape["n"], shape["pos"], shape["d_model"])
        if arr["resid"].shape != want:
            raise ValueError(
                f"{npz_path}: resid has shape {arr['resid'].shape} but {json_path.name} says "
                f"{want}; the files come from different runs, re-extract"
            )
        return cls(
            resid=arr["resid"],
            mask=arr["mask"],
            ids=arr["ids"],
            last=arr["last"],
            span_mask=arr["span_mask"],
            labels=arr["labels"],
            prepend_bos=bool(side["prepend_bos"]),
            model_label=side["model_label"],
            texts=tuple(side["texts"]),
            record_ids=tuple(side.get("record_ids", ())),
            meta=side.get("meta", {}),
        )


def _shape4(resid) -> tuple[int, int, int, int]:
    shape = np.shape(resid)
    if len(shape) != 4:
        raise ValueError(f"Activations.resid: need [layer+1, n, pos, d_model], got {shape}")
    return shape


def _paths(path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: activation files end in .npz; pass e.g. activations.npz")
    return path, path.with_suffix(".json")


def sentence_end(acts: Activations) -> np.ndarray:
    """`[layer + 1, n, d_model]`: the residual at each prompt's last real token."""
    return acts.resid[:, np.arange(acts.n), acts.last]


def span_mean(acts: Activations, mask: np.ndarray | None = None) -> np.ndarray:
    """`[layer + 1, n, d_model]`: per prompt, the mean residual over the tokens of `mask`
    (default `acts.span_mask`). Raises ValueError if a prompt has no marked token."""
    mask = acts.span_mask if mask is None else np.asarray(mask, bool)
    counts = mask.sum(axis=1)
    if np.any(counts == 0):
        bad = int(np.flatnonzero(counts == 0)[0])
        raise ValueError(f"mask: prompt {bad} ({acts.texts[bad]!r}) has no marked token")
    w = mask.astype(np.float32) / counts[:, None]
    return np.einsum("np,lnpd->lnd", w, acts.resid)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _hidden_states(cfg: models.ModelConfig, params, ids, segments):
    """Packed rows [rows, width] -> [layer + 1, rows, width, d_model]; no unembedding."""
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
    if not records:
        raise ValueError("records: empty; pass the dataset's records")
    if batch_size < 1 or pad_to_multiple < 1:
        raise ValueError(
            f"batch_size/pad_to_multiple: need >= 1, got {batch_size}/{pad_to_multiple}"
        )
    label = label or model.config.name or model.source or model.config.family
    t0 = time.perf_counter()
    toks = model.tokenize([r.text for r in records], prepend_bos=prepend_bos, pad_to_multiple=1)
    lengths = toks.lengths
    width = int(lengths.max())
    ids, mask = toks.ids[:, :width], toks.mask[:, :width]
    span = toks.span_mask([list(r.spans) for r in records])[:, :width]
    models.validate_tokens(model.config, ids)
    labels = np.array([dataset.EMOTIONS.index(r.emotion) for r in records], np.int64)

    cfg = model.config
    n = len(records)
    resid = np.zeros((cfg.n_layers + 1, n, width, cfg.d_model), np.float32)
    plan = plan_batches(cfg, lengths, batch_size, pad_to_multiple)
    desc = f"extract {label} ({n} prompts, {plan.n_calls} calls of {plan.rows_per_call} rows)"
    for call in progress(plan.calls(), desc=desc):
        b_ids, b_seg = call.arrays(ids, toks.pad_id)
        h = np.asarray(_hidden_states(cfg, model.params, b_ids, b_seg), np.float32)
        resid[:, call.prompt, call.pos] = h[:, call.row, call.slot]
    seconds = time.perf_counter() - t0
    meta = {
        "model": {
            "label": label,
            "source": model.source,
            "revision": model.revision,
            "family": cfg.family,
            "n_layers": cfg.n_layers,
            "d_model": cfg.d_model,
        },
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


def same_tokenization(a: Activations, b: Activations) -> bool:
    """True iff both runs tokenised the same texts into the same ids (same BOS choice too):
    then position t of prompt i is the same token in both, and tokens can be paired."""
    if a.texts != b.texts or a.prepend_bos != b.prepend_bos:
        return False
    if not np.array_equal(a.lengths, b.lengths):
        return False
    w = int(a.lengths.max())
    return bool(
        np.array_equal(
            np.where(a.mask[:, :w], a.ids[:, :w], -1), np.where(b.mask[:, :w], b.ids[:, :w], -1)
        )
    )
