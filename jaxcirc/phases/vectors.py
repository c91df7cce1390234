"""Phases 3 and 3.5: emotion vectors per layer, their cosines with the label-shuffle null, linear
probes with theirs, and per-layer emotion subspaces; one model's activations in, files out.

    summary = run_vectors(acts, configs.sections.vectors(), out_dir)

Files written to out_dir (every number says its method, centring, layer and seed):

- `cosines.csv`: long format, one row per method x centring x layer x class pair (a < b), the
  cosine beside its label-shuffle null (mean and central band), its prompt-bootstrap CI
  (ci_lo, ci_hi; each class resampled within itself, n_boot) and n_perm, seed.
- `probe.csv`: shrinkage-LDA accuracy per layer per feature with its prompt-bootstrap CI, the
  shuffle null (mean, band, 95th percentile), chance, and layer 0's accuracy beside every layer
  (`layer0_lexical_baseline`); layer 0 is labelled "embeddings (lexical baseline)".
- `emotion_vectors.npz`: `vectors__<method>__<centre>` `[layer + 1, 4, d_model]` in
  `dataset.EMOTIONS` order (under centre "neutral" the neutral row is zero), plus `classes`.
- `subspaces.npz`: `basis__<method>` `[layer + 1, d_model, k]`: per layer, the top-k principal
  directions of the DIFFERENCES between the four raw class means (neutral included; for k = 3
  this is the span of the three neutral-centred emotion vectors), plus `singular_values__<method>`.
- `cosine_<method>_<centre>.png` (class pair x layer heatmaps: the cosine, and its null mean),
  `cosine_lines_<method>_<centre>.png` (the three emotion pairs vs layer, null band dashed),
  `probe.png` (accuracy vs layer with the null band and chance).
- `summary.json`: what `run_vectors` returns.

The summary fields the report's opening conclusions read (every figure with its layer, n, CI and
null; nothing here is a verdict):

- `headline.token_vs_sentence_end` ("token vectors extract emotion better than sentence-end
  ones"): `figure` = probe accuracy on span-token means minus on last tokens, mean over block
  layers 1..L (no layer is chosen), `ci` (prompt bootstrap, probes fixed), `null_band` and
  `p_value` (paired sign flip: the two features' per-prompt hits swapped at random), `layers`,
  `per_layer`, `n`, `n_boot`, `n_perm`, `level`; `layer0` the same difference at the embeddings
  (lexical baseline); `accuracy_mean_over_blocks` of each feature; `cosines` {method: {centre:
  {last_layer, layer0}}} with each pair's cosine, null band and CI. `figure` is None (with a
  `reason`) when either probe feature was not run.
- `cosines[method][centre]`: `last_layer` (layer named; the study never named one), `layer0`
  (the embeddings: the lexical baseline the token-method cosines are read against),
  `mean_over_layers`; `best_layer` None (no best layer is named for cosines).
- `probe[feature]`: `best_layer` (argmax over blocks 1..L), `accuracy`, `ci`, `null_p95` (at
  that layer), `max_null` {mean, lo, hi, p_value, p_floor, n} (the max over the same layers of each
  shuffle draw: the selection-aware null), `beats_max_null`, `argmax_shares` {layer: share of
  bootstrap resamples picking it}, `layer0_lexical_baseline`, `chance`, `n`, `n_perm`, `n_boot`.

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
from jaxcirc.core.stats import percentile_band
from jaxcirc.core.subspace import emotion_subspaces
from jaxcirc.core.vectors import emotion_class_vectors, method_inputs
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations, layer_names, sentence_end, span_mean
from jaxcirc.data.emotions import NEUTRAL_INDEX
from jaxcirc.infra import artifacts
from jaxcirc.report import plots

NAME = "vectors"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 4  # 3: the probe null stratifies its folds on the permuted labels; 4: near-ties (stats.TIE_RTOL)

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
                        "ci_lo": float(res.ci_lo[li, a, b]),
                        "ci_hi": float(res.ci_hi[li, a, b]),
                        "level": cfg.level,
                        "n_perm": cfg.n_perm,
                        "n_boot": res.n_boot,
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
            n_boot=cfg.n_boot,
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


def _pair_values(res, li_or_slice, a, b, with_ci: bool = True):
    """One pair's cosine, null band (and CI) at a layer, or their means over a layer slice."""
    i, j = res.class_names.index(a), res.class_names.index(b)
    out = {}
    arrays = [
        ("cosine", res.matrix),
        ("null_mean", res.null_mean),
        ("null_lo", res.null_lo),
        ("null_hi", res.null_hi),
    ]
    if with_ci and res.ci_lo is not None:
        arrays += [("ci_lo", res.ci_lo), ("ci_hi", res.ci_hi)]
    for key, arr in arrays:
        out[key] = float(np.mean(arr[li_or_slice, i, j]))
    finite = all(np.isfinite(v) for v in out.values())
    # None: a zero class vector (no difference at this layer) has no cosine
    out["outside_null_band"] = (
        not (out["null_lo"] <= out["cosine"] <= out["null_hi"]) if finite else None
    )
    return out


