"""The report's English vs Japanese section, from cross_language/ (jaxcirc.phases.cross_language)."""

from __future__ import annotations

from pathlib import Path

from jaxcirc.report.cross_model import pair_rows
from jaxcirc.report.format import fmt, images, read_json
from jaxcirc.report.representation import measured_sentence


def _ci(ci) -> str:
    return f"({fmt(ci[0])}, {fmt(ci[1])})" if ci else "(no CI)"


def _alignment_rows(pair: str, entry: dict) -> tuple[list[str], list[str]]:
    """Table rows and measured sentences of one English <-> Japanese pair, both directions."""
    rows, sentences = [], []
    for direction in ("en->ja", "ja->en"):
        for pairing, h in (entry.get(direction) or {}).items():
            ri = h.get("random_init")
            ri_cell = f"{fmt(ri['figure'])} ({ri['draws']} draw(s))" if ri else "not run"
            r2 = h.get("r2_test_null_band") or {}
            rows.append(
                f"| {pair} | {direction} | {pairing} | {h['n_fit_rows']} / {h['d_a']} | "
                f"{fmt(h['raw']['figure'])} | {fmt(h['figure'])} {_ci(h.get('ci'))} "
                f"[{fmt(h['null_band'][0])}, {fmt(h['null_band'][1])}] | "
                f"{'yes' if h['above_null'] else 'no'} | {ri_cell} | {fmt(h['r2_test'])} "
                f"[{fmt(r2.get('lo'))}, {fmt(r2.get('hi'))}] |"
            )
            sentences.append(measured_sentence(f"{pair}, {direction}", h | {"pairing": pairing}))
    return rows, sentences


def section_cross_language(root: Path) -> list[str]:
    s = read_json(root / "cross_language" / "summary.json")
    if not s:
        return []
    counts = ", ".join(f"{k} {v}" for k, v in s["paired_prompts"].items())
    lines = [
        "## English vs Japanese",
        "",
        "English model(s) on the English prompts, Japanese model(s) on the Japanese prompts, "
        f"paired prompt for prompt by en_id (paired: {counts}; "
        f"{s['unpaired_japanese_prompts']} Japanese prompts without a counterpart left out). "
        "The languages tokenise differently, so rows are paired per prompt (last token, or mean "
        "over tokens). Alignment: phase 6 on these pairs, the map fit on the paired NEUTRAL "
        "prompts, each model's emotion subspace from its own class means; the overlap after "
        "the map (mean cos^2 of principal angles, mean over the compared block layers) with its "
        "prompt-bootstrap CI (parentheses), its null [brackets] of maps refit on shuffled "
        "whole-prompt pairings, and the same figure with the target model replaced by a "
        "randomly initialised copy of it (random-init).",
        "",
        "| English <-> Japanese | direction | pairing | n fit / d | raw overlap | after linear map "
        "(CI) [shuffled null] | above null | random-init | held-out R^2 [null] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sentences = []
    for pair, entry in s["alignment"].items():
        rows, sent = _alignment_rows(pair, entry)
        lines += rows
        sentences += sent
    lines += ["", "What was measured:", "", *sentences, ""]
    if s.get("patching"):
        lines += [
            "Patching across languages: model A's emotion vector mapped into model B (map fit "
            "on the paired neutral prompts) steers B on its own language's neutral prompts "
            "(English -> Japanese on the Japanese ones, scored by the Japanese text measures; "
            "Japanese -> English, where run, on their English pairs, scored by the English "
            "ones), beside B's own vector (ceiling) and random directions of equal norm "
            "(control); columns as in cross-model patching.",
            "",
            "| A -> B | layers | pairing, n/d | map held-out R^2 [null band] | emotion | "
            "cos(mapped, own) [null band] | random-init B: cos | mapped: best sensitivity [CI] "
            "vs random band | own: best sensitivity [CI] |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, p in s["patching"].items():
            lines += pair_rows(name, p)
        lines.append("")
    folder = root / "cross_language" / "alignment"
    return lines + images(root, folder, limit=8) + [""]
