"""The report's opening: the study's five conclusions, each with this run's evidence, its control
and a verdict computed from them.

    lines = section_conclusions(root, labels, n_layers, level)

Each conclusion reads the summaries the phases wrote (never the report's own text) and ends in
one of three verdicts:

    supported       the run's figure clears its control in the study's direction
    not supported   the run computed it and it does not clear its control (or points the
                    other way)
    not testable    the run did not compute what the conclusion needs (a phase off, one
                    model, a 4-layer model for a claim about layers 6-7); the reason is given

A verdict is never a wording choice: `Verdict` is built from numbers, and the sentence printed is
`Verdict.line()`, which only names figures the summaries hold.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report.format import fmt, read_json

SUPPORTED, NOT_SUPPORTED, NOT_TESTABLE = "supported", "not supported", "not testable"
# Text measures a steering or head-edit verdict may rest on (model-internal ones move by
# arithmetic when the edit adds the very vector they read).
TEXT_MEASURES = ("sentiment", "politeness", "kw_gratitude", "kw_anger", "kw_apology")


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One conclusion's outcome: `claim` (the study's words), `verdict` (one of the three),
    `evidence` (what the run computed, with its control), `reason` (why not testable)."""

    claim: str
    verdict: str
    evidence: str = ""
    reason: str = ""

    def line(self) -> str:
        tail = self.evidence if self.verdict != NOT_TESTABLE else self.reason
        return f"| {self.claim} | **{self.verdict}** | {tail} |"


def _ci(ci) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if ci and len(ci) == 2 else "[-, -]"


def token_vs_sentence_end(root: Path, labels: Sequence[str]) -> Verdict:
    claim = "Token vectors extract emotion better than sentence-end ones"
    parts, wins, losses = [], 0, 0
    for label in labels:
        s = read_json(root / "vectors" / artifacts.slug(label) / "summary.json") or {}
        h = (s.get("headline") or {}).get("token_vs_sentence_end")
        if not h or h.get("figure") is None:
            continue
        lo, hi = (h.get("ci") or [None, None])[:2]
        p = h.get("p_value")
        beyond = p is not None and p <= 0.05 and lo is not None and lo > 0
        wins += bool(beyond)
        losses += bool(hi is not None and hi < 0)
        parts.append(f"{label.split(' ')[0]}: {fmt(h['figure'])} {_ci(h.get('ci'))}, p {fmt(p)}")
    if not parts:
        return Verdict(
            claim,
            NOT_TESTABLE,
            reason="the vectors phase wrote no token-vs-sentence-end probe comparison",
        )
    evidence = (
        "probe accuracy on span-token means minus on last tokens, mean over block layers, "
        "95% prompt-bootstrap CI, paired sign-flip null: " + "; ".join(parts)
    )
    verdict = SUPPORTED if wins == len(parts) else NOT_SUPPORTED
    return Verdict(claim, verdict, evidence + f" ({wins} of {len(parts)} models beyond the null)")


def subspaces_agree(root: Path) -> Verdict:
    claim = "Emotion subspaces agree across models up to a change of basis"
    s = read_json(root / "alignment" / "alignment_summary.json") or {}
    pairs = ((s.get("headline") or {}).get("subspaces_agree_up_to_change_of_basis") or {}).get(
        "pairs"
    )
    if not pairs:
        return Verdict(claim, NOT_TESTABLE, reason="no alignment was run (it needs two models)")
    rows, ok, n, controlled = [], 0, 0, 0
    for pair, by_pairing in pairs.items():
        for pairing, h in by_pairing.items():
            n += 1
            ri = h.get("random_init") or {}
            controlled += bool(ri)
            clears = bool(h.get("above_null")) and (not ri or bool(ri.get("above_random_init")))
            ok += clears
            short = re.sub(r" \([^)]*\)", "", pair)
            rows.append(
                f"{short} ({pairing}): {fmt(h.get('figure'))} {_ci(h.get('ci'))} vs shuffled "
                f"{_ci(h.get('null_band'))}"
                + (f", random-init {fmt(ri.get('figure'))}" if ri else "")
            )
    evidence = (
        "overlap after the linear map fit on neutral prompts, mean over block layers: "
        + "; ".join(rows)
        + f" ({ok} of {n} clear the whole-prompt shuffled null"
        + (" and the random-init network" if controlled else "; no random-init control ran")
        + ")"
    )
    return Verdict(claim, SUPPORTED if ok == n else NOT_SUPPORTED, evidence)


def _steering_verdicts(root: Path, label: str) -> dict:
    s = read_json(root / "steering" / artifacts.slug(label) / "summary.json") or {}
    return (s.get("neutral") or {}).get("verdicts") or {}


