"""Extraction throughput: every layer's residual stream for 400 prompts of 8-12 tokens.

jaxcirc (`Record.residuals()`: resid_pre of every block + resid_post, no unembedding) against
transformers `output_hidden_states=True`, with the LM head (what users run) and without it (the
base model, `model.transformer` / `model.gpt_neox`), full-size random GPT-2, Pythia-160M and
GPT-Neo-125M, batch 16 and 64, all in one run beside the matmul peak measured in the same run.
Two comparisons: A, both on the same batches right-padded to 12 (equal work); B, each its best
way: jaxcirc's packed rows exactly as `jaxcirc.phases.extract` plans them, transformers' base model on
length-sorted batches each cut to its longest prompt (the least padding one prompt per row has).
For Pythia, Penzai 0.2.5 (the JAX peer the issue sets as the floor) on A's batches, when installed.

    python benchmarks/bench_extraction.py [--models gpt2,pythia-160m,gpt-neo-125m] [--batches 16,64]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from benchmarks import common, penzai_peer  # noqa: E402
from jaxcirc.phases import extract  # noqa: E402
from models import Record  # noqa: E402


def prompts(n: int, vocab: int, seed: int = 0):
    """n prompts of 8-12 random tokens, right-padded to 12: ids [n, 12], mask [n, 12]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 13, n)
    ids = rng.integers(0, vocab, (n, 12)).astype(np.int32)
    mask = np.arange(12)[None, :] < lengths[:, None]
    return ids, mask


def residuals_fn(m):
    """jitted (params, ids, mask) -> [layer + 1, batch, pos, d_model], no unembedding."""
    rec = Record.residuals()
    return jax.jit(lambda p, t, k: models.forward(m.config, p, t, k, None, rec)[1].hidden_states())


def bench_jax(m, batches, repeats):
    """jaxcirc on `batches` [(ids, mask)], one prompt per row (compiled before timing)."""
    fwd = residuals_fn(m)

    def run():
        for b_ids, b_mask in batches:
            fwd(m.params, b_ids, b_mask).block_until_ready()

    for b_ids, b_mask in {b[0].shape: b for b in batches}.values():  # compile every shape
        fwd(m.params, b_ids, b_mask).block_until_ready()
    return common.best_of(run, repeats)


def bench_jax_packed(m, ids, mask, batch, repeats):
    """What `jaxcirc.phases.extract.extract_residuals` runs: its own packing plan (several prompts per
    row, one row width, about `batch` prompts per call) through its own jitted forward; the
    plan and the compile are made before timing. Returns (seconds, plan)."""
    lengths = mask.sum(1)
    plan = extract.plan_batches(m.config, lengths, batch, pad_to_multiple=8)
    calls = [call.arrays(ids, 0) for call in plan.calls()]
    run_one = lambda t, s: extract.packed_residuals(m.config, m.params, t, s)  # noqa: E731
    run_one(*calls[0]).block_until_ready()  # compile: every call has this shape

    def run():
        for t, s in calls:
            run_one(t, s).block_until_ready()

    return common.best_of(run, repeats), plan


def penzai_checked(hf, ours, ids, mask):
    """Penzai's runner for this Pythia, after checking it returns our residual streams; None
    (with a line saying why) when penzai is not installed."""
    if not penzai_peer.available():
        print("Penzai: not installed (pip install -e '.[bench]'); its comparison is skipped")
        return None
    run = penzai_peer.residual_runner(hf)
    ref_h = residuals_fn(ours)(ours.params, ids[:16], mask[:16])
    real = mask[:16].astype(bool)
    diff = float(np.abs(np.asarray(run(ids[:16]))[:, real] - np.asarray(ref_h)[:, real]).max())
    print(f"Penzai: max |difference| from jaxcirc's residual streams at real tokens {diff:.1e}")
    if diff > 1e-3:
        raise SystemExit("Penzai's streams differ from jaxcirc's: the comparison would be void")
    return run


def bench_penzai(run, batches, repeats):
    def go():
        for b_ids, _ in batches:
            run(b_ids).block_until_ready()

    # Twice: Penzai's savers hold None before the first call and arrays after it, a different
    # pytree, so the second call of each shape compiles again.
    go()
    go()
    return common.best_of(go, repeats)


def sorted_batches(ids, mask, batch):
    """Prompts sorted by length, each batch cut to its own longest: the least padding a
    one-prompt-per-row runner can have."""
    lengths = mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    out = []
    for i in range(0, len(ids), batch):
        idx = order[i : i + batch]
        w = int(lengths[idx].max())
        out.append((ids[idx, :w], mask[idx, :w]))
    return out


