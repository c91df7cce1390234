"""KV-cached generation for every family, with the forward pass's `Edits` applied at every step.

    gen = generate(cfg, params, tokens, mask, max_new_tokens=20, edits=Edits(resid_add=v))
    gen.tokens  # [batch, new]

How a run is laid out (slot space is what the attention masks live in, see models.transformer):

- Prompts are LEFT-aligned first (padding moved to the front of each row), so every row's next
  token goes to the same cache slot. A prompt of width P and N new tokens use P + N - 1 slots:
  the last new token is chosen but never fed back.
- `prefill` runs the prompt once (one `run_blocks` over P slots) and chooses nothing; `decode` then
  runs a `lax.scan` over the N - 1 remaining tokens, each a one-slot call of every block, with
  position ids = each row's previous position + 1 (left padding does not shift positions).
- Decoding runs its own one-token block (`_decode_block`: the same params, layer norms, MLP and
  rotary as models.transformer.Block, held to transformers by tests/test_generate.py) for two
  measured reasons (B=280 rows, 41 slots, GPT-2 small, 2-core CPU): (1) its cache is laid out
  [batch, head, slot, d_head], so one query's attention is a batched dot with batch axes leading;
  the prompt pass's [batch, slot, head, d_head] einsum took ~200 ms per layer against ~17 ms;
  (2) each layer's cache is its own array in the loop carry, written one slot in place; a
  stacked [layer, ...] cache sliced inside a layer scan is copied whole every step. Together the
  decode step ran ~20% faster than with the model's Block (21 s vs 26 s for 7 steps).
- `edits` (no position axis) apply at every position, prompt and generated: a vector in
  `resid_add` is what a transformers forward pre-hook adding it to a block's input does.
  `prompt_edits` apply to the prompt only (patching at prompt positions); their position axes are
  in the caller's layout and are aligned with the tokens.
- Greedy (temperature 0) or sampling (temperature, optional top-k) with one key per row:
  `fold_in(key(seed), row_id)`, then `fold_in(row_key, step)`. A row's draws depend on its id
  alone, not on which rows share its batch, so a sweep batched any way equals single runs.
- EOS is recorded (`eos_at`), never acted on: shapes stay static and the tokens after it are what
  the model would have continued with. Text should be cut at `eos_at`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from models.config import ModelConfig
from models.contract import LAYER_EDIT_FIELDS, Edits, Record
from models.transformer import (
    MLP,
    Block,
    Context,
    LayerNorm,
    embed,
    rotary,
    run_blocks,
    unembed,
)
from models.validate import validate_tokens

# Rank of each edit field WITH a position axis (layer and batch axes included); the position axis
# is then axis 2. Fields absent here never have one.
_POS_RANK = {
    "resid_add": 4,
    "resid_patch": 4,
    "resid_patch_mask": 3,
    "attn_out_patch": 4,
    "attn_out_patch_mask": 3,
    "mlp_out_patch": 4,
    "mlp_out_patch_mask": 3,
    "z_patch": 5,
    "z_patch_mask": 4,
    "head_scale": 4,
    "neuron_scale": 4,
}
# Fields that only exist with a position axis: they cannot apply "at every step".
_POSITIONAL_ONLY = tuple(f for f in _POS_RANK if "patch" in f)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How the next token is chosen. Static (hashable): changing it recompiles.

    temperature: 0 = greedy (argmax, first index on ties, as torch); > 0 samples from
      softmax(logits / temperature). top_k: 0 = whole vocabulary, else only the k largest logits.
    min_new_tokens: the EOS token cannot be chosen as any of the first `min_new_tokens` new
      tokens (its logit is set to -inf there, as transformers' `min_new_tokens`); needs the
      generation's `eos_id`. 0 = no constraint.
    """

    temperature: float = 0.0
    top_k: int = 0
    min_new_tokens: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}; use 0 (greedy) or > 0")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}; use 0 (no cut) or a positive count")
        if self.min_new_tokens < 0:
            raise ValueError(f"min_new_tokens={self.min_new_tokens}; use 0 (none) or more")


