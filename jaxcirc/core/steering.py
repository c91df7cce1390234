"""Steering sweeps and their effects, arrays in and arrays out.

    grid = SteeringGrid(directions, scales, layers, alphas)
    sweep = steering_sweep(cfg, params, ids, mask, grid, settings, Readout(vocab_ids, proj_dirs))
    effects = effects_of(meas, base, alphas, Bootstrap(n_boot, seed, level))

Steering adds `alpha * unit(v[L]) * scales[L]` to the input of block L (every position, prompt
and generated: what a transformers forward pre-hook on block L does), for every layer L, alpha
and direction, then generates (`models.scheduler.run_rows`).

Units. `norm[L]` (the layer's typical residual norm, `typical_resid_norms`) is the MEDIAN L2 norm
of resid_pre[L] over the real tokens of the norm prompts, each prompt's first token excluded
(GPT-2's first position carries a residual tens of times larger than the rest, which would make
the unit meaningless). With `scales = alpha_unit * norm` and alpha_unit = 1/8, alpha = 8 adds a
vector as long as a typical residual at that layer, so an alpha means the same push at every
layer and in every model.

Controls and uncertainty. Random directions of the same norm (`random_directions`) are swept
beside the emotion vectors; effects are paired per prompt against the unsteered run (alpha = 0,
run once and shared by every layer), with percentile-bootstrap CIs over prompts (`effects_of`);
a band over the random directions (`random_band`) stands beside each emotion effect. What a
sweep reads at the last prompt token (next-token logits, projections) needs no generation:
`internal_readout` gives it for many more control directions by forward passes alone.
Projections of the final residual move by `arithmetic_projection` whatever the model does (the
added vector rides the residual stream), so they are no evidence of an effect by themselves.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcirc.core import measures, scoring, stats
from jaxcirc.infra.progress import progress
from models.contract import Record
from models.scheduler import EngineSettings, Readout, Rows, RunOut, run_rows
from models.transformer import final_at_last, forward, make_context, run_blocks, unembed

# ---------------------------------------------------------------------------------------------
# Norms, directions, layers


def first_token_excluded(mask) -> np.ndarray:
    """[batch, pos] bool: real tokens that are not their row's first real token."""
    mask = np.asarray(mask, bool)
    return mask & (np.cumsum(mask, axis=1) > 1)


def pad_rows(a, n: int) -> np.ndarray:
    """[m, ...] -> [max(m, n), ...]: copies of row 0 appended, so that prompt sets of different
    sizes reach a compiled call with one shape (the copies' results are dropped)."""
    a = np.asarray(a)
    return a if len(a) >= n else np.concatenate([a, np.repeat(a[:1], n - len(a), axis=0)])


def _resid_pre(cfg, params, ids, mask) -> jax.Array:
    """[layer, n, P, d_model] block inputs of the unedited run of ids, mask [n, P]."""
    record = Record(resid_pre=True, logits="none")
    _, trace = forward(cfg, params, jnp.asarray(ids), jnp.asarray(mask, bool), None, record)
    return trace.resid_pre


def typical_resid_norms(cfg, params, ids, mask, prompt_rows: int = 0) -> np.ndarray:
    """[n_layers] median ||resid_pre[L]|| over real tokens, each row's first token excluded.
    ids, mask [n, P]; prompt_rows: run the forward over that many rows (`pad_rows`; 0: n), so
    prompt sets of different sizes share its compiled shape.

    This is the unit alphas are measured in (times `alpha_unit`); see the module docstring.
    """
    n = len(ids)
    resid_pre = _resid_pre(cfg, params, pad_rows(ids, prompt_rows), pad_rows(mask, prompt_rows))
    resid_pre = np.asarray(resid_pre, np.float64)[:, :n]  # numpy: a jnp cut compiles per shape
    norms = np.linalg.norm(resid_pre, axis=-1)  # [layer, n, pos]
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


def check_layers(layers: Sequence[int], n_layers: int) -> tuple[int, ...]:
    """`layers` as a tuple of ints, each in 0..n_layers - 1 (else a ValueError)."""
    layers = tuple(int(x) for x in layers)
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range; use 0..{n_layers - 1}")
    return layers


def resolve_layers(spec: Sequence[int] | None, n_layers: int) -> tuple[int, ...]:
    """The layers a spec names: every layer when it is empty or None, else `check_layers`."""
    return check_layers(spec, n_layers) if spec else tuple(range(n_layers))


# ---------------------------------------------------------------------------------------------
# The sweep


