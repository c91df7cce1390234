"""report.md's text as HTML, for report.html: the same sentences and tables, so the two reports
never disagree on a number.

Only the Markdown that `jaxcirc.report` writes is understood: headings, paragraphs, pipe tables,
`-` lists, fenced code, images, and inline **bold**, *italic*, `code` and backslash escapes.
Anything else passes through as escaped text, never as markup. Images become links to the PNG
files (report.html draws its own figures); fenced code (pasted JSON) folds into a <details>.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*\\])\*(?![\s*])(.+?)(?<![\s\\])\*(?![\w*])")


@dataclass
class Section:
    """One `## ` section of report.md: its heading (None for the text before the first one) and
    its lines."""

    title: str | None
    lines: list[str] = field(default_factory=list)


def split_sections(text: str) -> list[Section]:
    """report.md cut at its `## ` headings; the `# ` title line is dropped (the page has its own)."""
    out = [Section(None)]
    for line in text.splitlines():
        if line.startswith("## "):
            out.append(Section(line[3:].strip()))
        elif not line.startswith("# "):
            out[-1].lines.append(line)
    return [s for s in out if s.title is not None or any(x.strip() for x in s.lines)]


def inline(text: str) -> str:
    """One line of Markdown as HTML: escaped first, then code spans (kept literal), bold,
    italic, and `\\*` as a plain asterisk."""
    parts = _CODE.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:  # inside backticks
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        s = html.escape(part, quote=False)
        s = _BOLD.sub(r"<strong>\1</strong>", s)
        s = _ITALIC.sub(r"<em>\1</em>", s)
        out.append(s.replace("\\*", "*"))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(rows: list[str]) -> str:
    """A pipe table (header, separator, body) as a sortable HTML table."""
    head = _cells(rows[0])
    body = [_cells(r) for r in rows[2:]] if len(rows) > 1 else []
    th = "".join(f'<th scope="col">{inline(c)}</th>' for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return (
        f'<div class="table-wrap"><table class="sortable"><thead><tr>{th}</tr></thead>'
        f"<tbody>{trs}</tbody></table></div>"
    )


def _images(paths: list[tuple[str, str]]) -> str:
    items = "".join(
        f'<li><a href="{html.escape(p)}">{html.escape(p)}</a></li>' for _alt, p in paths
    )
    return (
        f'<details class="pngs"><summary>The same section\'s PNG figures in the run directory '
        f"({len(paths)}; links work beside the run's files)</summary><ul>{items}</ul></details>"
    )


def _code(lines: list[str]) -> str:
    return (
        '<details class="raw"><summary>Raw text as printed in report.md</summary><pre>'
        + html.escape("\n".join(lines))
        + "</pre></details>"
    )


def _blocks(lines: list[str]):
    """(kind, lines) runs of one Markdown construct: table, image, list, code, heading, para."""
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            yield "code", lines[i + 1 : j]
            i = j + 1
            continue
        kind = (
            "heading"
            if line.startswith("#")
            else "table"
            if line.startswith("|")
            else "image"
            if _IMAGE.match(line)
            else "list"
            if line.startswith("- ")
            else "para"
        )
        j = i + 1
        if kind != "heading":
            while j < len(lines) and lines[j].strip() and _same_kind(kind, lines[j]):
                j += 1
        yield kind, lines[i:j]
        i = j


def _same_kind(kind: str, line: str) -> bool:
    if kind == "table":
        return line.startswith("|")
    if kind == "image":
        return bool(_IMAGE.match(line))
    if kind == "list":
        return line.startswith(("- ", "  "))
    return not line.startswith(("#", "|", "```", "- ")) and not _IMAGE.match(line)


def _items(block: list[str]) -> list[str]:
    """List items: a `- ` line starts one, an indented line continues it."""
    items: list[str] = []
    for line in block:
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif items:
            items[-1] += " " + line.strip()
    return items


def to_html(lines: list[str], heading_offset: int = 0) -> str:
    """The Markdown `lines` of one section as HTML. `### x` becomes <h3> (+ heading_offset)."""
    out = []
    for kind, block in _blocks(lines):
        if kind == "heading":
            level = min(6, len(block[0]) - len(block[0].lstrip("#")) + heading_offset)
            out.append(f"<h{level}>{inline(block[0].lstrip('#').strip())}</h{level}>")
        elif kind == "table":
            out.append(_table(block))
        elif kind == "image":
            out.append(_images([_IMAGE.match(x).groups() for x in block]))
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in _items(block)) + "</ul>")
        elif kind == "code":
            out.append(_code(block))
        else:
            out.append(f"<p>{inline(' '.join(x.strip() for x in block))}</p>")
    return "\n".join(out)
