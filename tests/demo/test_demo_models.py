"""The offline demo's stand-ins: the BPE tokenizer, training, and the orbax cache.

One small stand-in (2 layers, d_model 64, vocab 320) is trained once per module on 500 corpus
lines for 150 steps (~15-35 s, most of it XLA compiling the train step); the other tests read its
metrics and cache entry or replace training with a fake. The default (4L d128) config is not
trained here: it takes minutes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import models
from jaxcirc.demo import bpe, corpus
from jaxcirc.demo import standins as dm

TINY_SHAPE = dm.StandinShape(n_layers=2, d_model=64, n_heads=2, n_ctx=64, local_window=8)
TINY_TRAIN = dm.TrainConfig(steps=150, batch=16, seq_len=64, lr=5e-3, warmup=5)
TINY_ARGS = dict(
    data=dm.DemoCorpus(n_lines=500, seed=0, vocab_size=320), shape=TINY_SHAPE, progress=False
)


@pytest.fixture(scope="module", autouse=True)
def _memo_corpus():
    """Build each corpus once for the module (every load_or_train call asks for it again)."""
    built = {}
    real = corpus.build_corpus

    def memo(n_lines=4000, seed=0, cover_prompts=True):
        key = (n_lines, seed, cover_prompts)
        if key not in built:
            built[key] = real(n_lines, seed, cover_prompts)
        return list(built[key])

    mp = pytest.MonkeyPatch()
    mp.setattr(corpus, "build_corpus", memo)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def lines():
    return corpus.build_corpus(500, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The gpt2 stand-in at the small test shape, trained into a fresh cache dir."""
    cache = tmp_path_factory.mktemp("demo_cache")
    got, metrics = dm.load_or_train(cache, ("gpt2",), TINY_TRAIN, **TINY_ARGS)
    return cache, got, metrics


# --- tokenizer


def test_tokenizer_round_trips_and_is_deterministic(lines):
    tok = bpe.train_tokenizer(lines, vocab_size=320)
    assert len(tok) == 320  # the corpus has far more than 63 pairs to merge
    assert tok.convert_ids_to_tokens(bpe.EOS_ID) == bpe.EOS
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == bpe.EOS_ID
    texts = [lines[0], "Thank you so much, Priya! The café is closed.", "  two  spaces\tand tab"]
    for t in texts:  # byte-level: any text round-trips, unseen characters included
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == t
    common = tok(" the", add_special_tokens=False)["input_ids"]
    assert len(common) == 1  # BPE merged a frequent word into one token
    again = bpe.train_tokenizer(lines, vocab_size=320)
    assert bpe.to_json(again) == bpe.to_json(tok)


def test_tokenizer_is_the_same_in_another_process(lines, tmp_path):
    # Rust hash maps are seeded per process; the merges must not depend on that.
    tok = bpe.train_tokenizer(lines, vocab_size=320)
    (tmp_path / "lines.json").write_text(json.dumps(lines))
    code = (
        "import json, sys; from jaxcirc.demo import bpe;"
        "lines = json.load(open(sys.argv[1]));"
        "sys.stdout.write(bpe.train_backend(lines, 320).to_str())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "lines.json")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == bpe.to_json(tok)


def test_tokenizer_save_load(lines, tmp_path):
    tok = bpe.train_tokenizer(lines, vocab_size=300)
    path = bpe.save_tokenizer(tok, tmp_path / "t" / "tokenizer.json")
    back = bpe.load_tokenizer(path)
    assert bpe.fingerprint(back) == bpe.fingerprint(tok)
    t = lines[3]
    assert back(t)["input_ids"] == tok(t)["input_ids"]
    assert back.bos_token_id == bpe.EOS_ID
    with pytest.raises(ValueError, match="vocab_size"):
        bpe.train_tokenizer(lines, vocab_size=100)
    with pytest.raises(ValueError, match="no tokenizer"):
        bpe.load_tokenizer(tmp_path / "missing.json")


# --- configs and packing


def test_standin_configs_are_the_families_at_demo_size():
    cfgs = {f: models.config_from_hf(hf) for f, hf in dm.STANDINS.items()}
    for f, c in cfgs.items():
        assert (c.family, c.n_layers, c.d_model, c.n_heads, c.d_vocab) == (f, 4, 128, 4, 1024)
        assert "standin" in dm.standin_label(f) and "trained on the demo corpus" in (
            dm.standin_label(f)
        )
    assert cfgs["gpt_neox"].positional == "rotary" and cfgs["gpt_neox"].parallel_residual
    # GPT-Neo alternates global and local layers; the local window is shorter than a row.
    assert cfgs["gpt_neo"].attn_windows[1] == cfgs["gpt_neo"].attn_windows[3] == 16
    assert cfgs["gpt_neo"].attn_windows[0] > dm.TrainConfig().seq_len
    assert len({dm.standin_label(f) for f in dm.FAMILIES}) == 3


def test_pack_keeps_lines_whole_and_separated_by_eos():
    enc = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14] * 9]
    ids, mask = dm.pack(enc, seq_len=8, lead_eos=[True, False, True])
    eos = bpe.EOS_ID
    np.testing.assert_array_equal(ids[0][mask[0]], [eos, 5, 6, 7, eos, 8, 9])
    np.testing.assert_array_equal(ids[1][mask[1]], [10, 11, 12, 13])  # its lead EOS dropped
    np.testing.assert_array_equal(ids[2][mask[2]], [eos] + [14] * 7)  # cut to the row length
    assert mask.shape == (3, 8) and not mask[1, 4:].any()


