"""Sentencepiece tokenizers (`spiece.model`), read with the `sentencepiece` package directly.

rinna's Japanese checkpoints (japanese-gpt2-*, japanese-gpt-1b, japanese-gpt-neox-small) ship a
sentencepiece model that transformers 4 read through the slow `T5Tokenizer`; transformers 5 has no
slow tokenizers, and its fast conversion drops `do_lower_case`. This module does what
`T5Tokenizer` (legacy mode, the one those checkpoints were used with) did to a text, stated here
once and tested in tests/models/test_spm_tokenizer.py:

1. Lower-casing, iff tokenizer_config.json says `do_lower_case: true` (rinna's GPT-2 cards: their
   config loading "has a bug", so users set it by hand; here the file's value is applied, always).
   `str.lower` on the whole text, as transformers did; offsets still point into the original text.
2. The model's own normaliser and segmentation (`nmt_nfkc` for rinna's: full-width -> half-width,
   and a `▁` dummy prefix before the first piece), unchanged: `sp.encode(text)`.
3. No special tokens, ever: `T5Tokenizer` appended `</s>` to every text (add_special_tokens=True);
   jaxcirc never appends EOS to a prompt, and a BOS is prepended only when the caller asks
   (`models.tokenize(..., prepend_bos=...)`). Text that spells a special token ("</s>") is
   encoded as the characters it is made of.

Special ids: BOS / EOS / PAD / UNK are the pieces tokenizer_config.json and
special_tokens_map.json name (the latter wins, as in transformers), looked up in the model; a role
they leave unnamed takes the model's own id (`sp.bos_id()` ...) when it has one. `record()` says
which ids those are and where they came from; `models.load` refuses a folder whose config.json
names other BOS / EOS ids.

The object offers what jaxcirc calls on a tokenizer (a subset of transformers'):
`tok(texts, add_special_tokens=False, return_offsets_mapping=True)`, `decode`,
`bos_token_id` / `eos_token_id` / `pad_token_id` / `unk_token_id`, `len(tok)`. Needs
sentencepiece >= 0.2.3 (`encode(out_type="offset_mapping")`: character offsets per piece).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.checkpoint import CheckpointError, read_json

SPM_FILE = "spiece.model"
SETTINGS_FILES = ("tokenizer_config.json", "special_tokens_map.json")  # later files win
ROLES = ("bos", "eos", "pad", "unk")


def _processor(model_proto: bytes, where: str):
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_proto=model_proto)
    except (RuntimeError, OSError, TypeError) as e:
        raise CheckpointError(
            f"{where}: not a sentencepiece model ({e}); download it again"
        ) from None


def _piece(value) -> str | None:
    """A special token as the settings files write it: a string, or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class SentencePieceTokenizer:
    """A sentencepiece model with the normalisation and special ids of its checkpoint.

    model_proto: the serialized model (the bytes of spiece.model); do_lower_case: lower-case texts
    before the model sees them; special: {role: piece} for roles in ("bos", "eos", "pad", "unk")
    (roles left out take the model's own ids); source: where it came from, for messages.
    """

    def __init__(
        self,
        model_proto: bytes,
        do_lower_case: bool = False,
        special: dict[str, str] | None = None,
        source: str = "sentencepiece model",
    ):
        self.model_proto = bytes(model_proto)
        self.do_lower_case = bool(do_lower_case)
        self.source = source
        self.sp = _processor(self.model_proto, source)
        self.special = self._special_ids(special or {})
        self._control = {i for i in self.special.values() if i is not None} | {
            i for i in range(len(self)) if self.sp.is_control(i)
        }

    @classmethod
    def from_folder(cls, folder: str | Path) -> SentencePieceTokenizer:
        """The tokenizer of a checkpoint folder: spiece.model, with do_lower_case and the special
        tokens of its tokenizer_config.json / special_tokens_map.json (each optional)."""
        folder = Path(folder)
        settings: dict = {}
        for name in SETTINGS_FILES:
            if (folder / name).is_file():
                found = read_json(folder / name, name)
                settings.update(found if isinstance(found, dict) else {})
        special = {r: _piece(settings.get(f"{r}_token")) for r in ROLES}
        path = folder / SPM_FILE
        return cls(
            path.read_bytes(),
            do_lower_case=bool(settings.get("do_lower_case", False)),
            special={r: p for r, p in special.items() if p is not None},
            source=str(path),
        )

    def _special_ids(self, special: dict[str, str]) -> dict[str, int | None]:
        """{role: id}. A named BOS / EOS the model lacks is an error; a named PAD / UNK it lacks
        falls back to the model's own (rinna's configs name "<unk>" whatever the model calls it)."""
        own = {
            "bos": self.sp.bos_id(),
            "eos": self.sp.eos_id(),
            "pad": self.sp.pad_id(),
            "unk": self.sp.unk_id(),
        }
        out = {}
        for role in ROLES:
            piece = special.get(role)
            found = self.sp.piece_to_id(piece) if piece is not None else -1
            if piece is not None and self.sp.id_to_piece(found) != piece:
                if role in ("bos", "eos"):
                    raise CheckpointError(
                        f"{self.source}: the {role}_token {piece!r} the tokenizer settings name "
                        "is not a piece of this sentencepiece model; download the tokenizer "
                        "files again"
                    )
                found = -1
            found = found if found >= 0 else own[role]
            out[role] = int(found) if found >= 0 else None
        return out

    @property
    def bos_token_id(self) -> int | None:
        return self.special["bos"]

    @property
    def eos_token_id(self) -> int | None:
        return self.special["eos"]

    @property
    def pad_token_id(self) -> int | None:
        return self.special["pad"]

    @property
    def unk_token_id(self) -> int | None:
        return self.special["unk"]

    def __len__(self) -> int:
        """Pieces in the model (a checkpoint's embedding may have more rows: padding)."""
        return self.sp.get_piece_size()

    def _lowered(self, text: str) -> tuple[str, np.ndarray, np.ndarray]:
        """(text as the model sees it, start, end): start[j] / end[j] are the character span of
        the original text that character j came from (identity without lower-casing).
        `str.lower` maps a character to one character except a handful (e.g. 'İ' -> 'i̇'); then
        the text is lowered character by character so each piece keeps its source."""
        n = len(text)
        if not self.do_lower_case or text.lower() == text:
            idx = np.arange(n)
            return text, idx, idx + 1
        lowered = text.lower()
        if len(lowered) == n:
            idx = np.arange(n)
            return lowered, idx, idx + 1
        parts = [c.lower() for c in text]
        src = np.repeat(np.arange(n), [len(p) for p in parts])
        return "".join(parts), src, src + 1

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """(ids, offsets) of one text, no special tokens; offsets are (start, end) character
        spans of the original text, (s, s) for a piece that covers none (the `▁` prefix)."""
        seen, start, end = self._lowered(text)
        res = self.sp.encode(seen, out_type="offset_mapping")
        ids = [int(i) for i in res["ids"]]
        offsets = []
        for s, e in res["offsets"]:
            a = int(start[s]) if s < len(seen) else len(text)
            offsets.append((a, int(end[e - 1])) if e > s else (a, a))
        # A character the model spells in bytes (byte fallback) comes back as zero-width byte
        # pieces, then one that covers it: every byte piece of it gets the character's span.
        for k in range(len(ids) - 2, -1, -1):
            s, e = offsets[k]
            if s == e and self.sp.is_byte(ids[k]) and self.sp.is_byte(ids[k + 1]):
                offsets[k] = offsets[k + 1]
        return ids, offsets

    def encode(self, text: str) -> list[int]:
        """Token ids of one text, no special tokens (unlike transformers' `encode`, which adds
        them by default)."""
        return self.encode_with_offsets(text)[0]

    def __call__(
        self, text, add_special_tokens: bool = False, return_offsets_mapping: bool = False
    ) -> dict:
        """transformers' calling convention for what jaxcirc uses: {"input_ids": ...,
        "offset_mapping": ... (when asked)}, per text for a list, flat for one string."""
        if add_special_tokens:
            raise ValueError(
                "add_special_tokens=True: jaxcirc never appends </s> to a text (T5Tokenizer "
                "did); pass add_special_tokens=False and prepend BOS with prepend_bos=True"
            )
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        encoded = [self.encode_with_offsets(t) for t in texts]
        out = {"input_ids": [ids for ids, _ in encoded]}
        if return_offsets_mapping:
            out["offset_mapping"] = [offs for _, offs in encoded]
        return {k: v[0] for k, v in out.items()} if single else out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`. Special and control pieces read as their piece ("</s>") unless
        `skip_special_tokens`; ids past the model's pieces (rows a checkpoint pads its embedding
        with) read as the unknown mark " ⁇ ", as sentencepiece prints an unknown piece."""
        n, out, run = len(self), [], []
        for i in (int(t) for t in ids):
            if 0 <= i < n and i not in self._control:
                run.append(i)
                continue
            out.append(self.sp.decode(run))
            run = []
            if not 0 <= i < n:
                out.append(" ⁇ ")
            elif not skip_special_tokens:
                out.append(self.sp.id_to_piece(i))
        out.append(self.sp.decode(run))
        return "".join(out)

    def convert_ids_to_tokens(self, ids: Sequence[int]) -> list[str]:
        """The pieces of `ids` ("▁ありがとう"); ids past the model's pieces give "<unk>"."""
        n = len(self)
        return [self.sp.id_to_piece(int(i)) if 0 <= int(i) < n else "<unk>" for i in ids]

    def fingerprint(self) -> str:
        """A short hash of the model bytes and the settings: equal iff the tokenizers are."""
        h = hashlib.sha256(self.model_proto)
        h.update(repr((self.do_lower_case, sorted(self.special.items()))).encode())
        return h.hexdigest()[:16]

    def record(self) -> dict:
        """What a run directory stores about how texts became ids."""
        return {
            "kind": "sentencepiece",
            "file": Path(self.source).name,
            "model_sha256": hashlib.sha256(self.model_proto).hexdigest(),
            "pieces": len(self),
            "do_lower_case": self.do_lower_case,
            "appends_eos": False,
            "special_ids": dict(self.special),
            "special_pieces": {
                r: (self.sp.id_to_piece(i) if i is not None else None)
                for r, i in self.special.items()
            },
        }
