"""Edits on sets of heads, and their effect on generated text.

- `set_edits`: z -> z_ref on every head of a set (`Edits.head_scale` 0 with `head_mean`);
  `identity_edits`: the same pytree changing nothing; `control_sets`: random sets of the same
  size from the heads outside the set.
- `edit_effect`: generate with and without a set's edit (the same sampling draws: paired) and
  score the continuations; beside it the same edit on the control sets.

Generation is `models.generate` (KV-cached, one compiled loop) with the head edits held at every
position; scores come from a `scorer(texts) -> {name: [n]}` such as
`jaxcirc.core.scoring.score_texts`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxcirc.core.stats import paired_bootstrap_diff
from models import Edits, ModelConfig, Sampling, generate

Head = tuple[int, int]
Scorer = Callable[[list[str]], dict[str, np.ndarray]]


def set_edits(cfg: ModelConfig, head_set: Sequence[Head], z_ref) -> Edits:
    """z -> z_ref (`[layer, head, d_head]`) on every head of the set."""
    s = np.ones((cfg.n_layers, cfg.n_heads), np.float32)
    for a, b in head_set:
        if not (0 <= a < cfg.n_layers and 0 <= b < cfg.n_heads):
            raise ValueError(f"head ({a}, {b}) is outside {cfg.n_layers} x {cfg.n_heads} heads")
        s[a, b] = 0.0
    return Edits(head_scale=jnp.asarray(s), head_mean=jnp.asarray(z_ref))


def control_sets(cfg: ModelConfig, head_set: Sequence[Head], n: int, seed: int):
    """`n` random head sets of the same size, drawn from the heads outside `head_set`."""
    rng = np.random.default_rng(seed)
    pool = [
        (a, b)
        for a in range(cfg.n_layers)
        for b in range(cfg.n_heads)
        if (a, b) not in set(head_set)
    ]
    return [
        tuple(pool[i] for i in rng.choice(len(pool), len(head_set), replace=False))
        for _ in range(n)
    ]


def identity_edits(cfg: ModelConfig) -> Edits:
    """Edits that change nothing (every head kept: z -> 1 * z + 0 * 0) with the pytree and
    shapes of `set_edits`, so clean and edited runs share one compiled generation loop (one
    compile instead of two per model) and the paired runs go through the same arithmetic."""
    return Edits(
        head_scale=jnp.ones((cfg.n_layers, cfg.n_heads), jnp.float32),
        head_mean=jnp.zeros((cfg.n_layers, cfg.n_heads, cfg.d_head), jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How continuations are generated and compared.

    n_new: tokens per continuation; temperature: 0 = greedy, else sampling seeded per row by
    `seed` (the same draws for a clean and an edited run: paired comparisons); min_new_tokens:
    EOS held back for that many tokens; n_control: random head sets per edit (the control,
    drawn with `seed`); n_samples: continuations kept per condition.
    """

    n_new: int
    temperature: float = 0.0
    seed: int = 0
    min_new_tokens: int = 0
    n_control: int = 0
    n_samples: int = 0


def generate_ids(cfg: ModelConfig, params, tokens, mask, edits: Edits | None, gen):
    """Continue each prompt by `gen.n_new` tokens (`GenerationSettings`): `[batch, n_new]`
    int32, with `edits` held at every position, prompt and generated (so no position axis).
    KV-cached, one compiled call (`models.generate`)."""
    sampling = Sampling(float(gen.temperature), 0, int(gen.min_new_tokens))
    eos_id = None
    if gen.min_new_tokens:
        if cfg.eos_token_id is None:
            raise ValueError(
                f"heads_generation.min_new_tokens={gen.min_new_tokens}: the model's config names "
                "no EOS token to hold back; set min_new_tokens=0"
            )
        eos_id = int(cfg.eos_token_id)
    out = generate(
        cfg,
        params,
        tokens,
        mask,
        gen.n_new,
        edits=edits,
        sampling=sampling,
        seed=int(gen.seed),
        eos_id=eos_id,
    )
    return out.tokens


def decode(model, new_ids) -> list[str]:
    """Continuations as text, each cut at the first EOS."""
    eos = model.config.eos_token_id
    texts = []
    for row in np.asarray(new_ids):
        row = list(row)
        if eos is not None and eos in row:
            row = row[: row.index(eos)]
        texts.append(model.tokenizer.decode(row))
    return texts


def generate_scores(model, toks, edits: Edits | None, gen: GenerationSettings, scorer: Scorer):
    """(continuations, scores) of `toks` (`models.Tokens`) generated under `edits` (None: the
    clean run, through `identity_edits`)."""
    if edits is None:
        edits = identity_edits(model.config)
    ids = generate_ids(
        model.config, model.params, jnp.asarray(toks.ids), jnp.asarray(toks.mask), edits, gen
    )
    texts = decode(model, ids)
    return texts, scorer(texts)


def edit_effect(model, toks, z_ref, head_set, gen: GenerationSettings, scorer: Scorer, clean=None):
    """Per score name: delta per prompt `[n]` (edited - clean), its control deltas
    `[n_control, n]`, and sample texts. The same sampling draws for clean and edited runs.
    clean: `(texts, scores)` of the unedited run of `toks`, if already generated."""
    if clean is None:
        clean = generate_scores(model, toks, None, gen, scorer)
    clean_texts, clean = clean
    texts, edited = generate_scores(
        model, toks, set_edits(model.config, head_set, z_ref), gen, scorer
    )
    ctrl = {k: [] for k in clean}
    for cs in control_sets(model.config, head_set, gen.n_control, gen.seed):
        _, c = generate_scores(model, toks, set_edits(model.config, cs, z_ref), gen, scorer)
        for k in clean:
            ctrl[k].append(c[k] - clean[k])
    deltas = {k: edited[k] - clean[k] for k in clean}
    samples = [
        {"prompt": p, "clean": a, "edited": b}
        for p, a, b in zip(toks.texts, clean_texts, texts, strict=True)
    ][: gen.n_samples]
    return deltas, {k: np.stack(v) for k, v in ctrl.items()}, samples


def delta_ci(values, n_boot: int, seed: int, level: float) -> tuple[float, float, float]:
    """(mean, lo, hi) of per-prompt deltas `[n]`: a paired bootstrap CI against 0."""
    e = paired_bootstrap_diff(values, np.zeros_like(values), n_boot=n_boot, seed=seed, level=level)
    return float(e.value), float(e.lo), float(e.hi)


def head_sets_from_screen(screen_rows, emotions, top_k) -> dict[str, dict[str, tuple[Head, ...]]]:
    """Per emotion: {"top1": ((l, h),), "top2": ..., ...} from the exact/projection/mean screen
    (`jaxcirc.core.heads.emotion_scores` rows)."""
    out = {}
    for e in emotions:
        rows = [
            r
            for r in screen_rows
            if (r["method"], r["measure"], r["ablation"], r["emotion"])
            == ("exact", "projection", "mean", e)
        ]
        rows.sort(key=lambda r: -r["score"])
        best = [(r["layer"], r["head"]) for r in rows[:top_k]]
        out[e] = {f"top{k}": tuple(best[:k]) for k in range(1, len(best) + 1)}
    return out