GREEDY = Sampling()


@struct.dataclass
class Prefilled:
    """A prompt run once, ready to decode from. Rows are left-aligned prompts of width P.

    caches: tuple over layers of (K, V), each [batch, head, slots, d_head] (the decode layout),
      prompt slots filled, the rest zero.
    key_valid: [batch, slots] bool (prompt padding False; generation slots True, the causal mask
      hides them until written). next_pos: [batch] position id of the first new token.
    logits: [batch, d_vocab] at the last prompt token. resid: [batch, d_model] final residual
      (before ln_final) there. resid_pre: [layer, batch, P, d_model] block inputs, or None.
    """

    caches: tuple
    key_valid: jnp.ndarray
    next_pos: jnp.ndarray
    logits: jnp.ndarray
    resid: jnp.ndarray
    resid_pre: jnp.ndarray | None = None


@struct.dataclass
class Generation:
    """What `generate` / `decode` return.

    tokens: [batch, new] int32. eos_at: [batch] int32, index of the first EOS in `tokens`, -1 if
      none (or no eos id given). cols: [batch, new, n_ids] logits of `vocab_ids` at the position
      that chose each token (cols[:, 0] is at the last prompt token), or None. proj: [batch, new,
      k] projection of the final residual (before ln_final) there onto each unit `proj_dirs` row,
      or None. last_logits: [batch, d_vocab] the logits the last token was chosen from, or None.
    """

    tokens: jnp.ndarray
    eos_at: jnp.ndarray
    cols: jnp.ndarray | None = None
    proj: jnp.ndarray | None = None
    last_logits: jnp.ndarray | None = None


# ---------------------------------------------------------------------------------------------
# Layout


def left_align(tokens, mask):
    """Move each row's padding to the front, keeping token order.

    tokens, mask: [batch, pos] (any padding). Returns (tokens, mask, order) with
    `out[b, j] = in[b, order[b, j]]`; apply `order` to position axes of per-prompt edits.
    """
    mask = mask.astype(bool)
    order = jnp.argsort(mask, axis=1, stable=True).astype(jnp.int32)  # False (pad) first
    take = functools.partial(jnp.take_along_axis, axis=1)
    return take(tokens, order), take(mask, order), order


def _align_edits(edits: Edits | None, order) -> Edits | None:
    """Reorder the position axis (axis 2) of positional edit fields by `order` [batch, pos]."""
    if edits is None:
        return None
    new = {}
    for name in LAYER_EDIT_FIELDS:
        a = getattr(edits, name)
        if a is None or a.ndim != _POS_RANK.get(name):
            continue
        b, p = order.shape
        if a.shape[2] != p:
            raise ValueError(f"prompt_edits.{name} has {a.shape[2]} positions; tokens have {p}")
        a = jnp.broadcast_to(a, (a.shape[0], b) + a.shape[2:])
        idx = order.reshape((1, b, p) + (1,) * (a.ndim - 3))
        new[name] = jnp.take_along_axis(a, idx, axis=2)
    return edits.replace(**new)


def _as_pos_rank(a):
    """resid_add [layer, d] / [layer, batch, d] / [layer, batch, pos, d] -> rank 4."""
    if a.ndim == 2:
        return a[:, None, None, :]
    return a[:, :, None, :] if a.ndim == 3 else a


def _merge_edits(every: Edits | None, prompt: Edits | None) -> Edits | None:
    """One Edits for the prefill: `every` and `prompt` together (resid_add summed)."""
    if every is None or prompt is None:
        return prompt if every is None else every
    new = {}
    for name in LAYER_EDIT_FIELDS:
        a, b = getattr(every, name), getattr(prompt, name)
        if a is None or b is None:
            new[name] = b if a is None else a
        elif name == "resid_add":
            new[name] = _as_pos_rank(a) + _as_pos_rank(b)
        else:
            raise ValueError(f"edits and prompt_edits both set {name}; set it in one of them")
    return Edits(**new)


