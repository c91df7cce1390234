"""Phase 1 (dataset): the prompt sets a study runs on, written into its run directory.

    summary = run(Inputs(prompts=records, realworld=texts), cfg.dataset, out_dir)

Writes `prompts.jsonl` (the baseline or extended set, or the user's file), `realworld.jsonl` (the
35 real-world texts, when used) and `stats.json` (counts and mean lengths per set). `check_file`
validates a dataset file of the user's own and tabulates it beside the study's figures.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ml_collections

from jaxcirc.data import dataset
from jaxcirc.infra import artifacts

NAME = "dataset"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 1


@dataclasses.dataclass(frozen=True)
class Inputs:
    """prompts: the balanced prompt set; realworld: the real-world texts (may be empty)."""

    prompts: list[dataset.Record]
    realworld: list[dataset.Record]


def load_inputs(cfg: ml_collections.ConfigDict) -> Inputs:
    """The records `cfg` (the dataset section) names, in `cfg.language`: the shipped set
    `cfg.set`, or the JSONL file `cfg.path` in the dataset schema (its records must be in
    `cfg.language`; Japanese records' `en_id` must name shipped English prompts); the 35
    real-world texts when `cfg.realworld`."""
    lang = cfg.language
    if cfg.get("path"):
        prompts = dataset.read_jsonl(cfg.path, language=lang, en_ids=dataset.english_ids())
    else:
        prompts = dataset.build(cfg.set, lang)
    realworld = dataset.build("realworld", lang) if cfg.realworld else []
    return Inputs(prompts=prompts, realworld=realworld)


def run(inputs: Inputs, cfg: ml_collections.ConfigDict, out_dir: Path) -> None:
    """Write the sets and their statistics under `out_dir` (stats.json holds the counts)."""
    del cfg  # the records are the whole input; the section only chose them (load_inputs)
    sets = {"prompts": inputs.prompts, "realworld": inputs.realworld}
    for name, records in sets.items():
        if records:
            dataset.write_jsonl(records, out_dir / f"{name}.jsonl")
    stats = {name: dataset.stats(recs) for name, recs in sets.items() if recs}
    artifacts.write_json(out_dir / "stats.json", stats)


def check_file(path: str | os.PathLike, language: str | None = None) -> str:
    """Read and check one dataset file (balance required unless every record is a real-world
    one; every record in `language`, or None: in the language of the file's first record; every
    `en_id` names a shipped English prompt of the same emotion); returns its statistics beside
    the study's as a table. Raises DatasetError naming file:line."""
    records = dataset.read_jsonl(
        path, expect_balanced=False, language=language, en_ids=dataset.english_ids()
    )
    if any(r.set in dataset.BALANCED_SETS for r in records):
        dataset.check_balance(records, where=str(path))
    stats = dataset.stats(records)
    name = "/".join(stats["sets"])
    study = dataset.study_stats(records[0].language).get(name, {})
    table = stats_table({name: stats}, {name: study})
    return f"language: {records[0].language}\n{table}"


def stats_table(ours: dict, study: dict) -> str:
    """Our statistics ({set: dataset.stats(...)}) beside the study's, one row per set."""
    head = f"{'set':<10} {'records':>7} {'study':>6} {'per class':>12} {'chars':>6} {'study':>6}"
    head += f" {'words':>6}"
    rows = [head, "-" * len(head)]
    for name, o in ours.items():
        s = study.get(name, {})
        counts = sorted(set(o["count"].values()))
        per = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        s_total, s_chars = s.get("total"), s.get("mean_chars")
        words = "-" if o["mean_words"] is None else f"{o['mean_words']:.1f}"
        rows.append(
            f"{name:<10} {o['total']:>7} {'-' if s_total is None else s_total:>6} "
            f"{per:>12} {o['mean_chars']:>6.1f} {'-' if s_chars is None else s_chars:>6} "
            f"{words:>6}"
        )
    rows.append(
        "chars/words: mean characters / whitespace-separated words per text (all classes; "
        "words '-' for text written without spaces)"
    )
    return "\n".join(rows)
