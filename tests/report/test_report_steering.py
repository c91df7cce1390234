"""The steering section's words, from a summary shaped as the phase writes it: each verdict names
its control, its draws and their p floor; the lists say exactly which verdicts the summary holds;
the sentences about empty continuations follow the run's settings."""

from __future__ import annotations

from jaxcirc.report import steering as report_steering


def _verdict(code, p, n, kind="text", layer=2, alpha=2.0, effect=0.8):
    return {
        "kind": kind,
        "best": {
            "layer": layer,
            "alpha": alpha,
            "effect": effect,
            "ci": [effect - 0.2, effect + 0.2],
            "per_unit_alpha": effect / alpha,
            "coherence": "coherent",
            "repetition_rise": 0.01,
            "loss_rise": 0.1,
        },
        "controls": {
            "random": {
                "what": "random",
                "n": n,
                "selection": "x",
                "p": p,
                "p_floor": 1 / (n + 1),
                "n_at_least": round(p * (n + 1)) - 1,
                "null_max_median": 0.1,
                "null_max_95": 0.2,
                "verdict": code,
            }
        },
        "verdict": code,
    }


SUMMARY = {
    "n_prompts": 50,
    "alphas": [-2.0, 0.0, 2.0],
    "alpha_unit": 0.125,
    "norms_source": "the neutral prompts steered (n=50)",
    "verdict_level": 0.05,
    "n_verdicts": 4,
    "controls": {"random": {"what": "random directions", "n_text": 10, "n_next_token": 99}},
    "verdicts": {
        "gratitude": {
            "kw_gratitude": _verdict("beyond_all_draws", 1 / 11, 10),
            "logit_diff_gratitude": _verdict("beyond_control", 0.01, 99, "next_token"),
        },
        "anger": {
            "kw_anger": _verdict("within_control", 0.5, 10, layer=1, alpha=-2.0),
            "sentiment": {"kind": "text", "best": None, "controls": {}, "verdict": "untestable"},
        },
    },
    "empty_continuations": {"unsteered": 0.62, "steered": 0.5},
}


def test_table_names_control_draws_and_floor():
    table = report_steering.verdict_table(SUMMARY)
    (g,) = [r for r in table if r.startswith("| gratitude | kw_gratitude |")]
    assert "L2, alpha +2" in g and "0.800 [0.600, 1.000]" in g
    assert "random: 0.091 (10 draws, floor 0.091)" in g and "beyond every draw" in g
    (ld,) = [r for r in table if r.startswith("| gratitude | logit_diff_gratitude |")]
    assert "random: 0.010 (99 draws, floor 0.010)" in ld and "| beyond control |" in ld
    (a,) = [r for r in table if r.startswith("| anger | sentiment |")]
    assert "none coherent" in a and "not testable" in a


def test_sentences_list_exactly_the_verdicts():
    (line,) = report_steering.verdict_sentences(SUMMARY)
    assert (
        "Beyond the control at p <= 0.05: gratitude / logit_diff_gratitude (L2, alpha +2)." in line
    )
    assert "reach 0.05: gratitude / kw_gratitude (L2, alpha +2)." in line
    assert "anger / kw_anger" not in line  # within its control: not named as found
    assert "Not testable (no coherent cell): 1." in line
    assert "4 (emotion, measure) verdicts" in line and "not adjusted" in line
    assert "unsteered 62%, steered 50%" in line
    held = {
        **SUMMARY,
        "empty_continuations": {"unsteered": 0.0, "steered": 0.0, "min_new_tokens": 8},
    }
    (line,) = report_steering.verdict_sentences(held)
    assert "EOS was held back for the first 8 new tokens" in line and "end at once" not in line
    (line,) = report_steering.verdict_sentences({**SUMMARY, "verdicts": {}})
    assert line == "No verdicts in this run's summary."
