"""Edits on sets of heads, and their effect on generated text.

- `set_edits`: z -> z_ref on every head of a set (`Edits.head_scale` 0 with `head_mean`);
  `identity_edits`: the same pytree changing nothing; `control_sets`: random sets of a size
  from the heads outside the ones excluded.
- `generate_sets`: the continuations of the same prompts under several head sets (the empty
  set = the clean run) in as few compiled calls as memory allows: sets x prompts are rows of
  one batch, each row with its set's `head_scale`, and each row's sampling draws keyed by its
  prompt (`row_ids`), so a prompt's clean, edited and control runs share their draws (paired).
- `edit_effect`: one set's deltas (edited - clean) beside the same edit on control sets.
- `control_summary`: a set's mean delta against its control sets: a two-level bootstrap
  (prompts and control sets resampled) for the control mean and the set-minus-control
  difference, the set-to-set band of control means, and p against the control sets.

Generation is `models.generate` (KV-cached, one compiled loop) with the head edits held at every
position; scores come from a `scorer(texts) -> {name: [n]}` such as
`jaxcirc.core.scoring.score_texts`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from jaxcirc.core.stats import paired_bootstrap_diff, permutation_pvalue
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


def control_sets(cfg: ModelConfig, size: int, n: int, seed, exclude: Sequence[Head] = ()):
    """`n` distinct random sets of `size` heads from the heads outside `exclude` (all such sets,
    in a random order, when there are at most n; seed: anything numpy's default_rng takes)."""
    out_of = set(exclude)
    pool = [(a, b) for a in range(cfg.n_layers) for b in range(cfg.n_heads) if (a, b) not in out_of]
    if len(pool) < size:
        raise ValueError(
            f"{len(pool)} heads left outside the {len(out_of)} excluded; cannot draw control "
            f"sets of {size}"
        )
    rng = np.random.default_rng(seed)
    if math.comb(len(pool), size) <= n:
        every = list(itertools.combinations(pool, size))
        return [every[i] for i in rng.permutation(len(every))]
    out: dict[frozenset, tuple[Head, ...]] = {}
    while len(out) < n:
        pick = tuple(pool[i] for i in rng.choice(len(pool), size, replace=False))
        out.setdefault(frozenset(pick), pick)
    return list(out.values())


def split_halves(n: int, seed) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of n prompts into two disjoint halves (search / selection, held-out),
    each sorted; the held-out half gets the extra prompt when n is odd. seed: anything numpy's
    default_rng takes."""
    if n < 4:
        raise ValueError(f"{n} prompts cannot be split into a search and a held-out half of >= 2")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2 :])


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
    drawn with `seed`); n_samples: continuations kept per condition; batch_rows: at most this
    many rows (sets x prompts) per generation call (at least one set's prompts).
    """

    n_new: int
    temperature: float = 0.0
    seed: int = 0
    min_new_tokens: int = 0
    n_control: int = 0
    n_samples: int = 0
    batch_rows: int = 512


def generate_ids(cfg: ModelConfig, params, tokens, mask, edits: Edits | None, gen, row_ids=None):
    """Continue each prompt by `gen.n_new` tokens (`GenerationSettings`): `[batch, n_new]`
    int32, with `edits` held at every position, prompt and generated (so no position axis).
    row_ids `[batch]`: each row's sampling key (default 0..batch-1). KV-cached, one compiled
    call (`models.generate`)."""
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
        row_ids=row_ids,
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


def _set_scales(cfg: ModelConfig, sets: Sequence[Sequence[Head]], n: int):
    """Per-row head scales `[layer, len(sets) * n, head]`: set-major rows, 0 on each set's heads."""
    s = np.ones((len(sets), cfg.n_layers, cfg.n_heads), np.float32)
    for i, head_set in enumerate(sets):
        for a, b in head_set:
            if not (0 <= a < cfg.n_layers and 0 <= b < cfg.n_heads):
                raise ValueError(f"head ({a}, {b}) is outside {cfg.n_layers} x {cfg.n_heads}")
            s[i, a, b] = 0.0
    return np.repeat(np.moveaxis(s, 0, 1), n, axis=1)


def generate_sets(model, toks, sets: Sequence[Sequence[Head]], z_ref, gen: GenerationSettings):
    """Continuations of `toks` (`models.Tokens`, n prompts) under each head set (z -> z_ref
    `[layer, head, d_head]`; the empty set is the clean run): texts `[len(sets)][n]`.

    Sets x prompts are the rows of a batch, `max(1, gen.batch_rows // n)` sets per call, the
    last call padded with empty sets so every call has one compiled shape; every row's draws
    are keyed by its prompt (row_ids), so all sets see the same draws."""
    cfg, n = model.config, len(toks.texts)
    per_call = max(1, min(len(sets), gen.batch_rows // n))
    ids, mask = np.tile(toks.ids, (per_call, 1)), np.tile(toks.mask, (per_call, 1))
    row_ids = np.tile(np.arange(n), per_call)
    texts = []
    for start in range(0, len(sets), per_call):
        part = list(sets[start : start + per_call])
        part += [()] * (per_call - len(part))
        edits = Edits(head_scale=jnp.asarray(_set_scales(cfg, part, n)), head_mean=z_ref)
        out = generate_ids(cfg, model.params, ids, mask, edits, gen, row_ids)
        flat = decode(model, out)
        texts += [flat[i * n : (i + 1) * n] for i in range(len(part))]
    return texts[: len(sets)]


@dataclasses.dataclass(frozen=True)
class SetRun:
    """One prompt set under several head sets (`score_sets`): texts[i] and scores[name][i]
    `[n]` of sets[i]; sets[0] is the empty set (the clean run)."""

    sets: tuple[tuple[Head, ...], ...]
    texts: list[list[str]]
    scores: dict[str, np.ndarray]

    def deltas(self, head_set) -> dict[str, np.ndarray]:
        """score(edited) - score(clean) per prompt `[n]`, per score name."""
        i = self.sets.index(tuple(head_set))
        return {k: v[i] - v[0] for k, v in self.scores.items()}


def score_sets(model, toks, sets, z_ref, gen: GenerationSettings, scorer: Scorer) -> SetRun:
    """The clean run and every head set of `sets` on `toks`, generated (`generate_sets`) and
    scored: a `SetRun` whose scores are `[1 + len(sets), n]` per name."""
    sets = ((),) + tuple(tuple((int(a), int(b)) for a, b in hs) for hs in sets)
    texts = generate_sets(model, toks, sets, z_ref, gen)
    per = [scorer(t) for t in texts]
    return SetRun(sets, texts, {k: np.stack([p[k] for p in per]) for k in per[0]})


def edit_effect(model, toks, z_ref, head_set, gen: GenerationSettings, scorer: Scorer):
    """Per score name: delta per prompt `[n]` (edited - clean), its control deltas
    `[n_control, n]` (random sets of the same size from the other heads), and sample texts.
    The clean, edited and control runs are generated together with the same sampling draws."""
    head_set = tuple(head_set)
    ctrl = control_sets(model.config, len(head_set), gen.n_control, gen.seed, head_set)
    run = score_sets(model, toks, [head_set] + ctrl, z_ref, gen, scorer)
    c = np.stack([list(run.deltas(cs).values()) for cs in ctrl]) if ctrl else None
    names = list(run.scores)
    controls = {
        k: c[:, j] if c is not None else np.zeros((0, len(toks.texts))) for j, k in enumerate(names)
    }
    samples = [
        {"prompt": p, "clean": a, "edited": b}
        for p, a, b in zip(toks.texts, run.texts[0], run.texts[1], strict=True)
    ][: gen.n_samples]
    return run.deltas(head_set), controls, samples


def delta_ci(values, n_boot: int, seed: int, level: float) -> tuple[float, float, float]:
    """(mean, lo, hi) of per-prompt deltas `[n]`: a paired bootstrap CI against 0."""
    e = paired_bootstrap_diff(values, np.zeros_like(values), n_boot=n_boot, seed=seed, level=level)
    return float(e.value), float(e.lo), float(e.hi)


def control_summary(delta, controls, n_boot: int, seed: int, level: float) -> dict:
    """A set's per-prompt deltas `[n]` against its control sets' `[C, n]` (same prompts).

    Is the set unusual among sets of its size? control_set_lo / control_set_hi: the central
    `level` band of the C per-set mean deltas (where one random set lands, prompt noise
    included: the same prompts); p_vs_control = (1 + #{|set mean| >= |delta mean|}) / (1 + C),
    two-sided, exact when the set is exchangeable with the control sets (its smallest value is
    1 / (1 + C): p_floor, so with 1 / (1 + C) > 1 - level no set can be beyond control);
    beyond_control: p_vs_control <= 1 - level. These are the verdict fields.

    What the average random set does: control_mean with a two-level bootstrap CI (control_lo,
    control_hi; each resample draws the n prompts and the C control sets with replacement), so
    the CI carries the set-to-set variance as well as the prompts'. diff = delta mean -
    control mean, with the same two-level CI (diff_lo, diff_hi; the set's deltas share the
    prompt draw): THIS set's difference from the average random set. It is not a test that the
    set is unusual: every head differs from the average somewhat, so with enough prompts the
    CI leaves 0 for a typical head too (tests/core/test_head_generation.py shows it).
    n_control_sets = C; with C = 0 every control field is None.
    """
    d = np.asarray(delta, np.float64)
    c = np.asarray(controls, np.float64).reshape(-1, d.size)
    keys = ("control_mean", "control_lo", "control_hi", "diff", "diff_lo", "diff_hi")
    keys += ("control_set_lo", "control_set_hi", "p_vs_control", "beyond_control")
    if c.shape[0] == 0:
        return {**dict.fromkeys(keys), "p_floor": None, "n_control_sets": 0}
    rng = np.random.default_rng(seed)
    C, n = c.shape
    pw = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) / n  # [n_boot, n] prompt weights
    sw = rng.multinomial(C, np.full(C, 1.0 / C), size=n_boot) / C  # [n_boot, C] set weights
    ctrl_b = ((sw @ c) * pw).sum(axis=1)  # [n_boot]
    diff_b = pw @ d - ctrl_b
    alpha = 100.0 * (1.0 - level) / 2.0
    q = lambda x: np.percentile(x, [alpha, 100.0 - alpha])  # noqa: E731
    set_means = c.mean(axis=1)
    values = (c.mean(), *q(ctrl_b), d.mean() - c.mean(), *q(diff_b), *q(set_means))
    p = float(permutation_pvalue(abs(d.mean()), np.abs(set_means), "greater"))
    out = {k: float(v) for k, v in zip(keys[:-2], values, strict=True)}
    out.update(p_vs_control=p, beyond_control=bool(p <= 1.0 - level), p_floor=1.0 / (1 + C))
    return {**out, "n_control_sets": int(C)}


def top_sets(values, sel, top_k: int) -> dict[str, tuple[Head, ...]]:
    """{"top1": ((l, h),), ..., f"top{top_k}": ...}: the heads of largest mean score over the
    prompts `sel` (indices or mask on the last axis) of values `[layer, head, n_prompts]` (a
    screen's per-prompt support scores)."""
    mean = np.asarray(values)[..., sel].mean(axis=-1)
    order = np.argsort(-mean, axis=None, kind="stable")[:top_k]
    best = [tuple(int(x) for x in np.unravel_index(f, mean.shape)) for f in order]
    return {f"top{k}": tuple(best[:k]) for k in range(1, len(best) + 1)}