def test_unigram_loss_matches_hand_computation():
    train = np.array([1, 1, 1, 2])
    held = np.array([1, 2, 3])
    # add-one counts over vocab 4: [1, 4, 2, 1] / 8
    want = -np.mean(np.log([4 / 8, 2 / 8, 1 / 8]))
    np.testing.assert_allclose(dm.unigram_loss(train, held, 4), want, rtol=1e-12)


# --- training


def test_training_learns_the_corpus(trained):
    _, got, metrics = trained
    (label,) = metrics
    m = metrics[label]
    assert label == dm.standin_label("gpt2", TINY_SHAPE) and m.steps == 150
    np.testing.assert_allclose(m.uniform_loss, np.log(320), rtol=1e-6)
    # An untrained model is at the uniform loss (normal 0.02 init gives near-flat logits).
    assert abs(m.initial_loss - m.uniform_loss) < 0.1
    # The unigram baseline is a real baseline: well below uniform on template text.
    assert m.unigram_loss < m.uniform_loss - 0.8
    # Trained: far below uniform, and below what frequencies alone give (uses context).
    assert m.held_out_loss < m.uniform_loss - 2.0, m.summary()
    assert m.held_out_loss < m.unigram_loss - 0.5, m.summary()
    assert m.held_out_curve[0] == (0, m.initial_loss) and m.held_out_curve[-1][0] == 150
    assert m.curve[0][1] > m.curve[-1][1] + 1.0  # the training loss fell too


def test_trained_model_is_the_study_model(trained):
    """The returned LoadedModel runs through the shared forward and predicts corpus text."""
    _, got, _ = trained
    (model,) = got.values()
    assert model.source == model.config.name and "standin" in model.source
    toks = model.tokenize(["I picked up the keys from the office."], prepend_bos=True)
    logits, _ = model.forward(toks)
    ids = toks.ids[0, : toks.lengths[0]]
    logp = jax.nn.log_softmax(np.asarray(logits[0, : len(ids) - 1]), axis=-1)
    nll = -np.mean(np.take_along_axis(np.asarray(logp), ids[1:, None], axis=-1))
    assert nll < np.log(model.config.d_vocab) - 2.0


# --- cache


def test_second_call_reuses_the_cache(trained, monkeypatch):
    cache, got, metrics = trained

    def no_training(*a, **k):
        raise AssertionError("load_or_train trained although the cache holds this model")

    monkeypatch.setattr(dm, "train_standin", no_training)
    monkeypatch.setattr(dm.bpe, "train_tokenizer", no_training)
    again, metrics2 = dm.load_or_train(cache, ("gpt2",), TINY_TRAIN, **TINY_ARGS)
    assert list(again) == list(got)
    (a,), (b,) = got.values(), again.values()
    jax.tree_util.tree_map(np.testing.assert_array_equal, a.params, b.params)
    assert a.cache_key == b.cache_key and a.config == b.config
    assert bpe.fingerprint(a.tokenizer) == bpe.fingerprint(b.tokenizer)
    assert metrics2 == metrics
    entry = cache / f"gpt2-{a.cache_key}"
    assert json.loads((entry / "metrics.json").read_text())["held_out_loss"] == pytest.approx(
        metrics[a.source].held_out_loss
    )
    assert (entry / "tokenizer.json").is_file() and (entry / "config.json").is_file()


