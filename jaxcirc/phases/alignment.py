"""Phase 6: does model B hold model A's emotion subspace up to a change of basis? Fit maps A -> B
on NEUTRAL activations only, carry A's emotion subspace through them, compare with B's; every
figure beside its null (`jaxcirc.core.alignment.align`; rows paired by `jaxcirc.core.pairing`).

    summary = run_alignment({"gpt2": acts_gpt2, "pythia": acts_pythia}, configs.sections.alignment(), out)

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
- Split: neutral prompts (never the emotional ones) are split into fit / held-out BY PROMPT with
  `test_fraction` and `seed`; all tokens of a prompt go to the same side. The split is the same
  for every pair and layer.
- Layers: models of different depth are compared at the same relative depth: layer l of A
  (0 = embeddings ... L_A = resid_post) goes with layer round(l * L_B / L_A) of B. Columns
  `layer_a`, `layer_b`, `depth`.
- Emotion subspace: per model and layer, the top-k principal directions of the differences
  between the four raw class means (`jaxcirc.core.subspace.emotion_subspaces`, neutral included; k = 3
  spans the three neutral-centred emotion vectors), class means read by `subspace_from`
  ("sentence_end" or "token"), over ALL prompts of the set. The map never saw emotional prompts.
- Ridge strength is relative: ridge = ridge_rel * ||X_A,c||_F^2 / d_A (the mean eigenvalue of the
  centred fit covariance times n), so one value means the same shrinkage at every layer whatever
  the stream's scale. Both are in each row. The first value gets the full report (linear and
  Procrustes maps, CKA); each further value a linear-map row with its own shuffled-pairing null.

Files: `alignment.csv` (one row per ordered pair x pairing x layer x method[/ridge]),
`alignment_summary.json` (what run_alignment returns), `overlap__<A>__<B>__<pairing>.png`
(subspace overlap per layer: raw, after each map, nulls dashed with their band) and
`fit__<A>__<B>__<pairing>.png` (held-out R^2 and CKA per layer with their nulls).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from pathlib import Path

import numpy as np

from jaxcirc.core import alignment
from jaxcirc.core.pairing import features, matched_layers, pairings, split_neutral
from jaxcirc.core.subspace import emotion_subspaces
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations, layer_names
from jaxcirc.infra import artifacts
from jaxcirc.report import plots

NAME = "alignment"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 1

FIT_ON = ("all_tokens", "sentence_end", "prompt_mean")
PAIRING_TEXT = {
    "token": "per token: every real token of the neutral prompts (identical tokenisation; BOS "
    "excluded)",
    "sentence_end": "per prompt: last real token of each neutral prompt",
    "prompt_mean": "per prompt: mean over the real tokens of each neutral prompt (BOS excluded)",
}


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


def _constant(x) -> bool:
    """All rows equal up to float32 rounding."""
    spread = np.abs(x - x.mean(axis=0)).max(initial=0.0)
    return bool(spread <= 1e-6 * max(np.abs(x).max(initial=0.0), 1e-30))


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-") or "model"


def _check_inputs(acts_by_model) -> None:
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
class _LayerPair:
    """One compared layer of A and B: fit rows xa `[n, dA]`, xb `[n, dB]`, held-out rows xat,
    xbt, and each model's emotion basis qa `[dA, k]`, qb `[dB, k]`."""

    xa: np.ndarray
    xb: np.ndarray
    xat: np.ndarray
    xbt: np.ndarray
    qa: np.ndarray
    qb: np.ndarray


def _shared(ctx: dict, rep: alignment.AlignmentReport, cfg) -> dict:
    """The columns every method/ridge row of one layer pair shares."""
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
        "n_perm": cfg.n_perm,
        "level": cfg.level,
        "seed": cfg.seed,
    }


