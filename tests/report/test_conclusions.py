"""The report's opening verdicts come from the phases' figures: planted summaries give
"supported", structureless ones "not supported", missing ones or ones whose control cannot reach
the level "not testable" (with the reason), and no sentence claims what the summaries do not
hold: the whole report rendered from what the phases wrote on a run with nothing to find claims
no effect, and its steering words are the verdicts computed."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

import models
from configs import demo, sections
from jaxcirc import report
from jaxcirc.infra import artifacts
from jaxcirc.phases import alignment as alignment_phase
from jaxcirc.phases import head_generation, steering
from jaxcirc.phases import vectors as vectors_phase
from jaxcirc.report import conclusions
from jaxcirc.report import steering as report_steering
from tests import support
from tests import support_representation as rep

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


def _l0h0(root, sign, n_sets=99):
    """generation/summary.json as the phase writes it: L0H0 sentiment rows (ablation, patching)
    whose difference from the random sets is on the study's side of 0 (sign > 0) and beyond
    them when the sets allow it, or on the other side and within them (sign < 0)."""
    floor = 1 / (1 + n_sets)
    rows = []
    for mode, lo, hi in (("ablation", -0.3, -0.1), ("patching", 0.1, 0.3)):
        p = floor if sign > 0 else 0.6
        rows.append(
            {
                "mode": mode,
                "emotion": "gratitude",
                "ablation": "mean",
                "score": "sentiment",
                "diff_lo": lo * sign,
                "diff_hi": hi * sign,
                "p_vs_control": p,
                "p_floor": floor,
                "beyond_control": p <= 0.05,
                "n_control_sets": n_sets,
            }
        )
    for lb in LABELS:
        _write(
            root,
            f"heads/{artifacts.slug(lb)}/generation/summary.json",
            {"level": 0.95, "named_sets": {"L0H0": rows}},
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


L0H0 = "L0H0 is a local emotion circuit (ablation lowers, patching raises sentiment)"
RANDOM = "The random control shows the steering effect is not mere added norm"


def test_l0h0_with_too_few_control_sets_is_not_testable_never_not_supported(tmp_path):
    """The demo's 16-head stand-ins allow 10 random sets of L0H0's size: p >= 1/11 > 0.05,
    so neither a right-way nor a wrong-way row can decide; the verdict says so and why."""
    for sign in (1, -1):
        _l0h0(tmp_path, sign, n_sets=10)
        line = _table(tmp_path)[L0H0]
        assert "**not testable**" in line and "not supported" not in line, line
        assert "too few random head sets of L0H0's size for p to reach 0.05" in line
        assert "p floors 0.091 (10 sets)" in line


def test_l0h0_reads_the_phase_verdict_and_floor(tmp_path):
    """With 99 sets (floor 0.01): right-way rows beyond the sets are supported; a right-way CI
    that the phase did not call beyond control is not."""
    _l0h0(tmp_path, 1)
    line = _table(tmp_path)[L0H0]
    assert "**supported**" in line and "ablation: 2 of 2 testable" in line
    assert "p floors 0.010 (99 sets)" in line
    for lb in LABELS:
        path = tmp_path / "heads" / artifacts.slug(lb) / "generation" / "summary.json"
        s = json.loads(path.read_text())
        for r in s["named_sets"]["L0H0"]:
            r["beyond_control"] = False
        _write(tmp_path, path.relative_to(tmp_path), s)
    assert "**not supported**" in _table(tmp_path)[L0H0]


def test_random_control_beaten_only_at_the_p_floor_is_not_testable(tmp_path):
    """Text verdicts that beat every control draw with too few draws for p to reach the level
    ("beyond_all_draws") cannot support the claim, nor refute it; the controls are named with
    their counts."""
    v = {"verdict": "beyond_all_draws", "best": {"layer": 2}}
    controls = {
        "random": {"n_text": 10, "n_next_token": 19},
        "label_shuffled": {"n_text": 3, "n_next_token": 19},
    }
    for lb in LABELS:
        _write(
            tmp_path,
            f"steering/{artifacts.slug(lb)}/summary.json",
            {"neutral": {"verdicts": {"gratitude": {"kw_gratitude": v}}, "controls": controls}},
        )
    line = _table(tmp_path, depth=4)[RANDOM]
    assert "**not testable**" in line and "too few generated control draws" in line
    assert "random 10 generated / 19 next-token, label_shuffled 3 generated / 19" in line


# ---------------------------------------------------------------------------------------------
# The whole report rendered from what the phases wrote on a run with nothing to find

NULL_LABELS = ["a-standin (2L d16, test)", "b-standin (2L d16, test)"]


def _shuffled_labels(acts, seed):
    """The activations with their class labels permuted: the labels say nothing of the text."""
    perm = np.random.default_rng(seed).permutation(acts.labels)
    return dataclasses.replace(acts, labels=perm)


def _null_steering(root, label):
    """The steering phase on a random (untied) model, steering along the 'gratitude' vector of
    randomly labelled prompts, against random directions and label-shuffled vectors."""
    m = models.random_model(
        models.tiny_hf_config("gpt_neox", vocab_size=len(support.TEXT_WORDS)),
        seed=3,
        tokenizer=support.text_word_tokenizer(),
    )
    rng = np.random.default_rng(3)
    words = [w for ws in support.CLASS_WORDS.values() for w in ws]
    texts, labels = support.class_texts(lambda c, i: words[rng.integers(len(words))])
    vecs, ctl = support.class_vectors(m, texts, rng.permutation(labels), 19, 0)
    cfg = sections.steering()
    cfg.alphas, cfg.max_new_tokens, cfg.n_boot = (-2.0, 0.0, 2.0), 4, 200
    cfg.n_random_seeds, cfg.n_random_internal, cfg.n_control_text = 2, 19, 2
    cfg.max_prompts, cfg.patch_emotions, cfg.samples_per_cell = 6, [], 1
    out = root / "steering" / artifacts.slug(label)
    inputs = steering.Inputs(m, support.NEUTRAL_SENTENCES, [], {}, vecs, ctl)
    _write(root, out.relative_to(root) / "summary.json", steering.run(inputs, cfg, out))


def _null_l0h0(root, label):
    """L0H0 edited under generation in a random 12-head model: 10 random sets of its size."""
    m = models.random_model(
        support.three_layer_config("gpt2"), seed=4, tokenizer=support.word_tokenizer()
    )
    emo, neutral = support.planted_prompts(n=8, seed=4)
    gcfg = sections.heads_generation()
    gcfg.kinds, gcfg.n_new, gcfg.n_boot, gcfg.top_k = ("zero",), 5, 200, 0
    out = root / "heads" / artifacts.slug(label) / "generation"
    scorer = lambda t: {"sentiment": np.array([s.count("w2") for s in t], float)}  # noqa: E731
    head_generation.run_head_generation(m, emo, neutral, gcfg, out, scorer=scorer)


@pytest.fixture(scope="module")
def null_report(tmp_path_factory):
    """report.md of a run where nothing is there to find: two random-init networks' vectors and
    alignment on shuffled labels (a third as the random-init control), steering along a
    randomly labelled class vector, L0H0 in a random model."""
    root = tmp_path_factory.mktemp("null-run")
    info = {"family": "gpt2", "n_layers": 2, "d_model": 16, "n_heads": 4, "d_vocab": 60}
    _write(root, "models.json", {lb: {**info, "notes": "test"} for lb in NULL_LABELS})
    nets = [_shuffled_labels(a, 5) for a in rep.random_nets(1, 3)]
    vcfg = sections.vectors()
    vcfg.n_perm, vcfg.probe_n_perm, vcfg.n_boot, vcfg.plots = 50, 20, 200, False
    for label, acts in zip(NULL_LABELS, nets, strict=False):
        vectors_phase.run_vectors(acts, vcfg, root / "vectors" / artifacts.slug(label))
    acfg = sections.alignment()
    acfg.n_perm, acfg.n_boot, acfg.ridges_rel, acfg.plots = 30, 30, (0.0,), False
    a, b = NULL_LABELS
    alignment_phase.run(
        alignment_phase.Inputs({a: nets[0], b: nets[1]}, {b: [nets[2]]}), acfg, root / "alignment"
    )
    _null_steering(root, a)
    _null_l0h0(root, a)
    report.write_report(root, demo.get_config(), NULL_LABELS)
    return root, (root / "report.md").read_text()


def test_a_run_with_nothing_to_find_claims_no_effect(null_report):
    """No sentence of the report says an effect was supported; each conclusion is "not
    supported" or "not testable" (with its reason), L0H0's because 10 random sets cannot give
    p <= 0.05."""
    _, text = null_report
    assert "**supported**" not in text
    assert not re.search(r"(?<!not )\bsupported\b", text), "an unqualified 'supported'"
    rows = {
        ln.split("|")[1].strip(): ln.split("|")[2].strip()
        for ln in text.split("## The study's conclusions, tested")[1].split("\n## ")[0].splitlines()
        if ln.startswith("| ") and "**" in ln
    }
    assert len(rows) == 5
    assert set(rows.values()) <= {"**not supported**", "**not testable**"}
    assert rows[L0H0] == "**not testable**"
    assert "too few random head sets of L0H0's size for p to reach 0.05" in text


def test_the_steering_words_are_the_computed_verdicts(null_report):
    """Every verdict cell of the steering table, and the list of verdicts beyond the control,
    are what the summary computed; the label-shuffled control is named with its draws."""
    root, text = null_report
    s = json.loads(
        (root / "steering" / artifacts.slug(NULL_LABELS[0]) / "summary.json").read_text()
    )
    n = s["neutral"]
    for e, per in n["verdicts"].items():
        for m in report_steering.table_measures(e, per):
            (row,) = [r for r in text.splitlines() if r.startswith(f"| {e} | {m} |")]
            v = per[m]
            assert row.rstrip(" |").endswith(report_steering.VERDICT_WORDS[v["verdict"]]), row
            for name, t in v["controls"].items():
                assert f"{name}: {t['p']:.3f} ({t['n']} draws" in row
            assert set(v["controls"]) == {"random", "label_shuffled"}
    beyond = report_steering.verdict_lists(n)["beyond_control"]
    assert f"Beyond the control at p <= 0.05: {'; '.join(beyond) or 'none'}." in text
    assert "label_shuffled (" in text and "2 generated, for the text measures; 19" in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- **Controls**")]
    assert "label-shuffled class-mean differences" in line
