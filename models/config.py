"""The one architecture description shared by every family.

A family file (`gpt2.py`, `gpt_neox.py`, `gpt_neo.py`) turns a Hugging Face `config.json` into a
`ModelConfig`; the shared transformer in `transformer.py` reads only this dataclass. Each field
that differs between families is named for the architectural fact it encodes, so a reader can see
at a glance how GPT-2, Pythia and GPT-Neo differ (../shared/ARCHITECTURES.md).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

# Activation names as transformers spells them -> whether the tanh approximation is used.
# gelu_new, gelu_fast and gelu_pytorch_tanh are all the tanh form (same formula, other code).
ACTIVATIONS = {
    "gelu": False,
    "gelu_new": True,
    "gelu_fast": True,
    "gelu_pytorch_tanh": True,
}

# Parameter and compute dtypes (`models.load(dtype=...)`): fp32 by default; bf16 and fp16 as the
# checkpoints ship them. What stays fp32 whatever the dtype is stated in models.contract.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}


def dtype_name(dtype) -> str:
    """The canonical name ('float32', 'bfloat16', 'float16') of a dtype given by name ('bf16'
    too) or as a numpy / jax dtype; ValueError naming the choices for anything else."""
    name = _DTYPE_ALIASES.get(str(dtype), str(dtype))
    if name not in DTYPES:
        try:
            name = jnp.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; use one of {', '.join(DTYPES)} (or bf16 / fp16 / fp32)")
    return name


# A window this large means "global": every earlier position is visible.
GLOBAL_WINDOW = 1 << 30


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and architectural choices of a decoder-only transformer.

    Shapes use TransformerLens names: `d_model`, `n_heads`, `d_head`, `d_mlp`, `d_vocab`, `n_ctx`.
    """

    family: str  # "gpt2" | "gpt_neox" | "gpt_neo": which converter made it
    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_ctx: int  # longest sequence the position scheme supports
    ln_eps: float
    gelu_tanh: bool  # tanh-approximate GELU (GPT-2, GPT-Neo) or exact erf GELU (Pythia)
    positional: str  # "learned" (absolute W_pos) or "rotary"
    rotary_dim: int = 0  # dims of each head that rotate (first rotary_dim, half-split pairs)
    rotary_base: float = 10000.0
    parallel_residual: bool = False  # x + attn(ln1 x) + mlp(ln2 x) instead of sequential
    scale_attn: bool = True  # divide scores by sqrt(d_head); GPT-Neo does not
    attn_windows: tuple[int, ...] = ()  # per layer: keys visible are (i - w, i]; empty = global
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    tied_unembed: bool = False  # W_U = W_E^T (GPT-2, GPT-Neo)
    unembed_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    name: str = ""  # where it came from (hub name or folder), for labels

    def __post_init__(self):
        if self.n_heads * self.d_head != self.d_model:
            raise ValueError(
                f"n_heads*d_head = {self.n_heads}*{self.d_head} != d_model {self.d_model}; "
                "fix the config"
            )
        if self.positional not in ("learned", "rotary"):
            raise ValueError(f"positional={self.positional!r}; use 'learned' or 'rotary'")
        if self.positional == "rotary" and not 0 < self.rotary_dim <= self.d_head:
            raise ValueError(f"rotary_dim={self.rotary_dim} must be in (0, d_head={self.d_head}]")
        if self.rotary_dim % 2:
            raise ValueError(f"rotary_dim={self.rotary_dim} must be even (half-split pairs)")
        if self.attn_windows and len(self.attn_windows) != self.n_layers:
            raise ValueError(
                f"attn_windows has {len(self.attn_windows)} entries for {self.n_layers} layers"
            )

    @property
    def windows(self) -> tuple[int, ...]:
        """Per-layer attention window; GLOBAL_WINDOW where the layer is global."""
        return self.attn_windows or (GLOBAL_WINDOW,) * self.n_layers

    def replace(self, **kw) -> ModelConfig:
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def n_params(self) -> int:
        """Parameter count, embeddings included (unembedding counted once when tied)."""
        d, m, v = self.d_model, self.d_mlp, self.d_vocab
        per_layer = 4 * d * d + 2 * d * m + 4 * d + 2 * d  # attn, mlp, two layer norms
        per_layer += (3 * d if self.qkv_bias else 0) + (m if self.mlp_bias else 0)
        total = self.n_layers * per_layer + v * d + 2 * d
        if self.positional == "learned":
            total += self.n_ctx * d
        if not self.tied_unembed:
            total += d * v
        return total
