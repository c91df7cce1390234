"""Head screening speed: jaxcirc's exact sweep and attribution screen vs per-head loops.

    python -m benchmarks.bench_heads                 # full-size random GPT-2, 32 x 12 tokens
    python -m benchmarks.bench_heads --loop_heads 24 # time the loops on 24 heads, scale to 144

One run, one machine, side by side: the matmul peaks (XLA and torch) measured first, then

- jaxcirc exact zero-ablation sweep of all 144 heads (`heads.exact_scores`), for each row
  strategy (fold / vmap / chunked lax.map), compile time reported apart;
- jaxcirc attribution screen (`heads.attribution_scores`: one forward, one backward) and direct
  attribution (`heads.direct_scores`);
- jaxcirc naive loop: one jitted full forward per head with `Edits(head_scale=...)`;
- TransformerLens 4.x loop: `TransformerBridge` over the same random GPT-2, a hook on
  `blocks.{l}.attn.hook_z` zeroing head h, one `run_with_hooks` per head (what its users write);
- plain transformers loop: a forward pre-hook on `c_proj` zeroing the head's slice.

Every loop's result for one head is checked against the sweep's (logits at the last token), and
the Spearman rank correlation between exact and attribution scores is printed beside the times
(measures: projection onto a random unit direction and a logit difference of random word ids,
the model being random: there is no emotion to find, only agreement between methods).
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# Runnable as a file (python benchmarks/bench_x.py) as well as a module (-m benchmarks.bench_x).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import common
from jaxcirc.core import heads
from jaxcirc.core.measures import WordIds
from models import families
from models.api import LoadedModel

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "gpt2", "published shape of the random model")
flags.DEFINE_integer("batch", 32, "prompts")
flags.DEFINE_integer("seq", 12, "tokens per prompt")
flags.DEFINE_integer("loop_heads", 144, "heads timed in each per-head loop (scaled to all)")
flags.DEFINE_list("strategies", list(heads.STRATEGIES), "row strategies of the exact sweep")
flags.DEFINE_integer("chunk", 4, "rows per chunk for the map strategy")
flags.DEFINE_integer("repeats", 2, "timed repeats of each jaxcirc call (best is reported)")
flags.DEFINE_bool("transformer_lens", True, "time the TransformerLens loop")
flags.DEFINE_bool("jax_loop", True, "time the naive jaxcirc per-head loop")


def _hf_and_ours(name: str, seed: int = 0):
    import torch
    import transformers

    hf_cfg = dict(families.published_hf_config(name))
    model_type = hf_cfg.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **hf_cfg)
    torch.manual_seed(seed)
    hf = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    full = {"model_type": model_type, **hf_cfg}
    family = families.family_for(full)
    cfg = family.config_from_hf(full, name=f"random {name}")
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    params = jax.tree_util.tree_map(jnp.asarray, family.convert(state, cfg))
    return hf, LoadedModel(cfg, params)


def _tokenizer_dir():
    """Any fast tokenizer, saved and reloaded (TransformerBridge wants one; it is not used)."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tm
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(tm.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<unk>", eos_token="<unk>"
    )
    d = tempfile.mkdtemp(prefix="bench_heads_tok_")
    fast.save_pretrained(d)
    return PreTrainedTokenizerFast.from_pretrained(d)


def _best(fn, repeats):
    out = None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times), out


def _loop(run_one, n_heads, loop_heads):
    """Time run_one(layer, head) over the first `loop_heads` heads (spread over layers)."""
    picks = np.linspace(0, n_heads - 1, loop_heads).round().astype(int)
    t = time.perf_counter()
    for i in picks:
        run_one(int(i))
    dt = time.perf_counter() - t
    return dt * n_heads / loop_heads, dt


