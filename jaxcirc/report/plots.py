"""Figures for the report: heatmaps, effect-vs-layer lines with CI bands, bars with CIs.

Every function returns a `matplotlib.figure.Figure` built without pyplot's figure manager, so
nothing is ever shown, nothing needs closing, and figures do not pile up in long runs; save them
with `jaxcirc.infra.artifacts.save_figure`. Titles are required arguments: the caller must say what the
number is (raw or centred, which layer and position, which model and seed), because a figure
leaves the run directory without its config.
"""

from __future__ import annotations

import functools
import math
import textwrap
import threading
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, even if a display exists

import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

Band = tuple  # (mean, lo, hi): arrays of one length; lo/hi may be None for a line without band

# matplotlib is not thread-safe (shared font and text caches); the study builds and draws
# figures from several threads (jaxcirc.study._run_tasks), one at a time under this lock.
LOCK = threading.RLock()


def _serialised(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with LOCK:
            return fn(*args, **kwargs)

    return wrapper


def _set_title(ax, text: str, **kw) -> None:
    """Axes title at a fixed height. Left to matplotlib (y=None), every draw measures the axes'
    decorations to place it: ~45% of drawing a 5 x 3 panel grid, measured."""
    ax.set_title(text, y=1.0, pad=4.0, **kw)


def _wrap(title: str, width_in: float, fontsize: float = 10) -> str:
    """`title` wrapped to a figure `width_in` inches wide (no layout engine shrinks it to fit)."""
    chars = max(20, int(width_in * 110 / fontsize))
    return "\n".join(textwrap.fill(line, chars) for line in title.splitlines())


def _text_in(labels, fontsize: float = 10) -> float:
    """Rough width in inches of the longest of `labels` at `fontsize` points."""
    return 0.6 * fontsize / 72 * max((len(str(x)) for x in labels), default=0)


def _place(fig, w, h, left, right, bottom, top, **space) -> None:
    """Fixed margins in inches. Layout engines ("tight", "constrained") measure every text on
    every draw; they took most of the plotting time of a study (measured)."""
    fig.subplots_adjust(
        left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, **space
    )


def _require_title(title: str) -> None:
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title is empty; say what the plotted number is (measure, layer, model)")


def _as_matrix(matrix, row_labels, col_labels, what: str) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"{what} has shape {m.shape}; pass a 2-D [rows, cols] matrix")
    if len(row_labels) != m.shape[0] or len(col_labels) != m.shape[1]:
        raise ValueError(
            f"{what} is {m.shape[0]}x{m.shape[1]} but got {len(row_labels)} row labels and "
            f"{len(col_labels)} column labels; pass one label per row and per column"
        )
    return m


def _color_scale(values: np.ndarray, vmin, vmax) -> tuple[str, float, float]:
    """Diverging map centred on 0 when the data has both signs, sequential otherwise."""
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 1.0
    if vmin is None and vmax is None and lo < 0 < hi:
        bound = max(-lo, hi)
        return "RdBu_r", -bound, bound
    vmin = lo if vmin is None else float(vmin)
    vmax = hi if vmax is None else float(vmax)
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    cmap = "RdBu_r" if vmin < 0 < vmax else "viridis"
    return cmap, vmin, vmax


def _draw_heatmap(ax, m, row_labels, col_labels, cmap, vmin, vmax, annotate, fmt):
    im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(m.shape[1]), [str(c) for c in col_labels], rotation=45, ha="right")
    ax.set_yticks(range(m.shape[0]), [str(r) for r in row_labels])
    if annotate:
        norm = mcolors.Normalize(vmin, vmax)
        rgba = im.cmap(norm(np.nan_to_num(m, nan=vmin)))
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                if not np.isfinite(m[i, j]):
                    continue
                r, g, b, _ = rgba[i, j]
                dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5
                ax.text(
                    j,
                    i,
                    format(m[i, j], fmt),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if dark else "black",
                )
    return im


@_serialised
def heatmap(
    matrix,
    row_labels: Sequence,
    col_labels: Sequence,
    title: str,
    cbar_label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = True,
    fmt: str = ".2f",
) -> Figure:
    """One heatmap of `matrix [rows, cols]` (e.g. emotion x emotion cosines, layer x head scores).

    Colour: diverging and centred on 0 when values have both signs and no limits are given,
    sequential otherwise. `annotate` writes each value with `fmt`; NaN cells are left blank.
    """
    _require_title(title)
    m = _as_matrix(matrix, row_labels, col_labels, "matrix")
    return heatmap_grid(
        {"": m}, row_labels, col_labels, title, cbar_label, vmin, vmax, annotate, fmt, ncols=1
    )


