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
    """The records `cfg` (the dataset section) names: the shipped set `cfg.set`, or the JSONL file
    `cfg.path` in the dataset schema; the 35 real-world texts when `cfg.realworld`."""
    prompts = dataset.read_jsonl(cfg.path) if cfg.get("path") else dataset.build(cfg.set)
    realworld = dataset.build("realworld") if cfg.realworld else []
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


def check_file(path: str | os.PathLike) -> str:
    """Read and check one dataset file (balance required unless every record is a real-world
    one); returns its statistics beside the study's as a table. Raises DatasetError naming
    file:line."""
    records = dataset.read_jsonl(path, expect_balanced=False)
    if any(r.set in dataset.BALANCED_SETS for r in records):
        dataset.check_balance(records, where=str(path))
    stats = dataset.stats(records)
    name = "/".join(stats["sets"])
    return stats_table({name: stats}, {name: dataset.STUDY_STATS.get(name, {})})


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
        rows.append(
            f"{name:<10} {o['total']:>7} {'-' if s_total is None else s_total:>6} "
            f"{per:>12} {o['mean_chars']:>6.1f} {'-' if s_chars is None else s_chars:>6} "
            f"{o['mean_words']:>6.1f}"
        )
    rows.append("chars/words: mean characters / whitespace-separated words per text (all classes)")
    return "\n".join(rows)
