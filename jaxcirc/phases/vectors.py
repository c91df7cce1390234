"""Phases 3 and 3.5: emotion vectors per layer, their cosines with the label-shuffle null, linear
probes with theirs, and per-layer emotion subspaces; one model's activations in, files out.

    summary = run_vectors(acts, configs.sections.vectors(), out_dir)

Files written to out_dir (every number says its method, centring, layer and seed):

- `cosines.csv`: long format, one row per method x centring x layer x class pair (a < b), the
  cosine beside its label-shuffle null (mean and central band) and n_perm, seed.
- `probe.csv`: shrinkage-LDA accuracy per layer per feature, with the shuffle null (mean, band,
  95th percentile) and chance; layer 0 is labelled "embeddings (lexical baseline)".
- `emotion_vectors.npz`: `vectors__<method>__<centre>` `[layer + 1, 4, d_model]` in
  `dataset.EMOTIONS` order (under centre "neutral" the neutral row is zero), plus `classes`.
- `subspaces.npz`: `basis__<method>` `[layer + 1, d_model, k]`: per layer, the top-k principal
  directions of the DIFFERENCES between the four raw class means (neutral included; for k = 3
  this is the span of the three neutral-centred emotion vectors), plus `singular_values__<method>`.
- `cosine_<method>_<centre>.png` (class pair x layer heatmaps: the cosine, and its null mean),
  `cosine_lines_<method>_<centre>.png` (the three emotion pairs vs layer, null band dashed),
  `probe.png` (accuracy vs layer with the null band and chance).
- `summary.json`: what `run_vectors` returns.

Positions: "sentence_end" reads each prompt's last real token; "token" the tokens of the record's
spans (emotion words; neutral: form-matched anchors); "token_delta" the change h[t] - h[t-1] at
those tokens. Centrings: see `jaxcirc.core.vectors`. The vectors and subspaces other phases read
(`emotion_vectors`, `emotion_subspaces`) are computed by `jaxcirc.core.vectors` and
`jaxcirc.core.subspace`; this runner only writes them.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from jaxcirc.core import probe, vectors
from jaxcirc.core.subspace import emotion_subspaces
from jaxcirc.core.vectors import emotion_class_vectors, method_inputs
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations, layer_names, sentence_end, span_mean
from jaxcirc.data.emotions import NEUTRAL_INDEX
from jaxcirc.infra import artifacts
from jaxcirc.report import plots

NAME = "vectors"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 1

PAIRS = (("gratitude", "anger"), ("gratitude", "apology"), ("anger", "apology"))
PROBE_FEATURES = ("sentence_end", "span_mean")


def _check_config(cfg) -> None:
    for m in cfg.methods:
        if m not in vectors.METHODS:
            raise ValueError(f"config.methods: {m!r} unknown; use some of {vectors.METHODS}")
    for c in cfg.centres:
        if c not in vectors.CENTRES:
            raise ValueError(f"config.centres: {c!r} unknown; use some of {vectors.CENTRES}")
    for f in cfg.probe_features:
        if f not in PROBE_FEATURES:
            raise ValueError(f"config.probe_features: {f!r} unknown; use some of {PROBE_FEATURES}")
    if not 1 <= cfg.subspace_k <= len(dataset.EMOTIONS) - 1:
        raise ValueError(
            f"config.subspace_k: {cfg.subspace_k}; the four class means span at most 3 dims, "
            "use 1..3"
        )


def _cosine_rows(acts: Activations, res: vectors.CosineResult, cfg, names) -> list[dict]:
    """cosines.csv rows of one method x centre: every layer x class pair (a < b)."""
    rows = []
    cls = res.class_names
    for li in range(res.matrix.shape[0]):
        for a in range(len(cls)):
            for b in range(a + 1, len(cls)):
                rows.append(
                    {
                        "model": acts.model_label,
                        "method": res.method,
                        "centre": res.centre,
                        "layer": li,
                        "layer_name": names[li],
                        "class_a": cls[a],
                        "class_b": cls[b],
                        "cosine": float(res.matrix[li, a, b]),
                        "null_mean": float(res.null_mean[li, a, b]),
                        "null_lo": float(res.null_lo[li, a, b]),
                        "null_hi": float(res.null_hi[li, a, b]),
                        "level": cfg.level,
                        "n_perm": cfg.n_perm,
                        "seed": cfg.seed,
                    }
                )
    return rows


def _cosine_result(acts: Activations, cfg, method: str, centre: str, summary):
    """`vectors.cosine_analysis` of one method x centre, or None (noted in the summary's
    "skipped") where the method has nothing to read."""
    x, tm = method_inputs(acts, method)
    try:
        return vectors.cosine_analysis(
            x,
            acts.labels,
            list(dataset.EMOTIONS),
            method,
            centre,
            tm,
            NEUTRAL_INDEX,
            n_perm=cfg.n_perm,
            seed=cfg.seed,
            level=cfg.level,
        )
    except ValueError as e:
        # e.g. token_delta when every span of a class starts the prompt (no h[t-1])
        msg = f"{method}/{centre} skipped: {e}"
        warnings.warn(msg, stacklevel=4)
        summary["skipped"].append(msg)
        return None


def _cosines(acts, cfg, out_dir, names, summary, files):
    rows = []
    vec_arrays = {}
    for method in cfg.methods:
        for centre in cfg.centres:
            res = _cosine_result(acts, cfg, method, centre, summary)
            if res is None:
                continue
            vec_arrays[f"vectors__{method}__{centre}"] = emotion_class_vectors(acts, method, centre)
            rows += _cosine_rows(acts, res, cfg, names)
            summary["cosines"].setdefault(method, {})[centre] = _cosine_headline(res)
            if cfg.plots:
                tag = f"{method}_{centre}"
                files[f"cosine_{tag}"] = _cosine_grid(acts, res, cfg, out_dir / f"cosine_{tag}.png")
                files[f"cosine_lines_{tag}"] = _cosine_lines(
                    acts, res, cfg, out_dir / f"cosine_lines_{tag}.png"
                )
    artifacts.write_csv(out_dir / "cosines.csv", rows)
    files["cosines"] = "cosines.csv"
    if vec_arrays:
        artifacts.write_npz(
            out_dir / "emotion_vectors.npz", classes=np.array(dataset.EMOTIONS), **vec_arrays
        )
        files["emotion_vectors"] = "emotion_vectors.npz"


def _pair_values(res, li_or_slice, a, b):
    i, j = res.class_names.index(a), res.class_names.index(b)
    out = {}
    for key, arr in (
        ("cosine", res.matrix),
        ("null_mean", res.null_mean),
        ("null_lo", res.null_lo),
        ("null_hi", res.null_hi),
    ):
        out[key] = float(np.mean(arr[li_or_slice, i, j]))
    finite = all(np.isfinite(v) for v in out.values())
    # None: a zero class vector (no difference at this layer) has no cosine
    out["outside_null_band"] = (
        not (out["null_lo"] <= out["cosine"] <= out["null_hi"]) if finite else None
    )
    return out


def _cosine_headline(res) -> dict:
    last = res.matrix.shape[0] - 1
    blocks = slice(1, last + 1)
    return {
        "position": {
            "sentence_end": "last real token",
            "token": "span tokens",
            "token_delta": "h[t] - h[t-1] at span tokens",
        }[res.method],
        "last_layer": {
            "layer": last,
            "pairs": {f"{a}-{b}": _pair_values(res, last, a, b) for a, b in PAIRS},
        },
        "mean_over_layers": {
            "layers": f"1..{last} (block outputs; layer 0 = embeddings excluded)",
            "null_band_note": "mean over layers of the per-layer band bounds, not the band of "
            "the layer mean",
            "pairs": {f"{a}-{b}": _pair_values(res, blocks, a, b) for a, b in PAIRS},
        },
        "n_perm": res.n_perm,
        "seed": res.seed,
    }


def _cosine_grid(acts, res, cfg, path) -> str:
    """Two stacked heatmaps, rows = class pairs, columns = layers: the cosine, and the mean of
    its label-shuffle null (same colour scale)."""
    names = res.class_names
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    rows = [f"{names[i]}-{names[j]}" for i, j in pairs]
    take = lambda m: np.stack([m[:, i, j] for i, j in pairs])  # [pair, layer]
    fig = plots.heatmap_grid(
        {"cosine": take(res.matrix), "label-shuffle null mean": take(res.null_mean)},
        rows,
        list(range(res.matrix.shape[0])),
        title=f"{acts.model_label}: {res.method} vectors, centre={res.centre}, per layer "
        f"(0 = embeddings); null n_perm={res.n_perm}, seed={res.seed}",
        cbar_label="cosine",
        vmin=-1.0,
        vmax=1.0,
        ncols=1,
    )
    artifacts.save_figure(path, fig)
    return path.name


def _band(mean, lo, hi):
    # The line is the null mean; a very skewed null can put its mean outside the percentile
    # band, so clip it for drawing (the CSV keeps the exact values).
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.clip(np.asarray(mean, float), lo, hi), lo, hi


def _cosine_lines(acts, res, cfg, path) -> str:
    x = np.arange(res.matrix.shape[0])
    series, dashed = {}, []
    for a, b in PAIRS:
        i, j = res.class_names.index(a), res.class_names.index(b)
        series[f"{a}-{b}"] = (res.matrix[:, i, j], None, None)
        name = f"{a}-{b} null"
        series[name] = _band(res.null_mean[:, i, j], res.null_lo[:, i, j], res.null_hi[:, i, j])
        dashed.append(name)
    fig = plots.line_with_band(
        x,
        series,
        xlabel="layer (0 = embeddings, lexical baseline)",
        ylabel="cosine",
        title=f"{acts.model_label}: {res.method}, centre={res.centre}; dashed: label-shuffle "
        f"null, {int(cfg.level * 100)}% band (n_perm={res.n_perm}, seed={res.seed})",
        dashed=dashed,
    )
    artifacts.save_figure(path, fig)
    return path.name


def _probe_rows(acts: Activations, feature: str, res, null, band, names, cfg) -> list[dict]:
    """probe.csv rows of one feature, one per layer; band = (lo, hi) `[layer + 1]` of the null."""
    lo, hi = band
    return [
        {
            "model": acts.model_label,
            "feature": feature,
            "layer": li,
            "layer_name": names[li],
            "accuracy": float(res.accuracy[li]),
            "null_mean": float(null.mean[li]),
            "null_lo": float(lo[li]),
            "null_hi": float(hi[li]),
            "null_p95": float(null.p95[li]),
            "chance": res.chance,
            "n": res.n,
            "n_folds": res.n_folds,
            "n_perm": null.n_perm,
            "shrinkage_used": float(res.shrinkage_used[li]),
            "seed": cfg.seed,
        }
        for li in range(res.accuracy.shape[0])
    ]


def _probe_headline(res, null, names, cfg) -> dict:
    """The summary's figures of one feature: the best block layer (1..L) beside layer 0."""
    blocks = res.accuracy[1:]
    best = int(np.argmax(blocks)) + 1 if blocks.size else 0
    return {
        "best_layer": best,
        "best_layer_name": names[best],
        "accuracy": float(res.accuracy[best]),
        "null_mean": float(null.mean[best]),
        "null_p95": float(null.p95[best]),
        "chance": res.chance,
        "layer0_lexical_baseline": float(res.accuracy[0]),
        "best_over": "layers 1..L (block outputs); layer 0 reported separately",
        "n": res.n,
        "n_folds": res.n_folds,
        "n_perm": null.n_perm,
        "seed": cfg.seed,
    }


