"""The report's head section is filled from the files the phase writes: the top heads as a table
with the max-over-heads null, the study's L0H0 figures beside ours with numbers, the top sets,
circuits and neurons; and it states no verdict the files do not hold."""

from __future__ import annotations

import re

import numpy as np

from configs import sections
from jaxcirc.core.measures import WordIds
from jaxcirc.infra import artifacts
from jaxcirc.phases import circuits, head_generation, head_screen, neurons
from jaxcirc.report import heads as report_heads
from tests.support import PLANTED, WORDS, planted_model, planted_prompts

LABEL = "planted-tiny (3L, test)"
NUMBER = r"-?\d+\.\d{3}"


def grat_words(texts):
    return {"sentiment": np.array([t.count("w20") + t.count("w21") for t in texts], float)}


def _run(root):
    """The heads phase's parts on a planted model, written where the study writes them."""
    model, vectors = planted_model(gain=8.0)
    emo, neutral = planted_prompts(n=8)
    d = root / "heads" / artifacts.slug(LABEL)
    hcfg = sections.heads()
    hcfg.logit_words = {e: tuple(f" w{i}" for i in ids) for e, ids in WORDS.items()}
    hcfg.n_boot, hcfg.n_perm, hcfg.n_random, hcfg.batch_size, hcfg.top_k = 200, 50, 19, 8, 3
    res = head_screen.run_heads(model, emo, neutral, vectors, hcfg, d)
    gcfg = sections.heads_generation()
    gcfg.kinds, gcfg.n_new, gcfg.n_control, gcfg.n_boot, gcfg.top_k = ("zero",), 5, 19, 200, 2
    head_generation.run_head_generation(
        model, emo, neutral, gcfg, d / "generation", screen=res.screen, scorer=grat_words
    )
    wids = WordIds({e: WORDS[e] for e in vectors}, {})
    ccfg = sections.heads_circuits()
    ccfg.k_max, ccfg.n_candidates, ccfg.n_null, ccfg.n_boot, ccfg.modes = (
        2,
        0,
        9,
        100,
        ("ablation",),
    )
    circuits.run_circuits(model, emo, neutral, vectors, ccfg, d / "circuits", word_ids=wids)
    ncfg = sections.heads_neurons()
    ncfg.layers, ncfg.n_exact, ncfg.top_k, ncfg.n_boot, ncfg.n_random = (1, 3), 4, 3, 100, 9
    neurons.run_neurons(model, emo, neutral, vectors, ncfg, d / "neurons", word_ids=wids)


def _as_checkpoint(root, source: str):
    """models.json naming LABEL's checkpoint: the study's figures stand beside the study's
    models only (jaxcirc.report.representation.study_model)."""
    info = {LABEL: {"family": "gpt2", "notes": f"checkpoint {source}"}}
    artifacts.write_json(root / "models.json", info)


def test_head_section_tables_come_from_the_phase_files(tmp_path):
    _run(tmp_path)
    _as_checkpoint(tmp_path, "gpt2")  # GPT-2 small, the study's own
    lines = report_heads.section_heads(tmp_path, [LABEL])
    text = "\n".join(lines)
    # Top heads: a table, not a JSON paste; the planted head first, clearing the null.
    assert "```" not in text and "top_k.json" not in text
    grat = [ln for ln in lines if ln.startswith("| gratitude | zero | 1 |")]
    assert grat and f"L{PLANTED[0]}H{PLANTED[1]}" in grat[0] and "| yes |" in grat[0]
    assert "19 random unit directions" in text
    # L0H0: the study's figure beside ours, every cell a number.
    l0 = [ln for ln in lines if ln.startswith("| ablation | gratitude | zero |")]
    assert l0 and "-0.0349" in l0[0], l0
    assert len(re.findall(NUMBER, l0[0])) >= 6, l0[0]
    pat = [ln for ln in lines if ln.startswith("| patching | gratitude |")]
    assert pat and "0.1102" in pat[0]
    # The top sets, the circuits and the neurons each get their table.
    assert "Top head sets (top heads by the exact/projection/mean screen" in text
    assert any(ln.startswith("| ablation | gratitude | 2 |") for ln in lines)
    assert any(ln.startswith("| gratitude |") and "listed" in ln for ln in lines)
    # No verdict words: the section reports figures, the conclusions section judges them.
    for word in ("significant", "supported", "confirms", "proves", "circuit is"):
        assert word not in text.lower(), word


def test_no_study_figure_beside_a_model_the_study_did_not_run(tmp_path):
    """GPT-2 XL's L0H0 rows get our figures and no study column value (the study's figure is
    GPT-2 small's)."""
    _run(tmp_path)
    _as_checkpoint(tmp_path, "gpt2-xl")
    lines = report_heads.section_heads(tmp_path, [LABEL])
    l0 = [ln for ln in lines if ln.startswith("| ablation | gratitude | zero |")]
    assert l0 and "-0.0349" not in l0[0] and len(re.findall(NUMBER, l0[0])) >= 5, l0
    assert not any("0.1102" in ln for ln in lines if ln.startswith("| patching | gratitude |"))


def test_missing_files_leave_their_tables_out(tmp_path):
    d = tmp_path / "heads" / artifacts.slug(LABEL)
    d.mkdir(parents=True)
    lines = report_heads.section_heads(tmp_path, [LABEL])
    assert lines[0] == "## Phase 7: attention heads" and f"### {LABEL}" in lines
    assert not any(ln.startswith("| ") for ln in lines)
    assert report_heads.section_heads(tmp_path, ["absent"]) == []
