"""What report.html's figures show, read from a run directory's artifacts into plain JSON-able
dicts (the page embeds them and draws them with its own script).

Every reader takes what the phase wrote and nothing else (no model, no recomputation). A file or
field that is not there never stops the page: the reader returns `{"missing": "<what and
where>"}` and the page says so in place of the figure. Numbers keep 6 significant digits (the
page prints 3 decimals); CSV columns are read by name, so a column added by a later phase version
is ignored and one removed reads as missing.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from jaxcirc.infra import artifacts

READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError)


def num(v):
    """A CSV or JSON cell as a number for the page: int stays int, float keeps 6 significant
    digits, empty / non-numeric / non-finite -> None."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    if isinstance(v, str) and re.fullmatch(r"[+-]?\d+", v.strip()):
        return int(x)
    return float(f"{x:.6g}")


def read_csv(path: Path) -> list[dict]:
    """Rows of the CSV at `path` as dicts of strings (raises OSError when absent)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_json(path: Path):
    return json.loads(path.read_text())


def guarded(what: str, fn: Callable[[], dict]) -> dict:
    """`fn()`, or {"missing": reason} when its files or fields are not there (the page shows the
    reason where the figure would be)."""
    try:
        return fn()
    except FileNotFoundError as e:
        where = "/".join(Path(e.filename).parts[-3:]) if e.filename else str(e)
        return {"missing": f"{what}: {where} is not in this run"}
    except READ_ERRORS as e:
        return {"missing": f"{what}: could not be read ({type(e).__name__}: {e})"}


def _rel(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


# --- phase 2: extraction ----------------------------------------------------------------------


def extraction(root: Path, label: str) -> dict:
    """What phase 2 recorded for one model: layers, positions, prompts, tokens, time.

    Reads extract/<model>/activations.json (its shape, layer names and tokenisation) and the
    stage stamp's timing; the activations themselves are not opened."""
    d = root / "extract" / artifacts.slug(label)
    meta = read_json(d / "activations.json")
    info = meta.get("meta") or {}
    shape = meta.get("shape") or {}
    lengths = (info.get("tokenization") or {}).get("lengths") or []
    packing = info.get("packing") or {}
    timing = (
        ((read_json(d / ".stamp.json") if (d / ".stamp.json").is_file() else {}) or {})
        .get("meta", {})
        .get("timing", {})
    )
    npz = d / str(meta.get("npz", "activations.npz"))
    return {
        "file": _rel(root, d / "activations.json"),
        "n_prompts": shape.get("n"),
        "classes": meta.get("classes"),
        "layer_names": meta.get("layer_names"),
        "n_layers": shape.get("layer+1"),
        "width": shape.get("pos"),
        "d_model": shape.get("d_model"),
        "tokens": packing.get("tokens", sum(lengths) if lengths else None),
        "tokens_min": min(lengths) if lengths else None,
        "tokens_max": max(lengths) if lengths else None,
        "tokens_mean": num(sum(lengths) / len(lengths)) if lengths else None,
        "prepend_bos": meta.get("prepend_bos"),
        "batch_size": info.get("batch_size"),
        "backend": info.get("backend"),
        "forward_seconds": num(info.get("seconds")),
        "samples_per_s": num(info.get("samples_per_s")),
        "stage_seconds": num(timing.get("seconds")),
        "compile_seconds": num(timing.get("compile_seconds")),
        "npz_bytes": npz.stat().st_size if npz.is_file() else None,
        "layer_axis": info.get("layer_axis"),
    }


# --- phases 3 and 3.5: vectors and probes -----------------------------------------------------


