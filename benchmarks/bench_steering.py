"""The steering sweep (layers x alphas x prompts x new tokens) in jaxcirc vs transformers.generate.

    python -m benchmarks.bench_steering            # 12 layers x 9 alphas x 35 prompts x 20 tokens
    python -m benchmarks.bench_steering --quick    # 3 layers x 3 alphas: about two minutes
    python -m benchmarks.bench_steering --quick --warm   # + the same sweep again in a second
                                                         # process, with a warm compile cache

Both sides run the same random full-size GPT-2 (weights drawn once, converted to ours), greedy,
no early stop, one random unit direction per layer, alphas in units of alpha_unit x the layer's
typical residual norm. transformers adds the vector with a forward pre-hook on block L (every
position, prompt and generated) and generates each (layer, alpha) cell as one left-padded batch of
the prompts; it is timed on a sample of cells and scaled to the sweep (printed as such). jaxcirc
runs the whole sweep as one `jaxcirc.core.steering.steering_sweep` call. Prompts: random token ids with
the lengths of the study's 35 real-world texts (their words and punctuation marks: about GPT-2's
token count for plain English; no tokenizer is available offline).

FLOPs are the sweep's necessary arithmetic (2 per multiply-add, real tokens only): the unsteered
prompt run once; per steered row the prompt re-run from layer L (layers L..11) and its last-token
logits; then every row's max_new - 1 decode steps through all layers plus the unembedding.
The matmul peak is measured in this run, before and after (best of the two).

Compile time is reported apart from run time: the warm-up line and the table say how many
programs XLA compiled and how many were loaded from the persistent compilation cache
(`jaxcirc.infra.compile_cache`, on for every benchmark). A plain run after an earlier one is
therefore warm. `--warm` measures what a user waits for: two new processes each run the whole
sweep as their first call, compiles included (no warm-up), the first into an empty cache folder
(cold), the second against what the first wrote (warm); both totals are printed beside
transformers.generate (whose own warm-up is excluded: it compiles nothing).
By hand: run twice with `JAXCIRC_COMPILE_CACHE=/tmp/somewhere` (the first run cold, provided the
folder is new), or with `JAXCIRC_COMPILE_CACHE=0` for cold compiles every time.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# Runnable as a file (python benchmarks/bench_x.py) as well as a module (-m benchmarks.bench_x).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import argparse
import dataclasses
import os
import re
import resource
import time

import jax
import numpy as np

from benchmarks import common
from jaxcirc.core import steering
from jaxcirc.data import prompts as study_prompts
from models.generate import GREEDY
from models.scheduler import EngineSettings, batch_sizes

ALPHAS = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)


def prompt_lengths() -> list[int]:
    """Approximate GPT-2 token counts of the 35 real-world texts (words + punctuation marks)."""
    texts = [t for _, _, t in study_prompts.REALWORLD]
    return [len(re.findall(r"\w+|[^\w\s]", t.replace("[", "").replace("]", ""))) for t in texts]


def make_prompts(lengths, vocab, seed=0):
    """Left-padded random ids [n, max(lengths)] and mask."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), np.int64)
    mask = np.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, width - n :] = rng.integers(0, vocab, n)
        mask[i, width - n :] = 1
    return ids, mask


def sweep_flops(cfg, lengths, layers, n_alpha_nonzero, n_dir, new) -> dict:
    """Necessary matmul FLOPs of the sweep (see module docstring), by part."""
    d, m, v = cfg.d_model, cfg.d_mlp, cfg.d_vocab
    dense = 8 * d * d + 4 * d * m  # per token per layer
    unemb = 2 * d * v

    def prompt_layer(n):  # one prompt of n tokens through one layer, causal attention
        return n * dense + 4 * d * n * (n + 1) / 2

    base = sum(cfg.n_layers * prompt_layer(n) + unemb for n in lengths)
    cells = n_dir * n_alpha_nonzero
    rerun = cells * sum(
        (cfg.n_layers - L) * prompt_layer(n) + unemb for L in layers for n in lengths
    )
    rows = len(lengths) * (1 + cells * len(layers))
    dec = 0.0
    for n in lengths:
        for t in range(1, new):
            dec += cfg.n_layers * (dense + 4 * d * (n + t)) + unemb
    dec *= rows / len(lengths)
    return {
        "prompt": base,
        "rerun": rerun,
        "decode": dec,
        "total": base + rerun + dec,
        "rows": rows,
    }