def check_step_edits(edits: Edits | None, n_layers: int):
    """`edits` for every step must have no position axis (the step has one position)."""
    if edits is None:
        return
    for name in LAYER_EDIT_FIELDS:
        a = getattr(edits, name)
        if a is None:
            continue
        if name in _POSITIONAL_ONLY or a.ndim == _POS_RANK.get(name):
            raise ValueError(
                f"edits.{name} has a position axis; pass it as prompt_edits (prompt only) or drop "
                "the position axis to apply it at every step"
            )
        if a.shape[0] != n_layers:
            raise ValueError(f"edits.{name} has leading axis {a.shape[0]}; need {n_layers}")


# ---------------------------------------------------------------------------------------------
# Prefill


def prompt_context(mask) -> Context:
    """Context of a run over left-aligned prompts `mask` [batch, P] (keys = the P prompt slots)."""
    mask = mask.astype(bool)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    return Context(positions, jnp.arange(mask.shape[1], dtype=jnp.int32), mask, None)


def _decode_layout(K, V, slots: int) -> tuple:
    """Stacked prompt caches [layer, batch, P, head, d_head] -> per-layer (K, V) in the decode
    layout [batch, head, slots, d_head] (zeros past the prompt)."""
    p = K.shape[2]

    def one(a):
        a = jnp.swapaxes(a, 1, 2)  # [batch, head, P, d_head]
        return jnp.pad(a, ((0, 0), (0, 0), (0, slots - p), (0, 0)))

    return tuple((one(K[i]), one(V[i])) for i in range(K.shape[0]))


def _key_valid(mask, slots: int):
    b, p = mask.shape
    return jnp.concatenate([mask.astype(bool), jnp.ones((b, slots - p), bool)], axis=1)


def prefill(
    cfg: ModelConfig,
    params,
    tokens,
    mask,
    slots: int,
    edits: Edits | None = None,
    record_resid_pre: bool = False,
) -> Prefilled:
    """Run left-aligned prompts `tokens, mask` [batch, P] once into caches of `slots` slots.

    Only the last prompt slot is unembedded. With `record_resid_pre` the block inputs of every
    prompt position are kept, from which a sweep can restart at any layer (`prefill_from_layer`).
    """
    b, p = tokens.shape
    if slots < p:
        raise ValueError(f"slots={slots} < prompt width {p}; need prompt + new - 1 slots")
    ctx = prompt_context(mask)
    x = embed(cfg, params, tokens, ctx.positions)
    shape = (cfg.n_layers, b, p, cfg.n_heads, cfg.d_head)
    cache = (jnp.zeros(shape, x.dtype), jnp.zeros(shape, x.dtype))
    record = Record(resid_pre=record_resid_pre)
    x, rec, (K, V) = run_blocks(cfg, params["blocks"], x, ctx, edits, record, cache=cache)
    resid = x[:, -1]
    return Prefilled(
        caches=_decode_layout(K, V, slots),
        key_valid=_key_valid(mask, slots),
        next_pos=ctx.positions[:, -1] + 1,
        logits=unembed(cfg, params, resid),
        resid=resid,
        resid_pre=rec.get("resid_pre"),
    )