def _cosine_headline(res) -> dict:
    """The summary's cosines of one method x centre: at the last layer (named; the study never
    said which layer its cosines are from), at layer 0 (the embeddings: the lexical baseline the
    same cosine has before any block), and the mean over the block layers."""
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
            "layer_note": "the last layer (final residual, before the final layer norm); the "
            "study does not say which layer its cosines are from",
            "pairs": {f"{a}-{b}": _pair_values(res, last, a, b) for a, b in PAIRS},
        },
        "layer0": {
            "layer": 0,
            "layer_note": "embeddings (token + position): the lexical baseline",
            "pairs": {f"{a}-{b}": _pair_values(res, 0, a, b) for a, b in PAIRS},
        },
        "mean_over_layers": {
            "layers": f"1..{last} (block outputs; layer 0 = embeddings excluded)",
            "null_band_note": "mean over layers of the per-layer band bounds, not the band of "
            "the layer mean; no CI for the mean",
            "pairs": {f"{a}-{b}": _pair_values(res, blocks, a, b, False) for a, b in PAIRS},
        },
        "best_layer": None,
        "best_layer_note": "no best layer is named for cosines",
        "n_perm": res.n_perm,
        "n_boot": res.n_boot,
        "level": res.level,
        "ci_what": f"prompt bootstrap within each class, {res.n_boot} resamples, seed {res.seed}",
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


def _probe_rows(acts: Activations, feature: str, res, null, bands, names, cfg) -> list[dict]:
    """probe.csv rows of one feature, one per layer; bands = ((lo, hi) of the null, (lo, hi) of
    the accuracy's prompt-bootstrap CI), each `[layer + 1]`."""
    (lo, hi), (ci_lo, ci_hi) = bands
    return [
        {
            "model": acts.model_label,
            "feature": feature,
            "layer": li,
            "layer_name": names[li],
            "accuracy": float(res.accuracy[li]),
            "ci_lo": float(ci_lo[li]),
            "ci_hi": float(ci_hi[li]),
            "layer0_lexical_baseline": float(res.accuracy[0]),
            "null_mean": float(null.mean[li]),
            "null_lo": float(lo[li]),
            "null_hi": float(hi[li]),
            "null_p95": float(null.p95[li]),
            "chance": res.chance,
            "n": res.n,
            "n_folds": res.n_folds,
            "n_perm": null.n_perm,
            "n_boot": cfg.n_boot,
            "shrinkage_used": float(res.shrinkage_used[li]),
            "seed": cfg.seed,
        }
        for li in range(res.accuracy.shape[0])
    ]