def _probe_plot(acts: Activations, cfg, series: dict, dashed: list, path: Path) -> str:
    x_layers = np.arange(acts.n_layers_plus_one)
    chance = 1.0 / len(np.unique(acts.labels))
    series["chance"] = (np.full(x_layers.shape, chance), None, None)
    dashed.append("chance")
    fig = plots.line_with_band(
        x_layers,
        series,
        xlabel="layer (0 = embeddings, lexical baseline)",
        ylabel=f"{cfg.probe_folds}-fold shrinkage-LDA accuracy",
        title=f"{acts.model_label}: emotion probe per layer; dashed: label-shuffle null "
        f"{int(cfg.level * 100)}% band (n_perm={cfg.probe_n_perm}, seed={cfg.seed})",
        dashed=dashed,
        zero_line=False,
    )
    artifacts.save_figure(path, fig)
    return path.name


def _probe(acts, cfg, out_dir, names, summary, files):
    rows, series, dashed = [], {}, []
    alpha = 100.0 * (1.0 - cfg.level) / 2.0
    for feature in cfg.probe_features:
        x = sentence_end(acts) if feature == "sentence_end" else span_mean(acts)
        res = probe.probe_accuracy(
            x, acts.labels, cfg.probe_folds, cfg.seed, cfg.probe_shrinkage, layers=None
        )
        null = probe.probe_shuffle_null(
            x, acts.labels, cfg.probe_folds, cfg.probe_n_perm, cfg.seed, cfg.probe_shrinkage
        )
        lo, hi = np.percentile(null.samples, [alpha, 100.0 - alpha], axis=0)
        rows += _probe_rows(acts, feature, res, null, (lo, hi), names, cfg)
        summary["probe"][feature] = _probe_headline(res, null, names, cfg)
        series[f"{feature} accuracy"] = (res.accuracy, None, None)
        series[f"{feature} shuffle null"] = _band(null.mean, lo, hi)
        dashed.append(f"{feature} shuffle null")
    artifacts.write_csv(out_dir / "probe.csv", rows)
    files["probe"] = "probe.csv"
    if cfg.plots:
        files["probe_plot"] = _probe_plot(acts, cfg, series, dashed, out_dir / "probe.png")