def prefill_from_layer(
    cfg: ModelConfig,
    params,
    x_start,
    start_layer,
    below: tuple,
    below_rows,
    mask,
    slots: int,
    edits: Edits | None = None,
    layers: tuple | None = None,
    offset: int = 0,
) -> Prefilled:
    """Resume a prompt run at block `start_layer` (traced) from its input `x_start` [batch, P, d].

    The blocks below `start_layer` are not run: row i's caches there are row `below_rows[i]` of
    `below` (per layer (K, V) [n, head, slots, d_head], e.g. an unedited run's). `edits` cover
    all layers; only the blocks run apply theirs. One compiled function serves every start layer:
    each block is a `lax.cond` that either runs it (and lays its cache out for decoding) or
    gathers the rows of `below`, so every layer's cache is written once. layers:
    `split_layers(params)`, if already made. offset: the prompts run are the last P slots of a
    wider left-padded layout whose first `offset` slots are padding in every row (a shorter
    window over short prompts); the caches and `key_valid` returned are in that wider layout.
    """
    b, p, _ = x_start.shape
    ctx = prompt_context(mask)
    fields = {}
    if edits is not None:
        fields = {n: getattr(edits, n) for n in LAYER_EDIT_FIELDS if getattr(edits, n) is not None}
    block = Block(cfg)
    zeros = jnp.zeros((b, p, cfg.n_heads, cfg.d_head), x_start.dtype)

    def pad(a):  # [batch, P, head, d_head] -> [batch, head, slots, d_head]
        return jnp.pad(
            jnp.swapaxes(a, 1, 2), ((0, 0), (0, 0), (offset, slots - offset - p), (0, 0))
        )

    if layers is None:
        layers = split_layers(params)
    x, caches = x_start, []
    for i in range(cfg.n_layers):
        p_l = layers[i]
        e_l = {n: a[i] for n, a in fields.items()}

        def run(x, p_l=p_l, e_l=e_l, i=i):
            y, _, (K, V) = block.apply(
                {"params": p_l}, x, ctx, cfg.windows[i], e_l, Record(), (zeros, zeros)
            )
            return y, (pad(K), pad(V))

        def skip(x, i=i):
            return x, (below[i][0][below_rows], below[i][1][below_rows])

        x, kv = jax.lax.cond(i >= start_layer, run, skip, x)
        caches.append(kv)
    resid = x[:, -1]
    full = jnp.concatenate([jnp.zeros((b, offset), bool), mask.astype(bool)], axis=1)
    return Prefilled(
        caches=tuple(caches),
        key_valid=_key_valid(full, slots),
        next_pos=ctx.positions[:, -1] + 1,
        logits=unembed(cfg, params, resid),
        resid=resid,
    )


# ---------------------------------------------------------------------------------------------
# Decode


def row_keys(seed, row_ids):
    """[batch] typed PRNG keys: `fold_in(key(seed), row_id)` per row."""
    base = jax.random.key(seed)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.asarray(row_ids, jnp.uint32))


def select(logits, keys, step, sampling: Sampling, eos_id: int | None = None):
    """Next token [batch] from logits [batch, d_vocab]; keys [batch] (ignored when greedy).
    step: 0 for the first new token. eos_id: needed when `sampling.min_new_tokens` > 0."""
    if sampling.min_new_tokens:
        if eos_id is None:
            raise ValueError("sampling.min_new_tokens needs eos_id: pass the tokenizer's EOS id")
        banned = (jnp.arange(logits.shape[-1]) == eos_id) & (step < sampling.min_new_tokens)
        logits = jnp.where(banned, -jnp.inf, logits)
    if sampling.temperature == 0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
    scaled = logits.astype(jnp.float32) / sampling.temperature
    if sampling.top_k:
        vals, idx = jax.lax.top_k(scaled, sampling.top_k)
        pick = jax.vmap(jax.random.categorical)(keys, vals)
        return jnp.take_along_axis(idx, pick[:, None], axis=1)[:, 0].astype(jnp.int32)
    return jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)


def split_layers(params) -> tuple:
    """The stacked block params as one dict per layer. Slicing inside a compiled call copies every
    layer's weights on every call (~0.3 s per call for GPT-2 small, measured), so a caller that
    makes many calls slices once and passes these (`layers=` / `weights=` arguments). On one CPU
    device the slices are views of the stacked arrays, not copies (`_layer_of`)."""
    blocks = params["blocks"]
    n = jax.tree_util.tree_leaves(blocks)[0].shape[0]
    return tuple(jax.tree_util.tree_map(lambda a, i=i: _layer_of(a, i), blocks) for i in range(n))