def cpu_seconds() -> float:
    """CPU seconds used by this process so far, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_gflops(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
    """(best-of wall GFLOP/s, GFLOP/s per CPU-second x cores) of XLA's [n, n] @ [n, n]: the
    second is what the matmul reaches on the CPU time it actually got."""
    peak = common.matmul_peak_gflops(n, repeats)
    a = jax.numpy.ones((n, n), jax.numpy.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    c0 = cpu_seconds()
    for _ in range(repeats):
        f(a).block_until_ready()
    cpu = cpu_seconds() - c0
    return peak, 2 * n**3 * repeats / cpu * os.cpu_count() / 1e9


def hf_cell_times(hf, ids, mask, cells, direction, scales, new):
    """Seconds per cell for transformers.generate with a forward pre-hook; tokens per cell."""
    import torch

    from models import hf_reference as ref

    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    x = torch.as_tensor(ids)
    am = torch.as_tensor(mask)
    times, toks = [], []
    for layer, alpha in cells:
        vec = torch.as_tensor(alpha * scales[layer] * direction[layer])
        handle = ref.blocks(hf)[layer].register_forward_pre_hook(
            lambda mod, args, vec=vec: (args[0] + vec,) + args[1:]
        )
        try:
            t = time.perf_counter()
            with torch.no_grad():
                out = hf.generate(
                    input_ids=x, attention_mask=am, max_new_tokens=new, do_sample=False
                )
            times.append(time.perf_counter() - t)
        finally:
            handle.remove()
        toks.append(out[:, ids.shape[1] :].numpy())
    return times, toks


def first_call_processes() -> tuple[dict, dict]:
    """This benchmark's sweep as the first call of two new processes (same flags, no
    transformers, no warm-up), both on one new cache folder: the first finds it empty (cold),
    the second finds what the first compiled (warm). Each one's {"first_call", "compile"}."""
    import json
    import shutil
    import subprocess
    import tempfile

    base = _Path(tempfile.mkdtemp(prefix="bench_steering_"))
    argv = [a for a in _sys.argv[1:] if a != "--warm"] + ["--skip_hf"]
    env = {**os.environ, "JAXCIRC_COMPILE_CACHE": str(base / "xla")}
    root = _Path(__file__).resolve().parents[1]
    out = []
    for name in ("cold", "warm"):
        path = base / f"{name}.json"
        cmd = [_sys.executable, "-m", "benchmarks.bench_steering", *argv, f"--first_call={path}"]
        res = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True)
        if res.returncode:
            raise RuntimeError(f"the {name} first-call process failed:\n{res.stderr[-3000:]}")
        out.append(json.loads(path.read_text()))
    shutil.rmtree(base, ignore_errors=True)
    return out[0], out[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="layers 0, 6, 11 x alphas -8, 0, 8")
    ap.add_argument("--new", type=int, default=20, help="new tokens per prompt")
    ap.add_argument("--hf_cells", type=int, default=9, help="cells transformers is timed on")
    ap.add_argument("--batch_rows", type=int, default=512)
    ap.add_argument("--prefill_rows", type=int, default=256)
    ap.add_argument("--skip_hf", action="store_true")
    ap.add_argument("--layers", default="", help="comma list overriding the layers swept")
    ap.add_argument("--alphas", default="", help="comma list overriding the alphas swept")
    ap.add_argument("--warm", action="store_true", help="first calls, cold and warm cache (docs)")
    ap.add_argument("--first_call", default="", help=argparse.SUPPRESS)  # for --warm's children
    args = ap.parse_args()
    import json

    import models
    from jaxcirc.infra import compile_cache
    from models import hf_reference as ref

    layers = (0, 6, 11) if args.quick else tuple(range(12))
    alphas = (-8.0, 0.0, 8.0) if args.quick else ALPHAS
    if args.layers:
        layers = tuple(int(x) for x in args.layers.split(","))
    if args.alphas:
        alphas = tuple(float(x) for x in args.alphas.split(","))
    print(f"machine: {common.machine()}")
    peak0, peak0_cpu = peak_gflops()
    print(f"matmul peak (jax, 2048^3 fp32) at start: {peak0:.1f} GFLOP/s")

    hf_cfg = models.published_hf_config("gpt2")
    hf = ref.hf_model(hf_cfg, seed=0)
    ours = ref.convert(hf, hf_cfg)
    cfg = ours.config
    lengths = prompt_lengths()
    ids, mask = make_prompts(lengths, cfg.d_vocab)
    rng = np.random.default_rng(1)
    direction = rng.standard_normal((cfg.n_layers, cfg.d_model)).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    norms = steering.typical_resid_norms(cfg, ours.params, ids, mask)
    scales = (0.125 * norms).astype(np.float32)
    n_nz = sum(a != 0 for a in alphas)
    fl = sweep_flops(cfg, lengths, layers, n_nz, 1, args.new)
    print(
        f"sweep: {len(layers)} layers x {len(alphas)} alphas x {len(lengths)} prompts x "
        f"{args.new} new tokens; prompt lengths {min(lengths)}-{max(lengths)} "
        f"(mean {np.mean(lengths):.1f}); rows generated {fl['rows']} "
        f"(alpha=0 once, not per layer)"
    )

    settings = EngineSettings(
        args.new, GREEDY, 0, batch_rows=args.batch_rows, prefill_rows=args.prefill_rows
    )
    # Compile first, on a one-layer sweep with the full sweep's call shapes, so the timed run
    # measures running only (compile time is printed separately).
    units = direction[None]
    rows, _ = steering.steering_rows(
        len(lengths), steering.SteeringGrid(units, scales, layers, alphas)
    )
    dec_rows, pre_rows = batch_sizes(len(lengths), rows, settings)
    settings = dataclasses.replace(
        settings, batch_rows=dec_rows, prefill_rows=pre_rows, exact_batches=True
    )
    if args.first_call:  # --warm's child: the whole sweep as this process's first call
        cc = compile_cache.CompileCounter().start()
        t0 = time.perf_counter()
        full = steering.SteeringGrid(units, scales, layers, alphas)
        steering.steering_sweep(cfg, ours.params, ids, mask, full, settings)
        totals = {"first_call": time.perf_counter() - t0, "compile": cc.stop().stats.as_dict()}
        _Path(args.first_call).write_text(json.dumps(totals))
        return
    t0 = time.perf_counter()
    cc_warmup = compile_cache.CompileCounter().start()
    # One layer with every alpha: the same re-run pieces (and prompt windows) as each layer.
    one_layer = steering.SteeringGrid(units, scales, layers[:1], alphas)
    steering.steering_sweep(cfg, ours.params, ids, mask, one_layer, settings)
    t_comp = time.perf_counter() - t0
    cc_warmup.stop()
    print(
        f"decode calls of {dec_rows} rows, re-run calls of {pre_rows} rows; warm-up (compile, "
        f"and a one-layer sweep with these shapes) {t_comp:.1f} s, of which {cc_warmup}"
    )
    cc_run = compile_cache.CompileCounter().start()
    timings = {}
    c0, t0 = cpu_seconds(), time.perf_counter()
    sweep = steering.steering_sweep(
        cfg,
        ours.params,
        ids,
        mask,
        steering.SteeringGrid(units, scales, layers, alphas),
        settings,
        timings=timings,
    )
    t_run = time.perf_counter() - t0
    cpu_run = cpu_seconds() - c0
    cc_run.stop()
    peak1, peak1_cpu = peak_gflops()
    peak, peak_cpu = max(peak0, peak1), max(peak0_cpu, peak1_cpu)
    cores = os.cpu_count()
    share = cpu_run / (cores * t_run)
    print(f"matmul peak at end: {peak1:.1f} GFLOP/s; using the best: {peak:.1f}")
    print(
        f"FLOPs (necessary): prompt {fl['prompt'] / 1e12:.2f} T + re-runs from L "
        f"{fl['rerun'] / 1e12:.2f} T + decode {fl['decode'] / 1e12:.2f} T = "
        f"{fl['total'] / 1e12:.2f} TFLOP -> bound at peak {fl['total'] / peak / 1e9:.1f} s"
    )
    print(
        f"jaxcirc sweep: run {t_run:.1f} s (compiles during it: {cc_run.compile_seconds:.1f} s) = "
        f"{fl['total'] / t_run / 1e9:.1f} GFLOP/s = {fl['total'] / t_run / 1e9 / peak:.0%} of "
        f"peak; with the warm-up {fl['total'] / (t_run + t_comp) / 1e9 / peak:.0%}"
    )
    parts = {"prompt": fl["prompt"], "rerun": fl["rerun"], "decode": fl["decode"]}
    print(
        "  by phase (wall s, % of peak; per CPU-second % of the peak's): "
        + "; ".join(
            f"{k} {timings.get(k, 0):.1f} s"
            + (
                f" ({parts[k] / timings[k] / 1e9 / peak:.0%}; "
                f"{parts[k] / timings[k + '_cpu'] * cores / 1e9 / peak_cpu:.0%})"
                if k in parts
                else ""
            )
            for k in ("prompt", "rerun", "assemble", "decode")
        )
    )
    print(
        f"  CPU share: the sweep got {share:.0%} of {cores} cores' time (other processes share "
        f"this machine); per CPU-second it ran at {fl['total'] / cpu_run * cores / 1e9:.1f} "
        f"GFLOP/s against the peak's {peak_cpu:.1f} per CPU-second: "
        f"{fl['total'] / cpu_run * cores / 1e9 / peak_cpu:.0%}"
    )
    cold, warm = first_call_processes() if args.warm else (None, None)
    for name, res in (("cold", cold), ("warm", warm)) if warm else ():
        c = res["compile"]
        print(
            f"first call in a new process, {name} compile cache: {res['first_call']:.1f} s "
            f"({c['compiles']} programs compiled, {c['cache_hits']} loaded from the cache)"
        )
    if args.skip_hf:
        return
    all_cells = [(L, a) for L in layers for a in alphas]
    pick = np.linspace(0, len(all_cells) - 1, min(args.hf_cells, len(all_cells))).round()
    cells = [all_cells[int(i)] for i in dict.fromkeys(pick)]
    import torch

    # transformers gets its best thread count: on a shared machine torch's spinning OpenMP
    # threads can lose 3-4x against one thread (measured here), so both are tried on one cell.
    hf_cell_times(hf, ids, mask, cells[:1], direction, scales, 2)  # warm-up
    tried = {}
    for n in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(n)
        tried[n] = hf_cell_times(hf, ids, mask, cells[:1], direction, scales, args.new)[0][0]
    best = min(tried, key=tried.get)
    torch.set_num_threads(best)
    print(
        f"transformers {__import__('transformers').__version__}: one cell with torch threads "
        + ", ".join(f"{n}: {s:.1f} s" for n, s in tried.items())
        + f"; timing with {best}; torch matmul peak {common.torch_matmul_peak_gflops():.1f}"
    )
    times, toks = hf_cell_times(hf, ids, mask, cells, direction, scales, args.new)
    per_cell = float(np.mean(times))
    t_hf = per_cell * len(all_cells)
    same = []
    for (L, a), tk in zip(cells, toks, strict=True):
        same.append((sweep.out.tokens[0, layers.index(L), alphas.index(a)] == tk).all(1))
    same = np.concatenate(same)
    print(
        f"transformers.generate + hook: {per_cell:.2f} s per cell (mean of {len(cells)} cells, "
        f"min {min(times):.2f}, max {max(times):.2f}) x {len(all_cells)} cells = {t_hf:.1f} s "
        f"(scaled from the sample)"
        if len(cells) < len(all_cells)
        else f"transformers.generate + hook: {per_cell:.2f} s per cell x {len(all_cells)} cells "
        f"= {t_hf:.1f} s (all cells timed)"
    )
    print(f"greedy tokens equal to transformers in {same.sum()}/{same.size} sampled rows")
    print()
    print("| what | seconds | ratio to jaxcirc run |")
    print("|---|---|---|")
    print(f"| transformers.generate + forward pre-hook | {t_hf:.1f} | {t_hf / t_run:.2f}x |")
    print(f"| jaxcirc sweep (run, compile excluded) | {t_run:.1f} | 1.00x |")
    t_all = t_run + t_comp
    print(
        f"| jaxcirc sweep + warm-up ({cc_warmup.compiles} programs compiled, "
        f"{cc_warmup.cache_hits} loaded from the compile cache) | {t_all:.1f} | "
        f"{t_all / t_run:.2f}x |"
    )
    for name, res in (("cold", cold), ("warm", warm)) if warm else ():
        t = res["first_call"]
        print(
            f"| jaxcirc sweep as a new process's first call, {name} compile cache (compiles "
            f"included; transformers is {t_hf / t:.2f}x this) | {t:.1f} | {t / t_run:.2f}x |"
        )
    print(
        f"| FLOP bound at measured peak {peak:.1f} GFLOP/s | {fl['total'] / peak / 1e9:.1f} | "
        f"{fl['total'] / peak / 1e9 / t_run:.2f}x |"
    )


if __name__ == "__main__":
    main()
