"""report.md: for each phase, the study's reported figure beside ours (same definition, stated),
with the control or null, the confidence interval, and the plots embedded.

Reads only what the phases wrote (each stage's summary.json and PNGs), so it can be rebuilt
without any model. The sections live by what they report: `jaxcirc.report.representation`
(dataset, vectors, alignment) and `steering`, `heads` and `cross_model` (the interventions); this
module puts them in order under the run's header.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report import (
    checkpoints,
    conclusions,
    cross_language,
    cross_model,
    differences,
    heads,
    representation,
    steering,
)
from jaxcirc.report.format import read_json, runs_the_study


def _header(cfg, labels: Sequence[str]) -> list[str]:
    return [
        f"# jaxcirc study report: {cfg.name}",
        "",
        f"Config hash `{artifacts.config_hash(cfg.to_dict())[:16]}`; models: "
        + ", ".join(labels)
        + (
            "."
            if cfg.models.kind == "checkpoint"
            else " - **small TRAINED STAND-INS of each family, not the study's checkpoints**; their "
            "numbers show the method works, not what GPT-2 / Pythia / GPT-Neo do."
        ),
        f"BOS prepended: {cfg.prepend_bos}. Dataset: {cfg.dataset.set}.",
        "",
    ]


def _models_section(root: Path) -> list[str]:
    metrics = read_json(root / "models.json")
    if not metrics:
        return []
    lines = [
        "## Models",
        "",
        "| model | family | layers | d_model | heads | notes |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in metrics.items():
        lines.append(
            f"| {label} | {m['family']} | {m['n_layers']} | {m['d_model']} | {m['n_heads']} | {m.get('notes', '')} |"
        )
    return lines + [""]


def write_report(root: Path, cfg, labels: Sequence[str]) -> Path:
    """Write `<root>/report/report.md` and a copy at `<root>/report.md`; returns the latter.

    root: the run directory; cfg: the study config it ran with; labels: the models' labels in
    the study's order (`jaxcirc.study.model_labels(cfg)`), which name their artifact folders.
    """
    root = Path(root)
    labels = list(labels)
    lines = _header(cfg, labels)
    study = runs_the_study(cfg)
    info = read_json(root / "models.json") or {}
    depth = {label: int(m.get("n_layers", 0)) for label, m in info.items()}
    lines += conclusions.section_conclusions(root, labels, depth) if study else []
    lines += _models_section(root)
    lines += differences.section_differences(cfg, labels) if study else []
    lines += representation.section_dataset(root, cfg)
    lines += representation.section_vectors(root, labels) if study else []
    lines += representation.section_alignment(root)
    lines += checkpoints.section_checkpoints(root, labels)
    lines += steering.section_steering(root, labels)
    lines += heads.section_heads(root, labels)
    lines += cross_model.section_cross_model(root)
    lines += cross_language.section_cross_language(root)
    text = "\n".join(lines) + "\n"
    artifacts.write_text(root / "report" / "report.md", text.replace("](", "](../"))
    artifacts.write_text(root / "report.md", text)
    return root / "report.md"