def _fake_train(calls):
    def fake(family, tokenizer, train_lines, held_out_lines, train_cfg, progress, shape, lang="en"):
        calls.append(train_cfg)
        cfg = dm.standin_config(family, len(tokenizer), shape)
        params = models.init_params(cfg, 1)
        nums = dict.fromkeys(
            ("held_out_loss", "initial_loss", "uniform_loss", "unigram_loss", "train_loss"), 1.0
        )
        ints = dict.fromkeys(("batch", "seq_len", "n_params", "n_train_lines"), 1)
        ints.update(n_held_out_lines=1, held_out_tokens=1, d_vocab=cfg.d_vocab)
        m = dm.TrainMetrics(
            label=cfg.name,
            family=family,
            steps=train_cfg.steps,
            wall_s=0.0,
            cpu_s=0.0,
            steps_per_s=0.0,
            curve=[],
            held_out_curve=[],
            **nums,
            **ints,
        )
        return jax.tree_util.tree_map(np.asarray, params), m

    return fake


def test_changed_train_config_retrains(trained, monkeypatch):
    cache, got, _ = trained
    calls = []
    monkeypatch.setattr(dm, "train_standin", _fake_train(calls))
    other = dm.TrainConfig(steps=151, batch=16, seq_len=64, lr=5e-3, warmup=5)
    new, _ = dm.load_or_train(cache, ("gpt2",), other, **TINY_ARGS)
    assert calls == [other]
    (a,), (b,) = got.values(), new.values()
    assert a.cache_key != b.cache_key
    assert (cache / f"gpt2-{a.cache_key}").is_dir() and (cache / f"gpt2-{b.cache_key}").is_dir()


def test_crash_mid_training_leaves_no_entry(tmp_path, monkeypatch):
    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(dm, "train_standin", crash)
    with pytest.raises(KeyboardInterrupt):
        dm.load_or_train(tmp_path, ("gpt_neo",), TINY_TRAIN, **TINY_ARGS)
    assert not any(p.name.startswith("gpt_neo") for p in tmp_path.iterdir())

    # A crash while the entry is being written (params saved, metrics not) leaves nothing either.
    calls = []
    monkeypatch.setattr(dm, "train_standin", _fake_train(calls))
    real_dumps = dm.json.dumps

    def dumps_crash(obj, **k):
        if isinstance(obj, dict) and "held_out_loss" in obj:
            raise OSError("disk full")
        return real_dumps(obj, **k)

    monkeypatch.setattr(dm.json, "dumps", dumps_crash)
    with pytest.raises(OSError, match="disk full"):
        dm.load_or_train(tmp_path, ("gpt_neo",), TINY_TRAIN, **TINY_ARGS)
    monkeypatch.setattr(dm.json, "dumps", real_dumps)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("tokenizer-")] == []
    # The next call trains again and commits a complete entry.
    got, _ = dm.load_or_train(tmp_path, ("gpt_neo",), TINY_TRAIN, **TINY_ARGS)
    (model,) = got.values()
    assert len(calls) == 2 and (tmp_path / f"gpt_neo-{model.cache_key}" / "metrics.json").is_file()


def test_broken_entry_is_retrained(trained, tmp_path, monkeypatch):
    cache, got, _ = trained
    (a,) = got.values()
    import shutil

    shutil.copytree(cache, tmp_path / "c")
    entry = tmp_path / "c" / f"gpt2-{a.cache_key}"
    shutil.rmtree(entry / "params")  # metrics present but params gone: not trusted
    calls = []
    monkeypatch.setattr(dm, "train_standin", _fake_train(calls))
    dm.load_or_train(tmp_path / "c", ("gpt2",), TINY_TRAIN, **TINY_ARGS)
    assert len(calls) == 1 and (entry / "params").is_dir()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="unknown family"):
        dm.standin_label("llama")
    with pytest.raises(ValueError, match="steps"):
        dm.TrainConfig(steps=0)
    with pytest.raises(ValueError, match="n_ctx"):
        dm.train_standin("gpt2", None, ["a"], ["b"], dm.TrainConfig(seq_len=256))


