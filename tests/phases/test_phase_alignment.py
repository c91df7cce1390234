"""Phase 6 runner: a model whose activations are a rotation of another's is aligned (overlap after
the map ~1, far above its shuffled-pairing null, raw overlap low); an independent model is not
(overlap inside its null). Pairing, layer matching and the neutral split are what the docs say,
and every output file is written and parses."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from configs import sections
from jaxcirc.core.cross_model import cosine, fit_map, mapped_vectors, random_mapped_null
from jaxcirc.core.pairing import matched_layers, split_neutral
from jaxcirc.core.vectors import emotion_vectors
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations
from jaxcirc.phases import alignment as phase_alignment
from tests.support import check_script

POS, PER_CLASS = 6, 40
NEUTRAL = dataset.EMOTIONS.index("neutral")


def _rotation(d, rng):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _acts(resid, mask, ids, labels, label, prepend_bos=False) -> Activations:
    n = labels.size
    return Activations(
        resid=(resid * mask[None, :, :, None]).astype(np.float32),
        mask=mask,
        ids=np.where(mask, ids, 0).astype(np.int32),
        last=mask.sum(axis=1) - 1,
        span_mask=np.zeros_like(mask) | (np.arange(POS) == 2)[None],
        labels=labels,
        prepend_bos=prepend_bos,
        model_label=label,
        texts=tuple(f"prompt {i}" for i in range(n)),
    )


def _model(rng, n_layers, d, labels, mask):
    """Anisotropic random stream with emotion offsets at the last token along 3 random axes."""
    n = labels.size
    scales = np.linspace(0.5, 3.0, d)
    resid = rng.standard_normal((n_layers + 1, n, POS, d)) * scales + 2.0
    axes, _ = np.linalg.qr(rng.standard_normal((d, 3)))
    last = mask.sum(axis=1) - 1
    for i, y in enumerate(labels):
        if y != NEUTRAL:
            resid[:, i, last[i]] += 6.0 * axes[:, y]
    return resid


def _world(seed=0, prepend_bos=False):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(4), PER_CLASS)
    lengths = rng.integers(POS - 1, POS + 1, labels.size)
    mask = np.arange(POS)[None] < lengths[:, None]
    ids = rng.integers(1, 50, mask.shape)
    d = 12
    res_a = _model(rng, 2, d, labels, mask)
    rot = _rotation(d, rng)
    res_b = res_a @ rot + 0.01 * rng.standard_normal(res_a.shape)  # same stream, other basis
    res_c = _model(rng, 4, 20, labels, mask)  # independent, deeper and wider
    a = _acts(res_a, mask, ids, labels, "model/a", prepend_bos)
    b = _acts(res_b, mask, ids, labels, "model b", prepend_bos)
    c = _acts(res_c, mask, ids + 50, labels, "c", prepend_bos)  # another tokenizer
    return a, b, c


def _cfg(**kw):
    cfg = sections.alignment()
    cfg.n_perm = 40
    cfg.ridges_rel = (0.0, 1.0)
    cfg.plots = False  # figures cost seconds each; the fixture `rotated` checks them
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _f(x):
    return float(x) if x != "" else None


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    a, b, _ = _world()
    out = tmp_path_factory.mktemp("align_rot")
    summary = phase_alignment.run_alignment({"model/a": a, "model b": b}, _cfg(plots=True), out)
    return a, b, summary, out


def test_rotation_is_aligned_above_null(rotated):
    a, _, summary, out = rotated
    rows = _rows(out / "alignment.csv")
    # 2 ordered pairs x 1 pairing (same tokens) x 3 layers x (linear r0, procrustes, linear r1)
    assert len(rows) == 2 * 1 * 3 * 3 == summary["n_rows"]
    assert {r["pairing"] for r in rows} == {"token"}
    fit_p, _ = split_neutral(a.labels, 0.25, 0)
    for r in rows:
        assert int(r["n_fit"]) == int(a.lengths[fit_p].sum())  # every real token, fit prompts
        assert r["warnings"] == ""  # n_fit > d and overlap above its null
        ov, hi = _f(r["overlap_mapped"]), _f(r["overlap_mapped_null_hi"])
        assert ov > hi + 0.2, r
        assert _f(r["overlap_raw"]) < 0.4  # a random rotation hides the shared subspace
        assert _f(r["r2_test"]) > _f(r["r2_test_null_hi"]) + 0.5
        if r["ridge_rel"] != "1.0":  # a strong ridge bends the map (ov ~0.8 here); none does not
            assert ov > 0.99 and _f(r["delta_cos2"]) > 0.6 and _f(r["r2_test"]) > 0.99
        assert _f(r["cka_fit"]) > 0.99 and _f(r["cka_pvalue"]) < 0.05
        assert _f(r["overlap_random_expectation"]) == pytest.approx(3 / 12)
    s = summary["pairs"]["model/a->model b"]["token"]
    assert s["methods"]["procrustes"]["layers_mapped_overlap_above_null_hi"] == "3/3"
    assert s["methods"]["linear ridge_rel=0.0"]["last_layer"]["overlap_mapped"] > 0.99


def test_every_file_written_and_parseable(rotated):
    _, _, summary, out = rotated
    for name in summary["files"].values():
        p = out / name
        assert p.is_file() and p.stat().st_size > 0, name
        if name.endswith(".png"):
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "overlap__model-a__model-b__token.png").is_file()  # label made file-safe
    blob = json.loads((out / "alignment_summary.json").read_text())
    assert set(blob["pairs"]) == {"model/a->model b", "model b->model/a"}
    assert "per token" in blob["design"]["pairing_rule"]


def test_independent_model_stays_inside_its_null(tmp_path):
    a, _, c = _world(seed=1)
    summary = phase_alignment.run_alignment({"a": a, "c": c}, _cfg(), tmp_path)
    rows = _rows(tmp_path / "alignment.csv")
    # other tokenizer -> per prompt, both ways; depths 2 and 4 matched by relative depth
    assert {r["pairing"] for r in rows} == {"sentence_end", "prompt_mean"}
    a_to_c = {(int(r["layer_a"]), int(r["layer_b"])) for r in rows if r["model_a"] == "a"}
    assert a_to_c == {(0, 0), (1, 2), (2, 4)}
    c_to_a = {(int(r["layer_a"]), int(r["layer_b"])) for r in rows if r["model_a"] == "c"}
    assert c_to_a == {(0, 0), (1, 1), (2, 1), (3, 2), (4, 2)}  # 0.5 and 1.5 round up
    inside = [
        _f(r["overlap_mapped_null_lo"]) - 0.05
        <= _f(r["overlap_mapped"])
        <= _f(r["overlap_mapped_null_hi"]) + 0.05
        for r in rows
    ]
    assert np.mean(inside) > 0.85
    assert all(_f(r["r2_test"]) < 0.1 for r in rows)
    assert all(r["overlap_raw"] == "" for r in rows)  # d differs (12 vs 20): no raw comparison
    fit_p, _ = split_neutral(a.labels, 0.25, 0)
    assert all(int(r["n_fit"]) == fit_p.size for r in rows)
    s = summary["pairs"]["a->c"]["sentence_end"]["methods"]["procrustes"]
    assert s["any_warning"]  # "inside the shuffled-pairing null band" somewhere


def test_layer_without_variation_is_skipped_not_fatal(tmp_path):
    """Pythia's layer 0 at the last token: no position embedding and one final token, so every
    prompt gives the same vector. Nothing can be mapped or compared there; other rows go on."""
    a, _, c = _world(seed=3)
    c.resid[0, np.arange(c.n), c.last] = 1.5
    # subspaces from the span tokens, which do vary: only the sentence-end map is impossible
    cfg = _cfg(ridges_rel=(0.0,), subspace_from="token")
    summary = phase_alignment.run_alignment({"a": a, "c": c}, cfg, tmp_path)
    rows = _rows(tmp_path / "alignment.csv")
    se0 = [r for r in rows if r["pairing"] == "sentence_end" and r["layer_a"] == "0"]
    pm0 = [r for r in rows if r["pairing"] == "prompt_mean" and r["layer_a"] == "0"]
    assert se0 == [] and len(pm0) == 2 * 2  # both directions x (linear, procrustes)
    assert len(summary["skipped"]) == 2
    assert all("L0" in m and "identical" in m for m in summary["skipped"])
    # with the subspace read at the (constant) last token, layer 0 has no subspace at all
    cfg = _cfg(ridges_rel=(0.0,), layer_stride=2, n_perm=10)
    summary = phase_alignment.run_alignment({"a": a, "c": c}, cfg, tmp_path)
    assert len(summary["skipped"]) == 4 and all("do not differ" in m for m in summary["skipped"])


def test_bos_is_left_out_of_token_rows(tmp_path):
    a, b, _ = _world(seed=2, prepend_bos=True)
    cfg = _cfg(ridges_rel=(0.0,), layer_stride=2)
    phase_alignment.run_alignment({"a": a, "b": b}, cfg, tmp_path)
    rows = _rows(tmp_path / "alignment.csv")
    fit_p, test_p = split_neutral(a.labels, 0.25, 0)
    assert {int(r["n_fit"]) for r in rows} == {int((a.lengths[fit_p] - 1).sum())}
    assert {int(r["n_test"]) for r in rows} == {int((a.lengths[test_p] - 1).sum())}
    assert {int(r["layer_a"]) for r in rows} == {0, 2}
    assert len(rows) == 2 * 2 * 2  # pairs x layers x (linear, procrustes)


def test_split_is_by_neutral_prompt():
    labels = np.repeat(np.arange(4), 10)
    fit, test = split_neutral(labels, 0.3, seed=5)
    assert np.all(labels[fit] == NEUTRAL) and np.all(labels[test] == NEUTRAL)
    assert len(fit) == 7 and len(test) == 3 and not set(fit) & set(test)
    with pytest.raises(ValueError, match="neutral prompts"):
        split_neutral(labels[:32], 0.3, seed=5)


def test_matched_layers():
    assert matched_layers(12, 12, 5) == [(0, 0), (5, 5), (10, 10), (12, 12)]
    assert matched_layers(12, 24) == [(i, 2 * i) for i in range(13)]


def test_mapped_vectors_carry_a_rotation():
    """core.cross_model: the map A -> B fit on neutral rows carries A's emotion vectors onto B's
    own (B is a rotation of A), far above random A-directions sent through the same map."""
    a, b, c = _world()
    lin, pairing = fit_map(a, b, 1, 1, 0.0)
    assert pairing == "token" and lin.dA == lin.dB == 12
    va = emotion_vectors(a, "sentence_end", "neutral")
    vb = emotion_vectors(b, "sentence_end", "neutral")
    for e, v in mapped_vectors(lin, va, 1).items():
        own = np.asarray(vb[e][1], np.float64)
        assert v.shape == (12,) and cosine(v, own) > 0.99
        null = random_mapped_null(lin, 12, own, 200, seed=0)
        assert null["n"] == 200 and null["lo"] < null["mean"] < null["hi"] < 0.9
    assert cosine(np.zeros(12), np.ones(12)) == 0.0
    _, pairing = fit_map(a, c, 1, 2, 1.0)  # other tokenizer: paired per prompt
    assert pairing == "sentence_end"


def test_bad_input(tmp_path):
    a, b, _ = _world()
    with pytest.raises(ValueError, match="two or more"):
        phase_alignment.run_alignment({"a": a}, _cfg(), tmp_path)
    with pytest.raises(ValueError, match="different prompts"):
        phase_alignment.run_alignment({"a": a, "b": b.subset(np.arange(b.n - 1))}, _cfg(), tmp_path)
    with pytest.raises(ValueError, match="config.k"):
        phase_alignment.run_alignment({"a": a, "b": b}, _cfg(k=4), tmp_path)
    with pytest.raises(ValueError, match="fit_on"):
        phase_alignment.run_alignment({"a": a, "b": b}, _cfg(fit_on="tokens"), tmp_path)


def test_phase6_script_calls_run_phase(tmp_path):
    check_script(tmp_path, "phase6_alignment.py", "alignment")
