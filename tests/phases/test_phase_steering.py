"""The steering phase and its verdicts: a planted direction is found, beyond its control, at
its best coherent cell; a structureless one is not, at the stated rate; the same for patching;
real-world steering uses the neutral prompts' norms; control vectors serve as a second control:
label-shuffled vectors pass a planted emotion direction, stop one every emotion shares, and stay
quiet with labels that carry nothing."""

from __future__ import annotations

import csv
import json

import jax.numpy as jnp
import numpy as np
import pytest

import models
from configs import sections
from jaxcirc.core import coherence
from jaxcirc.core.steering import Effects
from jaxcirc.infra.compile_cache import CompileCounter
from jaxcirc.phases import steering
from jaxcirc.phases import steering_verdicts as sv
from jaxcirc.report import steering as report_steering
from tests.support import (
    CLASS_WORDS,
    NEUTRAL_SENTENCES,
    class_texts,
    class_vectors,
    text_word_tokenizer,
)
from tests.support import TEXT_WORDS as WORDS

GRATITUDE = CLASS_WORDS[0]
PROMPTS = NEUTRAL_SENTENCES[:6]
_word_tokenizer = text_word_tokenizer


def _planted_model(embed_gain: float = 0.0):
    """Tiny Pythia-like model whose unembedding reads ONE residual direction u, and only for the
    gratitude words: their logits are 0.1 * (ln_final(x) . u), every other column has u projected
    out. Steering along u must raise them; a random direction of equal norm (|cos| ~ 1/16 with u
    in 256 dimensions) must barely move them. embed_gain > 0: the gratitude words' embeddings
    carry embed_gain * u too (a prompt ending in one carries u at its last position)."""
    m = models.random_model(
        models.tiny_hf_config("gpt_neox", vocab_size=len(WORDS), hidden_size=256),
        seed=0,
        tokenizer=_word_tokenizer(),
    )
    d = m.config.d_model
    u = np.random.default_rng(0).standard_normal(d)
    u -= u.mean()  # layer norm removes the mean; keep u inside what survives it
    u /= np.linalg.norm(u)
    W_U = np.asarray(m.params["unembed"]["W_U"], np.float64)
    W_U -= np.outer(u, u @ W_U)
    W_U[:, [WORDS.index(w) for w in GRATITUDE]] = 0.1 * u[:, None]
    m.params["unembed"]["W_U"] = jnp.asarray(W_U, jnp.float32)
    if embed_gain:
        W_E = np.asarray(m.params["embed"]["W_E"], np.float64)
        W_E[[WORDS.index(w) for w in GRATITUDE]] += embed_gain * u
        m.params["embed"]["W_E"] = jnp.asarray(W_E, jnp.float32)
    # Quiet blocks: what they write is small beside the residual stream, so an added direction
    # reaches the unembedding mostly as it was (a random model's blocks would scramble it).
    blocks = m.params["blocks"]
    blocks["attn"]["W_O"] = blocks["attn"]["W_O"] * 0.1
    blocks["mlp"]["W_out"] = blocks["mlp"]["W_out"] * 0.1
    return m, u.astype(np.float32)


