"""The report's steering and patching section (phases 4-5), from steering/<model>/."""

from __future__ import annotations

from pathlib import Path

from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts
from jaxcirc.report.format import fmt, images, read_json

EMOTIONS = EMOTIONAL


def _steer_table(s: dict) -> list[str]:
    best = s.get("best_layer") or {}
    lines = [
        "| direction | measure | best layer | sensitivity [95% CI] | random directions [band] | p vs random |",
        "|---|---|---|---|---|---|",
    ]
    for direction in [e for e in EMOTIONS if e in best]:
        for measure, b in best[direction].items():
            lines.append(
                f"| {direction} | {measure} | {b['layer']} | {fmt(b['sensitivity'])} "
                f"[{fmt(b['ci'][0])}, {fmt(b['ci'][1])}] | [{fmt(b['random_band'][0])}, "
                f"{fmt(b['random_band'][1])}] | {fmt(b['p_vs_random'])} |"
            )
    return lines


INTERNAL_MEASURES = ("logit_diff_", "proj_")  # model-internal: no generated text needed


def beyond_random(s: dict) -> list[tuple[str, str, str]]:
    """The (direction, measure) pairs of a steering summary whose best-layer CI lies entirely
    outside the random directions' band, as (direction, measure, "direction / measure (layer L:
    value [lo, hi] vs band [lo, hi])")."""
    out = []
    for direction in [e for e in EMOTIONS if e in (s.get("best_layer") or {})]:
        for measure, b in s["best_layer"][direction].items():
            lo, hi = b["ci"]
            band_lo, band_hi = b["random_band"]
            if lo > band_hi or hi < band_lo:
                out.append(
                    (
                        direction,
                        measure,
                        f"{direction} / {measure} (layer {b['layer']}: {fmt(b['sensitivity'])} "
                        f"[{fmt(lo)}, {fmt(hi)}] vs band [{fmt(band_lo)}, {fmt(band_hi)}])",
                    )
                )
    return out


def _steer_verdict(s: dict) -> list[str]:
    """Which measures beat the control, text and model-internal apart, and how many
    continuations had no text to score."""
    if not s.get("n_random_seeds"):
        return ["No random directions in this run: no control to compare with."]
    found = beyond_random(s)
    text = [d for _, m, d in found if not m.startswith(INTERNAL_MEASURES)]
    n_inner_found = len(found) - len(text)
    n_inner = sum(
        m.startswith(INTERNAL_MEASURES) for v in (s.get("best_layer") or {}).values() for m in v
    )
    lines = [
        "Beyond the random band (best-layer CI entirely outside it): text measures: "
        + ("; ".join(text) if text else "none")
        + f". Model-internal measures (logit differences, projections): {n_inner_found} of "
        + f"{n_inner}.",
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


def section_steering(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phases 4-5: steering and activation patching",
        "",
        "Study: alpha > 0 along gratitude made text more polite/positive, alpha < 0 more "
        "negative; layers 6-7 strongest; a random vector of equal norm had no effect; the effect "
        "held on 35 real-world texts. Ours: every (layer, alpha) cell against the unsteered run, "
        "paired per prompt, with a bootstrap 95% CI over prompts, beside the same sweep along "
        "random directions of equal norm (several seeds). *Sensitivity* = the least-squares slope "
        "of the effect on alpha (alpha in units of the layer's typical residual norm; see "
        "`norm_definition`). A direction beats the control only when its CI clears the random band.",
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
            lines += [
                f"### {label}: {part} prompts (n={s.get('n_prompts')}, vectors "
                f"{s.get('vector_method')} / {s.get('vector_centre')}, {s.get('n_random_seeds')} "
                "random seeds)",
                "",
            ]
            lines += _steer_table(s) + [""]
            lines += _steer_verdict(s) + [""]
            lines += images(root, base / part / "plots", limit=6) + [""]
        pdir = base / "patching"
        if pdir.is_dir():
            lines += [
                f"**Patching ({label})**: the block input / attention / MLP output at the last "
                "prompt token replaced by its value from an emotional prompt, against a "
                "neutral-to-neutral patch (control); effects with 95% bootstrap CIs in "
                "`patching_effects.csv`.",
                "",
            ]
            lines += images(root, pdir, limit=6) + [""]
    return lines + [""] if any_found else []
