"""Phase 6: does model B hold model A's emotion subspace up to a change of basis? Fit maps A -> B
on NEUTRAL activations only, carry A's emotion subspace through them, compare with B's; every
figure beside its null, its CI and (when given) a random-init control
(`jaxcirc.core.alignment.align`; rows paired by `jaxcirc.core.pairing`).

    summary = run_alignment({"gpt2": acts_gpt2, "pythia": acts_pythia}, configs.sections.alignment(), out)
    summary = run(Inputs(acts, controls={"gpt2": [acts_gpt2_random_init]}), section, out)

Design decisions (each is also written into every output row or the summary):

- Pairing rows across models. A per-token pairing is valid only when both models split every
  prompt into the same tokens: then token t of prompt i is the same text in both, and the map is
  fit on EVERY real token of the neutral fit prompts (BOS excluded: with a prepended BOS its
  residual is the same in every prompt and adds one point many times). GPT-2 and GPT-Neo share a
  tokenizer; Pythia's differs. Otherwise positions do not correspond and rows are paired per
  PROMPT, two ways, each reported separately: "sentence_end" (last real token) and "prompt_mean"
  (mean over the prompt's real tokens, BOS excluded). Per-prompt pairing has far fewer rows
  (n_fit = number of neutral fit prompts), so n <= d and the map can interpolate: look at the
  null and the warning. Column `pairing` says which one a row used.
- Nulls move WHOLE PROMPTS: the shuffled-pairing null refits the maps with the rows of each fit
  prompt of B sent to the same positions of another fit prompt of the same length
  (`alignment.prompt_permutations`); the tokens of one prompt are not exchangeable with
  another's. Columns `null_unit`, `null_strata`, `null_fixed_prompts` (prompts alone in their
  length, which never move and only make the null harder to beat).
- Random-init control. Two networks fed the same tokens both encode the tokens, so any true
  pairing beats a shuffled one, even for a randomly initialised B. `Inputs.controls` gives, per
  model, the activations of random-init copies of it (same architecture and tokenizer, same
  prompts); every figure is then recomputed with B replaced by each copy (its own emotion
  basis from its own class means, the same rows): columns `random_init_*`. Only a figure above
  its random-init control says the TRAINED model shares the structure. Without controls these
  columns are empty and the summary says that no random-init control was run.
- CIs: whole-prompt bootstrap (each class's prompts drawn with replacement within the class;
  bases and maps refit per resample; `alignment.bootstrap_overlaps`) for the raw overlap, the
  overlap after the linear map (first ridge) and after Procrustes, and for the difference from
  the random-init control. Further ridges get no CI.
- Split: neutral prompts (never the emotional ones) are split into fit / held-out BY PROMPT with
  `test_fraction` and `seed`; all tokens of a prompt go to the same side. The split is the same
  for every pair and layer.
- Layers: models of different depth are compared at the same relative depth: layer l of A
  (0 = embeddings ... L_A = resid_post) goes with layer round(l * L_B / L_A) of B. Columns
  `layer_a`, `layer_b`, `depth`. No best layer is named: the summary gives the last compared
  layer and the mean over the compared block layers (its null and CI taken over the same
  layers draw by draw).
- Emotion subspace: per model and layer, the top-k principal directions of the differences
  between the four raw class means (`jaxcirc.core.subspace.emotion_subspaces`, neutral included; k = 3
  spans the three neutral-centred emotion vectors), class means read by `subspace_from`
  ("sentence_end" or "token"), over ALL prompts of the set. The map never saw emotional prompts.
- Ridge strength is relative: ridge = ridge_rel * ||X_A,c||_F^2 / d_A (the mean eigenvalue of the
  centred fit covariance times n), so one value means the same shrinkage at every layer whatever
  the stream's scale. Both are in each row. The first value gets the full report (linear and
  Procrustes maps, CKA, CIs, controls); each further value a linear-map row with its own
  shuffled-pairing null.

The summary field the report's opening conclusion "emotion subspaces agree across models up to a
change of basis" reads: `headline.subspaces_agree_up_to_change_of_basis.pairs["A->B"][pairing]`
with `figure` (overlap after the linear map at the first ridge, mean over the compared block
layers), `ci`, `null_band` / `null_mean` (shuffled whole-prompt pairings, the layer mean taken
per draw), `above_null`, `random_init` ({figure, per_draw, minus_random_init, minus_random_init_ci,
draws, above_random_init}, or None with `random_init_note`), `procrustes` (the same for the
orthogonal map), `raw` ({figure, ci, random_expectation}: before any map), `r2_test` and its
null band, `layers`, `n_fit_rows`, `n_fit_prompts`, `d_a`, `n_over_d`, `k`, `n_perm`, `n_boot`,
`level`, `seed`, `null_unit`; `best_layer` is None (none is named). Nothing there is a verdict.

Files: `alignment.csv` (one row per ordered pair x pairing x layer x method[/ridge]),
`alignment_summary.json` (what run_alignment returns), `overlap__<A>__<B>__<pairing>.png`
(subspace overlap per layer: raw, after each map with its CI, nulls dashed with their band, the
random-init control) and `fit__<A>__<B>__<pairing>.png` (held-out R^2 and CKA per layer with
their nulls).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from pathlib import Path

import numpy as np

from jaxcirc.core import alignment
from jaxcirc.core.pairing import features, matched_layers, pairings, row_prompts, split_neutral
from jaxcirc.core.stats import percentile_band, summarise_null
from jaxcirc.core.subspace import emotion_subspaces
from jaxcirc.core.vectors import method_inputs, prompt_sums
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations, layer_names, same_tokenization
from jaxcirc.infra import artifacts
from jaxcirc.report import plots

NAME = "alignment"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 3  # 3: Procrustes on the span its data determine (RANK_RTOL); near-ties

FIT_ON = ("all_tokens", "sentence_end", "prompt_mean")
PAIRING_TEXT = {
    "token": "per token: every real token of the neutral prompts (identical tokenisation; BOS "
    "excluded)",
    "sentence_end": "per prompt: last real token of each neutral prompt",
    "prompt_mean": "per prompt: mean over the real tokens of each neutral prompt (BOS excluded)",
}
NO_CONTROL = (
    "no random-init control was run (alignment's Inputs.controls was empty): the figure is not "
    "compared with a randomly initialised network fed the same tokens, which also beats a "
    "shuffled pairing"
)


def _check_config(cfg) -> None:
    if not 1 <= cfg.k <= len(dataset.EMOTIONS) - 1:
        raise ValueError(f"config.k: {cfg.k}; the four class means span at most 3 dims, use 1..3")
    if cfg.subspace_from not in ("sentence_end", "token"):
        raise ValueError(f"config.subspace_from: {cfg.subspace_from!r}; use sentence_end or token")
    if cfg.fit_on not in FIT_ON:
        raise ValueError(f"config.fit_on: {cfg.fit_on!r}; use one of {FIT_ON}")
    if not cfg.ridges_rel or any(r < 0 for r in cfg.ridges_rel):
        raise ValueError(f"config.ridges_rel: {cfg.ridges_rel}; give one or more values >= 0")
    if not 0 < cfg.test_fraction < 1:
        raise ValueError(f"config.test_fraction: {cfg.test_fraction}; use a value in (0, 1)")
    if cfg.layer_stride < 1:
        raise ValueError(f"config.layer_stride: {cfg.layer_stride}; use an int >= 1")
    if cfg.n_boot < 10:
        raise ValueError(f"config.n_boot: {cfg.n_boot}; use >= 10 (200 or more for a 95% CI)")


def _constant(x) -> bool:
    """All rows equal up to float32 rounding."""
    spread = np.abs(x - x.mean(axis=0)).max(initial=0.0)
    return bool(spread <= 1e-6 * max(np.abs(x).max(initial=0.0), 1e-30))


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "model"


def _check_inputs(acts_by_model, controls) -> None:
    if len(acts_by_model) < 2:
        raise ValueError(
            f"acts_by_model: {len(acts_by_model)} model(s); alignment needs two or more"
        )
    items = list(acts_by_model.items())
    ref_label, ref = items[0]
    for label, acts in items[1:]:
        if acts.texts != ref.texts or not np.array_equal(acts.labels, ref.labels):
            raise ValueError(
                f"acts_by_model: {label!r} and {ref_label!r} hold different prompts; extract "
                "the same records in the same order for every model"
            )
    safe = [_safe(k) for k in acts_by_model]
    if len(set(safe)) != len(safe):
        raise ValueError(f"acts_by_model: labels {list(acts_by_model)} collide as file names")
    for label, copies in controls.items():
        if label not in acts_by_model:
            raise ValueError(f"controls: {label!r} is not one of the models {list(acts_by_model)}")
        for c in copies:
            if not same_tokenization(c, acts_by_model[label]):
                raise ValueError(
                    f"controls[{label!r}]: a random-init copy must read the same prompts in the "
                    "same tokens as the model (same tokenizer, same records, same BOS choice)"
                )


def _band(nb) -> dict:
    return {"null_mean": nb.mean, "null_lo": nb.lo, "null_hi": nb.hi}


def _notes(n: int, d: int, value: float, band, name: str) -> list[str]:
    out = []
    if n <= d:
        out.append(f"n={n} <= d={d}: a full-rank map can fit almost anything")
    if value <= band.hi:
        out.append(f"overlap after {name} map {value:.3f} inside the shuffled-pairing null band")
    return out


@dataclasses.dataclass(frozen=True)
class _Side:
    """One model (or a random-init copy) as every layer pair reads it: its activations, its
    emotion bases per layer (`[d_model, k_used]`), and the per-prompt sums `[layer + 1, n, d]`
    and counts `[n]` whose class means define those bases (for the bootstrap)."""

    acts: Activations
    bases: list[np.ndarray]
    sums: np.ndarray
    counts: np.ndarray


def _side(acts: Activations, cfg) -> _Side:
    basis, _, k_used = emotion_subspaces(acts, cfg.subspace_from, cfg.k)
    sums, counts = prompt_sums(cfg.subspace_from, *method_inputs(acts, cfg.subspace_from))
    bases = [basis[li, :, :kk] for li, kk in enumerate(k_used)]
    return _Side(acts, bases, sums, counts)


@dataclasses.dataclass(frozen=True)
class _LayerPair:
    """One compared layer of A and B: fit rows xa `[n, dA]`, xb `[n, dB]`, held-out rows xat,
    xbt, each model's emotion basis qa `[dA, k]`, qb `[dB, k]`, the prompt of each fit row
    `[n]` (groups), B's random-init copies as (xb, xbt, qb) triples, and the bootstrap's
    inputs."""

    xa: np.ndarray
    xb: np.ndarray
    xat: np.ndarray
    xbt: np.ndarray
    qa: np.ndarray
    qb: np.ndarray
    groups: np.ndarray
    controls: list[tuple[np.ndarray, np.ndarray, np.ndarray]]
    boot: alignment.BootData


def _shared(ctx: dict, rep: alignment.AlignmentReport, cfg) -> dict:
    """The columns every method/ridge row of one layer pair shares."""
    design = rep.null_design
    return {
        **ctx,
        "n_fit": rep.n_fit,
        "n_test": rep.n_test,
        "dA": rep.dA,
        "dB": rep.dB,
        "k_a": rep.k_a,
        "k_b": rep.k_b,
        "n_over_d": rep.n_over_d,
        "overlap_raw": rep.overlap_raw,
        "overlap_random_expectation": rep.overlap_random_expectation,
        "overlap_random_lo": rep.overlap_random_null.lo if rep.overlap_random_null else None,
        "overlap_random_hi": rep.overlap_random_null.hi if rep.overlap_random_null else None,
        "cka_fit": rep.cka_fit,
        "cka_null_mean": rep.cka_fit_null.mean,
        "cka_null_lo": rep.cka_fit_null.lo,
        "cka_null_hi": rep.cka_fit_null.hi,
        "cka_pvalue": rep.cka_fit_pvalue,
        "null_unit": design["unit"],
        "null_strata": design["strata"],
        "null_fixed_prompts": design["fixed_prompts"],
        "n_perm": cfg.n_perm,
        "n_boot": cfg.n_boot,
        "level": cfg.level,
        "seed": cfg.seed,
    }


def _method_row(shared: dict, rep, method: str, ridge: tuple) -> dict:
    """The row of `align`'s report for method "linear" (at ridge = (ridge_rel, ridge)) or
    "procrustes"."""
    lin = method == "linear"
    ov = rep.overlap_linear if lin else rep.overlap_procrustes
    ov_null = rep.overlap_linear_null if lin else rep.overlap_procrustes_null
    return {
        **shared,
        "method": method,
        "ridge_rel": ridge[0] if lin else None,
        "ridge": ridge[1] if lin else None,
        "overlap_mapped": ov,
        **{f"overlap_mapped_{k}": v for k, v in _band(ov_null).items()},
        "delta_cos2": rep.delta_cos2_linear if lin else rep.delta_cos2_procrustes,
        "delta_angle_rad": rep.delta_angle_rad_linear if lin else rep.delta_angle_rad_procrustes,
        "r2_fit": rep.r2_fit_linear if lin else None,
        "r2_test": rep.r2_test_linear if lin else rep.r2_test_procrustes,
        **{
            f"r2_test_{k}": v
            for k, v in _band(
                rep.r2_test_linear_null if lin else rep.r2_test_procrustes_null
            ).items()
        },
        "procrustes_scale": None if lin else rep.procrustes_scale,
        "warnings": "; ".join(_notes(rep.n_fit, rep.dA, ov, ov_null, method)),
    }


def _ridge_row(shared: dict, lp: _LayerPair, rep, ridge: tuple[float, float], cfg):
    """A linear-map row at a further ridge = (ridge_rel, ridge), with its own shuffled null;
    returns (row, its overlap null samples `[n_perm]`)."""
    r_rel, r = ridge
    lin = alignment.fit_linear(lp.xa, lp.xb, r)
    ov = alignment.mapped_subspace_overlap(lin, lp.qa, lp.qb)
    ch = alignment.angle_improvement(lin, lp.qa, lp.qb) if rep.dA == rep.dB else None
    settings = alignment.AlignSettings(ridge=r, n_perm=cfg.n_perm, seed=cfg.seed, level=cfg.level)
    samples = alignment.shuffled_pairing_samples(
        lp.xa, lp.xb, lp.xat, lp.xbt, lp.qa, lp.qb, settings, lp.groups, procrustes=False
    )
    nulls = {
        k: summarise_null(v, cfg.seed, cfg.level, f"{k}, shuffled whole prompts")
        for k, v in samples.items()
    }
    row = {
        **shared,
        "method": "linear",
        "ridge_rel": r_rel,
        "ridge": r,
        "overlap_mapped": ov,
        **{f"overlap_mapped_{k}": v for k, v in _band(nulls["overlap_linear"]).items()},
        "delta_cos2": ch.delta_cos2 if ch else None,
        "delta_angle_rad": ch.delta_angle_rad if ch else None,
        "r2_fit": alignment.r2(lin, lp.xa, lp.xb),
        "r2_test": alignment.r2(lin, lp.xat, lp.xbt),
        **{f"r2_test_{k}": v for k, v in _band(nulls["r2_linear"]).items()},
        "procrustes_scale": None,
        "warnings": "; ".join(_notes(rep.n_fit, rep.dA, ov, nulls["overlap_linear"], "linear")),
    }
    return row, samples["overlap_linear"]


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


def _extra_columns(row: dict, boot: dict | None, key: str, controls: list[dict], level) -> dict:
    """CI and random-init columns of one method row; boot: `bootstrap_overlaps` samples
    `[n_boot, 1 + draws]` (None: no CI for this row), key: its "overlap_linear" /
    "overlap_procrustes", controls: `alignment.figures` of each random-init copy."""
    out = dict.fromkeys(("overlap_mapped_ci_lo", "overlap_mapped_ci_hi"))
    out |= dict.fromkeys(("overlap_raw_ci_lo", "overlap_raw_ci_hi"))
    out["random_init_draws"] = len(controls) if boot is not None else None
    for k in ("overlap_mapped", "overlap_mapped_max", "r2_test", "cka", "minus_ci_lo"):
        out[f"random_init_{k}"] = None
    out["random_init_minus_ci_hi"] = None
    if boot is not None:
        ci = percentile_band(boot[key][:, 0], level)
        out["overlap_mapped_ci_lo"], out["overlap_mapped_ci_hi"] = ci
        raw = boot["overlap_raw"][:, 0]
        if not np.all(np.isnan(raw)):  # raw coordinates compare only equal widths
            out["overlap_raw_ci_lo"], out["overlap_raw_ci_hi"] = percentile_band(raw, level)
    if boot is not None and controls:
        r2_key = "r2_test_linear" if key == "overlap_linear" else "r2_test_procrustes"
        out["random_init_overlap_mapped"] = _mean(c[key] for c in controls)
        out["random_init_overlap_mapped_max"] = max(c[key] for c in controls)
        out["random_init_r2_test"] = _mean(c[r2_key] for c in controls)
        out["random_init_cka"] = _mean(c["cka_fit"] for c in controls)
        diff = boot[key][:, 0] - np.nanmean(boot[key][:, 1:], axis=1)
        ci = percentile_band(diff, level)
        out["random_init_minus_ci_lo"], out["random_init_minus_ci_hi"] = ci
        if row["overlap_mapped"] <= out["random_init_overlap_mapped_max"]:
            note = f"overlap after {row['method']} map not above its random-init control"
            out["warnings"] = "; ".join(x for x in (row["warnings"], note) if x)
    return row | out


def _rows_for(ctx: dict, lp: _LayerPair, cfg) -> tuple[list[dict], dict]:
    """align() at the first ridge (linear + Procrustes rows with CIs and random-init controls),
    linear rows for further ridges; returns (rows, {method name: {"null": [n_perm], "boot":
    [n_boot, 1 + draws] or None, "random_init": [draws]}} for the summary's layer means)."""
    scale = np.sum((lp.xa - lp.xa.mean(axis=0)) ** 2) / lp.xa.shape[1]
    ridges = [(r, r * scale) for r in cfg.ridges_rel]
    settings = alignment.AlignSettings(
        ridge=ridges[0][1], n_perm=cfg.n_perm, seed=cfg.seed, level=cfg.level
    )
    with warnings.catch_warnings():
        # align() warns once per call; the rows carry the same notes in their "warnings" column
        warnings.simplefilter("ignore")
        rep = alignment.align(lp.xa, lp.xb, lp.xat, lp.xbt, lp.qa, lp.qb, settings, lp.groups)
    controls = [
        alignment.figures(lp.xa, xb, lp.xat, xbt, lp.qa, qb, settings)
        for xb, xbt, qb in lp.controls
    ]
    boot = alignment.bootstrap_overlaps(lp.boot, cfg.n_boot, cfg.seed)
    shared = _shared(ctx, rep, cfg)
    rows, samples = [], {}
    for method, key in (("linear", "overlap_linear"), ("procrustes", "overlap_procrustes")):
        row = _method_row(shared, rep, method, ridges[0])
        row = _extra_columns(row, boot, key, controls, cfg.level)
        rows.append(row)
        samples[_name(row)] = {
            "null": rep.null_samples[key],
            "boot": boot[key],
            "raw_boot": boot["overlap_raw"][:, 0],
            "r2_null": rep.null_samples["r2_" + method],
            "random_init": [c[key] for c in controls],
        }
    for ridge in ridges[1:]:
        row, null = _ridge_row(shared, lp, rep, ridge, cfg)
        row = _extra_columns(row, None, "overlap_linear", [], cfg.level)
        rows.append(row)
        samples[_name(row)] = {"null": null, "boot": None, "random_init": []}
    return rows, samples


def _name(row: dict) -> str:
    """A method row's name in the summary: "procrustes" or "linear ridge_rel=<value>"."""
    return "procrustes" if row["method"] == "procrustes" else f"linear ridge_rel={row['ridge_rel']}"


def _band_dict(samples, level: float) -> dict:
    lo, hi = percentile_band(samples, level)
    return {"mean": float(np.nanmean(samples)), "lo": float(lo), "hi": float(hi)}


def _random_init_of_mean(figure: float, samps: list[dict], boot, level: float) -> dict | None:
    """The random-init control of a layer mean: its figure per draw, and the bootstrap CI of our
    figure minus the draws' mean (None when some layer had no control)."""
    draws = [len(s["random_init"]) for s in samps]
    if not draws or min(draws) == 0 or len(set(draws)) > 1:
        return None
    per_draw = np.mean([s["random_init"] for s in samps], axis=0)  # [draws]
    diff = boot[:, 0] - np.nanmean(boot[:, 1:], axis=1)
    lo, hi = percentile_band(diff, level)
    return {
        "figure": float(per_draw.mean()),
        "per_draw": [float(v) for v in per_draw],
        "draws": int(per_draw.size),
        "minus_random_init": float(figure - per_draw.mean()),
        "minus_random_init_ci": [float(lo), float(hi)],
        "above_random_init": bool(figure > per_draw.max() and lo > 0),
        "what": "the same figure with model B replaced by a randomly initialised copy of it "
        "(same architecture and tokens); CI: whole-prompt bootstrap of the difference",
    }


def _mean_stats(deep: list[dict], samps: list[dict], cfg) -> dict:
    """Null, CI and random-init control of the mean over the layers `deep` of one method, each
    taken draw by draw over the same layers (the same permutations / resamples at every layer)."""
    figure = _mean(r["overlap_mapped"] for r in deep)
    null = np.mean([s["null"] for s in samps], axis=0)
    out: dict = {"overlap_mapped_null_of_mean": _band_dict(null, cfg.level)}
    out["above_null_of_mean"] = bool(figure > out["overlap_mapped_null_of_mean"]["hi"])
    out["overlap_mapped_ci"] = out["overlap_raw_ci"] = out["r2_test_null_of_mean"] = None
    out["random_init"] = None
    if samps[0]["boot"] is None:
        return out
    boots = [s["boot"] for s in samps]
    if len({b.shape for b in boots}) > 1:  # controls missing at some layer: B's own CI only
        boots = [b[:, :1] for b in boots]
    boot = np.nanmean(boots, axis=0)  # [n_boot, sides]
    out["overlap_mapped_ci"] = list(percentile_band(boot[:, 0], cfg.level))
    raw = np.array([s["raw_boot"] for s in samps])  # [layers, n_boot], NaN when dA != dB
    if not np.all(np.isnan(raw)):
        out["overlap_raw_ci"] = list(percentile_band(np.nanmean(raw, axis=0), cfg.level))
    out["r2_test_null_of_mean"] = _band_dict(np.mean([s["r2_null"] for s in samps], 0), cfg.level)
    out["random_init"] = _random_init_of_mean(figure, samps, boot, cfg.level)
    return out


SUMMARY_KEYS = (
    "overlap_raw", "overlap_raw_ci_lo", "overlap_raw_ci_hi", "overlap_random_expectation",
    "overlap_mapped", "overlap_mapped_ci_lo", "overlap_mapped_ci_hi", "overlap_mapped_null_mean",
    "overlap_mapped_null_hi", "random_init_overlap_mapped", "random_init_overlap_mapped_max",
    "random_init_minus_ci_lo", "random_init_minus_ci_hi", "delta_cos2", "delta_angle_rad",
    "r2_test", "r2_test_null_hi", "cka_fit", "cka_null_hi", "random_init_cka",
)  # fmt: skip


def _summarise(rows: list[dict], samples: dict, cfg) -> dict:
    """Headline figures of one (A -> B, pairing): the last compared layer and the mean over the
    compared layers >= 1 (block outputs), per method/ridge, the mean with its own null and CI.
    samples: {(layer_a, method name): what `_rows_for` returns per method}."""
    out: dict = {
        "n_fit": rows[0]["n_fit"],
        "n_test": rows[0]["n_test"],
        "n_fit_prompts": rows[0]["n_fit_prompts"],
        "n_over_d": rows[0]["n_over_d"],
        "dA": rows[0]["dA"],
        "pairing": rows[0]["pairing"],
        "pairing_text": PAIRING_TEXT[rows[0]["pairing"]],
        "null_unit": rows[0]["null_unit"],
        "layers_compared": sorted({(r["layer_a"], r["layer_b"]) for r in rows}),
        "first_linear": _name(next(r for r in rows if r["method"] == "linear")),
        "random_init_draws": max((r["random_init_draws"] or 0) for r in rows),
        "methods": {},
    }
    last = max(r["layer_a"] for r in rows)
    groups: dict = {}
    for r in rows:
        groups.setdefault(_name(r), []).append(r)
    for name, rs in groups.items():
        at_last = next(r for r in rs if r["layer_a"] == last)
        deep = [r for r in rs if r["layer_a"] >= 1] or rs
        above = [r["overlap_mapped"] > r["overlap_mapped_null_hi"] for r in rs]
        mean_stats = _mean_stats(deep, [samples[(r["layer_a"], name)] for r in deep], cfg)
        out["methods"][name] = {
            "last_layer": {"layer_a": at_last["layer_a"], "layer_b": at_last["layer_b"]}
            | {k: at_last[k] for k in SUMMARY_KEYS},
            "mean_over_layers": {
                "layers_a": [r["layer_a"] for r in deep],
                "layers_note": "compared layers >= 1 (block outputs)",
            }
            | {k: _mean(r[k] for r in deep) for k in SUMMARY_KEYS}
            | mean_stats,
            "layers_mapped_overlap_above_null_hi": f"{sum(above)}/{len(above)}",
            "any_warning": any(r["warnings"] for r in rs),
        }
    return out


def _column(rs: list[dict], key: str) -> np.ndarray:
    """`[layer]` values of `key` over the rows `rs` (None as NaN)."""
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rs])