def test_planted_direction_steers_random_does_not(tmp_path):
    m, u = _planted_model()
    cfg = sections.steering()
    cfg.alphas = (-8.0, 0.0, 8.0)
    cfg.n_random_seeds = 4
    cfg.max_new_tokens = 5
    cfg.n_boot = 300
    cfg.batch_rows = 64
    cfg.prefill_rows = 32
    cfg.n_random_internal = 8
    vectors = {"gratitude": np.tile(u, (m.config.n_layers, 1))}
    summary = steering.run_steering(m, PROMPTS, vectors, cfg, tmp_path, label="toy")
    rows = list(csv.DictReader(open(tmp_path / "effects.csv")))

    def get(measure, layer, alpha, direction):
        (r,) = [
            r
            for r in rows
            if r["measure"] == measure
            and int(r["layer"]) == layer
            and float(r["alpha"]) == alpha
            and r["direction"] == direction
        ]
        return float(r["effect"]), float(r["ci_lo"]), float(r["ci_hi"])

    randoms = [f"random_{1000 + i}" for i in range(4)]
    for layer in (0, 1):
        up, lo, _ = get("logit_diff_gratitude", layer, 8.0, "gratitude")
        down, _, hi = get("logit_diff_gratitude", layer, -8.0, "gratitude")
        assert lo > 0 and hi < 0  # along raises the planted words, against lowers them
        for alpha, planted in ((8.0, up), (-8.0, down)):
            worst = max(abs(get("logit_diff_gratitude", layer, alpha, r)[0]) for r in randoms)
            assert abs(planted) > 3 * worst
    # Text: steering the last block's input along u makes the generations gratitude words.
    kw, kw_lo, _ = get("kw_gratitude", 1, 8.0, "gratitude")
    assert kw > 5 and kw_lo > 0  # hits per 10 words
    assert abs(get("kw_gratitude", 1, 8.0, "random_mean_of_4")[0]) < 1
    assert summary["best_layer"]["gratitude"]["logit_diff_gratitude"]["layer"] == 1
    # The share of unsteered continuations with nothing to score: EOS as the first new token.
    base = np.load(tmp_path / "sweep.npz")["base_tokens"]
    eos = m.config.eos_token_id
    expected = float(np.mean(base[:, 0] == eos)) if eos is not None else 0.0
    assert summary["empty_continuations"]["unsteered"] == pytest.approx(expected)
    assert 0.0 <= summary["empty_continuations"]["steered"] <= 1.0
    # EOS held back for every new token: no continuation ends at once, and the summary says why.
    cfg.min_new_tokens = cfg.max_new_tokens
    held = steering.run_steering(m, PROMPTS, vectors, cfg, tmp_path / "held", label="toy")
    assert held["empty_continuations"]["min_new_tokens"] == cfg.max_new_tokens
    assert held["empty_continuations"]["unsteered"] == 0.0
    assert held["empty_continuations"]["steered"] == 0.0
    held_tokens = np.load(tmp_path / "held" / "sweep.npz")["base_tokens"]
    assert not (held_tokens == eos).any()
    # Every number is labelled; the random rows say so.
    r0 = rows[0]
    for col in ("vector_method", "vector_centre", "layer", "alpha", "added_norm", "control"):
        assert r0[col] != ""
    assert {r["control"] for r in rows if r["direction"].startswith("random")} == {"random"}
    assert (tmp_path / "plots" / "steering_vs_layer.png").stat().st_size > 10_000
    text = (tmp_path / "samples" / "gratitude.txt").read_text()
    assert "layer 1, alpha +8" in text and "thanks" in text


def _fast(cfg, **kw):
    """Small sizes for the toy runs: fewer resamples and rows, every cell coherent (the verdict
    machinery is under test here; coherence has its own tests)."""
    cfg.n_boot = 200
    cfg.batch_rows = 64
    cfg.prefill_rows = 32
    cfg.samples_per_cell = 1
    cfg.coherence_repetition_rise = 1.0
    cfg.coherence_loss_rise = 1e6
    for k, v in kw.items():
        cfg[k] = v
    return cfg


