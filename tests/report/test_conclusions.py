"""The report's opening verdicts come from the phases' figures: planted summaries give
"supported", structureless ones "not supported", missing ones "not testable" (with the reason),
and no sentence claims what the summaries do not hold."""

from __future__ import annotations

from jaxcirc.infra import artifacts
from jaxcirc.report import conclusions

LABELS = ["a-model (desc)", "b-model (desc)"]


def _write(root, rel, obj):
    artifacts.write_json(root / rel, obj)


def _vectors(root, figure, ci, p):
    for lb in LABELS:
        _write(
            root,
            f"vectors/{artifacts.slug(lb)}/summary.json",
            {"headline": {"token_vs_sentence_end": {"figure": figure, "ci": ci, "p_value": p}}},
        )


def _alignment(root, above):
    h = {"figure": 0.9, "ci": [0.8, 0.95], "null_band": [0.1, 0.3], "above_null": above}
    h["random_init"] = {"figure": 0.2, "above_random_init": above}
    pairs = {"a -> b": {"sentence_end": h}}
    _write(
        root,
        "alignment/alignment_summary.json",
        {"headline": {"subspaces_agree_up_to_change_of_basis": {"pairs": pairs}}},
    )


def _steering(root, verdict, layer):
    v = {"verdict": verdict, "best": {"layer": layer, "alpha": 2.0}}
    for lb in LABELS:
        _write(
            root,
            f"steering/{artifacts.slug(lb)}/summary.json",
            {"neutral": {"verdicts": {"gratitude": {"kw_gratitude": v, "proj_gratitude": v}}}},
        )


def _l0h0(root, sign):
    rows = [
        {
            "mode": "ablation",
            "score": "sentiment",
            "diff_lo": -0.3 * sign,
            "diff_hi": -0.1 * sign,
            "p_vs_control": 0.01 if sign > 0 else 0.6,
        },
        {
            "mode": "patching",
            "score": "sentiment",
            "diff_lo": 0.1 * sign,
            "diff_hi": 0.3 * sign,
            "p_vs_control": 0.01 if sign > 0 else 0.6,
        },
    ]
    for lb in LABELS:
        _write(
            root,
            f"heads/{artifacts.slug(lb)}/generation/summary.json",
            {"named_sets": {"L0H0": rows}},
        )


def _table(root, depth=12):
    lines = conclusions.section_conclusions(root, LABELS, {lb: depth for lb in LABELS})
    return {ln.split("|")[1].strip(): ln for ln in lines if ln.startswith("| ") and "**" in ln}


def test_planted_summaries_are_supported(tmp_path):
    _vectors(tmp_path, 0.2, [0.1, 0.3], 0.001)
    _alignment(tmp_path, True)
    _steering(tmp_path, "beyond_control", 6)
    _l0h0(tmp_path, 1)
    rows = _table(tmp_path)
    assert len(rows) == 5
    for line in rows.values():
        assert "**supported**" in line, line
    assert "2 of 2 at 6-7" in rows["Layers 6-7 carry the steering effect"]


def test_structureless_summaries_are_not_supported(tmp_path):
    _vectors(tmp_path, 0.01, [-0.05, 0.07], 0.4)
    _alignment(tmp_path, False)
    _steering(tmp_path, "within_control", 2)
    _l0h0(tmp_path, -1)
    rows = _table(tmp_path)
    for line in rows.values():
        assert "**not supported**" in line, line
    # Nothing the summaries do not hold: no layer is named as carrying the effect.
    assert "none; 0 of 0 at 6-7" in rows["Layers 6-7 carry the steering effect"]


def test_missing_phases_are_not_testable_with_a_reason(tmp_path):
    rows = _table(tmp_path, depth=4)
    assert len(rows) == 5
    for line in rows.values():
        assert "**not testable**" in line
    assert "4, 4 layers" in rows["Layers 6-7 carry the steering effect"]
    assert (
        "not run"
        in rows["L0H0 is a local emotion circuit (ablation lowers, patching raises sentiment)"]
    )


def test_model_internal_measures_do_not_count(tmp_path):
    """A projection on the steered vector moves by arithmetic: a win there alone is no
    evidence against the random control."""
    v = {"verdict": "beyond_control", "best": {"layer": 6}}
    w = {"verdict": "within_control", "best": {"layer": 6}}
    for lb in LABELS:
        _write(
            tmp_path,
            f"steering/{artifacts.slug(lb)}/summary.json",
            {"neutral": {"verdicts": {"gratitude": {"proj_gratitude": v, "sentiment": w}}}},
        )
    line = _table(tmp_path)["The random control shows the steering effect is not mere added norm"]
    assert "**not supported**" in line and "0 of 2" in line
