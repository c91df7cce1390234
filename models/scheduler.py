"""Batched generation of many edited rows over a few prompts, on the KV-cached decoder.

    base, out = run_rows(cfg, params, ids, mask, Rows(start_layer, prompt_idx, add_vec))

A row is one prompt generated under one edit at one block L: a vector added to resid_pre[L] (at
every position and step), or a site of block L patched at prompt positions. Nothing that cannot
change is computed twice:

- the unedited prompt run is made once (`models.generate.prefill`, recording resid_pre); a row
  edited at block L restarts from its recorded resid_pre[L] and reuses its prompt's caches of the
  blocks below L (`models.generate.prefill_from_layer`), in re-run calls of rows that share L,
  over the last prompt slots their prompts fill (`_prefill_chunks`);
- every row, the unedited runs of the prompts included, is then decoded in large batches (rows
  of different layers share one decode call, the vectors a per-row `[layer, batch, d_model]`
  addition), so each step's matmuls have hundreds of rows.

Row draws use `row_ids = prompt_idx`: a row samples the same noise as its prompt's unedited run
(paired comparisons) and as one `models.generate.generate(..., row_ids=[prompt])` call, so the
result is the same however the rows are batched (tests/test_scheduler.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models import sharding
from models.contract import Edits
from models.generate import (
    Prefilled,
    Sampling,
    decode_weights,
    decode_with_caches,
    left_align,
    prefill,
    prefill_from_layer,
    row_keys,
    split_layers,
)

PATCH_SITES = ("resid_pre", "attn_out", "mlp_out")
_PATCH_FIELD = {
    "resid_pre": "resid_patch",
    "attn_out": "attn_out_patch",
    "mlp_out": "mlp_out_patch",
}
_OUT_FIELDS = ("tokens", "eos_at", "cols", "proj")


# ---------------------------------------------------------------------------------------------
# What a caller passes and gets back


@dataclasses.dataclass(frozen=True)
class Rows:
    """Runs to make, one row per (cell, prompt), all restarting from the unedited prompt run.

    start_layer: [n] block the row's edit is at (re-run from there). prompt_idx: [n] which prompt.
    add_vec: [n, d_model] added to resid_pre[start_layer] at every position and step (zeros for
    none). patch_site: None, or the PATCH_SITES entry every row patches (one site per Rows);
    patch_val [n, P, d_model] / patch_mask [n, P]: values and 0/1 mask in the left-aligned
    prompt layout, applied at block start_layer during the prompt only.
    """

    start_layer: np.ndarray
    prompt_idx: np.ndarray
    add_vec: np.ndarray
    patch_site: str | None = None
    patch_val: np.ndarray | None = None
    patch_mask: np.ndarray | None = None

    def __len__(self):
        return len(self.start_layer)


@dataclasses.dataclass
class RunOut:
    """Numpy outputs per row (see models.generate.Generation): tokens [n, new], eos_at [n],
    cols [n, new, n_ids] or None, proj [n, new, k] or None."""

    tokens: np.ndarray
    eos_at: np.ndarray
    cols: np.ndarray | None
    proj: np.ndarray | None

    @staticmethod
    def empty(n, new, n_ids, k):
        return RunOut(
            np.zeros((n, new), np.int32),
            np.full((n,), -1, np.int32),
            None if n_ids is None else np.zeros((n, new, n_ids), np.float32),
            None if k is None else np.zeros((n, new, k), np.float32),
        )

    def put(self, dest, gen: dict, src):
        """out[dest] = gen[src] for every field (gen: numpy Generation fields)."""
        for name in _OUT_FIELDS:
            a = getattr(self, name)
            if a is not None:
                a[dest] = gen[name][src]

    def flatten(self, n_axes: int) -> RunOut:
        """The first `n_axes` axes -> one row axis."""
        f = lambda a: None if a is None else a.reshape((-1,) + a.shape[n_axes:])  # noqa: E731
        return RunOut(f(self.tokens), f(self.eos_at), f(self.cols), f(self.proj))

    def take(self, idx) -> RunOut:
        """Rows `idx` (indices or a boolean mask over the row axis)."""
        f = lambda a: None if a is None else a[idx]  # noqa: E731
        return RunOut(f(self.tokens), f(self.eos_at), f(self.cols), f(self.proj))

    def reshape(self, shape) -> RunOut:
        """Leading row axis -> `shape` (e.g. [dir, layer, alpha, prompt])."""
        f = lambda a: None if a is None else a.reshape(tuple(shape) + a.shape[1:])  # noqa: E731
        return RunOut(f(self.tokens), f(self.eos_at), f(self.cols), f(self.proj))


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    """How `run_rows` generates: max_new_tokens per row, sampling and its seed, the EOS id
    (recorded in eos_at; needed by sampling.min_new_tokens), the most rows per decode call
    (batch_rows) and per re-run call (prefill_rows), and window_step (re-run windows are
    rounded up to a multiple of it, so that few window sizes, each one compile, occur).
    prompt_rows: the unedited prompt run covers this many rows (the prompts, then copies of the
    first; 0 = the prompts alone), so prompt sets of different sizes share its compiled shapes
    (`shared_batches` sets it with batch_rows and prefill_rows for every run of a phase)."""

    max_new_tokens: int = 20
    sampling: Sampling = Sampling()
    seed: int = 0
    batch_rows: int = 512
    prefill_rows: int = 256
    window_step: int = 4
    eos_id: int | None = None
    prompt_rows: int = 0

    def __post_init__(self):
        if self.window_step < 1:
            raise ValueError(f"window_step={self.window_step}; use a positive number of slots")

    # True: use batch_rows / prefill_rows exactly (padding as needed) instead of evening them out
    # over the calls; lets a small run compile the shapes of a large one (benchmarks).
    exact_batches: bool = False


@struct.dataclass
class Readout:
    """What every generated position reads out besides its token (see
    models.generate.Generation): logits of vocab_ids [n_ids] (cols), projections of the final
    residual onto proj_dirs [k, d_model] (proj); None reads nothing."""

    vocab_ids: jax.Array | None = None
    proj_dirs: jax.Array | None = None

    def on_device(self) -> Readout:
        return Readout(
            None if self.vocab_ids is None else jnp.asarray(self.vocab_ids, jnp.int32),
            None if self.proj_dirs is None else jnp.asarray(self.proj_dirs, jnp.float32),
        )


# ---------------------------------------------------------------------------------------------
# Batch sizes and re-run pieces


def batch_sizes(n_prompts: int, rows: Rows, s: EngineSettings) -> tuple[int, int]:
    """(rows per decode call, rows per re-run call) that `run_rows` uses: unless
    `s.exact_batches`, the fewest calls of at most batch_rows / prefill_rows rows, all of one
    compiled shape, with as little padding as possible."""
    if s.exact_batches:
        return s.batch_rows, min(s.prefill_rows, s.batch_rows)
    dec_rows = _even(n_prompts + len(rows), s.batch_rows)
    groups = np.unique(rows.start_layer, return_counts=True)[1] if len(rows) else [1]
    return dec_rows, _even(int(max(groups)), min(s.prefill_rows, dec_rows))


@dataclasses.dataclass(frozen=True)
class Load:
    """The size of one `run_rows` call: prompts, rows, and rows of its largest start layer."""

    prompts: int
    rows: int
    group: int


def shared_batches(s: EngineSettings, loads) -> EngineSettings:
    """`s` fixed so that `run_rows` calls of every `Load` in `loads` compile the same shapes:
    rows per decode and re-run call are the largest `batch_sizes` picks for any of them (then
    used exactly: a smaller run pads its calls up to them), prompt_rows the most prompts."""
    loads = list(loads)
    if not loads:
        raise ValueError("loads is empty; pass the Load of every run that is to share shapes")
    dec = max(_even(x.prompts + x.rows, s.batch_rows) for x in loads)
    pre = max(_even(max(x.group, 1), min(s.prefill_rows, dec)) for x in loads)
    prompts = max(x.prompts for x in loads)
    return dataclasses.replace(
        s, batch_rows=dec, prefill_rows=pre, prompt_rows=prompts, exact_batches=True
    )


def _even(n: int, most: int) -> int:
    """Rows per call so that ceil(n / most) calls cover n rows with the least padding."""
    calls = -(-n // max(1, most))
    return max(1, -(-n // calls))


def _prefill_chunks(rows: Rows, size: int, lengths: np.ndarray, width: int, step: int = 4):
    """[(start layer, row indices, window)]: rows grouped by start layer, ordered by prompt
    length within the group and cut into pieces of at most `size`; each piece is re-run over
    the last `window` prompt slots only (its longest prompt, rounded up to `step` so that few
    window sizes, each one compile, occur). Real-world texts of 12-21 tokens padded to 21 made
    the re-runs do 38% more work than their tokens need; ordered pieces cut that to ~17%."""
    out = []
    for start in np.unique(rows.start_layer):
        idx = np.flatnonzero(rows.start_layer == start)
        idx = idx[np.argsort(lengths[rows.prompt_idx[idx]], kind="stable")]
        for i in range(0, len(idx), size):
            piece = idx[i : i + size]
            longest = int(lengths[rows.prompt_idx[piece]].max())
            out.append((int(start), piece, min(width, -(-longest // step) * step)))
    return out


def _pad_to(a: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 to n rows by repeating row 0 (results of padding rows are dropped)."""
    if len(a) >= n:
        return a
    return np.concatenate([a, np.repeat(a[:1], n - len(a), axis=0)])