def test_verdict_finds_the_planted_direction_beyond_its_control(tmp_path):
    """Along u the gratitude words' next-token logits rise by construction: the best cell beats
    all 39 random directions' best cells (p = 1/40); the gratitude keywords of the text beat all
    4 generated ones (p = 1/5, the floor those draws allow, said as such)."""
    m, u = _planted_model()
    cfg = _fast(
        sections.steering(),
        alphas=(-2.0, 0.0, 2.0, 4.0),
        n_random_seeds=4,
        n_random_internal=39,
        max_new_tokens=5,
    )
    vectors = {"gratitude": np.tile(u, (m.config.n_layers, 1))}
    s = steering.run_steering(m, PROMPTS, vectors, cfg, tmp_path, label="toy")
    v = s["verdicts"]["gratitude"]
    ld = v["logit_diff_gratitude"]
    assert ld["kind"] == "next_token" and ld["verdict"] == "beyond_control"
    rnd = ld["controls"]["random"]
    assert rnd["n"] == 39 and rnd["p"] == pytest.approx(1 / 40) and rnd["n_at_least"] == 0
    assert ld["best"]["per_unit_alpha"] > 0  # along u raises them
    assert ld["best"]["per_unit_alpha"] > 3 * rnd["null_max_95"]
    kw = v["kw_gratitude"]
    assert kw["kind"] == "text" and kw["controls"]["random"]["n"] == 4
    assert kw["controls"]["random"]["p"] == pytest.approx(0.2)
    assert kw["verdict"] == "beyond_all_draws"  # floor 0.2 > 0.05: more draws needed
    # Projections get no verdict; the table says how much of their effect is the arithmetic.
    assert "proj_gratitude" not in v and "proj_gen_gratitude" not in v
    assert "proj_<emotion>" in s["excluded_from_verdicts"]
    rows = list(csv.DictReader(open(tmp_path / "effects.csv")))
    (r,) = [
        r
        for r in rows
        if r["measure"] == "proj_gratitude"
        and r["direction"] == "gratitude"
        and r["layer"] == "1"
        and r["alpha"] == "2.0"
    ]
    push = 2.0 * cfg.alpha_unit * s["norms"][1]  # u is the projection direction itself
    assert float(r["arithmetic"]) == pytest.approx(push, rel=1e-4)
    assert {r["coherence"] for r in rows if r["coherence"]} == {"coherent"}
    ver = list(csv.DictReader(open(tmp_path / "verdicts.csv")))
    assert {(r["emotion"], r["measure"]) for r in ver} == {("gratitude", m) for m in v}
    assert s["controls"]["random"] == {
        "what": s["controls"]["random"]["what"],
        "n_text": 4,
        "n_next_token": 39,
        "seeds": "1000..1038",
    }


def test_verdict_stays_within_control_with_nothing_planted(tmp_path):
    """A random model steered along a random 'emotion' direction (drawn as the controls are):
    over 6 seeds, the next-token verdicts (19 draws: floor 0.05) come out beyond the control
    about 5% of the time and the text ones beat all 4 draws about 20% of the time, as their p
    says; nothing like the planted case."""
    cfg = _fast(
        sections.steering(),
        alphas=(-2.0, 0.0, 2.0),
        n_random_seeds=4,
        n_random_internal=19,
        max_new_tokens=4,
    )
    inner, text, ps = [], [], []
    # Seed 0 where the report looks for a model's steering run.
    dirs = [tmp_path / "steering" / "null" / "neutral"] + [tmp_path / str(i) for i in range(1, 6)]
    for seed in range(6):
        m = models.random_model(
            models.tiny_hf_config("gpt2", vocab_size=len(WORDS)),
            seed=seed,
            tokenizer=_word_tokenizer(),
        )
        rng = np.random.default_rng(100 + seed)
        vec = {"gratitude": rng.standard_normal((m.config.n_layers + 1, m.config.d_model))}
        s = steering.run_steering(m, PROMPTS, vec, cfg, dirs[seed], label="neutral")
        if seed == 0:
            first = s
        for v in s["verdicts"]["gratitude"].values():
            (inner if v["kind"] == "next_token" else text).append(v["verdict"])
            if v["kind"] == "next_token":
                ps.append(v["controls"]["random"]["p"])
    assert len(inner) == 18 and len(text) == 30
    assert inner.count("beyond_control") <= 3  # binomial(18, 0.05): P(>= 4) ~ 1%
    assert "beyond_control" not in text  # the floor 1/5 cannot reach 0.05
    assert text.count("beyond_all_draws") <= 12  # binomial(30, 0.2): P(>= 13) ~ 0.3%
    assert 0.3 < np.mean(ps) < 0.8  # roughly uniform
    # The report states what this run computed and nothing else.
    text = "\n".join(report_steering.section_steering(tmp_path, ["null"]))
    lists = report_steering.verdict_lists(first)
    said = f"Beyond the control at p <= 0.05: {'; '.join(lists['beyond_control']) or 'none'}."
    assert said in text
    for m in ("sentiment", "politeness", "kw_gratitude", "logit_diff_gratitude"):
        (row,) = [r for r in text.splitlines() if r.startswith(f"| gratitude | {m} |")]
        t = first["verdicts"]["gratitude"][m]["controls"]["random"]
        assert f"random: {t['p']:.3f} ({t['n']} draws, floor {t['p_floor']:.3f})" in row
    assert "Study: " in text.split("layers 6-7 strongest")[0]  # the study's claim, labelled


