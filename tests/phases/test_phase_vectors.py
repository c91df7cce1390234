"""Phases 3/3.5 runner on hand-built activations with planted structure: a huge shared offset
(raw cosines near 1 whatever the classes do), an emotion axis at the last token, another one at
the span tokens, nothing at layer 0. The runner must find each where it was put, the centred
cosines must differ from the raw ones, and every file must be written and parse."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from configs import sections
from jaxcirc.core.subspace import emotion_subspaces
from jaxcirc.core.vectors import emotion_vectors
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations
from jaxcirc.phases import vectors as phase_vectors
from tests.support import check_script

D, POS, PER_CLASS, LAYERS = 16, 6, 15, 3
SPAN_T = 2


def _unit(i):
    e = np.zeros(D)
    e[i] = 1.0
    return e


U, V, W = _unit(1), _unit(2), _unit(3)  # sentence-end axes u, v; span-token axis w
OFFSET = 100.0 * _unit(0)  # the anisotropic shared direction


def planted(seed=0) -> Activations:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), PER_CLASS)
    n = labels.size
    lengths = rng.integers(POS - 1, POS + 1, n)  # 5 or 6 real tokens
    mask = np.arange(POS)[None] < lengths[:, None]
    last = lengths - 1
    resid = rng.standard_normal((LAYERS, n, POS, D)) + OFFSET
    at_end = {0: 10 * U, 1: -10 * U, 2: 10 * V, 3: 0 * U}  # grat, anger, apology, neutral
    at_span = {0: 6 * W, 1: -6 * W, 2: 0 * W, 3: 0 * W}
    for i, y in enumerate(labels):
        for layer in (1, 2):  # nothing at layer 0: the "lexical baseline" carries no signal
            resid[layer, i, last[i]] += at_end[y]
            resid[layer, i, SPAN_T] += at_span[y]
    span = np.zeros((n, POS), bool)
    span[:, SPAN_T] = True
    resid *= mask[None, :, :, None]
    return Activations(
        resid=resid.astype(np.float32),
        mask=mask,
        ids=np.where(mask, 7, 0).astype(np.int32),
        last=last,
        span_mask=span,
        labels=labels,
        prepend_bos=False,
        model_label="planted",
        texts=tuple(f"text {i}" for i in range(n)),
    )


def _cfg():
    cfg = sections.vectors()
    cfg.n_perm = 200
    cfg.probe_n_perm = 20
    cfg.plots = False  # figures cost seconds each; the fixture `run` checks them
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vectors")
    acts = planted()
    cfg = _cfg()
    cfg.plots = True
    summary = phase_vectors.run_vectors(acts, cfg, out)
    return acts, summary, out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_file_written_and_parseable(run):
    _, summary, out = run
    for name in summary["files"].values():
        p = out / name
        assert p.is_file() and p.stat().st_size > 0, name
        if name.endswith(".png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["model"] == "planted"
    rows = _rows(out / "cosines.csv")
    # 3 methods x 3 layers x (6 pairs raw + 3 pairs neutral-centred + 6 pairs grand)
    assert len(rows) == 3 * 3 * (6 + 3 + 6)
    assert set(rows[0]) >= {
        "method",
        "centre",
        "layer",
        "class_a",
        "class_b",
        "cosine",
        "null_mean",
        "null_lo",
        "null_hi",
        "n_perm",
        "seed",
    }
    assert all(
        r["class_a"] != "neutral" and r["class_b"] != "neutral"
        for r in rows
        if r["centre"] == "neutral"
    )
    for r in rows:
        assert float(r["null_lo"]) <= float(r["null_hi"]) and int(r["n_perm"]) == 200
    probe_rows = _rows(out / "probe.csv")
    assert len(probe_rows) == 2 * LAYERS
    assert {r["layer_name"] for r in probe_rows if r["layer"] == "0"} == {
        "embeddings (lexical baseline)"
    }
    vecs = np.load(out / "emotion_vectors.npz")
    assert vecs["vectors__token__grand"].shape == (LAYERS, 4, D)
    assert list(vecs["classes"]) == list(dataset.EMOTIONS)


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_raw_cosines_are_the_offset_centred_ones_find_the_axis(run):
    _, summary, out = run
    se = summary["cosines"]["sentence_end"]
    raw = se["raw"]["last_layer"]["pairs"]["gratitude-anger"]
    cen = se["neutral"]["last_layer"]["pairs"]["gratitude-anger"]
    # the shared offset makes raw class means nearly parallel, and so does the null
    assert raw["cosine"] > 0.9 and raw["null_mean"] > 0.9
    # neutral-centred: gratitude = +u, anger = -u -> about -1, far below its null band
    assert cen["cosine"] < -0.9 and cen["cosine"] < cen["null_lo"] and cen["outside_null_band"]
    orth = se["neutral"]["last_layer"]["pairs"]["gratitude-apology"]
    assert abs(orth["cosine"]) < 0.35  # u vs v
    rows = _rows(out / "cosines.csv")
    layer0 = [
        r
        for r in rows
        if r["method"] == "sentence_end" and r["centre"] == "grand" and r["layer"] == "0"
    ]
    # layer 0 has no planted structure: the grand-centred cosines sit inside their null band
    inside = [float(r["null_lo"]) <= float(r["cosine"]) <= float(r["null_hi"]) for r in layer0]
    assert sum(inside) >= len(inside) - 1


def test_token_methods_read_the_span_tokens(run):
    acts, _, _ = run
    tok = emotion_vectors(acts, "token", "neutral")
    end = emotion_vectors(acts, "sentence_end", "neutral")
    delta = emotion_vectors(acts, "token_delta", "neutral")
    assert set(tok) == {"gratitude", "anger", "apology"}
    assert tok["gratitude"].shape == (LAYERS, D) and tok["gratitude"].dtype == np.float32
    assert _cos(tok["gratitude"][2], W) > 0.9 and abs(_cos(tok["gratitude"][2], U)) < 0.3
    assert _cos(delta["gratitude"][2], W) > 0.9
    assert _cos(end["gratitude"][2], U) > 0.9 and abs(_cos(end["gratitude"][2], W)) < 0.3


def test_probe_separates_where_planted_not_at_layer0(run):
    _, summary, out = run
    p = summary["probe"]["sentence_end"]
    # Ledoit-Wolf shrinks hard here (14 of 16 dims are pure noise), hence not ~1.0
    assert p["best_layer"] in (1, 2) and p["accuracy"] > 0.7
    assert p["accuracy"] > p["null_p95"] + 0.2 and p["chance"] == pytest.approx(0.25)
    assert p["layer0_lexical_baseline"] < p["null_p95"] + 0.15
    rows = {int(r["layer"]): r for r in _rows(out / "probe.csv") if r["feature"] == "span_mean"}
    assert float(rows[2]["accuracy"]) > float(rows[2]["null_p95"])
    # the span tokens separate gratitude/anger only (apology = neutral there)
    assert float(rows[2]["accuracy"]) < summary["probe"]["sentence_end"]["accuracy"]


def test_subspace_spans_the_planted_axes(run):
    _, summary, out = run
    sub = np.load(out / "subspaces.npz")
    basis = sub["basis__sentence_end"]
    assert basis.shape == (LAYERS, D, 3)
    np.testing.assert_allclose(basis[2].T @ basis[2], np.eye(3), atol=1e-10)
    for axis in (U, V):
        assert np.linalg.norm(basis[2].T @ axis) > 0.95
    assert summary["subspace"]["k"] == 3
    assert sub["k_used__sentence_end"].tolist() == [3, 3, 3]
    assert summary["subspace"]["layers_with_fewer_dims"] == {}


def test_subspace_of_fewer_dims_than_k():
    """Where the class means differ along fewer than k directions (Pythia's layer 0 at the last
    token), only those directions are returned and the rest of the basis is zero."""
    acts = planted()
    ends = acts.resid[:, np.arange(acts.n), acts.last]
    ends[0] = 5.0  # layer 0: every prompt's last token identical -> no class difference
    ends[1] = 5.0 + 2.0 * U * (acts.labels == 0)[:, None]  # layer 1: one axis only
    acts.resid[:, np.arange(acts.n), acts.last] = ends
    basis, sv, k_used = emotion_subspaces(acts, "sentence_end", 3)
    assert k_used.tolist() == [0, 1, 3]
    assert np.all(basis[0] == 0) and np.all(basis[1][:, 1:] == 0)
    assert abs(basis[1][:, 0] @ U) == pytest.approx(1.0)
    assert sv.shape == (LAYERS, 3) and sv[0].max() == 0.0


def test_bad_input(tmp_path):
    acts = planted()
    cfg = _cfg()
    cfg.methods = ("last_token",)
    with pytest.raises(ValueError, match="config.methods"):
        phase_vectors.run_vectors(acts, cfg, tmp_path)
    cfg = _cfg()
    cfg.subspace_k = 4
    with pytest.raises(ValueError, match="subspace_k"):
        phase_vectors.run_vectors(acts, cfg, tmp_path)
    keep = acts.labels != dataset.EMOTIONS.index("neutral")
    with pytest.raises(ValueError, match="neutral"):
        phase_vectors.run_vectors(acts.subset(keep), _cfg(), tmp_path)


def test_phase3_script_calls_run_phase(tmp_path):
    check_script(tmp_path, "phase3_vectors.py", "vectors")


def test_cis_layer0_and_best_layer_uncertainty(run):
    """Every cosine and probe accuracy carries its prompt-bootstrap CI; the token methods' layer
    0 (embeddings) stands beside the named last layer; the probe's best layer is read against
    the max over layers of its null, with the share of resamples picking each layer."""
    _, summary, out = run
    for r in _rows(out / "cosines.csv"):
        if r["cosine"] not in ("", "nan"):
            assert float(r["ci_lo"]) <= float(r["ci_hi"]) and r["n_boot"] == "1000"
    tok = summary["cosines"]["token"]["neutral"]
    assert tok["layer0"]["layer"] == 0 and "lexical" in tok["layer0"]["layer_note"]
    assert "does not say" in tok["last_layer"]["layer_note"] and tok["best_layer"] is None
    ga = tok["last_layer"]["pairs"]["gratitude-anger"]
    assert ga["ci_hi"] < ga["null_lo"]  # planted: +w vs -w at the span tokens, CI below the null
    p = summary["probe"]["sentence_end"]
    assert p["ci"][0] <= p["accuracy"] <= p["ci"][1] and p["beats_max_null"]
    assert p["max_null"]["hi"] >= p["null_p95"] - 0.05 and p["max_null"]["n"] == 20
    assert sum(p["argmax_shares"].values()) == pytest.approx(1.0)
    assert set(p["argmax_shares"]) == {"1", "2"}
    for r in _rows(out / "probe.csv"):
        assert float(r["ci_lo"]) <= float(r["ci_hi"])
        assert float(r["layer0_lexical_baseline"]) == pytest.approx(
            float(
                next(x for x in _rows(out / "probe.csv") if x["feature"] == r["feature"])[
                    "accuracy"
                ]
            )
        )


def test_token_vs_sentence_end_headline_planted(run):
    """Planted: the last token separates all three emotions, the span tokens only gratitude from
    anger (apology = neutral there): span minus last-token accuracy is negative, its CI below 0
    and outside the paired null; at layer 0 (nothing planted) it is inside."""
    _, summary, _ = run
    h = summary["headline"]["token_vs_sentence_end"]
    assert h["layers"] == [1, 2] and h["n"] == 4 * PER_CLASS
    assert h["figure"] < -0.1 and h["ci"][1] < 0 and h["figure"] < h["null_band"][0]
    assert h["p_value"] < 0.01
    l0 = h["layer0"]
    assert l0["null_band"][0] <= l0["figure"] <= l0["null_band"][1]
    assert set(h["cosines"]) == {"sentence_end", "token", "token_delta"}
    assert (
        h["accuracy_mean_over_blocks"]["sentence_end"] > h["accuracy_mean_over_blocks"]["span_mean"]
    )


def test_token_vs_sentence_end_headline_structureless(tmp_path):
    """Structureless negative over 4 data sets: nothing planted anywhere, the difference sits
    inside its paired null and the best probe layer does not beat the max-over-layers null."""
    inside, beats = [], []
    for seed in range(4):
        acts = planted(seed)
        acts.resid[:] = (
            np.random.default_rng(seed).standard_normal(acts.resid.shape).astype(np.float32)
            * acts.mask[None, :, :, None]
        )
        cfg = _cfg()
        cfg.methods, cfg.centres, cfg.n_perm, cfg.n_boot = ("sentence_end",), ("raw",), 20, 200
        s = phase_vectors.run_vectors(acts, cfg, tmp_path / str(seed))
        h = s["headline"]["token_vs_sentence_end"]
        inside.append(h["null_band"][0] <= h["figure"] <= h["null_band"][1])
        beats += [p["beats_max_null"] for p in s["probe"].values()]
    assert sum(inside) >= 3 and sum(beats) <= 1