def _report_rows(shared: dict, rep: alignment.AlignmentReport, ridge: tuple) -> list[dict]:
    """The linear and Procrustes rows of `align`'s report, fit at ridge = (ridge_rel, ridge)."""
    linear = {
        **shared,
        "method": "linear",
        "ridge_rel": ridge[0],
        "ridge": ridge[1],
        "overlap_mapped": rep.overlap_linear,
        **{f"overlap_mapped_{k}": v for k, v in _band(rep.overlap_linear_null).items()},
        "delta_cos2": rep.delta_cos2_linear,
        "delta_angle_rad": rep.delta_angle_rad_linear,
        "r2_fit": rep.r2_fit_linear,
        "r2_test": rep.r2_test_linear,
        **{f"r2_test_{k}": v for k, v in _band(rep.r2_test_linear_null).items()},
        "procrustes_scale": None,
        "warnings": "; ".join(
            _notes(rep.n_fit, rep.dA, rep.overlap_linear, rep.overlap_linear_null, "linear")
        ),
    }
    procrustes = {
        **shared,
        "method": "procrustes",
        "ridge_rel": None,
        "ridge": None,
        "overlap_mapped": rep.overlap_procrustes,
        **{f"overlap_mapped_{k}": v for k, v in _band(rep.overlap_procrustes_null).items()},
        "delta_cos2": rep.delta_cos2_procrustes,
        "delta_angle_rad": rep.delta_angle_rad_procrustes,
        "r2_fit": None,
        "r2_test": rep.r2_test_procrustes,
        **{f"r2_test_{k}": v for k, v in _band(rep.r2_test_procrustes_null).items()},
        "procrustes_scale": rep.procrustes_scale,
        "warnings": "; ".join(
            _notes(
                rep.n_fit, rep.dA, rep.overlap_procrustes, rep.overlap_procrustes_null, "procrustes"
            )
        ),
    }
    return [linear, procrustes]