def _stack_rows(parts, n: int):
    """Concatenate numpy arrays along rows into one [n, ...] array, padding the end with copies
    of the first row (padding rows' results are dropped)."""
    out = np.empty((n,) + parts[0].shape[1:], parts[0].dtype)
    i = 0
    for a in parts:
        out[i : i + len(a)] = a
        i += len(a)
    out[i:] = parts[0][:1]
    return out


# ---------------------------------------------------------------------------------------------
# The compiled calls


@functools.partial(jax.jit, static_argnames=("cfg", "slots"))
def _base_prefill(cfg, params, ids, mask, slots):
    return prefill(cfg, params, ids, mask, slots, record_resid_pre=True)


@struct.dataclass
class _Branch:
    """Rows re-run together from block `start` (shared): prompt_idx [R], add_vec [R, d_model],
    patch_val [R, P, d_model] / patch_mask [R, P] or None."""

    start: jax.Array
    prompt_idx: jax.Array
    add_vec: jax.Array
    patch_val: jax.Array | None
    patch_mask: jax.Array | None


@dataclasses.dataclass(frozen=True)
class _BranchShape:
    """The static part of a re-run call: cache slots, patched site (or None), prompt window."""

    slots: int
    site: str | None
    window: int


@functools.partial(jax.jit, static_argnames=("cfg", "shape"))
def _branch_prefill(cfg, params, layers, base, mask, branch: _Branch, shape: _BranchShape):
    """Re-run rows from block `branch.start` over the last `shape.window` prompt slots (every
    row's prompt fits in them): Prefilled for [R] rows in the full slot layout."""
    window, start, prompt_idx = shape.window, branch.start, branch.prompt_idx
    off = mask.shape[1] - window
    x0 = base.resid_pre[start][prompt_idx][:, off:]
    hit = jnp.arange(cfg.n_layers) == start  # [layer]
    fields = {"resid_add": hit[:, None, None] * branch.add_vec[None]}
    if shape.site is not None:
        r, _, d = branch.patch_val.shape
        field = _PATCH_FIELD[shape.site]
        fields[field] = jnp.broadcast_to(
            branch.patch_val[None, :, off:], (cfg.n_layers, r, window, d)
        )
        fields[field + "_mask"] = hit[:, None, None] * branch.patch_mask[None, :, off:]
    return prefill_from_layer(
        cfg,
        params,
        x0,
        start,
        base.caches,
        prompt_idx,
        mask[prompt_idx][:, off:],
        shape.slots,
        Edits(**fields),
        layers,
        offset=off,
    )