def vectors(root: Path, label: str) -> dict:
    """Cosine matrices per (method, centre, layer) with their label-shuffle nulls, and the probe's
    accuracy per layer with its null, from vectors/<model>/cosines.csv and probe.csv.

    cos[method][centre][layer][pair] = [cosine, null_mean, null_lo, null_hi] for each pair of
    `pairs` ("a|b"); layers index `layers`."""
    d = root / "vectors" / artifacts.slug(label)
    rows = read_csv(d / "cosines.csv")
    if not rows:
        raise ValueError("cosines.csv has no rows")
    layers = sorted({int(r["layer"]) for r in rows})
    names = {int(r["layer"]): r.get("layer_name", "") for r in rows}
    pairs = list(dict.fromkeys(f"{r['class_a']}|{r['class_b']}" for r in rows))
    classes = list(dict.fromkeys(c for p in pairs for c in p.split("|")))
    cos: dict = {}
    for r in rows:
        by_layer = cos.setdefault(r["method"], {}).setdefault(r["centre"], {})
        cells = by_layer.setdefault(str(r["layer"]), [None] * len(pairs))
        cells[pairs.index(f"{r['class_a']}|{r['class_b']}")] = [
            num(r.get(k)) for k in ("cosine", "null_mean", "null_lo", "null_hi")
        ]
    first = rows[0] if rows else {}
    summary = read_json(d / "summary.json") if (d / "summary.json").is_file() else {}
    positions = {
        m: next(iter(by_c.values()), {}).get("position")
        for m, by_c in (summary.get("cosines") or {}).items()
        if isinstance(by_c, dict)
    }
    return {
        "file": _rel(root, d / "cosines.csv"),
        "layers": layers,
        "layer_names": [names[x] for x in layers],
        "pairs": pairs,
        "classes": classes,
        "cos": cos,
        "positions": positions,
        "n_perm": num(first.get("n_perm")),
        "level": num(first.get("level")),
        "probe": guarded("probe", lambda: _probe(root, d / "probe.csv")),
    }


def _probe(root: Path, path: Path) -> dict:
    out: dict = {"file": _rel(root, path), "features": {}}
    for r in read_csv(path):
        f = out["features"].setdefault(r["feature"], {"layer": [], "layer_name": []})
        f["layer"].append(int(r["layer"]))
        f["layer_name"].append(r.get("layer_name", ""))
        for k in ("accuracy", "null_mean", "null_lo", "null_hi", "null_p95"):
            f.setdefault(k, []).append(num(r.get(k)))
        for k in ("chance", "n", "n_folds", "n_perm"):
            f[k] = num(r.get(k))
    return out


# --- phase 6: alignment -----------------------------------------------------------------------

ALIGN_METRICS = (
    "overlap_raw",
    "overlap_random_expectation",
    "overlap_random_lo",
    "overlap_random_hi",
    "overlap_mapped",
    "overlap_mapped_null_mean",
    "overlap_mapped_null_lo",
    "overlap_mapped_null_hi",
    "delta_cos2",
    "r2_fit",
    "r2_test",
    "r2_test_null_mean",
    "r2_test_null_lo",
    "r2_test_null_hi",
    "cka_fit",
    "cka_null_mean",
    "cka_null_lo",
    "cka_null_hi",
    "cka_pvalue",
    "overlap_raw_ci_lo",
    "overlap_raw_ci_hi",
    "overlap_mapped_ci_lo",
    "overlap_mapped_ci_hi",
    "random_init_overlap_mapped",
    "random_init_r2_test",
    "random_init_cka",
)


def alignment(root: Path, labels: list[str]) -> dict:
    """Per (model A, model B, pairing, map) the alignment figures per compared layer with their
    nulls, from alignment/alignment.csv (one row per layer pair and map). Model names are the
    short labels (artifacts.slug)."""
    path = root / "alignment" / "alignment.csv"
    series: dict = {}
    for r in read_csv(path):
        ridge = r.get("ridge_rel", "")
        method = r.get("method", "linear")
        name = f"{method} (ridge_rel {num(ridge):g})" if method == "linear" and ridge else method
        key = (r["model_a"], r["model_b"], r.get("pairing", ""), name)
        s = series.setdefault(
            key,
            {
                "a": artifacts.slug(r["model_a"]),
                "b": artifacts.slug(r["model_b"]),
                "pairing": r.get("pairing", ""),
                "map": name,
                "n_over_d": num(r.get("n_over_d")),
                "n_perm": num(r.get("n_perm")),
                "layer_a": [],
                "layer_b": [],
                "warnings": [],
            },
        )
        s["layer_a"].append(int(r["layer_a"]))
        s["layer_b"].append(int(r["layer_b"]))
        s["warnings"].append(r.get("warnings", ""))
        for k in ALIGN_METRICS:
            if k in r:
                s.setdefault(k, []).append(num(r[k]))
    if not series:
        raise ValueError("alignment.csv has no rows")
    return {"file": _rel(root, path), "series": list(series.values())}