def _effects(value):
    z = np.zeros_like(value)
    return Effects(z[..., None], value, value - 0.1, value + 0.1, z[..., 0], z[..., 0], z[..., 0])


def test_verdict_chooses_among_coherent_cells_only():
    """The emotion's largest effect sits in a collapsed cell: the verdict reads the coherent
    one, and each text control draw its own coherent cells."""
    alphas = (-2.0, 0.0, 2.0)
    value = np.zeros((3, 1, 3))  # [dir: emotion, random, random; layer; alpha]
    value[0, 0] = [0.2, 0.0, 5.0]  # +5 at alpha +2 is in a repetitive cell
    value[1, 0] = [0.0, 0.0, 0.9]  # a random direction's +0.9 is coherent...
    value[2, 0] = [3.0, 0.0, 0.0]  # ...another's 3.0 is not
    cls = np.full((3, 1, 3), "coherent", dtype=object)
    cls[0, 0, 2] = "repetitive"
    cls[2, 0, 0] = "degraded"
    z = np.zeros((3, 1, 3))
    coh = coherence.CellCoherence(z[..., None], z[..., None], z[0, 0], z[0, 0], z, z, cls)
    ctrl = sv.ControlDraws("random", "test", {"kw_x": value[1:]}, cls[1:] == "coherent", {})
    v = sv.verdict_of(_effects(value), 0, "kw_x", coh, [ctrl], sv.Setup((0,), alphas, 0.05))
    assert (v["best"]["layer"], v["best"]["alpha"], v["best"]["coherence"]) == (0, -2.0, "coherent")
    t = v["controls"]["random"]
    assert t["n_at_least"] == 1 and t["p"] == pytest.approx(2 / 3)  # 0.45 >= 0.1; 0 < 0.1
    cls[0, 0, 0] = "degraded"
    v = sv.verdict_of(_effects(value), 0, "kw_x", coh, [ctrl], sv.Setup((0,), alphas, 0.05))
    assert v["best"] is None and v["verdict"] == "untestable"


def test_run_patching_writes_labelled_effects(tmp_path):
    m, u = _planted_model()
    cfg = sections.steering()
    cfg.max_new_tokens = 3
    cfg.n_boot = 100
    cfg.batch_rows = 64
    cfg.prefill_rows = 32
    cfg.patch_sites = ("resid_pre",)
    cfg.patch_n_flip = 99
    sources = ["thanks you very nice", "grateful and thanks", "thank you so very good"]
    summary = steering.run_patching(
        m,
        PROMPTS[:4],
        sources,
        cfg,
        tmp_path,
        source_label="gratitude",
        vectors={"gratitude": np.tile(u, (m.config.n_layers, 1))},
    )
    rows = list(csv.DictReader(open(tmp_path / "patching_effects.csv")))
    assert {r["condition"] for r in rows} == {"source", "control"}
    assert len(rows) == 2 * m.config.n_layers * len({r["measure"] for r in rows})
    assert summary["rows_generated"] == 4 + 2 * m.config.n_layers * 4
    assert (tmp_path / "samples" / "patching.txt").read_text().count("control   ->") == 2 * 3
    assert {r["coherence"] for r in rows} <= {"coherent", "repetitive", "degraded"}
    v = summary["verdicts"]["resid_pre"]
    assert "proj_gratitude" not in v and "logit_diff_gratitude" in v
    assert v["sentiment"]["n_flips"] == 99 and v["sentiment"]["p_floor"] == pytest.approx(0.01)


PATCH_TARGETS = PROMPTS + [
    "we will see the train today",
    "the bus is at noon",
    "a report left today",
    "the meeting left at noon",
]


def test_patching_verdict_finds_a_planted_source(tmp_path):
    """Sources end in a gratitude word whose embedding carries u: patching their last-token
    block input into neutral prompts raises the gratitude logits at every layer, beyond the
    neutral-to-neutral control and beyond its sign flips."""
    m, u = _planted_model(embed_gain=8.0)
    cfg = _fast(sections.steering(), max_new_tokens=3, patch_sites=("resid_pre",))
    cfg.patch_n_flip = 999
    sources = ["the meeting thanks", "we will see thank", "very nice grateful", "so good thanks"]
    sources = sources * 3
    s = steering.run_patching(m, PATCH_TARGETS, sources, cfg, tmp_path, "gratitude")
    v = s["verdicts"]["resid_pre"]["logit_diff_gratitude"]
    assert v["verdict"] == "beyond_control" and v["p"] < 0.01 and v["source_minus_control"] > 0
    assert v["n_flips"] == 999 and "sign-flip" in v["selection"]