def _layer_of(a, i: int):
    """a[i]; for an array on one CPU device, an array over the same memory (no copy).

    Why: `a[i]` copies, so split layers doubled the block weights in memory (5 GB more for
    Pythia-1.4B in fp32). A layer of a stacked C-order array is contiguous, and jax places a
    numpy array on the CPU without copying it when it can: the result holds the numpy view,
    which holds `a`'s buffer (values are immutable on both sides). Elsewhere (accelerators,
    sharded or traced arrays) it is `a[i]`; if jax copies after all, it is what `a[i]` costs.
    """
    if isinstance(a, jax.core.Tracer) or not isinstance(a, jax.Array):
        return a[i]
    devices = a.devices()
    if len(devices) != 1 or next(iter(devices)).platform != "cpu":
        return a[i]
    host = np.asarray(a)  # numpy reads the CPU buffer in place...
    if host.ctypes.data != a.unsafe_buffer_pointer():  # ...unless it copied: then a view would
        return a[i]  # keep a whole copy alive per layer
    return jax.device_put(host[i], a.sharding) if a.committed else jax.device_put(host[i])


def decode_weights(cfg: ModelConfig, params, layers: tuple | None = None) -> dict:
    """What `decode` multiplies by, made once outside its compiled call: "layers", the per-layer
    block params (`split_layers`; pass the caller's own as `layers` so none is sliced twice),
    and "W_U" [d_model, d_vocab], the unembedding as a contiguous matrix (a tied model's W_E
    transposed once: [rows, d] @ [d, vocab] ran ~5-10% faster than contracting with W_E [vocab,
    d] directly, and the unembedding is about a third of a GPT-2 decode step). Made outside a
    compiled call, so XLA cannot fold the transpose back into the dot; pass it as
    `decode(..., weights=)`.

    Q, K and V are not fused into one matrix: the fused copy was a third of the block weights
    more in memory (1.6 GB for Pythia-1.4B in fp32) for one matmul instead of three, whose
    results are bitwise the same and ~1-15% slower as a QKV projection alone (B=200-280 rows,
    d_model 768-2048, 2-core CPU; the projection is a quarter of a block's matmuls)."""
    w_u = params["embed"]["W_E"].T if cfg.tied_unembed else params["unembed"]["W_U"]
    return {"layers": split_layers(params) if layers is None else layers, "W_U": w_u}


def _logits(cfg: ModelConfig, params, w_u, x):
    """models.transformer.unembed with the unembedding matrix `w_u` [d_model, d_vocab]."""
    untied = cfg.replace(tied_unembed=False)
    p = {
        "embed": params["embed"],
        "ln_final": params["ln_final"],
        "unembed": {**params.get("unembed", {}), "W_U": w_u},
    }
    return unembed(untied, p, x)


