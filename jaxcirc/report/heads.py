"""The report's head section (phase 7), from heads/<model>/.

Reads top_k.json (the screen's top heads with the max-over-heads null), rank_correlation.csv,
generation/summary.json (head edits under generation: the study's L0H0 beside ours, and the top
sets), circuits/circuits.csv and neurons/neurons_summary.json + neurons_top.csv. Every table
says what its numbers are; a missing file leaves its table out.
"""

from __future__ import annotations

import csv
from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report.format import fmt, images, read_json, short
from jaxcirc.report.representation import study_model

# Heads shown per top list in the report (top_k.json holds `heads.top_k` of them).
TOP_SHOWN = 5


def _csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _ci(lo, hi) -> str:
    return f"[{fmt(lo)}, {fmt(hi)}]"


def _top_table(top: dict) -> list[str]:
    """The screen's most supportive heads per emotion and ablation kind, for the exact method's
    projection (the reference method), with the family-wise max-over-heads null."""
    lists = top.get("lists") or {}
    method = "exact" if any(k.startswith("exact/") for k in lists) else None
    method = method or next((k.split("/")[0] for k in lists), None)
    keys = [k for k in lists if k.startswith(f"{method}/projection/")]
    if not keys:
        return []
    n_null, level = top.get("n_null"), top.get("level", 0.95)
    lines = [
        f"Top heads ({method} method, projection on the emotion vector; support = m(clean) - "
        "m(head removed), mean over the emotion's prompts; CI: per-head bootstrap, not "
        f"adjusted). p: the score against the best head's score on each of {n_null} random "
        "unit directions, over all heads of the map (family-wise; p = (1 + #)/(1 + n), at "
        f"least {fmt(1 / (1 + n_null)) if n_null else 'n/a'}); clears: p <= {fmt(1 - level, 2)}.",
        "",
        "| emotion | ablation | rank | head | score | CI | p (max over heads) | clears | "
        "heads clearing |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        _, _, kind, emotion = key.split("/")
        entry = lists[key]
        n_clear = f"{entry.get('n_clear_max_null')} of {entry.get('n_heads')}"
        for r in entry.get("top", [])[:TOP_SHOWN]:
            lines.append(
                f"| {emotion} | {kind} | {r['rank']} | L{r['layer']}H{r['head']} | "
                f"{fmt(r['score'])} | {_ci(r['ci_lo'], r['ci_hi'])} | {fmt(r.get('p_max_null'))} "
                f"| {fmt(r.get('clears_max_null'))} | {n_clear} |"
            )
    return lines + [""]


def _generation_row(r: dict, study: str) -> str:
    band = _ci(r.get("control_band_lo"), r.get("control_band_hi"))
    return (
        f"| {r['mode']} | {r['emotion']} | {r['ablation']} | {r['prompts']} | {study} | "
        f"{fmt(r['effect'])} {_ci(r['ci_lo'], r['ci_hi'])} | {band} | "
        f"{fmt(r.get('control_mean'))} {_ci(r.get('control_lo'), r.get('control_hi'))} | "
        f"{fmt(r.get('p_vs_control'))} ({r.get('n_control_sets')} sets) |"
    )


def _generation_tables(g: dict, beside_study: bool = True) -> list[str]:
    """The study's L0H0 sentiment figures beside ours (only when `beside_study`: a model the
    study ran, or a stand-in of its family), and the top sets, from generation/summary.json
    (sentiment rows)."""
    study = (g.get("study") or {}).get("L0H0") or {} if beside_study else {}
    head = (
        "| mode | emotion | ablation | prompts | study | ours: effect [CI] | control band "
        "(one random set) | control mean [two-level CI] | p vs control |"
    )
    sep = "|---|---|---|---|---|---|---|---|---|"
    lines = []
    l0h0 = [r for r in (g.get("named_sets") or {}).get("L0H0", []) if r["score"] == "sentiment"]
    if l0h0:
        lines += [
            "L0H0, sentiment of the generated continuation (VADER compound), edited - clean, "
            "mean over prompts with a paired bootstrap CI. The study's figures: model, emotion, "
            "prompts and ablation kind not stated, no control or CI. Control: random head sets "
            "of the same size, same edit, prompts and draws; p = (1 + #sets with |mean| >= "
            "|effect|)/(1 + n sets).",
            "",
            head,
            sep,
        ]
        lines += [_generation_row(r, fmt(study.get(r["mode"]), 4)) for r in l0h0]
        lines.append("")
    tops = [r for r in g.get("top_sets", []) if r["score"] == "sentiment"]
    if tops:
        lines += [f"Top head sets ({tops[0]['selection']}), sentiment:", "", head, sep]
        for r in tops:
            lines.append(
                _generation_row(
                    {**r, "ablation": f"{r['head_set']} ({r['heads']}) {r['ablation']}"}, ""
                )
            )
        lines.append("")
    return lines


def _circuits_table(rows: list[dict]) -> list[str]:
    if not rows or "p_vs_null" not in rows[0]:  # none, or a run from before the null search
        return []
    r0 = rows[0]
    lines = [
        f"Circuits: head sets found on a search half of the prompts (n={r0['n_search']}), every "
        f"effect measured on the held-out half (n={r0['n_held_out']}); null: the same search on "
        f"{r0['n_null']} random targets, scored the same way; p = (1 + #null >= joint)/(1 + n).",
        "",
        "| mode | emotion | k | heads | held-out joint [CI] | search-half joint | null band | p "
        "| interaction [CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['emotion']} | {r['k']} | {r['heads']} | {short(r['joint'])} "
            f"[{short(r['joint_lo'])}, {short(r['joint_hi'])}] | {short(r['search_joint'])} | "
            f"[{short(r['null_lo'])}, {short(r['null_hi'])}] | {short(r['p_vs_null'])} | "
            f"{short(r['interaction'])} [{short(r['interaction_lo'])}, "
            f"{short(r['interaction_hi'])}] |"
        )
    return lines + [""]


def _neurons_table(summary: dict | None, top: list[dict]) -> list[str]:
    if not summary:
        return []
    lines = [
        f"Neurons (layers {summary['layers'][0]}-{summary['layers'][1] - 1}): exact removal vs "
        "attribution, Spearman rho over the shortlist (the best by attribution: selected, "
        "biased toward agreement) and over a random sample (seeded, unselected); top neurons "
        "clearing the max-over-neurons null (projection, p <= 0.05).",
        "",
        "| emotion | rho shortlist | rho random sample | top neurons clearing the null |",
        "|---|---|---|---|",
    ]
    for emo, v in summary.get("values", {}).items():
        rho = [
            fmt(((v.get(s) or {}).get("exact_vs_attribution") or {}).get("spearman"))
            for s in ("shortlist", "random_sample")
        ]
        mine = [r for r in top if r["emotion"] == emo and r["measure"] == "projection"]
        clear = sum(r.get("clears_max_null") == "True" for r in mine)
        lines.append(f"| {emo} | {rho[0]} | {rho[1]} | {clear} of {len(mine)} listed |")
    return lines + [""]


def section_heads(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phase 7: attention heads",
        "",
        "Study: 12 x 12 x 3 = 432 screening scores; top heads mostly in layer 0 (heads 0, 1, 4, "
        "5); ablating L0H0 changed sentiment by -0.0349, patching its output by +0.1102 (no "
        "control or CI reported).",
        "",
    ]
    found = False
    for label in labels:
        d = root / "heads" / artifacts.slug(label)
        if not d.is_dir():
            continue
        found = True
        lines += [f"### {label}", ""]
        corr = _csv_rows(d / "rank_correlation.csv")
        if corr:
            keys = list(corr[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(short(r[k]) for k in keys) + " |" for r in corr[:12]]
            lines.append("")
        lines += _top_table(read_json(d / "top_k.json") or {})
        beside = study_model(root, label)[0] is not None
        lines += _generation_tables(read_json(d / "generation" / "summary.json") or {}, beside)
        lines += _circuits_table(_csv_rows(d / "circuits" / "circuits.csv"))
        lines += _neurons_table(
            read_json(d / "neurons" / "neurons_summary.json"),
            _csv_rows(d / "neurons" / "neurons_top.csv"),
        )
        lines += images(root, d, limit=10) + [""]
    return lines if found else []
