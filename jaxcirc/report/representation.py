"""Report sections for the representation phases: the dataset (1), emotion vectors and probes
(3, 3.5), subspaces and cross-model alignment (6). Each reads the phase's own files and puts the
study's reported figure beside ours; see jaxcirc.report.
"""

from __future__ import annotations

import csv
from pathlib import Path

from jaxcirc.data import dataset
from jaxcirc.infra import artifacts
from jaxcirc.report.format import fmt, images, read_json

PAIRS = ("gratitude-anger", "gratitude-apology", "anger-apology")
STUDY_SENTENCE_END = {
    "gpt2": {"gratitude-anger": 0.48, "gratitude-apology": 0.68, "anger-apology": 0.75},
    "pythia": "all 0.96-0.99",
    "neo": "like GPT-2, a bit higher",
}
STUDY_TOKEN_PYTHIA = {"gratitude-anger": -0.75, "gratitude-apology": -0.73}
# The checkpoints the study ran, by family: hub name, and the model's name in the report.
STUDY_MODELS = {
    "gpt2": ("gpt2", "GPT-2 small"),
    "pythia": ("EleutherAI/pythia-160m", "Pythia-160M"),
    "neo": ("EleutherAI/gpt-neo-125m", "GPT-Neo-125M"),
}
_FAMILY = {"gpt2": "gpt2", "gpt_neox": "pythia", "gpt_neo": "neo"}
_LABELS = {"gpt2": "gpt2", "gpt2-small": "gpt2", "pythia-160m": "pythia", "gpt-neo-125m": "neo"}


def study_model(root: Path, label: str) -> tuple[str | None, str | None]:
    """(kind, family) of a model of this run beside the study's: kind "study" (one of the
    study's checkpoints), "stand-in" (a demo stand-in of that family) or None (another model:
    no study figure goes beside it). Read from models.json (family, notes "checkpoint <source>"
    or "trained stand-in"); without it, from the label alone ("...standin..." or the paper
    config's labels gpt2 / pythia-160m / gpt-neo-125m)."""
    info = (read_json(root / "models.json") or {}).get(label)
    low = label.lower()
    if info is None:
        fam = _LABELS.get(low) or next((f for f in STUDY_MODELS if low.startswith(f)), None)
        if "standin" in low:
            return "stand-in", "neo" if low.startswith("gpt-neo") else fam
        return ("study", fam) if low in _LABELS else (None, None)
    fam = _FAMILY.get(info.get("family", ""))
    notes = str(info.get("notes", ""))
    if "stand-in" in notes or "standin" in low:
        return "stand-in", fam
    source = notes.removeprefix("checkpoint ").split(" @ ")[0]
    if fam and source == STUDY_MODELS[fam][0]:
        return "study", fam
    return None, None


def _study_header(kind: str | None, fam: str | None) -> str | None:
    """The study column's header for this model, or None when no study figure goes beside it."""
    if kind is None or fam is None:
        return None
    name = STUDY_MODELS[fam][1]
    return f"study ({name})" if kind == "study" else f"study ({name}; ours is a stand-in)"


def _study_cos(fam: str | None, pair: str, method: str) -> str:
    if method == "sentence_end" and fam:
        v = STUDY_SENTENCE_END[fam]
        return fmt(v.get(pair)) if isinstance(v, dict) else v
    if method in ("token", "token_delta") and fam == "pythia" and pair in STUDY_TOKEN_PYTHIA:
        return fmt(STUDY_TOKEN_PYTHIA[pair])
    return "-"


def _band(lo, hi, nd: int = 2) -> str:
    return f"[{fmt(lo, nd)}, {fmt(hi, nd)}]"


def _ci(lo, hi, nd: int = 2) -> str:
    return f"({fmt(lo, nd)}, {fmt(hi, nd)})" if lo is not None else "(no CI)"


def section_dataset(root: Path, cfg) -> list[str]:
    stats = read_json(root / "dataset" / "stats.json")
    if not stats:
        return []
    set_name = cfg.dataset.set
    # The study has no Japanese set: beside a Japanese one it gives the design sizes, no length.
    study = dataset.study_stats(cfg.dataset.get("language", "en"))[set_name]
    ours = stats["prompts"]
    lines = [
        "## Phase 1: dataset",
        "",
        "| | study | ours |",
        "|---|---|---|",
        f"| prompts ({set_name}) | {study['total']} | {ours['total']} |",
        f"| per emotion | {study['per_emotion']} | {', '.join(f'{k} {v}' for k, v in ours['count'].items())} |",
        f"| mean length (characters) | {fmt(study['mean_chars'], 1)} | {fmt(ours['mean_chars'], 1)} |",
        f"| balanced | yes | {fmt(ours['balanced'])} |",
    ]
    if "realworld" in stats:
        rw = stats["realworld"]
        lines.append(
            f"| real-world texts | 35 | {rw['total']} ({', '.join(f'{k} {v}' for k, v in rw['count'].items())}) |"
        )
    return lines + [""]


