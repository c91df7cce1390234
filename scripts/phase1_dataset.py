"""Phase 1: build the emotion prompt sets, or validate a dataset file.

    python scripts/phase1_dataset.py --out_dir=runs/demo/dataset
    python scripts/phase1_dataset.py --out_dir=/tmp/ds --sets=baseline,extended
    python scripts/phase1_dataset.py --validate=runs/demo/dataset/baseline.jsonl

Building writes <out_dir>/<set>.jsonl for each set and <out_dir>/dataset_stats.json (our
statistics per set, the study's figures, and each file's sha256), then prints both side by side.
Validation reads one file (balance is required unless every record is a realworld one) and
prints its statistics. Usage errors and invalid files: one line on stderr, exit status 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):
    # Run as a file: make the repository root importable without installing the package.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags

from jaxcirc.data import dataset
from jaxcirc.infra import artifacts

_OUT_DIR = flags.DEFINE_string("out_dir", None, "Directory for <set>.jsonl and dataset_stats.json.")
_SETS = flags.DEFINE_list("sets", list(dataset.SETS), "Sets to build, comma separated.")
_VALIDATE = flags.DEFINE_string(
    "validate", None, "Validate this dataset file instead of building (no --out_dir needed)."
)


def run(out_dir: str | os.PathLike, sets: Sequence[str] = dataset.SETS) -> dict:
    """Build `sets`, write them and dataset_stats.json under out_dir; return the stats dict.

    Returns {"ours": {set: dataset.stats(...)}, "study": dataset.STUDY_STATS subset,
    "files": {set: {"path", "sha256"}}}.
    """
    sets = list(sets)
    if not sets:
        raise ValueError("no sets given; pass --sets=baseline,extended,realworld or a subset")
    unknown = [s for s in sets if s not in dataset.SETS]
    if unknown:
        raise ValueError(f"unknown set(s) {', '.join(unknown)}; use {', '.join(dataset.SETS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"ours": {}, "study": {}, "files": {}}
    for name in sets:
        records = dataset.build(name)
        path = out_dir / f"{name}.jsonl"
        dataset.write_jsonl(records, path)
        result["ours"][name] = dataset.stats(records)
        result["study"][name] = dataset.STUDY_STATS[name]
        result["files"][name] = {"path": path.name, "sha256": artifacts.file_sha256(path)}
    artifacts.write_json(out_dir / "dataset_stats.json", result)
    return result


def validate(path: str | os.PathLike) -> dict:
    """Read and check one dataset file; return its `dataset.stats`. Raises DatasetError."""
    records = dataset.read_jsonl(path, expect_balanced=False)
    if any(r.set in dataset.BALANCED_SETS for r in records):
        dataset.check_balance(records, where=str(path))
    return dataset.stats(records)


def format_table(result: dict) -> str:
    """Our statistics beside the study's, one row per set."""
    head = f"{'set':<10} {'records':>7} {'study':>6} {'per class':>12} {'chars':>6} {'study':>6}"
    head += f" {'words':>6}"
    rows = [head, "-" * len(head)]
    for name, ours in result["ours"].items():
        study = result["study"].get(name, {})
        counts = sorted(set(ours["count"].values()))
        per = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        s_total = study.get("total")
        s_chars = study.get("mean_chars")
        rows.append(
            f"{name:<10} {ours['total']:>7} {'-' if s_total is None else s_total:>6} "
            f"{per:>12} {ours['mean_chars']:>6.1f} {'-' if s_chars is None else s_chars:>6} "
            f"{ours['mean_words']:>6.1f}"
        )
    rows.append("chars/words: mean characters / whitespace-separated words per text (all classes)")
    return "\n".join(rows)


def _fail(message: str) -> None:
    print(f"phase1_dataset: {message}", file=sys.stderr)
    sys.exit(2)


def _parse_flags(argv: list[str]) -> list[str]:
    # absl exits with status 1 on a bad flag; usage errors here exit 2 like every other one.
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        _fail(f"{e}; see --helpfull")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments {' '.join(argv[1:])}; pass options as --flag=value")
    try:
        if _VALIDATE.value is not None:
            stats = validate(_VALIDATE.value)
            name = "/".join(stats["sets"])
            table = {"ours": {name: stats}, "study": {name: dataset.STUDY_STATS.get(name, {})}}
            print(f"{_VALIDATE.value}: OK")
            print(format_table(table))
            return
        if not _OUT_DIR.value:
            _fail("--out_dir is required (or pass --validate=<file>)")
        result = run(_OUT_DIR.value, _SETS.value)
    except (dataset.DatasetError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.filename or ''}: {e.strerror}; check the path and permissions")
    print(format_table(result))
    print(
        f"wrote {', '.join(f'{s}.jsonl' for s in result['ours'])} and dataset_stats.json "
        f"to {_OUT_DIR.value}"
    )


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
