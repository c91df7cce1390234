"""Study phases 4-5: steering and activation patching with generation, scored, with controls.

Steering adds `alpha * unit(v[L]) * alpha_unit * norm[L]` to the input of block L (every position,
prompt and generated: what a transformers forward pre-hook on block L does), for every layer L,
alpha and direction, then generates and scores. Patching replaces a block's input (or its
attention / MLP output) at chosen prompt positions with its value from a source prompt's run.

Units. `norm[L]` (the layer's typical residual norm) is the MEDIAN L2 norm of resid_pre[L] over the
real tokens of the norm prompts, each prompt's first token excluded (GPT-2's first position carries
a residual tens of times larger than the rest, which would make the unit meaningless). With the
default `alpha_unit = 1/8`, alpha = 8 adds a vector as long as a typical residual at that layer,
so an alpha means the same push at every layer and in every model.

Controls and uncertainty. Every direction is swept with `n_random_seeds` isotropic random
directions of the same norm (the same layers and alphas, in the same batched run). Effects are
paired per prompt against the unsteered run (alpha = 0, run once and shared by every layer), with
percentile-bootstrap 95% CIs over prompts; a random-direction effect band (over seeds) stands
beside each emotion effect.

Speed (see benchmarks/bench_steering.py). Nothing that cannot change is computed twice:
- the unsteered prompt run is done once; a cell steered at layer L restarts from its recorded
  resid_pre[L] and reuses its layers-below-L caches (`models.generate.prefill_from_layer`);
- alpha = 0 is one cell, not one per layer; only the last prompt token is unembedded;
- every (direction, layer, alpha, prompt) row is then decoded in large batches (rows of different
  cells and layers share one decode call, steering vectors as a per-row `[layer, batch, d_model]`
  addition), so each step's matmuls have hundreds of rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcirc.core import measures, scoring, stats
from jaxcirc.data import lexicon
from jaxcirc.infra import artifacts
from jaxcirc.infra.progress import progress
from jaxcirc.report import plots
from models.contract import Edits, Record
from models.generate import (
    Prefilled,
    Sampling,
    decode,
    decode_weights,
    left_align,
    prefill,
    prefill_from_layer,
    row_keys,
    split_layers,
)
from models.transformer import forward

SITES = ("resid_pre", "attn_out", "mlp_out")
_PATCH_FIELD = {
    "resid_pre": "resid_patch",
    "attn_out": "attn_out_patch",
    "mlp_out": "mlp_out_patch",
}


# ---------------------------------------------------------------------------------------------
# Norms and directions


def first_token_excluded(mask) -> np.ndarray:
    """[batch, pos] bool: real tokens that are not their row's first real token."""
    mask = np.asarray(mask, bool)
    return mask & (np.cumsum(mask, axis=1) > 1)


def typical_resid_norms(cfg, params, ids, mask) -> np.ndarray:
    """[n_layers] median ||resid_pre[L]|| over real tokens, each row's first token excluded.

    This is the unit alphas are measured in (times `alpha_unit`); see the module docstring.
    """
    _, trace = forward(
        cfg,
        params,
        jnp.asarray(ids),
        jnp.asarray(mask, bool),
        None,
        Record(resid_pre=True, logits="none"),
    )
    norms = np.linalg.norm(np.asarray(trace.resid_pre, np.float64), axis=-1)  # [layer, b, pos]
    keep = first_token_excluded(mask)
    if not keep.any():
        raise ValueError("norm prompts have no token after the first; use longer prompts")
    return np.median(norms[:, keep], axis=1)


def random_directions(n: int, n_layers: int, d_model: int, seed: int) -> np.ndarray:
    """[n, n_layers, d_model] unit directions, isotropic Gaussian; direction i from seed + i."""
    out = np.stack(
        [np.random.default_rng(seed + i).standard_normal((n_layers, d_model)) for i in range(n)]
    )
    return (out / np.linalg.norm(out, axis=-1, keepdims=True)).astype(np.float32)