@_serialised
def heatmap_grid(
    matrices: Mapping[str, object],
    row_labels: Sequence,
    col_labels: Sequence,
    title: str,
    cbar_label: str,
    vmin: float | None = None,
    vmax: float | None = None,
    annotate: bool = True,
    fmt: str = ".2f",
    ncols: int | None = None,
) -> Figure:
    """Several heatmaps of the same shape side by side (one per layer, emotion or model).

    `matrices` maps a panel title to a `[rows, cols]` matrix. All panels share one colour scale and
    one colour bar, so panels can be compared by colour.
    """
    _require_title(title)
    if not matrices:
        raise ValueError("matrices is empty; pass {panel title: [rows, cols] matrix}")
    ms = {k: _as_matrix(v, row_labels, col_labels, f"matrices[{k!r}]") for k, v in matrices.items()}
    cmap, lo, hi = _color_scale(np.stack(list(ms.values())), vmin, vmax)
    n = len(ms)
    ncols = ncols or min(n, 4)
    nrows = math.ceil(n / ncols)
    rows, cols = next(iter(ms.values())).shape
    panel_w, panel_h = 0.5 + 0.5 * cols, 0.3 + 0.4 * rows
    left = 0.3 + _text_in(row_labels)
    bottom = 0.35 + 0.75 * _text_in(col_labels)  # x labels at 45 degrees
    gap_w, gap_h, cbar = left, bottom + 0.35, 1.2
    w = left + ncols * panel_w + (ncols - 1) * gap_w + cbar
    title = _wrap(title, w, fontsize=12)
    top = 0.35 + 0.2 * len(title.splitlines()) + 0.3
    h = top + nrows * panel_h + (nrows - 1) * gap_h + bottom
    fig = Figure(figsize=(w, h))
    _place(fig, w, h, left, cbar, bottom, top, wspace=gap_w / panel_w, hspace=gap_h / panel_h)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    im = None
    for ax, (name, m) in zip(axes.flat, ms.items(), strict=False):
        im = _draw_heatmap(ax, m, row_labels, col_labels, cmap, lo, hi, annotate, fmt)
        if name:
            _set_title(ax, str(name), fontsize=9)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    cax = fig.add_axes([1 - (cbar - 0.25) / w, bottom / h, 0.15 / w, 1 - (bottom + top) / h])
    fig.colorbar(im, cax=cax, label=cbar_label)
    if list(ms) == [""]:  # one unnamed panel (`heatmap`): the title is the axes'
        _set_title(axes[0, 0], title)
    else:
        fig.suptitle(title, y=1 - 0.1 / h, va="top")
    return fig


def _check_band(name: str, band, n: int):
    if not isinstance(band, (tuple, list)) or len(band) != 3:
        raise ValueError(f"series[{name!r}] must be (mean, lo, hi); lo/hi may be None")
    mean = np.asarray(band[0], dtype=np.float64)
    lo = None if band[1] is None else np.asarray(band[1], dtype=np.float64)
    hi = None if band[2] is None else np.asarray(band[2], dtype=np.float64)
    if (lo is None) != (hi is None):
        raise ValueError(f"series[{name!r}] has only one of lo/hi; pass both or neither")
    shapes = {p.shape for p in (mean, lo, hi) if p is not None}
    if shapes != {(n,)}:
        raise ValueError(
            f"series[{name!r}] parts have shapes {[np.shape(p) for p in band]}; "
            f"each must be [{n}], one value per x position / label"
        )
    if lo is not None:
        ok = np.isnan(mean + lo + hi) | ((lo <= mean + 1e-12) & (mean <= hi + 1e-12))
        if not ok.all():
            raise ValueError(f"series[{name!r}] has lo > mean or mean > hi; check the CI order")
    return mean, lo, hi


@_serialised
def line_with_band(
    x,
    series: Mapping[str, Band],
    xlabel: str,
    ylabel: str,
    title: str,
    dashed: Sequence[str] = (),
    zero_line: bool = True,
) -> Figure:
    """Lines of `mean` over `x` with a shaded `[lo, hi]` band per series (e.g. steering effect vs
    layer, emotion vector against random vectors of equal norm).

    `series` maps a legend name to `(mean, lo, hi)`, each `[len(x)]`; lo/hi may be None. Names in
    `dashed` are drawn dashed (controls). A thin line at y = 0 marks "no effect".
    """
    _require_title(title)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x has shape {x.shape}; pass a 1-D array of x positions")
    if not series:
        raise ValueError("series is empty; pass {name: (mean, lo, hi)}")
    w, h = 6.4, 4.0
    title = _wrap(title, w, fontsize=12)
    fig = Figure(figsize=(w, h))
    _place(fig, w, h, 0.8, 0.2, 0.6, 0.25 + 0.2 * len(title.splitlines()))
    ax = fig.add_subplot()
    _draw_bands(ax, x, series, dashed, zero_line)
    _integer_ticks(ax, x)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _set_title(ax, title)
    ax.legend(fontsize=8)
    return fig


def _integer_ticks(ax, x) -> None:
    """Layers and alphas: mark the measured points, not 0.5 steps between them."""
    if len(x) <= 16 and np.allclose(x, np.round(x)):
        ax.set_xticks(x)


def _draw_bands(ax, x, series, dashed, zero_line: bool = True, legend_size: float | None = None):
    for name, band in series.items():
        mean, lo, hi = _check_band(name, band, len(x))
        style = "--" if name in dashed else "-"
        (line,) = ax.plot(x, mean, style, marker="o", markersize=3, label=str(name))
        if lo is not None:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    if zero_line:
        ax.axhline(0.0, color="grey", linewidth=0.8, zorder=0)
    ax.grid(alpha=0.3)


