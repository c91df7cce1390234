"""Activation patching under generation, arrays in and arrays out.

    res = patching_sweep(cfg, params, t_ids, t_mask, s_ids, s_mask, PatchGrid(layers), settings)
    est, diff = patch_effects(delta, Bootstrap(n_boot, seed, level))

Patching replaces a block's input (resid_pre) or its attention / MLP output (attn_out, mlp_out)
at chosen prompt positions with its value from a source prompt's run, then generates
(`models.scheduler.run_rows`); as a control, the same site is patched from another target prompt.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxcirc.core import stats
from jaxcirc.core.steering import Bootstrap, pad_rows, resolve_layers
from jaxcirc.infra.progress import progress
from models.contract import Record
from models.scheduler import PATCH_SITES, EngineSettings, Readout, Rows, RunOut, run_rows
from models.transformer import forward


def _left_to_width(ids, mask, width: int):
    """Left-align and left-pad [n, P] prompts to `width` columns, as `models.generate.
    left_align` does, in numpy (its eager jnp ops would compile for every prompt count)."""
    ids, mask = np.asarray(ids, np.int32), np.asarray(mask, bool)
    order = np.argsort(mask, axis=1, kind="stable")  # False (pad) first, token order kept
    ids, mask = np.take_along_axis(ids, order, 1), np.take_along_axis(mask, order, 1)
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


@dataclasses.dataclass(frozen=True)
class PatchGrid:
    """What a patching sweep crosses and where it patches from.

    layers: blocks whose site is patched (empty: every layer); sites: PATCH_SITES entries; positions:
    "last" or "all" (`patch_positions`); source_of [n_targets]: the source each target is
    patched from (default i mod n_sources); control_of [n_targets]: the other target its control
    is patched from (default i + 1 mod n_targets).
    """

    layers: Sequence[int]
    sites: Sequence[str] = PATCH_SITES
    positions: str = "last"
    source_of: np.ndarray | None = None
    control_of: np.ndarray | None = None


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


def patch_rows(site: str, traces, masks, layers: Sequence[int], d_model: int) -> Rows:
    """Rows patching `site` at each layer from the source (condition 0) and control (1) runs.

    traces: ((source site values [layer, n_src, W, d_model], source_of [n_t]), (control values,
    control_of)); masks: (source [n_t, W], control [n_t, W]) patch masks. Rows are ordered
    [layer, condition, target].
    """
    n_t = len(masks[0])
    start, pidx, vals, pm = [], [], [], []
    for layer in layers:
        for cond, (tr, which) in enumerate(traces):
            start += [layer] * n_t
            pidx.append(np.arange(n_t))
            vals.append(tr[layer, which])
            pm.append(masks[cond])
    return Rows(
        np.asarray(start, np.int32),
        np.concatenate(pidx),
        np.zeros((len(start), d_model), np.float32),
        site,
        np.concatenate(vals).astype(np.float32),
        np.concatenate(pm),
    )


def patching_sweep(
    cfg,
    params,
    t_ids,
    t_mask,
    s_ids,
    s_mask,
    grid: PatchGrid,
    settings: EngineSettings = EngineSettings(),
    readout: Readout = Readout(),
) -> Patching:
    """For each site, layer and target prompt: replace the site's activation at block L with its
    value from a source run or, as control, from another target (see `PatchGrid`), at
    `grid.positions`, then generate.

    The patch applies to the prompt only (its keys and values reach the generated tokens through
    the cache); the blocks below L keep the target's own caches.
    """
    layers = resolve_layers(grid.layers, cfg.n_layers)
    for s in grid.sites:
        if s not in PATCH_SITES:
            raise ValueError(f"site {s!r} unknown; use one of {PATCH_SITES}")
    n_t, n_s = len(t_ids), len(s_ids)
    if n_t < 2:
        raise ValueError("need at least 2 target prompts (the control patches from another one)")
    width = max(np.asarray(t_ids).shape[1], np.asarray(s_ids).shape[1])
    t_ids, t_mask = _left_to_width(t_ids, t_mask, width)
    s_ids, s_mask = _left_to_width(s_ids, s_mask, width)
    source_of = np.arange(n_t) % n_s if grid.source_of is None else np.asarray(grid.source_of)
    control_of = (
        (np.arange(n_t) + 1) % n_t if grid.control_of is None else np.asarray(grid.control_of)
    )
    record = Record(**{s: True for s in grid.sites}, logits="none")
    s_tr = _traces(cfg, params, (s_ids, s_mask), record, settings.prompt_rows)
    t_tr = _traces(cfg, params, (t_ids, t_mask), record, settings.prompt_rows)
    masks = (
        patch_positions(t_mask, s_mask[source_of], grid.positions),
        patch_positions(t_mask, t_mask[control_of], grid.positions),
    )
    out, base, n_rows = {}, None, 0
    for site in grid.sites:
        src, ctl = s_tr[site], t_tr[site]
        rows = patch_rows(site, ((src, source_of), (ctl, control_of)), masks, layers, cfg.d_model)
        loop = functools.partial(progress, desc=f"patch {site}", min_interval=5.0)
        base, res = run_rows(cfg, params, t_ids, t_mask, rows, settings, readout, loop=loop)
        out[site] = res.reshape((len(layers), 2, n_t))
        n_rows += len(rows)
    return Patching(out, base, layers, tuple(grid.sites), grid.positions, n_rows + n_t)


def _traces(cfg, params, prompts, record: Record, prompt_rows: int) -> dict:
    """{site: [layer, n, W, d_model] numpy} of the unedited run of prompts = (ids, mask) [n, W],
    run over `prompt_rows` rows (`pad_rows`), so target and source sets share its shape."""
    ids, mask = prompts
    n = len(ids)
    ids, mask = pad_rows(ids, prompt_rows), pad_rows(mask, prompt_rows)
    _, tr = forward(cfg, params, jnp.asarray(ids), jnp.asarray(mask), None, record)
    sites = [s for s in PATCH_SITES if getattr(record, s)]
    return {s: np.asarray(getattr(tr, s))[:, :n] for s in sites}


def patch_effects(delta: np.ndarray, boot: Bootstrap) -> tuple[stats.Estimate, stats.Estimate]:
    """delta [layer, condition, target] (patched minus unpatched, condition 0 = source, 1 =
    control) -> (its mean over targets with CI, [layer, condition]; source minus control, paired
    per target, with CI, [layer])."""
    est = boot.ci(delta)
    diff = stats.paired_bootstrap_diff(
        delta[:, 0], delta[:, 1], n_boot=boot.n_boot, seed=boot.seed, level=boot.level
    )
    return est, diff
