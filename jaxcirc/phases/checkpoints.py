"""The study across training checkpoints: the representation phases on every checkpoint of one
model, and when the emotion structure forms (`jaxcirc.core.dynamics`).

    inputs = load_inputs(cfg, label, records)          # from a study config (lazy: loads nothing)
    summary = run(inputs, cfg.checkpoints, out_dir)

What does not depend on the weights is done once (`prepare`): the prompts are tokenised and
packed once, and every checkpoint runs through the same jitted forward with the same shapes and
the same `ModelConfig`, so XLA compiles the extraction once for all checkpoints of a shape.
Checkpoints are loaded one at a time and dropped after their features are read.

Per checkpoint (step): the residual at each prompt's last token ("sentence_end") and the mean over
its span tokens ("span_mean"), every layer (0 = embeddings, the lexical baseline); the probe per
layer with its label-shuffle null (`probe_features`); the neutral-centred emotion-vector cosines
with their null band (`vector_feature`). Across checkpoints: each step's emotion subspace against
the final one's, the neutral-fit map between consecutive steps, and each emotion's onset step.
Every null draws one permutation for all steps at once, and "beyond" is family-wise over the steps
and block layers (`jaxcirc.core.dynamics`).

Files written to out_dir (every row says its step, layer, feature, n_perm and seed):

- `probe.csv`, `cosines.csv`, `overlap.csv`, `maps.csv`, `onset.csv`: every figure with its null.
- `features.npz`: `<feature>` `[step, layer + 1, n, d_model]` float32, `steps`, `labels`.
- `probe_heatmap.png` (accuracy, layer x step), `probe_curves.png`, `onset.png`, `overlap.png`,
  `cosines.png`, `maps.png`: the curves with their null bands.
- `summary.json`: what `run` returns (headline figures, onsets, timing per checkpoint).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import models
from jaxcirc.core import dynamics, vectors
from jaxcirc.data import dataset
from jaxcirc.data.activations import layer_names
from jaxcirc.data.emotions import EMOTIONAL, EMOTIONS, NEUTRAL_INDEX
from jaxcirc.infra import artifacts
from jaxcirc.infra.compile_cache import CompileCounter
from jaxcirc.infra.progress import check_stop, write_line
from jaxcirc.phases import extract
from jaxcirc.report import plots

NAME = "checkpoints"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 3  # 2: the probe null stratifies its folds on the permuted labels; 3: near-ties

FEATURES = ("sentence_end", "span_mean")
ANALYSES = ("probe", "cosines", "overlap", "maps", "onset")
PAIRS = (("gratitude", "anger"), ("gratitude", "apology"), ("anger", "apology"))


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One checkpoint of the model: its training step, how to load it (called once, when the
    phase reaches it), its name in outputs (the hub revision, e.g. "step1000") and the facts to
    record beside it, asked for after loading (e.g. a stand-in's held-out loss at that step)."""

    step: int
    load: Callable[[], models.LoadedModel]
    name: str
    facts: Callable[[], dict] = dict


@dataclasses.dataclass(frozen=True)
class Inputs:
    """label: the model's name in every output; checkpoints: ascending steps, the last is the
    final model every step is compared with; records: the prompts (the study's dataset)."""

    label: str
    checkpoints: Sequence[Checkpoint]
    records: Sequence[dataset.Record]


# ---------------------------------------------------------------------------------------------
# Loading the checkpoints named by a study config


def _standin_series(mc, family: str, steps: tuple[int, ...]):
    from jaxcirc.demo import standins

    return standins.load_checkpoints(
        Path(mc.cache_dir).expanduser(),
        family,
        steps,
        train_cfg=standins.TrainConfig(**mc.train.to_dict()) if "train" in mc else None,
        data=standins.DemoCorpus(n_lines=mc.corpus_lines, seed=mc.seed),
        shape=_shape(mc),
    )


def _shape(mc):
    from jaxcirc.demo import standins

    return standins.StandinShape(**mc.shape.to_dict()) if "shape" in mc else standins.StandinShape()


def _standin_checkpoints(cfg, label: str) -> list[Checkpoint]:
    """The stand-in `label` at `cfg.checkpoints.steps`, trained (once, all steps together) on
    the first load (`standins.load_checkpoints`)."""
    from jaxcirc.demo import standins

    mc, steps = cfg.models, tuple(int(s) for s in cfg.checkpoints.steps)
    by_label = {standins.standin_label(f, _shape(mc)): f for f in mc.families}
    if label not in by_label:
        raise ValueError(f"label {label!r}: not one of the config's stand-ins {list(by_label)}")
    series = functools.lru_cache(maxsize=1)(lambda: _standin_series(mc, by_label[label], steps))
    return [
        Checkpoint(s, lambda s=s: series()[0][s], f"step{s}", lambda s=s: series()[1][s])
        for s in steps
    ]