def _cosine_cell(v: dict | None, v0: dict | None) -> str:
    """cosine (CI) [null band] and layer 0's cosine, for one pair under one centring."""
    if v is None:
        return "n/a"
    star = " *" if v.get("outside_null_band") else ""
    cell = f"{fmt(v['cosine'])} {_ci(v.get('ci_lo'), v.get('ci_hi'))} "
    cell += f"{_band(v['null_lo'], v['null_hi'])}{star}"
    return cell + (f"; L0 {fmt(v0['cosine'])}" if v0 else "")


def _cosine_table(method: str, by_centre: dict, study: tuple) -> list[str]:
    """One method's table: every emotion pair x centring at the last layer, layer 0 beside."""
    first = next(iter(by_centre.values()))
    header, fam = study
    last = first["last_layer"]["layer"]
    lines = [
        f"**{method}** ({first['position']}), layer {last} (the last; the study does not say "
        f"which layer its cosines are from), null n_perm={first['n_perm']}, CI "
        f"n_boot={first.get('n_boot', 'n/a')}",
        "",
        "| pair | "
        + (f"{header} | " if header else "")
        + " | ".join(f"{c}: cos (CI) [null band]; L0" for c in by_centre)
        + " |",
        "|---|" + ("---|" if header else "") + "---|" * len(by_centre),
    ]
    for pair in PAIRS:
        cells = [
            _cosine_cell(
                h["last_layer"]["pairs"].get(pair),
                (h.get("layer0") or {}).get("pairs", {}).get(pair),
            )
            for h in by_centre.values()
        ]
        study_cell = f"{_study_cos(fam, pair, method)} | " if header else ""
        lines.append(f"| {pair} | {study_cell}" + " | ".join(cells) + " |")
    return lines + [""]


def _probe_lines(s: dict) -> list[str]:
    """Per-layer probe table (accuracy with CI, shuffle null band, layer 0 beside every layer)
    and the best block layer with its selection-aware null and how often resamples pick it."""
    probe = s.get("probe", {})
    if not probe:
        return []
    feats = list(probe)
    p0 = probe[feats[0]]
    lines = [
        f"Linear probe per layer ({p0['n_folds']}-fold shrinkage LDA, 4 classes, chance "
        f"{fmt(p0['chance'], 2)}, n={p0['n']} prompts): accuracy (95% prompt-bootstrap CI, "
        f"n_boot={p0.get('n_boot', 'n/a')}) [label-shuffle null band, n_perm={p0['n_perm']}]. "
        "Layer 0 is the embeddings: the lexical baseline every deeper layer is read against. "
        "The study reports no probe.",
        "",
    ]
    return lines + _probe_best(probe)


def _probe_best(probe: dict) -> list[str]:
    lines = []
    for feat, p in probe.items():
        if "max_null" not in p:
            continue
        shares = ", ".join(
            f"L{k} {fmt(v, 2)}"
            for k, v in sorted(p["argmax_shares"].items(), key=lambda kv: -kv[1])
        )
        mx = p["max_null"]
        lines.append(
            f"- {feat}: best block layer {p['best_layer']} accuracy **{fmt(p['accuracy'])}** "
            f"{_ci(*p['ci'])}; against the max over layers 1..L of each shuffle draw "
            f"{_band(mx['lo'], mx['hi'])} (p = {fmt(mx['p_value'], 3)}, the floor "
            f"{fmt(mx.get('p_floor'), 3)} with n_perm={mx['n']}); at "
            f"that layer alone the null's 95th percentile is {fmt(p['null_p95'])}; layer 0 "
            f"(embeddings) {fmt(p['layer0_lexical_baseline'])}. Share of bootstrap resamples "
            f"picking each layer as best: {shares}."
        )
    return lines + [""]