@dataclasses.dataclass(frozen=True)
class SteeringGrid:
    """What a steering sweep crosses: directions [n_dir, n_layers(+1), d_model] (unit rows used),
    scales [n_layers] (the norm alpha = 1 adds at each layer), the layers and the alphas."""

    directions: np.ndarray
    scales: np.ndarray
    layers: Sequence[int]
    alphas: Sequence[float]


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


def steering_rows(n_prompts: int, grid: SteeringGrid) -> tuple[Rows, np.ndarray]:
    """Rows of every (direction, layer, alpha != 0, prompt) of `grid` (its directions used as
    they are) and the [dir, layer, alpha, prompt] row index of each cell (-1 at alpha = 0: the
    shared unsteered run)."""
    directions, scales = np.asarray(grid.directions, np.float32), grid.scales
    layers, alphas = grid.layers, grid.alphas
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
    grid: SteeringGrid,
    settings: EngineSettings = EngineSettings(),
    readout: Readout = Readout(),
    timings: dict | None = None,
) -> Sweep:
    """Generate under every (direction, layer, alpha) of `grid` for every prompt, in one batched
    run (ids, mask [n_prompts, P]; timings: see `models.scheduler.run_rows`).

    Equal to a loop of `models.generate.generate` calls with
    `Edits(resid_add=zeros.at[L].set(alpha * scales[L] * unit(directions[i, L])))` and
    `row_ids = prompt index` (tests/test_steering.py).
    """
    layers = check_layers(grid.layers, cfg.n_layers)
    alphas = tuple(float(a) for a in grid.alphas)
    scales = np.asarray(grid.scales, np.float32)
    units = unit_directions(grid.directions, layers)
    n_p = np.asarray(ids).shape[0]
    rows, index = steering_rows(n_p, SteeringGrid(units, scales, layers, alphas))
    loop = functools.partial(progress, desc="steering", min_interval=5.0)
    base, out = run_rows(
        cfg, params, ids, mask, rows, settings, readout, loop=loop, timings=timings
    )
    full = _cells(out, base, index, settings.max_new_tokens)
    return Sweep(full, base, layers, alphas, np.asarray(grid.scales), len(rows) + n_p)


