"""The study across training checkpoints (jaxcirc.phases.checkpoints) on synthetic checkpoint
series of a tiny GPT-2, through the real extraction.

Every prompt ends in its class's trigger word (its span). The series' weights drift from one
random init towards another, step by step; the triggers' embeddings are one shared vector plus
alpha[step] x a direction per emotion (neutral: none). With alpha = 0 the four classes are the same
input distribution, so nothing can separate them: the structureless series. Switching alpha from
0 to 1 at a known step plants the emotion structure there; the phase must find it there."""

from __future__ import annotations

import csv
import dataclasses
import json

import jax
import numpy as np
import pytest

import models
from configs import sections
from jaxcirc.data import dataset
from jaxcirc.infra.compile_cache import CompileCounter
from jaxcirc.phases import checkpoints as phase
from tests.support import word_tokenizer

STEPS = [0, 10, 20, 40, 80]
ONSET = 3  # index of the step where the planted structure switches on
TRIGGER = {"gratitude": 7, "anger": 8, "apology": 9, "neutral": 10}
PER_CLASS = 24


def _records(seed: int = 0) -> list[dataset.Record]:
    rng = np.random.default_rng(seed)
    out = []
    for e, t in TRIGGER.items():
        for i in range(PER_CLASS):
            filler = " ".join(f"w{w}" for w in rng.integers(100, 500, int(rng.integers(2, 5))))
            text = f"{filler} w{t}"
            out.append(
                dataset.Record(
                    f"{e}-{i}", "baseline", e, text, ((len(text) - len(f"w{t}"), len(text)),)
                )
            )
    return out


def _series(alpha, seed: int = 0) -> list[phase.Checkpoint]:
    """Checkpoints of one tiny GPT-2 whose weights drift from init A to init B; the emotion
    triggers' embeddings differ from neutral's by alpha[step] x a unit direction each."""
    cfg = models.config_from_hf(models.tiny_hf_config("gpt2"), name="tiny-series")
    a, b = (jax.tree_util.tree_map(np.asarray, models.init_params(cfg, seed + k)) for k in (0, 1))
    rng = np.random.default_rng(seed)
    dirs, _ = np.linalg.qr(rng.standard_normal((cfg.d_model, 3)))
    tok = word_tokenizer()
    out = []
    for i, step in enumerate(STEPS):
        t = i / (len(STEPS) - 1)
        p = jax.tree_util.tree_map(lambda x, y, t=t: (1 - t) * x + t * y, a, b)
        w_e = p["embed"]["W_E"]
        for k, e in enumerate(("gratitude", "anger", "apology")):
            w_e[TRIGGER[e]] = w_e[TRIGGER["neutral"]] + alpha[i] * 0.5 * dirs[:, k]
        model = models.LoadedModel(cfg, jax.tree_util.tree_map(np.asarray, p), tok, "tiny")
        out.append(
            phase.Checkpoint(step, lambda m=model: m, f"step{step}", lambda s=step: {"s": s})
        )
    return out


def _section(**over):
    sec = sections.checkpoints()
    sec.steps = tuple(STEPS)
    sec.n_perm = 100
    sec.probe_n_perm = 50
    sec.n_boot = 200
    sec.plots = False
    for k, v in over.items():
        sec[k] = v
    return sec


