"""Partition rules: which mesh axis splits each parameter, so a model larger than one device runs
under `jax.sharding` without a rewrite.

Mesh axes: `data` (batch) and `model` (heads and MLP width, Megatron style: column-split the
projections into heads / d_mlp, row-split the projections out of them, so each device's partial
attn_out / mlp_out is summed once per block). The vocabulary of the unembedding is split over
`model` too. Everything else (layer norms, output biases, positions) is replicated.
"""

from __future__ import annotations

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# Leaf name -> spec WITHOUT the leading layer axis (blocks are stacked; that axis is never split).
BLOCK_RULES = {
    "W_Q": P(None, "model", None),  # [d_model, head, d_head]
    "W_K": P(None, "model", None),
    "W_V": P(None, "model", None),
    "b_Q": P("model", None),  # [head, d_head]
    "b_K": P("model", None),
    "b_V": P("model", None),
    "W_O": P("model", None, None),  # [head, d_head, d_model]
    "b_O": P(None),
    "W_in": P(None, "model"),  # [d_model, d_mlp]
    "b_in": P("model"),
    "W_out": P("model", None),  # [d_mlp, d_model]
    "b_out": P(None),
    "scale": P(None),
    "bias": P(None),
}
TOP_RULES = {
    "W_E": P(None, None),  # gathered by token id: replicate (vocab split would need a psum)
    "W_pos": P(None, None),
    "W_U": P(None, "model"),  # [d_model, d_vocab]
    "b_U": P("model"),
    "scale": P(None),
    "bias": P(None),
}


def _name(path) -> str:
    return str(getattr(path[-1], "key", path[-1]))


def partition_specs(params):
    """A pytree of PartitionSpec matching `params` (raises for a leaf with no rule)."""

    def rule(path, leaf):
        name = _name(path)
        top = str(getattr(path[0], "key", path[0]))
        if top == "blocks":
            if name not in BLOCK_RULES:
                raise ValueError(f"no partition rule for block parameter {name!r}; add one")
            return P(None, *BLOCK_RULES[name])
        if name not in TOP_RULES:
            raise ValueError(f"no partition rule for parameter {name!r}; add one")
        return TOP_RULES[name]

    return jax.tree_util.tree_map_with_path(rule, params)


def shard_params(params, mesh):
    """Place params on `mesh` (axes 'data', 'model') following the rules."""
    specs = partition_specs(params)
    return jax.tree_util.tree_map(
        lambda x, s: jax.device_put(x, NamedSharding(mesh, s)), params, specs
    )


def batch_sharding(mesh) -> NamedSharding:
    """[batch, pos] inputs split over 'data'."""
    return NamedSharding(mesh, P("data", None))
