"""report.html: the CI-size study's page, checked offline in a real headless Chromium (no request
leaves the file, no console error, every section, hovered numbers equal to the artifacts, the
model selector and the keyboard working), and its readers degrading to a note, never a crash,
when files or fields are missing. Without Chromium the browser tests skip and say why; `make
test` installs it when run as root (CI).
"""

from __future__ import annotations

import csv
import os
import re
import shutil
from pathlib import Path

import pytest

from jaxcirc.infra.artifacts import slug
from jaxcirc.report import html as report_html
from jaxcirc.report import html_data, html_interventions, html_markdown
from jaxcirc.report.html_browser import Browser, find_chromium, screenshot_views
from tests.support import smoke_run

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = (
    "intro",
    "models",
    "dataset",
    "extract",
    "vectors",
    "alignment",
    "steering",
    "heads",
    "cross-model",
)
NUM = r"(-?\d+\.\d+(?:e-?\d+)?|n/a)"


def _rows(path: Path, **match) -> list[dict]:
    with path.open() as f:
        return [r for r in csv.DictReader(f) if all(r.get(k) == str(v) for k, v in match.items())]


def _close(shown: str, value: str | float) -> bool:
    """A number printed with k decimals equals the artifact's value to that precision."""
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - float(value)) <= 0.5 * 10**-decimals + 1e-12


# --- the run and the browser ------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, worker_id):
    """The smoke study (configs/demo.py:smoke, run once per session: tests/support.py) and its
    report.html.

    JAXCIRC_TEST_SMOKE_RUN=<a finished smoke run directory> reuses that run instead (copied, so
    it is left as it was): for iterating on the page without rerunning the study."""
    from configs import demo
    from jaxcirc import study

    reuse = os.environ.get("JAXCIRC_TEST_SMOKE_RUN")
    if reuse:
        work = tmp_path_factory.mktemp("html") / "run"
        shutil.copytree(reuse, work, ignore=shutil.ignore_patterns("*.npz", ".lock"))
    else:
        work, _, _ = smoke_run(tmp_path_factory, worker_id, tmp_path_factory.mktemp("html"))
    cfg = demo.get_config("smoke")
    labels = study.model_labels(cfg)
    page = report_html.write_html(work, cfg, labels)
    return work, cfg, labels, page


@pytest.fixture(scope="module")
def browser():
    if not find_chromium():
        pytest.skip(
            "Chromium is not installed (no chromium / chromium-browser / google-chrome on PATH); "
            "`make test` installs it with apt-get when run as root, as CI does"
        )
    with Browser(width=1280, height=900) as b:
        yield b


def _text(b: Browser, selector: str) -> str:
    return b.evaluate(f"document.querySelector({selector!r}).textContent")


def _hover(b: Browser, selector: str) -> None:
    b.hover(*b.centre_of(selector))


# --- the page in a browser --------------------------------------------------------------------


def test_page_loads_offline_fast_without_errors_and_with_every_section(smoke, browser):
    work, _, labels, page = smoke
    seconds = browser.open(page)
    assert browser.requests == [page.resolve().as_uri()], browser.requests  # nothing else fetched
    assert browser.errors == []
    assert browser.evaluate("window.__report.ms") < 2000, "scripts ran past 2 s after navigation"
    assert seconds < 10
    for sid in SECTIONS:
        assert browser.evaluate(f"!!document.getElementById('sec-{sid}')"), sid
        assert len(_text(browser, f"#sec-{sid}")) > 200, sid
    # Every figure drew (an SVG), or says in place what this run lacks; none failed.
    for fig in ("vectors", "alignment", "steering", "patching", "heads"):
        assert browser.evaluate(f"document.querySelectorAll('#fig-{fig} svg').length") > 0, fig
    assert "could not be" not in _text(browser, "main")
    # Short labels with a legend: the full label appears once, in the legend.
    body = _text(browser, "main")
    for label in labels:
        assert body.count(label) == 1, label
    # The study's figures stand beside ours, as in report.md.
    assert "study" in _text(browser, "#sec-vectors") and "0.48" in _text(browser, "#sec-vectors")
    assert "0.0349" in _text(browser, "#sec-heads")


def _heads_choice(b: Browser) -> dict:
    values = b.evaluate("[...document.querySelectorAll('#fig-heads select')].map(s => s.value)")
    return dict(zip(("method", "measure", "ablation", "emotion"), values, strict=True))


