"""The forward contract: what goes into a model run and what comes out.

    logits, trace = forward(cfg, params, tokens, mask, edits, record)

Axis names (TransformerLens's): `layer`, `batch`, `pos` (query position), `key` (key position),
`head`, `d_model`, `d_head`, `d_vocab`. Stacked arrays put the layer axis first.

- `Record` (static, hashable) chooses what the trace keeps, so a run that needs only the last
  token's residuals does not pay for every head at every position.
- `Edits` (a pytree of arrays) says what to change. A field left `None` is the identity and costs
  nothing; the forward pass compiles the edit in only when it is present. A sweep is `jax.vmap`
  over a leading axis added to the edit arrays.
- `Trace` (a pytree) holds what was recorded; fields not asked for are `None`.

Numerics. A model computes in its params' dtype: fp32 by default, bf16 or fp16 when asked
(`models.load(dtype=...)`, `random_model(dtype=...)`, `forward(dtype=...)`); logits and every
trace field come out in that dtype, except `pattern`, which is fp32. Whatever the dtype, these
run in fp32 and are rounded once to the dtype:
- layer norms: mean and variance, the normalisation, gain and bias;
- attention: scores, mask and softmax (the probabilities are rounded to the dtype only to weight
  the values, as transformers does);
- rotary angles (their cos / sin rounded to the dtype, as transformers rounds them);
- the GELU (transformers' tanh GELU rounds after each step in bf16; ours is more accurate).
Matmuls take and give the dtype (accumulating in fp32 on XLA's CPU, GPU and TPU backends). The
residual stream stays in the dtype, as in transformers for all three families: none of them
accumulates the residual in fp32. What transformers keeps in fp32 itself: GPT-Neo upcasts q and
k and scores in fp32; Pythia (GPT-NeoX) takes its softmax in fp32; GPT-2's eager attention stays
in the dtype (we score in fp32 there too). The KV cache of generation is in the dtype.
Held to transformers run in the same dtype (tests/models/test_models_dtype.py), on logits and
every hidden state, with scale = max |fp32 value| and eps = 2**-7 (bf16), 2**-10 (fp16):
    |ours - hf_dtype| <= 4 * eps * scale
    |ours - hf_fp32| <= 2 * |hf_dtype - hf_fp32| + eps * scale   (no less accurate than it)
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import struct

TRACE_FIELDS = (
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "z",
    "result",
    "pattern",
    "mlp_post",
)


@dataclasses.dataclass(frozen=True)
class Record:
    """What the forward pass keeps. Static: changing it recompiles.

    Attributes:
      resid_pre: residual stream entering each block, `[layer, batch, pos, d_model]`.
        `resid_pre[0]` is the embedding (token + learned position), the "layer 0" of the study.
      resid_mid: residual after attention, before the MLP, `[layer, batch, pos, d_model]`.
        Parallel-residual models (Pythia) have no such point; asking for it there is an error.
      resid_post: residual after the last block, before the final layer norm,
        `[batch, pos, d_model]`. (`resid_pre[l+1]` is the post of layer `l`.)
      attn_out, mlp_out: each block's attention / MLP output, `[layer, batch, pos, d_model]`
        (attention output includes the output bias `b_O`).
      z: each head's attention-weighted values, `[layer, batch, pos, head, d_head]`.
      result: each head's contribution to the residual, `z @ W_O[h]`, without `b_O`,
        `[layer, batch, pos, head, d_model]`. Sums over heads (+ b_O) to `attn_out`.
      pattern: attention probabilities `[layer, batch, head, pos, key]`.
      mlp_post: MLP neuron activations after the nonlinearity, `[layer, batch, pos, d_mlp]`.
      at: "all" positions, or "last": only the last real token of each row (the `pos` axis is
        then dropped from every recorded field except `pattern`).
      logits: "all" -> `[batch, pos, d_vocab]`, "last" -> `[batch, d_vocab]` at the last real
        token, "none" -> the unembedding is skipped and `logits` is None.
    """

    resid_pre: bool = False
    resid_mid: bool = False
    resid_post: bool = False
    attn_out: bool = False
    mlp_out: bool = False
    z: bool = False
    result: bool = False
    pattern: bool = False
    mlp_post: bool = False
    at: str = "all"
    logits: str = "all"

    def __post_init__(self):
        if self.at not in ("all", "last"):
            raise ValueError(f"Record.at={self.at!r}; use 'all' or 'last'")
        if self.logits not in ("all", "last", "none"):
            raise ValueError(f"Record.logits={self.logits!r}; use 'all', 'last' or 'none'")

    @classmethod
    def residuals(cls, at: str = "all", logits: str = "none") -> Record:
        """Every block input plus the final residual: the study's activation extraction."""
        return cls(resid_pre=True, resid_post=True, at=at, logits=logits)

    @classmethod
    def everything(cls, logits: str = "all", parallel_residual: bool = False) -> Record:
        """Every field (but resid_mid for parallel-residual models, which have none)."""
        fields = {f: True for f in TRACE_FIELDS}
        fields["resid_mid"] = not parallel_residual
        return cls(**fields, logits=logits)


