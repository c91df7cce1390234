"""Helpers every family converter shares: take each checkpoint tensor exactly once, by name and
shape, and refuse a checkpoint with tensors left over or missing.

A family states its conversion once, as a plan: a list of `Take`s, each naming one checkpoint
tensor (per layer or not) and the params it fills. `convert_state` runs a plan over a state dict
in memory (numpy fp32 params, layers stacked); `models.stream` runs the same plan tensor by
tensor (in row chunks for the big ones) from memory-mapped files onto devices.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable

import numpy as np


class ConversionError(ValueError):
    """A checkpoint does not match the architecture its config describes, or its config.json
    describes one jaxcirc does not run."""


# What to do when the weights and config.json disagree.
MISMATCH_FIX = "the weights and config.json are of different models: download both again"


class DictTensors:
    """A state dict (name -> array) as a tensor source: `names()`, `shape(name)` and
    `read(name, start, stop)` (rows [start, stop) of the leading axis; all when None), the
    interface `checkpoint.SafetensorsFiles` offers for files."""

    def __init__(self, state: dict):
        self.state = state

    def names(self) -> list[str]:
        return list(self.state)

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(np.shape(self.state[name]))

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        a = self.state[name]
        return a if start is None else a[start:stop]


class StateReader:
    """Hands out tensors of a flat HF state dict (or any tensor source, see `DictTensors`),
    asserting names and shapes.

    `skip` are regexes of tensors that are not parameters (causal-mask buffers, rotary caches).
    `finish()` raises if any other tensor was never taken.
    """

    def __init__(self, state, prefixes: tuple[str, ...], skip=()):
        self.source = state if hasattr(state, "read") else DictTensors(state)
        self.full: dict[str, str] = {}  # name without the family prefix -> name in the source
        for k in self.source.names():
            short = k
            for p in prefixes:
                if k.startswith(p):
                    short = k[len(p) :]
                    break
            self.full[short] = k
        self.skip = [re.compile(s) for s in skip]
        self.taken: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.full

    def check(self, key: str, shape: tuple[int, ...]) -> str:
        """Mark `key` taken after checking it is there with `shape`; its name in the source."""
        if key not in self.full:
            raise ConversionError(
                f"checkpoint lacks tensor {key!r} (shape {shape}); {MISMATCH_FIX}"
            )
        found = self.source.shape(self.full[key])
        if found != tuple(shape):
            raise ConversionError(
                f"tensor {key!r} has shape {found}; the config implies {shape}; {MISMATCH_FIX}"
            )
        self.taken.add(key)
        return self.full[key]

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """The whole tensor `key` as fp32 (checked as `check` does)."""
        return np.asarray(self.source.read(self.check(key, shape)), dtype=np.float32)

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor already checked, in its stored dtype."""
        return self.source.read(self.full[key], start, stop)

    def finish(self):
        left = [
            k
            for k in self.full
            if k not in self.taken and not any(s.fullmatch(k) for s in self.skip)
        ]
        if left:
            shown = ", ".join(sorted(left)[:5]) + (" ..." if len(left) > 5 else "")
            raise ConversionError(
                f"{len(left)} checkpoint tensors were not used: {shown}; {MISMATCH_FIX}"
            )


ParamPath = tuple[str, ...]  # ("blocks", "attn", "W_Q")


@dataclasses.dataclass(frozen=True)
class Take:
    """One checkpoint tensor (one per layer when `key` holds '{}') and the params it fills.

    key: its name without the family prefix; '{}' stands for the layer index.
    shape: its shape as stored (one layer's).
    dest: the param paths it fills; a per-layer tensor fills one layer of each (stacked) param.
    fn: stored rows -> one value per dest (a tuple); the identity when None.
    axis: None, or the (per-layer) dest axis the stored rows run along, so that the tensor can
      be converted in runs of rows: fn of rows [r0, r1) gives every dest's values at
      [r0 // unit, r1 // unit) on `axis`. None: only ever converted whole.
    unit: stored rows per dest index on `axis` (a run always holds whole units).
    """

    key: str
    shape: tuple[int, ...]
    dest: tuple[ParamPath, ...]
    fn: Callable | None = None
    axis: int | None = None
    unit: int = 1

    @property
    def layered(self) -> bool:
        return "{}" in self.key

    def apply(self, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        """fn(rows) as a tuple, one value per dest."""
        out = rows if self.fn is None else self.fn(rows)
        return out if isinstance(out, tuple) else (out,)


def layer_norm(key: str, dest: str, d_model: int) -> list[Take]:
    """The gain (`{key}.weight`) and bias of a layer norm into `dest`.scale / .bias; `dest` is
    a '/'-joined path ("blocks/ln1", "ln_final")."""
    path = tuple(dest.split("/"))
    return [
        Take(f"{key}.weight", (d_model,), (path + ("scale",),)),
        Take(f"{key}.bias", (d_model,), (path + ("bias",),)),
    ]


def convert_state(state, cfg, family) -> dict:
    """Run `family`'s plan over a state dict (name -> array) or tensor source: numpy fp32 params,
    layers stacked. Every tensor is taken once by name and shape, none may be left over, and no
    param filled twice (ConversionError otherwise)."""
    r = StateReader(state, family.PREFIXES, family.SKIP)
    params: dict = {}
    for t in family.plan(cfg, r.has):
        layers = range(cfg.n_layers) if t.layered else [None]
        outs = [t.apply(r.take(t.key.format(i), t.shape)) for i in layers]
        for j, path in enumerate(t.dest):
            values = [o[j] for o in outs]
            set_path(params, path, np.stack(values) if t.layered else values[0])
    r.finish()
    return params


def set_path(tree: dict, path: ParamPath, value):
    """tree[path[0]][path[1]]... = value, making the dicts on the way; a second fill is an error."""
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    if path[-1] in tree:
        raise ConversionError(f"param {'/'.join(path)} filled twice: the converter's plan is wrong")
    tree[path[-1]] = value


def check_config_keys(hf: dict, handled: set[str], ignored: set[str], family: str):
    """Refuse config.json fields this converter does not understand (they could change the
    architecture silently)."""
    unknown = sorted(set(hf) - handled - ignored)
    if unknown:
        raise ConversionError(
            f"{family} config.json has fields jaxcirc does not handle: {', '.join(unknown)}; "
            "remove them or pass strict_config=False to models.load if they are harmless"
        )


# Metadata that never changes the forward pass, common to every family.
COMMON_IGNORED = {
    "_name_or_path",
    "architectures",
    "model_type",
    "transformers_version",
    "torch_dtype",
    "dtype",
    "use_cache",
    "initializer_range",
    "pad_token_id",
    "tokenizer_class",
    "task_specific_params",
    "id2label",
    "label2id",
    "problem_type",
    "return_dict",
    "output_attentions",
    "output_hidden_states",
    "chunk_size_feed_forward",
    "is_encoder_decoder",
    "is_decoder",
    "gradient_checkpointing",
    "classifier_dropout",
    "summary_type",
    "summary_use_proj",
    "summary_activation",
    "summary_proj_to_labels",
    "summary_first_dropout",
    "n_ctx",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
}


def first_id(v):
    if isinstance(v, list):
        return v[0] if v else None
    return v


def activation(name: str, family: str) -> bool:
    """HF activation name -> gelu_tanh flag."""
    from models.config import ACTIVATIONS

    if name not in ACTIVATIONS:
        raise ConversionError(
            f"{family} activation {name!r} is not supported; supported: {sorted(ACTIVATIONS)}"
        )
    return ACTIVATIONS[name]