def _ridge_row(shared: dict, lp: _LayerPair, rep, ridge: tuple[float, float], cfg) -> dict:
    """A linear-map row at a further ridge = (ridge_rel, ridge), with its own shuffled null."""
    r_rel, r = ridge
    lin = alignment.fit_linear(lp.xa, lp.xb, r)
    ov = alignment.mapped_subspace_overlap(lin, lp.qa, lp.qb)
    ch = alignment.angle_improvement(lin, lp.qa, lp.qb) if rep.dA == rep.dB else None
    settings = alignment.AlignSettings(ridge=r, n_perm=cfg.n_perm, seed=cfg.seed, level=cfg.level)
    nulls = alignment.shuffled_pairing_null(lp.xa, lp.xb, lp.xat, lp.xbt, lp.qa, lp.qb, settings)
    return {
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


def _rows_for(ctx: dict, lp: _LayerPair, cfg) -> list[dict]:
    """align() at the first ridge (linear + Procrustes rows), linear rows for further ridges."""
    scale = np.sum((lp.xa - lp.xa.mean(axis=0)) ** 2) / lp.xa.shape[1]
    ridges = [(r, r * scale) for r in cfg.ridges_rel]
    settings = alignment.AlignSettings(
        ridge=ridges[0][1], n_perm=cfg.n_perm, seed=cfg.seed, level=cfg.level
    )
    with warnings.catch_warnings():
        # align() warns once per call; the rows carry the same notes in their "warnings" column
        warnings.simplefilter("ignore")
        rep = alignment.align(lp.xa, lp.xb, lp.xat, lp.xbt, lp.qa, lp.qb, settings)
    shared = _shared(ctx, rep, cfg)
    rows = _report_rows(shared, rep, ridges[0])
    for ridge in ridges[1:]:
        rows.append(_ridge_row(shared, lp, rep, ridge, cfg))
    return rows


def _summarise(rows: list[dict], cfg) -> dict:
    """Headline figures of one (A -> B, pairing): the last compared layer and the mean over the
    compared layers >= 1 (block outputs), per method/ridge."""
    out: dict = {
        "n_fit": rows[0]["n_fit"],
        "n_test": rows[0]["n_test"],
        "n_fit_prompts": rows[0]["n_fit_prompts"],
        "n_over_d": rows[0]["n_over_d"],
        "pairing": rows[0]["pairing"],
        "pairing_text": PAIRING_TEXT[rows[0]["pairing"]],
        "layers_compared": sorted({(r["layer_a"], r["layer_b"]) for r in rows}),
        "methods": {},
    }
    last = max(r["layer_a"] for r in rows)
    keys = (
        "overlap_raw", "overlap_random_expectation", "overlap_mapped", "overlap_mapped_null_mean",
        "overlap_mapped_null_hi", "delta_cos2", "delta_angle_rad", "r2_test", "r2_test_null_hi",
        "cka_fit", "cka_null_hi",
    )  # fmt: skip
    groups: dict = {}
    for r in rows:
        name = r["method"] if r["method"] == "procrustes" else f"linear ridge_rel={r['ridge_rel']}"
        groups.setdefault(name, []).append(r)
    for name, rs in groups.items():
        at_last = next(r for r in rs if r["layer_a"] == last)
        deep = [r for r in rs if r["layer_a"] >= 1] or rs

        def mean(key, rs=deep):
            vals = [r[key] for r in rs if r[key] is not None]
            return float(np.mean(vals)) if vals else None

        above = [r["overlap_mapped"] > r["overlap_mapped_null_hi"] for r in rs]
        out["methods"][name] = {
            "last_layer": {"layer_a": at_last["layer_a"], "layer_b": at_last["layer_b"]}
            | {k: at_last[k] for k in keys},
            "mean_over_layers": {"layers_a": "compared layers >= 1 (block outputs)"}
            | {k: mean(k) for k in keys},
            "layers_mapped_overlap_above_null_hi": f"{sum(above)}/{len(above)}",
            "any_warning": any(r["warnings"] for r in rs),
        }
    return out


def _column(rs: list[dict], key: str) -> np.ndarray:
    """`[layer]` values of `key` over the rows `rs` (None as NaN)."""
    return np.array([np.nan if r[key] is None else float(r[key]) for r in rs])


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
        series[name] = (_column(rs, "overlap_mapped"), None, None)
        series[f"{name} null"] = _clip_band(rs, "overlap_mapped")
        dashed.append(f"{name} null")
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
        name = (
            "procrustes" if r["method"] == "procrustes" else f"linear (ridge_rel={r['ridge_rel']})"
        )
        groups.setdefault(name, []).append(r)
    first = next(iter(groups.values()))
    x = np.array([r["layer_a"] for r in first])
    tail = (
        f"{label_a} -> {label_b}, {pairing} pairing, n_fit={first[0]['n_fit']}, "
        f"d={first[0]['dA']}, k<={cfg.k}, seed={cfg.seed}; dashed: nulls "
        f"({int(cfg.level * 100)}% band, n_perm={cfg.n_perm})"
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
    each model's per-layer emotion bases `[d_model, k_used]`, and the list of skipped pairs."""

    cfg: object
    fit_p: np.ndarray
    test_p: np.ndarray
    bases: dict[str, list[np.ndarray]]
    skipped: list[str]


def _design(cfg, setup: _Setup) -> dict:
    return {
        "fit_data": "neutral prompts only; split into fit / held-out by prompt",
        "n_fit_prompts": int(setup.fit_p.size),
        "n_test_prompts": int(setup.test_p.size),
        "pairings": PAIRING_TEXT,
        "pairing_rule": "per token iff both models tokenise every prompt identically, else "
        "per prompt (sentence_end and prompt_mean); fit_on=" + cfg.fit_on,
        "layer_matching": "layer l of A <-> round(l * L_B / L_A) of B (0 = embeddings)",
        "subspace": f"top-{cfg.k} principal directions of the differences between the four "
        f"raw class means ({cfg.subspace_from}), all prompts, per model and layer",
        "ridge": "ridge = ridge_rel * ||X_A,c||_F^2 / d_A on the fit rows",
        "overlap": "mean cos^2 of principal angles; delta_cos2 = after - raw",
    }


def _layer_rows(setup: _Setup, a_item, b_item, pairing: str, layers: tuple[int, int]) -> list:
    """Rows of one layer pair (layer_a, layer_b) of models a_item = (label, Activations) and
    b_item under `pairing`; [] with a line in setup.skipped where there is nothing to map."""
    (la, a), (lb, b), (layer_a, layer_b) = a_item, b_item, layers
    cfg, fit_p = setup.cfg, setup.fit_p
    ba, bb = setup.bases[la][layer_a], setup.bases[lb][layer_b]
    if ba.shape[1] == 0 or bb.shape[1] == 0:
        setup.skipped.append(
            f"{la} L{layer_a} -> {lb} L{layer_b}: the class means do not differ "
            f"({cfg.subspace_from}) in one model, no emotion subspace to compare"
        )
        return []
    ctx = {
        "model_a": la,
        "model_b": lb,
        "pairing": pairing,
        "fit_on": PAIRING_TEXT[pairing],
        "layer_a": layer_a,
        "layer_b": layer_b,
        "layer_name_a": layer_names(a.n_layers_plus_one)[layer_a],
        "depth": layer_a / (a.n_layers_plus_one - 1),
        "subspace_from": cfg.subspace_from,
        "n_fit_prompts": int(fit_p.size),
        "n_test_prompts": int(setup.test_p.size),
    }
    xa, xb = features(a, pairing, layer_a, fit_p), features(b, pairing, layer_b, fit_p)
    where = f"{la} L{layer_a} -> {lb} L{layer_b} ({pairing})"
    if _constant(xa) or _constant(xb):
        # e.g. Pythia's layer 0 at the last token: no position embedding, and every neutral
        # prompt ends in the same token -> one point, nothing to map
        setup.skipped.append(f"{where}: fit rows identical in one model")
        return []
    xat = features(a, pairing, layer_a, setup.test_p)
    xbt = features(b, pairing, layer_b, setup.test_p)
    try:
        return _rows_for(ctx, _LayerPair(xa, xb, xat, xbt, ba, bb), cfg)
    except ValueError as e:
        setup.skipped.append(f"{where}: {e}")
        return []


def run_alignment(acts_by_model: dict[str, Activations], cfg, out_dir: str | Path) -> dict:
    """Every ordered pair of models, every compared layer, every pairing: see module docstring.

    Returns {"design": {...}, "pairs": {"A->B": {pairing: summary}}, "files": {name: file},
    "n_rows": int, "config": {...}}; also written to alignment_summary.json.
    """
    _check_config(cfg)
    _check_inputs(acts_by_model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = next(iter(acts_by_model.values()))
    fit_p, test_p = split_neutral(ref.labels, cfg.test_fraction, cfg.seed)
    bases = {}
    for label, acts in acts_by_model.items():
        basis, _, k_used = emotion_subspaces(acts, cfg.subspace_from, cfg.k)
        bases[label] = [basis[li, :, :kk] for li, kk in enumerate(k_used)]
    setup = _Setup(cfg, fit_p, test_p, bases, [])
    rows: list[dict] = []
    summary: dict = {"design": _design(cfg, setup), "pairs": {}, "skipped": setup.skipped}
    files = {}
    for (la, a), (lb, b) in itertools.permutations(acts_by_model.items(), 2):
        for pairing in pairings(a, b, cfg.fit_on):
            pair_rows = []
            for layers in matched_layers(
                a.n_layers_plus_one - 1, b.n_layers_plus_one - 1, cfg.layer_stride
            ):
                pair_rows += _layer_rows(setup, (la, a), (lb, b), pairing, layers)
            if not pair_rows:
                continue
            rows += pair_rows
            summary["pairs"].setdefault(f"{la}->{lb}", {})[pairing] = _summarise(pair_rows, cfg)
            if cfg.plots:
                ov, fit = _plot(pair_rows, la, lb, pairing, cfg, out_dir)
                files[ov[:-4]], files[fit[:-4]] = ov, fit
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
    order."""

    acts: dict[str, Activations]


def run(inputs: Inputs, cfg, out_dir: str | Path) -> dict:
    """The phase behind the runner interface: `run_alignment(inputs.acts, cfg, out_dir)`."""
    return run_alignment(inputs.acts, cfg, out_dir)
