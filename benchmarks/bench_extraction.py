"""Extraction throughput: every layer's residual stream for 400 prompts of 8-12 tokens.

jaxcirc (`Record.residuals()`: resid_pre of every block + resid_post, no unembedding) against
transformers `output_hidden_states=True`, with the LM head (what users run) and without it (the
base model, `model.transformer` / `model.gpt_neox`), full-size random GPT-2, Pythia-160M and
GPT-Neo-125M, batch 16 and 64, all in one run beside the matmul peak measured in the same run.

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
from benchmarks import common  # noqa: E402
from models import Record  # noqa: E402


def prompts(n: int, vocab: int, seed: int = 0):
    """n prompts of 8-12 random tokens, right-padded to 12: ids [n, 12], mask [n, 12]."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(8, 13, n)
    ids = rng.integers(0, vocab, (n, 12)).astype(np.int32)
    mask = np.arange(12)[None, :] < lengths[:, None]
    return ids, mask


def bench_jax(m, ids, mask, batch, repeats):
    rec = Record.residuals()
    fwd = jax.jit(lambda p, t, k: models.forward(m.config, p, t, k, None, rec)[1].hidden_states())

    def run():
        for i in range(0, len(ids), batch):
            fwd(m.params, ids[i : i + batch], mask[i : i + batch]).block_until_ready()

    fwd(m.params, ids[:batch], mask[:batch]).block_until_ready()  # compile
    if len(ids) % batch:
        fwd(m.params, ids[-(len(ids) % batch) :], mask[-(len(ids) % batch) :]).block_until_ready()
    return common.best_of(run, repeats)


def bench_jax_sorted(m, ids, mask, batch, repeats):
    """What `jaxcirc.extract.extract_residuals` does: prompts sorted by length, each batch padded
    only to its own longest prompt (one compile per distinct width, done before timing).
    Returns (seconds, tokens computed)."""
    rec = Record.residuals()
    fwd = jax.jit(lambda p, t, k: models.forward(m.config, p, t, k, None, rec)[1].hidden_states())
    lengths = mask.sum(1)
    order = np.argsort(lengths, kind="stable")
    batches = []
    for i in range(0, len(ids), batch):
        idx = order[i : i + batch]
        w = int(lengths[idx].max())
        batches.append((ids[idx, :w], mask[idx, :w]))
    for b_ids, b_mask in batches:  # compile every (rows, width) shape
        fwd(m.params, b_ids, b_mask).block_until_ready()

    def run():
        for b_ids, b_mask in batches:
            fwd(m.params, b_ids, b_mask).block_until_ready()

    tokens = sum(b.size for b, _ in batches)
    mean_keys = float(np.mean([(b.shape[1] + 1) / 2 for b, _ in batches]))
    return common.best_of(run, repeats), tokens, mean_keys


def bench_torch(module, ids, mask, batch, repeats):
    import torch

    t_ids, t_mask = torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)

    def run():
        with torch.inference_mode():
            for i in range(0, len(ids), batch):
                module(
                    input_ids=t_ids[i : i + batch],
                    attention_mask=t_mask[i : i + batch],
                    output_hidden_states=True,
                )

    with torch.inference_mode():
        module(input_ids=t_ids[:batch], attention_mask=t_mask[:batch], output_hidden_states=True)
    return common.best_of(run, repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gpt2,pythia-160m,gpt-neo-125m")
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import torch

    from tests import hf_reference as ref

    print(
        f"machine: {common.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    peak = common.matmul_peak_gflops()
    tpeak = common.torch_matmul_peak_gflops()
    print(f"matmul peak (2048^3 fp32, this run): jax {peak:.0f} GFLOP/s, torch {tpeak:.0f} GFLOP/s")
    print(
        "Same batches: every prompt right-padded to 12 in both. Sorted: jaxcirc's extraction "
        "order (by length, each batch padded to its own longest; what extract_residuals runs); "
        "its GFLOP/s count the tokens it computes."
    )
    header = (
        f"{'model':<14}{'batch':>6}{'jaxcirc s/s':>13}{'HF+head s/s':>13}{'HF base s/s':>13}"
        f"{'x HF+head':>11}{'x HF base':>11}{'jax GFLOP/s':>13}{'% peak':>8}"
        f"{'sorted s/s':>12}{'x HF+head':>11}{'x HF base':>11}{'% peak':>8}"
    )
    print(header)
    for name in args.models.split(","):
        hf_cfg = models.published_hf_config(name)
        hf = ref.hf_model(hf_cfg, seed=0)
        ours = ref.convert(hf, hf_cfg)
        ours.params = jax.tree_util.tree_map(jnp.asarray, ours.params)
        ids, mask = prompts(args.n, hf_cfg["vocab_size"])
        base = hf.base_model
        for batch in [int(b) for b in args.batches.split(",")]:
            tj = bench_jax(ours, ids, mask, batch, args.repeats)
            ts, s_tokens, s_keys = bench_jax_sorted(ours, ids, mask, batch, args.repeats)
            th = bench_torch(hf, ids, mask, batch, args.repeats)
            tb = bench_torch(base, ids, mask, batch, args.repeats)
            # FLOPs actually computed: every padded position, mean keys per query (12+1)/2.
            flops = common.forward_flops(ours.config, ids.size, 6.5, unembed=False)
            gflops = flops / tj / 1e9
            s_gflops = common.forward_flops(ours.config, s_tokens, s_keys, unembed=False) / ts / 1e9
            print(
                f"{name:<14}{batch:>6}{args.n / tj:>13.1f}{args.n / th:>13.1f}{args.n / tb:>13.1f}"
                f"{th / tj:>11.2f}{tb / tj:>11.2f}{gflops:>13.1f}{100 * gflops / peak:>7.0f}%"
                f"{args.n / ts:>12.1f}{th / ts:>11.2f}{tb / ts:>11.2f}{100 * s_gflops / peak:>7.0f}%",
                flush=True,
            )
    peak2 = common.matmul_peak_gflops()
    print(f"matmul peak again after the runs: jax {peak2:.0f} GFLOP/s (first: {peak:.0f})")


if __name__ == "__main__":
    main()