def unit_directions(vectors: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """[n, n_layers(+1), d] -> [n, n_layers(+1), d] unit rows; a zero row at a steered layer is an
    error (a neutral-centred neutral vector, say: it has no direction)."""
    v = np.asarray(vectors, np.float64)
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    if (n[:, list(layers), 0] < 1e-8).any():
        raise ValueError("a steering vector is zero at a steered layer; drop it (e.g. neutral)")
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The engine: one unedited prompt run, re-runs from layer L, then large-batch decoding.


@dataclasses.dataclass(frozen=True)
class Rows:
    """Runs to make, one row per (cell, prompt), all restarting from the unedited prompt run.

    start_layer: [n] block the row's edit is at (re-run from there). prompt_idx: [n] which prompt.
    add_vec: [n, d_model] added to resid_pre[start_layer] at every position and step (zeros for
    none). patch_site: None, or the SITES entry every row patches (one site per Rows);
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
        for name in ("tokens", "eos_at", "cols", "proj"):
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


@functools.partial(jax.jit, static_argnames=("cfg", "slots"))
def _base_prefill(cfg, params, ids, mask, slots):
    return prefill(cfg, params, ids, mask, slots, record_resid_pre=True)


@functools.partial(jax.jit, static_argnames=("cfg", "slots", "site", "window"))
def _branch_prefill(
    cfg,
    params,
    layers,
    base,
    mask,
    start,
    prompt_idx,
    add_vec,
    patch_val,
    patch_mask,
    slots,
    site,
    window,
):
    """Re-run rows from block `start` (shared by the rows) over the last `window` prompt slots
    (every row's prompt fits in them): Prefilled for [R] rows in the full slot layout."""
    off = mask.shape[1] - window
    x0 = base.resid_pre[start][prompt_idx][:, off:]
    hit = jnp.arange(cfg.n_layers) == start  # [layer]
    fields = {"resid_add": hit[:, None, None] * add_vec[None]}
    if site is not None:
        r, _, d = patch_val.shape
        field = _PATCH_FIELD[site]
        fields[field] = jnp.broadcast_to(patch_val[None, :, off:], (cfg.n_layers, r, window, d))
        fields[field + "_mask"] = hit[:, None, None] * patch_mask[None, :, off:]
    return prefill_from_layer(
        cfg,
        params,
        x0,
        start,
        base.caches,
        prompt_idx,
        mask[prompt_idx][:, off:],
        slots,
        Edits(**fields),
        layers,
        offset=off,
    )


@functools.partial(
    jax.jit,
    static_argnames=("cfg", "n_new", "sampling", "eos_id"),
)
def _decode_rows(
    cfg,
    params,
    weights,
    state,
    add_layer,
    add_vec,
    row_ids,
    seed,
    vocab_ids,
    proj_dirs,
    n_new,
    sampling,
    eos_id,
):
    resid_add = (jnp.arange(cfg.n_layers)[:, None] == add_layer[None])[..., None] * add_vec[None]
    keys = row_keys(seed, row_ids)
    return decode(
        cfg,
        params,
        state,
        n_new,
        Edits(resid_add=resid_add),
        sampling,
        keys,
        vocab_ids,
        proj_dirs,
        eos_id,
        weights=weights,
    )


@dataclasses.dataclass
class _Piece:
    """Rows waiting to be decoded: a numpy Prefilled and per-row data. which: 0 = unedited prompt
    run (`where` indexes prompts), 1 = a row of `Rows` (`where` indexes rows)."""

    state: Prefilled
    add_layer: np.ndarray
    add_vec: np.ndarray
    row_ids: np.ndarray
    which: np.ndarray
    where: np.ndarray

    @property
    def n(self) -> int:
        return len(self.row_ids)

    def _cut(self, sl) -> _Piece:
        f = lambda a: a[sl]  # noqa: E731
        return _Piece(
            jax.tree_util.tree_map(f, self.state),
            *(f(a) for a in (self.add_layer, self.add_vec, self.row_ids, self.which, self.where)),
        )

    def head(self, k: int) -> _Piece:
        return self._cut(slice(0, k))

    def tail(self, k: int) -> _Piece:
        return self._cut(slice(k, None))

    @staticmethod
    def rows_of(state, r: int):
        """The first r rows of a device Prefilled, as numpy views (no copy)."""
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[:r], state)


def _stack_rows(parts, n: int, out=None):
    """Concatenate trees of numpy arrays along rows into [n, ...] arrays (`out`'s, if given, else
    fresh), padding the end with copies of the first row (padding rows' results are dropped)."""

    def cat(dst, *leaves):
        out = np.empty((n,) + leaves[0].shape[1:], leaves[0].dtype) if dst is None else dst
        i = 0
        for a in leaves:
            out[i : i + len(a)] = a
            i += len(a)
        out[i:] = leaves[0][:1]
        return out

    if out is None:
        return jax.tree_util.tree_map(lambda *a: cat(None, *a), *parts)
    return jax.tree_util.tree_map(cat, out, *parts)


def _pad_to(a: np.ndarray, n: int) -> np.ndarray:
    """Pad axis 0 to n rows by repeating row 0 (results of padding rows are dropped)."""
    if len(a) == n:
        return a
    return np.concatenate([a, np.repeat(a[:1], n - len(a), axis=0)])


@dataclasses.dataclass(frozen=True)
class EngineSettings:
    max_new_tokens: int = 20
    sampling: Sampling = Sampling()
    seed: int = 0
    batch_rows: int = 512
    prefill_rows: int = 256
    window_step: int = 4
    eos_id: int | None = None

    def __post_init__(self):
        if self.window_step < 1:
            raise ValueError(f"window_step={self.window_step}; use a positive number of slots")

    # True: use batch_rows / prefill_rows exactly (padding as needed) instead of evening them out
    # over the calls; lets a small run compile the shapes of a large one (benchmarks).
    exact_batches: bool = False


def run_rows(
    cfg,
    params,
    ids,
    mask,
    rows: Rows,
    settings: EngineSettings = EngineSettings(),
    vocab_ids=None,
    proj_dirs=None,
    desc: str = "",
    timings: dict | None = None,
) -> tuple[RunOut, RunOut]:
    """Every row of `rows` plus the unedited run of every prompt, generated.

    timings: if a dict, each phase waits for its result and adds its wall seconds under
    "prompt", "rerun", "assemble" (joining re-run rows into decode batches), "decode", and the
    process CPU seconds under "<phase>_cpu" (for benchmarks; costs a little overlap).

    ids, mask: [n_prompts, P] prompts (any padding). Row draws use `row_ids = prompt_idx`, so a
    row samples the same noise as its prompt's unedited run (paired comparisons) and as a single
    `models.generate.generate(..., row_ids=[prompt])` call. Returns (baseline RunOut over prompts,
    RunOut over rows).
    """
    s = settings
    ids, mask, _ = left_align(jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    if not bool(jnp.all(mask[:, -1])):
        raise ValueError("a prompt has no tokens; drop empty prompts")
    n_p, width = ids.shape
    slots = width + s.max_new_tokens - 1
    if cfg.positional == "learned" and slots > cfg.n_ctx:
        raise ValueError(f"prompt width {width} + {s.max_new_tokens} new tokens exceed n_ctx")
    vocab_ids = None if vocab_ids is None else jnp.asarray(vocab_ids, jnp.int32)
    proj_dirs = None if proj_dirs is None else jnp.asarray(proj_dirs, jnp.float32)
    n_ids = None if vocab_ids is None else len(vocab_ids)
    k = None if proj_dirs is None else len(proj_dirs)
    # Even batch sizes: the fewest calls of at most batch_rows / prefill_rows rows, all of one
    # compiled shape, with as little padding as possible.
    dec_rows, pre_rows = batch_sizes(n_p, rows, s)
    clock = _Clock(timings)
    per_layer = split_layers(params)  # sliced once, not in every call
    dec_weights = decode_weights(cfg, params)
    with clock("prompt"):
        base = clock.wait(_base_prefill(cfg, params, ids, mask, slots))
    base_out = RunOut.empty(n_p, s.max_new_tokens, n_ids, k)
    row_out = RunOut.empty(len(rows), s.max_new_tokens, n_ids, k)
    d = cfg.d_model

    # Decode buffer. Re-run outputs wait here as numpy views of their device buffers (free on
    # CPU) until a decode batch is full; each batch is then one copy into a fresh numpy array,
    # handed back to jax without another copy. Doing the same with jnp slices and
    # concatenations compiled a new op for every piece size and cost ~4% of the sweep.
    pending: list[_Piece] = []
    bufs: dict = {}

    def flush(final: bool):
        while sum(p.n for p in pending) >= dec_rows or (final and pending):
            take, b = [], 0
            while pending and b < dec_rows:
                p = pending[0]
                k = min(p.n, dec_rows - b)
                take.append(p.head(k))
                b += k
                if k == p.n:
                    pending.pop(0)
                else:
                    pending[0] = p.tail(k)
            with clock("assemble"):
                # One buffer reused for every batch (fresh pages cost as much as the copy);
                # safe: each decode has finished (its results read) before the next fill.
                bufs["state"] = _stack_rows([t.state for t in take], dec_rows, bufs.get("state"))
                state = jax.device_put(bufs["state"])
                add_layer = _stack_rows([t.add_layer for t in take], dec_rows)
                add_vec = _stack_rows([t.add_vec for t in take], dec_rows)
                rid = _stack_rows([t.row_ids for t in take], dec_rows)
            with clock("decode"):
                gen = clock.wait(
                    _decode_rows(
                        cfg,
                        params,
                        dec_weights,
                        state,
                        add_layer,
                        add_vec,
                        rid,
                        s.seed,
                        vocab_ids,
                        proj_dirs,
                        s.max_new_tokens,
                        s.sampling,
                        s.eos_id,
                    )
                )
            g = {
                n: None if getattr(gen, n) is None else np.asarray(getattr(gen, n))[:b]
                for n in ("tokens", "eos_at", "cols", "proj")
            }
            which = np.concatenate([t.which for t in take])
            where = np.concatenate([t.where for t in take])
            src = np.arange(b)
            base_out.put(where[which == 0], g, src[which == 0])
            row_out.put(where[which == 1], g, src[which == 1])

    def push(state, add_layer, add_vec, rid, which, where):
        state = jax.tree_util.tree_map(np.asarray, state)
        pending.append(_Piece(state, add_layer, add_vec, rid, which, where))
        flush(final=False)

    push(
        base.replace(resid_pre=None),
        np.full(n_p, -1, np.int32),
        np.zeros((n_p, d), np.float32),
        np.arange(n_p),
        np.zeros(n_p, np.int8),
        np.arange(n_p),
    )
    lengths = np.asarray(mask).sum(1)
    chunks = _prefill_chunks(rows, pre_rows, lengths, width, s.window_step)
    for start, idx, window in progress(chunks, desc=desc or "rows", min_interval=5.0):
        r = len(idx)
        pidx = _pad_to(rows.prompt_idx[idx], pre_rows)
        avec = _pad_to(rows.add_vec[idx], pre_rows)
        pval = pmask = None
        if rows.patch_site is not None:
            pval = jnp.asarray(_pad_to(rows.patch_val[idx], pre_rows))
            pmask = jnp.asarray(_pad_to(rows.patch_mask[idx], pre_rows), jnp.float32)
        with clock("rerun"):
            state = clock.wait(
                _branch_prefill(
                    cfg,
                    params,
                    per_layer,
                    base,
                    mask,
                    int(start),
                    jnp.asarray(pidx),
                    jnp.asarray(avec),
                    pval,
                    pmask,
                    slots,
                    rows.patch_site,
                    window,
                )
            )
        push(
            _Piece.rows_of(state, r),
            np.full(r, start, np.int32),
            rows.add_vec[idx],
            rows.prompt_idx[idx],
            np.ones(r, np.int8),
            idx,
        )
    flush(final=True)
    return base_out, row_out


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


def batch_sizes(n_prompts: int, rows: Rows, s: EngineSettings) -> tuple[int, int]:
    """(rows per decode call, rows per re-run call) that `run_rows` uses."""
    if s.exact_batches:
        return s.batch_rows, min(s.prefill_rows, s.batch_rows)
    dec_rows = _even(n_prompts + len(rows), s.batch_rows)
    groups = np.unique(rows.start_layer, return_counts=True)[1] if len(rows) else [1]
    return dec_rows, _even(int(max(groups)), min(s.prefill_rows, dec_rows))


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


# ---------------------------------------------------------------------------------------------
# Steering sweep (arrays in, arrays out)


@dataclasses.dataclass
class Sweep:
    """A steering sweep's raw outputs.

    out: RunOut with leading axes [direction, layer, alpha, prompt] (alpha = 0 entries are copies
    of `base`); base: RunOut over prompts (unsteered). layers, alphas: the swept values; scales:
    [n_layers] norm of the vector alpha = 1 adds at each layer. rows_run: rows generated (the
    unsteered prompts included): the work actually done.
    """

    out: RunOut
    base: RunOut
    layers: tuple[int, ...]
    alphas: tuple[float, ...]
    scales: np.ndarray
    rows_run: int


def steering_rows(n_prompts, directions, scales, layers, alphas) -> tuple[Rows, np.ndarray]:
    """Rows of every (direction, layer, alpha != 0, prompt) and the [dir, layer, alpha, prompt]
    row index of each cell (-1 at alpha = 0: the shared unsteered run)."""
    directions = np.asarray(directions, np.float32)
    n_dir = directions.shape[0]
    index = np.full((n_dir, len(layers), len(alphas), n_prompts), -1, np.int64)
    start, pidx, vecs = [], [], []
    n = 0
    for li, layer in enumerate(layers):  # grouped by layer: one prompt re-run per group
        for di in range(n_dir):
            for ai, alpha in enumerate(alphas):
                if alpha == 0:
                    continue
                v = (alpha * scales[layer]) * directions[di, layer]
                index[di, li, ai] = np.arange(n, n + n_prompts)
                start += [layer] * n_prompts
                pidx.append(np.arange(n_prompts))
                vecs.append(np.repeat(v[None], n_prompts, axis=0))
                n += n_prompts
    d = directions.shape[-1]
    rows = Rows(
        np.asarray(start, np.int32),
        np.concatenate(pidx) if pidx else np.zeros(0, np.int64),
        np.concatenate(vecs).astype(np.float32) if vecs else np.zeros((0, d), np.float32),
    )
    return rows, index


def steering_sweep(
    cfg,
    params,
    ids,
    mask,
    directions,
    scales,
    layers: Sequence[int],
    alphas: Sequence[float],
    settings: EngineSettings = EngineSettings(),
    vocab_ids=None,
    proj_dirs=None,
    timings: dict | None = None,
) -> Sweep:
    """Generate under every (direction, layer, alpha) for every prompt, in one batched run.

    directions: [n_dir, n_layers(+1), d_model] (unit rows used); scales: [n_layers], the norm
    alpha = 1 adds at each layer. Equal to a loop of `models.generate.generate` calls with
    `Edits(resid_add=zeros.at[L].set(alpha * scales[L] * unit(directions[i, L])))` and
    `row_ids = prompt index` (tests/test_steering.py).
    """
    layers = tuple(int(x) for x in layers)
    alphas = tuple(float(a) for a in alphas)
    bad = [x for x in layers if not 0 <= x < cfg.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range; use 0..{cfg.n_layers - 1}")
    units = unit_directions(directions, layers)
    n_p = np.asarray(ids).shape[0]
    rows, index = steering_rows(n_p, units, np.asarray(scales, np.float32), layers, alphas)
    base, out = run_rows(
        cfg, params, ids, mask, rows, settings, vocab_ids, proj_dirs, "steering", timings
    )
    full = RunOut.empty(
        index.size,
        settings.max_new_tokens,
        None if out.cols is None else out.cols.shape[-1],
        None if out.proj is None else out.proj.shape[-1],
    )
    flat = index.reshape(-1)
    hit = flat >= 0
    prompt = np.broadcast_to(np.arange(n_p), index.shape).reshape(-1)
    for name in ("tokens", "eos_at", "cols", "proj"):
        dst, src, b = getattr(full, name), getattr(out, name), getattr(base, name)
        if dst is None:
            continue
        dst[hit] = src[flat[hit]]
        dst[~hit] = b[prompt[~hit]]
    return Sweep(
        full.reshape(index.shape), base, layers, alphas, np.asarray(scales), len(rows) + n_p
    )


# ---------------------------------------------------------------------------------------------
# Measures of each generated row


def decode_texts(tokenizer, tokens, eos_at) -> list[str]:
    """Generated ids [n, new] -> text per row, cut before the first EOS."""
    out = []
    for row, e in zip(np.asarray(tokens), np.asarray(eos_at), strict=True):
        out.append(tokenizer.decode([int(t) for t in (row[:e] if e >= 0 else row)]))
    return out


def row_measures(
    texts: Sequence[str] | None,
    out: RunOut,
    word_ids: measures.WordIds | None,
    proj_names: Sequence[str],
) -> dict[str, np.ndarray]:
    """Every measure of every row, each [n]:

    - text (if `texts`): sentiment, politeness, kw_<emotion> (jaxcirc.core.scoring);
    - logit_diff_<e>: mean logit of e's words minus the other emotions' words, at the last prompt
      token (the next-token prediction before anything is generated);
    - proj_<name>: final residual (before ln_final) at the last prompt token . unit direction;
      proj_gen_<name>: the same averaged over the positions of the generated tokens fed back.
    """
    res = {}
    if texts is not None:
        res.update(scoring.score_texts(texts))
    if word_ids is not None and out.cols is not None:
        for e in word_ids.ids:
            res[f"logit_diff_{e}"] = np.asarray(measures.logit_diff(out.cols[:, 0], word_ids, e))
    if out.proj is not None:
        for k, name in enumerate(proj_names):
            res[f"proj_{name}"] = out.proj[:, 0, k].astype(np.float64)
            if out.proj.shape[1] > 1:
                res[f"proj_gen_{name}"] = out.proj[:, 1:, k].mean(1).astype(np.float64)
    return {k: np.asarray(v, np.float64) for k, v in res.items()}


def final_directions(vectors: dict[str, np.ndarray], n_layers: int) -> tuple[np.ndarray, int]:
    """Per emotion, the direction read at the final residual: row n_layers of a [n_layers + 1, d]
    vector (the final residual itself), else row n_layers - 1 (the last block's input).
    Returns ([k, d], the row used)."""
    rows = {np.asarray(v).shape[0] for v in vectors.values()}
    if len(rows) != 1 or rows.pop() not in (n_layers, n_layers + 1):
        raise ValueError(
            f"vectors must all be [n_layers or n_layers + 1, d_model] with n_layers={n_layers}"
        )
    row = np.asarray(next(iter(vectors.values()))).shape[0] - 1
    return np.stack([np.asarray(v, np.float32)[row] for v in vectors.values()]), row


# ---------------------------------------------------------------------------------------------
# Effects


def _ci(values, cfg, what=""):
    return stats.bootstrap_ci(
        values, n_boot=cfg.n_boot, seed=cfg.seed, level=cfg.ci_level, what=what
    )


def sensitivity_weights(alphas: Sequence[float]) -> np.ndarray:
    """[n_alpha] weights giving a layer's signed sensitivity: the mean of sign(alpha) * effect over
    the largest positive and the largest negative alpha present (either alone if one is absent)."""
    a = np.asarray(alphas, np.float64)
    w = np.zeros_like(a)
    picks = [
        i
        for i in (np.argmax(np.where(a > 0, a, -np.inf)), np.argmin(np.where(a < 0, a, np.inf)))
        if a[i] != 0 and np.isfinite(a[i])
    ]
    picks = sorted(set(picks))
    if not picks:
        raise ValueError("alphas: need at least one non-zero alpha")
    for i in picks:
        w[i] = np.sign(a[i]) / len(picks)
    return w


@dataclasses.dataclass
class Effects:
    """Paired effects (row - unsteered run of the same prompt) of one measure.

    delta: [dir, layer, alpha, prompt]; value/lo/hi: [dir, layer, alpha] mean over prompts and its
    bootstrap CI; sens*: [dir, layer] signed sensitivity (see `sensitivity_weights`) with CI.
    """

    delta: np.ndarray
    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    sens: np.ndarray
    sens_lo: np.ndarray
    sens_hi: np.ndarray


def effects_of(meas: np.ndarray, base: np.ndarray, alphas, cfg) -> Effects:
    """meas [dir, layer, alpha, prompt], base [prompt] -> Effects (one bootstrap for all cells)."""
    delta = meas - base
    est = _ci(delta, cfg)
    s = np.einsum("dlap,a->dlp", delta, sensitivity_weights(alphas))
    sest = _ci(s, cfg)
    return Effects(
        delta,
        *(np.asarray(x) for x in (est.value, est.lo, est.hi)),
        *(np.asarray(x) for x in (sest.value, sest.lo, sest.hi)),
    )


def random_band(values: np.ndarray, cfg) -> stats.NullBand:
    """Band over random seeds (axis 0) of per-seed effects."""
    return stats.summarise_null(values, seed=cfg.random_seed, level=cfg.ci_level)


# ---------------------------------------------------------------------------------------------
# Phase 4-5 run: steering


def _layers(spec, n_layers) -> tuple[int, ...]:
    layers = tuple(int(x) for x in spec) if spec else tuple(range(n_layers))
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range; use 0..{n_layers - 1}")
    return layers


def _settings(cfg, eos_id) -> EngineSettings:
    min_new = int(cfg.get("min_new_tokens", 0))
    if min_new and eos_id is None:
        raise ValueError(
            f"steering.min_new_tokens={min_new}: the model's config names no EOS token to hold "
            "back; set min_new_tokens=0"
        )
    return EngineSettings(
        max_new_tokens=int(cfg.max_new_tokens),
        sampling=Sampling(float(cfg.temperature), int(cfg.top_k), min_new),
        seed=int(cfg.sample_seed),
        batch_rows=int(cfg.batch_rows),
        prefill_rows=int(cfg.prefill_rows),
        window_step=int(cfg.window_step),
        eos_id=eos_id,
    )


def _word_ids(model, word_ids):
    if word_ids is not None or model.tokenizer is None:
        return word_ids, None
    try:
        return measures.word_token_ids(model.tokenizer, lexicon.EMOTION_LOGIT_WORDS), None
    except ValueError as e:  # a tokenizer with no single-token word for an emotion
        return None, str(e)


def _plot_measures(emotion: str, names) -> list[str]:
    want = ["sentiment", "politeness", f"kw_{emotion}", f"logit_diff_{emotion}", f"proj_{emotion}"]
    return [m for m in want if m in names]


def run_steering(
    model,
    prompts: list[str],
    vectors: dict[str, np.ndarray],
    cfg: ml_collections.ConfigDict,
    out_dir,
    resid_norms=None,
    word_ids: measures.WordIds | None = None,
    label: str = "prompts",
) -> dict:
    """Steer `model` along each emotion vector and `cfg.n_random_seeds` random directions,
    generate from `prompts`, score, and write tables, plots and samples to `out_dir`.

    vectors: emotion -> [n_layers or n_layers + 1, d_model] (block inputs, optionally the final
    residual last), chosen by cfg.vector_method / vector_centre (labels). resid_norms: [n_layers]
    typical norms (default: from `prompts`, see `typical_resid_norms`; pass the neutral prompts'
    norms so that alphas mean the same for every prompt set). Returns a summary dict (also written
    as summary.json).
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of strings")
    if len(prompts) < 2:
        raise ValueError("prompts: need at least 2 prompts for a bootstrap CI")
    if not vectors:
        raise ValueError("vectors is empty; pass {emotion: [n_layers, d_model]}")
    if model.tokenizer is None:
        raise ValueError("model has no tokenizer; run_steering needs one to read the generations")
    mc = model.config
    out = Path(out_dir)
    layers = _layers(cfg.layers, mc.n_layers)
    alphas = tuple(float(a) for a in cfg.alphas)
    toks = model.tokenize(list(prompts), prepend_bos=bool(cfg.prepend_bos), pad_to_multiple=1)
    norms = (
        np.asarray(resid_norms, np.float64)
        if resid_norms is not None
        else typical_resid_norms(mc, model.params, toks.ids, toks.mask)
    )
    if norms.shape != (mc.n_layers,):
        raise ValueError(f"resid_norms has shape {norms.shape}; need [{mc.n_layers}]")
    scales = (float(cfg.alpha_unit) * norms).astype(np.float32)
    emotions = list(vectors)
    n_rand = int(cfg.n_random_seeds)
    steer = np.stack([np.asarray(vectors[e], np.float32)[: mc.n_layers] for e in emotions])
    rand = random_directions(n_rand, mc.n_layers, mc.d_model, int(cfg.random_seed))
    directions = np.concatenate([unit_directions(steer, layers), rand]) if n_rand else steer
    names = emotions + [f"random_{int(cfg.random_seed) + i}" for i in range(n_rand)]
    word_ids, word_note = _word_ids(model, word_ids)
    proj_dirs, proj_row = final_directions(vectors, mc.n_layers)
    settings = _settings(cfg, mc.eos_token_id)
    sweep = steering_sweep(
        mc,
        model.params,
        toks.ids,
        toks.mask,
        directions,
        scales,
        layers,
        alphas,
        settings,
        None if word_ids is None else word_ids.all_ids(),
        proj_dirs,
    )
    n_p = len(prompts)
    shape = sweep.out.tokens.shape[:4]
    base_texts = decode_texts(model.tokenizer, sweep.base.tokens, sweep.base.eos_at)
    base_m = row_measures(base_texts, sweep.base, word_ids, emotions)
    # Score only the steered cells; alpha = 0 cells are the unsteered run.
    steered = np.broadcast_to((np.asarray(alphas) != 0)[None, None, :, None], shape).reshape(-1)
    flat = sweep.out.flatten(4).take(steered)
    texts_flat = decode_texts(model.tokenizer, flat.tokens, flat.eos_at)
    row_m = row_measures(texts_flat, flat, word_ids, emotions)
    meas = {}
    for k, v in row_m.items():
        full = np.empty(int(np.prod(shape)))
        full[steered] = v
        full = full.reshape(shape)
        full[:, :, np.asarray(alphas) == 0] = base_m[k]
        meas[k] = full
    texts = np.empty(int(np.prod(shape)), object)
    texts[steered] = texts_flat
    texts = texts.reshape(shape)
    texts[:, :, np.asarray(alphas) == 0] = np.asarray(base_texts, object)

    effects = {k: effects_of(meas[k], base_m[k], alphas, cfg) for k in meas}
    labels = {
        "model": mc.name or mc.family,
        "prompt_set": label,
        "n_prompts": n_p,
        "vector_method": cfg.vector_method,
        "vector_centre": cfg.vector_centre,
        "alpha_unit": float(cfg.alpha_unit),
        "temperature": float(cfg.temperature),
        "top_k": int(cfg.top_k),
        "sample_seed": int(cfg.sample_seed),
        "max_new_tokens": int(cfg.max_new_tokens),
        "min_new_tokens": settings.sampling.min_new_tokens,
    }
    k_e = len(emotions)
    rows = _effect_rows(effects, names, k_e, layers, alphas, norms, scales, labels, cfg)
    profile = _profile_rows(effects, emotions, n_rand, layers, labels, cfg)
    files = {
        "effects": artifacts.write_csv(out / "effects.csv", rows),
        "layer_profile": artifacts.write_csv(out / "layer_profile.csv", profile),
    }
    files["arrays"] = artifacts.write_npz(
        out / "sweep.npz",
        tokens=sweep.out.tokens,
        base_tokens=sweep.base.tokens,
        layers=np.asarray(layers),
        alphas=np.asarray(alphas),
        norms=norms,
        scales=scales,
        directions=np.asarray(names),
        **{f"m_{k}": v for k, v in meas.items()},
        **{f"base_{k}": v for k, v in base_m.items()},
    )
    files.update(
        _write_samples(
            out,
            names[: k_e + min(1, n_rand)],
            layers,
            alphas,
            scales,
            list(prompts),
            texts,
            base_texts,
            int(cfg.samples_per_cell),
        )
    )
    if n_rand:
        files.update(_steering_plots(out, effects, emotions, n_rand, layers, alphas, labels, cfg))
    best = {}
    for r in profile:
        if r["is_best"]:
            best.setdefault(r["direction"], {})[r["measure"]] = {
                "layer": r["layer"],
                "sensitivity": r["sensitivity"],
                "ci": [r["ci_lo"], r["ci_hi"]],
                "random_band": [r["random_lo"], r["random_hi"]],
                "p_vs_random": r["p_vs_random"],
            }
    summary = {
        **labels,
        "layers": list(layers),
        "alphas": list(alphas),
        "norm_definition": "median ||resid_pre[L]|| over real tokens, first token of each "
        "prompt excluded; alpha = 1 adds alpha_unit * norm[L]",
        "norms": norms.tolist(),
        "n_random_seeds": n_rand,
        "random_seed": int(cfg.random_seed),
        "projection_row": proj_row,
        "logit_words": None if word_ids is None else {k: list(v) for k, v in word_ids.ids.items()},
        "logit_words_note": word_note,
        "rows_generated": sweep.rows_run,
        # Text measures count words in what is generated: a continuation that ends at once
        # (EOS first) scores 0 whatever the steering, so say how many there are.
        "empty_continuations": {
            "unsteered": float(np.mean(np.asarray(sweep.base.eos_at) == 0)),
            "steered": float(np.mean(np.asarray(flat.eos_at) == 0)) if len(flat.eos_at) else None,
            "min_new_tokens": settings.sampling.min_new_tokens,
            "definition": "share of continuations whose first generated token is EOS (no text "
            "to score); steered = every cell with alpha != 0, emotion and random directions; "
            "min_new_tokens > 0: EOS was held back for that many tokens, so none end at once",
        },
        "best_layer": best,
        "config": cfg.to_dict(),
        "files": {k: str(v) for k, v in files.items()},
    }
    artifacts.write_json(out / "summary.json", stats.to_jsonable(summary))
    return summary


def _effect_rows(effects, names, k_e, layers, alphas, norms, scales, labels, cfg) -> list[dict]:
    rows = []
    n_rand = len(names) - k_e
    for m, ef in effects.items():
        band = random_band(ef.value[k_e:], cfg) if n_rand else None
        pooled = _ci(ef.delta[k_e:].mean(0), cfg) if n_rand else None
        for li, layer in enumerate(layers):
            for ai, alpha in enumerate(alphas):
                if alpha == 0:
                    continue
                cell = {
                    **labels,
                    "layer": layer,
                    "alpha": alpha,
                    "layer_norm": float(norms[layer]),
                    "added_norm": float(abs(alpha) * scales[layer]),
                    "measure": m,
                    "ci_level": cfg.ci_level,
                    "n_boot": cfg.n_boot,
                    "boot_seed": cfg.seed,
                }
                for di, name in enumerate(names):
                    r = {
                        **cell,
                        "direction": name,
                        "control": "none" if di < k_e else "random",
                        "random_seed": "" if di < k_e else int(cfg.random_seed) + di - k_e,
                        "effect": ef.value[di, li, ai],
                        "ci_lo": ef.lo[di, li, ai],
                        "ci_hi": ef.hi[di, li, ai],
                    }
                    if di < k_e and n_rand:
                        null = ef.value[k_e:, li, ai]
                        r.update(
                            random_mean=band.mean[li, ai],
                            random_lo=band.lo[li, ai],
                            random_hi=band.hi[li, ai],
                            n_random=n_rand,
                            p_vs_random=stats.permutation_pvalue(
                                abs(ef.value[di, li, ai]), np.abs(null), "greater"
                            ),
                        )
                    rows.append(r)
                if n_rand:
                    rows.append(
                        {
                            **cell,
                            "direction": f"random_mean_of_{n_rand}",
                            "control": "random",
                            "random_seed": "all",
                            "effect": pooled.value[li, ai],
                            "ci_lo": pooled.lo[li, ai],
                            "ci_hi": pooled.hi[li, ai],
                        }
                    )
    cols = list(dict.fromkeys(k for r in rows for k in r))
    return [{c: r.get(c, "") for c in cols} for r in rows]


def _profile_rows(effects, emotions, n_rand, layers, labels, cfg) -> list[dict]:
    rows = []
    k_e = len(emotions)
    for m, ef in effects.items():
        band = random_band(ef.sens[k_e:], cfg) if n_rand else None
        for di, e in enumerate(emotions):
            best = int(np.argmax(np.abs(ef.sens[di])))
            for li, layer in enumerate(layers):
                r = {
                    **labels,
                    "direction": e,
                    "measure": m,
                    "layer": layer,
                    "sensitivity": ef.sens[di, li],
                    "ci_lo": ef.sens_lo[di, li],
                    "ci_hi": ef.sens_hi[di, li],
                    "is_best": li == best,
                    "random_mean": "",
                    "random_lo": "",
                    "random_hi": "",
                    "p_vs_random": "",
                }
                if n_rand:
                    r.update(
                        random_mean=band.mean[li],
                        random_lo=band.lo[li],
                        random_hi=band.hi[li],
                        p_vs_random=stats.permutation_pvalue(
                            abs(ef.sens[di, li]), np.abs(ef.sens[k_e:, li]), "greater"
                        ),
                    )
                rows.append(r)
    return rows


def _write_samples(out, names, layers, alphas, scales, prompts, texts, base_texts, k):
    files = {}
    k = min(k, len(prompts))
    for di, name in enumerate(names):
        lines = [
            f"# {name}: first {k} prompts per cell; alpha in units of alpha_unit * norm[L]",
            "",
            "## unsteered (alpha = 0)",
        ]
        lines += [f"[{i}] {prompts[i]!r}\n    -> {base_texts[i]!r}" for i in range(k)]
        for li, layer in enumerate(layers):
            for ai, alpha in enumerate(alphas):
                if alpha == 0:
                    continue
                lines += [
                    "",
                    f"## layer {layer}, alpha {alpha:+g} (added norm "
                    f"{abs(alpha) * scales[layer]:.3g})",
                ]
                lines += [
                    f"[{i}] {prompts[i]!r}\n    -> {texts[di, li, ai, i]!r}" for i in range(k)
                ]
        files[f"samples_{name}"] = artifacts.write_text(
            out / "samples" / f"{name}.txt", "\n".join(lines) + "\n"
        )
    return files


def _steering_plots(out, effects, emotions, n_rand, layers, alphas, labels, cfg) -> dict:
    """Two figures, each a grid rows = measures x columns = emotions: effect vs layer at the
    extreme alphas, and effect vs alpha at each panel's most sensitive layer; the emotion vector
    beside the band of random directions of equal norm."""
    k_e = len(emotions)
    a = np.asarray(alphas)
    extremes = [i for i in (int(np.argmax(a)), int(np.argmin(a))) if a[i] != 0]
    head = (
        f"{labels['model']}, {labels['vector_method']}/{labels['vector_centre']} vectors, "
        f"{labels['prompt_set']} (n={labels['n_prompts']}); "
        f"{int(cfg.ci_level * 100)}% bootstrap CI over prompts, random band over {n_rand} seeds"
    )
    measure_rows = ["sentiment", "politeness", "kw", "logit_diff", "proj"]
    by_layer, by_alpha, dashed = [], [], set()
    for kind in measure_rows:
        row_l, row_a = [], []
        for di, e in enumerate(emotions):
            m = kind if kind in ("sentiment", "politeness") else f"{kind}_{e}"
            if m not in _plot_measures(e, effects):
                row_l.append(None)
                row_a.append(None)
                continue
            ef = effects[m]
            series = {}
            for ai in extremes:
                band = random_band(ef.value[k_e:, :, ai], cfg)
                series[f"emotion vector, alpha={a[ai]:+g}"] = (
                    ef.value[di, :, ai],
                    ef.lo[di, :, ai],
                    ef.hi[di, :, ai],
                )
                name = f"random, alpha={a[ai]:+g}"
                series[name] = (band.mean, band.lo, band.hi)
                dashed.add(name)
            row_l.append((f"{e} vector: {m}", f"{m} change", series))
            li = int(np.argmax(np.abs(ef.sens[di])))
            band = random_band(ef.value[k_e:, li], cfg)
            series = {
                "emotion vector (at the panel's layer)": (
                    ef.value[di, li],
                    ef.lo[di, li],
                    ef.hi[di, li],
                ),
                "random (same layer)": (band.mean, band.lo, band.hi),
            }
            dashed.add("random (same layer)")
            row_a.append((f"{e} vector: {m}, L={layers[li]}", f"{m} change", series))
        if any(c is not None for c in row_l):
            by_layer.append(row_l)
            by_alpha.append(row_a)
    if not by_layer:
        return {}
    files = {}
    fig = plots.line_panels(
        np.asarray(layers),
        by_layer,
        "layer L (steered block input)",
        f"steering effect vs layer, change vs unsteered\n{head}",
        sorted(dashed),
    )
    files["plot_vs_layer"] = artifacts.save_figure(out / "plots" / "steering_vs_layer.png", fig)
    fig = plots.line_panels(
        a,
        by_alpha,
        "alpha (units of alpha_unit x typical residual norm)",
        f"steering effect vs alpha at each panel's most sensitive layer\n{head}",
        sorted(dashed),
    )
    files["plot_vs_alpha"] = artifacts.save_figure(out / "plots" / "steering_vs_alpha.png", fig)
    return files


# ---------------------------------------------------------------------------------------------
# Patching proper


def _left_to_width(ids, mask, width: int):
    """Left-align and left-pad [n, P] prompts to `width` columns (numpy)."""
    ids, mask, _ = left_align(jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool))
    ids, mask = np.asarray(ids), np.asarray(mask)
    pad = width - ids.shape[1]
    return np.pad(ids, ((0, 0), (pad, 0))), np.pad(mask, ((0, 0), (pad, 0)))


def patch_positions(t_mask, s_mask, positions: str) -> np.ndarray:
    """[n, W] 0/1 mask of the slots to patch, prompts left-aligned to a common width W (so slot j
    is the same distance from the last token in both): "last" = the last token; "all" = every
    slot real in both target and source."""
    t_mask, s_mask = np.asarray(t_mask, bool), np.asarray(s_mask, bool)
    if positions == "last":
        out = np.zeros(t_mask.shape, np.float32)
        out[:, -1] = 1.0
        return out
    if positions == "all":
        return (t_mask & s_mask).astype(np.float32)
    raise ValueError(f"positions={positions!r}; use 'last' or 'all'")


@dataclasses.dataclass
class Patching:
    """A patching sweep's raw outputs: out[site] RunOut [layer, condition, target] with condition
    0 = patched from the emotional source, 1 = control (patched from another neutral prompt);
    base: RunOut [target], unpatched."""

    out: dict
    base: RunOut
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    positions: str
    rows_run: int


def patching_sweep(
    cfg,
    params,
    t_ids,
    t_mask,
    s_ids,
    s_mask,
    layers: Sequence[int],
    sites: Sequence[str] = SITES,
    positions: str = "last",
    settings: EngineSettings = EngineSettings(),
    vocab_ids=None,
    proj_dirs=None,
    source_of=None,
    control_of=None,
) -> Patching:
    """For each site, layer and target prompt: replace the site's activation at block L with its
    value from a source run (`source_of[i]`, default i mod n_sources) or, as control, from another
    target (`control_of[i]`, default i + 1 mod n_targets), at `positions`, then generate.

    The patch applies to the prompt only (its keys and values reach the generated tokens through
    the cache); the blocks below L keep the target's own caches.
    """
    layers = _layers(layers, cfg.n_layers)
    for s in sites:
        if s not in SITES:
            raise ValueError(f"site {s!r} unknown; use one of {SITES}")
    n_t, n_s = len(t_ids), len(s_ids)
    if n_t < 2:
        raise ValueError("need at least 2 target prompts (the control patches from another one)")
    width = max(np.asarray(t_ids).shape[1], np.asarray(s_ids).shape[1])
    t_ids, t_mask = _left_to_width(t_ids, t_mask, width)
    s_ids, s_mask = _left_to_width(s_ids, s_mask, width)
    source_of = np.arange(n_t) % n_s if source_of is None else np.asarray(source_of)
    control_of = (np.arange(n_t) + 1) % n_t if control_of is None else np.asarray(control_of)
    record = Record(**{s: True for s in sites}, logits="none")
    _, s_tr = forward(cfg, params, jnp.asarray(s_ids), jnp.asarray(s_mask), None, record)
    _, t_tr = forward(cfg, params, jnp.asarray(t_ids), jnp.asarray(t_mask), None, record)
    masks = (
        patch_positions(t_mask, s_mask[source_of], positions),
        patch_positions(t_mask, t_mask[control_of], positions),
    )
    out, base, n_rows = {}, None, 0
    for site in sites:
        src, ctl = np.asarray(getattr(s_tr, site)), np.asarray(getattr(t_tr, site))
        start, pidx, vals, pm = [], [], [], []
        for layer in layers:
            for cond, (tr, which) in enumerate(((src, source_of), (ctl, control_of))):
                start += [layer] * n_t
                pidx.append(np.arange(n_t))
                vals.append(tr[layer, which])
                pm.append(masks[cond])
        rows = Rows(
            np.asarray(start, np.int32),
            np.concatenate(pidx),
            np.zeros((len(start), cfg.d_model), np.float32),
            site,
            np.concatenate(vals).astype(np.float32),
            np.concatenate(pm),
        )
        base, res = run_rows(
            cfg, params, t_ids, t_mask, rows, settings, vocab_ids, proj_dirs, f"patch {site}"
        )
        out[site] = res.reshape((len(layers), 2, n_t))
        n_rows += len(rows)
    return Patching(out, base, layers, tuple(sites), positions, n_rows + n_t)


def run_patching(
    model,
    neutral_prompts: list[str],
    source_prompts: list[str],
    cfg: ml_collections.ConfigDict,
    out_dir,
    source_label: str = "emotional",
    vectors: dict[str, np.ndarray] | None = None,
    word_ids: measures.WordIds | None = None,
    label: str = "neutral",
) -> dict:
    """Patch activations of `source_prompts` (e.g. gratitude texts, labelled `source_label`) into
    `neutral_prompts`, per site and layer, with a neutral-to-neutral control; generate, score and
    write patching_effects.csv, plots and samples to `out_dir`. vectors (optional, as in
    `run_steering`) add the final-residual projections to the measures."""
    for name, p in (("neutral_prompts", neutral_prompts), ("source_prompts", source_prompts)):
        if isinstance(p, str) or not p:
            raise ValueError(f"{name} must be a non-empty list of strings")
    if model.tokenizer is None:
        raise ValueError("model has no tokenizer; run_patching needs one to read the generations")
    mc = model.config
    out = Path(out_dir)
    bos = bool(cfg.prepend_bos)
    t = model.tokenize(list(neutral_prompts), prepend_bos=bos, pad_to_multiple=1)
    s = model.tokenize(list(source_prompts), prepend_bos=bos, pad_to_multiple=1)
    word_ids, word_note = _word_ids(model, word_ids)
    proj_dirs, names = None, []
    if vectors:
        proj_dirs, _ = final_directions(vectors, mc.n_layers)
        names = list(vectors)
    layers = _layers(cfg.patch_layers, mc.n_layers)
    sites = tuple(cfg.patch_sites)
    settings = _settings(cfg, mc.eos_token_id)
    res = patching_sweep(
        mc,
        model.params,
        t.ids,
        t.mask,
        s.ids,
        s.mask,
        layers,
        sites,
        cfg.patch_positions,
        settings,
        None if word_ids is None else word_ids.all_ids(),
        proj_dirs,
    )
    n_t = len(neutral_prompts)
    base_texts = decode_texts(model.tokenizer, res.base.tokens, res.base.eos_at)
    base_m = row_measures(base_texts, res.base, word_ids, names)
    labels = {
        "model": mc.name or mc.family,
        "target_set": label,
        "source_set": source_label,
        "n_targets": n_t,
        "n_sources": len(source_prompts),
        "positions": cfg.patch_positions,
        "temperature": float(cfg.temperature),
        "max_new_tokens": int(cfg.max_new_tokens),
        "min_new_tokens": settings.sampling.min_new_tokens,
    }
    rows, files, samples = [], {}, []
    curves = {}
    k = min(int(cfg.samples_per_cell), n_t)
    for site in sites:
        r = res.out[site]
        flat = r.flatten(3)
        texts = decode_texts(model.tokenizer, flat.tokens, flat.eos_at)
        m = row_measures(texts, flat, word_ids, names)
        texts = np.asarray(texts, object).reshape(len(layers), 2, n_t)
        for name, v in m.items():
            delta = v.reshape(len(layers), 2, n_t) - base_m[name]
            est = _ci(delta, cfg)
            diff = stats.paired_bootstrap_diff(
                delta[:, 0], delta[:, 1], n_boot=cfg.n_boot, seed=cfg.seed, level=cfg.ci_level
            )
            curves[(site, name)] = (est, diff)
            for li, layer in enumerate(layers):
                for cond in (0, 1):
                    rows.append(
                        {
                            **labels,
                            "site": site,
                            "layer": layer,
                            "condition": ("source", "control")[cond],
                            "control": "none" if cond == 0 else "neutral_source",
                            "measure": name,
                            "effect": est.value[li, cond],
                            "ci_lo": est.lo[li, cond],
                            "ci_hi": est.hi[li, cond],
                            "source_minus_control": diff.value[li] if cond == 0 else "",
                            "smc_lo": diff.lo[li] if cond == 0 else "",
                            "smc_hi": diff.hi[li] if cond == 0 else "",
                            "ci_level": cfg.ci_level,
                            "n_boot": cfg.n_boot,
                            "boot_seed": cfg.seed,
                        }
                    )
        for li, layer in enumerate(layers):
            samples.append(f"## {site}, layer {layer}")
            for i in range(k):
                samples.append(
                    f"[{i}] {neutral_prompts[i]!r}\n    unpatched -> {base_texts[i]!r}"
                    f"\n    patched   -> {texts[li, 0, i]!r}"
                    f"\n    control   -> {texts[li, 1, i]!r}"
                )
    files["effects"] = artifacts.write_csv(out / "patching_effects.csv", rows)
    files["samples"] = artifacts.write_text(
        out / "samples" / "patching.txt", "\n".join(samples) + "\n"
    )
    want = [
        "sentiment",
        "politeness",
        f"kw_{source_label}",
        f"logit_diff_{source_label}",
        f"proj_{source_label}",
    ]
    head = (
        f"{labels['model']}, {source_label} -> {label} (n={n_t}), positions={cfg.patch_positions}"
    )
    control = "control: from another neutral prompt"
    panels = []
    for name in want:
        row = []
        for site in sites:
            if (site, name) not in curves:
                row.append(None)
                continue
            est, _ = curves[(site, name)]
            series = {
                f"patched from {source_label}": (est.value[:, 0], est.lo[:, 0], est.hi[:, 0]),
                control: (est.value[:, 1], est.lo[:, 1], est.hi[:, 1]),
            }
            row.append((f"{site} patched: {name}", f"{name} change", series))
        if any(c is not None for c in row):
            panels.append(row)
    if panels:
        fig = plots.line_panels(
            np.asarray(layers),
            panels,
            "layer L (the site of block L patched)",
            f"patching effect vs layer, change vs unpatched\n{head}; "
            f"{int(cfg.ci_level * 100)}% bootstrap CI over prompts",
            [control],
        )
        files["plot"] = artifacts.save_figure(out / "plots" / "patching_vs_layer.png", fig)
    summary = {
        **labels,
        "layers": list(layers),
        "sites": list(sites),
        "rows_generated": res.rows_run,
        "logit_words_note": word_note,
        "config": cfg.to_dict(),
        "files": {k: str(v) for k, v in files.items()},
    }
    artifacts.write_json(out / "patching_summary.json", stats.to_jsonable(summary))
    return summary
