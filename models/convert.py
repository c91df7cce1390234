"""Helpers every family converter shares: take each checkpoint tensor exactly once, by name and
shape, and refuse a checkpoint with tensors left over or missing."""

from __future__ import annotations

import re

import numpy as np


class ConversionError(ValueError):
    """A checkpoint does not match the architecture its config describes, or its config.json
    describes one jaxcirc does not run."""


# What to do when the weights and config.json disagree.
MISMATCH_FIX = "the weights and config.json are of different models: download both again"


class StateReader:
    """Hands out tensors of a flat HF state dict, asserting names and shapes.

    `skip` are regexes of tensors that are not parameters (causal-mask buffers, rotary caches).
    `finish()` raises if any other tensor was never taken.
    """

    def __init__(self, state: dict[str, np.ndarray], prefixes: tuple[str, ...], skip=()):
        self.state = {}
        for k, v in state.items():
            for p in prefixes:
                if k.startswith(p):
                    k = k[len(p) :]
                    break
            self.state[k] = v
        self.skip = [re.compile(s) for s in skip]
        self.taken: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def take(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.state:
            raise ConversionError(
                f"checkpoint lacks tensor {key!r} (shape {shape}); {MISMATCH_FIX}"
            )
        a = np.asarray(self.state[key], dtype=np.float32)
        if a.shape != tuple(shape):
            raise ConversionError(
                f"tensor {key!r} has shape {a.shape}; the config implies {shape}; {MISMATCH_FIX}"
            )
        self.taken.add(key)
        return a

    def take_layers(self, pattern: str, n_layers: int, shape, fn=None) -> np.ndarray:
        """Stack `pattern.format(i)` for every layer, after `fn` (a per-layer reshape)."""
        out = []
        for i in range(n_layers):
            a = self.take(pattern.format(i), shape)
            out.append(fn(a) if fn else a)
        return np.stack(out)

    def finish(self):
        left = [
            k
            for k in self.state
            if k not in self.taken and not any(s.fullmatch(k) for s in self.skip)
        ]
        if left:
            shown = ", ".join(sorted(left)[:5]) + (" ..." if len(left) > 5 else "")
            raise ConversionError(
                f"{len(left)} checkpoint tensors were not used: {shown}; {MISMATCH_FIX}"
            )


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