def test_patching_verdict_stays_within_control_with_nothing_planted(tmp_path):
    """Random models; sources drawn from the same neutral prompts as the controls: over 6 seeds
    the (site, measure) verdicts come out beyond the control about 5% of the time."""
    cfg = _fast(sections.steering(), max_new_tokens=3, patch_sites=("resid_pre",))
    cfg.patch_n_flip = 199
    found, n = 0, 0
    for seed in range(6):
        m = models.random_model(
            models.tiny_hf_config("gpt2", vocab_size=len(WORDS)),
            seed=seed,
            tokenizer=_word_tokenizer(),
        )
        order = np.random.default_rng(seed).permutation(len(PATCH_TARGETS))
        sources = [PATCH_TARGETS[i] for i in order]
        s = steering.run_patching(m, PATCH_TARGETS, sources, cfg, tmp_path / str(seed), "null")
        for v in s["verdicts"]["resid_pre"].values():
            found += v["verdict"] == "beyond_control"
            n += 1
    assert n == 6 * 8
    assert found <= 6  # binomial(48, 0.05): P(>= 7) ~ 1.3%


def test_run_steers_realworld_in_neutral_units_with_control_vectors(tmp_path):
    """`run`: both prompt sets are steered in units of the NEUTRAL prompts' norms (and say so);
    control vectors given in the inputs serve as a second control, for text (the generated
    ones) and next-token verdicts (all of them), each verdict naming both."""
    m, u = _planted_model()
    cfg = _fast(
        sections.steering(),
        alphas=(-2.0, 0.0, 2.0),
        layers=(1,),
        n_random_seeds=2,
        n_random_internal=5,
        n_control_text=1,
        max_new_tokens=3,
    )
    cfg.max_prompts = 5
    cfg.patch_emotions = []
    rng = np.random.default_rng(0)
    shuffled = rng.standard_normal((4, m.config.n_layers + 1, m.config.d_model))
    inputs = steering.Inputs(
        m,
        PATCH_TARGETS,
        ["we will see the report", "thanks a bus left today", "the train is very nice"],
        {},
        {"gratitude": np.tile(u, (m.config.n_layers + 1, 1))},
        steering.ControlVectors("label_shuffled", shuffled, "test vectors"),
    )
    out = steering.run(inputs, cfg, tmp_path)
    neutral, real = out["neutral"], out["realworld"]
    np.testing.assert_allclose(real["norms"], neutral["norms"])
    own = steering.neutral_norms(m, PATCH_TARGETS[:5], cfg)
    np.testing.assert_allclose(neutral["norms"], own)
    assert real["norms_source"] == neutral["norms_source"] == "the neutral prompts steered (n=5)"
    assert real["controls"]["label_shuffled"]["n_text"] == 1
    assert real["controls"]["label_shuffled"]["n_next_token"] == 4
    v = real["verdicts"]["gratitude"]
    assert set(v["kw_gratitude"]["controls"]) == {"random", "label_shuffled"}
    assert v["kw_gratitude"]["controls"]["label_shuffled"]["n"] == 1
    assert v["logit_diff_gratitude"]["controls"]["label_shuffled"]["n"] == 4
    rows = list(csv.DictReader(open(tmp_path / "realworld" / "effects.csv")))
    assert "label_shuffled_0" in {r["direction"] for r in rows}
    assert (
        json.loads((tmp_path / "realworld" / "summary.json").read_text())["prompt_set"]
        == "realworld"
    )


