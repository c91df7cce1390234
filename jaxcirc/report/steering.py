"""The report's steering and patching section (phases 4-5), from steering/<model>/.

Every sentence here is filled from the phase's summaries (fields listed in
`jaxcirc.phases.steering`'s docstring): the verdicts name their control, how many draws it had,
the p floor those draws allow, and the selection both went through.
"""

from __future__ import annotations

from pathlib import Path

from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts
from jaxcirc.report.format import fmt, images, read_json

EMOTIONS = EMOTIONAL

# What each verdict code reads as in a table cell.
VERDICT_WORDS = {
    "beyond_control": "beyond control",
    "beyond_all_draws": "beyond every draw (p at its floor)",
    "within_control": "within control",
    "untestable": "not testable (no coherent cell)",
    "no_control": "no control draws",
}


def table_measures(emotion: str, measures) -> list[str]:
    """The measures a section's table shows for an emotion (the study's outcomes: sentiment,
    politeness, the emotion's own keywords and next-token logit difference); verdicts.csv holds
    every measure."""
    want = ("sentiment", "politeness", f"kw_{emotion}", f"logit_diff_{emotion}")
    return [m for m in want if m in measures]


def _p_cell(tests: dict) -> str:
    """Each control's p with its draws and floor: "random: 0.091 (10 draws, floor 0.091)"."""
    return "; ".join(
        f"{name}: {fmt(t['p'])} ({t['n']} draws, floor {fmt(t['p_floor'])})"
        for name, t in tests.items()
    )


def _null_cell(tests: dict) -> str:
    return "; ".join(f"{name}: {fmt(t['null_max_95'])}" for name, t in tests.items())


