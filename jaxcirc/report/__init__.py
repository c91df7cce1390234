"""jaxcirc.report: reads a run directory's artifacts and writes report.md and report.html.

markdown      write_report: the sections in order under the run's header
conclusions   the study's five conclusions, each with a verdict computed from the run
differences   how this run differs from the study, generated from the config it ran with
representation, steering, heads, cross_model   one module per section
html*, web/   the same report as one offline page (inline SVG and script, no network)
format        number formatting and artifact reading shared by the sections
plots         matplotlib helpers the phases draw their PNGs with
"""

from jaxcirc.report.html import write_html
from jaxcirc.report.markdown import write_report

__all__ = ["write_html", "write_report"]