def _read_csv(path: Path) -> list[dict]:
    """The rows of a phase's CSV, or [] when it did not write it."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _num(v: str | None) -> float | None:
    """A CSV cell as a float (None when empty)."""
    return float(v) if v not in (None, "") else None


def _probe_table(root: Path, label: str) -> list[str]:
    """Every layer's probe accuracy (CI) [null band], per feature, from probe.csv."""
    rows = _read_csv(root / "vectors" / artifacts.slug(label) / "probe.csv")
    if not rows:
        return []
    feats = list(dict.fromkeys(r["feature"] for r in rows))
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    by = {(r["feature"], r["layer"]): r for r in rows}
    lines = [
        "| layer | " + " | ".join(f"{f}: acc (CI) [null band]" for f in feats) + " |",
        "|---|" + "---|" * len(feats),
    ]
    for li in layers:
        name = by[(feats[0], li)].get("layer_name", "")
        cells = []
        for f in feats:
            r = by.get((f, li))
            if r is None:
                cells.append("n/a")
                continue
            ci = _ci(_num(r.get("ci_lo")), _num(r.get("ci_hi")))
            cells.append(
                f"{fmt(_num(r['accuracy']))} {ci} {_band(_num(r['null_lo']), _num(r['null_hi']))}"
            )
        lines.append(f"| {li} ({name}) | " + " | ".join(cells) + " |")
    return lines + [""]


def _token_vs_end(s: dict) -> list[str]:
    h = (s.get("headline") or {}).get("token_vs_sentence_end")
    if not h or h.get("figure") is None:
        return []
    nb, l0 = h["null_band"], h["layer0"]
    return [
        f"Span tokens vs last token: probe accuracy on the span-token mean minus on the last "
        f"token, mean over block layers {h['layers'][0]}..{h['layers'][-1]}: "
        f"**{fmt(h['figure'])}** {_ci(*h['ci'])} against the paired sign-flip null "
        f"{_band(*nb)} (p = {fmt(h['p_value'], 3)}, n={h['n']}); at layer 0 (embeddings) the "
        f"same difference is {fmt(l0['figure'])} {_ci(*l0['ci'])}.",
        "",
    ]


def section_vectors(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phases 3 and 3.5: emotion vectors",
        "",
        "Cosine between two emotions' vectors. **raw** = class mean of the residual; **neutral** = "
        "class mean minus the neutral mean; **grand** = class mean minus the mean of the four "
        "class means. Each has its own baseline, so each is printed with its prompt-bootstrap "
        "95% CI (in parentheses) beside its label-shuffle null band [in brackets], which measures in this run the baseline "
        "each centring has whatever the labels (raw means in an anisotropic stream can sit "
        "near 1; vectors sharing one subtracted neutral mean are pushed up; vectors centred on "
        "the mean of k classes toward -1/(k-1)). What carries information is the distance from the null, not "
        "the raw cosine. Each cell ends with the same cosine at layer 0 (L0, the embeddings: "
        "the lexical baseline). Our cosines are from the last layer (the final residual, before "
        "the final layer norm); the study does not say which layer its figures are from. The "
        "study's figures stand only beside the study's own models (or, marked, their "
        "stand-ins).",
        "",
    ]
    for label in labels:
        s = read_json(root / "vectors" / artifacts.slug(label) / "summary.json")
        if not s:
            continue
        kind, fam = study_model(root, label)
        header = _study_header(kind, fam)
        lines += [f"### {label}", ""]
        if header is None:
            lines += [
                f"The study ran GPT-2 small, Pythia-160M and GPT-Neo-125M; {label} is none of "
                "them, so no study figure stands beside it.",
                "",
            ]
        for method, by_centre in s.get("cosines", {}).items():
            lines += _cosine_table(method, by_centre, (header, fam))
        lines += ["\\* outside the 95% label-shuffle band. No best layer is named for cosines.", ""]
        lines += _probe_lines(s) + _probe_table(root, label) + _token_vs_end(s)
        lines += images(root, root / "vectors" / artifacts.slug(label), limit=8) + [""]
    return lines


def _alignment_row(pair_name: str, h: dict, study: str) -> str:
    """One table row of the alignment headline (a pair x pairing)."""
    pro = h["procrustes"]

    def ri(m):
        r = m.get("random_init")
        if not r:
            return "not run"
        return f"{fmt(r['figure'])}; ours - it {fmt(r['minus_random_init'])} {_ci(*r['minus_random_init_ci'])}"

    raw = h["raw"]
    r2n = h.get("r2_test_null_band") or {}
    return (
        f"| {pair_name} | {h['pairing']} | {h['n_fit_rows']} ({h['n_fit_prompts']} prompts) / "
        f"{h['d_a']} = {fmt(h['n_over_d'], 2)} | {fmt(raw['figure'])} "
        f"{_ci(*(raw['ci'] or (None, None)))} [k/d {fmt(raw['random_expectation'])}] | "
        f"{fmt(h['figure'])} {_ci(*(h['ci'] or (None, None)))} {_band(*h['null_band'])} | "
        f"{ri(h)} | {fmt(pro['figure'])} {_ci(*(pro['ci'] or (None, None)))} "
        f"{_band(*pro['null_band'])} | {ri(pro)} | {fmt(h['r2_test'])} "
        f"{_band(r2n.get('lo'), r2n.get('hi'))} | {study} |"
    )


