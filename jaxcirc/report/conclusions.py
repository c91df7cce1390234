"""The report's opening: the study's five conclusions, each with this run's evidence, its control
and a verdict computed from them.

    lines = section_conclusions(root, labels, n_layers)

Each conclusion reads the summaries the phases wrote (never the report's own text) and ends in
one of three verdicts:

    supported       the run's figure clears its control in the study's direction
    not supported   the run computed it and it does not clear its control (or points the
                    other way)
    not testable    the run did not compute what the conclusion needs (a phase off, one
                    model, a 4-layer model for a claim about layers 6-7), or its control has
                    too few draws for p to reach the level (p floor 1 / (1 + draws) above it);
                    the reason is given

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
        f"layer of the best coherent cell of each text-measure verdict that clears every "
        f"control (resid_pre[L]): {sorted(layers) or 'none'}; {in_band} of {len(layers)} at 6-7"
    )
    verdict = SUPPORTED if layers and in_band * 2 > len(layers) else NOT_SUPPORTED
    return Verdict(claim, verdict, evidence)


def _l0h0_rows(root: Path, labels: Sequence[str]) -> list[tuple[str, dict, float]]:
    """(model, row, CI level of its summary) for each sentiment row of the named set L0H0 in
    heads/<model>/generation/summary.json."""
    rows = []
    for label in labels:
        s = read_json(root / "heads" / artifacts.slug(label) / "generation" / "summary.json")
        named = (s or {}).get("named_sets") or {}
        level = float((s or {}).get("level", 0.95))
        rows += [(label, r, level) for r in named.get("L0H0", []) if r.get("score") == "sentiment"]
    return rows


def _l0h0_mode(rows: list[tuple[str, dict, float]], mode: str) -> tuple[str, str]:
    """One mode's (status, evidence): status SUPPORTED when a row with a reachable p floor moves
    sentiment the study's way (ablation down, patching up: the CI of the difference from the
    random sets on that side of 0) AND is beyond the random sets (the phase's beyond_control);
    NOT_TESTABLE when no row's p floor reaches the level (too few same-size sets); else
    NOT_SUPPORTED."""
    mine = [(r, level) for _, r, level in rows if r.get("mode") == mode]
    testable, hits, floors = 0, 0, []
    for r, level in mine:
        floor = r.get("p_floor")
        if floor is None or r.get("diff_lo") is None or r.get("diff_hi") is None:
            continue
        floors.append(f"{fmt(floor)} ({r.get('n_control_sets')} sets)")
        if floor > 1 - level:
            continue
        testable += 1
        right_way = r["diff_hi"] < 0 if mode == "ablation" else r["diff_lo"] > 0
        hits += bool(right_way and r.get("beyond_control"))
    if hits:
        status = SUPPORTED
    elif testable:
        status = NOT_SUPPORTED
    else:
        status = NOT_TESTABLE
    head = f"{mode}: {hits} of {testable} testable (model, emotion, kind) rows the study's way "
    head += f"and beyond the random head sets, of {len(mine)}"
    return status, head + (f"; p floors {', '.join(sorted(set(floors)))}" if floors else "")


def l0h0(root: Path, labels: Sequence[str]) -> Verdict:
    """Reads generation/summary.json's named_sets.L0H0 sentiment rows (p_floor, beyond_control,
    the difference from the random sets and its CI). A claim the run's control cannot decide
    (every p floor above 1 - level: too few random sets of L0H0's size, e.g. 16-head
    stand-ins) is "not testable", never "not supported"."""
    claim = "L0H0 is a local emotion circuit (ablation lowers, patching raises sentiment)"
    rows = _l0h0_rows(root, labels)
    if not rows:
        return Verdict(claim, NOT_TESTABLE, reason="head-edit generation of L0H0 was not run")
    level = rows[0][2]
    found = {m: _l0h0_mode(rows, m) for m in ("ablation", "patching")}
    statuses = {st for st, _ in found.values()}
    evidence = (
        "sentiment change minus random same-size head sets' change, two-level bootstrap CI, "
        f"p vs the sets at {fmt(1 - level, 2)}: " + "; ".join(ev for _, ev in found.values())
    )
    if NOT_SUPPORTED in statuses:
        return Verdict(claim, NOT_SUPPORTED, evidence)
    if NOT_TESTABLE in statuses:
        untestable = [m for m, (st, _) in found.items() if st == NOT_TESTABLE]
        reason = (
            f"too few random head sets of L0H0's size for p to reach {fmt(1 - level, 2)} "
            f"({', '.join(untestable)}: p cannot go below its floor 1 / (1 + sets)); " + evidence
        )
        return Verdict(claim, NOT_TESTABLE, reason=reason)
    return Verdict(claim, SUPPORTED, evidence)


def _control_counts(root: Path, labels: Sequence[str]) -> str:
    """Each model's steering controls and their draws, e.g. "gpt2-standin: random 10 generated /
    19 next-token, label_shuffled 3 generated / 19 next-token"."""
    parts = []
    for label in labels:
        s = read_json(root / "steering" / artifacts.slug(label) / "summary.json") or {}
        controls = (s.get("neutral") or {}).get("controls") or {}
        if controls:
            each = ", ".join(
                f"{name} {c.get('n_text')} generated / {c.get('n_next_token')} next-token"
                for name, c in controls.items()
            )
            parts.append(f"{label.split(' ')[0]}: {each}")
    return "; ".join(parts)


def random_control(root: Path, labels: Sequence[str]) -> Verdict:
    """Supported when a text-measure steering verdict clears every control it was tested
    against; "not testable" when none does but some beat every draw at a p floor above the
    level (the draws cannot decide); else not supported."""
    claim = "The random control shows the steering effect is not mere added norm"
    total, beyond, at_floor = 0, 0, 0
    for label in labels:
        for _, _, v in _text_calls(_steering_verdicts(root, label)):
            total += 1
            beyond += v.get("verdict") == "beyond_control"
            at_floor += v.get("verdict") == "beyond_all_draws"
    if not total:
        return Verdict(claim, NOT_TESTABLE, reason="no steering verdicts were written")
    evidence = (
        f"{beyond} of {total} (model, emotion, text measure) verdicts on neutral prompts clear "
        f"every control by the same best-coherent-cell selection, {at_floor} more beat every "
        f"draw with too few draws for p to reach the level (controls: "
        f"{_control_counts(root, labels) or 'none recorded'})"
    )
    if beyond:
        return Verdict(claim, SUPPORTED, evidence)
    if at_floor:
        return Verdict(claim, NOT_TESTABLE, reason="too few generated control draws; " + evidence)
    return Verdict(claim, NOT_SUPPORTED, evidence)


def section_conclusions(
    root: Path, labels: Sequence[str], n_layers: Mapping[str, int]
) -> list[str]:
    """The opening table: claim, verdict, evidence (or why it is not testable)."""
    verdicts = [
        token_vs_sentence_end(root, labels),
        subspaces_agree(root),
        steering_layers(root, labels, n_layers),
        l0h0(root, labels),
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
