"""The offline demo's models: small stand-ins of GPT-2, Pythia (GPT-NeoX) and GPT-Neo, trained
for a minute or two each on the corpus the project ships (`jaxcirc.demo.corpus`).

    models, metrics = load_or_train(Path("~/.cache/jaxcirc/demo").expanduser())
    for label, model in models.items():        # label says "stand-in" and how it was trained
        logits, trace = model.forward(model.tokenize(["Thank you!"], prepend_bos=True))

Random weights would make every phase of the study report noise, so each stand-in learns the
corpus first: the shapes are those of the real families at small size (`StandinShape`), the
tokenizer is a byte-level BPE trained on the same corpus (`jaxcirc.demo.bpe`), and training runs
through the shared `models.forward`, so the trained model is exactly the model the study runs.

What a stand-in learned is measured on held-out corpus lines, beside two baselines: a uniform
model (log d_vocab nats per token) and the training unigram distribution, whose held-out
cross-entropy is what a model that ignores context can reach.

Trained params are cached with orbax, one folder per model, keyed by a hash of everything that
decides them (corpus lines, tokenizer, model config, train config, seeds); a changed input trains
a new entry and an unchanged one is reused. An entry is built in a temporary folder and renamed
into place only when complete, so a crash never leaves a half entry that would be reused.

Training can also keep the params at chosen steps (`load_checkpoints`: the demo's study across
training checkpoints). Each kept step is its own entry, `<family>-<key>-step<N>`, beside the final
model's `<family>-<key>`: the same key (so the same inputs), plus the step. Keeping steps only
copies the params on the way; the final params, their metrics and their entry are the same as a
run that keeps none (tests/demo/test_demo_models.py checks it).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import models
from jaxcirc.demo import bpe, corpus, corpus_ja, spm
from jaxcirc.infra.progress import write_line

# Bump when training or packing changes what a given config produces: old cache entries then miss.
TRAINER_VERSION = 1

FAMILIES: tuple[str, ...] = ("gpt2", "gpt_neox", "gpt_neo")
DEMO_VOCAB_SIZE = 1024
# The Japanese stand-ins' sentencepiece vocabulary: every one of the Japanese corpus's ~770
# distinct characters is a piece (jaxcirc.demo.spm), plus 259 fixed pieces, leaving ~1000 for
# longer pieces (spm.train_model raises, naming the minimum, when a corpus needs more).
DEMO_VOCAB_SIZE_JA = 2048

# Corpus languages of the stand-ins: the corpus module and the tokenizer module (same
# interfaces: jaxcirc.demo.corpus / corpus_ja; jaxcirc.demo.bpe / spm) each trains on.
LANGUAGES: dict[str, tuple] = {"en": (corpus, bpe), "ja": (corpus_ja, spm)}

# What each family's stand-in is called in every output: the published model it stands in for.
_SHORT = {"gpt2": "gpt2", "gpt_neox": "pythia", "gpt_neo": "gpt-neo"}


@dataclasses.dataclass(frozen=True)
class StandinShape:
    """The shape shared by the three stand-ins (each family keeps its own architecture)."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    # Longest sequence: the demo's prompts are at most ~40 tokens, plus a continuation.
    n_ctx: int = 128
    # GPT-Neo's local layers see this many keys: n_ctx / 8, the ratio of the published models
    # (256 of 2048), so the local layers matter on prompts with a continuation.
    local_window: int = 16


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a stand-in is trained (AdamW, warmup then cosine decay)."""

    # 240 steps x 16 rows x 128 tokens (~490k tokens, ~7 passes over the 3,600 training lines):
    # ~0.6 CPU-s per step for the 4L d128 stand-ins, so ~100 s per model on 2 quiet cores.
    # Held-out loss of the gpt2 stand-in vs steps (batch 16, lr 3e-3): 1.37 at 250, 1.09 at 600.
    steps: int = 240
    batch: int = 16  # rows per step
    seq_len: int = 128  # tokens per row; should equal n_ctx so every learned position is trained
    lr: float = 8e-3  # peak learning rate after `warmup` steps (1.29 vs 1.37 for 3e-3, 250 steps)
    warmup: int = 30  # linear warmup steps
    end_lr_frac: float = 0.1  # the cosine decays to lr * end_lr_frac at the last step
    weight_decay: float = 0.01  # AdamW decay, on weight matrices only (not biases, LN, W_pos)
    grad_clip: float = 1.0  # global-norm clipping: the first steps at 3e-3 can spike
    seed: int = 0  # parameter init and batch order (the corpus has its own seed)

    def __post_init__(self):
        for name in ("steps", "batch", "seq_len"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"TrainConfig.{name}={v!r}; pass a positive int")
        if self.seq_len < 2:
            raise ValueError(f"TrainConfig.seq_len={self.seq_len}; needs at least 2 tokens")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr={self.lr}; pass a positive learning rate")


@dataclasses.dataclass
class TrainMetrics:
    """What training a stand-in reached. Losses are mean next-token cross-entropy in nats per
    predicted token of the held-out corpus lines, packed as in training (`pack`: each line after
    an EOS, so a line's first token is predicted from EOS and the EOS from the line before when
    both share a row), except `train_loss` (mean over the last 10% of steps, training batches).
    All baselines are scored on exactly the same target tokens."""

    label: str
    family: str
    held_out_loss: float  # the trained model
    initial_loss: float  # the same model at its random init (the "untrained" control)
    uniform_loss: float  # log(d_vocab): a model that knows nothing
    unigram_loss: float  # training unigram frequencies (add-one smoothed): ignores context
    train_loss: float
    steps: int
    batch: int
    seq_len: int
    wall_s: float  # training loop only (compile included), not the evaluation
    cpu_s: float  # process CPU seconds of the same loop (all threads): less load-dependent
    steps_per_s: float  # measured after the first (compiling) step
    n_params: int
    d_vocab: int
    n_train_lines: int
    n_held_out_lines: int
    held_out_tokens: int
    curve: list[tuple[int, float]]  # (step, train loss) at ~20 points
    held_out_curve: list[tuple[int, float]]  # (step, held-out loss) at 0 and 4 more points

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainMetrics:
        d = dict(d)
        for k in ("curve", "held_out_curve"):
            d[k] = [tuple(p) for p in d.get(k, [])]
        return cls(**d)

    def summary(self) -> str:
        return (
            f"{self.label}: held-out {self.held_out_loss:.3f} nats/token vs unigram "
            f"{self.unigram_loss:.3f}, uniform {self.uniform_loss:.3f}, untrained "
            f"{self.initial_loss:.3f} ({self.steps} steps, {self.wall_s:.0f}s)"
        )


# ---------------------------------------------------------------------------------------------
# Stand-in configs


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")


def _check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ValueError(f"unknown corpus language {language!r}; use one of {', '.join(LANGUAGES)}")


def standin_label(family: str, shape: StandinShape = StandinShape(), language: str = "en") -> str:
    """How the stand-in is named in every output, e.g.
    "gpt2-standin (4L d128, trained on the demo corpus)"; a Japanese one (`language` "ja"),
    "gpt2-ja-standin (4L d128, trained on the Japanese demo corpus)"."""
    _check_family(family)
    _check_language(language)
    size = f"{shape.n_layers}L d{shape.d_model}"
    if family == "gpt_neox":
        size = f"GPT-NeoX {size}"
    if family == "gpt_neo":
        size = f"{size}, local window {shape.local_window}"
    if language == "ja":
        return f"{_SHORT[family]}-ja-standin ({size}, trained on the Japanese demo corpus)"
    return f"{_SHORT[family]}-standin ({size}, trained on the demo corpus)"


def standin_hf_config(
    family: str, vocab_size: int = DEMO_VOCAB_SIZE, shape: StandinShape = StandinShape()
) -> dict:
    """The config.json dict of a family's stand-in (`models.tiny_hf_config` at `shape`)."""
    _check_family(family)
    s = shape
    common = dict(vocab_size=vocab_size, bos_token_id=bpe.EOS_ID, eos_token_id=bpe.EOS_ID)
    if family == "gpt2":
        over = dict(n_positions=s.n_ctx, n_embd=s.d_model, n_layer=s.n_layers, n_head=s.n_heads)
    elif family == "gpt_neox":
        over = dict(
            max_position_embeddings=s.n_ctx,
            hidden_size=s.d_model,
            num_hidden_layers=s.n_layers,
            num_attention_heads=s.n_heads,
            intermediate_size=4 * s.d_model,
        )
    else:
        over = dict(
            max_position_embeddings=s.n_ctx,
            hidden_size=s.d_model,
            num_layers=s.n_layers,
            num_heads=s.n_heads,
            window_size=s.local_window,
        )
    return models.tiny_hf_config(family, **common, **over)


