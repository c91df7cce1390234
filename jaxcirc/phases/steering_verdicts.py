"""The verdicts of the steering phase (and its patching), from arrays the runner has computed.

    verdicts = steering_verdicts(effects, emotions, coh, controls, Setup(layers, alphas, level))
    rows = verdict_rows(verdicts, labels)
    entry = patch_verdict(delta, boot, n_flip, seed, level)

Steering, per (emotion, measure): among the (layer, alpha != 0) cells where the emotion's
generations stayed coherent (`jaxcirc.core.coherence`), the cell with the largest |effect| /
|alpha| (`jaxcirc.core.selection.per_unit_push`: effects grow with the push, so cells of
different alphas are compared per unit of it). Every draw of every control goes through the same
choice (`jaxcirc.core.selection`):

- text measures (sentiment, politeness, kw_*): each generated control direction's largest
  |effect| / |alpha| over ITS OWN coherent cells;
- next-token measures (logit_diff_*, read at the last prompt token before anything is generated):
  each control direction's largest over the EMOTION's coherent cells (most of these draws are
  forward passes with no text, so they have no coherence of their own);
- projections (proj_*, proj_gen_*) get no verdict: the added vector itself moves them (by alpha *
  scale * cos(vector, direction), `jaxcirc.core.steering.arithmetic_projection`), a random one
  hardly at all, so beating random directions there shows only the arithmetic.

Patching, per (site, measure): the layer with the largest |mean over targets| of (patched from the
emotional source minus patched from the neutral control), against the same maximum over layers
after random sign flips of each target's difference (`selection.signflip_max_test`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxcirc.core import selection
from jaxcirc.core.coherence import CellCoherence
from jaxcirc.core.steering import Bootstrap, Effects

_RANK = {
    "untestable": 0,
    "no_control": 0,
    "within_control": 1,
    "beyond_all_draws": 2,
    "beyond_control": 3,
}

RULE = (
    "per (emotion, measure): among the (layer, alpha != 0) cells where the emotion's generations "
    "stayed coherent, the cell with the largest |effect| / |alpha| (effects grow with the push, "
    "so cells of different alphas are compared per unit of it); each control draw goes through "
    "the same choice (text measures: over its own coherent cells; next-token measures: over the "
    "emotion's coherent cells, most of those draws being forward passes without text); p = (1 + "
    "#draws whose figure >= the emotion's) / (1 + n draws), never below 1 / (1 + n); p-values "
    "are per (emotion, measure), not adjusted for the n_verdicts tests"
)

EXCLUDED = (
    "every proj_<emotion> and proj_gen_<emotion> (projections of the final residual on an "
    "emotion vector, the steered one's own or another's): the added vector itself moves them by "
    "alpha * scale * cos(steered vector, projection direction) (effects.csv columns "
    "'arithmetic' and 'beyond_arithmetic'), large for the steered emotion's own and for any "
    "emotion whose vector resembles it, ~0 for a random direction, so no verdict is drawn from "
    "them"
)


def measure_kind(measure: str) -> str:
    """ "text" (scored on the generated text), "next_token" (logits at the last prompt token) or
    "arithmetic" (a projection the added vector moves by itself: no verdict)."""
    if measure.startswith("proj_"):
        return "arithmetic"
    if measure.startswith("logit_diff_"):
        return "next_token"
    return "text"


@dataclasses.dataclass(frozen=True)
class ControlDraws:
    """One control's draws. name: "random" or the control vectors' label; what: a sentence
    saying what the draws are; text: {measure: mean effect [n_text, layer, alpha]} of the draws
    that were generated, text_ok [n_text, layer, alpha] their coherent cells; internal:
    {measure: mean effect [n_internal, layer, alpha]} of next-token measures (the generated draws
    first, then those run by forward passes alone)."""

    name: str
    what: str
    text: dict[str, np.ndarray]
    text_ok: np.ndarray
    internal: dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Setup:
    """The swept layers and alphas, and the significance level of the verdicts."""

    layers: tuple[int, ...]
    alphas: tuple[float, ...]
    level: float


def _control_entry(c: ControlDraws, measure: str, kind: str, obs: float, ok, setup) -> dict | None:
    """One control's test of an observed figure `obs` (None: the control has no such draws)."""
    if kind == "text":
        if measure not in c.text or not len(c.text[measure]):
            return None
        null = c.text[measure]
        eligible, rule = c.text_ok, "each draw's own coherent cells"
    else:
        null = c.internal.get(measure)
        if null is None or not len(null):
            return None
        eligible, rule = np.broadcast_to(ok, null.shape), "the emotion's coherent cells"
    stat = selection.per_unit_push(null, setup.alphas)
    test = selection.max_test(obs, selection.eligible_max(stat, eligible))
    median, q95 = test.quantiles()
    return {
        "what": c.what,
        "n": test.n,
        "selection": f"largest |effect| / |alpha| over {rule}",
        "p": test.p,
        "p_floor": test.p_floor,
        "n_at_least": test.n_at_least,
        "null_max_median": median,
        "null_max_95": q95,
        "verdict": test.verdict(setup.level),
    }


