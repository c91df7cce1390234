"""Phase 7 (heads): the head screen, and the future-work parts the config turns on: multi-head
circuits, MLP neurons, and generation under head edits (top heads and the study's L0H0).

    summary = run(Inputs(model, label, emotional, neutral, vectors), section, out_dir)

`section` holds `heads` (the screen's settings) and, when enabled, `circuits`, `neurons` and
`generation` (see jaxcirc.study.phase_sections). Each part is its own runner
(head_screen, circuits, neurons, head_generation); this module runs them in order (the
generation choosing its top heads from the screen's per-prompt scores on half of each
emotion's prompts) and labels every score with the vectors and model it used.

The summary (heads/<model>/summary.json): "top" (the screen's top-k lists with the
max-over-heads null, as top_k.json), "correlations" (method rank correlations), "files";
"circuits": per search, circuits.json's record (held-out joint / sum / interaction with CIs,
search-half joint, the null search's band, p and n per k); "neurons": "summary" (exact vs
attribution on the shortlist and on a random sample), "top" (top neurons with the
max-over-neurons null), "files"; "generation": generation/summary.json's content (per named
set, e.g. L0H0, and per top set: effect, CI, control band, control mean and its two-level
CI, diff_vs_control, p_vs_control, beyond_control, n_control_sets, n_prompts). Per-prompt
arrays and the neuron score maps stay in the part's files.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from jaxcirc.core import scoring
from jaxcirc.core.stats import to_jsonable
from jaxcirc.phases import circuits, head_generation, head_screen, neurons

NAME = "heads"
# Bump when the phase's outputs change meaning: every run then recomputes it.
# 2: selection-aware controls (max-over-heads / max-over-neurons nulls, held-out circuits
# with a null search, held-out top-k sets and more control sets in generation).
VERSION = 3  # 3: null draws within rounding of the observed count as ties (stats.TIE_RTOL)


@dataclasses.dataclass(frozen=True)
class Inputs:
    """model: a LoadedModel; model_label: its name in the outputs; emotional: {emotion: [text]};
    neutral: [text]; vectors: {emotion: [n_layers + 1, d_model]} (the method and centre named by
    the `heads` section)."""

    model: Any
    model_label: str
    emotional: Mapping[str, Sequence[str]]
    neutral: Sequence[str]
    vectors: Mapping[str, Any]


def _labelled(section, part: str, named: dict) -> ml_collections.ConfigDict:
    """The part's settings with the vectors and model labels filled in where it has them."""
    d = section[part].to_dict()
    d.update({k: v for k, v in named.items() if k in d})
    return ml_collections.ConfigDict(d)


def run(inputs: Inputs, section: ml_collections.ConfigDict, out_dir: Path) -> dict:
    """Screen every head, then run the enabled parts; returns the phase summary (module doc)."""
    hs = section.heads
    # Every score row says which vectors its projection measure used.
    named = {
        "vector_label": f"{hs.vector_method} emotion vectors, centre={hs.vector_centre}",
        "model_label": inputs.model_label,
    }
    m, emotional, neutral, vecs = inputs.model, inputs.emotional, inputs.neutral, inputs.vectors
    res = head_screen.run_heads(
        m, emotional, neutral, vecs, _labelled(section, "heads", named), out_dir
    )
    summary = {
        "top": res.top,
        "correlations": res.correlations,
        "files": {k: str(v) for k, v in res.files.items()},
    }
    if "circuits" in section:
        found = circuits.run_circuits(
            m,
            emotional,
            neutral,
            vecs,
            _labelled(section, "circuits", named),
            out_dir / "circuits",
            word_ids=res.word_ids,
            tokenize_cfg=hs,
        )
        summary["circuits"] = [circuits.result_json(r) for r in found]
    if "neurons" in section:
        ncfg = _labelled(section, "neurons", named)
        out = neurons.run_neurons(
            m, emotional, neutral, vecs, ncfg, out_dir / "neurons", word_ids=res.word_ids
        )
        keep = ("summary", "top", "files")
        summary["neurons"] = to_jsonable({k: out[k] for k in keep})
    if "generation" in section:
        gcfg = _labelled(section, "generation", named)
        # The generated text is scored in the prompts' language (sections.heads_generation()).
        scorer = functools.partial(scoring.score_texts, language=gcfg.get("language", "en"))
        rows = head_generation.run_head_generation(
            m, emotional, neutral, gcfg, out_dir / "generation", screen=res.screen, scorer=scorer
        )
        summary["generation"] = head_generation.summary(
            rows, gcfg, gcfg.model_label, list(gcfg.named_sets)
        )
    return to_jsonable(summary)