PLANTED = [0.0, 0.0, 0.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    summary = phase.run(
        phase.Inputs("planted", _series(PLANTED, seed=1), _records(1)), _section(plots=True), out
    )
    return summary, out


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_planted_onset_found_at_its_step(planted):
    summary, out = planted
    for e in ("gratitude", "anger", "apology"):
        on = summary["onset"][e]
        assert on["onset_step"] == STEPS[ONSET], (e, on)
        lo, hi = on["ci_steps"]
        assert lo is not None and hi is not None and lo <= STEPS[ONSET] <= hi <= STEPS[ONSET + 1]
        assert not on["beyond_at_first_step"]
        assert on["sustained_onset_step"] == STEPS[ONSET]
    for f in ("sentence_end", "span_mean"):
        p = summary["probe"][f]
        assert p["first_step_beyond_fw"] == STEPS[ONSET], (f, p)
        assert p["beyond_fw_any_layer"] == [False] * ONSET + [True] * (len(STEPS) - ONSET)
        assert min(p["accuracy_focus"][ONSET:]) > 0.9
        before = zip(p["accuracy_focus"][:ONSET], p["fw_threshold_focus"][:ONSET], strict=True)
        assert all(a <= t for a, t in before)
    # Overlap with the final subspace: beyond every one of its paired label-shuffle draws from
    # the onset on (pointwise); the family-wise verdict (tests/core) is demanding here, as the
    # planted directions also carry most of the variance that shuffled groupings share.
    ov = summary["overlap"]["beyond_fw_any_layer"]
    assert ov[:ONSET] == [False] * ONSET
    rows = [r for r in _rows(out / "overlap.csv") if int(r["step"]) == STEPS[ONSET]]
    assert all(float(r["p_value"]) == pytest.approx(1 / 101) for r in rows)


def test_planted_files(planted):
    summary, out = planted
    for name in summary["files"].values():
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "summary.json").read_text())["steps"] == STEPS
    probe = _rows(out / "probe.csv")
    assert len(probe) == 2 * len(STEPS) * 3  # features x steps x (embeddings + 2 blocks)
    assert {"step", "layer", "accuracy", "null_lo", "null_hi", "fw_threshold", "beyond_fw"} <= set(
        probe[0]
    )
    assert len(_rows(out / "maps.csv")) == (len(STEPS) - 1) * 3
    assert len(_rows(out / "onset.csv")) == 3 * len(STEPS) * 3
    assert len(_rows(out / "cosines.csv")) == len(STEPS) * 3 * 3
    feats = np.load(out / "features.npz")
    assert feats["sentence_end"].shape == (len(STEPS), 3, 4 * PER_CLASS, 64)
    assert summary["checkpoints"][2] == {"step": 20, "name": "step20", "s": 20}


def test_structureless_series_stays_inside_its_null(tmp_path):
    summary = phase.run(
        phase.Inputs("flat", _series([0.0] * len(STEPS), seed=7), _records(7)), _section(), tmp_path
    )
    for e in ("gratitude", "anger", "apology"):
        assert summary["onset"][e]["onset_step"] is None, summary["onset"][e]
    for f, p in summary["probe"].items():
        assert not any(p["beyond_fw_any_layer"]), (f, p)
    assert not any(summary["overlap"]["beyond_fw_any_layer"])
    rows = _rows(tmp_path / "cosines.csv")
    outside = np.mean([r["outside_band"] == "True" for r in rows if r["layer"] != "0"])
    assert outside <= 0.15  # pointwise 95% bands


def test_one_compile_for_every_checkpoint_of_a_shape():
    series, records = _series(PLANTED), _records()
    first = series[0].load()
    prep = phase.prepare(first, records, prepend_bos=False, batch_size=32)
    counts = []
    for ck in series:
        with CompileCounter() as cc:
            feats = phase.extract_features(prep, ck.load().params)
        counts.append(cc.compiles)
        assert feats["sentence_end"].shape == (3, len(records), 64)
    assert counts[0] >= 1 and counts[1:] == [0] * (len(series) - 1), counts