@_serialised
def _legend_layout(panels, ncols: int) -> tuple[int, float]:
    """(legend columns, bottom margin in inches) of `line_panels`: one column of panels is too
    narrow for a legend row of four, so its legend is one entry per line, with room below."""
    names = {name for row in panels for cell in row if cell for name in cell[2]}
    leg_cols = max(1, min(len(names), 4 if ncols > 1 else 1))
    return leg_cols, max(1.0, 0.55 + 0.18 * -(-len(names) // leg_cols))


def line_panels(
    x,
    panels: Sequence[Sequence],
    xlabel: str,
    title: str,
    dashed: Sequence[str] = (),
    zero_line: bool = True,
) -> Figure:
    """A grid of `line_with_band` panels sharing one x axis, in ONE figure (e.g. rows = measures,
    columns = emotions): one image a reader takes in at once, and one render instead of dozens.

    `panels[r][c]` is `(panel_title, ylabel, series)` with `series` as in `line_with_band`, or None
    for an empty cell. Names in `dashed` are drawn dashed in every panel. Each panel keeps its own
    y scale (measures differ in units).
    """
    _require_title(title)
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x has shape {x.shape}; pass a 1-D array of x positions")
    nrows = len(panels)
    ncols = max((len(r) for r in panels), default=0)
    if not nrows or not ncols or all(p is None for r in panels for p in r):
        raise ValueError("panels is empty; pass rows of (panel title, ylabel, series)")
    # Fixed margins in inches, not a layout engine: constrained layout of a 5 x 3 grid took
    # longer than drawing it (~2.5 s against ~0.5 s per figure here).
    w = 3.6 * ncols
    # Wrapped to the figure's width (no layout engine shrinks a long title to fit).
    title = _wrap(title, w)
    top = 0.45 + 0.2 * len(title.splitlines())  # inches above the first row of panels
    leg_cols, bottom = _legend_layout(panels, ncols)
    h = 2.4 * nrows + bottom + top
    fig = Figure(figsize=(w, h))
    _place(fig, w, h, 0.75, 0.15, bottom, top, hspace=0.5, wspace=0.35)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    handles = {}
    for r in range(nrows):
        for c in range(ncols):
            ax = axes[r, c]
            cell = panels[r][c] if c < len(panels[r]) else None
            if cell is None:
                ax.set_visible(False)
                continue
            p_title, ylabel, series = cell
            if not series:
                raise ValueError(f"panel {p_title!r} has no series; pass {{name: (mean, lo, hi)}}")
            _draw_bands(ax, x, series, dashed, zero_line)
            _integer_ticks(ax, x)
            _set_title(ax, str(p_title), fontsize=9)
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
            if r == nrows - 1:
                ax.set_xlabel(xlabel, fontsize=8)
            for handle, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(lab, handle)
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="lower center",
        ncols=leg_cols,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(title, fontsize=10, y=1 - 0.1 / h, va="top")
    return fig


@_serialised
def bar_with_ci(
    labels: Sequence,
    series: Mapping[str, Band],
    ylabel: str,
    title: str,
    annotate: bool = True,
    fmt: str = ".3f",
) -> Figure:
    """Grouped bars with asymmetric CI error bars (e.g. ablation effect per head, emotion vs
    control).

    `labels` are the groups on the x axis; `series` maps a legend name to `(mean, lo, hi)`, each
    `[len(labels)]`; lo/hi may be None (no error bar). `annotate` writes each mean above its bar.
    """
    _require_title(title)
    if not series:
        raise ValueError("series is empty; pass {name: (mean, lo, hi)}")
    n = len(labels)
    pos = np.arange(n, dtype=np.float64)
    width = 0.8 / len(series)
    w = max(4.0, 1.0 + 0.6 * n * len(series))
    title = _wrap(title, w, fontsize=12)
    bottom = 0.5 + (0.7 if n > 6 else 0.2) * _text_in(labels)
    h = 3.4 + bottom
    fig = Figure(figsize=(w, h))
    _place(fig, w, h, 0.8, 0.2, bottom, 0.25 + 0.2 * len(title.splitlines()))
    ax = fig.add_subplot()
    for k, (name, band) in enumerate(series.items()):
        mean, lo, hi = _check_band(name, band, n)
        yerr = None if lo is None else np.stack([mean - lo, hi - mean])
        bars = ax.bar(
            pos + (k - (len(series) - 1) / 2) * width, mean, width, yerr=yerr, capsize=3, label=name
        )
        if annotate:
            ax.bar_label(bars, labels=[format(v, fmt) for v in mean], fontsize=7, padding=2)
    ax.axhline(0.0, color="grey", linewidth=0.8, zorder=0)
    ax.set_xticks(pos, [str(label) for label in labels], rotation=45 if n > 6 else 0)
    ax.set_ylabel(ylabel)
    _set_title(ax, title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return fig
