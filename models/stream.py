"""Streamed loading: a checkpoint's tensors converted one at a time (in runs of rows for the big
ones), each placed straight onto its devices, so the host holds about one run of rows beyond the
params themselves, never the whole model.

    params = stream_params(family, cfg, source, dtype="bfloat16", mesh=mesh)

`source` is a tensor source: `checkpoint.SafetensorsFiles` (safetensors, one file or shards and
their index, memory-mapped only while a run of rows is read) or `convert.DictTensors`. `family`
is a family module: its plan (`models.convert.Take`) says which tensor fills which param, the
same plan `convert_state` runs in memory, so both paths give the same numbers bit for bit.

Each param is filled in place where it will live, a run of rows at a time: on accelerators or a
mesh, allocated on its devices with its partition rule's sharding (models.sharding) and updated
by a donated `dynamic_update_slice` per run; on one CPU device (whose memory is the host's), as
an aligned numpy array handed to jax without a copy. The host's copies of a run are the file
pages mapped while it is read, the numpy rows, and their converted form in the target dtype
(about 3 x CHUNK_BYTES). On a CPU backend the params themselves are host memory too.
"""

from __future__ import annotations

import functools
import mmap

import jax
import numpy as np
from jax.sharding import NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from models.config import DTYPES, ModelConfig, dtype_name
from models.convert import ConversionError, ParamPath, StateReader, Take
from models.sharding import fitted_specs
from models.transformer import Params, param_shapes

# Rows of a big tensor read and converted at a time: at most this many bytes (as fp32). The
# largest tensors (embeddings: 50k-vocabulary rows) are 0.1-1 GB; a run of 16 MiB keeps the
# host's extra memory (the rows, their converted copy, the device's staging copy) near 50 MiB
# (benchmarks/bench_loading.py; 64 MiB runs took ~200 MiB for no gain in time).
CHUNK_BYTES = 16 << 20