def _overlap_figure(groups: dict, x, label_a: str, tail: str):
    first = next(iter(groups.values()))
    series = {"raw (no map)": (_column(first, "overlap_raw"), None, None)}
    series["random subspaces"] = (
        _column(first, "overlap_random_expectation"),
        _column(first, "overlap_random_lo"),
        _column(first, "overlap_random_hi"),
    )
    dashed = ["random subspaces"]
    for name, rs in groups.items():
        ov = _column(rs, "overlap_mapped")
        lo, hi = _column(rs, "overlap_mapped_ci_lo"), _column(rs, "overlap_mapped_ci_hi")
        # a percentile CI can miss its own point (the bootstrap's bias): drawn stretched to
        # reach it, the CSV keeps the exact bounds
        ci = (np.fmin(lo, ov), np.fmax(hi, ov)) if np.all(np.isfinite(lo)) else (None, None)
        series[name] = (ov, *ci)
        series[f"{name} null"] = _clip_band(rs, "overlap_mapped")
        dashed.append(f"{name} null")
        ctrl = _column(rs, "random_init_overlap_mapped")
        if np.any(np.isfinite(ctrl)):
            series[f"{name}, random-init B"] = (ctrl, None, None)
            dashed.append(f"{name}, random-init B")
    return plots.line_with_band(
        x,
        series,
        xlabel=f"layer of {label_a} (0 = embeddings; B at the same relative depth)",
        ylabel="subspace overlap (mean cos^2 of principal angles)",
        title=f"Emotion subspace overlap, {tail}",
        dashed=dashed,
    )