def test_features_equal_the_extraction_phase(tmp_path):
    """The prepared extraction reads the same residuals as `extract.extract_residuals`."""
    from jaxcirc.data.activations import sentence_end, span_mean
    from jaxcirc.phases import extract

    model, records = _series(PLANTED)[-1].load(), _records()
    acts = extract.extract_residuals(model, records, prepend_bos=False, batch_size=32)
    feats = phase.extract_features(phase.prepare(model, records, False, 32), model.params)
    np.testing.assert_allclose(feats["sentence_end"], sentence_end(acts), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(feats["span_mean"], span_mean(acts), rtol=1e-5, atol=1e-6)


def test_bad_inputs_raise():
    series = _series(PLANTED)
    with pytest.raises(ValueError, match="steps"):
        phase.run(phase.Inputs("x", series[:2], _records()), _section(), "/tmp/unused")
    with pytest.raises(ValueError, match="analyses"):
        phase.run(
            phase.Inputs("x", series, _records()), _section(analyses=("probe", "x")), "/tmp/u"
        )
    other = dataclasses.replace(series[0].load().config, n_layers=3, name="")
    with pytest.raises(ValueError, match="differs"):
        phase.check_same_shape(series[0].load().config, other, "checkpoint step9")


def _study_cfg(kind: str):
    import ml_collections

    c = ml_collections.ConfigDict()
    c.models = ml_collections.ConfigDict()
    c.models.kind = kind
    if kind == "checkpoint":
        c.models.hf_cache = ""
        c.models.sources = [
            {"label": "pythia-160m", "source": "EleutherAI/pythia-160m", "revision": ""}
        ]
    else:
        from configs import demo

        c.models = demo.get_config("training").models
    c.checkpoints = sections.checkpoints()
    return c


def test_load_inputs_is_lazy_and_names_the_revisions(monkeypatch):
    calls = []
    monkeypatch.setattr(models, "load", lambda src, **kw: calls.append((src, kw)) or "model")
    cfg = _study_cfg("checkpoint")
    cfg.checkpoints.steps = (0, 1000, 143000)
    inputs = phase.load_inputs(cfg, "pythia-160m", _records())
    assert calls == [] and [c.name for c in inputs.checkpoints] == [
        "step0",
        "step1000",
        "step143000",
    ]
    assert inputs.checkpoints[1].load() == "model"
    assert calls == [
        (
            "EleutherAI/pythia-160m",
            {"revision": "step1000", "cache_dir": None, "use_param_cache": False},
        )
    ]
    assert phase.identity(cfg, "pythia-160m")["revision"] == "step{step}"
    with pytest.raises(ValueError, match="label"):
        phase.load_inputs(cfg, "gpt2", _records())


def test_load_inputs_of_a_standin_trains_once_on_first_load(monkeypatch):
    from jaxcirc.demo import standins

    calls = []

    def fake(cache_dir, family, steps, **kw):
        calls.append((family, steps))
        return {s: f"model@{s}" for s in steps}, {s: {"held_out_loss": 1.0} for s in steps}

    monkeypatch.setattr(standins, "load_checkpoints", fake)
    cfg = _study_cfg("standin")
    label = standins.standin_label(
        cfg.models.families[0], standins.StandinShape(**cfg.models.shape)
    )
    inputs = phase.load_inputs(cfg, label, _records())
    assert calls == []
    assert [c.load() for c in inputs.checkpoints] == [f"model@{s}" for s in cfg.checkpoints.steps]
    assert inputs.checkpoints[0].facts() == {"held_out_loss": 1.0}
    assert calls == [(cfg.models.families[0], tuple(cfg.checkpoints.steps))]


def test_report_section_states_what_the_run_computed(planted, tmp_path):
    import shutil

    from jaxcirc.infra import artifacts
    from jaxcirc.report.checkpoints import section_checkpoints

    summary, out = planted
    shutil.copytree(out, tmp_path / "checkpoints" / artifacts.slug("planted"))
    text = "\n".join(section_checkpoints(tmp_path, ["planted", "absent"]))
    assert "## Across training checkpoints" in text and "### planted" in text
    assert "### absent" not in text
    for e in ("gratitude", "anger", "apology"):
        assert f"| {e} | {STEPS[ONSET]} [" in text
    first = summary["probe"]["sentence_end"]["first_step_beyond_fw"]
    assert (
        f"Probe (sentence_end): first step beyond its family-wise null at some block layer: {first}."
        in text
    )
    assert text.count("**beyond**") >= len(STEPS) - ONSET
    assert "](checkpoints/planted/probe_heatmap.png)" in text
    assert section_checkpoints(tmp_path, ["absent"]) == []


@pytest.mark.parametrize("module", ["demo", "paper"])
def test_training_configs_are_valid_and_checked(module):
    import importlib

    from jaxcirc import config_check

    cfg = importlib.import_module(f"configs.{module}").get_config("training")
    assert cfg.phases == ["dataset", "checkpoints", "report"]
    config_check.check(cfg)
    assert cfg.checkpoints.prepend_bos == cfg.prepend_bos
    if module == "demo":
        assert cfg.models.families == ["gpt_neox"]
        assert cfg.checkpoints.steps[-1] == cfg.models.train.steps
    else:
        assert len(cfg.checkpoints.steps) == 12 and cfg.checkpoints.steps[-1] == 143000
        assert cfg.checkpoints.revision.format(step=1000) == "step1000"
    for setting, value, words in (
        ("steps", (8, 0), "ascending"),
        ("analyses", ("probe", "heads"), "unknown"),
        ("n_boot", 5, "n_boot"),
        ("map_test_fraction", 1.0, "share"),
    ):
        bad = importlib.import_module(f"configs.{module}").get_config("training")
        bad.checkpoints[setting] = value
        with pytest.raises(ValueError, match=words):
            config_check.check(bad)
    if module == "demo":
        bad.checkpoints.steps = (0, 8, 100)
        with pytest.raises(ValueError, match="models.train.steps"):
            config_check.check(bad)


def test_checkpoints_is_an_optional_phase():
    from configs import demo
    from jaxcirc import config_check

    assert "checkpoints" in config_check.PHASES
    assert "checkpoints" not in demo.get_config().phases  # the English study's default list
    cfg = demo.get_config("smoke")
    cfg.phases = ["dataset", "checkpoints", "report"]
    with pytest.raises(ValueError, match="config.phases=.*needs a checkpoints section"):
        config_check.check(cfg)