def load_inputs(cfg, label: str, records: Sequence[dataset.Record]) -> Inputs:
    """The checkpoints of model `label` that `cfg.checkpoints.steps` names, loaded lazily.

    Stand-ins (`cfg.models.kind == "standin"`): the trainer's kept steps, cached beside the final
    model (`jaxcirc.demo.standins.load_checkpoints`). Checkpoints: `models.load(source,
    revision=cfg.checkpoints.revision.format(step=...), cache_dir=cfg.models.hf_cache)` of the
    source labelled `label`, as the study loads its models (without the converted-params cache
    unless `cfg.checkpoints.param_cache`)."""
    sec = cfg.checkpoints
    if cfg.models.kind == "standin":
        return Inputs(label, _standin_checkpoints(cfg, label), list(records))
    sources = {s["label"]: s for s in cfg.models.sources}
    if label not in sources:
        raise ValueError(f"label {label!r}: not one of models.sources {list(sources)}")
    src = sources[label]
    hf_cache = cfg.models.get("hf_cache") or None

    def loader(rev: str):
        return lambda: models.load(
            src["source"], revision=rev, cache_dir=hf_cache, use_param_cache=sec.param_cache
        )

    ckpts = []
    for s in sec.steps:
        rev = sec.revision.format(step=int(s))
        facts = {"source": src["source"], "revision": rev}
        ckpts.append(Checkpoint(int(s), loader(rev), rev, lambda facts=facts: facts))
    return Inputs(label, ckpts, list(records))


def identity(cfg, label: str) -> dict:
    """What identifies the checkpoints' weights, for a stage key, from the config alone."""
    if cfg.models.kind == "standin":
        return {"standin": cfg.models.to_dict(), "label": label}
    src = {s["label"]: s for s in cfg.models.sources}[label]
    return {"source": src["source"], "revision": cfg.checkpoints.revision, "label": label}


# ---------------------------------------------------------------------------------------------
# Extraction: prepared once, run per checkpoint


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What extraction needs that no weight changes: the model config (one for all checkpoints,
    so the jitted forward is one compiled program), the packed calls with their token and
    segment arrays, each prompt's last real token `[n]`, span mask `[n, pos]` and label `[n]`."""

    config: models.ModelConfig
    calls: list
    last: np.ndarray
    span: np.ndarray
    labels: np.ndarray
    record: dict


def prepare(model: models.LoadedModel, records, prepend_bos: bool, batch_size: int) -> Prepared:
    """Tokenise and pack `records` once (as `extract.extract_residuals` does)."""
    if not records:
        raise ValueError("records: empty; pass the dataset's records")
    toks = model.tokenize([r.text for r in records], prepend_bos=prepend_bos, pad_to_multiple=1)
    width = int(toks.lengths.max())
    ids = toks.ids[:, :width]
    models.validate_tokens(model.config, ids)
    span = toks.span_mask([list(r.spans) for r in records])[:, :width]
    if not span.any(axis=1).all():
        bad = int(np.flatnonzero(~span.any(axis=1))[0])
        raise ValueError(f"records[{bad}] ({records[bad].text!r}): no token inside its spans")
    plan = extract.plan_batches(model.config, toks.lengths, batch_size, 8)
    calls = [(c, *c.arrays(ids, toks.pad_id)) for c in plan.calls()]
    return Prepared(
        config=model.config,
        calls=calls,
        last=(toks.lengths - 1).astype(np.int64),
        span=span,
        labels=np.array([EMOTIONS.index(r.emotion) for r in records], np.int64),
        record={**toks.record(), "packing": plan.record()},
    )


def check_same_shape(a: models.ModelConfig, b: models.ModelConfig, what: str) -> None:
    """Checkpoints of one series must share every architectural setting (names may differ)."""
    if dataclasses.replace(a, name="") != dataclasses.replace(b, name=""):
        raise ValueError(f"{what}: its config differs from the first checkpoint's; one model only")


