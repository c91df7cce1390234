"""A sentencepiece tokenizer trained on a Japanese demo corpus, for the offline Japanese stand-ins.

Built the way rinna's Japanese checkpoints' are (a unigram sentencepiece model, the `nmt_nfkc`
normaliser, a `▁` dummy prefix before each text), and read by the same class
(`models.spm_tokenizer.SentencePieceTokenizer`), so a stand-in tokenises like the checkpoints it
stands in for. Two choices for a small corpus: every character of the corpus is a piece
(character_coverage 1.0: Japanese has thousands of characters, and the default 0.9995 would turn
rare kanji into UNK), and byte fallback spells any other character in UTF-8 byte pieces, so no
text is UNK (as with the byte-level BPE of the English stand-ins). No lower-casing.

The interface is `jaxcirc.demo.bpe`'s, so `jaxcirc.demo.standins` can use either module:
`train_tokenizer(lines, vocab_size)`, `fingerprint`, `save_tokenizer(tok, path)`,
`load_tokenizer(path)`, `EOS` / `EOS_ID` (id 0: BOS, EOS and PAD, as in bpe), `MIN_VOCAB`,
`VERSION`, `FILENAME`; `train_model` and `to_bytes` stand for bpe's `train_backend` and `to_json`.

Training is deterministic: sentencepiece draws random numbers only to sample or shuffle the
input, which is off here (every line, in order, one thread), so the same lines and vocab size give
the same model bytes in every process; `seed` seeds sentencepiece's generator all the same.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from models.spm_tokenizer import SentencePieceTokenizer

EOS = "<|endoftext|>"
EOS_ID = 0  # BOS, EOS and PAD, as in jaxcirc.demo.bpe
UNK_ID = 1  # never produced for text (byte fallback); sentencepiece requires the piece
N_BYTES = 256

# EOS, UNK, 256 byte pieces and `▁`: the smallest vocabulary before any character of the corpus.
MIN_VOCAB = 2 + N_BYTES + 1

# Bump when `train_model` changes what given lines produce: cached tokenizers then miss.
VERSION = 1

FILENAME = "spiece.model"
# tokenizer_config.json written beside the model, so `models.load` of a stand-in folder reads the
# same special tokens `load_tokenizer` gives.
SETTINGS = {"bos_token": EOS, "eos_token": EOS, "pad_token": EOS, "do_lower_case": False}


def train_model(
    lines: Sequence[str], vocab_size: int = 1024, seed: int = 0, symbols: Sequence[str] = ()
) -> bytes:
    """The serialized sentencepiece model (spiece.model bytes) of at most `vocab_size` pieces
    (EOS, UNK and the 256 byte pieces included), trained on `lines`. `symbols`: strings made
    pieces whatever their counts (sentencepiece's user_defined_symbols; always one piece in a
    text), e.g. the words a logit-difference measure reads, which a small vocabulary would
    otherwise split (怒り -> 怒 + り)."""
    if isinstance(lines, str) or not lines:
        raise ValueError("lines must be a non-empty list of strings; pass the corpus lines")
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is below {MIN_VOCAB} (EOS, UNK, 256 bytes, '▁')")
    import sentencepiece as spm

    spm.set_random_generator_seed(seed)
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(list(lines)),
            model_writer=out,
            model_type="unigram",
            user_defined_symbols=list(symbols),
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a corpus too small for vocab_size gives fewer pieces
            character_coverage=1.0,
            byte_fallback=True,
            eos_id=EOS_ID,
            eos_piece=EOS,
            unk_id=UNK_ID,
            bos_id=-1,
            pad_id=-1,
            input_sentence_size=0,  # every line
            shuffle_input_sentence=False,
            max_sentence_length=1 << 16,  # bytes; the default 4192 drops longer lines silently
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        chars = len(set(unicodedata.normalize("NFKC", "".join(lines))) - set(" \t"))
        raise ValueError(
            f"sentencepiece cannot train {vocab_size} pieces on these lines ({e}); each of their "
            f"{chars} distinct characters (after NFKC) is a piece: pass vocab_size of at least "
            f"{chars + MIN_VOCAB}"
        ) from None
    return out.getvalue()


def train_tokenizer(
    lines: Sequence[str], vocab_size: int = 1024, seed: int = 0, symbols: Sequence[str] = ()
):
    """A sentencepiece tokenizer of at most `vocab_size` pieces trained on `lines`, as a
    `models.spm_tokenizer.SentencePieceTokenizer` (EOS id 0 also its BOS and PAD); `symbols` as
    in `train_model`.

    The vocabulary can come out smaller than `vocab_size` when the corpus runs out of pieces;
    `len(tokenizer)` is the size a model needs."""
    return _wrap(train_model(lines, vocab_size, seed, symbols))


# The tokenizer's `source`, recorded in every extraction's metadata: the same words whether the
# stand-in was trained in this run or read back from its cache (a path would make two runs of
# the same study differ in their metadata).
SOURCE = "demo sentencepiece model"


def _wrap(model: bytes, source: str = SOURCE) -> SentencePieceTokenizer:
    return SentencePieceTokenizer(
        model,
        do_lower_case=SETTINGS["do_lower_case"],
        special={"bos": EOS, "eos": EOS, "pad": EOS},
        source=source,
    )


def to_bytes(tokenizer) -> bytes:
    """The spiece.model bytes (what `save_tokenizer` writes)."""
    return tokenizer.model_proto


def fingerprint(tokenizer) -> str:
    """A short hash of the model and its settings: equal iff the tokenizers are the same."""
    return tokenizer.fingerprint()


def _write_atomic(path: Path, data: bytes):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tokenizer(tokenizer, path: str | os.PathLike) -> Path:
    """Write the model to `path` (name it spiece.model for `models.load` to find it) and
    tokenizer_config.json beside it, each atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path.parent / "tokenizer_config.json", json.dumps(SETTINGS, indent=1).encode())
    _write_atomic(path, to_bytes(tokenizer))
    return path


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer a `save_tokenizer` call wrote (a spiece.model file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no tokenizer at {path}; train one with jaxcirc.demo.spm.train_tokenizer")
    return _wrap(path.read_bytes())