def _decode_block(cfg: ModelConfig, w, x, K, V, slot, pos, allowed, edits: dict):
    """One block for one new token per row: `models.transformer.Block` with a cache in the
    decode layout (see module docstring; the equivalence tests hold it to transformers).

    w: one layer's block params (`split_layers`). x: [batch, d_model]; K, V: [batch, head,
    slots, d_head]; slot: where this token's key goes;
    pos: [batch] position ids; allowed: [batch, slots] keys this query may see. edits: this
    layer's slices of resid_add / head_scale / head_mean / neuron_scale / neuron_mean.
    Returns (resid_post [batch, d_model], K, V).
    """
    c = cfg
    b, h, e = x.shape[0], c.n_heads, c.d_head
    if edits.get("resid_add") is not None:
        x = x + jnp.broadcast_to(edits["resid_add"], x.shape).astype(x.dtype)
    ln1 = LayerNorm(c.ln_eps).apply({"params": w["ln1"]}, x)
    a = w["attn"]

    def project(name):  # W_[QKV] [d_model, head, d_head] -> [batch, head, d_head]
        y = ln1 @ a["W_" + name].reshape(-1, h * e)  # the reshape is free in a compiled call
        if c.qkv_bias:
            y = y + a["b_" + name].reshape(h * e)
        return y.reshape(b, h, e)

    q, k, v = project("Q"), project("K"), project("V")
    if c.positional == "rotary":
        q = rotary(q[:, None], pos[:, None], c.rotary_dim, c.rotary_base)[:, 0]
        k = rotary(k[:, None], pos[:, None], c.rotary_dim, c.rotary_base)[:, 0]
    K = jax.lax.dynamic_update_slice(K, k[:, :, None].astype(K.dtype), (0, 0, slot, 0))
    V = jax.lax.dynamic_update_slice(V, v[:, :, None].astype(V.dtype), (0, 0, slot, 0))
    # Batch axes leading on both operands: XLA's CPU dot runs this ~10x faster than the
    # [batch, key, head, d_head] layout of the prompt pass.
    scores = jnp.einsum("bhe,bhke->bhk", q.astype(jnp.float32), K.astype(jnp.float32))
    if c.scale_attn:
        scores = scores * (e**-0.5)
    scores = jnp.where(allowed[:, None, :], scores, jnp.finfo(jnp.float32).min)
    pattern = jax.nn.softmax(scores, axis=-1)
    z = jnp.einsum("bhk,bhke->bhe", pattern.astype(V.dtype), V)
    if edits.get("head_scale") is not None:
        s = jnp.broadcast_to(edits["head_scale"], (b, h))[..., None].astype(z.dtype)
        mean = edits.get("head_mean")
        z = s * z if mean is None else s * z + (1 - s) * mean.astype(z.dtype)
    attn_out = z.reshape(b, h * e) @ a["W_O"].reshape(h * e, -1)  # W_O [head, d_head, d_model]
    if c.out_bias:
        attn_out = attn_out + a["b_O"]
    mlp = MLP(c)
    mlp_edits = {n: a for n, a in edits.items() if n.startswith("neuron_")}
    ln2 = LayerNorm(c.ln_eps)
    if c.parallel_residual:
        m_in = ln2.apply({"params": w["ln2"]}, x)
        mlp_out, _ = mlp.apply({"params": w["mlp"]}, m_in[:, None], mlp_edits, Record())
        return x + attn_out + mlp_out[:, 0], K, V
    mid = x + attn_out
    m_in = ln2.apply({"params": w["ln2"]}, mid)
    mlp_out, _ = mlp.apply({"params": w["mlp"]}, m_in[:, None], mlp_edits, Record())
    return mid + mlp_out[:, 0], K, V


def _readouts(logits, resid, vocab_ids, dirs):
    cols = None if vocab_ids is None else logits[:, vocab_ids]
    proj = None if dirs is None else resid @ dirs.T
    return cols, proj


def _unit_rows(dirs):
    if dirs is None:
        return None
    return dirs / jnp.maximum(jnp.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)


def decode(
    cfg: ModelConfig,
    params,
    state: Prefilled,
    max_new_tokens: int,
    edits: Edits | None = None,
    sampling: Sampling = GREEDY,
    keys=None,
    vocab_ids=None,
    proj_dirs=None,
    eos_id: int | None = None,
    return_logits: bool = False,
    weights: dict | None = None,
) -> Generation:
    """Choose `max_new_tokens` tokens after `state`, feeding each back through every block.

    edits: applied at every step (no position axis; see `check_step_edits`). keys: [batch] typed
    keys (`row_keys`), needed when sampling. vocab_ids [n] / proj_dirs [k, d_model]: readouts per
    step (see `Generation`). weights: `decode_weights(cfg, params)`, made once outside the
    compiled call (else made inside, where XLA may fold its transpose away).
    """
    args = (edits, sampling, keys, vocab_ids, proj_dirs, eos_id, return_logits, weights)
    return decode_with_caches(cfg, params, state, max_new_tokens, *args)[0]