def extract_features(prep: Prepared, params) -> dict[str, np.ndarray]:
    """{"sentence_end", "span_mean"}: `[layer + 1, n, d_model]` float32 of one checkpoint's
    `params`, through `extract.packed_residuals` with `prep.config` (compiled once per shape)."""
    cfg, n = prep.config, len(prep.last)
    se = np.zeros((cfg.n_layers + 1, n, cfg.d_model), np.float32)
    span_sum = np.zeros((n, cfg.n_layers + 1, cfg.d_model), np.float64)
    for call, ids, seg in prep.calls:
        h = np.asarray(extract.packed_residuals(cfg, params, ids, seg), np.float32)
        vals = h[:, call.row, call.slot]  # [layer + 1, tokens of the call, d_model]
        end = call.pos == prep.last[call.prompt]
        se[:, call.prompt[end]] = vals[:, end]
        marked = prep.span[call.prompt, call.pos]
        np.add.at(span_sum, call.prompt[marked], vals[:, marked].transpose(1, 0, 2))
    counts = prep.span.sum(axis=1)[:, None, None]
    return {
        "sentence_end": se,
        "span_mean": (span_sum / counts).transpose(1, 0, 2).astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Per checkpoint


def _check_section(sec, inputs: Inputs) -> None:
    steps = [c.step for c in inputs.checkpoints]
    if steps != [int(s) for s in sec.steps]:
        raise ValueError(f"checkpoints: steps {steps} differ from config.steps {list(sec.steps)}")
    if len(steps) < 2 or steps != sorted(set(steps)):
        raise ValueError(f"config.steps={steps}: give two or more ascending steps")
    for name, allowed in (("analyses", ANALYSES), ("probe_features", FEATURES)):
        bad = [v for v in sec[name] if v not in allowed]
        if bad:
            raise ValueError(f"config.{name}: {bad} unknown; choose from {list(allowed)}")
    if sec.vector_feature not in FEATURES:
        raise ValueError(f"config.vector_feature={sec.vector_feature!r}; use one of {FEATURES}")


def _per_step(feats: dict, labels, sec) -> dict:
    """The analyses of one checkpoint: probe accuracy and null draws per feature, and the
    neutral-centred cosines of `sec.vector_feature` with their null band."""
    out = {"probe": {}, "cosines": None}
    if "probe" in sec.analyses:
        for f in sec.probe_features:
            out["probe"][f] = dynamics.probe_step(
                feats[f], labels, sec.probe_folds, sec.probe_n_perm, sec.seed, sec.probe_shrinkage
            )
    if "cosines" in sec.analyses:
        out["cosines"] = vectors.cosine_analysis(
            feats[sec.vector_feature],
            labels,
            list(EMOTIONS),
            "sentence_end",  # the core's per-prompt-feature method: class means of [layer, n, d]
            "neutral",
            neutral_index=NEUTRAL_INDEX,
            n_perm=sec.n_perm,
            seed=sec.seed,
            level=sec.level,
        )
    return out


def _run_checkpoints(inputs: Inputs, sec) -> tuple[Prepared, list[dict], list[dict], list[dict]]:
    """Load, extract and analyse every checkpoint in turn: (prepared, features per step, per-step
    results, timing rows). The first checkpoint's load also prepares the prompts."""
    prep, feats, per_step, timing = None, [], [], []
    for i, ck in enumerate(inputs.checkpoints):
        check_stop()
        t0 = time.perf_counter()
        model = ck.load()
        t1 = time.perf_counter()
        with CompileCounter() as cc:
            if prep is None:
                prep = prepare(model, inputs.records, sec.prepend_bos, sec.batch_size)
            check_same_shape(prep.config, model.config, f"checkpoint {ck.name}")
            f = extract_features(prep, model.params)
        t2 = time.perf_counter()
        del model
        per_step.append(_per_step(f, prep.labels, sec))
        feats.append(f)
        t3 = time.perf_counter()
        timing.append(
            {
                "step": ck.step,
                "facts": ck.facts(),
                "load_s": round(t1 - t0, 3),
                "extract_s": round(t2 - t1, 3),
                "analyses_s": round(t3 - t2, 3),
                "total_s": round(t3 - t0, 3),
                "compiles": cc.compiles,
            }
        )
        _say(
            f"checkpoints {inputs.label}: step {ck.step} ({i + 1}/{len(inputs.checkpoints)}) "
            f"{t3 - t0:.1f} s, {cc.compiles} compiles"
        )
    return prep, feats, per_step, timing


def _say(msg: str) -> None:
    if os.environ.get("JAXCIRC_QUIET", "") != "1":
        write_line(msg)


# ---------------------------------------------------------------------------------------------
# Rows: every figure with its null, one row per step (or step pair) and layer


@dataclasses.dataclass(frozen=True)
class _Context:
    """What every row and plot of one run says: the model, the steps, the layer names, the
    layer the curves show, the settings."""

    label: str
    steps: list[int]
    names: list[str]  # the checkpoints' names (revisions)
    layers: list[str]
    focus: int
    sec: object

    def step_cols(self, i: int) -> dict:
        return {"model": self.label, "step": self.steps[i], "checkpoint": self.names[i]}

    def pair_cols(self, i: int) -> dict:
        return {"model": self.label, "step_from": self.steps[i], "step_to": self.steps[i + 1]}


def _num(x) -> float | None:
    """A CSV / JSON number; None where the figure is infinite or undefined."""
    return float(x) if np.isfinite(x) else None


def _nums(xs) -> list:
    return [_num(x) for x in xs]


def _traj_rows(t: dynamics.Trajectory, cols, ctx: _Context, value: str, extra: dict) -> list:
    """One row per cell of a trajectory; `cols(i)` names row i's step (or step pair)."""
    rows = []
    for i in range(t.value.shape[0]):
        for li in range(t.value.shape[1]):
            rows.append(
                {
                    **cols(i),
                    "layer": li,
                    "layer_name": ctx.layers[li],
                    **extra,
                    value: float(t.value[i, li]),
                    "null_mean": float(t.null_mean[i, li]),
                    "null_lo": float(t.null_lo[i, li]),
                    "null_hi": float(t.null_hi[i, li]),
                    "p_value": float(t.p_value[i, li]),
                    "p_adjusted_fw": _num(t.p_adjusted[i, li]),
                    "fw_threshold": _num(t.fw_threshold[i, li]),
                    "beyond_fw": bool(t.beyond[i, li]),
                    "in_fw_family": bool(t.fw_mask[i, li]),
                    "n_perm": t.n_perm,
                    "level": t.level,
                    "seed": t.seed,
                }
            )
    return rows


def _first_step(beyond_rows, steps) -> int | None:
    hit = np.flatnonzero(np.asarray(beyond_rows).any(axis=-1))
    return int(steps[hit[0]]) if hit.size else None


def _probe(per_step, ctx: _Context) -> tuple[list, dict, dict]:
    """probe.csv rows, the summary's figures and the trajectories, per feature."""
    rows, summary, trajs = [], {}, {}
    sec, fl = ctx.sec, ctx.focus
    for f in sec.probe_features:
        acc = np.stack([p["probe"][f][0] for p in per_step])
        null = np.stack([p["probe"][f][1] for p in per_step], axis=1)
        what = f"{sec.probe_folds}-fold shrinkage-LDA accuracy ({f}), 4 classes"
        t = dynamics.trajectory(
            acc, null, dynamics.block_layers(*acc.shape), sec.seed, sec.level, what
        )
        trajs[f] = t
        extra = {"feature": f, "chance": 0.25, "n_folds": sec.probe_folds}
        rows += _traj_rows(t, ctx.step_cols, ctx, "accuracy", extra)
        summary[f] = {
            "focus_layer": fl,
            "accuracy_focus": t.value[:, fl].tolist(),
            "null_p95_focus": np.percentile(null[:, :, fl], 95, axis=0).tolist(),
            "layer0_lexical_baseline": t.value[:, 0].tolist(),
            "best_block_accuracy": t.value[:, 1:].max(axis=1).tolist(),
            "best_block_layer": (t.value[:, 1:].argmax(axis=1) + 1).tolist(),
            "fw_threshold_focus": _nums(t.fw_threshold[:, fl]),
            "fw_family": "every step x block layers 1..L (max-T adjusted)",
            "beyond_fw_any_layer": t.beyond.any(axis=1).tolist(),
            "first_step_beyond_fw": _first_step(t.beyond, ctx.steps),
            "chance": 0.25,
            "n_folds": sec.probe_folds,
            "n_perm": t.n_perm,
            "seed": sec.seed,
        }
    return rows, summary, trajs


def _cosines(per_step, ctx: _Context) -> tuple[list, dict]:
    """cosines.csv rows (every step, layer and emotion pair) and the focus layer's figures."""
    rows, focus = [], {f"{a}-{b}": [] for a, b in PAIRS}
    for i, p in enumerate(per_step):
        res = p["cosines"]
        for a, b in PAIRS:
            ia, ib = res.class_names.index(a), res.class_names.index(b)
            for li in range(res.matrix.shape[0]):
                c, lo, hi = (float(m[li, ia, ib]) for m in (res.matrix, res.null_lo, res.null_hi))
                outside = None if not np.isfinite([c, lo, hi]).all() else not lo <= c <= hi
                row = {
                    **ctx.step_cols(i),
                    "feature": ctx.sec.vector_feature,
                    "centre": "neutral",
                    "layer": li,
                    "layer_name": ctx.layers[li],
                    "class_a": a,
                    "class_b": b,
                    "cosine": c,
                    "null_mean": float(res.null_mean[li, ia, ib]),
                    "null_lo": lo,
                    "null_hi": hi,
                    "outside_band": outside,
                    "n_perm": res.n_perm,
                    "seed": res.seed,
                }
                rows.append(row)
                if li == ctx.focus % res.matrix.shape[0]:
                    keys = ("cosine", "null_mean", "null_lo", "null_hi")
                    focus[f"{a}-{b}"].append({k: row[k] for k in keys})
    return rows, {"layer": ctx.focus, "pairs": focus, "band": "pointwise, uncorrected"}


def _overlap(x, labels, ctx: _Context) -> tuple[list, dict, dynamics.OverlapResult]:
    sec = ctx.sec
    res = dynamics.overlap_with_final(x, labels, sec.subspace_k, sec.n_perm, sec.seed, sec.level)
    extra = {
        "feature": sec.vector_feature,
        "k": sec.subspace_k,
        "random_expectation": res.random_expectation,
        "random_lo": float(res.random_band.lo),
        "random_hi": float(res.random_band.hi),
    }
    rows = _traj_rows(res.traj, ctx.step_cols, ctx, "overlap", extra)
    for r in rows:
        r["rank"] = int(res.rank[ctx.steps.index(r["step"]), r["layer"]])
    t, fl = res.traj, ctx.focus
    summary = {
        "focus_layer": fl,
        "overlap_focus": t.value[:, fl].tolist(),
        "null_hi_focus": t.null_hi[:, fl].tolist(),
        "beyond_fw_any_layer": t.beyond.any(axis=1).tolist(),
        "fw_threshold_focus": _nums(t.fw_threshold[:, fl]),
        "fw_family": "every step but the final x block layers 1..L (max-T adjusted)",
        "null": "paired label shuffle (one permutation at both steps)",
        "random_subspace_expectation": res.random_expectation,
        "k": sec.subspace_k,
        "n_perm": t.n_perm,
    }
    return rows, summary, res


def _maps(x, labels, ctx: _Context) -> tuple[list, dict, dynamics.Trajectory]:
    sec = ctx.sec
    neutral = x[:, :, labels == NEUTRAL_INDEX]
    t = dynamics.consecutive_maps(
        neutral, sec.map_test_fraction, sec.map_ridge_rel, sec.n_perm, sec.seed, sec.level
    )
    extra = {"feature": sec.vector_feature, "ridge_rel": sec.map_ridge_rel}
    rows = _traj_rows(t, ctx.pair_cols, ctx, "r2", extra)
    summary = {
        "focus_layer": ctx.focus,
        "r2_focus": t.value[:, ctx.focus].tolist(),
        "null_hi_focus": t.null_hi[:, ctx.focus].tolist(),
        "what": t.what,
        "reading": "continuity of the neutral representation between steps; two networks fed "
        "the same tokens beat the shuffled-pairing null whatever they learnt",
        "n_perm": t.n_perm,
    }
    return rows, summary, t


def _at(steps: list[int], index: int | None) -> int | None:
    return None if index is None else steps[index]


def _onsets(x, labels, ctx: _Context) -> tuple[list, dict, dict]:
    sec = ctx.sec
    settings = dynamics.OnsetSettings(sec.n_perm, sec.n_boot, sec.seed, sec.level)
    rows, summary, results = [], {}, {}
    for e in EMOTIONAL:
        res = dynamics.onset(x, labels, EMOTIONS.index(e), NEUTRAL_INDEX, EMOTIONS, settings)
        results[e] = res
        rows += _traj_rows(res.traj, ctx.step_cols, ctx, "separation", {"emotion": e})
        summary[e] = {
            "onset_step": _at(ctx.steps, res.index),
            "ci_steps": [_at(ctx.steps, i) for i in res.ci_index],
            "share_of_draws_with_onset": res.share_with_onset,
            "sustained_onset_step": _at(ctx.steps, res.sustained_index),
            "sustained_ci_steps": [_at(ctx.steps, i) for i in res.sustained_ci_index],
            "definition": "onset: first step beyond the family-wise threshold at some block "
            "layer; sustained: first step from which every later step is",
            "beyond_at_first_step": bool(res.traj.beyond[0].any()),
            "threshold_at_best_layer": _nums(res.best_threshold),
            "best_block_separation": res.best.tolist(),
            "best_block_layer": res.best_layer.tolist(),
            "layer0_separation": res.traj.value[:, 0].tolist(),
            "n_perm": sec.n_perm,
            "n_boot": sec.n_boot,
        }
    return rows, summary, results


# ---------------------------------------------------------------------------------------------
# Plots: x = the checkpoints in order, labelled by their steps


def _step_ticks(fig, labels) -> None:
    """Label the x positions 0..n-1 with the steps; slanted only where they would collide (the
    figures keep fixed margins, which a slanted label may overrun)."""
    text = [str(x) for x in labels]
    slant = 45 if sum(len(t) for t in text) > 40 else 0
    with plots.LOCK:  # matplotlib is not thread-safe (jaxcirc.report.plots)
        for ax in fig.axes:
            if ax.get_visible() and ax.lines:
                ax.set_xticks(range(len(text)), text, rotation=slant)
                ax.tick_params(axis="x", labelsize=7)


def _band(t: dynamics.Trajectory, li: int) -> tuple:
    # A skewed null can put its mean outside its percentile band: clip it for drawing (the CSV
    # keeps the exact values).
    lo, hi = t.null_lo[:, li], t.null_hi[:, li]
    return np.clip(t.null_mean[:, li], lo, hi), lo, hi


def _const(v: float, n: int) -> tuple:
    return np.full(n, v), None, None


def _finite(x) -> np.ndarray:
    """Infinite thresholds (no value could be beyond, or every one is) are not drawn."""
    x = np.asarray(x, np.float64)
    return np.where(np.isfinite(x), x, np.nan)


def _save(fig, path: Path, labels=None) -> str:
    if labels is not None:
        _step_ticks(fig, labels)
    artifacts.save_figure(path, fig)
    return path.name


def _plot_probe(trajs: dict, ctx: _Context, out_dir: Path) -> dict:
    sec, fl, n = ctx.sec, ctx.focus, len(ctx.steps)
    head = f"{ctx.label}: {sec.probe_folds}-fold shrinkage-LDA probe, 4 classes (chance 0.25)"
    heat = plots.heatmap_grid(
        {f: t.value.T for f, t in trajs.items()},
        ctx.layers,
        ctx.steps,
        title=f"{head}, accuracy per layer (rows; 0 = embeddings, lexical baseline) and training "
        "step (columns)",
        cbar_label="accuracy",
        vmin=0.0,
        vmax=1.0,
    )
    panels = []
    for f, t in trajs.items():
        series = {
            f"layer {fl} accuracy": (t.value[:, fl], None, None),
            f"layer {fl} label-shuffle null": _band(t, fl),
            "layer 0 (lexical baseline)": (t.value[:, 0], None, None),
            "family-wise threshold": (_finite(t.fw_threshold[:, fl]), None, None),
            "chance": _const(0.25, n),
        }
        panels.append((f, "accuracy", series))
    dashed = (f"layer {fl} label-shuffle null", "family-wise threshold", "chance")
    curves = plots.line_panels(
        np.arange(n),
        [panels],
        xlabel="training step",
        title=f"{head} vs training step; null: {int(sec.level * 100)}% band of "
        f"{sec.probe_n_perm} label shuffles (seed {sec.seed}); family-wise threshold over steps "
        "and block layers",
        dashed=dashed,
        zero_line=False,
    )
    return {
        "probe_heatmap": _save(heat, out_dir / "probe_heatmap.png"),
        "probe_curves": _save(curves, out_dir / "probe_curves.png", ctx.steps),
    }


def _plot_onset(results: dict, ctx: _Context, out_dir: Path) -> dict:
    n, panels = len(ctx.steps), []
    for e, res in results.items():
        onset = "none" if res.index is None else ctx.steps[res.index]
        series = {
            "max over block layers": (res.best, None, None),
            "null (max over block layers)": tuple(
                np.clip(res.best_null[0], res.best_null[1], res.best_null[2])
                if i == 0
                else res.best_null[i]
                for i in range(3)
            ),
            "layer 0 (lexical baseline)": (res.traj.value[:, 0], None, None),
            "family-wise threshold (best layer)": (_finite(res.best_threshold), None, None),
        }
        panels.append((f"{e} vs neutral: onset step {onset}", "separation", series))
    sec = ctx.sec
    fig = plots.line_panels(
        np.arange(n),
        [panels],
        xlabel="training step",
        title=f"{ctx.label}: separation from neutral ({sec.vector_feature}; bias-corrected "
        "squared distance of the class means / within-class variance, features z-scored); null: "
        f"{sec.n_perm} label shuffles (seed {sec.seed}), {int(sec.level * 100)}% band",
        dashed=("null (max over block layers)", "family-wise threshold (best layer)"),
    )
    return {"onset_plot": _save(fig, out_dir / "onset.png", ctx.steps)}


def _plot_overlap(res: dynamics.OverlapResult, ctx: _Context, out_dir: Path) -> dict:
    t, fl, n, sec = res.traj, ctx.focus, len(ctx.steps), ctx.sec
    series = {
        f"layer {fl} overlap with the final step": (t.value[:, fl], None, None),
        "paired label-shuffle null": _band(t, fl),
        f"random {res.k}-dim subspaces (k/d)": _const(res.random_expectation, n),
        "family-wise threshold": (_finite(t.fw_threshold[:, fl]), None, None),
    }
    what = f"emotion subspace (k={res.k}, {sec.vector_feature}), mean cos^2 of principal angles"
    curve = plots.line_with_band(
        np.arange(n),
        series,
        xlabel="training step",
        ylabel="overlap with the final step",
        title=f"{ctx.label}: {what}, layer {fl}; null {t.n_perm} label shuffles (seed {t.seed})",
        dashed=(
            "paired label-shuffle null",
            f"random {res.k}-dim subspaces (k/d)",
            "family-wise threshold",
        ),
        zero_line=False,
    )
    heat = plots.heatmap_grid(
        {"overlap": t.value.T, "paired label-shuffle null, mean": t.null_mean.T},
        ctx.layers,
        ctx.steps,
        title=f"{ctx.label}: {what} with the final step, per layer and step",
        cbar_label="mean cos^2",
        vmin=0.0,
        vmax=1.0,
    )
    return {
        "overlap_plot": _save(curve, out_dir / "overlap.png", ctx.steps),
        "overlap_heatmap": _save(heat, out_dir / "overlap_heatmap.png"),
    }


def _plot_cosines(focus: dict, ctx: _Context, out_dir: Path) -> dict:
    panels = []
    for pair, pts in focus["pairs"].items():
        c, mean, lo, hi = (np.array([p[k] for p in pts]) for k in pts[0])
        series = {"cosine": (c, None, None), "label-shuffle null": (np.clip(mean, lo, hi), lo, hi)}
        panels.append((pair, "cosine", series))
    sec = ctx.sec
    fig = plots.line_panels(
        np.arange(len(ctx.steps)),
        [panels],
        xlabel="training step",
        title=f"{ctx.label}: cosine of neutral-centred emotion vectors ({sec.vector_feature}), "
        f"layer {ctx.focus}; {int(sec.level * 100)}% band of {sec.n_perm} label shuffles "
        f"(seed {sec.seed}), pointwise",
        dashed=("label-shuffle null",),
    )
    return {"cosines_plot": _save(fig, out_dir / "cosines.png", ctx.steps)}


def _plot_maps(t: dynamics.Trajectory, ctx: _Context, out_dir: Path) -> dict:
    fl = ctx.focus
    labels = ctx.steps[1:]  # each map ends at this step and starts at the one before
    fig = plots.line_with_band(
        np.arange(len(labels)),
        {
            f"layer {fl} held-out R^2": (t.value[:, fl], None, None),
            "shuffled-pairing null": _band(t, fl),
        },
        xlabel="training step (the map from the kept step before it)",
        ylabel="held-out R^2",
        title=f"{ctx.label}: {t.what}; layer {fl}; null {t.n_perm} pairings (seed {t.seed})",
        dashed=("shuffled-pairing null",),
    )
    return {"maps_plot": _save(fig, out_dir / "maps.png", labels)}


# ---------------------------------------------------------------------------------------------
# The phase


def _analyse(stacked: dict, per_step, labels, ctx: _Context, out_dir: Path) -> tuple[dict, dict]:
    """Every analysis of `ctx.sec.analyses` over the stacked features `{feature: [step, layer+1,
    n, d]}`: writes its CSV (and plots); returns (summary parts, files)."""
    sec, summary, files = ctx.sec, {}, {}
    x = stacked[sec.vector_feature]
    done = {}
    if "probe" in sec.analyses:
        rows, summary["probe"], done["probe"] = _probe(per_step, ctx)
        files["probe"] = _csv(out_dir / "probe.csv", rows)
    if "cosines" in sec.analyses:
        rows, summary["cosines"] = _cosines(per_step, ctx)
        files["cosines"] = _csv(out_dir / "cosines.csv", rows)
    if "overlap" in sec.analyses:
        rows, summary["overlap"], done["overlap"] = _overlap(x, labels, ctx)
        files["overlap"] = _csv(out_dir / "overlap.csv", rows)
    if "maps" in sec.analyses:
        rows, summary["maps"], done["maps"] = _maps(x, labels, ctx)
        files["maps"] = _csv(out_dir / "maps.csv", rows)
    if "onset" in sec.analyses:
        rows, summary["onset"], done["onset"] = _onsets(x, labels, ctx)
        files["onset"] = _csv(out_dir / "onset.csv", rows)
    if sec.plots:
        files.update(_plots(done, summary, ctx, out_dir))
    return summary, files


def _plots(done: dict, summary: dict, ctx: _Context, out_dir: Path) -> dict:
    files = {}
    if "probe" in done:
        files.update(_plot_probe(done["probe"], ctx, out_dir))
    if "onset" in done:
        files.update(_plot_onset(done["onset"], ctx, out_dir))
    if "overlap" in done:
        files.update(_plot_overlap(done["overlap"], ctx, out_dir))
    if "cosines" in summary:
        files.update(_plot_cosines(summary["cosines"], ctx, out_dir))
    if "maps" in done:
        files.update(_plot_maps(done["maps"], ctx, out_dir))
    return files


def _csv(path: Path, rows: list) -> str:
    artifacts.write_csv(path, rows)
    return path.name


def _timing(timing: list, seconds: dict) -> dict:
    after = timing[1:]
    return {
        "per_checkpoint": timing,
        "first_checkpoint_s": timing[0]["total_s"],
        "mean_after_first_s": float(np.mean([t["total_s"] for t in after])) if after else None,
        "compiles_first": timing[0]["compiles"],
        "compiles_after_first": int(sum(t["compiles"] for t in after)),
        **seconds,
        "note": "per checkpoint: load + extraction (compiles counted) + per-step probe and "
        "cosines; across_steps_s: overlap, maps, onset, CSVs and plots",
    }


def run(inputs: Inputs, section, out_dir: str | Path) -> dict:
    """The study across `inputs.checkpoints` with the settings of `section`
    (`configs.sections.checkpoints()`); writes the files of the module docstring and returns the
    summary: {"model", "steps", "checkpoints", "n", "layers", "probe", "cosines", "overlap",
    "maps", "onset", "timing", "files", "config"}."""
    sec = section
    _check_section(sec, inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prep, feats, per_step, timing = _run_checkpoints(inputs, sec)
    t1 = time.perf_counter()
    stacked = {f: np.stack([x[f] for x in feats]) for f in FEATURES}
    del feats
    n_l = stacked["sentence_end"].shape[1]
    steps = [c.step for c in inputs.checkpoints]
    names = [c.name for c in inputs.checkpoints]
    ctx = _Context(inputs.label, steps, names, layer_names(n_l), sec.focus_layer % n_l, sec)
    summary = {
        "model": inputs.label,
        "steps": steps,
        "checkpoints": [
            {"step": t["step"], "name": n, **t["facts"]} for t, n in zip(timing, names, strict=True)
        ],
        "n": int(len(prep.labels)),
        "n_per_class": {e: int(np.sum(prep.labels == i)) for i, e in enumerate(EMOTIONS)},
        "layers": n_l,
        "layer_axis": "0 = embeddings (lexical baseline); l = after block l-1",
        "focus_layer": ctx.focus,
        "tokenization": prep.record,
    }
    parts, files = _analyse(stacked, per_step, prep.labels, ctx, out_dir)
    summary.update(parts)
    artifacts.write_npz(
        out_dir / "features.npz", steps=np.array(steps), labels=prep.labels, **stacked
    )
    files["features"] = "features.npz"
    seconds = {
        "checkpoints_s": round(t1 - t0, 2),
        "across_steps_s": round(time.perf_counter() - t1, 2),
    }
    summary["timing"] = _timing(timing, seconds)
    summary["files"] = {**files, "summary": "summary.json"}
    summary["config"] = sec.to_dict() if hasattr(sec, "to_dict") else dict(sec)
    artifacts.write_json(out_dir / "summary.json", summary)
    return summary