def _cells(out: RunOut, base: RunOut, index: np.ndarray, new: int) -> RunOut:
    """RunOut [dir, layer, alpha, prompt]: row index[cell] of `out`, or where it is -1, the
    prompt's unsteered run in `base`."""
    n_p = index.shape[-1]
    full = RunOut.empty(
        index.size,
        new,
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
    return full.reshape(index.shape)


# ---------------------------------------------------------------------------------------------
# Model-internal readouts without generation


@functools.partial(jax.jit, static_argnames=("cfg",))
def _last_token_readout(cfg, params, resid_pre, prompts, rows, start, reads):
    """resid_pre [layer, n_prompts, P, d_model] (the unedited run's); prompts = (ids, mask)
    [n_prompts, P]; rows = (prompt_idx [R], add [R, d_model]); start: the block (traced) whose
    input gets `add` at every position; reads = (vocab_ids [n_ids], unit dirs [k, d_model]).
    Returns (logits of vocab_ids [R, n_ids], final residual . dirs [R, k]) at each row's last
    token.

    One compiled function serves every start layer (as `models.generate.prefill_from_layer`
    does): each block below the last is a `lax.cond` that runs it only from `start` on; the last
    block runs for the last query only."""
    (ids, mask), (prompt_idx, add), (vocab_ids, dirs) = prompts, rows, reads
    x = resid_pre[start][prompt_idx] + add[:, None, :]
    ctx = make_context(ids[prompt_idx], mask[prompt_idx], Record(at="last"))
    blocks, n = params["blocks"], cfg.n_layers

    for i in range(n - 1):

        def run(x, i=i):
            return run_blocks(cfg, blocks, x, ctx, None, Record(), layers=range(i, i + 1))[0]

        x = jax.lax.cond(i >= start, run, lambda x: x, x)
    final = final_at_last(cfg, blocks, x, ctx, n - 1, None)  # [R, d_model]
    return unembed(cfg, params, final, vocab_ids), final @ dirs.T


def internal_readout(
    cfg,
    params,
    ids,
    mask,
    grid: SteeringGrid,
    readout: Readout,
    cells=None,
    rows_per_call=256,
    prompt_rows=0,
) -> tuple[np.ndarray, np.ndarray]:
    """What a steering sweep reads at the last prompt token (its `out.cols[..., 0, :]` and
    `out.proj[..., 0, :]`: the next-token logits of readout.vocab_ids and the final residual's
    projections on unit readout.proj_dirs), by a forward pass per row and no generation.

    ids, mask [n_prompts, P]; grid as `steering_sweep` takes it (directions unit-normalised
    here); cells: optional bool [layer, alpha] of the cells to run (default every alpha != 0).
    Rows restart from the unedited run's resid_pre[L] (the blocks below L cannot change) and run
    only the last block's last query (`models.final_at_last`), rows_per_call rows per call (one
    compiled function for every layer); prompt_rows: the unedited run's rows (`pad_rows`), so
    prompt sets of different sizes share its shapes. Returns (cols [dir, layer, alpha, prompt,
    n_ids], proj [dir, layer, alpha, prompt, k]), NaN in cells not run (alpha = 0 among them:
    the unedited run's values are the sweep's `base`).
    """
    layers = check_layers(grid.layers, cfg.n_layers)
    alphas = np.asarray(grid.alphas, np.float64)
    units = unit_directions(grid.directions, layers)
    scales = np.asarray(grid.scales, np.float32)
    run = (alphas != 0)[None].repeat(len(layers), 0) if cells is None else np.asarray(cells, bool)
    run &= (alphas != 0)[None]
    vocab = np.asarray(readout.vocab_ids if readout.vocab_ids is not None else [], np.int32)
    dirs = np.zeros((0, cfg.d_model), np.float32)
    if readout.proj_dirs is not None:
        dirs = np.asarray(readout.proj_dirs, np.float64)
        dirs = (dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)).astype(np.float32)
    n_dir, n_p = units.shape[0], len(ids)
    ids = pad_rows(np.asarray(ids, np.int32), prompt_rows)
    mask = pad_rows(np.asarray(mask, bool), prompt_rows)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    resid_pre = _resid_pre(cfg, params, ids_j, mask_j)
    cols = np.full((n_dir, len(layers), len(alphas), n_p, len(vocab)), np.nan, np.float32)
    proj = np.full((n_dir, len(layers), len(alphas), n_p, len(dirs)), np.nan, np.float32)
    for li, layer in enumerate(layers):
        ais = np.flatnonzero(run[li])
        if not len(ais):
            continue
        # Rows (direction, alpha, prompt), prompt fastest.
        d_i, a_i, p_i = (
            g.reshape(-1) for g in np.meshgrid(np.arange(n_dir), ais, np.arange(n_p), indexing="ij")
        )
        add = (alphas[a_i, None] * scales[layer]) * units[d_i, layer]  # [R, d]
        size = max(1, int(rows_per_call))  # one shape for every layer, small ones padded up
        for s in range(0, len(p_i), size):
            sl = np.arange(s, min(s + size, len(p_i)))
            pad = np.concatenate([sl, np.full(size - len(sl), sl[0])])  # one compiled shape
            rows = (jnp.asarray(p_i[pad], jnp.int32), jnp.asarray(add[pad], jnp.float32))
            c, pr = _last_token_readout(
                cfg,
                params,
                resid_pre,
                (ids_j, mask_j),
                rows,
                jnp.int32(layer),
                (jnp.asarray(vocab), jnp.asarray(dirs)),
            )
            cols[d_i[sl], li, a_i[sl], p_i[sl]] = np.asarray(c)[: len(sl)]
            proj[d_i[sl], li, a_i[sl], p_i[sl]] = np.asarray(pr)[: len(sl)]
    return cols, proj


def arithmetic_projection(grid: SteeringGrid, proj_dirs) -> np.ndarray:
    """[dir, layer, alpha, k]: how far the added vector alone moves the final residual's
    projection on each unit proj_dirs row, alpha * scales[L] * (unit(v[L]) . unit(d_k)).

    The vector added to resid_pre[L] rides the residual stream to the final residual untouched,
    so a projection measure moves by this much whatever the model does; only the rest is the
    later blocks' response."""
    layers = [int(x) for x in grid.layers]
    units = unit_directions(grid.directions, layers)[:, layers].astype(np.float64)
    dirs = np.asarray(proj_dirs, np.float64)
    dirs = dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)
    cos = np.einsum("nld,kd->nlk", units, dirs)  # [dir, layer, k]
    push = np.asarray(grid.alphas, np.float64)[None, :] * np.asarray(grid.scales)[layers, None]
    return cos[:, :, None, :] * push[None, :, :, None]


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
    language: str = "en",
) -> dict[str, np.ndarray]:
    """Every measure of every row, each [n]:

    - text (if `texts`): sentiment, politeness, kw_<emotion> (jaxcirc.core.scoring, in
      `language`);
    - logit_diff_<e>: mean logit of e's words minus the other emotions' words, at the last prompt
      token (the next-token prediction before anything is generated);
    - proj_<name>: final residual (before ln_final) at the last prompt token . unit direction;
      proj_gen_<name>: the same averaged over the positions of the generated tokens fed back.
    """
    res = {}
    if texts is not None:
        res.update(scoring.score_texts(texts, language=language))
    if word_ids is not None and out.cols is not None:
        for e in word_ids.ids:
            res[f"logit_diff_{e}"] = np.asarray(measures.logit_diff(out.cols[:, 0], word_ids, e))
    if out.proj is not None:
        for k, name in enumerate(proj_names):
            res[f"proj_{name}"] = out.proj[:, 0, k].astype(np.float64)
            if out.proj.shape[1] > 1:
                res[f"proj_gen_{name}"] = out.proj[:, 1:, k].mean(1).astype(np.float64)
    return {k: np.asarray(v, np.float64) for k, v in res.items()}


