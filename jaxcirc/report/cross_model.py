"""The report's cross-model patching section, from cross_model/."""

from __future__ import annotations

from pathlib import Path

from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.report.format import fmt, read_json


def _cell(b: dict | None, band: bool = True) -> str:
    """A steering effect (sensitivity [CI], and the random band) as the steering summary gives
    it, or "n/a" where it lacks those fields."""
    if not b or b.get("sensitivity") is None:
        return "n/a"
    ci = b.get("ci") or (None, None)
    out = f"{fmt(b['sensitivity'])} [{fmt(ci[0])}, {fmt(ci[1])}]"
    rb = b.get("random_band")
    if band and rb:
        out += f" vs [{fmt(rb[0])}, {fmt(rb[1])}]"
    return out


def _map_cell(p: dict) -> str:
    """The held-out R^2 of the map that steers, beside its shuffled-pairing null band."""
    if p.get("map_r2_test") is None:
        return "n/a (not computed by this run)"
    n = p.get("map_r2_test_null") or {}
    return (
        f"{fmt(p['map_r2_test'])} [{fmt(n.get('lo'))}, {fmt(n.get('hi'))}] "
        f"({p.get('n_test_prompts')} held-out / {p.get('n_fit_prompts')} fit prompts)"
    )


def pair_rows(name: str, p: dict) -> list[str]:
    out = []
    for e in EMOTIONAL:
        c = p["cosines"][e]
        nl = c["null_random_A_directions_mapped"]
        mapped = ((p.get("steer_mapped") or {}).get("best_layer") or {}).get(e, {})
        own = ((p.get("steer_own") or {}).get("best_layer") or {}).get(e, {})
        m_kw = mapped.get(f"logit_diff_{e}") or mapped.get(f"kw_{e}")
        o_kw = own.get(f"logit_diff_{e}") or own.get(f"kw_{e}")
        ri = (p.get("random_init") or {}).get(e)
        ri_cell = f"{fmt(ri['max'])} (max of {len(ri['per_draw'])})" if ri else "not run"
        out.append(
            f"| {name} | {p['layer_a']} -> {p['layer_b']} | {p['pairing']}, "
            f"{fmt(p['n_over_d'], 2)} | {_map_cell(p)} | {e} | {fmt(c['cos_mapped_vs_own'])} "
            f"[{fmt(nl['lo'], 2)}, {fmt(nl['hi'], 2)}] | {ri_cell} | {_cell(m_kw)} | "
            f"{_cell(o_kw, False)} |"
        )
    return out


def _null_size(s: dict) -> str:
    """ "<n> draws, <level> band" of the random-mapped null, from the first pair."""
    first = next(iter(s["pairs"].values()), {})
    nl = next(iter((first.get("cosines") or {}).values()), {}).get(
        "null_random_A_directions_mapped", {}
    )
    if not nl:
        return "no pairs"
    level = nl.get("level")
    band = f"central {round(100 * level)}% band" if level else "its band"
    return f"{nl.get('n', 'n/a')} draws, {band}"


def section_cross_model(root: Path) -> list[str]:
    s = read_json(root / "cross_model" / "summary.json")
    if not s:
        return []
    lines = [
        "## Cross-model patching (the study's future work)",
        "",
        "Model A's emotion vector carried into model B through a linear map fit on the neutral "
        f"activations of a fit split of the neutral prompts (ridge_rel {s['ridge_rel']}), at "
        f"relative depth {s['relative_depth']}. The map's held-out R^2 is on the held-out "
        "neutral prompts (split by prompt), beside maps refit on shuffled pairings (whole "
        "prompts permuted). cos(mapped, own) is shown beside its null: random A-directions sent "
        f"through the same map ({_null_size(s)}), and beside the same cosine with B replaced by "
        "randomly initialised copies of it fed the same tokens (random-init B: two networks "
        "that read the same tokens share their structure, which the random directions do not "
        "rule out). Then B is steered with the mapped vector, with its own vector (ceiling), "
        "and with random directions of equal norm (control).",
        "",
        "| A -> B | layers | pairing, n/d | map held-out R^2 [null band] | emotion | cos(mapped, own) [null band] | random-init B: cos | mapped: best sensitivity [CI] vs random band | own: best sensitivity [CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in s["pairs"].items():
        lines += pair_rows(name, p)
    lines += [
        "",
        "Sensitivity here is for the emotion-word logit difference (logit_diff_<emotion>, "
        "model-internal, at the next-token position; keyword rates of the generated text are in "
        "each pair's `mapped/` table and each model's `own__<B>/`).",
        "",
    ]
    return lines
