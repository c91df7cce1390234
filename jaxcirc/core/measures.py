"""Model-internal emotion measures that need no generated text.

- projection: how far a residual vector points along an emotion direction (a dot product with
  the unit direction, in residual-stream units).
- logit difference: mean logit of one emotion's words minus mean logit of a contrast set, read at
  the position being predicted. Word lists become token ids per tokenizer with `word_token_ids`,
  which keeps only words that are ONE token (with the leading space) and reports the rest.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

# The dummy prefix sentencepiece puts before every text (and before words after a space).
SPM_PREFIX = "\u2581"


def unit(v, axis: int = -1, eps: float = 1e-12):
    """v / |v| along `axis`."""
    return v / jnp.maximum(jnp.linalg.norm(v, axis=axis, keepdims=True), eps)


def projection(resid, direction):
    """resid [..., d_model] . unit(direction [d_model]) -> [...]."""
    return jnp.einsum("...d,d->...", resid, unit(direction))


@dataclasses.dataclass(frozen=True)
class WordIds:
    """Token ids of single-token words per emotion, and the words that were dropped."""

    ids: dict[str, tuple[int, ...]]
    dropped: dict[str, tuple[str, ...]]

    def all_ids(self) -> np.ndarray:
        """Every id, concatenated in emotion order: the unembedding columns worth computing."""
        return np.asarray([i for ids in self.ids.values() for i in ids], np.int32)

    def slices(self) -> dict[str, slice]:
        """Where each emotion's ids sit in `all_ids()`."""
        out, start = {}, 0
        for emo, ids in self.ids.items():
            out[emo] = slice(start, start + len(ids))
            start += len(ids)
        return out


def word_pieces(tokenizer, word: str) -> list[int]:
    """The token ids of `word` as it reads inside a text: its encoding alone, less a leading lone
    sentencepiece `▁` piece. A sentencepiece tokenizer puts that dummy prefix before every text,
    so a word encoded alone starts with it (when `▁word` is not a piece of its own), though the
    word does not carry it after other text. Nothing else is dropped: a byte-level BPE's lone
    `Ġ` (a space the word's own token does not absorb) is part of the word as written."""
    toks = list(tokenizer(word, add_special_tokens=False)["input_ids"])
    if len(toks) > 1 and tokenizer.convert_ids_to_tokens([toks[0]])[0] == SPM_PREFIX:
        toks = toks[1:]
    return toks


def word_token_ids(tokenizer, words: dict[str, tuple[str, ...]]) -> WordIds:
    """Keep the words that tokenise to exactly one token (`word_pieces`: a lone leading
    sentencepiece `▁` does not count); an emotion left empty is an error."""
    ids, dropped = {}, {}
    for emo, ws in words.items():
        keep, drop = [], []
        for w in ws:
            toks = word_pieces(tokenizer, w)
            (keep if len(toks) == 1 else drop).append(toks[0] if len(toks) == 1 else w)
        if not keep:
            raise ValueError(
                f"no {emo} word is a single token for this tokenizer (tried {ws}); "
                "add single-token words to the list"
            )
        ids[emo] = tuple(int(i) for i in dict.fromkeys(keep))
        dropped[emo] = tuple(drop)
    return WordIds(ids, dropped)


def logit_diff(logits_cols, word_ids: WordIds, emotion: str, contrast: str | None = None):
    """Mean logit of `emotion`'s words minus the mean over `contrast`'s words (default: every
    other emotion's words). logits_cols: [..., len(word_ids.all_ids())] -> [...], numpy for
    numpy (an eager jnp op would compile once per input shape: once per prompt set)."""
    xp = np if isinstance(logits_cols, np.ndarray) else jnp
    sl = word_ids.slices()
    pos = logits_cols[..., sl[emotion]].mean(-1)
    if contrast is not None:
        neg = logits_cols[..., sl[contrast]].mean(-1)
    else:
        others = [logits_cols[..., s] for e, s in sl.items() if e != emotion]
        neg = xp.concatenate(others, axis=-1).mean(-1)
    return pos - neg
