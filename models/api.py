"""`models.load`: a checkpoint in, a ready model out.

model = models.load("gpt2")                     # hub name: download, or the HF cache offline
model = models.load("EleutherAI/pythia-160m", revision="step143000")
model = models.load("/path/to/folder")          # config.json + model.safetensors
toks = model.tokenize(["Thank you so much!"], prepend_bos=False)
logits, trace = model.forward(toks, record=Record.residuals())
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models import checkpoint, families, param_cache
from models.config import ModelConfig
from models.contract import Edits, Record, Trace
from models.convert import ConversionError
from models.tokens import Tokens, tokenize
from models.transformer import forward as _forward
from models.transformer import init_params
from models.validate import check_shapes, is_traced, validate_tokens


@dataclasses.dataclass
class LoadedModel:
    """A model ready to run: its config, params (stacked, see models.transformer), tokenizer (None
    for random-weight models) and where it came from."""

    config: ModelConfig
    params: Any
    tokenizer: Any = None
    source: str = ""
    revision: str | None = None
    cache_key: str | None = None

    def tokenize(self, texts: list[str], prepend_bos: bool, **kw) -> Tokens:
        if self.tokenizer is None:
            raise ValueError(f"{self.source or 'this model'} has no tokenizer; pass token ids")
        # The tokenizer's own BOS wins over config.json's: it is the token the text was made with.
        bos = self.tokenizer.bos_token_id
        bos = bos if bos is not None else self.config.bos_token_id
        return tokenize(self.tokenizer, texts, prepend_bos, bos, **kw)

    def forward(
        self,
        tokens,
        mask=None,
        edits: Edits | None = None,
        record: Record = Record(),
        vocab_ids=None,
        segments=None,
    ) -> tuple[jnp.ndarray | None, Trace]:
        """(logits, trace); `tokens` is a `Tokens` or [batch, pos] integer ids (then `mask`
        optional). `segments`: packed rows, see `models.transformer.forward`.

        Inputs are checked before any cast (ValueError naming the input); under `jax.jit` only
        shapes and dtypes are checked, values being unknown until the compiled code runs."""
        if isinstance(tokens, Tokens):
            tokens, mask = tokens.ids, tokens.mask
        validate_tokens(self.config, tokens)
        tokens = jnp.asarray(tokens, jnp.int32)
        check_shapes(self.config, tokens.shape, mask, edits)
        if mask is not None:
            mask = jnp.asarray(mask, bool)
        if segments is not None:
            segments = _segments_arg(segments, tokens.shape, mask)
        return _forward(
            self.config, self.params, tokens, mask, edits, record, vocab_ids, segments=segments
        )


def _segments_arg(segments, tokens_shape: tuple[int, ...], mask):
    """`segments` [batch, pos] as the forward takes them. Concrete ones are checked in full (one
    run per id, agreeing with `mask`); traced ones (under jit) by shape only."""
    traced = is_traced(segments)
    segments = jnp.asarray(segments, jnp.int32) if traced else np.asarray(segments, np.int32)
    if segments.shape != tokens_shape:
        raise ValueError(f"segments: shape {segments.shape}, expected the tokens' {tokens_shape}")
    if traced:
        return segments
    _check_segments(segments)
    if (
        mask is not None
        and not is_traced(mask)
        and not np.array_equal(np.asarray(mask), segments > 0)
    ):
        raise ValueError(
            "mask and segments disagree; with packed rows pass segments alone (its "
            "zeros are the padding)"
        )
    return segments


def _check_segments(segments: np.ndarray):
    """Each segment id must be one contiguous run in its row (else positions would restart
    mid-prompt while attention still joined the pieces)."""
    runs = 1 + (segments[:, 1:] != segments[:, :-1]).sum(axis=1)
    distinct = np.array([len(np.unique(row)) for row in segments])
    bad = np.flatnonzero(runs != distinct)
    if len(bad):
        raise ValueError(
            f"segments: row {int(bad[0])} splits a segment id into separate runs; give each "
            "prompt one contiguous run of its own id, padding (0) at the end of the row"
        )


def load(
    source: str,
    revision: str | None = None,
    cache_dir: str | None = None,
    strict_config: bool = True,
    use_param_cache: bool = True,
    with_tokenizer: bool = True,
) -> LoadedModel:
    """Load a GPT-2 / GPT-NeoX (Pythia) / GPT-Neo checkpoint from a folder or a hub name.

    Raises `checkpoint.CheckpointNotFound` (a ValueError) with where it looked when the weights
    are absent, `checkpoint.CheckpointError` for a file that cannot be read (config.json not a
    JSON object, a truncated model.safetensors), and `convert.ConversionError` for an
    unsupported architecture, a config.json lacking a setting, or weights that do not match
    their config. Each message is one line naming the file and the fix.
    """
    folder = checkpoint.resolve(source, revision=revision, cache_dir=cache_dir)
    hf = checkpoint.read_config(folder)
    where = str(folder / "config.json")
    family = families.family_for(hf, where)
    cfg = families.config_from_hf(hf, name=str(source), strict=strict_config, where=where)
    key = param_cache.cache_key(checkpoint.fingerprint(folder)) if use_param_cache else None
    params = param_cache.restore(key) if key else None
    if params is None:
        state = checkpoint.read_weights(folder)
        try:
            params = family.convert(state, cfg)
        except ConversionError as e:
            raise ConversionError(f"{folder}: {e}") from None
        if key:
            param_cache.save(key, params)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    tokenizer = _tokenizer(folder) if with_tokenizer else None
    return LoadedModel(cfg, params, tokenizer, str(source), revision, key)


def _tokenizer(folder):
    if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def random_model(name_or_config, seed: int = 0, tokenizer=None) -> LoadedModel:
    """A model of a published shape ('gpt2', 'pythia-160m', 'gpt-neo-125m', ...), of a config.json
    dict, or of a ModelConfig, with random weights (normal 0.02): for tests and benchmarks."""
    if isinstance(name_or_config, ModelConfig):
        cfg = name_or_config
    else:
        hf = (
            name_or_config
            if isinstance(name_or_config, dict)
            else families.published_hf_config(name_or_config)
        )
        label = name_or_config if isinstance(name_or_config, str) else hf.get("model_type", "")
        cfg = families.config_from_hf(hf, name=f"random {label}")
    params = init_params(cfg, seed)
    return LoadedModel(cfg, params, tokenizer, cfg.name, None, None)