def bench_torch(module, batches, repeats):
    """transformers on `batches` [(ids, mask)], output_hidden_states=True."""
    import torch

    t_batches = [
        (torch.as_tensor(i, dtype=torch.long), torch.as_tensor(k, dtype=torch.long))
        for i, k in batches
    ]

    def run():
        with torch.inference_mode():
            for t_ids, t_mask in t_batches:
                module(input_ids=t_ids, attention_mask=t_mask, output_hidden_states=True)

    with torch.inference_mode():
        module(input_ids=t_batches[0][0], attention_mask=t_batches[0][1], output_hidden_states=True)
    return common.best_of(run, repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gpt2,pythia-160m,gpt-neo-125m")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from models import hf_reference as ref

    print(
        f"machine: {common.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    peak = common.matmul_peak_gflops()
    tpeak = common.torch_matmul_peak_gflops()
    print(f"matmul peak (2048^3 fp32, this run): jax {peak:.0f} GFLOP/s, torch {tpeak:.0f} GFLOP/s")
    print(
        "A: same batches, every prompt right-padded to 12 in both (equal work). B: each run its "
        "best way: jaxcirc as `jaxcirc.phases.extract` runs it (packed: several prompts per row, one "
        "width), transformers on prompts sorted by length, each batch cut to its own longest. "
        "% peak counts the FLOPs each computes (padding and packed rows' masked keys included); "
        "useful % counts real tokens only."
    )
    header = (
        f"{'model':<14}{'batch':>6} | A: {'jaxcirc':>8}{'HF+head':>9}{'HF base':>9}"
        f"{'x head':>8}{'x base':>8}{'% peak':>8} | B: {'packed':>8}{'fill':>6}{'HF base':>9}"
        f"{'x base':>8}{'x A head':>9}{'x A base':>9}{'% peak':>8}{'useful%':>8}"
    )
    print("samples/s; x = transformers' time / jaxcirc's")
    print(header)
    for name in args.models.split(","):
        hf_cfg = models.published_hf_config(name)
        hf = ref.hf_model(hf_cfg, seed=0)
        ours = ref.convert(hf, hf_cfg)
        ours.params = jax.tree_util.tree_map(jnp.asarray, ours.params)
        ids, mask = prompts(args.n, hf_cfg["vocab_size"])
        lengths = mask.sum(1)
        base = hf.base_model
        penzai_run = None
        if hf_cfg["model_type"] == "gpt_neox":
            penzai_run = penzai_checked(hf, ours, ids, mask)
        for batch in [int(b) for b in args.batches.split(",")]:
            padded = [(ids[i : i + batch], mask[i : i + batch]) for i in range(0, len(ids), batch)]
            tj = bench_jax(ours, padded, args.repeats)
            tp, plan = bench_jax_packed(ours, ids, mask, batch, args.repeats)
            th = bench_torch(hf, padded, args.repeats)
            tb = bench_torch(base, padded, args.repeats)
            tbs = bench_torch(base, sorted_batches(ids, mask, batch), args.repeats)
            # FLOPs computed: every padded slot, mean keys per query (width + 1) / 2.
            cfg = ours.config
            gflops = common.forward_flops(cfg, ids.size, 6.5, unembed=False) / tj / 1e9
            p_flops = common.forward_flops(cfg, plan.slots, (plan.width + 1) / 2, unembed=False)
            useful = sum(
                common.forward_flops(cfg, int(n_tok), (n_tok + 1) / 2, unembed=False)
                for n_tok in lengths
            )
            print(
                f"{name:<14}{batch:>6} | A: {args.n / tj:>8.1f}{args.n / th:>9.1f}"
                f"{args.n / tb:>9.1f}{th / tj:>8.2f}{tb / tj:>8.2f}{100 * gflops / peak:>7.0f}%"
                f" | B: {args.n / tp:>8.1f}{plan.fill:>6.2f}{args.n / tbs:>9.1f}{tbs / tp:>8.2f}"
                f"{th / tp:>9.2f}{tb / tp:>9.2f}{100 * p_flops / tp / 1e9 / peak:>7.0f}%"
                f"{100 * useful / tp / 1e9 / peak:>7.0f}%",
                flush=True,
            )
            print(f"{'':<20} | packing: {plan.record()}", flush=True)
            if penzai_run is not None:
                tz = bench_penzai(penzai_run, padded, args.repeats)
                print(
                    f"{'':<20} | Penzai 0.2.5 (same padded batches as A): {args.n / tz:.1f} "
                    f"samples/s, x HF+head {th / tz:.2f}, x HF base {tb / tz:.2f}; jaxcirc A "
                    f"x Penzai {tz / tj:.2f}, packed x Penzai {tz / tp:.2f}",
                    flush=True,
                )
    peak2 = common.matmul_peak_gflops()
    print(f"matmul peak again after the runs: jax {peak2:.0f} GFLOP/s (first: {peak:.0f})")


if __name__ == "__main__":
    main()
