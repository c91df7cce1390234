"""The report's cross-model patching section, from cross_model/."""

from __future__ import annotations

from pathlib import Path

from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.report.format import fmt, read_json


def section_cross_model(root: Path) -> list[str]:
    s = read_json(root / "cross_model" / "summary.json")
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
        for e in EMOTIONAL:
            c = p["cosines"][e]
            nl = c["null_random_A_directions_mapped"]
            mapped = (p.get("steer_mapped") or {}).get("best_layer", {}).get(e, {})
            own = (p.get("steer_own") or {}).get("best_layer", {}).get(e, {})
            m_kw = mapped.get(f"logit_diff_{e}") or mapped.get(f"kw_{e}")
            o_kw = own.get(f"logit_diff_{e}") or own.get(f"kw_{e}")

            def cell(b, band=True):
                if not b:
                    return "n/a"
                out = f"{fmt(b['sensitivity'])} [{fmt(b['ci'][0])}, {fmt(b['ci'][1])}]"
                if band:
                    out += f" vs [{fmt(b['random_band'][0])}, {fmt(b['random_band'][1])}]"
                return out

            lines.append(
                f"| {name} | {p['layer_a']} -> {p['layer_b']} | {p['pairing']}, "
                f"{fmt(p['n_over_d'], 2)} | {e} | {fmt(c['cos_mapped_vs_own'])} "
                f"[{fmt(nl['lo'], 2)}, {fmt(nl['hi'], 2)}] | {cell(m_kw)} | {cell(o_kw, False)} |"
            )
    lines += [
        "",
        "Sensitivity here is for the emotion-word logit difference (logit_diff_<emotion>, "
        "model-internal, at the next-token position; keyword rates of the generated text are in "
        "each pair's `mapped/` table and each model's `own__<B>/`).",
        "",
    ]
    return lines
