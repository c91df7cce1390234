"""report.md: for each phase, the study's reported figure beside ours (same definition, stated),
with the control or null, the confidence interval, and the plots embedded.

Reads only what the phases wrote (each stage's summary.json and PNGs), so it can be rebuilt
without any model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from jaxcirc.data import dataset
from jaxcirc.infra import artifacts

PAIRS = ("gratitude-anger", "gratitude-apology", "anger-apology")
STUDY_SENTENCE_END = {
    "gpt2": {"gratitude-anger": 0.48, "gratitude-apology": 0.68, "anger-apology": 0.75},
    "pythia": "all 0.96-0.99",
    "neo": "like GPT-2, a bit higher",
}
STUDY_TOKEN_PYTHIA = {"gratitude-anger": -0.75, "gratitude-apology": -0.73}


def _f(x, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | float):
        if isinstance(x, float) and not math.isfinite(x):
            return "n/a"
        return f"{x:.{nd}f}" if isinstance(x, float) else str(x)
    return str(x)


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _imgs(root: Path, folder: Path, limit: int = 12) -> list[str]:
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.rglob("*.png"))[:limit]:
        rel = p.relative_to(root)
        out.append(f"![{p.stem}]({rel.as_posix()})")
    return out


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
        return _f(v.get(pair)) if isinstance(v, dict) else v
    if method in ("token", "token_delta") and fam == "pythia" and pair in STUDY_TOKEN_PYTHIA:
        return _f(STUDY_TOKEN_PYTHIA[pair])
    return "-"


def _section_dataset(root: Path, cfg) -> list[str]:
    stats = _read(root / "dataset" / "stats.json")
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
        f"| mean length (characters) | {study['mean_chars']} | {_f(ours['mean_chars'], 1)} |",
        f"| balanced | yes | {_f(ours['balanced'])} |",
    ]
    if "realworld" in stats:
        rw = stats["realworld"]
        lines.append(
            f"| real-world texts | 35 | {rw['total']} ({', '.join(f'{k} {v}' for k, v in rw['count'].items())}) |"
        )
    return lines + [""]


def _section_vectors(root: Path, labels: list[str]) -> list[str]:
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
        s = _read(root / "vectors" / artifacts.slug(label) / "summary.json")
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
                        f"{_f(v['cosine'])} [{_f(v['null_lo'], 2)}, {_f(v['null_hi'], 2)}]{star}"
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
                f"{_f(p['chance'], 2)}): best block layer {p['best_layer']} accuracy "
                f"**{_f(p['accuracy'])}** vs label-shuffle null {_f(p['null_mean'])} (95th pct "
                f"{_f(p['null_p95'])}, n_perm={p['n_perm']}); layer 0 (embeddings, lexical "
                f"baseline) {_f(p['layer0_lexical_baseline'])}. The study reports no probe."
            )
            lines.append("")
        lines += _imgs(root, root / "vectors" / artifacts.slug(label), limit=8) + [""]
    return lines


def _section_alignment(root: Path) -> list[str]:
    s = _read(root / "alignment" / "alignment_summary.json")
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
                f"| {pair_name} | {summ['pairing']} | {_f(summ['n_over_d'], 2)} | "
                f"{_f(ml.get('overlap_raw'))} [{_f(ml.get('overlap_random_expectation'))}] | "
                f"{_f(ml.get('overlap_mapped'))} [{_f(ml.get('overlap_mapped_null_hi'))}] | "
                f"{_f(ml.get('delta_cos2'))} | "
                f"{_f(mp.get('overlap_mapped'))} [{_f(mp.get('overlap_mapped_null_hi'))}] | "
                f"{_f(ml.get('r2_test'))} [{_f(ml.get('r2_test_null_hi'))}] | "
                f"{_f(ml.get('cka_fit'))} [{_f(ml.get('cka_null_hi'))}] |"
            )
    lines += [
        "",
        "Means over the compared block layers (layer >= 1); per-layer rows in "
        "`alignment/alignment.csv`.",
        "",
    ]
    return lines + _imgs(root, root / "alignment", limit=12) + [""]


def write_report(root: Path, cfg) -> Path:
    """Write `<root>/report/report.md` and a copy at `<root>/report.md`; returns the latter."""
    from jaxcirc import study

    root = Path(root)
    labels = study.model_labels(cfg)
    lines = [
        f"# jaxcirc study report: {cfg.name}",
        "",
        f"Config hash `{artifacts.config_hash(cfg.to_dict())[:16]}`; models: "
        + ", ".join(labels)
        + (
            "."
            if cfg.models.kind == "checkpoint"
            else " - **small TRAINED STAND-INS of each family, not the study's checkpoints**; their "
            "numbers show the method works, not what GPT-2 / Pythia / GPT-Neo do."
        ),
        f"BOS prepended: {cfg.prepend_bos}. Dataset: {cfg.dataset.set}.",
        "",
    ]
    lines += _models_section(root, cfg)
    lines += _section_dataset(root, cfg)
    lines += _section_vectors(root, labels)
    lines += _section_alignment(root)
    from jaxcirc.report import effects as report_effects

    lines += report_effects.section_steering(root, labels)
    lines += report_effects.section_heads(root, labels)
    lines += report_effects.section_cross_model(root)
    text = "\n".join(lines) + "\n"
    artifacts.write_text(root / "report" / "report.md", text.replace("](", "](../"))
    artifacts.write_text(root / "report.md", text)
    return root / "report.md"


def _models_section(root: Path, cfg) -> list[str]:
    metrics = _read(root / "models.json")
    if not metrics:
        return []
    lines = [
        "## Models",
        "",
        "| model | family | layers | d_model | heads | notes |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in metrics.items():
        lines.append(
            f"| {label} | {m['family']} | {m['n_layers']} | {m['d_model']} | {m['n_heads']} | {m.get('notes', '')} |"
        )
    return lines + [""]
