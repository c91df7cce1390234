"""Loading a sharded checkpoint: jaxcirc's streamed load vs transformers' from_pretrained.

    python benchmarks/bench_loading.py                      # random Pythia-1B, fp32, 200 MB shards
    python benchmarks/bench_loading.py --ckpt_dtype=float16 # stored as Pythia ships it

A random model of a published shape (`--model`, transformers' own initialisation) is saved once
by transformers' `save_pretrained(max_shard_size=...)` into `--workdir` (model-0000k-of-0000n
safetensors and their index; ~4 GB for Pythia-1B in fp32, kept for the next run unless
`--nokeep`). Then each loader runs in a subprocess of its own, one after the other, and prints:

- baseline: the process's peak RSS after its imports, before loading (the interpreter, jax or
  torch, and their libraries);
- peak: the process's peak RSS (`resource.getrusage` ru_maxrss) once the model is loaded;
- params: the bytes of the loaded parameters. On a CPU backend jax's device memory IS host
  memory, as torch's is, so the params count in the RSS of every loader;
- touched: the peak RSS once every parameter has been read (a sum over each). transformers
  keeps fp32 parameters as views of the memory-mapped files, resident only once read, so its
  load-time peak leaves out pages a forward pass brings in; jaxcirc's params are resident
  after the load already;
- overhead = max(peak, touched) - baseline - params: what loading needed beyond holding the
  model, to be set against the checkpoint's largest tensor (the issue's target for the streamed
  load: peak below 1.3x the largest tensor plus the baseline, which on a CPU backend reads:
  overhead below 1.3x the largest tensor, the params themselves being the device's);
- seconds: wall time of the load call, and cpu: the process's CPU time in it (on a shared
  machine the wall time includes waiting for a core; CPU time does not). transformers' fp32
  load maps the files and reads nothing yet: its reading shows in touch_s, the seconds of the
  sum over every parameter.

Loaders: jaxcirc_stream (`models.load(stream=True)`, fp32 and bf16), jaxcirc_whole (the
in-memory path, `stream=False`, params cache off: reads the whole state dict, converts it),
transformers (`AutoModelForCausalLM.from_pretrained`, fp32 and bf16). A checksum of a few
tensors is printed per loader, so a run that loaded something else shows.
"""

from __future__ import annotations

import sys as _sys
from pathlib import Path as _Path

# Runnable as a file (python benchmarks/bench_x.py) as well as a module (-m benchmarks.bench_x).
_sys.path.insert(0, str(_Path(__file__).resolve().parents[1]))

import json
import os
import resource
import shutil
import subprocess
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "pythia-1b", "published shape of the random model")
flags.DEFINE_string("ckpt_dtype", "float32", "dtype the checkpoint is saved in")
flags.DEFINE_string("shard_size", "200MB", "transformers' max_shard_size")
flags.DEFINE_string("workdir", "/tmp/jaxcirc_bench_loading", "where the checkpoint is saved")
flags.DEFINE_bool("keep", True, "keep the checkpoint for the next run")
flags.DEFINE_list(
    "loaders",
    [
        "jaxcirc_stream",
        "jaxcirc_stream_bf16",
        "transformers",
        "transformers_bf16",
        "jaxcirc_whole",
    ],
    "loaders to run, each in its own subprocess",
)
flags.DEFINE_string("role", "main", "internal: main | save | load")
flags.DEFINE_string("loader", "", "internal: the loader a load subprocess runs")

MB = 1 << 20


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _checkpoint_dir() -> _Path:
    return _Path(FLAGS.workdir) / f"{FLAGS.model}-{FLAGS.ckpt_dtype}-{FLAGS.shard_size}"


def save_checkpoint(folder: _Path):
    """The random model saved by transformers in shards (run in a subprocess: torch's copy of
    the model must not count in any loader's RSS)."""
    import torch
    import transformers

    from models import families

    cfg = dict(families.published_hf_config(FLAGS.model))
    config = transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model = model.to(getattr(torch, FLAGS.ckpt_dtype))
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, max_shard_size=FLAGS.shard_size)
    tmp.rename(folder)


def _load_jaxcirc(folder: _Path, loader: str):
    """(result, params bytes, touch): `models.load` of the checkpoint, timed."""
    import jax
    import numpy as np

    import models

    dtype = "bfloat16" if loader.endswith("bf16") else "float32"
    stream = loader.startswith("jaxcirc_stream")
    t, cpu = time.perf_counter(), time.process_time()
    m = models.load(
        str(folder), stream=stream, dtype=dtype, with_tokenizer=False, use_param_cache=False
    )
    jax.block_until_ready(m.params)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    p = m.params
    sums = {
        "W_E[:4]": float(np.asarray(p["embed"]["W_E"][:4], np.float32).sum()),
        "W_in[0]": float(np.asarray(p["blocks"]["mlp"]["W_in"][0], np.float32).sum()),
    }
    if "unembed" in p:
        sums["W_U[:, :4]"] = float(np.asarray(p["unembed"]["W_U"][:, :4], np.float32).sum())
    n_bytes = sum(a.nbytes for a in jax.tree_util.tree_leaves(p))
    # Device buffers, written in full while loading: nothing left to bring in.
    return {"seconds": seconds, "cpu": cpu, "checksums": sums}, n_bytes, lambda: None