def test_training_in_threads_gives_the_same_models(tmp_path):
    """workers=2 trains two families at once; each comes out as trained alone."""
    short = dm.TrainConfig(steps=3, batch=16, seq_len=64, lr=5e-3, warmup=1)
    fams = ("gpt2", "gpt_neox")
    one, m1 = dm.load_or_train(tmp_path / "one", fams, short, **TINY_ARGS, workers=1)
    two, m2 = dm.load_or_train(tmp_path / "two", fams, short, **TINY_ARGS, workers=2)
    assert list(one) == list(two)
    for label in one:
        assert m1[label].held_out_loss == m2[label].held_out_loss
        for a, b in zip(
            jax.tree_util.tree_leaves(one[label].params),
            jax.tree_util.tree_leaves(two[label].params),
            strict=True,
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="workers"):
        dm.load_or_train(tmp_path / "bad", fams, short, **TINY_ARGS, workers=0)


# --- kept steps (the study across training checkpoints)


def _assert_same_tree(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_kept_steps_change_no_final_number(trained, monkeypatch):
    """Training again while keeping steps 0, 8 and 150 gives the cached final model bit for bit
    (its entry untouched), the init at step 0, and the held-out losses TrainMetrics reports."""
    cache, got, metrics = trained
    (model,) = got.values()
    m = metrics[model.source]
    final_entry = cache / f"gpt2-{model.cache_key}"
    before = (final_entry / "metrics.json").read_text()
    kept, meta = dm.load_checkpoints(cache, "gpt2", (150, 0, 8), TINY_TRAIN, **TINY_ARGS)
    assert list(kept) == [0, 8, 150]
    assert meta[150]["final_params_equal_cached"] is True
    _assert_same_tree(kept[150].params, model.params)
    _assert_same_tree(kept[0].params, models.init_params(model.config, TINY_TRAIN.seed))
    assert meta[0]["held_out_loss"] == m.initial_loss
    assert meta[150]["held_out_loss"] == m.held_out_loss
    assert m.held_out_loss < meta[8]["held_out_loss"] < m.initial_loss
    assert (final_entry / "metrics.json").read_text() == before  # the final entry not rewritten
    for s in (0, 8, 150):
        assert kept[s].config == model.config  # one config: one compiled function for all
        assert kept[s].revision == f"step{s}" and kept[s].cache_key == f"{model.cache_key}-step{s}"
        assert dm.checkpoint_entry(cache, "gpt2", model.cache_key, s).is_dir()

    def no_training(*a, **k):
        raise AssertionError("load_checkpoints trained although the cache holds every step")

    monkeypatch.setattr(dm, "train_standin_kept", no_training)
    again, meta2 = dm.load_checkpoints(cache, "gpt2", (0, 8, 150), TINY_TRAIN, **TINY_ARGS)
    assert meta2 == meta
    for s in again:
        _assert_same_tree(again[s].params, kept[s].params)


def test_kept_steps_on_an_empty_cache_write_the_final_entry(tmp_path, monkeypatch):
    """With no final entry yet, training for kept steps writes it too, and load_or_train then
    reuses it instead of training."""
    calls = []
    fake = _fake_train(calls)

    def fake_kept(family, tok, tr, held, tc, keep, progress, shape):
        params, m = fake(family, tok, tr, held, tc, progress, shape)
        return params, m, {s: (params, float(s)) for s in keep}

    monkeypatch.setattr(dm, "train_standin_kept", fake_kept)
    kept, meta = dm.load_checkpoints(tmp_path, "gpt_neo", (0, 150), TINY_TRAIN, **TINY_ARGS)
    assert len(calls) == 1 and meta[150]["final_params_equal_cached"] is None
    monkeypatch.setattr(dm, "train_standin", fake)
    got, _ = dm.load_or_train(tmp_path, ("gpt_neo",), TINY_TRAIN, **TINY_ARGS)
    assert len(calls) == 1  # reused
    _assert_same_tree(next(iter(got.values())).params, kept[150].params)
    with pytest.raises(ValueError, match="steps"):
        dm.load_checkpoints(tmp_path, "gpt_neo", (0, 151), TINY_TRAIN, **TINY_ARGS)
    with pytest.raises(ValueError, match="steps"):
        dm.load_checkpoints(tmp_path, "gpt_neo", (), TINY_TRAIN, **TINY_ARGS)
