"""Report sections for the intervention phases: steering / patching (4-5), heads (7), and
cross-model patching. Each reads the phase's own summary files; see jaxcirc.report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts
from jaxcirc.report.markdown import _f, _imgs, _read

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
                f"| {direction} | {measure} | {b['layer']} | {_f(b['sensitivity'])} "
                f"[{_f(b['ci'][0])}, {_f(b['ci'][1])}] | [{_f(b['random_band'][0])}, "
                f"{_f(b['random_band'][1])}] | {_f(b['p_vs_random'])} |"
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
                        f"{direction} / {measure} (layer {b['layer']}: {_f(b['sensitivity'])} "
                        f"[{_f(lo)}, {_f(hi)}] vs band [{_f(band_lo)}, {_f(band_hi)}])",
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
            s = _read(base / part / "summary.json")
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
            lines += _imgs(root, base / part / "plots", limit=6) + [""]
        pdir = base / "patching"
        if pdir.is_dir():
            lines += [
                f"**Patching ({label})**: the block input / attention / MLP output at the last "
                "prompt token replaced by its value from an emotional prompt, against a "
                "neutral-to-neutral patch (control); effects with 95% bootstrap CIs in "
                "`patching_effects.csv`.",
                "",
            ]
            lines += _imgs(root, pdir, limit=6) + [""]
    return lines + [""] if any_found else []


def _csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def section_heads(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phase 7: attention heads",
        "",
        "Study: 12 x 12 x 3 = 432 screening scores; top heads mostly in layer 0 (heads 0, 1, 4, "
        "5); ablating L0H0 changed sentiment by -0.0349, patching its output by +0.1102 (no "
        "control or CI reported). Ours: three screening methods (exact zero/mean ablation, direct "
        "attribution, attribution patching), their rank correlation, and ablation / patching of "
        "the top heads and L0H0 with generation, scored against random heads with bootstrap CIs.",
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
            lines += ["| " + " | ".join(_short(r[k]) for k in keys) + " |" for r in corr[:12]]
            lines.append("")
        top = _read(d / "top_k.json")
        if top:
            lines += ["Top heads (first entries of `top_k.json`):", "", "```"]
            lines += json.dumps(top, indent=1)[:2500].splitlines()
            lines += ["```", ""]
        for name in ("head_generation_summary.json", "generation/summary.json"):
            g = _read(d / name)
            if g:
                lines += [f"Ablation / patching with generation (`{name}`):", "", "```"]
                lines += json.dumps(g, indent=1)[:3000].splitlines()
                lines += ["```", ""]
        lines += _imgs(root, d, limit=10) + [""]
    return lines if found else []


def _short(v: str) -> str:
    try:
        x = float(v)
    except ValueError:
        return v
    return str(int(x)) if x.is_integer() and "." not in v else _f(x)


def section_cross_model(root: Path) -> list[str]:
    s = _read(root / "cross_model" / "summary.json")
    if not s:
        return []
    lines = [
        "## Cross-model patching (the study's future work)",
        "",
        "Model A's emotion vector carried into model B through a linear map fit on neutral "
        f"activations (ridge_rel {s['ridge_rel']}), at relative depth {s['relative_depth']}. "
        "cos(mapped, B's own) is shown beside its null: random A-directions sent through the same "
        "map. Then B is steered with the mapped vector, with its own vector (ceiling), and with "
        "random directions of equal norm (control).",
        "",
        "| A -> B | layers | pairing, n/d | emotion | cos(mapped, own) [null band] | mapped: best sensitivity [CI] vs random band | own: best sensitivity [CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in s["pairs"].items():
        for e in EMOTIONS:
            c = p["cosines"][e]
            nl = c["null_random_A_directions_mapped"]
            mapped = (p.get("steer_mapped") or {}).get("best_layer", {}).get(e, {})
            own = (p.get("steer_own") or {}).get("best_layer", {}).get(e, {})
            m_kw = mapped.get(f"logit_diff_{e}") or mapped.get(f"kw_{e}")
            o_kw = own.get(f"logit_diff_{e}") or own.get(f"kw_{e}")

            def cell(b, band=True):
                if not b:
                    return "n/a"
                out = f"{_f(b['sensitivity'])} [{_f(b['ci'][0])}, {_f(b['ci'][1])}]"
                if band:
                    out += f" vs [{_f(b['random_band'][0])}, {_f(b['random_band'][1])}]"
                return out

            lines.append(
                f"| {name} | {p['layer_a']} -> {p['layer_b']} | {p['pairing']}, "
                f"{_f(p['n_over_d'], 2)} | {e} | {_f(c['cos_mapped_vs_own'])} "
                f"[{_f(nl['lo'], 2)}, {_f(nl['hi'], 2)}] | {cell(m_kw)} | {cell(o_kw, False)} |"
            )
    lines += [
        "",
        "Sensitivity here is for the emotion-word logit difference (logit_diff_<emotion>, "
        "model-internal, at the next-token position; keyword rates of the generated text are in "
        "each pair's `mapped/` table and each model's `own__<B>/`).",
        "",
    ]
    return lines