def _check_head_readout(b: Browser, work: Path, model: str, layer: int, head: int) -> str:
    pick = _heads_choice(b)
    _hover(b, f'#fig-heads rect.cell[data-i="{layer}"][data-j="{head}"]')
    text = _text(b, "#fig-heads .readout")
    assert text.startswith(f"L{layer}H{head} ({model}; "), text
    m = re.search(rf"score {NUM}, 95% CI \[{NUM}, {NUM}\]; rank (\d+) of (\d+)", text)
    assert m, text
    (row,) = _rows(
        work / "heads" / model / f"scores_{pick['method']}.csv",
        measure=pick["measure"],
        ablation=pick["ablation"],
        emotion=pick["emotion"],
        layer=layer,
        head=head,
    )
    for shown, key in zip(m.groups()[:3], ("score", "ci_lo", "ci_hi"), strict=True):
        assert _close(shown, row[key]), (key, shown, row[key])
    assert int(m.group(4)) == int(row["rank"])
    return m.group(1)


def test_hovering_a_head_cell_shows_its_score_ci_and_rank_and_the_model_selector_redraws(
    smoke, browser
):
    work, _, labels, page = smoke
    browser.open(page)
    first, second = slug(labels[0]), slug(labels[1])
    assert browser.evaluate("document.getElementById('model-select').value") == first
    pick = _heads_choice(browser)
    rows = _rows(
        work / "heads" / first / f"scores_{pick['method']}.csv",
        measure=pick["measure"],
        ablation=pick["ablation"],
        emotion=pick["emotion"],
    )
    # The last-ranked head: not the cell the figure shows first (rank 1).
    last = max(rows, key=lambda r: int(r["rank"]))
    layer, head = int(last["layer"]), int(last["head"])
    before = browser.evaluate(
        "[...document.querySelectorAll('#fig-heads svg text')].map(t => t.textContent).join(' ')"
    )
    _check_head_readout(browser, work, first, layer, head)
    # The model selector by keyboard: focus it, arrow down; every figure redraws for that model.
    browser.focus("#model-select")
    browser.key("ArrowDown", 40)
    assert browser.evaluate("document.getElementById('model-select').value") == second
    after = browser.evaluate(
        "[...document.querySelectorAll('#fig-heads svg text')].map(t => t.textContent).join(' ')"
    )
    assert after != before
    _check_head_readout(browser, work, second, layer, head)
    assert f"({second})" in _text(browser, "#fig-heads h4")
    # The heatmap by keyboard: focus it, arrow keys move the readout from cell to cell.
    browser.focus("#fig-heads svg[tabindex]")
    browser.key("ArrowUp" if layer else "ArrowDown", 38 if layer else 40)
    moved = _text(browser, "#fig-heads .readout")
    assert moved.startswith(f"L{layer - 1 if layer else layer + 1}H{head} ({second}; "), moved
    assert browser.errors == []


def test_steering_cell_shows_effect_band_and_that_cells_continuations(smoke, browser):
    work, _, labels, page = smoke
    model = slug(labels[0])
    browser.open(page)
    pick = browser.evaluate(
        "[...document.querySelectorAll('#fig-steering select')].map(s => s.value)"
    )
    prompt_set, direction, measure = pick[:3]
    cells = browser.evaluate("document.querySelectorAll('#fig-steering rect.cell').length")
    n_alpha = browser.evaluate(
        "new Set([...document.querySelectorAll('#fig-steering rect.cell')].map(r => r.dataset.j)).size"
    )
    i, j = cells // n_alpha - 1, 0  # last layer, most negative alpha
    _hover(browser, f'#fig-steering rect.cell[data-i="{i}"][data-j="{j}"]')
    text = _text(browser, "#fig-steering .readout")
    m = re.search(
        rf"layer (\d+), alpha (-?[\d.]+).*: {measure} effect {NUM}, 95% CI \[{NUM}, {NUM}\] vs "
        rf"random directions' band \[{NUM}, {NUM}\]",
        text,
    )
    assert m, text
    layer, alpha = int(m.group(1)), float(m.group(2))
    (row,) = [
        r
        for r in _rows(
            work / "steering" / model / prompt_set / "effects.csv",
            direction=direction,
            measure=measure,
            layer=layer,
            control="none",
        )
        if float(r["alpha"]) == alpha
    ]
    for shown, key in zip(
        m.groups()[2:], ("effect", "ci_lo", "ci_hi", "random_lo", "random_hi"), strict=True
    ):
        assert _close(shown, row[key]), (key, shown, row[key])
    # The continuations shown are those the phase stored for this very cell.
    samples = (work / "steering" / model / prompt_set / "samples" / f"{direction}.txt").read_text()
    block = re.search(rf"## layer {layer}, alpha {alpha:+g} .*?\n(.*?)(?=\n## |\Z)", samples, re.S)
    assert block, f"layer {layer}, alpha {alpha:+g} not in the samples file"
    steered = browser.evaluate(
        "document.querySelector('#fig-steering .samples tbody tr').cells[2].textContent"
    )
    assert repr(steered) in block.group(1) or steered in block.group(1)