@struct.dataclass
class Edits:
    """Interventions, each with identity meaning when `None`.

    Shapes are per run; add a leading axis and `jax.vmap` for a sweep. Fields that take a
    per-layer value have the layer axis first and cover all `n_layers` layers (zeros / ones /
    mask 0 where a layer is untouched).

    Attributes:
      resid_add: added to `resid_pre[l]` (the input of block l): steering.
        `[layer, d_model]`, or `[layer, batch, d_model]`, or `[layer, batch, pos, d_model]`.
        For generation the pos axis must be absent (the vector is added at every position).
      resid_patch, resid_patch_mask: replace `resid_pre[l]` where mask is 1:
        values `[layer, batch, pos, d_model]`, mask `[layer, batch, pos]` (0/1 floats; fractional
        values interpolate). Applied before `resid_add`.
      attn_out_patch, attn_out_patch_mask, mlp_out_patch, mlp_out_patch_mask: the same for a
        block's attention / MLP output.
      z_patch, z_patch_mask: replace head outputs `z`: values `[layer, batch, pos, head, d_head]`,
        mask `[layer, batch, pos, head]`. Applied before `head_scale`.
      head_scale: multiplies each head's `z`: `[layer, head]`, `[layer, batch, head]` or
        `[layer, batch, pos, head]`. 0 = ablation.
      head_mean: with `head_scale`, `z <- s*z + (1-s)*head_mean`: mean-ablation at s = 0.
        `[layer, head, d_head]`. Zero-ablation when None.
      neuron_scale, neuron_mean: the same for MLP neurons (after the nonlinearity):
        scale `[layer, d_mlp]` (or with batch / batch, pos axes), mean `[layer, d_mlp]`.
    """

    resid_add: jnp.ndarray | None = None
    resid_patch: jnp.ndarray | None = None
    resid_patch_mask: jnp.ndarray | None = None
    attn_out_patch: jnp.ndarray | None = None
    attn_out_patch_mask: jnp.ndarray | None = None
    mlp_out_patch: jnp.ndarray | None = None
    mlp_out_patch_mask: jnp.ndarray | None = None
    z_patch: jnp.ndarray | None = None
    z_patch_mask: jnp.ndarray | None = None
    head_scale: jnp.ndarray | None = None
    head_mean: jnp.ndarray | None = None
    neuron_scale: jnp.ndarray | None = None
    neuron_mean: jnp.ndarray | None = None


@struct.dataclass
class Trace:
    """What a forward pass recorded (see `Record` for every shape). Unrecorded fields are None.

    With `Record(at="last")` the `pos` axis is absent from every field except `pattern`.
    """

    resid_pre: jnp.ndarray | None = None
    resid_mid: jnp.ndarray | None = None
    resid_post: jnp.ndarray | None = None
    attn_out: jnp.ndarray | None = None
    mlp_out: jnp.ndarray | None = None
    z: jnp.ndarray | None = None
    result: jnp.ndarray | None = None
    pattern: jnp.ndarray | None = None
    mlp_post: jnp.ndarray | None = None

    def hidden_states(self) -> jnp.ndarray:
        """`[layer + 1, batch, pos, d_model]`: every block input and the final residual.

        Matches transformers' `hidden_states[:-1]` exactly; transformers' last entry is after the
        final layer norm, ours (`resid_post`) is before it.
        """
        if self.resid_pre is None or self.resid_post is None:
            raise ValueError("hidden_states needs Record(resid_pre=True, resid_post=True)")
        return jnp.concatenate([self.resid_pre, self.resid_post[None]], axis=0)


# Edit fields sliced per layer inside the layer scan.
LAYER_EDIT_FIELDS = (
    "resid_add",
    "resid_patch",
    "resid_patch_mask",
    "attn_out_patch",
    "attn_out_patch_mask",
    "mlp_out_patch",
    "mlp_out_patch_mask",
    "z_patch",
    "z_patch_mask",
    "head_scale",
    "head_mean",
    "neuron_scale",
    "neuron_mean",
)