def decode_with_caches(
    cfg: ModelConfig,
    params,
    state: Prefilled,
    max_new_tokens: int,
    edits: Edits | None = None,
    sampling: Sampling = GREEDY,
    keys=None,
    vocab_ids=None,
    proj_dirs=None,
    eos_id: int | None = None,
    return_logits: bool = False,
    weights: dict | None = None,
) -> tuple[Generation, tuple]:
    """`decode`, also returning the caches as its loop leaves them (per layer (K, V) [batch,
    head, slots, d_head], every slot but the last written).

    Why: a compiled caller that donates `state.caches` and returns these gets them back in the
    same buffers, and the loop then updates its input in place. Without an output to alias, XLA
    copies the (read-only) input caches into the loop's carry: two copies of the caches alive
    instead of one. The caller can refill the returned buffers for its next batch.
    """
    check_step_edits(edits, cfg.n_layers)
    if sampling.temperature > 0 and keys is None:
        raise ValueError("sampling needs keys; pass keys=row_keys(seed, row_ids)")
    slots = state.key_valid.shape[1]
    start = slots - (max_new_tokens - 1)  # slot of the first new token
    if start < 1:
        raise ValueError(f"{slots} cache slots cannot hold a prompt and {max_new_tokens} tokens")
    dirs = _unit_rows(proj_dirs)
    fields = {}
    if edits is not None:
        fields = {n: getattr(edits, n) for n in LAYER_EDIT_FIELDS if getattr(edits, n) is not None}
    # Sliced once, outside the loop.
    if weights is None:
        weights = decode_weights(cfg, params)
    layer_w, w_u = weights["layers"], weights["W_U"]
    edits_l = [{n: a[i] for n, a in fields.items()} for i in range(cfg.n_layers)]
    key_slots = jnp.arange(slots)

    tok0 = select(state.logits, keys, 0, sampling, eos_id)
    cols0, proj0 = _readouts(state.logits, state.resid, vocab_ids, dirs)

    def body(carry, t):
        caches, tok = carry
        slot = start + t - 1  # where `tok` goes
        pos = state.next_pos + t - 1
        x = embed(cfg, params, tok[:, None], pos[:, None])[:, 0]
        new = []
        for i, window in enumerate(cfg.windows):
            allowed = (key_slots <= slot) & (key_slots > slot - window)
            allowed = allowed[None, :] & state.key_valid
            x, K, V = _decode_block(cfg, layer_w[i], x, *caches[i], slot, pos, allowed, edits_l[i])
            new.append((K, V))
        logits = _logits(cfg, params, w_u, x)
        nxt = select(logits, keys, t, sampling, eos_id)
        cols, proj = _readouts(logits, x, vocab_ids, dirs)
        return (tuple(new), nxt), (nxt, cols, proj, logits if return_logits else None)

    steps = jnp.arange(1, max_new_tokens)
    (caches, _), (toks, cols, proj, logits) = jax.lax.scan(body, (state.caches, tok0), steps)

    tokens = _join(tok0, toks)
    last_logits = None
    if return_logits:
        last_logits = state.logits if max_new_tokens == 1 else logits[-1]
    eos_at = _first_eos(tokens, eos_id)
    gen = Generation(tokens, eos_at, _join(cols0, cols), _join(proj0, proj), last_logits)
    return gen, caches