def verdict_table(s: dict) -> list[str]:
    """The verdict table of one steering summary: per emotion, its table measures."""
    verdicts = s.get("verdicts") or {}
    level = round(100 * float((s.get("config") or {}).get("ci_level", 0.95)))
    lines = [
        f"| emotion | measure | best coherent cell | effect [{level}% CI] | effect / alpha | "
        "control: 95th pct of its draws' best | p (draws, floor) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in [e for e in EMOTIONS if e in verdicts]:
        for m in table_measures(e, verdicts[e]):
            v = verdicts[e][m]
            b = v.get("best")
            if not b:
                lines.append(
                    f"| {e} | {m} | none coherent | | | | | {VERDICT_WORDS['untestable']} |"
                )
                continue
            lines.append(
                f"| {e} | {m} | L{b['layer']}, alpha {b['alpha']:+g} | {fmt(b['effect'])} "
                f"[{fmt(b['ci'][0])}, {fmt(b['ci'][1])}] | {fmt(b['per_unit_alpha'])} | "
                f"{_null_cell(v['controls'])} | {_p_cell(v['controls'])} | "
                f"{VERDICT_WORDS.get(v['verdict'], v['verdict'])} |"
            )
    return lines


def verdict_lists(s: dict) -> dict[str, list[str]]:
    """Every (emotion, measure) of a summary by verdict code, as "emotion / measure (L, alpha)"."""
    out: dict[str, list[str]] = {code: [] for code in VERDICT_WORDS}
    for e in [e for e in EMOTIONS if e in (s.get("verdicts") or {})]:
        for m, v in s["verdicts"][e].items():
            b = v.get("best")
            where = f" (L{b['layer']}, alpha {b['alpha']:+g})" if b else ""
            out.setdefault(v["verdict"], []).append(f"{e} / {m}{where}")
    return out


def _controls_line(s: dict) -> str:
    parts = []
    for name, c in (s.get("controls") or {}).items():
        parts.append(
            f"{name} ({c['what']}): {c['n_text']} generated, for the text measures; "
            f"{c['n_next_token']} for the next-token measures (forward passes beyond the "
            "generated ones)"
        )
    return "Controls: " + "; ".join(parts) + "." if parts else "No control directions in this run."


def _coherence_line(s: dict) -> str:
    c = s.get("coherence")
    if not c:
        return ""
    th, un = c["thresholds"], c["unsteered"]
    counts = "; ".join(
        f"{name} " + ", ".join(f"{k} {v}" for k, v in per.items())
        for name, per in c["cells_per_class"].items()
    )
    return (
        f"Coherence: unsteered continuations repeat {fmt(un['repetition'])} of their token "
        f"{c['repetition_n']}-grams and cost the unsteered model {fmt(un['loss'])} nats/token "
        f"(loss over the first {c.get('loss_prompts', 'all')} prompts); a cell is repetitive "
        f"when its repetition rises by more than {fmt(th['repetition_rise'])}, degraded when "
        f"its loss rises by more than {fmt(th['loss_rise'])} nats/token. (layer, alpha) cells "
        f"per class: {counts}."
    )


def verdict_sentences(s: dict) -> list[str]:
    """What was found, text measures and next-token ones together, with the level and the
    number of tests; then how many continuations had no text."""
    if not s.get("verdicts"):
        return ["No verdicts in this run's summary."]
    lists = verdict_lists(s)
    level = s.get("verdict_level")
    lines = [
        f"Beyond the control at p <= {fmt(level, 2)}: "
        + ("; ".join(lists["beyond_control"]) or "none")
        + ". Beyond every control draw, with too few draws for p to reach "
        + f"{fmt(level, 2)}: "
        + ("; ".join(lists["beyond_all_draws"]) or "none")
        + f". Not testable (no coherent cell): {len(lists['untestable'])}. "
        + f"{s.get('n_verdicts')} (emotion, measure) verdicts in verdicts.csv, p not adjusted "
        + "for their number.",
    ]
    empty = s.get("empty_continuations")
    if empty and empty.get("min_new_tokens"):
        lines.append(
            f"EOS was held back for the first {empty['min_new_tokens']} new tokens (transformers' "
            "min_new_tokens), so every continuation has text to score."
        )
    elif empty and empty.get("unsteered") is not None:
        steered = empty.get("steered")
        lines.append(
            f"Continuations that end at once (EOS first, nothing to score): unsteered "
            f"{100 * empty['unsteered']:.0f}%"
            + (f", steered {100 * steered:.0f}%" if steered is not None else "")
            + "; text measures are 0 there whatever the direction."
        )
    return [" ".join(lines)]


def _set_block(root: Path, label: str, part: str, s: dict, base: Path) -> list[str]:
    lines = [
        f"### {label}: {part} prompts (n={s.get('n_prompts')}, vectors "
        f"{s.get('vector_method')} / {s.get('vector_centre')})",
        "",
        f"Alphas {', '.join(f'{a:+g}' if a else '0' for a in s.get('alphas', []))} in units of "
        f"{fmt(s.get('alpha_unit'))} x the typical residual norm of "
        f"{s.get('norms_source', 'the prompts steered')}. {_controls_line(s)}",
        "",
        _coherence_line(s),
        "",
    ]
    lines += verdict_table(s) + [""]
    lines += verdict_sentences(s) + [""]
    lines += images(root, base / part / "plots", limit=6) + [""]
    return lines


def patch_table(p: dict) -> list[str]:
    """One patching summary's verdicts: per site and measure (text and next-token ones)."""
    lines = [
        "| site | measure | best layer | source - control [95% CI] | sign flips | p (floor) | "
        "coherence (source / control) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for site, per in (p.get("verdicts") or {}).items():
        for m, v in per.items():
            coh = v.get("coherence") or {}
            lines.append(
                f"| {site} | {m} | {v['layer']} | {fmt(v['source_minus_control'])} "
                f"[{fmt(v['ci'][0])}, {fmt(v['ci'][1])}] | {v['n_flips']} | {fmt(v['p'])} "
                f"({fmt(v['p_floor'])}) | {coh.get('source', '')} / {coh.get('control', '')} | "
                f"{VERDICT_WORDS.get(v['verdict'], v['verdict'])} |"
            )
    return lines


def _patching_block(root: Path, label: str, pdir: Path) -> list[str]:
    found = {
        d.name: p
        for d in sorted(x for x in pdir.iterdir() if x.is_dir())
        if (p := read_json(d / "patching_summary.json"))
    }
    if not found:
        return []
    positions = next(iter(found.values())).get("positions")
    lines = [
        f"**Patching ({label})**: the site at the {positions!r} prompt position(s) replaced by "
        "its value from an emotional prompt, against a neutral-to-neutral patch (control). "
        "Verdict per site and measure: the layer with the largest |mean (source - control)| "
        "over targets, against the same maximum over layers after random sign flips of each "
        "target's difference; effects with 95% bootstrap CIs in `patching_effects.csv`.",
        "",
    ]
    for name, p in found.items():
        lines += [f"{name} -> {p.get('target_set')} (n={p.get('n_targets')}):", ""]
        lines += patch_table(p) + [""]
    return lines + images(root, pdir, limit=6) + [""]


def section_steering(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phases 4-5: steering and activation patching",
        "",
        "Study: alpha > 0 along gratitude made text more polite/positive, alpha < 0 more "
        "negative; layers 6-7 strongest; a random vector of equal norm had no effect; the effect "
        "held on 35 real-world texts. Ours: every (layer, alpha) cell against the unsteered run, "
        "paired per prompt, with a bootstrap CI over prompts; each generated cell classed "
        "coherent, repetitive (collapse into repetition) or degraded (text the unsteered model "
        "finds unlikely). The verdict reads only coherent cells: per (emotion, measure), the "
        "cell with the largest |effect| / |alpha| (effects grow with the push, so cells are "
        "compared per unit of it), against the same choice made on each draw of each control "
        "(text measures: over the draw's own coherent cells; next-token logit differences: "
        "over the emotion's coherent cells); p = (1 + #draws reaching the figure) / (1 + draws), "
        "never below 1 / (1 + draws). The controls: isotropic random directions of equal norm, "
        "and, where the run made them, label-shuffled vectors (made like the emotion vectors "
        "with the emotion labels permuted among the emotional prompts: a direction about its "
        "emotion must beat them, one about emotional text in general need not); each row names "
        "every control it was tested against with its draws and p floor, and its verdict is the "
        "weakest over them. Projections of the final residual on the emotion vectors "
        "get no verdict: the added vector moves them by itself (effects.csv column "
        "`arithmetic`). `layer_profile.csv` keeps the older sensitivity (the mean of sign(alpha) "
        "x effect at the largest positive and negative alpha, where text often has collapsed); "
        "no verdict reads it.",
        "",
    ]
    any_found = False
    for label in labels:
        base = root / "steering" / artifacts.slug(label)
        for part in ("neutral", "realworld"):
            s = read_json(base / part / "summary.json")
            if not s:
                continue
            any_found = True
            lines += _set_block(root, label, part, s, base)
        pdir = base / "patching"
        if pdir.is_dir():
            lines += _patching_block(root, label, pdir)
    return lines + [""] if any_found else []