def stream_params(
    family,
    cfg: ModelConfig,
    source,
    dtype: str = "float32",
    mesh=None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Params:
    """The params of `cfg` (stacked, as models.transformer lays them out) read from `source`
    through `family`'s plan, in `dtype`, on `mesh` (axes 'data', 'model') or the default device.
    The params' shardings use `mesh` with Auto axis types, as models.sharding's rules do
    (an Explicit mesh would demand the same sharding of every run of rows as of its param).

    Raises `ConversionError` for a tensor missing, of the wrong shape, or left unused (as
    `convert_state` does) and for a param the plan left unfilled.
    """
    reader = StateReader(source, family.PREFIXES, family.SKIP)
    filler = _Filler(param_shapes(cfg), DTYPES[dtype_name(dtype)], mesh)
    for take in family.plan(cfg, reader.has):
        for layer in range(cfg.n_layers) if take.layered else [None]:
            key = take.key.format(layer)
            reader.check(key, take.shape)
            for start, stop in row_runs(take, chunk_bytes):
                rows = reader.read(key, start, stop)
                offset = None if take.axis is None else (start or 0) // take.unit
                for path, value in zip(take.dest, take.apply(rows), strict=True):
                    filler.write(path, value, layer, take.axis, offset)
    reader.finish()
    return filler.finish()


def row_runs(take: Take, chunk_bytes: int) -> list[tuple[int | None, int | None]]:
    """[start, stop) runs of the stored rows of `take`, whole units each, of at most
    `chunk_bytes` (as fp32) unless one unit is larger; [(None, None)] = read it whole."""
    rows = take.shape[0] if take.shape else 0
    row_bytes = 4 * int(np.prod(take.shape[1:], dtype=np.int64))
    if take.axis is None or rows * row_bytes <= chunk_bytes:
        return [(None, None)]
    step = max(1, chunk_bytes // (row_bytes * take.unit)) * take.unit
    return [(s, min(s + step, rows)) for s in range(0, rows, step)]


@functools.cache
def _writer(sharding):
    """buf, value, start -> buf with value written at start, in place (buf donated)."""

    def write(buf, value, start):
        return jax.lax.dynamic_update_slice(buf, value, start)

    return jax.jit(write, donate_argnums=0, out_shardings=sharding)


class _Filler:
    """The params being filled, with a count of the elements written to each, so a param the
    plan leaves unfilled is an error, not zeros.

    Two ways to fill, one result. On one CPU device (the device's memory is the host's) each
    param is a numpy array (`_host_buffer`) written in place and handed to jax without a copy
    at the end (`device_put(..., may_alias=True)` of a 64-byte-aligned C-contiguous array
    aliases it on CPU; were a jax version to copy it, the result would be the same, with one
    param's size more memory for a moment): no compiles, no staging copy, and bf16 rows stored
    as they come (XLA's CPU backend widens a whole bf16 param to fp32 for every in-place
    update: 100x slower).
    Otherwise (an accelerator, or a mesh) each param is allocated on its devices with its
    partition rule's sharding and filled by donated `dynamic_update_slice`s, a run of rows
    staged on the devices at a time.
    """

    def __init__(self, shapes: Params, dtype, mesh):
        flat, self.treedef = jax.tree_util.tree_flatten_with_path(shapes)
        self.paths = [tuple(str(k.key) for k in path) for path, _ in flat]
        self.shapes = {p: s.shape for p, (_, s) in zip(self.paths, flat, strict=True)}
        self.on_host = mesh is None and jax.devices()[0].platform == "cpu"
        if mesh is None:
            one = SingleDeviceSharding(jax.devices()[0])
            self.shardings = {p: one for p in self.paths}
            self.staging = one
        else:
            mesh = auto_axes(mesh)
            specs = jax.tree_util.tree_leaves(
                fitted_specs(shapes, mesh), is_leaf=lambda x: isinstance(x, P)
            )
            self.shardings = {
                p: NamedSharding(mesh, s) for p, s in zip(self.paths, specs, strict=True)
            }
            self.staging = NamedSharding(mesh, P())  # a run of rows, on every device
        self.dtype = dtype
        self.arrays: dict[ParamPath, jax.Array | np.ndarray] = {}
        self.written = dict.fromkeys(self.paths, 0)

    def write(self, path: ParamPath, value, layer: int | None, axis: int | None, offset):
        """Put `value` (one layer's, when `layer` is set; rows from `offset` on `axis` when
        set) into param `path`."""
        if path not in self.shapes:
            raise ConversionError(f"the plan fills {'/'.join(path)}, which the model lacks")
        shape = self.shapes[path]
        start = [0] * len(shape)
        if layer is not None:
            value, start[0] = value[None], layer
        if axis is not None:
            start[axis + (layer is not None)] = offset
        if len(value.shape) != len(shape) or any(
            a + v > s for a, v, s in zip(start, value.shape, shape, strict=True)
        ):
            raise ConversionError(
                f"{'/'.join(path)}: a value of shape {value.shape} at {start} for a param of "
                f"{shape}; the converter's plan is wrong"
            )
        if self.on_host:
            if path not in self.arrays:
                self.arrays[path] = _host_buffer(shape, self.dtype)
            index = tuple(slice(a, a + v) for a, v in zip(start, value.shape, strict=True))
            copy_into(self.arrays[path][index], value)
        elif value.shape == shape:
            self.arrays[path] = jax.device_put(np.asarray(value, self.dtype), self.shardings[path])
        else:
            sharding = self.shardings[path]
            if path not in self.arrays:
                self.arrays[path] = jax.numpy.zeros(shape, self.dtype, device=sharding)
            staged = jax.device_put(np.asarray(value, self.dtype), self.staging)
            self.arrays[path] = _writer(sharding)(self.arrays[path], staged, tuple(start))
        self.written[path] += value.size

    def finish(self) -> Params:
        short = [p for p in self.paths if self.written[p] != int(np.prod(self.shapes[p]))]
        if short:
            names = ", ".join("/".join(p) for p in short)
            raise ConversionError(f"params not filled exactly once from the checkpoint: {names}")
        leaves = []
        for p in self.paths:
            a = self.arrays.pop(p)
            leaves.append(
                jax.device_put(a, self.shardings[p], may_alias=True) if self.on_host else a
            )
        return jax.tree_util.tree_unflatten(self.treedef, leaves)


def auto_axes(mesh):
    """`mesh` (its devices and axis names) with every axis of type Auto."""
    from jax.sharding import AxisType, Mesh

    names = mesh.axis_names
    return Mesh(mesh.devices, names, axis_types=(AxisType.Auto,) * len(names))


def copy_into(dst: np.ndarray, value: np.ndarray, block: int = 16):
    """dst[...] = value (cast to dst's dtype as numpy's astype does). A transposed `value` (a
    view whose largest stride is not its first axis's) is copied `block` indices at a time along
    that axis, so each block's source rows stay in cache: for the transposed 16 MiB runs of
    torch Linear weights, 2.5-7x faster than one strided copy (2-core x86, 16 beat 8, 32, 64)."""
    axis = int(np.argmax(value.strides)) if value.ndim else 0
    if value.ndim < 2 or value.flags.c_contiguous or axis == 0 or value.shape[axis] <= block:
        dst[...] = value
        return
    for i in range(0, value.shape[axis], block):
        part = (slice(None),) * axis + (slice(i, i + block),)
        dst[part] = value[part]


def _host_buffer(shape: tuple[int, ...], dtype) -> np.ndarray:
    """np.empty(shape, dtype), 64-byte aligned: what XLA's CPU client needs to take a host
    array as a device buffer without copying it. From 1 MiB up, fresh anonymous memory asking
    for transparent huge pages (Linux `madvise`; ignored elsewhere): first-touching 4 GB of
    params costs 0.1 s of page faults instead of 1.5-5 s."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    n = count * dtype.itemsize
    if n < 1 << 20 or not hasattr(mmap, "MAP_ANONYMOUS"):
        raw = np.empty(n + 64, np.uint8)
        start = -raw.ctypes.data % 64
        return raw[start : start + n].view(dtype).reshape(shape)
    memory = mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # page-aligned
    if hasattr(mmap, "MADV_HUGEPAGE"):
        memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype, count=count).reshape(shape)