@struct.dataclass
class _DecodeBatch:
    """One decode call's rows: state (Prefilled [B], its caches passed apart), add_layer [B]
    (the block whose input gets add_vec at every step; -1 = none), add_vec [B, d_model], row_ids
    [B] (their draws)."""

    state: Prefilled
    add_layer: jax.Array
    add_vec: jax.Array
    row_ids: jax.Array


@dataclasses.dataclass(frozen=True)
class _Steps:
    """The static part of a decode call: tokens to choose, how, and the EOS id."""

    n_new: int
    sampling: Sampling
    eos_id: int | None


@functools.partial(jax.jit, static_argnames=("cfg", "steps"), donate_argnames=("caches",))
def _decode_rows(
    cfg, params, weights, caches, batch: _DecodeBatch, seed, readout: Readout, steps: _Steps
):
    """(Generation, caches after the loop). caches: the batch's, donated, so the decode loop
    writes its input in place and returns it (models.generate.decode_with_caches): one copy of
    the caches alive, refilled for the next batch."""
    at = jnp.arange(cfg.n_layers)[:, None] == batch.add_layer[None]
    resid_add = at[..., None] * batch.add_vec[None]
    keys = row_keys(seed, batch.row_ids)
    gen, caches = decode_with_caches(
        cfg,
        params,
        batch.state.replace(caches=caches),
        steps.n_new,
        Edits(resid_add=resid_add),
        steps.sampling,
        keys,
        readout.vocab_ids,
        readout.proj_dirs,
        steps.eos_id,
        weights=weights,
    )
    return gen, jax.tree_util.tree_map(sharding.constrain_batch, caches)


