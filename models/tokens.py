"""Tokenisation with everything that decides the token ids recorded beside them.

Whether a BOS token is prepended is always an explicit argument (`prepend_bos`), stored in the
result: GPT-2 and GPT-Neo tokenizers add nothing by default and Pythia's does not either, but the
choice changes every position index, so it is never a silent per-family default.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tokens:
    """A right-padded batch of token ids.

    ids: [batch, pos] int32 (padding positions hold `pad_id`); mask: [batch, pos] bool;
    offsets: per row, per real token, the (start, end) character span it covers in the text
    ((0, 0) for a prepended BOS); lengths: [batch] real tokens per row.
    """

    ids: np.ndarray
    mask: np.ndarray
    offsets: tuple[tuple[tuple[int, int], ...], ...]
    texts: tuple[str, ...]
    prepend_bos: bool
    pad_id: int
    tokenizer: dict | None = None  # the tokenizer's own `record()` when it has one (sentencepiece)

    @property
    def lengths(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    @property
    def last(self) -> np.ndarray:
        """[batch] index of each row's last real token."""
        return self.lengths - 1

    def padded(self, width: int) -> Tokens:
        """The same rows right-padded to `width` slots (>= the current width): prompt sets padded
        to one width share every compiled shape, and the padding is masked, so what a real token
        computes does not change."""
        if width < self.ids.shape[1]:
            raise ValueError(f"width {width} < the tokens' width {self.ids.shape[1]}")
        pad = ((0, 0), (0, width - self.ids.shape[1]))
        ids = np.pad(self.ids, pad, constant_values=self.pad_id)
        return dataclasses.replace(self, ids=ids, mask=np.pad(self.mask, pad))

    def span_mask(self, spans: list[list[tuple[int, int]]]) -> np.ndarray:
        """[batch, pos] bool: tokens overlapping any of each row's character spans [start, end)."""
        out = np.zeros(self.ids.shape, bool)
        for b, (row_offsets, row_spans) in enumerate(zip(self.offsets, spans, strict=True)):
            for t, (s, e) in enumerate(row_offsets):
                if e > s and any(s < se and e > ss for ss, se in row_spans):
                    out[b, t] = True
        return out

    def record(self) -> dict:
        """What a run directory stores about how the text became tokens."""
        out = {
            "prepend_bos": self.prepend_bos,
            "pad_id": self.pad_id,
            "padding_side": "right",
            "lengths": self.lengths.tolist(),
        }
        if self.tokenizer is not None:
            out["tokenizer"] = self.tokenizer
        return out


def tokenize(
    tokenizer,
    texts: list[str],
    prepend_bos: bool,
    bos_id: int | None = None,
    pad_to_multiple: int = 8,
    max_len: int | None = None,
) -> Tokens:
    """Tokenise `texts` without the tokenizer's own special tokens, prepend BOS iff asked.

    Padding length is rounded up to `pad_to_multiple` so batches of similar length share one
    compiled shape. Texts longer than `max_len` tokens raise (never truncated silently).
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a list of strings, not one string; wrap it in a list")
    if prepend_bos:
        bos_id = bos_id if bos_id is not None else tokenizer.bos_token_id
        if bos_id is None:
            raise ValueError("prepend_bos=True but the tokenizer has no bos_token_id; pass bos_id")
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    rows, offs = [], []
    for ids, off in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        ids, off = list(ids), [tuple(o) for o in off]
        if prepend_bos:
            ids, off = [bos_id] + ids, [(0, 0)] + off
        if not ids:
            raise ValueError("an empty text gives no tokens; pass prepend_bos=True or drop it")
        rows.append(ids)
        offs.append(tuple(off))
    longest = max(len(r) for r in rows)
    if max_len is not None and longest > max_len:
        raise ValueError(f"a text has {longest} tokens, over max_len={max_len}; shorten it")
    width = -(-longest // pad_to_multiple) * pad_to_multiple
    if max_len is not None:
        width = min(width, max_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        mask[i, : len(r)] = True
    described = tokenizer.record() if hasattr(tokenizer, "record") else None
    return Tokens(ids, mask, tuple(offs), tuple(texts), prepend_bos, int(pad_id), described)