def _best_entry(ef: Effects, di: int, at: tuple[int, int], coh: CellCoherence, setup) -> dict:
    li, ai = at
    alpha = setup.alphas[ai]
    return {
        "layer": setup.layers[li],
        "alpha": alpha,
        "effect": float(ef.value[di, li, ai]),
        "ci": [float(ef.lo[di, li, ai]), float(ef.hi[di, li, ai])],
        "per_unit_alpha": float(ef.value[di, li, ai] / alpha),
        "coherence": str(coh.cls[di, li, ai]),
        "repetition_rise": float(coh.rep_rise[di, li, ai]),
        "loss_rise": float(coh.loss_rise[di, li, ai]),
    }


def verdict_of(ef: Effects, di: int, measure: str, coh: CellCoherence, controls, setup) -> dict:
    """The verdict entry of direction `di` (an emotion) on `measure` (see the module docstring):
    kind, best (its chosen cell, None when no cell is coherent), controls {name: test}, and
    verdict (the weakest over the controls; `selection.VERDICTS`)."""
    kind = measure_kind(measure)
    ok = (coh.cls[di] == "coherent") & (np.asarray(setup.alphas) != 0)[None]
    best = selection.best_cell(selection.per_unit_push(ef.value[di], setup.alphas), ok)
    entry = {"kind": kind, "best": None, "controls": {}, "verdict": "untestable"}
    if best.index is None:
        return entry
    entry["best"] = _best_entry(ef, di, best.index, coh, setup)
    for c in controls:
        got = _control_entry(c, measure, kind, best.stat, ok, setup)
        if got is not None:
            entry["controls"][c.name] = got
    verdicts = [v["verdict"] for v in entry["controls"].values()]
    entry["verdict"] = min(verdicts, key=_RANK.get) if verdicts else "no_control"
    return entry


def steering_verdicts(effects: dict[str, Effects], emotions, coh, controls, setup) -> dict:
    """{emotion: {measure: `verdict_of` entry}} for every measure but the projections."""
    return {
        e: {
            m: verdict_of(ef, di, m, coh, controls, setup)
            for m, ef in effects.items()
            if measure_kind(m) != "arithmetic"
        }
        for di, e in enumerate(emotions)
    }


def verdict_rows(verdicts: dict, labels: dict) -> list[dict]:
    """verdicts.csv: one row per (emotion, measure, control) (one row with empty control columns
    where no cell was coherent)."""
    rows = []
    for e, per in verdicts.items():
        for m, v in per.items():
            b = v["best"] or {}
            head = {
                **labels,
                "emotion": e,
                "measure": m,
                "kind": v["kind"],
                "best_layer": b.get("layer", ""),
                "best_alpha": b.get("alpha", ""),
                "effect": b.get("effect", ""),
                "ci_lo": (b.get("ci") or ["", ""])[0],
                "ci_hi": (b.get("ci") or ["", ""])[1],
                "per_unit_alpha": b.get("per_unit_alpha", ""),
                "coherence": b.get("coherence", ""),
                "verdict": v["verdict"],
            }
            tests = v["controls"].items() or [("", {})]
            for name, t in tests:
                rows.append(
                    {
                        **head,
                        "control": name,
                        **{
                            k: t.get(k, "")
                            for k in ("n", "p", "p_floor", "n_at_least", "null_max_median")
                        },
                        "null_max_95": t.get("null_max_95", ""),
                        "control_verdict": t.get("verdict", ""),
                    }
                )
    return rows


def patch_verdict(delta: np.ndarray, boot: Bootstrap, n_flip: int, level: float) -> dict:
    """delta [layer, condition, target] (patched minus unpatched; condition 0 = from the
    emotional source, 1 = the neutral control): the layer with the largest |mean (source -
    control)|, its paired difference with a bootstrap CI, and its sign-flip max test
    (`selection.signflip_max_test`, `n_flip` draws seeded by boot.seed)."""
    diff = delta[:, 0] - delta[:, 1]  # [layer, target]
    li, test = selection.signflip_max_test(diff, n_flip, boot.seed)
    est = boot.ci(diff[li])
    return {
        "layer_index": li,
        "source_minus_control": float(est.value),
        "ci": [float(est.lo), float(est.hi)],
        "selection": "the layer with the largest |mean over targets of (source - control)|; each "
        "sign-flip draw (every target's difference flipped at random, the same flip at every "
        "layer) takes its own largest",
        "n_flips": test.n,
        "p": test.p,
        "p_floor": test.p_floor,
        "null_max_95": test.quantiles()[1],
        "verdict": test.verdict(level),
    }