def _probe_headline(res, null, labels, names, cfg) -> dict:
    """The summary's figures of one feature: the best block layer (1..L) with its CI, the
    selection-aware null (the max over the same layers of each shuffle draw) and the share of
    bootstrap resamples that pick each layer, beside layer 0 (the lexical baseline)."""
    cand = list(range(1, res.accuracy.shape[0])) or [0]
    b = probe.best_layer(res, null, labels, cand, cfg.n_boot, cfg.seed, cfg.level)
    best = b.layer
    mx, (mlo, mhi) = b.vs_max_null, b.max_null_band
    return {
        "best_layer": best,
        "best_layer_name": names[best],
        "accuracy": b.accuracy,
        "ci": list(b.ci),
        "null_mean": float(null.mean[best]),
        "null_p95": float(null.p95[best]),
        "max_null": {"mean": float(mx.null_max.mean()), "lo": mlo, "hi": mhi, "p_value": mx.p}
        | {
            "p_floor": mx.p_floor,
            "n": mx.n,
            "what": "max over the same layers of each label-shuffle draw's probe accuracy",
        },
        "beats_max_null": bool(b.accuracy > mhi),
        "argmax_shares": {str(k): v for k, v in b.argmax_shares.items()},
        "chance": res.chance,
        "layer0_lexical_baseline": float(res.accuracy[0]),
        "best_over": "layers 1..L (block outputs); layer 0 reported separately",
        "n": res.n,
        "n_folds": res.n_folds,
        "n_perm": null.n_perm,
        "n_boot": cfg.n_boot,
        "level": cfg.level,
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


def _probe(acts, cfg, out_dir, names, summary, files) -> dict:
    """probe.csv, probe.png and summary["probe"]; returns {feature: ProbeResult}."""
    rows, series, dashed, results = [], {}, [], {}
    for feature in cfg.probe_features:
        x = sentence_end(acts) if feature == "sentence_end" else span_mean(acts)
        res = probe.probe_accuracy(
            x, acts.labels, cfg.probe_folds, cfg.seed, cfg.probe_shrinkage, layers=None
        )
        null = probe.probe_shuffle_null(
            x, acts.labels, cfg.probe_folds, cfg.probe_n_perm, cfg.seed, cfg.probe_shrinkage
        )
        band = percentile_band(null.samples, cfg.level)
        ci = percentile_band(
            probe.accuracy_samples(res, acts.labels, cfg.n_boot, cfg.seed), cfg.level
        )
        rows += _probe_rows(acts, feature, res, null, (band, ci), names, cfg)
        summary["probe"][feature] = _probe_headline(res, null, acts.labels, names, cfg)
        series[f"{feature} accuracy"] = (res.accuracy, None, None)
        series[f"{feature} shuffle null"] = _band(null.mean, *band)
        dashed.append(f"{feature} shuffle null")
        results[feature] = res
    artifacts.write_csv(out_dir / "probe.csv", rows)
    files["probe"] = "probe.csv"
    if cfg.plots:
        files["probe_plot"] = _probe_plot(acts, cfg, series, dashed, out_dir / "probe.png")
    return results


def _token_vs_sentence_end(acts, cfg, results: dict, summary) -> dict:
    """The headline "do token vectors extract emotion better than sentence-end ones?": probe
    accuracy on span_mean minus on sentence_end features (same prompts and folds), mean over
    the block layers, with its CI and paired null; the cosines of both methods beside it."""
    out: dict = {
        "question": "do token (span) features separate the four classes better than "
        "sentence-end ones?",
        "measure": f"{cfg.probe_folds}-fold shrinkage-LDA probe accuracy (4 classes) on the "
        "span-token mean minus on the last token, mean over block layers 1..L (no layer "
        "chosen)",
    }
    if not {"sentence_end", "span_mean"} <= set(results):
        return out | {"figure": None, "reason": "needs probe_features sentence_end and span_mean"}
    tok, end = results["span_mean"], results["sentence_end"]
    last = tok.accuracy.shape[0] - 1
    blocks = list(range(1, last + 1)) or [0]
    c = probe.compare_features(
        tok, end, acts.labels, blocks, cfg.n_boot, cfg.n_boot, cfg.seed, cfg.level
    )
    c0 = probe.compare_features(
        tok, end, acts.labels, [0], cfg.n_boot, cfg.n_boot, cfg.seed, cfg.level
    )
    return out | {
        "figure": c.figure,
        "ci": list(c.ci),
        "null_band": [c.null_lo, c.null_hi],
        "null_what": "paired sign flip: each prompt's span and last-token hits swapped at random",
        "p_value": c.p_value,
        "layers": c.layers,
        "per_layer": c.per_layer,
        "layer0": {"figure": c0.figure, "ci": list(c0.ci), "null_band": [c0.null_lo, c0.null_hi]}
        | {"note": "layer 0 = embeddings: the same difference before any block (lexical)"},
        "accuracy_mean_over_blocks": {
            "span_mean": float(tok.hits[blocks].mean()),
            "sentence_end": float(end.hits[blocks].mean()),
        },
        "cosines": _headline_cosines(summary),
        "n": c.n,
        "n_boot": c.n_boot,
        "n_perm": c.n_perm,
        "level": c.level,
        "seed": c.seed,
    }


def _headline_cosines(summary) -> dict:
    """{method: {centre: the last-layer and layer-0 emotion-pair cosines}} for the headline."""
    return {
        method: {
            centre: {"last_layer": h["last_layer"], "layer0": h["layer0"]}
            for centre, h in by_centre.items()
        }
        for method, by_centre in summary["cosines"].items()
    }


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
    {"last_layer": {...}, "layer0": {...}, "mean_over_layers": {...}}}}, "probe": {feature:
    {...}}, "headline": {"token_vs_sentence_end": {...}}, "subspace": {...}, "skipped": [...],
    "files": {name: filename}, "config": {...}} (fields: module docstring)
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
    results = _probe(acts, cfg, out_dir, names, summary, files)
    summary["headline"] = {
        "token_vs_sentence_end": _token_vs_sentence_end(acts, cfg, results, summary)
    }
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
