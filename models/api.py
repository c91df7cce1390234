"""`models.load`: a checkpoint in, a ready model out.

model = models.load("gpt2")                     # hub name: download, or the HF cache offline
model = models.load("EleutherAI/pythia-160m", revision="step143000")
model = models.load("/path/to/folder")          # config.json + model.safetensors
model = models.load("rinna/japanese-gpt2-small")  # sentencepiece (spiece.model): models.spm_tokenizer
toks = model.tokenize(["Thank you so much!"], prepend_bos=False)
logits, trace = model.forward(toks, record=Record.residuals())
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models import checkpoint, families, param_cache, sharding, tokenizer_files
from models.config import DTYPES, ModelConfig, dtype_name
from models.contract import Edits, Record, Trace
from models.convert import ConversionError
from models.stream import stream_params
from models.tokens import Tokens, tokenize
from models.transformer import cast_params, init_params, params_dtype
from models.transformer import forward as _forward
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

    @property
    def dtype(self) -> str:
        """The dtype of the params and of the computation: 'float32', 'bfloat16' or 'float16'."""
        return params_dtype(self.params)

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
        dtype: str | None = None,
    ) -> tuple[jnp.ndarray | None, Trace]:
        """(logits, trace); `tokens` is a `Tokens` or [batch, pos] integer ids (then `mask`
        optional). `segments`: packed rows, see `models.transformer.forward`. `dtype`: run in
        another dtype than the params' (cast inside the compiled call, each call).

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
        if dtype is not None:
            dtype = dtype_name(dtype)
        return _forward(
            self.config,
            self.params,
            tokens,
            mask,
            edits,
            record,
            vocab_ids,
            segments=segments,
            dtype=dtype,
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
    dtype: str = "float32",
    stream: bool = False,
    mesh=None,
) -> LoadedModel:
    """Load a GPT-2 / GPT-NeoX (Pythia) / GPT-Neo checkpoint from a folder or a hub name.

    The tokenizer is the folder's (`models.tokenizer_files`): a sentencepiece `spiece.model`
    (`models.spm_tokenizer`: rinna's Japanese checkpoints) or transformers' tokenizer.json /
    vocab.json, tokenising as those files say.

    `dtype`: of the params and the computation: 'float32' (default), 'bfloat16', 'float16', or
    'auto' for the one config.json names (`torch_dtype`; fp32 when it names none). What stays
    fp32 whatever the dtype is stated in models.contract (Numerics).

    `stream=True`: read safetensors tensor by tensor, memory-mapped, each converted
    tensor placed straight onto its devices (`models.stream`), so the host never holds the whole
    model; the params cache is not used (conversion is reshapes only: reading is the cost
    either way). Old `.bin` checkpoints cannot be memory-mapped: they load whole, as without it.
    `mesh` (axes 'data', 'model'): params placed by the partition rules of models.sharding
    (streamed onto it, or converted whole and then placed).

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
    dtype = checkpoint_dtype(hf) if dtype == "auto" else dtype_name(dtype)
    kind, files = checkpoint.weight_files(folder)
    if stream and kind == "safetensors":
        key = None
        tensors = checkpoint.SafetensorsFiles(files)
        params = _convert_or_explain(folder, stream_params, family, cfg, tensors, dtype, mesh)
    else:
        key = param_cache.cache_key(checkpoint.fingerprint(folder)) if use_param_cache else None
        params = _converted(folder, family, cfg, key)
        dt = DTYPES[dtype]
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dt), params)
        if mesh is not None:
            params = sharding.shard_params(params, mesh)
    tokenizer = tokenizer_files.load_tokenizer(folder, cfg) if with_tokenizer else None
    return LoadedModel(cfg, params, tokenizer, str(source), revision, key)


def _converted(folder, family, cfg: ModelConfig, key: str | None):
    """The whole checkpoint converted in memory (numpy fp32), through the params cache when
    `key` is given."""
    params = param_cache.restore(key) if key else None
    if params is None:
        params = _convert_or_explain(folder, family.convert, checkpoint.read_weights(folder), cfg)
        if key:
            param_cache.save(key, params)
    return params


def _convert_or_explain(folder, fn, *args):
    """fn(*args), a ConversionError naming `folder` first."""
    try:
        return fn(*args)
    except ConversionError as e:
        raise ConversionError(f"{folder}: {e}") from None


def checkpoint_dtype(hf: dict) -> str:
    """The dtype a config.json says its weights are stored in (`torch_dtype`, or `dtype` as
    transformers 5 writes it); 'float32' when it says none or one jaxcirc does not run."""
    named = hf.get("torch_dtype") or hf.get("dtype") or "float32"
    try:
        return dtype_name(named)
    except ValueError:
        return "float32"


def random_model(
    name_or_config, seed: int = 0, tokenizer=None, dtype: str = "float32"
) -> LoadedModel:
    """A model of a published shape ('gpt2', 'pythia-160m', 'gpt-neo-125m', ...), of a config.json
    dict, or of a ModelConfig, with random weights (normal 0.02): for tests and benchmarks.
    `dtype`: the fp32 draws rounded to 'bfloat16' / 'float16' (the same seed gives the same
    model in every dtype, up to rounding)."""
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
    params = cast_params(init_params(cfg, seed), dtype)
    return LoadedModel(cfg, params, tokenizer, cfg.name, None, None)
