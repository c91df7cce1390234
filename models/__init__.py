"""Flax models of GPT-2, GPT-NeoX (Pythia) and GPT-Neo behind one forward contract.

    logits, trace = forward(cfg, params, tokens, mask, edits, record)
    logits, trace = forward(cfg, params, tokens, edits=edits, record=record, segments=segments)

The second form runs packed rows (several prompts one after another in a row, `segments` [batch,
pos] naming each token's prompt, 0 at padding): each prompt gets its own positions and attention,
as if alone; `jaxcirc.core.packing` plans such rows.

See `models.contract` for the contract, `models.transformer` for the shared block, and one file per
family (`gpt2`, `gpt_neox`, `gpt_neo`) for what differs and how HF checkpoints convert;
`models.tokenizer_files` for how a checkpoint's tokenizer is read (sentencepiece ones by
`models.spm_tokenizer`).
"""

from models.api import LoadedModel, load, random_model, validate_tokens
from models.checkpoint import CheckpointError, CheckpointNotFound
from models.config import ModelConfig
from models.contract import Edits, Record, Trace
from models.convert import ConversionError
from models.families import config_from_hf, published_hf_config, tiny_hf_config
from models.generate import Sampling, generate
from models.scheduler import (
    PATCH_SITES,
    EngineSettings,
    Load,
    Readout,
    Rows,
    RunOut,
    batch_sizes,
    run_rows,
    shared_batches,
)
from models.sharding import feed_batch, to_host
from models.spm_tokenizer import SentencePieceTokenizer
from models.tokens import Tokens, tokenize
from models.transformer import (
    Context,
    embed,
    final_at_last,
    finish_block,
    forward,
    init_params,
    make_context,
    run_blocks,
    take_last,
    unembed,
)

__all__ = [
    "CheckpointError",
    "CheckpointNotFound",
    "Context",
    "ConversionError",
    "Edits",
    "EngineSettings",
    "Load",
    "LoadedModel",
    "ModelConfig",
    "PATCH_SITES",
    "Readout",
    "Record",
    "Rows",
    "RunOut",
    "Sampling",
    "SentencePieceTokenizer",
    "Tokens",
    "Trace",
    "batch_sizes",
    "config_from_hf",
    "embed",
    "final_at_last",
    "finish_block",
    "feed_batch",
    "forward",
    "generate",
    "init_params",
    "load",
    "make_context",
    "published_hf_config",
    "random_model",
    "run_blocks",
    "run_rows",
    "shared_batches",
    "take_last",
    "tiny_hf_config",
    "to_host",
    "tokenize",
    "unembed",
    "validate_tokens",
]
