"""Partition rules: which mesh axis splits each parameter, so a model larger than one device runs
under `jax.sharding` without a rewrite.

Mesh axes: `data` (batch) and `model` (heads and MLP width, Megatron style: column-split the
projections into heads / d_mlp, row-split the projections out of them, so each device's partial
attn_out / mlp_out is summed once per block). The vocabulary of the unembedding is split over
`model` too. Everything else (layer norms, output biases, positions) is replicated. An axis a
rule splits that the mesh axis does not divide (GPT-2's 50257-token vocabulary over 2 devices) is
replicated instead (`fit_spec`): jax places only evenly divided arrays.

Batches: `constrain_batch` asks GSPMD to split an activation's leading (batch) axis over `data`
when a mesh is in context (`jax.set_mesh`) and the axis divides evenly; with no mesh in context it
returns its input untouched, so one-device runs trace exactly the same program as without it.
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


def fit_spec(spec: P, shape: tuple[int, ...], mesh) -> P:
    """`spec` with every split that its mesh axis does not divide evenly replaced by None
    (replicated): correct either way, and jax refuses uneven placements. `mesh`: a Mesh, or
    {axis name: size} (planning without devices)."""
    sizes = (
        mesh
        if isinstance(mesh, dict)
        else dict(zip(mesh.axis_names, mesh.devices.shape, strict=True))
    )
    parts = list(spec) + [None] * (len(shape) - len(spec))
    return P(
        *(a if a is None or n % sizes[a] == 0 else None for a, n in zip(parts, shape, strict=True))
    )


def fitted_specs(params, mesh):
    """`partition_specs(params)` fitted to the leaves' shapes on `mesh` (`fit_spec`)."""
    return jax.tree_util.tree_map(
        lambda x, s: fit_spec(s, tuple(x.shape), mesh),
        params,
        partition_specs(params),
        is_leaf=lambda x: isinstance(x, P),
    )


def shard_params(params, mesh):
    """Place params on `mesh` (axes 'data', 'model') following the rules (`fitted_specs`)."""
    specs = fitted_specs(params, mesh)
    return jax.tree_util.tree_map(
        lambda x, s: jax.device_put(x, NamedSharding(mesh, s)),
        params,
        specs,
        is_leaf=lambda x: isinstance(x, P),
    )


def constrain_batch(x):
    """`x` [batch, ...] split over the mesh axis 'data' on its leading axis, when a mesh with
    that axis is in context (`jax.set_mesh`) and divides the batch; else `x` itself. Inside a
    compiled call GSPMD propagates the split to what `x` feeds."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or "data" not in mesh.axis_names or x.ndim == 0:
        return x
    n = dict(zip(mesh.axis_names, mesh.axis_sizes, strict=True))["data"]
    if n == 1 or x.shape[0] % n:
        return x
    return jax.lax.with_sharding_constraint(x, P("data", *([None] * (x.ndim - 1))))


def replicate_outputs(tree):
    """Across processes (multi-controller jax), each leaf of `tree` replicated over the mesh in
    context, so that every process holds the whole value and can read it into numpy (an array
    split over another process's devices cannot be read); the gather is a collective inside the
    compiled call. With one process, or no mesh, `tree` itself: the program is unchanged."""
    mesh = jax.sharding.get_abstract_mesh()
    if jax.process_count() == 1 or mesh.empty:
        return tree
    return jax.tree_util.tree_map(
        lambda x: jax.lax.with_sharding_constraint(x, P(*([None] * x.ndim))), tree
    )


def feed_batch(x):
    """`x` [batch, ...] (numpy, the same on every process) as one global array split over the
    mesh's 'data' axis, each process supplying only the rows of its own devices
    (jax.make_array_from_callback), when there are several processes, a mesh in context
    (`jax.set_mesh`) and a batch that 'data' divides; else `x` itself (then every process hands
    the whole batch to the compiled call, which splits it)."""
    mesh = jax.sharding.get_mesh()
    if jax.process_count() == 1 or mesh.empty or "data" not in mesh.axis_names:
        return x
    if x.ndim == 0 or x.shape[0] % mesh.shape["data"]:
        return x
    spec = NamedSharding(mesh, P("data", *([None] * (x.ndim - 1))))
    return jax.make_array_from_callback(x.shape, spec, lambda index: x[index])


def to_host(tree):
    """Every leaf of `tree` as numpy. A jax array split over other processes' devices is
    gathered first (multihost_utils.process_allgather, a collective every process enters);
    with one process this is `np.asarray` on each leaf."""
    import numpy as np

    def one(a):
        if isinstance(a, jax.Array) and not (a.is_fully_addressable or a.is_fully_replicated):
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(a)

    return jax.tree_util.tree_map(one, tree)


def batch_sharding(mesh) -> NamedSharding:
    """[batch, pos] inputs split over 'data'."""
    return NamedSharding(mesh, P("data", None))


def make_mesh(data: int, model: int, devices=None):
    """A (data, model) mesh of Auto axes over the first data*model devices (`devices`, default
    jax.devices()); None for 1x1 (one device: no mesh at all, today's single-device programs).
    Raises ValueError (one line, naming the fix) when data*model is not the devices available."""
    if data * model == 1:
        return None
    from jax.sharding import AxisType

    devices = jax.devices() if devices is None else devices
    if data * model != len(devices):
        raise ValueError(
            f"a {data}x{model} (data x model) mesh needs {data * model} devices, "
            f"{len(devices)} available; set mesh sizes whose product is {len(devices)}"
        )
    return jax.make_mesh(
        (data, model), ("data", "model"), axis_types=(AxisType.Auto,) * 2, devices=devices
    )
