"""The activations artifact: every layer's residual stream at every position, for every prompt.

    acts = Activations.load(run_dir / "activations.npz")   # + activations.json beside it
    se = sentence_end(acts)                       # [layer + 1, n, d_model] at the last token
    acts.save(run_dir / "activations.npz")

`jaxcirc.phases.extract.extract_residuals` makes one; the representation phases read it.

Layer axis: index 0 is the embedding output (token + learned position embeddings; the study's
"layer 0" and the LEXICAL baseline of every per-layer analysis), index l in 1..L is the residual
stream after block l-1 (`resid_pre[l]`), index L is `resid_post` (before the final layer norm).
This equals transformers' `hidden_states[:-1]` plus our pre-LN final stream. Padding positions
hold zeros and `mask` is False there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from jaxcirc.data.emotions import EMOTIONS
from jaxcirc.infra import artifacts

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
    labels: int `[n]`, index into `jaxcirc.data.emotions.EMOTIONS` (gratitude, anger, apology, neutral).
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
                "classes": list(EMOTIONS),
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
