"""Helpers the tests share: planted models and prompts (phase 7), the phase-script check.

Tests import these from here, never from each other.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers import models as tok_models
from transformers import PreTrainedTokenizerFast

import models

ROOT = Path(__file__).resolve().parents[1]


def three_layer_config(family: str) -> dict:
    """Tiny config with 3 layers (so there are middle layers); GPT-Neo's last layer is local."""
    extra = {
        "gpt2": {"n_layer": 3},
        "gpt_neox": {"num_hidden_layers": 3},
        "gpt_neo": {"num_layers": 3, "attention_types": [[["global", "local", "local"], 1]]},
    }[family]
    return models.tiny_hf_config(family, **extra)


def ragged_batch(seed: int, vocab: int = 512):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (3, 7)).astype(np.int32)
    mask = np.ones((3, 7), bool)
    mask[1, 5:] = False
    mask[2, 3:] = False
    return jnp.asarray(ids), jnp.asarray(mask)


PLANTED = (1, 2)  # (layer, head) made to write the gratitude direction


TRIGGER = {"gratitude": 7, "anger": 8, "apology": 9}


WORDS = {"gratitude": (20, 21, 22), "anger": (30, 31, 32), "apology": (40, 41, 42)}


def planted_model(seed: int = 0, gain: float = 1.0, planted=(PLANTED,), neuron=None):
    """A tiny random GPT-2 whose `planted` heads write `gain` x the gratitude direction in
    proportion to how many gratitude triggers (token 7) they attend to (uniform attention).

    The gratitude direction is the logit-difference direction of the gratitude words, so both
    measures see the head. `neuron` (layer, index): an MLP neuron that fires on the trigger token
    itself and writes the gratitude direction too. Returns (model, vectors)."""
    m = models.random_model(three_layer_config("gpt2"), seed=seed)
    cfg = m.config
    p = jax.tree_util.tree_map(np.array, m.params)
    W_E = p["embed"]["W_E"]
    ids = np.concatenate([WORDS[e] for e in WORDS])
    w = np.where(np.isin(ids, WORDS["gratitude"]), 1 / 3, -1 / 6)
    v = W_E[ids].T @ w
    v /= np.linalg.norm(v)
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(cfg.d_model)
    u -= (u @ v) * v
    u /= np.linalg.norm(u)
    W_pos = p["embed"]["W_pos"]
    W_E -= np.outer(W_E @ u, u)  # only the trigger carries u: a clean signal for the head
    W_pos -= np.outer(W_pos @ u, u)
    b = p["blocks"]
    for group, name in (("attn", "W_O"), ("attn", "b_O"), ("mlp", "W_out"), ("mlp", "b_out")):
        w0 = b[group][name][0]  # layer 0 must not write u either
        w0 -= (w0 @ u)[..., None] * u
    W_E[TRIGGER["gratitude"]] = 2.0 * u  # after ln1 the trigger token is ~ sqrt(d) u
    a = p["blocks"]["attn"]
    for layer, head in planted:
        for name in ("W_Q", "W_K", "W_V"):
            a[name][layer, :, head] = 0.0
        for name in ("b_Q", "b_K", "b_V"):
            a[name][layer, head] = 0.0
        a["W_V"][layer, :, head, 0] = u  # z_0 = mean over the prefix of ln1(x) . u
        a["W_O"][layer, head] = 0.0
        a["W_O"][layer, head, 0] = gain * v / np.sqrt(cfg.d_model)
    if neuron is not None:
        layer, i = neuron
        mlp = p["blocks"]["mlp"]
        mlp["W_in"][layer, :, i] = 0.5 * u  # ln2(x) . u ~ 8 on the trigger, ~0 elsewhere
        mlp["b_in"][layer, i] = -0.5
        mlp["W_out"][layer, i] = gain * v / np.sqrt(cfg.d_model)
    params = jax.tree_util.tree_map(jnp.asarray, p)
    vectors = {"gratitude": np.tile(v, (cfg.n_layers + 1, 1)).astype(np.float32)}
    for e in ("anger", "apology"):
        vectors[e] = rng.standard_normal((cfg.n_layers + 1, cfg.d_model)).astype(np.float32)
    return dataclasses.replace(m, params=params, tokenizer=word_tokenizer()), vectors


