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
from jaxcirc.core.pairing import matched_layers, split_neutral
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations
from jaxcirc.phases import alignment as phase_alignment
from tests import support_representation as rep
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
    cfg.n_boot = 40
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
    for r in rows:  # whole prompts permuted; a CI on every first-ridge and Procrustes row
        assert r["null_unit"] == "whole prompt" and int(r["null_strata"]) == 2
        if r["ridge_rel"] != "1.0":
            assert _f(r["overlap_mapped_ci_lo"]) > 0.95 and _f(r["overlap_raw_ci_hi"]) < 0.6
        else:
            assert r["overlap_mapped_ci_lo"] == ""  # further ridges: no CI
        assert r["random_init_overlap_mapped"] == ""  # no control given
    h = summary["headline"]["subspaces_agree_up_to_change_of_basis"]
    e = h["pairs"]["model/a->model b"]["token"]
    assert h["best_layer"] is None and e["layers"] == [1, 2]
    assert e["figure"] > 0.99 and e["ci"][0] > 0.95 and e["above_null"]
    assert e["null_band"][1] < 0.5 and e["procrustes"]["above_null"]
    assert e["random_init"] is None and "no random-init control" in e["random_init_note"]
    assert (
        e["n_fit_rows"] == int(rows[0]["n_fit"])
        and e["d_a"] == 12
        and e["null_unit"] == "whole prompt"
    )


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


# --------------------------------------------------------------------------------------------
# The random-init control (tests/support_representation.py: token-fed random networks)
# --------------------------------------------------------------------------------------------


def _headline(summary, pair="a->b"):
    h = summary["headline"]["subspaces_agree_up_to_change_of_basis"]["pairs"][pair]
    return next(iter(h.values()))


def test_planted_shared_structure_beats_both_nulls(tmp_path):
    """Planted positive: B holds A's classes in another basis; a random-init copy of B fed the
    same tokens does not. The figure is above the whole-prompt shuffled null AND above the
    random-init control, whose difference has a CI above 0."""
    a, b, ctrl = rep.planted_pair(0)
    cfg = _cfg(ridges_rel=(0.0,), n_perm=30, n_boot=30)
    summary = phase_alignment.run(
        phase_alignment.Inputs({"a": a, "b": b}, {"b": [ctrl]}), cfg, tmp_path
    )
    e = _headline(summary)
    assert e["figure"] > 0.95 and e["above_null"]
    ri = e["random_init"]
    assert ri["draws"] == 1 and ri["figure"] < 0.7 and ri["above_random_init"]
    assert ri["minus_random_init_ci"][0] > 0.2
    assert e["procrustes"]["random_init"]["above_random_init"]
    rows = _rows(tmp_path / "alignment.csv")
    ab = [r for r in rows if r["model_a"] == "a"]
    assert all(r["random_init_draws"] == "1" for r in ab if r["overlap_mapped_ci_lo"])
    assert all(r["random_init_overlap_mapped"] == "" for r in rows if r["model_a"] == "b")
    assert summary["design"]["random_init_control"]["draws_per_model"] == {"b": 1}


def test_random_init_networks_pass_the_shuffled_null_but_not_the_control(tmp_path):
    """Structureless negative: A and B are two random-init networks fed the same tokens (nothing
    learnt), the control a third. Over 8 prompt sets the shuffled-pairing null alone calls some
    of them aligned (it cannot tell a network that learnt something from one that reads the
    same tokens); the random-init control calls none."""
    above_null, above_ctrl = [], []
    cfg = _cfg(ridges_rel=(0.0,), n_perm=30, n_boot=30)
    for seed in range(8):
        a, b, c = rep.random_nets(seed, 3)
        inputs = phase_alignment.Inputs({"a": a, "b": b}, {"b": [c]})
        e = _headline(phase_alignment.run(inputs, cfg, tmp_path / str(seed)))
        for m in (e, e["procrustes"]):
            above_null.append(m["above_null"])
            above_ctrl.append(m["random_init"]["above_random_init"])
    assert sum(above_null) >= 2  # the defect the control exists for
    assert sum(above_ctrl) == 0


def test_controls_must_read_the_same_tokens(tmp_path):
    a, b, c = rep.random_nets(0, 3)
    c.ids[0, 0] += 1
    with pytest.raises(ValueError, match="same tokens"):
        phase_alignment.run(phase_alignment.Inputs({"a": a, "b": b}, {"b": [c]}), _cfg(), tmp_path)
    with pytest.raises(ValueError, match="not one of the models"):
        phase_alignment.run(phase_alignment.Inputs({"a": a, "b": b}, {"x": [b]}), _cfg(), tmp_path)


def test_control_missing_at_one_layer_is_said_not_averaged(tmp_path):
    a, b, c = rep.random_nets(1, 3)
    c.resid[1] = 1.0  # the copy's layer 1: every row identical, nothing to map there
    cfg = _cfg(ridges_rel=(0.0,), n_perm=10, n_boot=10)
    summary = phase_alignment.run(
        phase_alignment.Inputs({"a": a, "b": b}, {"b": [c]}), cfg, tmp_path
    )
    e = _headline(summary)
    assert e["random_init"] is None and "at some compared layer" in e["random_init_note"]
    assert e["ci"] is not None  # B's own CI is still there
    assert any("random-init control has nothing to compare" in m for m in summary["skipped"])
