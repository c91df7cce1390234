"""report.html: the run's report as one self-contained page a researcher explores offline.

The page holds report.md's text and tables (converted, so both reports print the same numbers;
models by their short labels with a legend) and, in each phase's section, figures drawn in the
browser from the artifacts themselves: layer x head heatmaps with value, CI and rank on hover;
steering effects per layer and alpha with the random band shaded and the continuations of the
hovered cell; cosine matrices and probe accuracy per layer under a layer slider; alignment
figures beside their nulls; patching per layer. One model selector drives every figure; every
table sorts by any column.

Why hand-written SVG and not plotly: the page needs two kinds of chart (a heatmap and a line
chart with CI bars and shaded null bands), which take ~750 lines of plain JavaScript
(jaxcirc/report/web/report.js), while plotly's bundle alone is ~3.5 MB to inline and parse. The
demo run's page is ~1.2 MB, nearly all of it the embedded numbers and sample continuations, and
its scripts finish ~0.1-0.4 s after the file opens.
Nothing is fetched at view time: scripts and styles are inlined, the data is a JSON block, and a
Content-Security-Policy forbids any request, so the page works as one file sent to a colleague.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from jaxcirc.infra import artifacts
from jaxcirc.report import html_data, html_interventions, html_markdown
from jaxcirc.report.format import runs_the_study

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Known:
    """A section the page knows: its id, the pattern its report.md heading matches, the title
    used when report.md has no such section, and the figures drawn into it."""

    id: str
    pattern: str
    title: str
    figures: tuple[str, ...] = ()


KNOWN = (
    Known("models", r"^models\b", "Models"),
    Known("dataset", r"phase 1\b|dataset", "Phase 1: dataset"),
    Known("extract", r"phase 2\b|extraction|activations", "Phase 2: activations"),
    Known(
        "vectors", r"phases? 3\b|emotion vectors", "Phases 3 and 3.5: emotion vectors", ("vectors",)
    ),
    Known(
        "alignment",
        r"phase 6\b|alignment",
        "Phase 6: subspaces and cross-model alignment",
        ("alignment",),
    ),
    Known(
        "steering",
        r"phases? 4\b|steering",
        "Phases 4-5: steering and activation patching",
        ("steering", "patching"),
    ),
    Known(
        "heads", r"phase 7\b|attention heads", "Phase 7: attention heads", ("heads", "head-tables")
    ),
    Known("cross-model", r"cross-model", "Cross-model patching"),
    Known("checkpoints", r"training checkpoints", "Across training checkpoints"),
)
FIGURE_TITLES = {
    "vectors": "Cosine between emotion vectors, and the linear probe, per layer",
    "alignment": "Alignment per layer, beside its nulls",
    "steering": "Steering effect per layer and alpha, against random directions",
    "patching": "Activation patching per layer, against a neutral-to-neutral patch",
    "heads": "Head scores, layer x head",
    "head-tables": "Rank correlations, generation with head edits, circuits, neurons",
}


def collect(root: Path, labels: Sequence[str]) -> dict:
    """Everything the page's figures draw, per model short label (artifacts.slug)."""
    root = Path(root)
    models = [{"label": lab, "short": artifacts.slug(lab)} for lab in labels]
    per_model = {
        "extract": html_data.extraction,
        "vectors": html_data.vectors,
        "steering": html_interventions.steering,
        "patching": html_interventions.patching,
        "heads": html_interventions.head_scores,
        "head_tables": html_interventions.head_tables,
    }
    data: dict = {"models": models}
    for name, reader in per_model.items():
        data[name] = {
            m["short"]: html_data.guarded(name, lambda r=reader, m=m: r(root, m["label"]))
            for m in models
        }
    data["alignment"] = html_data.guarded(
        "alignment", lambda: html_data.alignment(root, list(labels))
    )
    return data


def _short_labels(text: str, labels: Sequence[str]) -> str:
    """`text` with every full model label replaced by its short label, longest first."""
    for lab in sorted(labels, key=len, reverse=True):
        if artifacts.slug(lab) != lab:
            text = text.replace(lab, artifacts.slug(lab))
    return text


