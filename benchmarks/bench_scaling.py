"""Scaling: the study's workloads on random models of growing size, jaxcirc beside transformers.

    python -m benchmarks.bench_scaling                    # Pythia 70M, 160M, 410M, 1B, 1.4B
    python -m benchmarks.bench_scaling --models=pythia-70m,pythia-160m --quick
    python -m benchmarks.bench_scaling --models=pythia-2.8b --dtype=bfloat16   # what fits beyond

Each model is a random one of its published shape (transformers' own initialisation), saved once
by transformers as safetensors under --workdir (kept for the next run unless --nokeep). Then
jaxcirc and transformers each run in a process of their own (so each one's peak RSS is its own),
on the same inputs, and time:

- load: `models.load(folder, stream=True)` vs `from_pretrained` (wall seconds; peak RSS after);
- extraction: every layer's residual stream of --n_extract prompts of 8-12 tokens in batches of
  16 (jaxcirc `Record.residuals()` vs `output_hidden_states=True`), samples per second;
- steering slice: up to 12 layers (evenly spaced) x alphas -8, +8 (and the unsteered run) x
  --n_steer prompts x --new greedy tokens (jaxcirc: one `steering_sweep` call; transformers:
  `generate` per cell with a forward pre-hook on the block, as bench_steering does);
- head sweep, 144-head equivalent: zero-ablation of 144 heads spread evenly over the model (all of
  them where it has fewer), 4 prompts x 12 tokens, logits at the last token (jaxcirc: one
  `head_sweep` call; transformers: a forward per head with a pre-hook zeroing its slice of the
  attention output projection's input, --loop_heads timed and scaled to 144).

jaxcirc's first call of each workload (compiles included) is printed beside its timed run (best
of --repeats after it); transformers compiles nothing. Growth with size: seconds per
parameter-token (the time over params x real tokens processed). The matmul peaks of XLA and
torch are measured in each process. Figures print as a table; nothing is asserted.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# Runnable as a file (python benchmarks/bench_x.py) as well as a module (-m benchmarks.bench_x).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import json
import os
import resource
import subprocess
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "models", ["pythia-70m", "pythia-160m", "pythia-410m", "pythia-1b", "pythia-1.4b"],
    "published shapes, smallest first",
)  # fmt: skip
flags.DEFINE_string("dtype", "float32", "float32 | bfloat16: saved and run in")
flags.DEFINE_bool("quick", False, "fewer prompts (extraction 32, steering 4, 4 layers)")
flags.DEFINE_integer("n_extract", 64, "extraction prompts")
flags.DEFINE_integer("n_steer", 8, "steered prompts")
flags.DEFINE_integer("new", 10, "new tokens per steered prompt")
flags.DEFINE_integer("loop_heads", 8, "heads transformers' loop times (scaled to 144)")
flags.DEFINE_integer("repeats", 2, "timed repeats after the first call (best is reported)")
flags.DEFINE_string("workdir", "/tmp/jaxcirc_bench_scaling", "where checkpoints are saved")
flags.DEFINE_bool("keep", True, "keep the checkpoints for the next run")
flags.DEFINE_string("role", "main", "internal: main | save | jaxcirc | transformers")
flags.DEFINE_string("model", "", "internal: the model a role runs")
flags.DEFINE_string("scales_json", "", "internal: jaxcirc's steering scales, for transformers")

N_HEADS = 144  # GPT-2 small's head count: the sweep's size in the study


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def checkpoint_folder(name: str) -> _Path:
    return _Path(FLAGS.workdir) / f"{name}-{FLAGS.dtype}"


def _sizes() -> dict:
    """Workload sizes (the --quick ones smaller)."""
    q = FLAGS.quick
    return {
        "n_extract": 32 if q else FLAGS.n_extract,
        "n_steer": 4 if q else FLAGS.n_steer,
        "max_layers": 4 if q else 12,
        "new": 6 if q else FLAGS.new,
    }


def workload_inputs(cfg) -> dict:
    """The same inputs for both sides: extraction prompts (right-padded), steering prompts
    (left-padded, study lengths), head prompts, the steered layers, heads and directions."""
    from benchmarks import bench_extraction, bench_steering

    s = _sizes()
    ids, mask = bench_extraction.prompts(s["n_extract"], cfg.d_vocab)
    lengths = bench_steering.prompt_lengths()[: s["n_steer"]]
    s_ids, s_mask = bench_steering.make_prompts(lengths, cfg.d_vocab)
    rng = np.random.default_rng(2)
    h_ids = rng.integers(0, cfg.d_vocab, (4, 12)).astype(np.int32)
    n = cfg.n_layers * cfg.n_heads
    flat = np.unique(np.linspace(0, n - 1, min(N_HEADS, n)).round().astype(int))
    direction = rng.standard_normal((cfg.n_layers, cfg.d_model)).astype(np.float32)
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    layers = np.unique(np.linspace(0, cfg.n_layers - 1, min(s["max_layers"], cfg.n_layers)))
    return {
        "ids": ids, "mask": mask, "s_ids": s_ids, "s_mask": s_mask, "lengths": lengths,
        "h_ids": h_ids, "heads": tuple((int(i) // cfg.n_heads, int(i) % cfg.n_heads) for i in flat),
        "direction": direction, "layers": tuple(int(x) for x in layers.round()),
        "alphas": (-8.0, 0.0, 8.0), "new": s["new"],
    }  # fmt: skip


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _first(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# ---------------------------------------------------------------------------------------------
# jaxcirc side


def run_jaxcirc(folder: _Path) -> dict:
    """Load, extraction, steering slice and head sweep in jaxcirc (module docstring)."""
    import jax
    import jax.numpy as jnp

    import models
    from benchmarks import bench_extraction, common
    from jaxcirc.core import heads, steering
    from models.generate import GREEDY
    from models.scheduler import EngineSettings

    out = {"peak_gflops": common.matmul_peak_gflops()}
    t = time.perf_counter()
    m = models.load(
        str(folder), stream=True, dtype=FLAGS.dtype, with_tokenizer=False, use_param_cache=False
    )
    jax.block_until_ready(m.params)
    out["load_s"], out["rss_after_load_mib"] = time.perf_counter() - t, _peak_rss_mib()
    cfg, params = m.config, m.params
    x = workload_inputs(cfg)

    fwd = bench_extraction.residuals_fn(m)
    batches = [(x["ids"][i : i + 16], x["mask"][i : i + 16]) for i in range(0, len(x["ids"]), 16)]

    def extract():
        for b_ids, b_mask in batches:
            fwd(params, b_ids, b_mask).block_until_ready()

    out["extract_first_s"] = _first(extract)
    out["extract_s"] = _best(extract, FLAGS.repeats)
    out["rss_after_extract_mib"] = _peak_rss_mib()

    norms = steering.typical_resid_norms(cfg, params, x["s_ids"], x["s_mask"])
    scales = (0.125 * norms).astype(np.float32)
    grid = steering.SteeringGrid(x["direction"][None], scales, x["layers"], x["alphas"])
    settings = EngineSettings(x["new"], GREEDY, 0)

    def steer():
        sw = steering.steering_sweep(cfg, params, x["s_ids"], x["s_mask"], grid, settings)
        jax.block_until_ready(sw.out.tokens)
        return sw

    out["steer_first_s"] = _first(steer)
    out["steer_s"] = _best(steer, FLAGS.repeats)
    tokens = np.asarray(steer().out.tokens)  # [dir, layer, alpha, batch, new]
    out["rss_after_steer_mib"] = _peak_rss_mib()

    h_ids = jnp.asarray(x["h_ids"])
    h_mask = jnp.ones(h_ids.shape, bool)
    w_o = params["blocks"]["attn"]["W_O"]
    z0 = jnp.zeros((1, cfg.n_layers, cfg.n_heads, cfg.d_head), w_o.dtype)

    def sweep():
        return jax.block_until_ready(
            heads.head_sweep(cfg, params, h_ids, h_mask, z0, None, x["heads"])
        )

    out["heads_first_s"] = _first(sweep)
    out["heads_s"] = _best(sweep, FLAGS.repeats)
    removed, _ = sweep()
    check = [0, len(x["heads"]) // 2]
    logits = models.unembed(cfg, params, removed[jnp.asarray(check), 0])  # [2, batch, vocab]
    out.update(
        n_params=int(cfg.n_params()),
        rss_peak_mib=_peak_rss_mib(),
        check_steer_tokens=tokens[0, :, 0].tolist(),  # alpha -8, every layer
        scales=scales.tolist(),
        check_head_logits=np.asarray(logits, np.float32)[..., :8].tolist(),
        check_heads=[list(x["heads"][i]) for i in check],
    )
    return out


# ---------------------------------------------------------------------------------------------
# transformers side


def run_transformers(folder: _Path) -> dict:
    """The same workloads in transformers (module docstring); timed, with check values."""
    import torch
    import transformers

    import models
    from benchmarks import bench_steering, common
    from models import hf_reference as ref

    out = {"peak_gflops": common.torch_matmul_peak_gflops()}
    dtype = torch.bfloat16 if FLAGS.dtype == "bfloat16" else torch.float32
    t = time.perf_counter()
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).eval()
    out["load_s"], out["rss_after_load_mib"] = time.perf_counter() - t, _peak_rss_mib()
    cfg = models.config_from_hf(json.loads((folder / "config.json").read_text()))
    x = workload_inputs(cfg)
    ids, mask = torch.as_tensor(x["ids"], dtype=torch.long), torch.as_tensor(x["mask"])

    def extract():
        with torch.no_grad():
            for i in range(0, len(ids), 16):
                hf(input_ids=ids[i : i + 16], attention_mask=mask[i : i + 16],
                   output_hidden_states=True)  # fmt: skip

    out["extract_first_s"] = _first(extract)
    # torch gets its best thread count: on a shared machine its spinning OpenMP threads can
    # lose 3-4x against one thread (bench_steering), so both are tried on the extraction.
    tried = {}
    for n in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(n)
        tried[n] = _best(extract, 1)
    torch.set_num_threads(min(tried, key=tried.get))
    out["threads"] = torch.get_num_threads()
    out["extract_s"] = min(_best(extract, FLAGS.repeats), min(tried.values()))

    # Steering: the same cells, at the scales jaxcirc's side used (alpha units of its typical
    # residual norms); transformers generates each (layer, alpha != 0) cell and the unsteered
    # run once.
    scales = np.asarray(json.loads(_Path(FLAGS.scales_json).read_text()), np.float32)
    cells = [(L, a) for L in x["layers"] for a in x["alphas"] if a != 0] + [(0, 0.0)]
    times, toks = bench_steering.hf_cell_times(
        hf, x["s_ids"], x["s_mask"], cells, x["direction"], scales, x["new"]
    )
    out["steer_s"] = float(sum(times))
    out["check_steer_tokens"] = [toks[2 * i].tolist() for i in range(len(x["layers"]))]

    h_ids = torch.as_tensor(x["h_ids"], dtype=torch.long)
    E = cfg.d_head

    def one(i, keep=None):
        layer, head = x["heads"][i]

        def zero(module, args):
            a = args[0].clone()
            a[..., head * E : (head + 1) * E] = 0
            return (a,) + args[1:]

        handle = ref.out_proj(hf, layer).register_forward_pre_hook(zero)
        try:
            with torch.no_grad():
                logits = hf(input_ids=h_ids).logits[:, -1]
        finally:
            handle.remove()
        if keep is not None:
            keep.append(logits.float().numpy()[..., :8].tolist())

    one(0)
    n = min(FLAGS.loop_heads, len(x["heads"]))
    picks = np.linspace(0, len(x["heads"]) - 1, n).round().astype(int)
    t = time.perf_counter()
    for i in picks:
        one(int(i))
    out["heads_s"] = (time.perf_counter() - t) / n * len(x["heads"])
    out["heads_timed"] = n
    check = []
    for i in (0, len(x["heads"]) // 2):
        one(i, check)
    out.update(
        n_params=int(sum(p.numel() for p in hf.parameters())),
        rss_peak_mib=_peak_rss_mib(),
        check_head_logits=check,
    )
    return out


# ---------------------------------------------------------------------------------------------
# main


def save(name: str) -> None:
    """A random model of `name`'s published shape, saved by transformers in --dtype."""
    import torch
    import transformers

    import models

    hf_cfg = dict(models.published_hf_config(name))
    config = transformers.AutoConfig.for_model(hf_cfg.pop("model_type"), **hf_cfg)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    if FLAGS.dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(str(checkpoint_folder(name)), max_shard_size="500MB")


