"""The representation sections of the report (vectors, alignment, cross-model) rendered from what
the phases wrote on data with nothing planted: every sentence states what was measured (n, d,
the figure, its null band), the study's figures stand only beside the study's models (marked
beside stand-ins), the layer of every study-vs-ours cosine is named, and no sentence claims a
result the run did not compute."""

from __future__ import annotations

import json

import numpy as np
import pytest

from configs import sections
from jaxcirc.infra import artifacts
from jaxcirc.phases import alignment as phase_alignment
from jaxcirc.phases import vectors as phase_vectors
from jaxcirc.report import cross_model as report_cm
from jaxcirc.report import representation
from tests import support_representation as rep

STANDIN = "gpt2-standin (2L d16, trained on the demo corpus)"
MEDIUM = "gpt2-medium"


def _models_json(root):
    artifacts.write_json(
        root / "models.json",
        {
            STANDIN: {
                "family": "gpt2",
                "n_layers": 2,
                "d_model": 16,
                "notes": "trained stand-in; x",
            },
            MEDIUM: {
                "family": "gpt2",
                "n_layers": 2,
                "d_model": 16,
                "notes": "checkpoint gpt2-medium",
            },
        },
    )


@pytest.fixture(scope="module")
def structureless_run(tmp_path_factory):
    """Two random-init networks fed the same tokens (nothing learnt), a third as the random-init
    control, under a stand-in's label and a non-study checkpoint's label."""
    root = tmp_path_factory.mktemp("run")
    _models_json(root)
    a, b, c = rep.random_nets(0, 3)
    vcfg = sections.vectors()
    vcfg.n_perm, vcfg.probe_n_perm, vcfg.n_boot, vcfg.plots = 50, 20, 200, False
    for label, acts in ((STANDIN, a), (MEDIUM, b)):
        phase_vectors.run_vectors(acts, vcfg, root / "vectors" / artifacts.slug(label))
    acfg = sections.alignment()
    acfg.n_perm, acfg.n_boot, acfg.ridges_rel, acfg.plots = 30, 30, (0.0,), False
    inputs = phase_alignment.Inputs({STANDIN: a, MEDIUM: b}, {MEDIUM: [c]})
    phase_alignment.run(inputs, acfg, root / "alignment")
    return root


def test_vectors_section_names_layers_and_keeps_study_figures_to_study_models(structureless_run):
    text = "\n".join(representation.section_vectors(structureless_run, [STANDIN, MEDIUM]))
    standin, medium = text.split(f"### {MEDIUM}")
    assert "| pair | study (GPT-2 small; ours is a stand-in) |" in standin
    assert "| gratitude-anger | 0.480 |" in standin  # the study's GPT-2 figure, sentence_end
    assert "| pair | study" not in medium and "| gratitude-anger | 0.480 |" not in medium
    assert f"{MEDIUM} is none of them, so no study figure stands beside it" in medium
    assert "the study does not say which layer its cosines are from" in text
    assert text.count("layer 2 (the last;") == 2 * 3  # 2 models x 3 methods, layer named
    assert "; L0 " in text  # the layer-0 (embeddings) cosine beside every cell
    assert "against the max over layers 1..L of each shuffle draw" in text
    assert "Share of bootstrap resamples picking each layer as best" in text
    assert "| 0 (embeddings (lexical baseline)) |" in text
    assert "Span tokens vs last token" in text and "paired sign-flip null" in text


def test_alignment_section_states_only_what_was_measured(structureless_run):
    root = structureless_run
    text = "\n".join(representation.section_alignment(root))
    # the old fixed sentence is gone: nothing claims a full-rank map fits anything
    assert "fits anything" not in text and "what such a map gives" not in text
    s = json.loads((root / "alignment" / "alignment_summary.json").read_text())
    head = s["headline"]["subspaces_agree_up_to_change_of_basis"]["pairs"]
    for pair, by in head.items():
        for pairing, h in by.items():
            where = "above" if h["above_null"] else "inside"
            assert f"- {pair} ({pairing}): n = {h['n_fit_rows']} fit rows in d = {h['d_a']}" in text
            assert f"{where} its shuffled-pairing null band" in text
    e = head[f"{STANDIN}->{MEDIUM}"]["token"]
    assert e["random_init"] and not e["random_init"]["above_random_init"]
    assert "a random-init copy of B gave" in text and "no random-init control was run" in text
    assert "no best layer is named" in text.lower()
    # the study's alignment figures: stand-in -> non-study model gets none
    assert "(not the study's models)" in text and "~0.99" not in text.split("|---|")[1]


def test_study_model_identification(tmp_path):
    _models_json(tmp_path)
    assert representation.study_model(tmp_path, STANDIN) == ("stand-in", "gpt2")
    assert representation.study_model(tmp_path, MEDIUM) == (None, None)
    artifacts.write_json(
        tmp_path / "models.json",
        {"pythia-160m": {"family": "gpt_neox", "notes": "checkpoint EleutherAI/pythia-160m"}},
    )
    assert representation.study_model(tmp_path, "pythia-160m") == ("study", "pythia")
    empty = tmp_path / "none"
    empty.mkdir()
    assert representation.study_model(empty, "gpt2") == ("study", "gpt2")
    assert representation.study_model(empty, "gpt2-medium") == (None, None)
    assert representation.study_model(empty, "pythia-standin (x)") == ("stand-in", "pythia")


def test_cross_model_section_reports_the_maps_held_out_r2(tmp_path):
    cos = {"cos_mapped_vs_own": 0.1, "null_random_A_directions_mapped": {"lo": -0.3, "hi": 0.3}}
    pair = {
        "layer_a": 1,
        "layer_b": 1,
        "pairing": "token",
        "n_over_d": 2.0,
        "map_r2_test": 0.123,
        "map_r2_test_null": {"lo": -0.2, "hi": 0.05},
        "n_fit_prompts": 30,
        "n_test_prompts": 10,
        "cosines": {e: cos for e in ("gratitude", "anger", "apology")},
        "steer_mapped": {"best_layer": {"gratitude": {"kw_gratitude": {"renamed": 1}}}},
    }
    artifacts.write_json(
        tmp_path / "cross_model" / "summary.json",
        {"ridge_rel": 1.0, "relative_depth": 0.5, "pairs": {"a -> b": pair}},
    )
    text = "\n".join(report_cm.section_cross_model(tmp_path))
    assert "0.123 [-0.200, 0.050] (10 held-out / 30 fit prompts)" in text
    assert text.count("| a -> b |") == 3 and "n/a" in text  # unknown steering fields: n/a
    assert np.isfinite(pair["map_r2_test"])