def _fit_figure(groups: dict, x, label_a: str, tail: str):
    first = next(iter(groups.values()))
    series, dashed = {}, []
    for name, rs in groups.items():
        series[f"R^2 held-out, {name}"] = (_column(rs, "r2_test"), None, None)
        series[f"R^2 null, {name}"] = _clip_band(rs, "r2_test")
        dashed.append(f"R^2 null, {name}")
    series["linear CKA (fit rows)"] = (_column(first, "cka_fit"), None, None)
    series["CKA null"] = _clip_band(first, "cka")
    dashed.append("CKA null")
    return plots.line_with_band(
        x,
        series,
        xlabel=f"layer of {label_a} (0 = embeddings)",
        ylabel="held-out R^2 / linear CKA",
        title=f"Map fit, {tail}",
        dashed=dashed,
    )


def _plot(rows, label_a, label_b, pairing, cfg, out_dir) -> tuple[str, str]:
    """overlap__<stem>.png and fit__<stem>.png of one (A -> B, pairing); returns their names."""
    groups: dict = {}
    for r in rows:
        groups.setdefault(_name(r), []).append(r)
    first = next(iter(groups.values()))
    x = np.array([r["layer_a"] for r in first])
    tail = (
        f"{label_a} -> {label_b}, {pairing} pairing, n_fit={first[0]['n_fit']}, "
        f"d={first[0]['dA']}, k<={cfg.k}, seed={cfg.seed}; dashed: nulls "
        f"({int(cfg.level * 100)}% band, n_perm={cfg.n_perm}, whole prompts permuted); "
        f"shaded: {int(cfg.level * 100)}% prompt-bootstrap CI (n_boot={cfg.n_boot})"
    )
    stem = f"{_safe(label_a)}__{_safe(label_b)}__{pairing}"
    overlap_name, fit_name = f"overlap__{stem}.png", f"fit__{stem}.png"
    artifacts.save_figure(out_dir / overlap_name, _overlap_figure(groups, x, label_a, tail))
    artifacts.save_figure(out_dir / fit_name, _fit_figure(groups, x, label_a, tail))
    return overlap_name, fit_name