def standin_config(
    family: str,
    vocab_size: int = DEMO_VOCAB_SIZE,
    shape: StandinShape = StandinShape(),
    language: str = "en",
) -> models.ModelConfig:
    """The stand-in's `ModelConfig`, named by its label."""
    hf = standin_hf_config(family, vocab_size, shape)
    return models.config_from_hf(hf, name=standin_label(family, shape, language))


# The three stand-ins at the demo's shape and vocabulary (config.json dicts by family).
STANDINS: dict[str, dict] = {f: standin_hf_config(f) for f in FAMILIES}


# ---------------------------------------------------------------------------------------------
# Data: lines packed into rows


def encode_lines(tokenizer, lines: Sequence[str]) -> list[list[int]]:
    """Token ids of each line, no special tokens."""
    return [list(ids) for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]]


def pack(
    encoded: Sequence[Sequence[int]], seq_len: int, lead_eos: Sequence[bool] | bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Pack lines into rows: each line is preceded by EOS, whole lines fill a row greedily, and
    the rest of a row is padding. A line longer than a row is cut to fit.

    Rows always start at a line start. `lead_eos` (per row, or one bool for all) says whether a
    row's first line keeps its EOS; training mixes both so a prompt run with or without a
    prepended BOS is in distribution.

    Returns ids [row, seq_len] int32 (padding holds EOS) and mask [row, seq_len] bool.
    """
    rows: list[list[int]] = []
    cur: list[int] = []
    for line in encoded:
        piece = [bpe.EOS_ID, *line][:seq_len]
        if cur and len(cur) + len(piece) > seq_len:
            rows.append(cur)
            cur = []
        cur = cur + piece
    if cur:
        rows.append(cur)
    if isinstance(lead_eos, bool):
        lead_eos = [lead_eos] * len(rows)
    ids = np.full((len(rows), seq_len), bpe.EOS_ID, np.int32)
    mask = np.zeros((len(rows), seq_len), bool)
    for i, row in enumerate(rows):
        if not lead_eos[i % len(lead_eos)] and len(row) > 1:
            row = row[1:]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = True
    return ids, mask


def _epochs(encoded, seq_len: int, batch: int, rng: np.random.Generator):
    """Endless (ids [batch, seq_len], mask) batches: each epoch reshuffles the lines, repacks
    them, and drops the leading EOS of a random half of the rows."""
    order = np.arange(len(encoded))
    while True:
        rng.shuffle(order)
        n_rows_guess = len(encoded)  # more than enough flags for any packing
        lead = list(rng.random(n_rows_guess) < 0.5)
        ids, mask = pack([encoded[i] for i in order], seq_len, lead)
        rows = rng.permutation(len(ids))
        for s in range(0, len(rows) - batch + 1, batch):
            take = rows[s : s + batch]
            yield ids[take], mask[take]
        if len(rows) < batch:
            raise ValueError(
                f"the training lines pack into {len(rows)} rows, fewer than batch={batch}; "
                "pass more lines or a smaller batch"
            )


# ---------------------------------------------------------------------------------------------
# Loss and baselines


def _token_nll(cfg: models.ModelConfig, params, ids, mask):
    """Summed next-token NLL over real (target, context) pairs and their count.

    ids, mask: [batch, seq_len]. The forward is the study's own (`models.forward`).
    """
    logits, _ = models.forward(cfg, params, ids, mask, None, models.Record(logits="all"))
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    w = (mask[:, 1:] & mask[:, :-1]).astype(jnp.float32)
    return (nll * w).sum(), w.sum()


def _evaluator(cfg: models.ModelConfig, batch: int = 32):
    """f(params, ids, mask) -> mean next-token NLL (nats) over packed rows [row, seq_len],
    run in fixed-size batches so it compiles once."""
    nll = jax.jit(lambda p, i, m: _token_nll(cfg, p, i, m))

    def evaluate(params, ids: np.ndarray, mask: np.ndarray) -> float:
        total, count = 0.0, 0.0
        for s in range(0, len(ids), batch):
            i, m = ids[s : s + batch], mask[s : s + batch]
            if len(i) < batch:  # pad with fully masked rows to keep one shape
                pad = batch - len(i)
                i = np.concatenate([i, np.zeros((pad, i.shape[1]), i.dtype)])
                m = np.concatenate([m, np.zeros((pad, m.shape[1]), bool)])
            t, c = nll(params, jnp.asarray(i), jnp.asarray(m))
            total += float(t)
            count += float(c)
        return total / count

    return evaluate


def _targets(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The token ids predicted in packed rows (the positions `_token_nll` scores), flat."""
    w = mask[:, 1:] & mask[:, :-1]
    return ids[:, 1:][w]


def unigram_loss(train_targets: np.ndarray, held_targets: np.ndarray, d_vocab: int) -> float:
    """Held-out cross-entropy (nats/token) of the training unigram distribution, add-one
    smoothed so a token unseen in training costs log(N + d_vocab), not infinity."""
    counts = np.bincount(train_targets, minlength=d_vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[held_targets].mean())


def _decay_mask(params):
    # Decay weight matrices only: biases, LayerNorm and learned positions stay undecayed.
    def keep(path, _):
        name = str(getattr(path[-1], "key", path[-1]))
        return name.startswith("W_") and name != "W_pos"

    return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(tc: TrainConfig) -> optax.GradientTransformation:
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=tc.lr,
        warmup_steps=min(tc.warmup, max(tc.steps - 1, 1)),
        decay_steps=max(tc.steps, tc.warmup + 1),
        end_value=tc.lr * tc.end_lr_frac,
    )
    return optax.chain(
        optax.clip_by_global_norm(tc.grad_clip),
        optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=tc.weight_decay, mask=_decay_mask),
    )