def test_layer_slider_moves_the_cosine_matrix_by_keyboard(smoke, browser):
    work, _, labels, page = smoke
    model = slug(labels[0])
    browser.open(page)
    method, centre = browser.evaluate(
        "[...document.querySelectorAll('#fig-vectors select')].map(s => s.value)"
    )[:2]
    browser.focus("#fig-vectors input[type=range]")
    top = int(browser.evaluate("document.querySelector('#fig-vectors input[type=range]').value"))
    browser.key("ArrowLeft", 37)
    text = _text(browser, "#fig-vectors .readout")
    m = re.search(rf"gratitude vs anger \({method}, {centre}, layer (\d+) .*\): cosine {NUM}", text)
    assert m and int(m.group(1)) == top - 1, text
    (row,) = _rows(
        work / "vectors" / model / "cosines.csv",
        method=method,
        centre=centre,
        layer=top - 1,
        class_a="gratitude",
        class_b="anger",
    )
    assert _close(m.group(2), row["cosine"])


def test_tables_sort_by_keyboard(smoke, browser):
    _, _, _, page = smoke
    browser.open(page)
    table = "#fig-heads table.sortable"
    col = browser.evaluate(
        f"[...document.querySelector('{table}').tHead.rows[0].cells]"
        ".findIndex(c => c.textContent === 'score')"
    )
    assert col >= 0
    th = f"{table} thead th:nth-child({col + 1})"
    browser.focus(f"{th} button.sort")
    browser.key("Enter", 13, "\r")
    values = browser.evaluate(
        f"[...document.querySelector('{table}').tBodies[0].rows]"
        f".map(r => parseFloat(r.cells[{col}].textContent))"
    )
    assert values == sorted(values) and len(values) > 3
    assert (
        browser.evaluate(f"document.querySelector('{th}').getAttribute('aria-sort')") == "ascending"
    )


def test_screenshots_of_the_main_views(smoke, browser):
    work, _, _, page = smoke
    shots = screenshot_views(page, work / "report" / "screenshots", browser)
    assert {p.stem for p in shots} >= {"intro", "extraction", "vectors", "steering", "heads"}
    for p in shots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000, p


# --- missing files and fields -----------------------------------------------------------------


