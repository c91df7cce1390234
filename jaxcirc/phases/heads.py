"""Phase 7 (heads): the head screen, and the future-work parts the config turns on: multi-head
circuits, MLP neurons, and generation under head edits (top heads and the study's L0H0).

    summary = run(Inputs(model, label, emotional, neutral, vectors), section, out_dir)

`section` holds `heads` (the screen's settings) and, when enabled, `circuits`, `neurons` and
`generation` (see jaxcirc.study.phase_sections). Each part is its own runner
(head_screen, circuits, neurons, head_generation); this module runs them in order, the later
ones reading the screen's rows, and labels every score with the vectors and model it used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from jaxcirc.core.stats import to_jsonable
from jaxcirc.phases import circuits, head_generation, head_screen, neurons

NAME = "heads"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 1


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


def _jsonable(obj):
    """A part's result as something json can hold (dataclasses, arrays, paths)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        keep = ("rows", "top", "summary", "files", "sets", "effects")
        obj = {k: v for k, v in obj.items() if k in keep}
    try:
        return to_jsonable(obj)
    except Exception:  # noqa: BLE001 - the files on disk are the record; the summary is a pointer
        return str(type(obj).__name__)


def _labelled(section, part: str, named: dict) -> ml_collections.ConfigDict:
    """The part's settings with the vectors and model labels filled in where it has them."""
    d = section[part].to_dict()
    d.update({k: v for k, v in named.items() if k in d})
    return ml_collections.ConfigDict(d)


def run(inputs: Inputs, section: ml_collections.ConfigDict, out_dir: Path) -> dict:
    """Screen every head, then run the enabled parts; returns the phase summary."""
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
        summary["circuits"] = _jsonable(
            circuits.run_circuits(
                m,
                emotional,
                neutral,
                vecs,
                _labelled(section, "circuits", named),
                out_dir / "circuits",
                screen_rows=res.rows,
                word_ids=res.word_ids,
                tokenize_cfg=hs,
            )
        )
    if "neurons" in section:
        ncfg = _labelled(section, "neurons", named)
        out = neurons.run_neurons(
            m, emotional, neutral, vecs, ncfg, out_dir / "neurons", word_ids=res.word_ids
        )
        summary["neurons"] = _jsonable(out)
    if "generation" in section:
        gcfg = _labelled(section, "generation", named)
        out = head_generation.run_head_generation(
            m, emotional, neutral, gcfg, out_dir / "generation", screen_rows=res.rows
        )
        summary["generation"] = _jsonable(out)
    return summary