@functools.partial(jax.jit, static_argnames=("n",))
def _blank_rows(state: Prefilled, n: int) -> Prefilled:
    """Zeros shaped as `state` with n rows: the decode batch, filled by `_put_rows`. `state` is
    an argument (unread) so the buffer lives on its devices, as every call's output does."""
    return jax.tree_util.tree_map(
        lambda a: sharding.constrain_batch(jnp.zeros((n,) + a.shape[1:], a.dtype)), state
    )


@functools.partial(jax.jit, donate_argnames=("buf",))
def _put_rows(buf: Prefilled, src: Prefilled, dest) -> Prefilled:
    """`buf` with row dest[j] set to row j of `src` for every j (dest[j] past buf's rows: row j
    not written). dest [rows of src] int32. buf is donated: written in place, one compile per
    shape of `src` whatever rows are written."""
    put = lambda b, a: sharding.constrain_batch(b.at[dest].set(a, mode="drop"))  # noqa: E731
    return jax.tree_util.tree_map(put, buf, src)


# ---------------------------------------------------------------------------------------------
# The scheduler


@dataclasses.dataclass
class _Piece:
    """Rows waiting to be decoded: rows `src` of a device Prefilled `state` (a prompt or re-run
    call's output, every row of it) and per-row data. which: 0 = unedited prompt run (`where`
    indexes prompts), 1 = a row of `Rows` (`where` indexes rows)."""

    state: Prefilled
    src: np.ndarray
    add_layer: np.ndarray
    add_vec: np.ndarray
    row_ids: np.ndarray
    which: np.ndarray
    where: np.ndarray

    @property
    def n(self) -> int:
        return len(self.src)

    def _cut(self, sl) -> _Piece:
        rest = (self.src, self.add_layer, self.add_vec, self.row_ids, self.which, self.where)
        return _Piece(self.state, *(a[sl] for a in rest))

    def head(self, k: int) -> _Piece:
        return self._cut(slice(0, k))

    def tail(self, k: int) -> _Piece:
        return self._cut(slice(k, None))