def _text_calls(verdicts: Mapping) -> list[tuple[str, str, dict]]:
    return [
        (emotion, measure, v)
        for emotion, by_measure in verdicts.items()
        for measure, v in by_measure.items()
        if measure in TEXT_MEASURES and isinstance(v, dict)
    ]


def steering_layers(root: Path, labels: Sequence[str], n_layers: Mapping[str, int]) -> Verdict:
    claim = "Layers 6-7 carry the steering effect"
    deep = [lb for lb in labels if n_layers.get(lb) == 12]
    if not deep:
        return Verdict(
            claim,
            NOT_TESTABLE,
            reason="the claim is about layers 6-7 of the study's "
            "12-layer models; the models here have "
            + ", ".join(str(n_layers.get(lb, "?")) for lb in labels)
            + " layers",
        )
    layers, n = [], 0
    for label in deep:
        for _, _, v in _text_calls(_steering_verdicts(root, label)):
            if v.get("verdict") == "beyond_control" and v.get("best"):
                layers.append(int(v["best"]["layer"]))
            n += 1
    if not n:
        return Verdict(claim, NOT_TESTABLE, reason="no steering verdicts were written")
    in_band = sum(1 for layer in layers if layer in (6, 7))
    evidence = (
        f"layer of the best coherent cell of each text-measure verdict that clears the random "
        f"control (resid_pre[L]): {sorted(layers) or 'none'}; {in_band} of {len(layers)} at 6-7"
    )
    verdict = SUPPORTED if layers and in_band * 2 > len(layers) else NOT_SUPPORTED
    return Verdict(claim, verdict, evidence)


def l0h0(root: Path, labels: Sequence[str], level: float) -> Verdict:
    claim = "L0H0 is a local emotion circuit (ablation lowers, patching raises sentiment)"
    rows = []
    for label in labels:
        s = read_json(root / "heads" / artifacts.slug(label) / "generation" / "summary.json")
        named = (s or {}).get("named_sets") or {}
        rows += [(label, r) for r in named.get("L0H0", []) if r.get("score") == "sentiment"]
    if not rows:
        return Verdict(claim, NOT_TESTABLE, reason="head-edit generation of L0H0 was not run")
    found = {"ablation": [], "patching": []}
    for _, r in rows:
        mode = r.get("mode")
        lo, hi, p = r.get("diff_lo"), r.get("diff_hi"), r.get("p_vs_control")
        if mode not in found or lo is None or hi is None:
            continue
        right_way = hi < 0 if mode == "ablation" else lo > 0
        found[mode].append(bool(right_way and p is not None and p <= level))
    evidence = ", ".join(
        f"{m}: {sum(v)} of {len(v)} (emotion, kind) rows beyond the random head sets"
        for m, v in found.items()
    )
    verdict = SUPPORTED if any(found["ablation"]) and any(found["patching"]) else NOT_SUPPORTED
    return Verdict(
        claim,
        verdict,
        "sentiment change minus random same-size head sets' change, two-level bootstrap CI, "
        f"p vs the sets (level {level}): " + evidence,
    )


def random_control(root: Path, labels: Sequence[str]) -> Verdict:
    claim = "The random control shows the steering effect is not mere added norm"
    total, beyond = 0, 0
    for label in labels:
        for _, _, v in _text_calls(_steering_verdicts(root, label)):
            total += 1
            beyond += v.get("verdict") == "beyond_control"
    if not total:
        return Verdict(claim, NOT_TESTABLE, reason="no steering verdicts were written")
    evidence = (
        f"{beyond} of {total} (model, emotion, text measure) verdicts on neutral prompts clear "
        "every control (random directions of equal norm, and label-shuffled directions where "
        "run) by the same best-coherent-cell selection"
    )
    return Verdict(claim, SUPPORTED if beyond else NOT_SUPPORTED, evidence)


def section_conclusions(
    root: Path, labels: Sequence[str], n_layers: Mapping[str, int], level: float = 0.05
) -> list[str]:
    """The opening table: claim, verdict, evidence (or why it is not testable)."""
    verdicts = [
        token_vs_sentence_end(root, labels),
        subspaces_agree(root),
        steering_layers(root, labels, n_layers),
        l0h0(root, labels, level),
        random_control(root, labels),
    ]
    lines = [
        "## The study's conclusions, tested",
        "",
        "Each verdict is computed from this run's figures and their controls (details in the "
        'sections below); "not testable" says what the run lacks.',
        "",
        "| the study concluded | here | evidence and control |",
        "|---|---|---|",
    ]
    return lines + [v.line() for v in verdicts] + [""]