def test_missing_and_changed_artifacts_show_as_notes_never_as_errors(smoke, tmp_path):
    work, cfg, labels, _ = smoke
    run = tmp_path / "run"
    shutil.copytree(work, run, ignore=shutil.ignore_patterns("*.npz", "*.png", "screenshots"))
    a, b = slug(labels[0]), slug(labels[1])
    gone = [
        run / "report.md",
        run / "heads" / a / "scores_exact.csv",
        run / "steering" / a / "neutral" / "samples",
        run / "alignment" / "alignment.csv",
        run / "vectors" / a / "probe.csv",
        run / "extract" / b / "activations.json",
    ]
    for p in gone:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    # A later phase version renamed every column; and a summary lost its fields.
    (run / "steering" / b / "neutral" / "effects.csv").write_text("what,value\nx,1\n")
    (run / "vectors" / b / "summary.json").write_text("{}")
    # ... and a later version of the head phase adds a column: it reaches the hovered readout.
    scores = run / "heads" / a / "scores_direct.csv"  # the first method left (exact is gone)
    with scores.open() as f:
        rows = list(csv.DictReader(f))
    with scores.open("w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "q_value"])
        w.writeheader()
        w.writerows({**r, "q_value": f"{0.001 * (i + 1):.4f}"} for i, r in enumerate(rows))
    path = report_html.write_html(run, cfg, labels)
    text = path.read_text()
    assert (run / "report" / "report.html").read_text() == text
    for needle in (
        "report.md was not found",
        "alignment.csv is not in this run",
        "activations.json is not in this run",
        "could not be read (KeyError",
    ):
        assert needle in text, needle
    data = report_html.collect(run, labels)
    assert "missing" in data["vectors"][a]["probe"] and "exact" not in data["heads"][a]["maps"]
    assert data["heads"][a]["maps"]  # the other methods still draw
    assert "q_value" in data["heads"][a]["extra"]
    if not find_chromium():
        return
    with Browser() as br:
        br.open(path)
        assert br.errors == [] and br.requests == [path.resolve().as_uri()]
        assert "could not be drawn" not in _text(br, "main")
        assert "No sample continuations stored" in _text(br, "#fig-steering")
        assert "alignment.csv is not in this run" in _text(br, "#fig-alignment")
        assert re.search(r"; q_value 0\.0\d\d", _text(br, "#fig-heads .readout"))
        br.focus("#model-select")
        br.key("ArrowDown", 40)
        assert "could not be read" in _text(br, "#fig-steering")
        assert br.errors == []


def test_a_run_with_nothing_but_a_report_still_renders(tmp_path):
    (tmp_path / "report.md").write_text(
        "# jaxcirc study report: x\n\nIntro.\n\n## How this differs\n\nText.\n"
    )
    page = report_html.render_html(tmp_path, None, ["m1 (a model)"])
    assert "How this differs" in page and "Intro." in page
    for sid in ("extract", "vectors", "alignment", "steering", "heads"):
        assert f'id="sec-{sid}"' in page


# --- the page as a file, and its pieces ---------------------------------------------------------


def test_page_is_one_self_contained_file(smoke):
    _, _, _, page = smoke
    text = page.read_text()
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    assert not re.search(r"<(script|img|iframe)[^>]*\ssrc=|<link\b|@import|url\(", text)
    assert len(text.encode()) < 3_000_000


def test_markdown_becomes_escaped_html_with_sortable_tables():
    lines = [
        "Sensitivity *slope*, **bold** `a<b` and n/d <= 1; \\* outside.",
        "",
        "| pair | study |",
        "|---|---|",
        "| a-b | 0.480 |",
        "",
        "- one",
        "  two",
        "- three",
        "",
        "![plot](steering/x.png)",
        "",
        "```",
        '{"k": 1}',
        "```",
        "### gpt2",
    ]
    out = html_markdown.to_html(lines)
    assert "<em>slope</em>" in out and "<strong>bold</strong>" in out
    assert "<code>a&lt;b</code>" in out and "n/d &lt;= 1" in out and "* outside" in out
    assert '<table class="sortable">' in out and "<td>0.480</td>" in out
    assert "<li>one two</li><li>three</li>" in out
    assert 'href="steering/x.png"' in out and "<img" not in out
    assert "<details" in out and "{&quot;k&quot;: 1}" in out
    assert "<h3>gpt2</h3>" in out
    secs = html_markdown.split_sections("# T\n\npre\n\n## A\n\nx\n\n## B\n")
    assert [s.title for s in secs] == [None, "A", "B"]


def test_sample_files_parse_and_unknown_lines_are_kept():
    text = (
        "# gratitude: first prompts\n\n## unsteered (alpha = 0)\n[0] 'Hi.'\n    -> ' there'\n\n"
        "## layer 2, alpha +4 (added norm 1.0)\n[0] 'Hi.'\n    -> \" it's\"\n    coherence 0.9\n"
        "## resid_pre, layer 1\n[0] 'Hi.'\n    unpatched -> ' a'\n    patched   -> ' b'\n"
    )
    blocks = html_interventions.parse_samples(text)
    assert blocks["unsteered (alpha = 0)"]["entries"] == [
        {"prompt": "Hi.", "lines": [["", " there"]]}
    ]
    steered = blocks["layer 2, alpha +4 (added norm 1.0)"]["entries"][0]["lines"]
    assert steered == [["", " it's"], ["", "coherence 0.9"]]
    assert blocks["resid_pre, layer 1"]["entries"][0]["lines"] == [
        ["unpatched", " a"],
        ["patched", " b"],
    ]


def test_numbers_keep_six_significant_digits_and_drop_non_finite():
    assert html_data.num("0.123456789") == 0.123457
    assert html_data.num("70") == 70 and isinstance(html_data.num("70"), int)
    assert html_data.num("") is None and html_data.num("nan") is None and html_data.num("x") is None
    assert html_data.num(float("inf")) is None