def measured_sentence(pair_name: str, h: dict) -> str:
    """What was measured for one pair, in words: n, d, the figure, its null band, the control."""
    where = "above" if h["above_null"] else "inside"
    ri = h.get("random_init")
    ctrl = (
        f"; a random-init copy of B gave {fmt(ri['figure'])} ({ri['draws']} draw(s)), ours minus "
        f"it {fmt(ri['minus_random_init'])} {_ci(*ri['minus_random_init_ci'])}"
        if ri
        else "; no random-init control was run"
    )
    return (
        f"- {pair_name} ({h['pairing']}): n = {h['n_fit_rows']} fit rows in d = {h['d_a']} "
        f"(n/d = {fmt(h['n_over_d'], 2)}); overlap after the linear map {fmt(h['figure'])}, "
        f"{where} its shuffled-pairing null band {_band(*h['null_band'])}{ctrl}."
    )


def section_alignment(root: Path) -> list[str]:
    s = read_json(root / "alignment" / "alignment_summary.json")
    if not s:
        return []
    head = (s.get("headline") or {}).get("subspaces_agree_up_to_change_of_basis")
    lines = [
        "## Phase 6: subspaces and cross-model alignment",
        "",
        "Overlap = mean cos^2 of the principal angles between two k-dim emotion subspaces. The "
        "map is fit on NEUTRAL activations only; the emotion subspace of A is carried through it "
        "and compared with B's. Every figure is the mean over the compared block layers (no best "
        "layer is named), with its whole-prompt bootstrap 95% CI (in parentheses) beside its "
        "nulls [in brackets]: random subspaces (k/d) for the raw overlap; maps refit on shuffled "
        "pairings that move whole prompts for the overlap after mapping and the held-out R^2 "
        "(the layer mean taken draw by draw); and the same figure with model B replaced by a "
        "randomly initialised copy of it fed the same tokens (random-init B), which a shuffled "
        "pairing alone cannot rule out. n/d = fit rows per dimension of A. The CIs are "
        "percentile intervals; resampled (repeated) prompts make the overlaps noisier, so an "
        "interval can sit off its point estimate.",
        "",
    ]
    if head is None:
        return lines + ["(This run's alignment summary has no headline; rerun the phase.)", ""]
    lines += [
        "| pair | pairing | n fit rows / d = n/d | raw overlap (CI) [random] | after linear map "
        "(CI) [shuffled null] | random-init B (linear) | Procrustes (CI) [shuffled null] | "
        "random-init B (Procrustes) | held-out R^2 [null] | study |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    sentences = []
    for pair_name, by_pairing in head["pairs"].items():
        a, b = pair_name.split("->", 1)
        study = _study_alignment(root, a, b)
        for pairing, h in by_pairing.items():
            lines.append(_alignment_row(pair_name, h | {"pairing": pairing}, study))
            sentences.append(measured_sentence(pair_name, h | {"pairing": pairing}))
    lines += ["", "What was measured:", "", *sentences, ""]
    if not any(h.get("random_init") for by in head["pairs"].values() for h in by.values()):
        lines += [f"Random-init control: {s['design'].get('random_init_control')}.", ""]
    lines += [
        "Per-layer rows (with the last layer's figures and every null) in "
        "`alignment/alignment.csv`.",
        "",
    ]
    return lines + images(root, root / "alignment", limit=12) + [""]


def _study_alignment(root: Path, a: str, b: str) -> str:
    """The study's alignment figures when both models are the study's (or their stand-ins)."""
    kinds = [study_model(root, x)[0] for x in (a, b)]
    if None in kinds:
        return "- (not the study's models)"
    tail = "" if kinds == ["study", "study"] else " (study's models; ours are stand-ins)"
    return f"raw 0.13-0.15, linear ~0.99, delta cos^2 +0.84..0.87 (layer not stated){tail}"
