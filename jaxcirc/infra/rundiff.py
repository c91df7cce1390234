"""Compare two run directories file by file, ignoring what legitimately differs between two runs of
the same study: wall-clock timings, finish times and the run directory's own path.

    differences = compare_runs("runs/before", "runs/after")   # [] when every result is equal

JSON files are compared as parsed values after dropping timing keys (see TIMING_KEYS) and
replacing each run's root path by "<run>"; NPZ files array by array, exactly; CSV, Markdown and
JSONL files as text with the root replaced; PNG and other files byte for byte. Stamps
(`.stamp.json`) are compared by the files they list: their keys and times may differ, and the
files' sha256s differ whenever a summary holds a timing.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

# Keys whose values are measured times or dates: a rerun never repeats them.
TIMING_KEYS = re.compile(
    r"(^|_)(seconds|secs|elapsed|time|timing|timings|wall|finished_at|finished_unix|created|"
    r"duration|per_s|samples_per_s|rate)(_|$)|_s$"
)


@dataclasses.dataclass(frozen=True)
class Difference:
    """One file that differs: `path` relative to the run roots, `what` says how."""

    path: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _strip(obj: Any, root: str) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v, root) for k, v in obj.items() if not TIMING_KEYS.search(str(k))}
    if isinstance(obj, list):
        return [_strip(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<run>")
    return obj


def _first_json_difference(a: Any, b: Any, where: str = "") -> str | None:
    if type(a) is not type(b) and not (isinstance(a, int | float) and isinstance(b, int | float)):
        return f"{where or 'value'}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{where}.{k}: only in {'after' if k not in a else 'before'}"
            d = _first_json_difference(a[k], b[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = _first_json_difference(x, y, f"{where}[{i}]")
            if d:
                return d
        return None
    if a != b and not (isinstance(a, float) and np.isnan(a) and np.isnan(b)):
        return f"{where or 'value'}: {a!r} vs {b!r}"
    return None


def _compare_file(rel: str, pa: Path, pb: Path, ra: str, rb: str) -> str | None:
    name = pa.name
    if name == ".stamp.json":
        oa, ob = (json.loads(p.read_text()).get("outputs", {}) for p in (pa, pb))
        # The outputs themselves are compared file by file; their sha256s differ whenever a
        # summary holds a timing, so the stamp is compared by which files it lists.
        return None if set(oa) == set(ob) else f"stage outputs {sorted(oa)} vs {sorted(ob)}"
    if name.endswith(".json"):
        ja = _strip(json.loads(pa.read_text()), ra)
        jb = _strip(json.loads(pb.read_text()), rb)
        return _first_json_difference(ja, jb)
    if name.endswith(".npz"):
        with np.load(pa) as za, np.load(pb) as zb:
            if set(za.files) != set(zb.files):
                return f"arrays {sorted(za.files)} vs {sorted(zb.files)}"
            for k in za.files:
                x, y = za[k], zb[k]
                if x.shape != y.shape or x.dtype != y.dtype:
                    return f"{k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
                if not np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"):
                    return f"{k}: values differ (max |diff| {np.nanmax(np.abs(x - y)):.3g})"
        return None
    if name.endswith((".csv", ".md", ".jsonl", ".txt")):
        ta = pa.read_text().replace(ra, "<run>")
        tb = pb.read_text().replace(rb, "<run>")
        if ta == tb:
            return None
        for i, (x, y) in enumerate(zip(ta.splitlines(), tb.splitlines(), strict=False)):
            if x != y:
                return f"line {i + 1}: {x[:80]!r} vs {y[:80]!r}"
        return "lengths differ"
    return None if pa.read_bytes() == pb.read_bytes() else "bytes differ"


def compare_runs(before: str | Path, after: str | Path, ignore: tuple[str, ...] = ()) -> list:
    """Every `Difference` between two run directories (files missing on either side included).

    ignore: relative paths (or prefixes ending in "/") left out, e.g. ("models.json",).
    """
    a, b = Path(before), Path(after)
    for p in (a, b):
        if not p.is_dir():
            raise ValueError(f"{p}: not a run directory")
    ra, rb = str(a.resolve()), str(b.resolve())
    fa, fb = _files(a), _files(b)

    def kept(rel: str) -> bool:
        return not any(rel == i or (i.endswith("/") and rel.startswith(i)) for i in ignore)

    out = [Difference(r, "only in before") for r in sorted(fa - fb) if kept(r)]
    out += [Difference(r, "only in after") for r in sorted(fb - fa) if kept(r)]
    for rel in sorted(fa & fb):
        if kept(rel):
            what = _compare_file(rel, a / rel, b / rel, ra, rb)
            if what:
                out.append(Difference(rel, what))
    return out
