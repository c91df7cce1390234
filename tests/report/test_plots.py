"""Tests for jaxcirc.report.plots: figures build headless, save as real PNGs, and show their numbers."""

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxcirc.infra import artifacts
from jaxcirc.report import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def _assert_png(path, min_bytes=5_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes, len(data)


def test_backend_is_agg():
    assert matplotlib.get_backend().lower() == "agg"


def test_heatmap_annotates_values_and_saves_png(tmp_path):
    cos = np.array([[1.0, 0.48, 0.68], [0.48, 1.0, 0.75], [0.68, 0.75, 1.0]])
    names = ["gratitude", "anger", "apology"]
    fig = plots.heatmap(cos, names, names, "GPT-2 L6 last-token cosine (raw)", "cosine")
    assert isinstance(fig, Figure)
    texts = _texts(fig)
    assert len(texts) == 9
    for v in ("0.48", "0.68", "0.75", "1.00"):
        assert v in texts
    assert fig.axes[0].get_title() == "GPT-2 L6 last-token cosine (raw)"
    _assert_png(artifacts.save_figure(tmp_path / "h.png", fig))


def test_heatmap_diverging_scale_centred_on_zero_and_nan_blank():
    m = np.array([[-0.2, 0.5], [np.nan, 0.1]])
    fig = plots.heatmap(m, ["a", "b"], ["c", "d"], "centred cosine", "cos", fmt=".1f")
    im = fig.axes[0].images[0]
    assert im.get_clim() == (-0.5, 0.5)
    assert im.get_cmap().name == "RdBu_r"
    assert sorted(_texts(fig)) == ["-0.2", "0.1", "0.5"]  # NaN cell left blank
    no_ann = plots.heatmap(m, ["a", "b"], ["c", "d"], "t", "cos", annotate=False)
    assert _texts(no_ann) == []


def test_heatmap_grid_shared_scale_and_panels(tmp_path):
    rng = np.random.default_rng(0)
    mats = {f"layer {i}": rng.uniform(0, 1, size=(3, 4)) for i in range(5)}
    mats["layer 4"][0, 0] = 2.0  # the shared scale must reach this panel's max
    fig = plots.heatmap_grid(
        mats, ["g", "a", "p"], list("wxyz"), "head scores, GPT-2, seed 0", "score"
    )
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == list(mats)
    lowest = float(min(m.min() for m in mats.values()))
    assert {ax.images[0].get_clim() for ax in panels} == {(lowest, 2.0)}
    assert "2.00" in _texts(fig)
    assert fig.get_suptitle() == "head scores, GPT-2, seed 0"
    _assert_png(artifacts.save_figure(tmp_path / "grid.png", fig))


def test_line_with_band_draws_bands_and_saves(tmp_path):
    layers = np.arange(12)
    eff = np.sin(layers / 3.0)
    series = {
        "gratitude vector": (eff, eff - 0.1, eff + 0.1),
        "random, equal norm": (np.zeros(12), -np.full(12, 0.05), np.full(12, 0.05)),
        "no band": (eff / 2, None, None),
    }
    fig = plots.line_with_band(
        layers,
        series,
        "layer",
        "sentiment change",
        "steering alpha=4, GPT-2",
        dashed=["random, equal norm"],
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(series)
    assert len(ax.collections) == 2  # one band per series that has lo/hi
    np.testing.assert_allclose(ax.lines[0].get_ydata(), eff)
    assert ax.lines[1].get_linestyle() == "--"
    _assert_png(artifacts.save_figure(tmp_path / "line.png", fig))


def test_line_panels_one_figure_per_grid(tmp_path):
    x = np.arange(4)
    up = (x * 1.0, x - 0.5, x + 0.5)
    rnd = (np.zeros(4), -np.ones(4), np.ones(4))
    panels = [
        [("gratitude: kw", "kw change", {"vector": up, "random": rnd}), None],
        [("gratitude: proj", "proj", {"vector": up}), ("anger: proj", "proj", {"vector": up})],
    ]
    fig = plots.line_panels(x, panels, "layer", "steering, GPT-2", dashed=["random"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["gratitude: kw", "gratitude: proj", "anger: proj"]
    np.testing.assert_allclose(visible[0].lines[0].get_ydata(), x)
    assert visible[0].lines[1].get_linestyle() == "--"
    # One legend for the figure, each name once.
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["vector", "random"]
    _assert_png(artifacts.save_figure(tmp_path / "panels.png", fig))
    with pytest.raises(ValueError, match="panels is empty"):
        plots.line_panels(x, [[None]], "layer", "t")
    with pytest.raises(ValueError, match="title"):
        plots.line_panels(x, panels, "layer", " ")


def test_bar_with_ci_annotates_means_and_error_bars(tmp_path):
    means = np.array([-0.0349, 0.1102])
    fig = plots.bar_with_ci(
        ["ablate L0H0", "patch L0H0"],
        {"effect": (means, means - 0.02, means + 0.03), "random head": ([0.0, 0.0], None, None)},
        "sentiment change",
        "L0H0 effects, GPT-2, 95% bootstrap CI",
    )
    texts = _texts(fig)
    assert "-0.035" in texts and "0.110" in texts
    ax = fig.axes[0]
    # Error bar segments span exactly [lo, hi] for the first series.
    segs = [s for c in ax.collections for s in c.get_segments()]
    spans = sorted((round(s[0][1], 6), round(s[1][1], 6)) for s in segs)
    assert spans == sorted((round(m - 0.02, 6), round(m + 0.03, 6)) for m in means)
    _assert_png(artifacts.save_figure(tmp_path / "bar.png", fig), min_bytes=3_000)


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match="title is empty"):
        plots.heatmap(np.eye(2), ["a", "b"], ["a", "b"], "  ", "c")
    with pytest.raises(ValueError, match="2 row labels"):
        plots.heatmap(np.eye(3), ["a", "b"], ["a", "b", "c"], "t", "c")
    with pytest.raises(ValueError, match="2-D"):
        plots.heatmap(np.ones(3), ["a"], ["a"], "t", "c")
    with pytest.raises(ValueError, match="lo > mean"):
        plots.bar_with_ci(["a"], {"s": ([1.0], [2.0], [3.0])}, "y", "t")
    with pytest.raises(ValueError, match="each must be"):
        plots.line_with_band([0, 1, 2], {"s": ([1.0, 2.0], None, None)}, "x", "y", "t")
    with pytest.raises(TypeError):
        plots.line_with_band([0, 1], {"s": ([1.0, 2.0], None, None)}, "x", "y")  # title required