def word_tokenizer(vocab: int = 512):
    """Token "w<i>" is id i (ids 0 and 1 are "<unk>" and "<bos>", so no special token is the
    prefix of a word): prompts can name exact ids."""
    words = {f"w{i}": i for i in range(2, vocab)} | {"<unk>": 0, "<bos>": 1}
    tok = Tokenizer(tok_models.WordLevel(words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>")


def planted_prompts(n: int = 6, seed: int = 0, trigger_last: bool = False):
    """Emotional prompts carry their trigger at a middle position (or last); neutral ones carry
    none."""
    rng = np.random.default_rng(seed)
    filler = lambda k: [f"w{i}" for i in rng.integers(100, 500, k)]  # noqa: E731
    emo = {}
    for e, t in TRIGGER.items():
        tail = lambda: [] if trigger_last else filler(int(rng.integers(2, 5)))  # noqa: E731
        emo[e] = [" ".join(filler(2) + [f"w{t}"] + tail()) for _ in range(n)]
    neutral = [" ".join(filler(int(rng.integers(4, 8)))) for _ in range(n)]
    return emo, neutral


def check_script(tmp_path, script, phase):
    """Run the script with a stub `jaxcirc.study` (the lead's orchestrator): it must pass the
    phase name, config and workdir through, and turn a ValueError into exit status 2."""
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "import ml_collections\n\ndef get_config(arg=None):\n"
        "    return ml_collections.ConfigDict({'name': arg or 'stub'})\n"
    )
    stub = textwrap.dedent(
        f"""
        import json, sys, types, runpy
        calls = []
        def run_phase(phase, cfg, workdir):
            if cfg.name == 'fail':
                raise ValueError('bad thing; fix it')
            calls.append([phase, cfg.name, workdir])
            print('CALLS', json.dumps(calls))
            return workdir
        mod = types.ModuleType('jaxcirc.study'); mod.run_phase = run_phase
        import jaxcirc; jaxcirc.study = mod; sys.modules['jaxcirc.study'] = mod
        sys.argv = [{str(ROOT / "scripts" / script)!r}] + sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name='__main__')
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    args = [sys.executable, "-c", stub, f"--config={cfg}", f"--workdir={tmp_path / 'w'}"]
    ok = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert f'CALLS [["{phase}", "stub", "{tmp_path / "w"}"]]' in ok.stdout
    assert str(tmp_path / "w") in ok.stdout.splitlines()[-1]
    bad = subprocess.run(
        args[:3] + [f"--config={cfg}:fail", f"--workdir={tmp_path / 'w'}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert bad.returncode == 2 and "bad thing; fix it" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def once_per_session(tmp_path_factory, worker_id: str, name: str, make) -> Path:
    """`make(folder)` run once per test session into <session tmp>/<name>/ and that folder
    returned; every xdist worker of the session shares it under a file lock (a worker that asks
    while another makes it waits, instead of making it again beside it on 2 cores). A failed
    `make` (an AssertionError naming why) fails every later caller with the same message."""
    from filelock import FileLock

    # One directory per session: under xdist the workers' base temps share a parent.
    root = tmp_path_factory.getbasetemp()
    root = root if worker_id == "master" else root.parent
    folder, failed = root / name, root / f"{name}.failed.txt"
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.done").exists() and not failed.exists():
            try:
                make(folder)
            except AssertionError as e:
                failed.write_text(str(e))
            else:
                (root / f"{name}.done").write_text("")
    assert not failed.exists(), failed.read_text()
    return folder


def smoke_run(tmp_path_factory, worker_id: str, into: Path) -> tuple[Path, Path, list[str]]:
    """The smoke study (configs/demo.py:smoke) run once per test session and copied into `into`
    for the calling module (which may then change its copy freely). It is the suite's costliest
    fixture: shared by every xdist worker (`once_per_session`).
    Returns (run dir, model cache dir, the run_study.py arguments that address the copy)."""
    import shutil

    def make(folder: Path):
        cmd = ["--config=configs/demo.py:smoke", f"--workdir={folder / 'run'}"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1"}
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "run_study.py"), *cmd,
             f"--config.models.cache_dir={folder / 'cache'}"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500,
        )  # fmt: skip
        assert out.returncode == 0, f"exit {out.returncode}\n{out.stderr[-4000:]}"

    shared = once_per_session(tmp_path_factory, worker_id, "smoke-shared", make)
    work, cache = into / "run", shared / "cache"
    shutil.copytree(shared / "run", work, ignore=shutil.ignore_patterns(".lock"))
    args = [
        "--config=configs/demo.py:smoke",
        f"--workdir={work}",
        f"--config.models.cache_dir={cache}",
    ]
    return work, cache, args


# ---------------------------------------------------------------------------------------------
# Steering: a word-level vocabulary of English words (the lexicons' emotion words among them), so
# generations are text the scorers read; class prompts and their vectors with label-shuffled
# controls, made as the study makes them.

TEXT_WORDS = (
    "[PAD] [UNK] the a meeting is at noon we will see bus train left report today "
    "thanks thank grateful appreciate angry furious hate outrageous sorry apologize apologies "
    "regret good bad nice great terrible please you it and then so very"
).split()
TEXT_WORDS += [f"w{i}" for i in range(64 - len(TEXT_WORDS))]
# Each class's words: gratitude, anger, apology, neutral (the label order of EMOTIONS).
CLASS_WORDS = {
    0: ("thanks", "grateful", "appreciate", "thank"),
    1: ("angry", "furious", "hate", "outrageous"),
    2: ("sorry", "apologize", "apologies", "regret"),
    3: ("noon", "today", "report", "train"),
}
NEUTRAL_SENTENCES = [
    "the meeting is at noon",
    "we will see the bus",
    "the train left today",
    "the report is at noon",
    "we will see the report today",
    "a bus left",
    "we will see the train today",
    "the bus is at noon",
    "a report left today",
    "the meeting left at noon",
]


def text_word_tokenizer():
    """Word-level tokenizer over TEXT_WORDS (id = index); decodes with spaces."""
    vocab = {w: i for i, w in enumerate(TEXT_WORDS)}
    tok = Tokenizer(tok_models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def class_texts(word_of, per_class: int = 16) -> tuple[list[str], np.ndarray]:
    """per_class prompts per class (gratitude, anger, apology, neutral), each a neutral
    sentence ending in word_of(class, i); and their labels [n]."""
    texts = [
        f"{NEUTRAL_SENTENCES[i % len(NEUTRAL_SENTENCES)]} {word_of(c, i)}"
        for c in range(4)
        for i in range(per_class)
    ]
    return texts, np.repeat(np.arange(4), per_class)


def sentence_end(m, texts) -> np.ndarray:
    """[n_layers + 1, n, d_model]: each text's residual stream at its last token."""
    toks = m.tokenize(texts, prepend_bos=False, pad_to_multiple=1)
    _, trace = m.forward(toks, record=models.Record.residuals(logits="none"))
    hs = np.asarray(trace.hidden_states())
    return hs[:, np.arange(len(texts)), np.asarray(toks.mask).sum(1) - 1]


def class_vectors(m, texts, labels, n_shuffled: int, seed: int):
    """The gratitude vector ({"gratitude": [n_layers + 1, d_model]}, sentence_end / neutral, the
    study's default) and `n_shuffled` label-shuffled control vectors of the same prompts
    (`steering.ControlVectors`)."""
    from jaxcirc.core import vectors
    from jaxcirc.phases import steering

    acts = sentence_end(m, texts)
    real = vectors.class_vectors("sentence_end", acts, labels, 4, "neutral", 3)
    shuffled = vectors.label_shuffled_vectors(
        "sentence_end", acts, labels, 4, (0, 1, 2), n_shuffled, seed, "neutral", 3
    )
    ctl = steering.ControlVectors("label_shuffled", shuffled, "label-shuffled test vectors")
    return {"gratitude": real[:, 0]}, ctl


def hf_param_count(hf_cfg: dict) -> int:
    """transformers' parameter count for the config, built on the meta device (no memory)."""
    import torch
    import transformers

    cfg = dict(hf_cfg)
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())  # shared (tied) tensors once