def _subspaces(acts, cfg, out_dir, summary, files):
    arrays = {}
    notes = {}
    for method in cfg.methods:
        try:
            basis, sv, k_used = emotion_subspaces(acts, method, cfg.subspace_k)
        except ValueError as e:
            summary["skipped"].append(f"subspace {method} skipped: {e}")
            continue
        arrays[f"basis__{method}"] = basis
        arrays[f"singular_values__{method}"] = sv
        arrays[f"k_used__{method}"] = k_used
        short = np.flatnonzero(k_used < cfg.subspace_k)
        if short.size:
            notes[method] = {int(li): int(k_used[li]) for li in short}
    if arrays:
        artifacts.write_npz(out_dir / "subspaces.npz", **arrays)
        files["subspaces"] = "subspaces.npz"
    summary["subspace"] = {
        "k": cfg.subspace_k,
        "definition": "top-k principal directions of the four raw class means minus their mean "
        "(neutral included; k=3 spans the neutral-centred emotion vectors), per layer",
        "layers_with_fewer_dims": notes,
    }


def run_vectors(acts: Activations, cfg, out_dir: str | Path) -> dict:
    """Cosines (+ null), probes (+ null), emotion vectors and subspaces for one model's
    activations; writes the files listed in the module docstring and returns the summary:

    {"model", "n", "n_per_class", "prepend_bos", "layers", "cosines": {method: {centre:
    {"last_layer": {...}, "mean_over_layers": {...}}}}, "probe": {feature: {...}},
    "subspace": {...}, "skipped": [...], "files": {name: filename}, "config": {...}}
    """
    _check_config(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    present = set(np.unique(acts.labels).tolist())
    if present != set(range(len(dataset.EMOTIONS))):
        missing = [e for i, e in enumerate(dataset.EMOTIONS) if i not in present]
        raise ValueError(f"acts.labels: no prompts of {missing}; extract all four classes")
    names = layer_names(acts.n_layers_plus_one)
    summary: dict = {
        "model": acts.model_label,
        "n": acts.n,
        "n_per_class": {e: int(np.sum(acts.labels == i)) for i, e in enumerate(dataset.EMOTIONS)},
        "prepend_bos": acts.prepend_bos,
        "layers": acts.n_layers_plus_one,
        "layer_axis": "0 = embeddings (lexical baseline); l = after block l-1",
        "cosines": {},
        "probe": {},
        "skipped": [],
        "seed": cfg.seed,
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg),
    }
    files: dict[str, str] = {}
    _cosines(acts, cfg, out_dir, names, summary, files)
    _probe(acts, cfg, out_dir, names, summary, files)
    _subspaces(acts, cfg, out_dir, summary, files)
    summary["files"] = {**files, "summary": "summary.json"}
    artifacts.write_json(out_dir / "summary.json", summary)
    return summary


@dataclasses.dataclass(frozen=True)
class Inputs:
    """acts: one model's activations (phase 2)."""

    acts: Activations


def run(inputs: Inputs, cfg, out_dir: str | Path) -> dict:
    """The phase behind the runner interface: `run_vectors(inputs.acts, cfg, out_dir)`."""
    return run_vectors(inputs.acts, cfg, out_dir)