def test_one_bucket_compiles_once_and_changes_nothing(tmp_path):
    """Two prompt sets of different lengths and sizes in one bucket (`bucket_for`): steering
    the second compiles nothing the first did not; in its own shapes (as each set was run
    before buckets) it compiles anew. Padded to the wider bucket, a set's generations are the
    same tokens and its measures the same numbers."""
    m, u = _planted_model()
    cfg = _fast(
        sections.steering(),
        alphas=(-2.0, 0.0, 2.0),
        layers=(1,),
        n_random_seeds=2,
        n_random_internal=4,
        max_new_tokens=4,
        # Re-run windows over the whole bucket, as configs/demo.py has them: with smaller steps
        # each window size a set's prompt lengths reach compiles once (by design, a handful).
        window_step=16,
    )
    vectors = {"gratitude": np.tile(u, (m.config.n_layers, 1))}
    short = PROMPTS  # 3-6 words
    long = ["we will see the report today and then the train", "the bus left at noon so"]
    bucket = steering.bucket_for(m, cfg, [short, long], steering._n_directions(1, cfg, None))
    assert bucket.width == 16 and bucket.settings.prompt_rows == len(short)

    def steer(prompts, name, shared):
        extras = steering.Extras(bucket=bucket if shared else None)
        steering.run_steering(m, prompts, vectors, cfg, tmp_path / name, extras)
        return np.load(tmp_path / name / "sweep.npz")

    own = steer(short, "own", shared=False)
    wide = steer(short, "wide", shared=True)
    with CompileCounter() as cc:
        steer(long, "long", shared=True)
    assert cc.compiles == 0, str(cc)
    with CompileCounter() as cc:
        steer(long, "long_own", shared=False)
    assert cc.compiles > 0
    np.testing.assert_array_equal(wide["tokens"], own["tokens"])
    np.testing.assert_array_equal(wide["base_tokens"], own["base_tokens"])
    measured = [k for k in own.files if k.startswith(("m_", "base_")) or k == "loss"]
    assert "m_logit_diff_gratitude" in measured and "loss" in measured
    for k in measured:
        np.testing.assert_allclose(wide[k], own[k], atol=1e-4, err_msg=k)


# ---------------------------------------------------------------------------------------------
# The label-shuffled control: class-mean differences with the emotion labels permuted among the
# emotional prompts, made as the study makes them (jaxcirc.core.vectors.label_shuffled_vectors)


def _plant_in_embeddings(m, words, direction, gain):
    W_E = np.asarray(m.params["embed"]["W_E"], np.float64)
    W_E[[WORDS.index(w) for w in words]] += gain * np.asarray(direction, np.float64)
    m.params["embed"]["W_E"] = jnp.asarray(W_E, jnp.float32)


def _label_cfg():
    return _fast(
        sections.steering(),
        alphas=(-2.0, 0.0, 2.0, 4.0),
        n_random_seeds=4,
        n_random_internal=39,
        n_control_text=4,
        max_new_tokens=5,
    )


def test_planted_emotion_direction_is_beyond_both_controls(tmp_path):
    """Gratitude words carry u (which the unembedding reads for them), anger and apology words
    their own directions: the gratitude class vector lies along u, a label-shuffled one mixes
    the three (cos with u <= ~0.8). The gratitude logits' best cell beats all 39 random
    directions AND all 39 label-shuffled vectors (p = 1/40 each); the keywords of the text beat
    all 4 generated draws of each (p at its floor 1/5)."""
    m, u = _planted_model(embed_gain=8.0)
    rng = np.random.default_rng(1)
    for c in (1, 2):
        v = rng.standard_normal(u.size)
        v -= v.mean() + u * (u @ v)
        _plant_in_embeddings(m, CLASS_WORDS[c], v / np.linalg.norm(v), 8.0)
    texts, labels = class_texts(lambda c, i: CLASS_WORDS[c][i % 4])
    vecs, ctl = class_vectors(m, texts, labels, 39, 0)
    s = steering.run_steering(
        m, PROMPTS, vecs, _label_cfg(), tmp_path, steering.Extras(controls=ctl)
    )
    assert s["controls"]["label_shuffled"]["n_text"] == 4
    assert s["controls"]["label_shuffled"]["n_next_token"] == 39
    ld = s["verdicts"]["gratitude"]["logit_diff_gratitude"]
    assert ld["verdict"] == "beyond_control" and ld["best"]["per_unit_alpha"] > 0
    for name in ("random", "label_shuffled"):
        assert ld["controls"][name]["n"] == 39
        assert ld["controls"][name]["p"] == pytest.approx(1 / 40)
    kw = s["verdicts"]["gratitude"]["kw_gratitude"]
    assert kw["verdict"] == "beyond_all_draws"
    assert {n: t["p"] for n, t in kw["controls"].items()} == {"random": 0.2, "label_shuffled": 0.2}


