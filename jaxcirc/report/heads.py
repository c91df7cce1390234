"""The report's head section (phase 7), from heads/<model>/."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report.format import images, read_json, short


def _csv_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def section_heads(root: Path, labels: list[str]) -> list[str]:
    lines = [
        "## Phase 7: attention heads",
        "",
        "Study: 12 x 12 x 3 = 432 screening scores; top heads mostly in layer 0 (heads 0, 1, 4, "
        "5); ablating L0H0 changed sentiment by -0.0349, patching its output by +0.1102 (no "
        "control or CI reported). Ours: three screening methods (exact zero/mean ablation, direct "
        "attribution, attribution patching), their rank correlation, and ablation / patching of "
        "the top heads and L0H0 with generation, scored against random heads with bootstrap CIs.",
        "",
    ]
    found = False
    for label in labels:
        d = root / "heads" / artifacts.slug(label)
        if not d.is_dir():
            continue
        found = True
        lines += [f"### {label}", ""]
        corr = _csv_rows(d / "rank_correlation.csv")
        if corr:
            keys = list(corr[0])
            lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(short(r[k]) for k in keys) + " |" for r in corr[:12]]
            lines.append("")
        top = read_json(d / "top_k.json")
        if top:
            lines += ["Top heads (first entries of `top_k.json`):", "", "```"]
            lines += json.dumps(top, indent=1)[:2500].splitlines()
            lines += ["```", ""]
        for name in ("head_generation_summary.json", "generation/summary.json"):
            g = read_json(d / name)
            if g:
                lines += [f"Ablation / patching with generation (`{name}`):", "", "```"]
                lines += json.dumps(g, indent=1)[:3000].splitlines()
                lines += ["```", ""]
        lines += images(root, d, limit=10) + [""]
    return lines if found else []