def _clip_band(rs, key):
    base = f"{key}_null"
    mean = np.array([float(r[f"{base}_mean"]) for r in rs])
    lo = np.array([float(r[f"{base}_lo"]) for r in rs])
    hi = np.array([float(r[f"{base}_hi"]) for r in rs])
    return np.clip(mean, lo, hi), lo, hi  # a skewed null's mean can leave its band; CSV is exact


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What every layer pair of a run shares: the config, the neutral fit / held-out prompts,
    each model's `_Side`, each model's random-init copies (`_Side`s), and the skipped pairs."""

    cfg: object
    fit_p: np.ndarray
    test_p: np.ndarray
    sides: dict[str, _Side]
    controls: dict[str, list[_Side]]
    skipped: list[str]


def _design(cfg, setup: _Setup) -> dict:
    draws = {label: len(c) for label, c in setup.controls.items()}
    return {
        "fit_data": "neutral prompts only; split into fit / held-out by prompt",
        "n_fit_prompts": int(setup.fit_p.size),
        "n_test_prompts": int(setup.test_p.size),
        "pairings": PAIRING_TEXT,
        "pairing_rule": "per token iff both models tokenise every prompt identically, else "
        "per prompt (sentence_end and prompt_mean); fit_on=" + cfg.fit_on,
        "null": "maps refit on shuffled pairings that move whole prompts (a prompt's rows go to "
        "the same positions of a prompt of the same length); CKA null the same",
        "ci": f"whole-prompt bootstrap within each class, {cfg.n_boot} resamples, bases and maps "
        "refit; for the first ridge's linear map and Procrustes",
        "random_init_control": (
            {"draws_per_model": draws, "what": "each figure recomputed with model B replaced by "
             "a randomly initialised copy of it (same architecture and tokens, its own basis)"}
            if draws
            else NO_CONTROL
        ),
        "random_init_draws_configured": int(cfg.get("random_init_draws", 0)),
        "layer_matching": "layer l of A <-> round(l * L_B / L_A) of B (0 = embeddings)",
        "best_layer": "none named: the last compared layer and the mean over block layers",
        "subspace": f"top-{cfg.k} principal directions of the differences between the four "
        f"raw class means ({cfg.subspace_from}), all prompts, per model and layer",
        "ridge": "ridge = ridge_rel * ||X_A,c||_F^2 / d_A on the fit rows",
        "overlap": "mean cos^2 of principal angles; delta_cos2 = after - raw",
    }  # fmt: skip


def _control_inputs(setup: _Setup, lb: str, pairing: str, layer_b: int, where: str):
    """B's random-init copies at layer_b: ([(xb, xbt, qb)], [BootSide]); both empty (and a line
    in setup.skipped) when some copy has no emotion basis or constant rows there."""
    triples, sides = [], []
    for c in setup.controls.get(lb, []):
        qb = c.bases[layer_b]
        xb = features(c.acts, pairing, layer_b, setup.fit_p)
        if qb.shape[1] == 0 or _constant(xb):
            setup.skipped.append(f"{where}: random-init control has nothing to compare here")
            return [], []
        triples.append((xb, features(c.acts, pairing, layer_b, setup.test_p), qb))
        sides.append(alignment.BootSide(xb, c.sums[layer_b], c.counts))
    return triples, sides


def _context(setup: _Setup, la: str, lb: str, pairing: str, layers: tuple[int, int]) -> dict:
    a = setup.sides[la].acts
    return {
        "model_a": la,
        "model_b": lb,
        "pairing": pairing,
        "fit_on": PAIRING_TEXT[pairing],
        "layer_a": layers[0],
        "layer_b": layers[1],
        "layer_name_a": layer_names(a.n_layers_plus_one)[layers[0]],
        "depth": layers[0] / (a.n_layers_plus_one - 1),
        "subspace_from": setup.cfg.subspace_from,
        "n_fit_prompts": int(setup.fit_p.size),
        "n_test_prompts": int(setup.test_p.size),
    }


def _layer_rows(setup: _Setup, la: str, lb: str, pairing: str, layers: tuple[int, int]):
    """(rows, samples) of one layer pair (layer_a, layer_b) of models la -> lb under `pairing`
    (see `_rows_for`); ([], {}) with a line in setup.skipped where there is nothing to map."""
    (a, b), (layer_a, layer_b) = (setup.sides[la], setup.sides[lb]), layers
    cfg, fit_p = setup.cfg, setup.fit_p
    ba, bb = a.bases[layer_a], b.bases[layer_b]
    where = f"{la} L{layer_a} -> {lb} L{layer_b} ({pairing})"
    if ba.shape[1] == 0 or bb.shape[1] == 0:
        setup.skipped.append(
            f"{la} L{layer_a} -> {lb} L{layer_b}: the class means do not differ "
            f"({cfg.subspace_from}) in one model, no emotion subspace to compare"
        )
        return [], {}
    xa, xb = features(a.acts, pairing, layer_a, fit_p), features(b.acts, pairing, layer_b, fit_p)
    if _constant(xa) or _constant(xb):
        # e.g. Pythia's layer 0 at the last token: no position embedding, and every neutral
        # prompt ends in the same token -> one point, nothing to map
        setup.skipped.append(f"{where}: fit rows identical in one model")
        return [], {}
    groups = row_prompts(a.acts, pairing, fit_p)
    controls, ctrl_sides = _control_inputs(setup, lb, pairing, layer_b, where)
    boot = alignment.BootData(
        labels=a.acts.labels,
        row_prompt=groups,
        a=alignment.BootSide(xa, a.sums[layer_a], a.counts),
        bs=[alignment.BootSide(xb, b.sums[layer_b], b.counts), *ctrl_sides],
        k=cfg.k,
        ridge_rel=float(cfg.ridges_rel[0]),
    )
    xat = features(a.acts, pairing, layer_a, setup.test_p)
    xbt = features(b.acts, pairing, layer_b, setup.test_p)
    lp = _LayerPair(xa, xb, xat, xbt, ba, bb, groups, controls, boot)
    try:
        rows, samples = _rows_for(_context(setup, la, lb, pairing, layers), lp, cfg)
    except ValueError as e:
        setup.skipped.append(f"{where}: {e}")
        return [], {}
    return rows, {(layer_a, k): v for k, v in samples.items()}


def _control_note(random_init: dict | None, draws: int) -> str | None:
    if random_init:
        return None
    if draws:
        return (
            "random-init copies were given but lack an emotion basis or varying rows at some "
            "compared layer (see skipped): no control of the layer mean"
        )
    return NO_CONTROL


def _headline_entry(summ: dict, cfg) -> dict:
    """One (A -> B, pairing) of the headline: see the module docstring."""
    lin = summ["methods"][summ["first_linear"]]["mean_over_layers"]
    pro = summ["methods"]["procrustes"]["mean_over_layers"]

    def method(m):
        null = m["overlap_mapped_null_of_mean"]
        return {
            "figure": m["overlap_mapped"],
            "ci": m["overlap_mapped_ci"],
            "null_band": [null["lo"], null["hi"]],
            "null_mean": null["mean"],
            "above_null": m["above_null_of_mean"],
            "random_init": m["random_init"],
        }

    return method(lin) | {
        "measure": f"overlap after the linear map ({summ['first_linear']}), mean over the "
        "compared block layers",
        "random_init_note": _control_note(lin["random_init"], summ["random_init_draws"]),
        "procrustes": method(pro),
        "raw": {
            "figure": lin["overlap_raw"],
            "ci": lin["overlap_raw_ci"],
            "random_expectation": lin["overlap_random_expectation"],
        },
        "r2_test": lin["r2_test"],
        "r2_test_null_band": lin["r2_test_null_of_mean"],
        "layers": lin["layers_a"],
        "n_fit_rows": summ["n_fit"],
        "n_fit_prompts": summ["n_fit_prompts"],
        "d_a": summ["dA"],
        "n_over_d": summ["n_over_d"],
        "k": cfg.k,
        "n_perm": cfg.n_perm,
        "n_boot": cfg.n_boot,
        "level": cfg.level,
        "seed": cfg.seed,
        "null_unit": summ["null_unit"],
    }


def _headline(pairs: dict, cfg) -> dict:
    return {
        "question": "do the models' emotion subspaces agree up to a change of basis?",
        "study": "after linear map cos^2 overlap ~0.99, raw 0.13-0.15, angle improvement "
        "+0.84..0.87 (layer not stated)",
        "best_layer": None,
        "best_layer_note": "no best layer is named: figures are means over the compared block "
        "layers",
        "pairs": {
            pair: {pairing: _headline_entry(summ, cfg) for pairing, summ in by.items()}
            for pair, by in pairs.items()
        },
    }


def run_alignment(
    acts_by_model: dict[str, Activations],
    cfg,
    out_dir: str | Path,
    controls: dict[str, list[Activations]] | None = None,
) -> dict:
    """Every ordered pair of models, every compared layer, every pairing: see module docstring.
    controls: {model label: [activations of random-init copies of it]} (optional).

    Returns {"design": {...}, "pairs": {"A->B": {pairing: summary}}, "headline": {...},
    "skipped": [...], "files": {name: file}, "n_rows": int, "config": {...}}; also written to
    alignment_summary.json.
    """
    controls = {k: list(v) for k, v in (controls or {}).items() if len(v)}
    _check_config(cfg)
    _check_inputs(acts_by_model, controls)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = next(iter(acts_by_model.values()))
    fit_p, test_p = split_neutral(ref.labels, cfg.test_fraction, cfg.seed)
    sides = {label: _side(acts, cfg) for label, acts in acts_by_model.items()}
    ctrl = {label: [_side(c, cfg) for c in copies] for label, copies in controls.items()}
    setup = _Setup(cfg, fit_p, test_p, sides, ctrl, [])
    rows: list[dict] = []
    summary: dict = {"design": _design(cfg, setup), "pairs": {}, "skipped": setup.skipped}
    files = {}
    for (la, a), (lb, b) in itertools.permutations(acts_by_model.items(), 2):
        for pairing in pairings(a, b, cfg.fit_on):
            pair_rows, samples = [], {}
            for layers in matched_layers(
                a.n_layers_plus_one - 1, b.n_layers_plus_one - 1, cfg.layer_stride
            ):
                r, s = _layer_rows(setup, la, lb, pairing, layers)
                pair_rows += r
                samples |= s
            if not pair_rows:
                continue
            rows += pair_rows
            summ = _summarise(pair_rows, samples, cfg)
            summary["pairs"].setdefault(f"{la}->{lb}", {})[pairing] = summ
            if cfg.plots:
                ov, fit = _plot(pair_rows, la, lb, pairing, cfg, out_dir)
                files[ov[:-4]], files[fit[:-4]] = ov, fit
    summary["headline"] = {
        "subspaces_agree_up_to_change_of_basis": _headline(summary["pairs"], cfg)
    }
    artifacts.write_csv(out_dir / "alignment.csv", rows)
    files["alignment"] = "alignment.csv"
    files["summary"] = "alignment_summary.json"
    summary["files"] = files
    summary["n_rows"] = len(rows)
    summary["config"] = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    artifacts.write_json(out_dir / "alignment_summary.json", summary)
    return summary


@dataclasses.dataclass(frozen=True)
class Inputs:
    """acts: {model label: its activations (phase 2)}, two or more, the same prompts in the same
    order. controls: {model label: [activations of randomly initialised copies of that model
    (same architecture and tokenizer, params drawn afresh with seed
    `alignment.random_init_seed + j`), extracted from the same records with the same BOS
    choice]}, `alignment.random_init_draws` per model; empty = no random-init control (the
    summary says so)."""

    acts: dict[str, Activations]
    controls: dict[str, list[Activations]] = dataclasses.field(default_factory=dict)


def run(inputs: Inputs, cfg, out_dir: str | Path) -> dict:
    """The phase behind the runner interface: `run_alignment(inputs.acts, cfg, out_dir,
    controls=inputs.controls)`."""
    if inputs.controls:
        return run_alignment(inputs.acts, cfg, out_dir, controls=inputs.controls)
    return run_alignment(inputs.acts, cfg, out_dir)