# ---------------------------------------------------------------------------------------------
# Training


def _step_fn(cfg: models.ModelConfig, opt: optax.GradientTransformation):
    """The jitted training step (params, opt state, ids, mask) -> (params, opt state, loss):
    mean next-token cross-entropy over real (target, context) pairs, one AdamW update."""

    def loss_fn(p, ids, mask):
        total, count = _token_nll(cfg, p, ids, mask)
        return total / jnp.maximum(count, 1.0)

    @jax.jit
    def step(p, s, ids, mask):
        loss, grads = jax.value_and_grad(loss_fn)(p, ids, mask)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    return step


@dataclasses.dataclass
class _Trained:
    """What `_train_loop` hands `train_standin`: params and the figures TrainMetrics reports."""

    params: dict
    initial: float
    held_out: float
    curve: list[tuple[int, float]]
    held_out_curve: list[tuple[int, float]]
    wall_s: float
    cpu_s: float
    steps_per_s: float
    # {step: (params as numpy arrays after `step` updates, held-out loss)}: the kept steps
    kept: dict = dataclasses.field(default_factory=dict)


def _keep(params) -> dict:
    """A host copy of `params` (numpy), independent of the device buffers training goes on with."""
    return jax.tree_util.tree_map(lambda a: np.array(a, copy=True), params)


