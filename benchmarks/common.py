"""What every benchmark needs: a matmul peak measured in the same run, timing, and FLOP counts.

Ratios are only meaningful when measured side by side in one run on one machine: these machines
change CPU between sessions (peaks from ~100 to ~290 GFLOP/s have been seen).

Importing this module turns on JAX's persistent compilation cache (`jaxcirc.infra.compile_cache`;
every benchmark imports it before its first compile), so compile times printed are those of a
cold cache on the first run and of loads on later runs; JAXCIRC_COMPILE_CACHE=0 measures cold
compiles every time.
"""

from __future__ import annotations

import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxcirc.infra import compile_cache

compile_cache.enable()


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 GFLOP/s of one jitted [n, n] @ [n, n] (XLA's own CPU matmul)."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = min(timed(lambda: f(a).block_until_ready()) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def torch_matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a = torch.randn(n, n)
    a @ a
    best = min(timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def best_of(fn, repeats: int = 3) -> float:
    return min(timed(fn) for _ in range(repeats))


def forward_flops(cfg, n_tokens: int, attn_len: float, unembed: bool) -> float:
    """Matmul FLOPs of a forward pass over `n_tokens` tokens (2 per multiply-add).

    Per token per layer: q, k, v, o projections 8 d^2, MLP 4 d d_mlp, attention scores and
    weighted values 4 d attn_len (attn_len = mean number of keys a query sees). Unembedding
    2 d vocab per token when computed. Layer norms, softmax and GELU are not counted.
    """
    d, m = cfg.d_model, cfg.d_mlp
    per_token = cfg.n_layers * (8 * d * d + 4 * d * m + 4 * d * attn_len)
    if unembed:
        per_token += 2 * d * cfg.d_vocab
    return float(per_token * n_tokens)


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}"