@dataclasses.dataclass
class SweepMeasures:
    """A sweep's generations as text and measures.

    meas[name] / texts: [dir, layer, alpha, prompt] (alpha = 0 cells hold the unsteered run's);
    base[name] / base_texts: [prompt], unsteered; steered: RunOut of the alpha != 0 cells, flat.
    """

    meas: dict[str, np.ndarray]
    base: dict[str, np.ndarray]
    texts: np.ndarray
    base_texts: list[str]
    steered: RunOut


def sweep_measures(
    tokenizer,
    sweep: Sweep,
    word_ids: measures.WordIds | None,
    proj_names: Sequence[str],
    language: str = "en",
) -> SweepMeasures:
    """Decode and score every steered cell of `sweep` once (`row_measures`, text in
    `language`); the alpha = 0 cells take the unsteered run's texts and measures."""
    shape = sweep.out.tokens.shape[:4]
    zero = np.asarray(sweep.alphas) == 0
    base_texts = decode_texts(tokenizer, sweep.base.tokens, sweep.base.eos_at)
    base_m = row_measures(base_texts, sweep.base, word_ids, proj_names, language)
    steered = np.broadcast_to((~zero)[None, None, :, None], shape).reshape(-1)
    flat = sweep.out.flatten(4).take(steered)
    texts_flat = decode_texts(tokenizer, flat.tokens, flat.eos_at)
    row_m = row_measures(texts_flat, flat, word_ids, proj_names, language)
    meas = {}
    for k, v in row_m.items():
        full = np.empty(int(np.prod(shape)))
        full[steered] = v
        full = full.reshape(shape)
        full[:, :, zero] = base_m[k]
        meas[k] = full
    texts = np.empty(int(np.prod(shape)), object)
    texts[steered] = texts_flat
    texts = texts.reshape(shape)
    texts[:, :, zero] = np.asarray(base_texts, object)
    return SweepMeasures(meas, base_m, texts, base_texts, flat)


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


@dataclasses.dataclass(frozen=True)
class Bootstrap:
    """How effects get their percentile-bootstrap CIs over prompts (jaxcirc.core.stats)."""

    n_boot: int
    seed: int
    level: float

    def ci(self, values, what: str = "") -> stats.Estimate:
        """`stats.bootstrap_ci` of the mean over the last axis of `values`."""
        return stats.bootstrap_ci(
            values, n_boot=self.n_boot, seed=self.seed, level=self.level, what=what
        )


def sensitivity_weights(alphas: Sequence[float]) -> np.ndarray:
    """[n_alpha] weights giving a layer's signed sensitivity: the mean of sign(alpha) * effect over
    the largest positive and the largest negative alpha present (either alone if one is absent).

    A sign-average at the strongest pushes, not a slope fitted over the alphas: where those
    pushes collapse the text it reads the collapse (the verdicts use
    `jaxcirc.core.selection` over coherent cells instead)."""
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


def effects_of(meas: np.ndarray, base: np.ndarray, alphas, boot: Bootstrap) -> Effects:
    """meas [dir, layer, alpha, prompt], base [prompt] -> Effects (one bootstrap for all cells)."""
    delta = meas - base
    est = boot.ci(delta)
    s = np.einsum("dlap,a->dlp", delta, sensitivity_weights(alphas))
    sest = boot.ci(s)
    return Effects(
        delta,
        *(np.asarray(x) for x in (est.value, est.lo, est.hi)),
        *(np.asarray(x) for x in (sest.value, sest.lo, sest.hi)),
    )


def random_band(values: np.ndarray, seed: int, level: float) -> stats.NullBand:
    """Band over random seeds (axis 0) of per-seed effects."""
    return stats.summarise_null(values, seed=seed, level=level)