def run_role(role: str, name: str, *extra: str) -> dict | None:
    argv = [a for a in _sys.argv[1:] if not a.startswith(("--role", "--model="))]
    cmd = [_sys.executable, "-m", "benchmarks.bench_scaling", *argv, f"--role={role}",
           f"--model={name}", *extra]  # fmt: skip
    root = _Path(__file__).resolve().parents[1]
    res = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if res.returncode:
        print(f"  {name} {role}: failed: {res.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    return json.loads(res.stdout.strip().splitlines()[-1]) if role != "save" else {}


def _check(a: dict, b: dict) -> str:
    """Do both sides agree (greedy tokens of the steered cells, head-removed logits)?"""
    tok = np.array_equal(np.asarray(a["check_steer_tokens"]), np.asarray(b["check_steer_tokens"]))
    la, lb = np.asarray(a["check_head_logits"]), np.asarray(b["check_head_logits"])
    tol = 5e-2 if FLAGS.dtype == "bfloat16" else 2e-3
    close = np.allclose(la, lb, atol=tol * max(1.0, np.abs(lb).max()))
    return f"steered tokens equal: {tok}; head-removed logits within {tol:g} (rel): {close}"


def main_role() -> None:
    from benchmarks import common

    print(f"machine: {common.machine()}; dtype {FLAGS.dtype}; sizes {_sizes()}", flush=True)
    rows = []
    for name in FLAGS.models:
        folder = checkpoint_folder(name)
        if not (folder / "config.json").is_file():
            t = time.perf_counter()
            if run_role("save", name) is None:
                continue
            print(f"{name}: random checkpoint saved in {time.perf_counter() - t:.0f} s", flush=True)
        a = run_role("jaxcirc", name)
        if a is None:
            continue
        scales = folder / "scales.json"
        scales.write_text(json.dumps(a["scales"]))
        b = run_role("transformers", name, f"--scales_json={scales}")
        if b is None:
            continue
        print(f"{name}: {_check(a, b)}; peaks XLA {a['peak_gflops']:.0f}, torch "
              f"{b['peak_gflops']:.0f} GFLOP/s; torch threads {b['threads']}", flush=True)  # fmt: skip
        rows.append((name, a, b))
        if not FLAGS.keep:
            import shutil

            shutil.rmtree(folder, ignore_errors=True)
    _table(rows)


def _table(rows) -> None:
    s = _sizes()
    tok_extract = s["n_extract"] * 10  # prompts of 8-12 tokens: 10 on average
    print()
    print("| model | params | side | load s | peak RSS MiB | extraction samples/s (first call s)"
          " | steering slice s (first call s) | 144-head sweep s (first call s) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, a, b in rows:
        for side, r in (("jaxcirc", a), ("transformers", b)):
            first = lambda k, r=r: f" ({r[k]:.1f})" if k in r else ""  # noqa: E731
            print(
                f"| {name} | {r['n_params'] / 1e6:.0f}M | {side} | {r['load_s']:.1f} | "
                f"{r['rss_peak_mib']:.0f} | {s['n_extract'] / r['extract_s']:.1f}"
                f"{first('extract_first_s')} | {r['steer_s']:.1f}{first('steer_first_s')} | "
                f"{r['heads_s']:.1f}{first('heads_first_s')} |"
            )
    print()
    print("growth: extraction seconds per parameter-token (ns), and jaxcirc's speed-up:")
    for name, a, b in rows:
        per = [r["extract_s"] / (r["n_params"] * tok_extract) * 1e9 for r in (a, b)]
        print(
            f"  {name}: jaxcirc {per[0]:.3f} ns, transformers {per[1]:.3f} ns; jaxcirc / "
            f"transformers: extraction {b['extract_s'] / a['extract_s']:.2f}x, steering "
            f"{b['steer_s'] / a['steer_s']:.2f}x ({b['steer_s'] / a['steer_first_s']:.2f}x with "
            f"its first call), heads {b['heads_s'] / a['heads_s']:.2f}x"
        )


def main(argv):
    del argv
    if FLAGS.role == "main":
        return main_role()
    if FLAGS.role == "save":
        return save(FLAGS.model)
    run = run_jaxcirc if FLAGS.role == "jaxcirc" else run_transformers
    print(json.dumps(run(checkpoint_folder(FLAGS.model))))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
