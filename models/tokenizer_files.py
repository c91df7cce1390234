"""The tokenizer a checkpoint folder ships, loaded so that it tokenises as its files say.

- `spiece.model` (rinna's Japanese checkpoints): `models.spm_tokenizer.SentencePieceTokenizer`,
  preferred when a tokenizer.json sits beside it (that is a conversion, and transformers' T5
  conversion drops do_lower_case). Its BOS / EOS ids must equal config.json's.
- `tokenizer.json` / `vocab.json` (GPT-2, Pythia, GPT-Neo, open-calm, the Japanese GPT-Neo):
  transformers' `AutoTokenizer`. transformers 5 rebuilds some classes (GPT2Tokenizer,
  GPTNeoXTokenizer) from the vocabulary and merges alone, with the class's own normaliser and
  pre-tokenizer, silently ignoring those tokenizer.json names; when they differ, the tokenizer is
  built from tokenizer.json as written instead (same special tokens), so the ids are the file's.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.checkpoint import CheckpointError
from models.config import ModelConfig
from models.spm_tokenizer import SPM_FILE, SentencePieceTokenizer

# The parts of a tokenizer.json that decide ids and text; the post-processor is read from the
# file by every class, and the vocabulary is what the class rebuilds from.
PIPELINE = ("normalizer", "pre_tokenizer", "decoder")
SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")


def load_tokenizer(folder: Path, cfg: ModelConfig):
    """The folder's tokenizer, or None when it ships none."""
    if (folder / SPM_FILE).is_file():
        tok = SentencePieceTokenizer.from_folder(folder)
        check_special_ids(tok, cfg, folder)
        return tok
    if any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return fast_tokenizer(folder)
    return None


def check_special_ids(tok, cfg: ModelConfig, folder: Path):
    """The BOS / EOS the tokenizer files name must be the ids config.json names (where both name
    one): otherwise prompts would start with, and generation stop at, tokens the model does not
    use for them."""
    for role, mine, theirs in (
        ("bos", tok.bos_token_id, cfg.bos_token_id),
        ("eos", tok.eos_token_id, cfg.eos_token_id),
    ):
        if mine is not None and theirs is not None and mine != theirs:
            raise CheckpointError(
                f"{folder}: the tokenizer's {role} token has id {mine} but config.json says "
                f"{role}_token_id {theirs}; the tokenizer files and config.json are of different "
                "models: download both again"
            )


def fast_tokenizer(folder: Path):
    """transformers' tokenizer of `folder`, rebuilt from tokenizer.json as written when the class
    transformers chose would tokenise differently from the file."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    path = folder / "tokenizer.json"
    if not path.is_file() or not hasattr(tok, "backend_tokenizer"):
        return tok
    if pipeline(tok.backend_tokenizer.to_str()) == file_pipeline(path):
        return tok
    from transformers import PreTrainedTokenizerFast

    special = {r: getattr(tok, r) for r in SPECIAL_ROLES if getattr(tok, r, None) is not None}
    return PreTrainedTokenizerFast(tokenizer_file=str(path), **special)


def pipeline(tokenizer_json: str) -> dict:
    """The normaliser, pre-tokenizer, decoder and model type of a serialized tokenizer."""
    spec = json.loads(tokenizer_json)
    return {**{k: spec.get(k) for k in PIPELINE}, "model": (spec.get("model") or {}).get("type")}


def file_pipeline(path: Path) -> dict:
    """`pipeline` of tokenizer.json as the tokenizers library reads it (so that defaults an older
    file leaves out compare equal to the ones it fills in)."""
    from tokenizers import Tokenizer

    try:
        return pipeline(Tokenizer.from_file(str(path)).to_str())
    except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception types
        raise CheckpointError(
            f"{path}: not a tokenizer file the tokenizers library reads ({e}); download it again"
        ) from None