def _join(first, rest):
    """first [batch, ...] (None: None), rest [new-1, batch, ...] -> [batch, new, ...]."""
    if first is None:
        return None
    return jnp.concatenate([first[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)


def _first_eos(tokens, eos_id: int | None):
    """[batch] int32 index of the first `eos_id` in tokens [batch, new]; -1 if none or no id."""
    if eos_id is None:
        return jnp.full(tokens.shape[:1], -1, jnp.int32)
    hit = tokens == eos_id
    return jnp.where(hit.any(1), jnp.argmax(hit, axis=1), -1).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# One call


@functools.partial(
    jax.jit,
    static_argnames=("cfg", "max_new_tokens", "sampling", "eos_id", "return_logits"),
)
def _generate(
    cfg,
    params,
    tokens,
    mask,
    max_new_tokens,
    edits,
    prompt_edits,
    sampling,
    seed,
    row_ids,
    vocab_ids,
    proj_dirs,
    eos_id,
    return_logits,
):
    tokens, mask, order = left_align(tokens, mask)
    prompt_edits = _align_edits(prompt_edits, order)
    slots = tokens.shape[1] + max_new_tokens - 1
    state = prefill(cfg, params, tokens, mask, slots, _merge_edits(edits, prompt_edits))
    keys = row_keys(seed, row_ids)
    return decode(
        cfg,
        params,
        state,
        max_new_tokens,
        edits,
        sampling,
        keys,
        vocab_ids,
        proj_dirs,
        eos_id,
        return_logits,
    )


def generate(
    cfg: ModelConfig,
    params,
    tokens,
    mask=None,
    max_new_tokens: int = 20,
    edits: Edits | None = None,
    prompt_edits: Edits | None = None,
    sampling: Sampling = GREEDY,
    seed: int = 0,
    row_ids=None,
    vocab_ids=None,
    proj_dirs=None,
    eos_id: int | None = None,
    return_logits: bool = False,
) -> Generation:
    """Generate `max_new_tokens` tokens after each prompt in one jit-compiled call.

    tokens: [batch, P] int (mask [batch, P], 1 = real token; left or right padding); edits:
    applied at every position, prompt and generated (fields without a position axis, e.g.
    `resid_add` [layer, d_model] or [layer, batch, d_model]); prompt_edits: applied to the prompt
    only, position axes in `tokens`' layout. sampling: `GREEDY` or `Sampling(temperature, top_k)`;
    seed and row_ids ([batch] ints, default 0..batch-1) make each row's draws. Returns a
    `Generation` (tokens [batch, new], eos_at, optional readouts).
    """
    validate_tokens(cfg, tokens)  # on the ids as given: a cast would hide floats and wraps
    tokens = jnp.asarray(tokens, jnp.int32)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}; ask for at least 1 token")
    if mask is None:
        mask = jnp.ones(tokens.shape, bool)
    mask = jnp.asarray(mask, bool)
    if mask.shape != tokens.shape:
        raise ValueError(f"mask shape {mask.shape} differs from tokens shape {tokens.shape}")
    host_mask, host_ids = np.asarray(mask), np.asarray(tokens)
    if not host_mask.any(axis=1).all():
        raise ValueError("a prompt row has no real tokens (mask all 0); drop it")
    if host_ids.size and (host_ids.min() < 0 or host_ids.max() >= cfg.d_vocab):
        raise ValueError(
            f"token ids span [{host_ids.min()}, {host_ids.max()}]; d_vocab is {cfg.d_vocab}"
        )
    if cfg.positional == "learned" and tokens.shape[1] + max_new_tokens - 1 > cfg.n_ctx:
        raise ValueError(
            f"prompt width {tokens.shape[1]} + {max_new_tokens} new tokens exceed n_ctx="
            f"{cfg.n_ctx}; shorten the prompt or ask for fewer tokens"
        )
    check_step_edits(edits, cfg.n_layers)
    if row_ids is None:
        row_ids = jnp.arange(tokens.shape[0])
    return _generate(
        cfg,
        params,
        tokens,
        mask,
        max_new_tokens,
        edits,
        prompt_edits,
        sampling,
        seed,
        jnp.asarray(row_ids),
        None if vocab_ids is None else jnp.asarray(vocab_ids, jnp.int32),
        None if proj_dirs is None else jnp.asarray(proj_dirs),
        eos_id,
        return_logits,
    )