def _load_transformers(folder: _Path, loader: str):
    """(result, params bytes, touch): `from_pretrained` of the checkpoint, timed."""
    import torch
    import transformers

    dtype = torch.bfloat16 if loader.endswith("bf16") else torch.float32
    t, cpu = time.perf_counter(), time.process_time()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    state = model.state_dict()
    base = "gpt_neox" if "gpt_neox.embed_in.weight" in state else "transformer"
    emb = state[f"{base}.embed_in.weight" if base == "gpt_neox" else f"{base}.wte.weight"]
    w_in = next(v for k, v in state.items() if ".0.mlp." in k and k.endswith("weight"))
    sums = {"W_E[:4]": float(emb[:4].float().sum()), "W_in[0]": float(w_in.float().sum())}
    head = state.get("embed_out.weight", state.get("lm_head.weight"))
    if base == "gpt_neox" and head is not None:
        sums["W_U[:, :4]"] = float(head[:4].float().sum())
    # Parameters once (a tied unembedding is the embedding's own tensor).
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

    def touch():
        with torch.no_grad():
            for p in model.parameters():
                p.sum()  # reads every element: every page of a memory-mapped tensor

    return {"seconds": seconds, "cpu": cpu, "checksums": sums}, n_bytes, touch


def load_role(folder: _Path, loader: str):
    """One loader in this process: imports, baseline, load, peak; one JSON line on stdout."""
    if loader.startswith("jaxcirc"):
        import jax  # noqa: F401  - the imports are the baseline

        import models  # noqa: F401
        from benchmarks import common  # noqa: F401  - the persistent compilation cache

        fn = _load_jaxcirc
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        fn = _load_transformers
    baseline = _peak_rss_bytes()
    result, n_bytes, touch = fn(folder, loader)
    peak = _peak_rss_bytes()
    t = time.perf_counter()
    touch()
    result.update(
        loader=loader,
        baseline=baseline,
        peak=peak,
        touched=_peak_rss_bytes(),
        touch_s=time.perf_counter() - t,
        params=n_bytes,
    )
    print("RESULT " + json.dumps(result))


def largest_tensor(folder: _Path) -> tuple[str, int]:
    """(name, bytes) of the checkpoint's largest tensor, from the safetensors headers."""
    from models import checkpoint

    _, files = checkpoint.weight_files(folder)
    best = ("", 0)
    for f in files:
        with open(f, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        for name, info in header.items():
            if name != "__metadata__":
                size = info["data_offsets"][1] - info["data_offsets"][0]
                best = max(best, (name, size), key=lambda x: x[1])
    return best


def _run(role: str, loader: str = "") -> subprocess.CompletedProcess:
    args = [_sys.executable, __file__, f"--role={role}", f"--loader={loader}"]
    args += [f"--{k}={getattr(FLAGS, k)}" for k in ("model", "ckpt_dtype", "shard_size", "workdir")]
    return subprocess.run(args, capture_output=True, text=True, env=os.environ.copy())


def main_role():
    from benchmarks import common

    folder = _checkpoint_dir()
    if not folder.is_dir():
        print(f"saving a random {FLAGS.model} ({FLAGS.ckpt_dtype}) in {FLAGS.shard_size} shards")
        t = time.perf_counter()
        out = _run("save")
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        print(f"  saved in {time.perf_counter() - t:.0f} s")
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    total = sum(f.stat().st_size for f in shards)
    name, biggest = largest_tensor(folder)
    print(f"machine: {common.machine()}")
    print(
        f"checkpoint: {FLAGS.model} random, {FLAGS.ckpt_dtype}, {len(shards)} shards, "
        f"{total / MB:.0f} MiB; largest tensor {name} {biggest / MB:.0f} MiB"
    )
    rows = []
    for loader in FLAGS.loaders:
        out = _run("load", loader)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            print(f"{loader}: failed (rc {out.returncode}): {out.stderr[-1500:]}")
            continue
        rows.append(json.loads(line[0][len("RESULT ") :]))
        r = rows[-1]
        print(f"  {loader}: checksums {r['checksums']}")
    print()
    head = f"{'loader':20s} {'seconds':>7s} {'cpu':>5s} {'touch_s':>7s} {'baseline':>8s}"
    print(head + f" {'peak':>6s} {'touched':>7s} {'params':>6s} {'overhead':>8s} /largest  (MiB)")
    for r in rows:
        over = max(r["peak"], r["touched"]) - r["baseline"] - r["params"]
        print(
            f"{r['loader']:20s} {r['seconds']:7.1f} {r['cpu']:5.1f} {r['touch_s']:7.1f} "
            f"{r['baseline'] / MB:8.0f} {r['peak'] / MB:6.0f} {r['touched'] / MB:7.0f} "
            f"{r['params'] / MB:6.0f} {over / MB:8.0f} {over / biggest:8.2f}"
        )
    print(f"\nlargest tensor: {biggest / MB:.0f} MiB ({name}); target for jaxcirc_stream: ")
    print("  overhead/largest < 1.3 (peak < baseline + params + 1.3 x largest tensor)")
    if not FLAGS.keep:
        shutil.rmtree(folder)


def main(argv):
    del argv
    if FLAGS.role == "save":
        save_checkpoint(_checkpoint_dir())
    elif FLAGS.role == "load":
        load_role(_checkpoint_dir(), FLAGS.loader)
    else:
        main_role()


if __name__ == "__main__":
    app.run(main)
