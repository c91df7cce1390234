"""Report sections for the representation phases: the dataset (1), emotion vectors and probes
(3, 3.5), subspaces and cross-model alignment (6). Each reads the phase's own files and puts the
study's reported figure beside ours; see jaxcirc.report.
"""

from __future__ import annotations

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


def _family_key(label: str) -> str | None:
    low = label.lower()
    if "pythia" in low or "neox" in low:
        return "pythia"
    if "neo" in low:
        return "neo"
    if "gpt2" in low or "gpt-2" in low:
        return "gpt2"
    return None


def _study_cos(label: str, pair: str, method: str) -> str:
    fam = _family_key(label)
    if method == "sentence_end" and fam:
        v = STUDY_SENTENCE_END[fam]
        return fmt(v.get(pair)) if isinstance(v, dict) else v
    if method in ("token", "token_delta") and fam == "pythia" and pair in STUDY_TOKEN_PYTHIA:
        return fmt(STUDY_TOKEN_PYTHIA[pair])
    return "-"


def section_dataset(root: Path, cfg) -> list[str]:
    stats = read_json(root / "dataset" / "stats.json")
    if not stats:
        return []
    set_name = cfg.dataset.set
    study = dataset.STUDY_STATS[set_name]
    ours = stats["prompts"]
    lines = [
        "## Phase 1: dataset",
        "",
        "| | study | ours |",
        "|---|---|---|",
        f"| prompts ({set_name}) | {study['total']} | {ours['total']} |",
        f"| per emotion | {study['per_emotion']} | {', '.join(f'{k} {v}' for k, v in ours['count'].items())} |",
        f"| mean length (characters) | {study['mean_chars']} | {fmt(ours['mean_chars'], 1)} |",
        f"| balanced | yes | {fmt(ours['balanced'])} |",
    ]
    if "realworld" in stats:
        rw = stats["realworld"]
        lines.append(
            f"| real-world texts | 35 | {rw['total']} ({', '.join(f'{k} {v}' for k, v in rw['count'].items())}) |"
        )
    return lines + [""]


def section_vectors(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phases 3 and 3.5: emotion vectors",
        "",
        "Cosine between two emotions' vectors. **raw** = class mean of the residual; **neutral** = "
        "class mean minus the neutral mean; **grand** = class mean minus the mean of the four "
        "class means. Each has its own baseline, so each is printed beside its label-shuffle null "
        "(mean [95% band]): raw means in an anisotropic stream give cosines near 1 whatever the "
        "labels; vectors sharing one subtracted neutral mean are pushed up; vectors centred on "
        "the mean of k classes are pushed toward -1/(k-1). What carries information is the "
        "distance from the null, not the raw cosine. Last layer = the final residual (before the "
        "final layer norm).",
        "",
    ]
    for label in labels:
        s = read_json(root / "vectors" / artifacts.slug(label) / "summary.json")
        if not s:
            continue
        lines += [f"### {label}", ""]
        for method, by_centre in s.get("cosines", {}).items():
            pos = next(iter(by_centre.values()))["position"]
            lines += [
                f"**{method}** ({pos}), layer {next(iter(by_centre.values()))['last_layer']['layer']} "
                f"(last), n_perm={next(iter(by_centre.values()))['n_perm']}",
                "",
                "| pair | study | " + " | ".join(f"{c} [null band]" for c in by_centre) + " |",
                "|---|---|" + "---|" * len(by_centre),
            ]
            for pair in PAIRS:
                cells = []
                for h in by_centre.values():
                    v = h["last_layer"]["pairs"].get(pair)
                    if v is None:
                        cells.append("n/a")
                        continue
                    star = " *" if v.get("outside_null_band") else ""
                    cells.append(
                        f"{fmt(v['cosine'])} [{fmt(v['null_lo'], 2)}, {fmt(v['null_hi'], 2)}]{star}"
                    )
                lines.append(
                    f"| {pair} | {_study_cos(label, pair, method)} | " + " | ".join(cells) + " |"
                )
            lines.append("")
        lines.append("\\* outside the 95% label-shuffle band.")
        lines.append("")
        for feat, p in s.get("probe", {}).items():
            lines.append(
                f"Linear probe ({feat}, {p['n_folds']}-fold shrinkage LDA, 4 classes, chance "
                f"{fmt(p['chance'], 2)}): best block layer {p['best_layer']} accuracy "
                f"**{fmt(p['accuracy'])}** vs label-shuffle null {fmt(p['null_mean'])} (95th pct "
                f"{fmt(p['null_p95'])}, n_perm={p['n_perm']}); layer 0 (embeddings, lexical "
                f"baseline) {fmt(p['layer0_lexical_baseline'])}. The study reports no probe."
            )
            lines.append("")
        lines += images(root, root / "vectors" / artifacts.slug(label), limit=8) + [""]
    return lines


def section_alignment(root: Path) -> list[str]:
    s = read_json(root / "alignment" / "alignment_summary.json")
    if not s:
        return []
    lines = [
        "## Phase 6: subspaces and cross-model alignment",
        "",
        "Overlap = mean cos^2 of the principal angles between two k-dim emotion subspaces. The "
        "map is fit on NEUTRAL activations only; the emotion subspace of A is carried through it "
        "and compared with B's. Every figure stands beside its null: random subspaces (raw "
        "overlap), maps refit on shuffled pairings (overlap after mapping, R^2), permuted rows "
        "(CKA). n/d is the number of fit rows per dimension: at n/d <= 1 a full-rank map fits "
        "anything, and the study's ~0.99 is what such a map gives.",
        "",
        "| pair | pairing | n/d | raw overlap (study 0.13-0.15) [random] | after linear map (study ~0.99) [null hi] | delta cos^2 (study +0.84..0.87) | Procrustes overlap [null hi] | held-out R^2 [null hi] | CKA [null hi] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    pairs = s.get("pairs", s)
    for pair_name, per_pairing in pairs.items():
        if not isinstance(per_pairing, dict):
            continue
        for summ in per_pairing.values():
            if not isinstance(summ, dict) or "methods" not in summ:
                continue
            methods = summ["methods"]
            lin = next((v for k, v in methods.items() if k.startswith("linear")), None)
            pro = methods.get("procrustes")
            if lin is None:
                continue
            ml = lin["mean_over_layers"]
            mp = pro["mean_over_layers"] if pro else {}
            lines.append(
                f"| {pair_name} | {summ['pairing']} | {fmt(summ['n_over_d'], 2)} | "
                f"{fmt(ml.get('overlap_raw'))} [{fmt(ml.get('overlap_random_expectation'))}] | "
                f"{fmt(ml.get('overlap_mapped'))} [{fmt(ml.get('overlap_mapped_null_hi'))}] | "
                f"{fmt(ml.get('delta_cos2'))} | "
                f"{fmt(mp.get('overlap_mapped'))} [{fmt(mp.get('overlap_mapped_null_hi'))}] | "
                f"{fmt(ml.get('r2_test'))} [{fmt(ml.get('r2_test_null_hi'))}] | "
                f"{fmt(ml.get('cka_fit'))} [{fmt(ml.get('cka_null_hi'))}] |"
            )
    lines += [
        "",
        "Means over the compared block layers (layer >= 1); per-layer rows in "
        "`alignment/alignment.csv`.",
        "",
    ]
    return lines + images(root, root / "alignment", limit=12) + [""]
