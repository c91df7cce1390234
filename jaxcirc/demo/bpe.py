"""A byte-level BPE tokenizer trained on the demo corpus, for the offline stand-in models.

Built the way GPT-2's is (byte-level pre-tokenizer without a prefix space, byte-level decoder,
offsets that include a word's leading space), so everything downstream treats it like the real
families' tokenizers: `models.tokenize` reads its offsets, `LoadedModel.tokenize` its BOS.

One special token, `EOS = "<|endoftext|>"`, with id 0, serves as BOS, EOS, PAD and UNK (GPT-2's
convention, plus PAD so padded batches need no fallback). The stand-ins are trained on lines
joined by it, so it is also the natural "start of text" token when a study prepends BOS.

Training is deterministic: the BPE trainer has no randomness (merges are chosen by count, ties
broken by the pair itself), so the same lines and vocab size give the same tokenizer.json, byte
for byte, on every machine and in every process.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

EOS = "<|endoftext|>"
EOS_ID = 0  # the first special token the trainer adds takes id 0

# 256 byte symbols + EOS: the smallest vocabulary a byte-level BPE can have.
MIN_VOCAB = 257

# Bump when `train_backend` changes what given lines produce: cached tokenizers then miss.
VERSION = 1

FILENAME = "tokenizer.json"  # what a checkpoint folder calls the file `save_tokenizer` writes


def train_tokenizer(lines: Sequence[str], vocab_size: int = 1024):
    """A byte-level BPE of at most `vocab_size` tokens (EOS and the 256 bytes included),
    trained on `lines`, as a `transformers.PreTrainedTokenizerFast`.

    The vocabulary can come out smaller than `vocab_size` when the corpus runs out of pairs to
    merge; `len(tokenizer)` is the size a model needs.
    """
    return _wrap(train_backend(lines, vocab_size))


def train_backend(lines: Sequence[str], vocab_size: int = 1024) -> Tokenizer:
    """`train_tokenizer`'s `tokenizers.Tokenizer`, before wrapping for transformers."""
    if isinstance(lines, str) or not lines:
        raise ValueError("lines must be a non-empty list of strings; pass the corpus lines")
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size={vocab_size} is below {MIN_VOCAB} (256 bytes + EOS)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # GPT-2's post-processor: offsets keep the leading space of " word" (trim_offsets=False).
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,  # a merge seen once is memorisation, not vocabulary
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(lines), trainer=trainer)
    if tok.token_to_id(EOS) != EOS_ID:
        raise RuntimeError(f"{EOS} got id {tok.token_to_id(EOS)}, expected {EOS_ID}")
    return tok


def _wrap(tok: Tokenizer):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def to_json(tokenizer) -> str:
    """The tokenizer.json text (what `save_tokenizer` writes and `fingerprint` hashes)."""
    return tokenizer.backend_tokenizer.to_str()


def fingerprint(tokenizer) -> str:
    """A short hash of the tokenizer.json text: equal iff the tokenizers are the same."""
    return hashlib.sha256(to_json(tokenizer).encode()).hexdigest()[:16]


def save_tokenizer(tokenizer, path: str | os.PathLike) -> Path:
    """Write tokenizer.json to `path` atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(to_json(tokenizer))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer a `save_tokenizer` call wrote (a tokenizer.json file)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no tokenizer at {path}; train one with jaxcirc.demo.bpe.train_tokenizer")
    return _wrap(Tokenizer.from_file(str(path)))