def main(argv):
    del argv
    import torch

    print(
        f"machine: {common.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    peak_x = common.matmul_peak_gflops()
    peak_t = common.torch_matmul_peak_gflops()
    print(
        f"matmul peak fp32 2048^3: XLA {peak_x:.0f} GFLOP/s, torch {peak_t:.0f} GFLOP/s",
        flush=True,
    )

    hf, model = _hf_and_ours(FLAGS.model)
    cfg, params = model.config, model.params
    L, H, E = cfg.n_layers, cfg.n_heads, cfg.d_head
    n_heads = L * H
    rng = np.random.default_rng(0)
    ids_np = rng.integers(0, cfg.d_vocab, (FLAGS.batch, FLAGS.seq)).astype(np.int32)
    ids, mask = jnp.asarray(ids_np), jnp.ones(ids_np.shape, bool)
    ids_t = torch.as_tensor(ids_np, dtype=torch.long)
    d = rng.standard_normal((L + 1, cfg.d_model)).astype(np.float32)
    words = rng.choice(cfg.d_vocab, 6, replace=False)
    wids = WordIds(
        {"a": tuple(int(w) for w in words[:3]), "b": tuple(int(w) for w in words[3:])}, {}
    )
    readout = heads.make_readout(cfg, {"a": d, "b": -d}, wids, n_random=0)
    emo = jnp.zeros(FLAGS.batch, jnp.int32)
    z_zero = jnp.zeros((1, L, H, E))
    print(
        f"model: random {FLAGS.model} ({L} layers x {H} heads, d_model {cfg.d_model}); "
        f"{FLAGS.batch} prompts x {FLAGS.seq} tokens; zero-ablation of each of {n_heads} heads"
    )
    rows = _Rows()

    # ---- jaxcirc exact sweep, per strategy
    exact = None
    for strategy in FLAGS.strategies:
        t = time.perf_counter()
        how = heads.RowStrategy(strategy, FLAGS.chunk)
        out = jax.block_until_ready(
            heads.exact_scores(cfg, params, ids, mask, z_zero, readout, emo, how)
        )
        first = time.perf_counter() - t
        best, out = _best(
            lambda r=how: heads.exact_scores(cfg, params, ids, mask, z_zero, readout, emo, r),
            FLAGS.repeats,
        )
        exact = exact if exact is not None else out
        np.testing.assert_allclose(np.asarray(out[0]), np.asarray(exact[0]), atol=1e-3)
        rows.append((f"jaxcirc exact sweep, {strategy}", best, f"first call {first:.1f} s"))

    # ---- jaxcirc attribution and direct
    t = time.perf_counter()
    jax.block_until_ready(heads.attribution_scores(cfg, params, ids, mask, z_zero[0], readout, emo))
    first = time.perf_counter() - t
    t_attr, attr = _best(
        lambda: heads.attribution_scores(cfg, params, ids, mask, z_zero[0], readout, emo),
        FLAGS.repeats,
    )
    rows.append(("jaxcirc attribution screen (1 fwd + 1 bwd)", t_attr, f"first call {first:.1f} s"))
    t = time.perf_counter()
    jax.block_until_ready(heads.direct_scores(cfg, params, ids, mask, z_zero, readout, emo))
    first = time.perf_counter() - t
    t_dir, direct = _best(
        lambda: heads.direct_scores(cfg, params, ids, mask, z_zero, readout, emo), FLAGS.repeats
    )
    rows.append(("jaxcirc direct attribution", t_dir, f"first call {first:.1f} s"))

    # The swept result for checking the loops: logits at the last token with head i removed.
    how = heads.RowStrategy(FLAGS.strategies[0])
    swept, _ = heads.head_sweep(cfg, params, ids, mask, z_zero, None, None, how)
    check_i = n_heads // 2 + 1
    want = np.asarray(model_unembed_last(cfg, params, swept[check_i, 0]))

    # ---- naive jaxcirc loop
    if FLAGS.jax_loop:
        z0 = z_zero[0]
        heads.single_removal(cfg, params, ids, mask, 0, 0, z0).block_until_ready()
        total, raw = _loop(
            lambda i: heads.single_removal(
                cfg, params, ids, mask, i // H, i % H, z0
            ).block_until_ready(),
            n_heads,
            FLAGS.loop_heads,
        )
        rows.append(("jaxcirc loop of jitted forwards (Edits.head_scale)", total, _note(raw)))

    # ---- plain transformers loop
    def hf_one(i, keep=None):
        layer, head = divmod(i, H)

        def zero(module, args):
            x = args[0].clone()
            x[..., head * E : (head + 1) * E] = 0
            return (x,) + args[1:]

        handle = hf.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero)
        try:
            with torch.no_grad():
                logits = hf(input_ids=ids_t).logits[:, -1]
        finally:
            handle.remove()
        if keep is not None:
            keep.append(logits.numpy())

    hf_one(0)
    total, raw = _loop(hf_one, n_heads, FLAGS.loop_heads)
    rows.append(("transformers loop (forward pre-hook per head)", total, _note(raw)))
    got = []
    hf_one(check_i, got)
    np.testing.assert_allclose(got[0], want, atol=2e-3)

    # ---- TransformerLens loop
    t_tl = None
    if FLAGS.transformer_lens:
        from transformer_lens.model_bridge import TransformerBridge

        bridge = TransformerBridge.boot_transformers(
            FLAGS.model, hf_model=hf, tokenizer=_tokenizer_dir()
        )

        def tl_one(i, keep=None):
            layer, head = divmod(i, H)

            def zero(z, hook):
                z[:, :, head] = 0.0
                return z

            with torch.no_grad():
                logits = bridge.run_with_hooks(
                    ids_t, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)]
                )[:, -1]
            if keep is not None:
                keep.append(logits.numpy())

        tl_one(0)
        t_tl, raw = _loop(tl_one, n_heads, FLAGS.loop_heads)
        rows.append(("TransformerLens 4.x loop (hook_z per head)", t_tl, _note(raw)))
        got = []
        tl_one(check_i, got)
        np.testing.assert_allclose(got[0], want, atol=2e-3)

    # ---- report
    t_exact = min(r[1] for r in rows if r[0].startswith("jaxcirc exact"))
    t_hf = next(r[1] for r in rows if r[0].startswith("transformers"))
    print()
    print(f"{'what':58s} {'seconds':>9s} {'x TL':>7s} {'x HF':>7s}  note")
    for name, sec, note in rows:
        x_tl = f"{t_tl / sec:7.1f}" if t_tl else "      -"
        print(f"{name:58s} {sec:9.3f} {x_tl} {t_hf / sec:7.1f}  {note}")
    print()
    for j, measure in enumerate(("projection", "logit_diff")):
        # Per-head scores: the mean over prompts, as the screen reports them.
        per_head = [a[j][0].mean(-1) for a in (exact, attr, direct)]
        rc = heads.rank_correlation(per_head[0], per_head[1], n_perm=500)
        rd = heads.rank_correlation(per_head[0], per_head[2], n_perm=500)
        print(
            f"rank correlation over {n_heads} heads, zero-ablation, {measure} (random direction / "
            f"words): exact vs attribution rho = {rc['spearman']:+.3f} "
            f"(null 95% [{rc['null_lo']:+.2f}, {rc['null_hi']:+.2f}]), exact vs direct rho = "
            f"{rd['spearman']:+.3f}"
        )
    if t_tl:
        print(
            f"targets: exact sweep {t_tl / t_exact:.1f}x TransformerLens (>= 3), "
            f"{t_hf / t_exact:.1f}x plain transformers; attribution {t_tl / t_attr:.0f}x "
            "TransformerLens (>= 30)"
        )


class _Rows(list):
    """Rows of the table, each also printed as soon as it is measured (long runs)."""

    def append(self, row):
        super().append(row)
        print(f"  measured: {row[0]}: {row[1]:.3f} s ({row[2]})", flush=True)


def model_unembed_last(cfg, params, x):
    from models import unembed

    return unembed(cfg, params, x)


def _note(raw_seconds: float) -> str:
    n = FLAGS.loop_heads
    if n == 144:
        return "all 144 heads timed"
    return f"{n} heads timed ({raw_seconds:.1f} s), scaled to all heads"


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app.run(main)
