"""What every report section shares: how a number is printed, how a phase's JSON is read, how its
plots are embedded. Sections read only files the phases wrote, so a missing file is "no section",
never an error.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def fmt(x, nd: int = 3) -> str:
    """A table cell: floats with `nd` decimals, None and non-finite floats as "n/a", bools as
    "yes"/"no", ints and anything else as str."""
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int | float):
        if isinstance(x, float) and not math.isfinite(x):
            return "n/a"
        return f"{x:.{nd}f}" if isinstance(x, float) else str(x)
    return str(x)


def read_json(path: Path) -> dict | None:
    """The parsed JSON at `path`, or None when the phase did not write it."""
    return json.loads(path.read_text()) if path.is_file() else None


def images(root: Path, folder: Path, limit: int = 12) -> list[str]:
    """Markdown image lines for the first `limit` PNGs under `folder` (sorted by path, searched
    recursively), linked relative to the run directory `root`; [] when `folder` is absent."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.rglob("*.png"))[:limit]:
        rel = p.relative_to(root)
        out.append(f"![{p.stem}]({rel.as_posix()})")
    return out


def short(v: str) -> str:
    """A CSV cell for a table: integers as integers, other numbers through `fmt`, text as is."""
    try:
        x = float(v)
    except ValueError:
        return v
    return str(int(x)) if x.is_integer() and "." not in v else fmt(x)


# Phases of neither study's own: a config asking for none but these (configs/demo.py:training)
# ran the study across training checkpoints alone, and its report leaves out the English
# study's sections, which would only say that nothing was run.
_NOT_THE_STUDY = {"dataset", "checkpoints", "report"}


def runs_the_study(cfg) -> bool:
    """Whether the run's config (None: unknown, taken as yes) asks for any phase of the study
    itself beyond the dataset."""
    phases = getattr(cfg, "phases", None) if cfg is not None else None
    return phases is None or bool(set(phases) - _NOT_THE_STUDY)