def test_a_direction_every_emotion_shares_is_beyond_random_only(tmp_path):
    """Every emotional word carries the same u (plus a word-specific part), and the emotional
    prompts draw their words from all three emotions alike: the gratitude vector points along
    u because the prompts are emotional, not because they are about gratitude. It beats the
    random directions (p = 1/40) and not the label-shuffled vectors, so the verdict says
    within control."""
    m, u = _planted_model()
    rng = np.random.default_rng(0)
    emotional = [w for c in (0, 1, 2) for w in CLASS_WORDS[c]]
    for w in emotional:
        _plant_in_embeddings(m, [w], 8.0 * u + 4.0 * rng.standard_normal(u.size) / 16.0, 1.0)
    texts, labels = class_texts(
        lambda c, i: emotional[rng.integers(12)] if c < 3 else CLASS_WORDS[3][i % 4]
    )
    vecs, ctl = class_vectors(m, texts, labels, 39, 0)
    s = steering.run_steering(
        m, PROMPTS, vecs, _label_cfg(), tmp_path, steering.Extras(controls=ctl)
    )
    ld = s["verdicts"]["gratitude"]["logit_diff_gratitude"]
    assert ld["controls"]["random"]["p"] == pytest.approx(1 / 40)
    assert ld["controls"]["label_shuffled"]["p"] > 0.05
    assert ld["verdict"] == "within_control"


def test_labels_that_carry_nothing_stay_inside_both_controls(tmp_path):
    """Random (untied) models, prompts whose labels are drawn at random: the 'gratitude' vector
    is one draw of what the label-shuffled vectors are (exchangeable with them). Over 12 seeds
    the next-token verdicts (19 draws of each control: floor 0.05) fall beyond either control
    about 5% of the time, and the text ones (2 generated draws, floor 1/3) never beyond
    control."""
    cfg = _fast(
        sections.steering(),
        alphas=(-2.0, 0.0, 2.0),
        n_random_seeds=2,
        n_random_internal=19,
        n_control_text=2,
        max_new_tokens=3,
    )
    words = [w for ws in CLASS_WORDS.values() for w in ws]
    inner, text = {"random": [], "label_shuffled": []}, []
    for seed in range(12):
        m = models.random_model(
            models.tiny_hf_config("gpt_neox", vocab_size=len(WORDS)),
            seed=seed,
            tokenizer=_word_tokenizer(),
        )
        rng = np.random.default_rng(seed)
        texts, _ = class_texts(lambda c, i, rng=rng: words[rng.integers(len(words))])
        labels = rng.permutation(np.repeat(np.arange(4), 16))
        vecs, ctl = class_vectors(m, texts, labels, 19, 100 + seed)
        s = steering.run_steering(
            m, PROMPTS, vecs, cfg, tmp_path / str(seed), steering.Extras(controls=ctl)
        )
        for v in s["verdicts"]["gratitude"].values():
            if v["kind"] == "text":
                text.append(v["verdict"])
                continue
            for name in inner:
                inner[name].append(v["controls"][name]["p"])
    for name, ps in inner.items():
        assert len(ps) == 36
        assert sum(p <= 0.05 for p in ps) <= 5, name  # binomial(36, 0.05): P(>= 6) ~ 1%
        assert 0.35 < np.mean(ps) < 0.75, name  # roughly uniform (mean 0.525 on 1/20..1)
    assert len(text) == 60 and "beyond_control" not in text


@pytest.mark.parametrize(
    "name, value, says",
    [
        ("verdict_level", 1.5, "between 0 and 1"),
        ("coherence_loss_rise", -1.0, "rise >= 0"),
        ("n_random_internal", -1, ">= 0"),
        ("coherence_prompts", -2, ">= 0"),
        ("patch_n_flip", 0, ">= 1"),
        ("n_random_seeds", 0, ">= 1"),
    ],
)
def test_config_check_names_the_new_settings(name, value, says):
    from configs import demo
    from jaxcirc import config_check

    cfg = demo.get_config("smoke")
    cfg.steering[name] = value
    with pytest.raises(ValueError, match=f"steering.{name}.*{says}"):
        config_check.check(cfg)