def _train_loop(
    cfg: models.ModelConfig, tc: TrainConfig, enc_train, held, progress: bool, keep=frozenset()
):
    """Train from `models.init_params(cfg, tc.seed)` for tc.steps on batches of `enc_train`
    (`_epochs`), scoring the packed held-out rows `held` = (ids, mask) at init, at 1/4, 1/2, 3/4
    and at the end. `keep`: steps (0 = the init, tc.steps = the end) whose params are copied out
    and scored on `held` too. Times exclude those mid-run evaluations and copies. Over 60 lines:
    one loop whose bookkeeping (curve, held-out points, kept steps, timing) reads best in place."""
    params = models.init_params(cfg, tc.seed)
    opt = make_optimizer(tc)
    opt_state = jax.jit(opt.init)(params)  # one compile instead of one per eager op
    step = _step_fn(cfg, opt)
    evaluate = _evaluator(cfg)
    initial = evaluate(params, *held)
    kept = {0: (_keep(params), initial)} if 0 in keep else {}
    batches = _epochs(enc_train, tc.seq_len, tc.batch, np.random.default_rng(tc.seed))
    curve: list[tuple[int, float]] = []
    every = max(tc.steps // 20, 1)
    held_at = {round(tc.steps * k / 4) for k in range(1, 4)}
    held_curve = [(0, initial)]
    t0, c0 = time.monotonic(), time.process_time()
    t1 = t0
    eval_wall = eval_cpu = 0.0  # the held-out curve's evaluations, not counted as training
    last_print = t0
    for i in range(tc.steps):
        ids, mask = next(batches)
        params, opt_state, loss = step(params, opt_state, jnp.asarray(ids), jnp.asarray(mask))
        if i == 0 or i % every == every - 1 or i == tc.steps - 1:
            curve.append((i + 1, float(loss)))  # syncs; only at curve points
        if (i + 1 in held_at or i + 1 in keep) and i + 1 < tc.steps:
            e0 = time.monotonic(), time.process_time()
            loss_here = evaluate(params, *held)
            if i + 1 in held_at:
                held_curve.append((i + 1, loss_here))
            if i + 1 in keep:
                kept[i + 1] = (_keep(params), loss_here)
            eval_wall += time.monotonic() - e0[0]
            eval_cpu += time.process_time() - e0[1]
        if i == 0:
            t1 = time.monotonic()
        now = time.monotonic()
        if progress and (now - last_print >= 5 or i == tc.steps - 1):
            _say(f"train {cfg.name}: step {i + 1}/{tc.steps} loss {float(loss):.3f}")
            last_print = now
    jax.block_until_ready(params)
    t_end, c_end = time.monotonic(), time.process_time()
    held_out = evaluate(params, *held)
    held_curve.append((tc.steps, held_out))
    if tc.steps in keep:
        kept[tc.steps] = (_keep(params), held_out)
    return _Trained(
        params=params,
        initial=initial,
        held_out=held_out,
        curve=curve,
        held_out_curve=held_curve,
        wall_s=t_end - t0 - eval_wall,
        cpu_s=c_end - c0 - eval_cpu,
        steps_per_s=(tc.steps - 1) / (t_end - t1 - eval_wall) if tc.steps > 1 else 0.0,
        kept=kept,
    )


def train_standin(
    family: str,
    tokenizer,
    train_lines: Sequence[str],
    held_out_lines: Sequence[str],
    train_cfg: TrainConfig = TrainConfig(),
    progress: bool = True,
    shape: StandinShape = StandinShape(),
    language: str = "en",
) -> tuple[dict, TrainMetrics]:
    """Train `family`'s stand-in on `train_lines` (next-token cross-entropy, AdamW).

    Returns (params as numpy arrays, layers stacked as in `models.transformer`; metrics measured
    on `held_out_lines`). The model's vocabulary is `len(tokenizer)`; `language` names the
    corpus in its label.
    """
    params, metrics, _ = train_standin_kept(
        family, tokenizer, train_lines, held_out_lines, train_cfg, (), progress, shape, language
    )
    return params, metrics


def train_standin_kept(
    family: str,
    tokenizer,
    train_lines: Sequence[str],
    held_out_lines: Sequence[str],
    train_cfg: TrainConfig,
    keep_steps: Sequence[int],
    progress: bool = True,
    shape: StandinShape = StandinShape(),
    language: str = "en",
) -> tuple[dict, TrainMetrics, dict[int, tuple[dict, float]]]:
    """`train_standin`, keeping the params at `keep_steps` (0 = the init, train_cfg.steps = the
    final params) on the way: (params, metrics, {step: (params, held-out loss in nats/token)}).
    The params and metrics are those `train_standin` returns (copying params out changes no
    update); only the wall/CPU times can differ."""
    tc = train_cfg
    bad = [s for s in keep_steps if isinstance(s, bool) or not isinstance(s, int)]
    if bad or any(not 0 <= s <= tc.steps for s in keep_steps):
        raise ValueError(f"keep_steps={list(keep_steps)}; pass whole steps in 0..{tc.steps}")
    if tc.seq_len > shape.n_ctx:
        raise ValueError(f"seq_len={tc.seq_len} exceeds n_ctx={shape.n_ctx}; lower seq_len")
    if not train_lines or not held_out_lines:
        raise ValueError("train_lines and held_out_lines must both be non-empty")
    cfg = standin_config(family, len(tokenizer), shape, language)
    enc_train = encode_lines(tokenizer, train_lines)
    held_ids, held_mask = pack(encode_lines(tokenizer, held_out_lines), tc.seq_len, lead_eos=True)
    tr_ids, tr_mask = pack(enc_train, tc.seq_len, lead_eos=True)
    run = _train_loop(cfg, tc, enc_train, (held_ids, held_mask), progress, frozenset(keep_steps))
    tail = [loss for s, loss in run.curve if s > 0.9 * tc.steps] or [run.curve[-1][1]]
    metrics = TrainMetrics(
        label=cfg.name,
        family=family,
        held_out_loss=run.held_out,
        initial_loss=run.initial,
        uniform_loss=math.log(cfg.d_vocab),
        unigram_loss=unigram_loss(
            _targets(tr_ids, tr_mask), _targets(held_ids, held_mask), cfg.d_vocab
        ),
        train_loss=float(np.mean(tail)),
        steps=tc.steps,
        batch=tc.batch,
        seq_len=tc.seq_len,
        wall_s=run.wall_s,
        cpu_s=run.cpu_s,
        steps_per_s=run.steps_per_s,
        n_params=int(sum(np.size(a) for a in jax.tree_util.tree_leaves(run.params))),
        d_vocab=cfg.d_vocab,
        n_train_lines=len(train_lines),
        n_held_out_lines=len(held_out_lines),
        held_out_tokens=int(_targets(held_ids, held_mask).size),
        curve=run.curve,
        held_out_curve=run.held_out_curve,
    )
    if progress:
        _say(metrics.summary())
    return jax.tree_util.tree_map(np.asarray, run.params), metrics, run.kept


def _say(msg: str) -> None:
    if os.environ.get("JAXCIRC_QUIET", "") != "1":
        write_line(msg)  # one write: models train in threads


# ---------------------------------------------------------------------------------------------
# Cache


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _lines_hash(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def entry_key(
    family: str,
    tokenizer,
    train_lines: Sequence[str],
    held_out_lines: Sequence[str],
    train_cfg: TrainConfig,
    shape: StandinShape,
    language: str = "en",
) -> str:
    """Cache key of a stand-in: everything that decides its params and metrics."""
    return _hash(
        {
            "v": TRAINER_VERSION,
            "train": _lines_hash(train_lines),
            "held_out": _lines_hash(held_out_lines),
            "tokenizer": LANGUAGES[language][1].fingerprint(tokenizer),
            "hf_config": standin_hf_config(family, len(tokenizer), shape),
            "label": standin_label(family, shape, language),
            "train_cfg": dataclasses.asdict(train_cfg),
        }
    )


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def _commit(tmp: Path, final: Path) -> None:
    """Rename a complete temporary entry into place (another process may have won the race)."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not (final / "metrics.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _write_entry(final: Path, params, files) -> None:
    """Write params (orbax) and then `files` [(name, () -> text)] in order into `final`,
    atomically: all into a temporary folder beside it, renamed into place last. The last file
    marks a complete entry; texts are made only when written, so a failure part-way leaves none."""
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        ckpt = _checkpointer()
        ckpt.save((tmp / "params").resolve(), params)
        ckpt.wait_until_finished()
        for name, text in files:
            data = text()
            if isinstance(data, bytes):  # a sentencepiece model
                (tmp / name).write_bytes(data)
            else:
                (tmp / name).write_text(data, encoding="utf-8")
        _commit(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save_entry(final: Path, params, metrics: TrainMetrics, hf: dict, tokenizer) -> None:
    """Write params (orbax), config.json, the tokenizer (tokenizer.json, or a Japanese
    stand-in's spiece.model) and metrics.json into `final`, atomically (`_write_entry`);
    metrics.json last: an entry with it is complete."""
    if isinstance(tokenizer, spm.SentencePieceTokenizer):
        tok_file = (spm.FILENAME, lambda: spm.to_bytes(tokenizer))
    else:
        tok_file = (bpe.FILENAME, lambda: bpe.to_json(tokenizer))
    _write_entry(
        final,
        params,
        [
            ("config.json", lambda: json.dumps(hf, indent=1, sort_keys=True)),
            tok_file,
            ("metrics.json", lambda: json.dumps(metrics.to_dict(), indent=1)),
        ],
    )


def _restore_entry(final: Path, marker: str = "metrics.json", parse=TrainMetrics.from_dict):
    """(params, `parse(marker's JSON)`) of a complete cache entry, or None (a broken entry is
    deleted)."""
    if not (final / marker).is_file():
        return None
    try:
        meta = parse(json.loads((final / marker).read_text()))
        params = _checkpointer().restore((final / "params").resolve())
    except Exception:  # noqa: BLE001 - a broken entry is retrained, never trusted
        if jax.process_count() > 1:
            # Across processes orbax's restore is a collective: it fails when another process
            # died, which says nothing of the entry (deleting it made the rerun retrain).
            raise
        shutil.rmtree(final, ignore_errors=True)
        return None
    return params, meta


def _tokenizer_cached(
    cache_dir: Path, lines: Sequence[str], vocab_size: int, progress: bool, language: str = "en"
):
    """The tokenizer trained on `lines` (BPE for "en", sentencepiece for "ja"), cached."""
    mod = LANGUAGES[language][1]
    # The Japanese tokenizer keeps the logit-difference words whole (spm.train_model's
    # `symbols`): a 2k-piece vocabulary splits every anger word (怒り -> 怒 + り), leaving the
    # logit measures no anger word; the published checkpoints' 32k-52k vocabularies have room.
    symbols = _ja_symbols() if language == "ja" else ()
    # The English key is unchanged from before Japanese stand-ins existed: old caches still hit.
    extra = [language, list(symbols)] if language != "en" else []
    key = _hash([_lines_hash(lines), vocab_size, mod.VERSION] + extra)
    path = cache_dir / f"tokenizer-{key}" / mod.FILENAME
    if path.is_file():
        try:
            return mod.load_tokenizer(path)
        except Exception:  # noqa: BLE001 - a broken file is retrained
            path.unlink(missing_ok=True)
    if progress:
        kind = "BPE" if mod is bpe else "sentencepiece"
        _say(f"training the demo {kind} tokenizer (vocab {vocab_size}) on {len(lines)} lines")
    kw = {"symbols": symbols} if symbols else {}  # bpe.train_tokenizer takes no symbols
    tok = mod.train_tokenizer(lines, vocab_size, **kw)
    mod.save_tokenizer(tok, path)
    return tok


def _ja_symbols() -> tuple[str, ...]:
    """The Japanese logit-difference words (lexicon_ja.EMOTION_LOGIT_WORDS_JA), in order."""
    from jaxcirc.data import lexicon_ja

    return tuple(w for ws in lexicon_ja.EMOTION_LOGIT_WORDS_JA.values() for w in ws)


@dataclasses.dataclass(frozen=True)
class DemoCorpus:
    """Which corpus the stand-ins learn and how it is cut: `corpus.build_corpus(n_lines, seed)`,
    split by `corpus.split_corpus(lines, held_out_frac, seed)`; the BPE tokenizer (`vocab_size`
    tokens) is trained on the training lines only, so held-out lines are unseen by it too.
    `language` "ja": the Japanese corpus (`corpus_ja`) and a sentencepiece tokenizer (`spm`;
    vocab_size at least its distinct characters + 259, e.g. DEMO_VOCAB_SIZE_JA)."""

    n_lines: int = 4000
    seed: int = 0
    vocab_size: int = DEMO_VOCAB_SIZE
    held_out_frac: float = 0.1
    language: str = "en"

    def __post_init__(self):
        _check_language(self.language)


def _cached(cache_dir: Path, families, key_of, progress: bool) -> dict:
    """{family: (key, entry folder, (params, metrics) or None when it must be trained)}."""
    entries = {}
    for family in families:
        key = key_of(family)
        final = cache_dir / f"{family}-{key}"
        entries[family] = (key, final, _restore_entry(final))
        if entries[family][2] is not None and progress:
            _say(f"reusing {entries[family][2][1].summary()}")
    return entries


def _train_all(missing: list[str], train, workers: int) -> dict:
    """{family: train(family)} for the `missing` families, in up to `workers` threads."""
    if workers > 1 and len(missing) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(workers, len(missing))) as ex:
            return dict(zip(missing, ex.map(train, missing), strict=True))
    return {family: train(family) for family in missing}


def _corpus(cache_dir, data: DemoCorpus, progress: bool):
    """(cache folder, training lines, held-out lines, tokenizer) of `data`, the folder made."""
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    text = LANGUAGES[data.language][0]
    lines = text.build_corpus(data.n_lines, data.seed)
    train_lines, held_out = text.split_corpus(lines, data.held_out_frac, data.seed)
    return (
        cache_dir,
        train_lines,
        held_out,
        _tokenizer_cached(cache_dir, train_lines, data.vocab_size, progress, data.language),
    )


def load_or_train(
    cache_dir: str | os.PathLike,
    families: Sequence[str] = FAMILIES,
    train_cfg: TrainConfig | None = None,
    data: DemoCorpus = DemoCorpus(),
    shape: StandinShape = StandinShape(),
    progress: bool = True,
    workers: int = 1,
) -> tuple[dict[str, models.LoadedModel], dict[str, TrainMetrics]]:
    """The trained stand-ins of `families`, from `cache_dir` or trained now and cached there.

    The corpus, its split and the tokenizer are `data`'s (`DemoCorpus`). Returns ({label:
    LoadedModel with `tokenizer` set and `source` = label}, {label: TrainMetrics}), in the order
    of `families`.

    Cache layout: `tokenizer-<hash>/tokenizer.json`, and per model `<family>-<key>/` holding
    `params/` (orbax), `metrics.json`, `config.json`, `tokenizer.json`.
    workers: models trained at once, in threads (a 4-layer d_model-128 training step leaves part
    of a second core idle: three models took 13% less wall time in 3 threads, measured). Each
    model's training is the same computation either way (same seeds, same batches).
    """
    for f in families:
        _check_family(f)
    tc = train_cfg if train_cfg is not None else TrainConfig()
    cache_dir, train_lines, held_out, tok = _corpus(cache_dir, data, progress)
    if workers < 1:
        raise ValueError(f"workers={workers}; use a positive number of threads")
    lang = data.language
    entries = _cached(
        cache_dir,
        families,
        lambda family: entry_key(family, tok, train_lines, held_out, tc, shape, lang),
        progress,
    )

    def train(family):
        return train_standin(family, tok, train_lines, held_out, tc, progress, shape, lang)

    missing = [family for family in families if entries[family][2] is None]
    for family, (params, metrics) in _train_all(missing, train, workers).items():
        key, final, _ = entries[family]
        _save_entry(final, params, metrics, standin_hf_config(family, len(tok), shape), tok)
        entries[family] = (key, final, (params, metrics))
    out_models: dict[str, models.LoadedModel] = {}
    out_metrics: dict[str, TrainMetrics] = {}
    for family in families:
        cfg = standin_config(family, len(tok), shape, lang)
        key, _, (params, metrics) = entries[family]
        params = jax.tree_util.tree_map(jnp.asarray, params)
        out_models[cfg.name] = models.LoadedModel(cfg, params, tok, cfg.name, None, key)
        out_metrics[cfg.name] = metrics
    return out_models, out_metrics


# ---------------------------------------------------------------------------------------------
# Kept steps: the stand-in during training


def checkpoint_entry(cache_dir: Path, family: str, key: str, step: int) -> Path:
    """The cache folder of `family`'s params after `step` training steps: the final entry's
    name (`<family>-<key>`, `entry_key`) plus the step."""
    return Path(cache_dir) / f"{family}-{key}-step{step}"


def _check_steps(steps: Sequence[int], last: int) -> list[int]:
    bad = [s for s in steps if isinstance(s, bool) or not isinstance(s, int)]
    if bad or not steps or any(not 0 <= s <= last for s in steps):
        raise ValueError(f"steps={list(steps)}; pass one or more whole steps in 0..{last}")
    return sorted(set(steps))


def _same_params(a, b) -> bool:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


@dataclasses.dataclass(frozen=True)
class _Series:
    """What training one family's kept steps reads (`load_checkpoints` builds it)."""

    cache_dir: Path
    family: str
    key: str  # entry_key of the final model
    tok: object
    train_lines: list
    held_out: list
    tc: TrainConfig
    shape: StandinShape
    progress: bool


def _train_kept(run: _Series, steps) -> dict[int, tuple[dict, dict]]:
    """Train `run.family` once, keeping `steps`; save each kept step's entry, and the final entry
    when it is missing (the same params a run that keeps no step saves). {step: (params, meta)}."""
    family, tc, shape, tok, key = run.family, run.tc, run.shape, run.tok, run.key
    params, metrics, kept = train_standin_kept(
        family, tok, run.train_lines, run.held_out, tc, steps, run.progress, shape
    )
    final = run.cache_dir / f"{family}-{key}"
    hf = standin_hf_config(family, len(tok), shape)
    cached = _restore_entry(final)
    if cached is None:
        _save_entry(final, params, metrics, hf, tok)
    out = {}
    for step, (p, loss) in kept.items():
        meta = {
            "step": step,
            "of_steps": tc.steps,
            "family": family,
            "label": standin_label(family, shape),
            "final_key": key,
            "held_out_loss": loss,  # nats/token on the held-out lines, as TrainMetrics
            # Whether this run's final params equal the cached final model's, bit for bit (None:
            # there was none; the final entry was written from this run).
            "final_params_equal_cached": None
            if cached is None
            else _same_params(params, cached[0]),
        }
        folder = checkpoint_entry(run.cache_dir, family, key, step)
        files = [
            ("config.json", lambda: json.dumps(hf, indent=1, sort_keys=True)),
            ("checkpoint.json", lambda meta=meta: json.dumps(meta, indent=1)),
        ]
        _write_entry(folder, p, files)
        out[step] = (p, meta)
    return out


def load_checkpoints(
    cache_dir: str | os.PathLike,
    family: str,
    steps: Sequence[int],
    train_cfg: TrainConfig | None = None,
    data: DemoCorpus = DemoCorpus(),
    shape: StandinShape = StandinShape(),
    progress: bool = True,
) -> tuple[dict[int, models.LoadedModel], dict[int, dict]]:
    """`family`'s stand-in after each of `steps` training steps (0 = its init, train_cfg.steps =
    the final model of `load_or_train`), from `cache_dir` or trained now, once for every missing
    step, and cached there (`checkpoint_entry`; the final entry too when it is missing).

    Returns ({step: LoadedModel}, {step: the entry's checkpoint.json: step, of_steps, held-out
    loss, final_params_equal_cached}), by step. Every model has the same config (the stand-in's
    label as its name, so one compiled function serves them all), `source` "<label> @ step N",
    `revision` "stepN" and `cache_key` "<key>-stepN".
    """
    _check_family(family)
    tc = train_cfg if train_cfg is not None else TrainConfig()
    steps = _check_steps(steps, tc.steps)
    cache_dir, train_lines, held_out, tok = _corpus(cache_dir, data, progress)
    key = entry_key(family, tok, train_lines, held_out, tc, shape)
    have = {
        s: _restore_entry(checkpoint_entry(cache_dir, family, key, s), "checkpoint.json", dict)
        for s in steps
    }
    missing = [s for s in steps if have[s] is None]
    if missing:
        if progress:
            _say(f"training {standin_label(family, shape)}, keeping steps {missing}")
        run = _Series(cache_dir, family, key, tok, train_lines, held_out, tc, shape, progress)
        have.update(_train_kept(run, missing))
    cfg = standin_config(family, len(tok), shape)
    out = {}
    for s in steps:
        params = jax.tree_util.tree_map(jnp.asarray, have[s][0])
        source = f"{cfg.name} @ step {s}"
        out[s] = models.LoadedModel(cfg, params, tok, source, f"step{s}", f"{key}-step{s}")
    return out, {s: have[s][1] for s in steps}
