"""report.html's data for the interventions: steering sweeps (phases 4-5) with their random
controls and sample continuations, activation patching, and the head scores and tables of
phase 7. Readers of artifacts only; see jaxcirc.report.html_data for the conventions (numbers,
`{"missing": ...}`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report.html_data import guarded, num, read_csv, read_json
from jaxcirc.report.representation import study_model

_STEER_HEADER = re.compile(r"layer (\d+), alpha ([+-]?[0-9.]+)")
_PATCH_HEADER = re.compile(r"^(\S+), layer (\d+)")
_ENTRY = re.compile(r"^\[(\d+)\] (.*)$")
_LINE = re.compile(r"^\s+(\S*)\s*-> (.*)$")
MAX_TABLE_ROWS = 400
# The columns of effects.csv and scores_<method>.csv this page knows (shown, or said once in the
# figure's text); a column a later phase version adds is carried per cell and printed in the
# hovered cell's readout under its own name.
STEERING_COLUMNS = frozenset(
    "model prompt_set n_prompts vector_method vector_centre alpha_unit temperature top_k "
    "sample_seed max_new_tokens min_new_tokens layer alpha layer_norm added_norm measure ci_level "
    "n_boot boot_seed direction control random_seed effect ci_lo ci_hi random_mean random_lo "
    "random_hi n_random p_vs_random".split()
)
HEAD_COLUMNS = frozenset(
    "model method measure ablation emotion layer head score ci_lo ci_hi rank n_prompts "
    "random_dir_lo random_dir_hi vector seed definition".split()
)


def extra_columns(rows: list[dict], known: frozenset) -> tuple[str, ...]:
    """The columns of `rows` outside `known` that hold a value on some row."""
    cols = [c for c in (rows[0] if rows else {}) if c not in known]
    return tuple(c for c in cols if any(str(r.get(c) or "").strip() for r in rows))


# The study's head figures (sentiment change, L0H0, GPT-2 small; no control or CI reported).
STUDY_L0H0 = {"ablation": "-0.0349", "patching": "+0.1102"}


def _text(s: str) -> str:
    """A Python-quoted sample string as written by the phases, or the raw text if it is not one."""
    try:
        v = ast.literal_eval(s.strip())
    except (ValueError, SyntaxError):
        return s.strip()
    return v if isinstance(v, str) else s.strip()


def parse_samples(text: str) -> dict[str, dict]:
    """A samples/*.txt file -> {block header: {"entries": [{"prompt", "lines": [[label, text]]}]}}.

    Blocks start with `## `; an entry with `[i] 'prompt'`; its continuations are the indented
    `label -> 'text'` lines (label may be empty). Lines of any other shape stay in the entry as
    ["", raw line], so a format change shows as text, not as a gap."""
    blocks: dict[str, dict] = {}
    cur = None
    for line in text.splitlines():
        if line.startswith("## "):
            cur = blocks.setdefault(line[3:].strip(), {"entries": []})
        elif cur is None or not line.strip() or line.startswith("# "):
            continue
        elif m := _ENTRY.match(line):
            cur["entries"].append({"prompt": _text(m.group(2)), "lines": []})
        elif cur["entries"]:
            m = _LINE.match(line)
            pair = [m.group(1), _text(m.group(2))] if m else ["", line.strip()]
            cur["entries"][-1]["lines"].append(pair)
    return blocks


def _steer_key(header: str) -> str:
    """ "layer 2, alpha +4 (added norm ...)" -> "2:4"; "unsteered ..." -> "base"."""
    if header.startswith("unsteered"):
        return "base"
    m = _STEER_HEADER.search(header)
    return f"{int(m.group(1))}:{float(m.group(2)):g}" if m else header


def _samples(folder: Path) -> dict:
    """{file stem: {"layer:alpha" or "base": {"header": the block's heading as written (it may
    carry the cell's coherence), "entries": [...]}}} for the steering samples in `folder`."""
    out = {}
    for p in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        out[p.stem] = {
            _steer_key(h): {"header": h, "entries": b["entries"]}
            for h, b in parse_samples(p.read_text()).items()
        }
    return out


def steering_set(root: Path, d: Path) -> dict:
    """One prompt set's sweep: grids[measure][direction][k] over the (layer, alpha) grid in
    row-major order (k = i_layer * len(alphas) + i_alpha) of effect, ci_lo, ci_hi, random_lo,
    random_hi, p_vs_random, from effects.csv rows without a control (the emotion directions);
    the random band is the one the phase stored beside each cell."""
    rows = [r for r in read_csv(d / "effects.csv") if r.get("control", "none") in ("none", "")]
    if not rows:
        raise ValueError("effects.csv has no rows for the emotion directions")
    layers = sorted({int(r["layer"]) for r in rows})
    alphas = sorted({float(r["alpha"]) for r in rows})
    keys = ("effect", "ci_lo", "ci_hi", "random_lo", "random_hi", "p_vs_random")
    keys += extra_columns(rows, STEERING_COLUMNS)
    grids: dict = {}
    for r in rows:
        g = grids.setdefault(r["measure"], {}).setdefault(r["direction"], {})
        k = layers.index(int(r["layer"])) * len(alphas) + alphas.index(float(r["alpha"]))
        for key in keys:
            g.setdefault(key, [None] * (len(layers) * len(alphas)))[k] = _value(r.get(key, ""))
    s = read_json(d / "summary.json") if (d / "summary.json").is_file() else {}
    first = rows[0] if rows else {}
    meta = {k: s.get(k) for k in ("n_prompts", "vector_method", "vector_centre", "n_random_seeds")}
    meta.update({k: num(first.get(k)) for k in ("ci_level", "n_boot", "n_random", "alpha_unit")})
    meta.update({k: first.get(k) for k in ("max_new_tokens", "min_new_tokens", "temperature")})
    return {
        "extra": list(keys[6:]),
        "file": d.relative_to(root).as_posix() + "/effects.csv",
        "layers": layers,
        "alphas": alphas,
        "norms": [num(x) for x in s.get("norms") or []],
        "meta": meta,
        "grids": grids,
        "samples": _samples(d / "samples"),
    }


def steering(root: Path, label: str) -> dict:
    """Every prompt set steered for one model (folders of steering/<model>/ with an effects.csv)."""
    base = root / "steering" / artifacts.slug(label)
    if not base.is_dir():
        return {"missing": f"steering/{artifacts.slug(label)}/ not written"}
    sets = {
        d.name: guarded(f"steering {d.name}", lambda d=d: steering_set(root, d))
        for d in sorted(base.iterdir())
        if (d / "effects.csv").is_file()
    }
    order = sorted(sets, key=lambda n: (n != "neutral", n))
    return {"sets": {n: sets[n] for n in order}} if sets else {"missing": "no steering sweep"}


def patching(root: Path, label: str) -> dict:
    """Activation patching per source emotion: by[measure][site] = {layer, source, control,
    source_minus_control} with [effect, lo, hi] per layer, and the sample continuations per
    (site, layer), from steering/<model>/patching/<emotion>/."""
    base = root / "steering" / artifacts.slug(label) / "patching"
    if not base.is_dir():
        return {"missing": f"steering/{artifacts.slug(label)}/patching/ not written"}
    out = {}
    for d in sorted(p for p in base.iterdir() if (p / "patching_effects.csv").is_file()):
        out[d.name] = guarded(f"patching {d.name}", lambda d=d: _patching_one(root, d))
    return {"sources": out} if out else {"missing": "no patching_effects.csv"}


def _patching_one(root: Path, d: Path) -> dict:
    rows = read_csv(d / "patching_effects.csv")
    by: dict = {}
    for r in rows:
        site = by.setdefault(r["measure"], {}).setdefault(r["site"], {})
        layer = int(r["layer"])
        if layer not in site.setdefault("layer", []):
            site["layer"].append(layer)
        i = site["layer"].index(layer)
        trio = [num(r.get(k)) for k in ("effect", "ci_lo", "ci_hi")]
        cond = "source" if r.get("condition") == "source" else "control"
        site.setdefault(cond, {})[i] = trio
        if cond == "source":
            site.setdefault("smc", {})[i] = [
                num(r.get(k)) for k in ("source_minus_control", "smc_lo", "smc_hi")
            ]
    for sites in by.values():
        for site in sites.values():
            n = len(site["layer"])
            for k in ("source", "control", "smc"):
                site[k] = [site.get(k, {}).get(i) for i in range(n)]
    first = rows[0] if rows else {}
    samples = {}
    if (d / "samples" / "patching.txt").is_file():
        for h, b in parse_samples((d / "samples" / "patching.txt").read_text()).items():
            m = _PATCH_HEADER.match(h)
            samples[f"{m.group(1)}:{m.group(2)}" if m else h] = b["entries"]
    return {
        "file": d.relative_to(root).as_posix() + "/patching_effects.csv",
        "meta": {k: first.get(k) for k in ("target_set", "source_set", "n_targets", "positions")},
        "by": by,
        "samples": samples,
    }


# --- phase 7: heads ---------------------------------------------------------------------------


def head_scores(root: Path, label: str) -> dict:
    """Layer x head score maps from heads/<model>/scores_<method>.csv: maps[method]["measure|
    ablation|emotion"] holds score, ci_lo, ci_hi, rank, random_dir_lo, random_dir_hi over the
    cells in row-major order (k = layer * n_heads + head)."""
    d = root / "heads" / artifacts.slug(label)
    order = ("exact", "direct", "attribution")  # the reference method first
    files = sorted(
        d.glob("scores_*.csv"),
        key=lambda f: (order.index(m) if (m := f.stem[7:]) in order else len(order), m),
    )
    if not files:
        return {"missing": f"heads/{artifacts.slug(label)}/scores_*.csv not written"}
    keys = ("score", "ci_lo", "ci_hi", "rank", "random_dir_lo", "random_dir_hi")
    tables = {f.stem.removeprefix("scores_"): read_csv(f) for f in files}
    all_rows = [r for rows in tables.values() for r in rows]
    if not all_rows:
        raise ValueError("the scores CSVs have no rows")
    keys += extra_columns(all_rows, HEAD_COLUMNS)
    n_layers = 1 + max(int(r["layer"]) for r in all_rows)
    n_heads = 1 + max(int(r["head"]) for r in all_rows)
    maps: dict = {}
    about: dict = {}
    for method, rows in tables.items():
        about[method] = {k: rows[0].get(k) for k in ("definition", "vector", "n_prompts")}
        for r in rows:
            name = "|".join(r.get(k, "") for k in ("measure", "ablation", "emotion"))
            cell = maps.setdefault(method, {}).setdefault(name, {})
            k = int(r["layer"]) * n_heads + int(r["head"])
            for key in keys:
                cell.setdefault(key, [None] * (n_layers * n_heads))[k] = _value(r.get(key, ""))
    return {
        "extra": list(keys[6:]),
        "files": [f.relative_to(root).as_posix() for f in files],
        "n_layers": n_layers,
        "n_heads": n_heads,
        "about": about,
        "maps": maps,
    }


def table(root: Path, path: Path, drop=("model",), add=None, keep=None) -> dict:
    """A CSV as a page table: columns equal on every row are lifted into `constant` (said once
    under the table instead of in every row), `drop` columns left out, at most MAX_TABLE_ROWS
    rows. `add(row) -> {column: value}` appends computed columns (their values are printed as
    given, not as numbers); `keep(row)` selects rows."""
    rows = [r for r in read_csv(path) if keep is None or keep(r)]
    if not rows:
        raise ValueError(f"{path.name} has no rows to show")
    as_text = set(add(rows[0])) if add else set()
    rows = [{**r, **add(r)} for r in rows] if add else rows

    def cell(c: str, v: str):
        return v if c in as_text else _cell(v)

    cols = [c for c in rows[0] if c not in drop]
    constant = {c: rows[0][c] for c in cols if len(rows) > 1 and len({r[c] for r in rows}) == 1}
    shown = [c for c in cols if c not in constant]
    return {
        "file": path.relative_to(root).as_posix(),
        "columns": shown,
        "rows": [[cell(c, r[c]) for c in shown] for r in rows[:MAX_TABLE_ROWS]],
        "n_rows": len(rows),
        "constant": {c: cell(c, v) for c, v in constant.items()},
    }


def _cell(v: str):
    """A table cell: a number when it reads as one, else the text as written."""
    x = num(v)
    return v if x is None else x


def _value(v: str):
    """A per-cell value for a figure: a number, None when empty or non-finite, else the text."""
    x = num(v)
    if x is not None:
        return x
    t = str(v).strip()
    return None if t.lower() in ("", "nan", "inf", "-inf", "+inf") else t


def _is_l0h0_sentiment(row: dict) -> bool:
    return row.get("head_set") == "L0H0" and row.get("score") == "sentiment"


def _study_l0h0(row: dict) -> dict:
    hit = _is_l0h0_sentiment(row)
    return {"study (GPT-2 small)": STUDY_L0H0.get(row.get("mode"), "") if hit else ""}


def head_tables(root: Path, label: str) -> dict:
    """Phase 7's other results as tables: method rank correlations, ablation / patching with
    generation (with the study's L0H0 sentiment figures beside ours), circuits, neurons, and
    the generation samples per edit."""
    d = root / "heads" / artifacts.slug(label)
    generation = d / "generation" / "head_generation.csv"
    # The study's figures stand beside the study's models (and their stand-ins) only.
    add = _study_l0h0 if study_model(root, label)[0] is not None else None
    out = {
        "l0h0": guarded(
            "L0H0 beside the study",
            lambda: table(root, generation, add=add, keep=_is_l0h0_sentiment),
        ),
        "rank_correlation": guarded(
            "rank correlations", lambda: table(root, d / "rank_correlation.csv")
        ),
        "generation": guarded(
            "head generation",
            lambda: table(root, generation, add=add),
        ),
        "circuits": guarded("circuits", lambda: table(root, d / "circuits" / "circuits.csv")),
        "neurons": guarded("neurons", lambda: table(root, d / "neurons" / "neurons_top.csv")),
    }
    samples = d / "generation" / "head_generation_samples.json"
    out["generation_samples"] = guarded(
        "head generation samples", lambda: {"by": read_json(samples).get("samples") or {}}
    )
    return out
