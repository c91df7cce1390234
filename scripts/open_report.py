"""Open a run's report.html in the default browser (or print its path where there is none).

    python scripts/open_report.py --workdir=runs/demo
    python scripts/open_report.py --workdir=runs/demo --rebuild            # re-render it first
    python scripts/open_report.py --workdir=runs/demo --screenshots=shots  # PNGs of its views

The page is rebuilt from the run's artifacts when it is missing or --rebuild is given (the
config and model labels the run recorded: config.json, models.json). --screenshots drives
headless Chromium (jaxcirc.report.html_browser) and saves one PNG per main view.
"""

from __future__ import annotations

import json
import os
import sys
import webbrowser
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from scripts import cli  # noqa: E402

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run directory (holds report.md and the artifacts)."
)
_REBUILD = flags.DEFINE_bool("rebuild", False, "Write report.html again from the artifacts.")
_SCREENSHOTS = flags.DEFINE_string("screenshots", None, "Save PNGs of the main views here.")
_OPEN = flags.DEFINE_bool("open", True, "Open the page in the default browser if there is one.")


def _rebuild(root: Path) -> Path:
    import ml_collections

    from jaxcirc.report import html

    for name in ("config.json", "models.json"):
        if not (root / name).is_file():
            cli.fail(f"{root / name} is missing; is {root} a run directory?")
    cfg = ml_collections.ConfigDict(json.loads((root / "config.json").read_text()))
    labels = list(json.loads((root / "models.json").read_text()))  # in the study's order
    return html.write_html(root, cfg, labels)


def _has_display() -> bool:
    """A graphical browser can show a page: not Linux, or Linux with a display. Without one,
    Python's webbrowser falls back to text browsers that would take over the terminal."""
    return not sys.platform.startswith("linux") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def main(argv):
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])}; pass options as --flag=value")
    if not _WORKDIR.value:
        cli.fail("--workdir is required, e.g. --workdir=runs/demo")
    root = Path(_WORKDIR.value)
    page = root / "report.html"
    if _REBUILD.value or not page.is_file():
        page = _rebuild(root)
    if _SCREENSHOTS.value:
        from jaxcirc.report import html_browser

        try:
            shots = html_browser.screenshot_views(page, Path(_SCREENSHOTS.value))
        except html_browser.BrowserError as e:
            cli.fail(f"screenshots: {e}")
        print(f"screenshots: {', '.join(str(p) for p in shots)}")
    opened = _OPEN.value and _has_display() and webbrowser.open(page.resolve().as_uri())
    print(f"report: {page.resolve()}" + ("" if opened else " (open it in a browser)"))


if __name__ == "__main__":
    cli.main(main)