class _Clock:
    """Adds wall seconds per phase to a dict (no-op without one)."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t, c = time.perf_counter(), time.process_time()
        yield
        if self.timings is not None:
            self.timings[phase] = self.timings.get(phase, 0.0) + time.perf_counter() - t
            cpu = phase + "_cpu"
            self.timings[cpu] = self.timings.get(cpu, 0.0) + time.process_time() - c

    def wait(self, x):
        return jax.block_until_ready(x) if self.timings is not None else x


class _Scheduler:
    """One `run_rows` call: the arguments every compiled call shares, the decode batch being
    filled, and the outputs decoded rows are written into (`outs`: unedited runs by prompt, rows
    by row).

    The KV caches exist once (the decode batch, `buf`) plus the one prompt or re-run call's
    output being copied in: each call's rows are written into the batch on the device as soon as
    they arrive (`_put_rows`, in place; one compile per call shape, whatever rows are written),
    the batch is decoded in place once full (its caches donated) and the buffers the decode
    returns take the next batch. Before, they were held four times (waiting numpy rows, the
    assembled batch, its device copy, the decode loop's): Pythia-1.4B's steering slice in fp32
    (5.3 GiB of params, 2.1 GiB of caches) peaked at 20.6 GiB RSS, now 8.6 (benchmarks/RESULTS.md).
    """

    def __init__(
        self, cfg, params, settings: EngineSettings, readout: Readout, dec_rows, outs, timings
    ):
        self.cfg, self.params, self.s, self.readout = cfg, params, settings, readout
        self.dec_rows = dec_rows
        self.outs: tuple[RunOut, RunOut] = outs
        self.clock = _Clock(timings)
        self.per_layer = split_layers(params)  # sliced once, not in every call
        self.dec_weights = decode_weights(cfg, params, self.per_layer)
        self.steps = _Steps(settings.max_new_tokens, settings.sampling, settings.eos_id)
        self.buf: Prefilled | None = None  # the decode batch (device, dec_rows rows)
        self.batch: list[_Piece] = []  # the rows written into it so far, in order

    @property
    def filled(self) -> int:
        return sum(p.n for p in self.batch)

    def prompt_run(self, ids, mask, slots: int) -> Prefilled:
        with self.clock("prompt"):
            return self.clock.wait(_base_prefill(self.cfg, self.params, ids, mask, slots))

    def rerun(self, base: Prefilled, mask, rows: Rows, chunk, shape: _BranchShape, n: int):
        """Re-run one piece `chunk` = (start, row indices, window) of `rows`, padded to `n`
        rows, and queue it for decoding."""
        start, idx, _ = chunk
        r = len(idx)
        pval = pmask = None
        if rows.patch_site is not None:
            pval = jnp.asarray(_pad_to(rows.patch_val[idx], n))
            pmask = jnp.asarray(_pad_to(rows.patch_mask[idx], n), jnp.float32)
        branch = _Branch(
            int(start),
            jnp.asarray(_pad_to(rows.prompt_idx[idx], n)),
            jnp.asarray(_pad_to(rows.add_vec[idx], n)),
            pval,
            pmask,
        )
        with self.clock("rerun"):
            state = self.clock.wait(
                _branch_prefill(self.cfg, self.params, self.per_layer, base, mask, branch, shape)
            )
        info = (np.full(r, start, np.int32), rows.add_vec[idx], rows.prompt_idx[idx])
        self.push(_Piece(state, np.arange(r), *info, np.ones(r, np.int8), idx))

    def push(self, piece: _Piece):
        """Write `piece`'s rows into the decode batch, decoding each time it is full."""
        while piece.n:
            k = min(piece.n, self.dec_rows - self.filled)
            self._write(piece.head(k))
            piece = piece.tail(k)
            if self.filled == self.dec_rows:
                self._decode()

    def finish(self):
        """Decode the rows still in the batch (the rest of it is padding)."""
        if self.batch:
            self._decode()

    def _write(self, piece: _Piece):
        with self.clock("assemble"):
            if self.buf is None:
                self.buf = _blank_rows(piece.state, self.dec_rows)
            dest = np.full(len(piece.state.next_pos), self.dec_rows, np.int32)  # past: dropped
            dest[piece.src] = np.arange(self.filled, self.filled + piece.n)
            self.buf = self.clock.wait(_put_rows(self.buf, piece.state, dest))
        # Only the per-row data is kept: the state's rows are in the batch now.
        self.batch.append(dataclasses.replace(piece, state=None))

    def _decode(self):
        """Decode the batch in place; its caches' buffers come back for the next batch."""
        take, b, n, buf = self.batch, self.filled, self.dec_rows, self.buf
        self.batch, self.buf = [], None
        batch = _DecodeBatch(
            buf.replace(caches=()),
            _stack_rows([t.add_layer for t in take], n),
            _stack_rows([t.add_vec for t in take], n),
            _stack_rows([t.row_ids for t in take], n),
        )
        with self.clock("decode"):
            gen, caches = self.clock.wait(
                _decode_rows(
                    self.cfg,
                    self.params,
                    self.dec_weights,
                    buf.caches,
                    batch,
                    self.s.seed,
                    self.readout,
                    self.steps,
                )
            )
        self.buf = buf.replace(caches=caches)
        self._store(take, gen, b)

    def _store(self, take: list[_Piece], gen, b: int):
        """Write the first b decoded rows (the rest are padding) where they belong."""
        g = {
            n: None if getattr(gen, n) is None else sharding.to_host(getattr(gen, n))[:b]
            for n in _OUT_FIELDS
        }
        which = np.concatenate([t.which for t in take])
        where = np.concatenate([t.where for t in take])
        src = np.arange(b)
        base_out, row_out = self.outs
        base_out.put(where[which == 0], g, src[which == 0])
        row_out.put(where[which == 1], g, src[which == 1])


def _aligned_prompts(cfg, ids, mask, max_new_tokens: int):
    """Left-aligned prompts (jnp [n, P]) and the cache slots their generation needs."""
    ids, mask, _ = left_align(jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    if not bool(jnp.all(mask[:, -1])):
        raise ValueError("a prompt has no tokens; drop empty prompts")
    width = ids.shape[1]
    slots = width + max_new_tokens - 1
    if cfg.positional == "learned" and slots > cfg.n_ctx:
        raise ValueError(f"prompt width {width} + {max_new_tokens} new tokens exceed n_ctx")
    return ids, mask, slots


def run_rows(
    cfg,
    params,
    ids,
    mask,
    rows: Rows,
    settings: EngineSettings = EngineSettings(),
    readout: Readout = Readout(),
    *,
    loop: Callable[[Iterable], Iterable] | None = None,
    timings: dict | None = None,
) -> tuple[RunOut, RunOut]:
    """Every row of `rows` plus the unedited run of every prompt, generated.

    ids, mask: [n_prompts, P] prompts (any padding). Returns (baseline RunOut over prompts,
    RunOut over rows). loop: wraps the iteration over re-run pieces (e.g. a progress reporter).
    timings: if a dict, each phase waits for its result and adds its wall seconds under
    "prompt", "rerun", "assemble" (joining re-run rows into decode batches), "decode", and the
    process CPU seconds under "<phase>_cpu" (for benchmarks; costs a little overlap).
    """
    s = settings
    n_p = len(ids)
    if s.prompt_rows and s.prompt_rows < n_p:
        raise ValueError(f"{n_p} prompts exceed settings.prompt_rows={s.prompt_rows}")
    # Padding rows (copies of the first prompt) only give the prompt run its shared shape: no
    # row restarts from them and their unedited runs are not decoded.
    ids, mask = _pad_to(np.asarray(ids), s.prompt_rows), _pad_to(np.asarray(mask), s.prompt_rows)
    ids, mask, slots = _aligned_prompts(cfg, ids, mask, s.max_new_tokens)
    width = ids.shape[1]
    readout = readout.on_device()
    n_ids = None if readout.vocab_ids is None else len(readout.vocab_ids)
    k = None if readout.proj_dirs is None else len(readout.proj_dirs)
    dec_rows, pre_rows = batch_sizes(n_p, rows, s)
    outs = (
        RunOut.empty(n_p, s.max_new_tokens, n_ids, k),
        RunOut.empty(len(rows), s.max_new_tokens, n_ids, k),
    )
    run = _Scheduler(cfg, params, s, readout, dec_rows, outs, timings)
    base = run.prompt_run(ids, mask, slots)
    run.push(
        _Piece(
            base.replace(resid_pre=None),
            np.arange(n_p),
            np.full(n_p, -1, np.int32),
            np.zeros((n_p, cfg.d_model), np.float32),
            np.arange(n_p),
            np.zeros(n_p, np.int8),
            np.arange(n_p),
        )
    )
    lengths = np.asarray(mask).sum(1)[:n_p]
    chunks = _prefill_chunks(rows, pre_rows, lengths, width, s.window_step)
    for chunk in chunks if loop is None else loop(chunks):
        shape = _BranchShape(slots, rows.patch_site, chunk[2])
        run.rerun(base, mask, rows, chunk, shape, pre_rows)
    run.finish()
    return run.outs