def _legend(labels: Sequence[str]) -> str:
    rows = "".join(
        f"<tr><td><strong>{html.escape(artifacts.slug(lab))}</strong></td>"
        f"<td>{html.escape(lab)}</td></tr>"
        for lab in labels
    )
    return (
        '<div class="table-wrap legend"><table><caption>Models: the short labels used '
        'throughout this page</caption><thead><tr><th scope="col">short label</th>'
        f'<th scope="col">model</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )


def _cell(v, nd: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return html.escape(str(v))


EXTRACT_HEAD = (
    "model",
    "layers recorded",
    "positions",
    "prompts",
    "real tokens",
    "d_model",
    "BOS",
    "time (stage wall)",
    "batch, backend",
)
EXTRACT_INTRO = (
    "<p>What phase 2 recorded (extract/&lt;model&gt;/activations.json): the residual stream "
    "at every layer boundary (0 = embeddings, the lexical baseline; l = after block l-1; the "
    "last is resid_post, before the final layer norm) at every token position of each prompt "
    "of the dataset, right-padded to the longest prompt, with the mask of real tokens, the "
    "index of the last real token (the <em>sentence_end</em> position) and the mask of the "
    "emotion-word span (the <em>token</em> positions). The study reports no extraction "
    "figures; time is this run's stage wall time on its own machine.</p>"
)


def _extraction_cells(short: str, e: dict) -> list[str]:
    """One model's row of the phase 2 table (HTML cells, in EXTRACT_HEAD's order)."""
    names = e.get("layer_names") or []
    layers = f"{e.get('n_layers')}: " + (f"{names[0]} ... {names[-1]}" if names else "n/a")
    return [
        f"<strong>{html.escape(short)}</strong>",
        html.escape(layers),
        f"all {e.get('width')} (padded; mask of real tokens)",
        f"{e.get('n_prompts')} ({html.escape(', '.join(e.get('classes') or []))})",
        f"{e.get('tokens')} ({e.get('tokens_min')}-{e.get('tokens_max')} per prompt, mean "
        f"{_cell(e.get('tokens_mean'), 1)})",
        _cell(e.get("d_model")),
        {True: "yes", False: "no"}.get(e.get("prepend_bos"), "n/a"),
        f"{_cell(e.get('stage_seconds'), 1)} s (forward {_cell(e.get('forward_seconds'), 2)} s"
        f", compile {_cell(e.get('compile_seconds'), 2)} s)",
        f"{_cell(e.get('batch_size'))}, {_cell(e.get('backend'))}",
    ]


def extraction_section(data: dict) -> str:
    """Phase 2 as a table: what was extracted per model (layers, positions, prompts, tokens,
    time), from extract/<model>/activations.json and the stage's timing; a model whose file is
    missing gets a note instead of a row."""
    rows, missing = [], []
    for short, e in data.items():
        if "missing" in e:
            note = f"{html.escape(short)}: {html.escape(e['missing'])}"
            missing.append(f'<p class="missing">{note}</p>')
            continue
        cells = _extraction_cells(short, e)
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    th = "".join(f'<th scope="col">{h}</th>' for h in EXTRACT_HEAD)
    table = (
        f'<div class="table-wrap"><table class="sortable"><thead><tr>{th}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
        if rows
        else ""
    )
    return EXTRACT_INTRO + table + "".join(missing)


def _figure(name: str) -> str:
    return (
        f'<figure class="fig" id="fig-{name}" data-fig="{name}"><figcaption>'
        f'{html.escape(FIGURE_TITLES[name])}</figcaption><div class="fig-body">'
        '<p class="noscript">This figure needs JavaScript; the tables of this section hold the '
        "same numbers.</p></div></figure>"
    )


def _match(title: str) -> Known | None:
    return next((k for k in KNOWN if re.search(k.pattern, title, re.IGNORECASE)), None)


def _sections(
    md_text: str, labels: Sequence[str], data: dict, study: bool = True
) -> list[tuple[str, str, str]]:
    """(id, title, inner HTML) of every section in report.md's order, with the known sections
    report.md lacks (phase 2; any phase whose Markdown is missing) inserted where they belong,
    unless the run is not of the study (`study` False: the study across training checkpoints
    alone, whose report.md section the page shows as it shows any other)."""
    out: list[tuple[str, str, str]] = []
    seen: dict[str, int] = {}
    for sec in html_markdown.split_sections(md_text):
        if sec.title is None:
            continue
        k = _match(sec.title)
        sid = k.id if k and k.id not in seen else _anchor(sec.title, seen)
        lines = [_short_labels(x, labels) for x in sec.lines]
        body = _with_figures(lines, k.figures if k and k.id not in seen else (), data, sid)
        seen[sid] = len(out)
        out.append((sid, _short_labels(sec.title, labels), body))
    for pos, k in enumerate(KNOWN):
        if not study or k.id in seen or not (k.id == "extract" or k.figures):
            continue
        body = _with_figures([], k.figures, data, k.id)
        before = [seen[x.id] for x in KNOWN[:pos] if x.id in seen]
        at = max(before) + 1 if before else 0
        out.insert(at, (k.id, k.title, body))
        seen = {sid: j for j, (sid, _, _) in enumerate(out)}
    return out


def _anchor(title: str, taken) -> str:
    """An id for a section the page does not know, from its title ("How this run differs" ->
    "how-this-run-differs"), unique among `taken`."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "section"
    sid, n = base, 1
    while sid in taken or sid in {k.id for k in KNOWN}:
        n += 1
        sid = f"{base}-{n}"
    return sid


def _with_figures(lines: list[str], figures: Sequence[str], data: dict, sid: str) -> str:
    """The section's Markdown with its figures after the first paragraph (the section's
    introduction), as a results section places a figure after the text that announces it."""
    blocks = html_markdown.to_html(lines).split("\n")
    head, rest = blocks[:1], blocks[1:]
    figs = "".join(_figure(f) for f in figures)
    if sid == "extract":
        figs = extraction_section(data.get("extract", {})) + figs
    if not lines:
        return figs
    return "\n".join(head) + figs + "\n".join(rest)


# The study across training checkpoints' figures the page shows (jaxcirc.phases.checkpoints
# draws them; the page has no chart of its own for them): the probe's accuracy per layer and
# step, its curve beside the label-shuffle null, each emotion's onset.
CHECKPOINT_PNGS = {
    "probe_heatmap.png": "Probe accuracy per layer and training step",
    "probe_curves.png": "Probe accuracy vs training step, beside its label-shuffle null",
    "onset.png": "Each emotion's separation from neutral vs training step, beside its null",
}


def checkpoint_figures(root: Path, labels: Sequence[str]) -> str:
    """The PNGs of CHECKPOINT_PNGS of every model that has them, inlined as data: URIs (the
    page fetches nothing; ~50-100 kB each)."""
    out = []
    for lab in labels:
        folder = Path(root) / "checkpoints" / artifacts.slug(lab)
        for name, caption in CHECKPOINT_PNGS.items():
            if not (folder / name).is_file():
                continue
            b64 = base64.b64encode((folder / name).read_bytes()).decode("ascii")
            text = html.escape(f"{artifacts.slug(lab)}: {caption}")
            out.append(
                f'<figure class="fig"><figcaption>{text}</figcaption><img alt="{text}" '
                f'style="max-width:100%" src="data:image/png;base64,{b64}"></figure>'
            )
    return "".join(out)


def _asset(name: str) -> str:
    return resources.files("jaxcirc.report").joinpath("web", name).read_text(encoding="utf-8")


def _json_block(data: dict) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(root: Path, cfg, labels: Sequence[str]) -> str:
    """The page for the run at `root` (see write_html), as a string."""
    root, labels = Path(root), list(labels)
    md_path = root / "report.md"
    md_text = md_path.read_text() if md_path.is_file() else ""
    data = collect(root, labels)
    title_line = next((x for x in md_text.splitlines() if x.startswith("# ")), "")
    title = title_line[2:].strip() or f"jaxcirc study report: {getattr(cfg, 'name', '')}"
    intro = next((s for s in html_markdown.split_sections(md_text) if s.title is None), None)
    intro_html = (
        html_markdown.to_html([_short_labels(x, labels) for x in intro.lines])
        if intro
        else '<p class="missing">report.md was not found; every number below is read from the '
        "phase artifacts directly.</p>"
    )
    sections = [
        (sid, t, inner + checkpoint_figures(root, labels) if sid == "checkpoints" else inner)
        for sid, t, inner in _sections(md_text, labels, data, runs_the_study(cfg))
    ]
    toc = "".join(f'<li><a href="#sec-{sid}">{html.escape(t)}</a></li>' for sid, t, _ in sections)
    body = "".join(
        f'<section class="phase" id="sec-{sid}" aria-labelledby="h-{sid}"><h2 id="h-{sid}">'
        f"{html.escape(t)}</h2>{inner}</section>"
        for sid, t, inner in sections
    )
    options = "".join(
        f'<option value="{html.escape(m["short"])}" title="{html.escape(m["label"])}">'
        f"{html.escape(m['short'])}</option>"
        for m in data["models"]
    )
    return PAGE.format(
        title=html.escape(title),
        csp=CSP,
        css=_asset("report.css"),
        js=_asset("report.js"),
        data=_json_block(data),
        intro=intro_html,
        legend=_legend(labels),
        toc=toc,
        body=body,
        options=options,
    )


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
{css}
</style>
</head>
<body>
<a class="skip" href="#main">Skip to the report</a>
<header class="top" role="banner">
<div class="bar">
<span class="brand">{title}</span>
<label class="model-pick">Model <select id="model-select" aria-describedby="model-help">{options}</select></label>
<span id="model-help" class="help">drives every figure; tables list all models</span>
</div>
<nav aria-label="Sections"><ol>{toc}</ol></nav>
</header>
<main id="main">
<section class="intro" id="sec-intro"><h1>{title}</h1>{intro}{legend}</section>
{body}
</main>
<script type="application/json" id="report-data">{data}</script>
<script>
{js}
</script>
</body>
</html>
"""


def write_html(root: Path, cfg, labels: Sequence[str]) -> Path:
    """Write `<root>/report.html` (and the same file at `<root>/report/report.html`, beside
    report/report.md); returns the former.

    root: the run directory; cfg: the study config it ran with; labels: the models' labels in
    the study's order (as for jaxcirc.report.markdown.write_report). Reads report.md when it is
    there (call this after write_report) and the phases' artifacts; a missing file or field shows
    as a note in the page, never as an error.
    """
    root = Path(root)
    page = render_html(root, cfg, labels)
    artifacts.write_text(root / "report" / "report.html", page)
    artifacts.write_text(root / "report.html", page)
    return root / "report.html"
