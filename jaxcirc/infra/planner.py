"""The study's plan before any heavy work: from the config alone (no weights), each model's
params bytes per device, the activation and KV-cache bytes of one batch, each phase's work
(forward tokens, generated tokens, head-sweep passes, FLOPs) and an estimated time from a
short matmul calibration; and whether it fits the memory at hand.

    plan = make_plan(cfg)          # configs only: published shapes, stand-in shapes, config.json
    print(format_plan(plan, calibrate()))
    check_fits(plan)               # ValueError (one line naming the fix) when a model cannot fit

Every figure is an estimate and says so where it prints. Tokens per prompt: the dataset's
characters / 4 (GPT-2 BPE averages about 4 characters per English token), plus BOS when
prepended. FLOPs: 2 x (block matmul params) per token per forward, plus 2 x d_model x d_vocab
per token whose logits are read (each generated token), plus attention 4 x n_layers x d_model x
context per token. Activations of one batch: the recorded residual stream of every layer plus
one layer's attention probabilities and MLP hidden, fp32, split over the mesh. The KV cache:
2 x n_layers x (prompt + new tokens) x d_model per row in the model's dtype. Time: FLOPs /
(measured matmul rate, times the devices on an accelerator; CPU devices share the cores): a
floor, not counting compiles, Python and host statistics. Batch settings "auto" are planned at
the sizes jaxcirc.infra.batches fits to the memory at hand (`batch_bytes` is what it fits).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from jaxcirc.data.emotions import EMOTIONAL

# Devices are planned full to this share of their memory: XLA's own buffers and fragmentation.
MEMORY_SHARE = 0.85
_GIB = 1 << 30
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclasses.dataclass(frozen=True)
class PhaseWork:
    """One phase's work for one model: tokens run forward (prompts and re-runs), tokens
    generated, head-sweep passes (prompt x removed head x ablation kind), FLOPs, and the peak
    bytes per device of one batch's activations or KV cache."""

    phase: str
    forward_tokens: int
    generated_tokens: int
    sweep_passes: int
    flops: float
    batch_bytes: float


@dataclasses.dataclass(frozen=True)
class ModelPlan:
    """One model on the mesh: its shape, params (count, bytes per device), host bytes while
    loading, and each phase's work."""

    label: str
    config: object  # models.ModelConfig
    dtype: str
    n_params: int
    params_bytes_per_device: float
    load_host_bytes: float
    streamed: bool
    phases: list[PhaseWork]

    @property
    def peak_bytes_per_device(self) -> float:
        return self.params_bytes_per_device + max((p.batch_bytes for p in self.phases), default=0)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The study's plan: the mesh (data, model), the devices it runs on and the memory each
    has (host memory on CPU, shared by every CPU device), and one ModelPlan per model."""

    data: int
    model: int
    platform: str
    n_devices: int
    memory_per_device: float
    host_memory: float
    models: list[ModelPlan]


# ---------------------------------------------------------------------------------------------
# Models and prompts from the config alone


def model_configs(cfg, strict: bool = True) -> list[tuple[str, object]]:
    """[(label, models.ModelConfig)] of the config's models, without weights: a stand-in's
    shape, a local folder's config.json, or a published checkpoint's shape by its hub name.
    A source that is none of these raises ValueError, or with strict=False is left out (the
    check before a run plans what it can; loading then says where it looked)."""
    import models

    mc = cfg.models
    if mc.kind == "standin":
        from jaxcirc.demo import standins

        shape = standins.StandinShape(**mc.shape.to_dict()) if "shape" in mc else None
        shape = shape or standins.StandinShape()
        return [
            (standins.standin_label(f, shape), standins.standin_config(f, shape=shape))
            for f in mc.families
        ]
    out = []
    for src in mc.sources:
        folder = Path(src.source).expanduser()
        if (folder / "config.json").is_file():
            from models import checkpoint

            hf = checkpoint.read_config(folder)
        else:
            try:
                hf = models.published_hf_config(src.source)
            except ValueError:
                if not strict:
                    continue
                raise ValueError(
                    f"config.models.sources[{src.label!r}]: {src.source!r} is neither a folder "
                    "with config.json nor a published shape; give a local folder to plan it"
                ) from None
        out.append((src.label, models.config_from_hf(hf, name=src.label)))
    return out


# English GPT-2 BPE: about 4 characters per token; Japanese (sentencepiece): about 1.5.
_CHARS_PER_TOKEN = {"en": 4.0, "ja": 1.5}


@dataclasses.dataclass(frozen=True)
class Prompts:
    """What the phases run on: prompts per class, real-world texts, and the mean tokens per
    text (estimated from characters, see the module docstring)."""

    emotional: int
    neutral: int
    realworld: int
    tokens: int


def prompt_counts(cfg) -> Prompts:
    """The dataset section's records counted (the shipped set or its file; no tokenizer)."""
    from jaxcirc.phases import dataset as dataset_phase

    inputs = dataset_phase.load_inputs(cfg.dataset)
    texts = [r.text for r in inputs.prompts] + [r.text for r in inputs.realworld]
    per = _CHARS_PER_TOKEN.get(cfg.dataset.language, 4.0)
    mean = np.mean([math.ceil(len(t) / per) for t in texts]) if texts else 1.0
    emotional = sum(r.emotion in EMOTIONAL for r in inputs.prompts)
    return Prompts(
        emotional=emotional,
        neutral=len(inputs.prompts) - emotional,
        realworld=len(inputs.realworld),
        tokens=int(math.ceil(mean)) + int(bool(cfg.get("prepend_bos", False))),
    )


# ---------------------------------------------------------------------------------------------
# Params and per-token costs

_MATMULS = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out")


@dataclasses.dataclass(frozen=True)
class Shape:
    """A model's sizes the plan needs: params (all, block matmuls), bytes per device, and the
    mesh it is split on ({'data': n, 'model': n})."""

    cfg: object
    n_params: int
    n_matmul: int
    bytes_per_device: float
    sizes: dict


def shape_of(cfg, dtype: str, sizes: dict) -> Shape:
    """Params of `cfg` counted from their shapes (no arrays made) and split as
    models.sharding's rules split them on a mesh of `sizes`."""
    import jax

    from models.sharding import fit_spec, partition_specs
    from models.transformer import param_shapes

    shapes = param_shapes(cfg)
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    specs = jax.tree_util.tree_leaves(
        partition_specs(shapes), is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
    )
    n_params = n_matmul = 0
    per_device = 0.0
    for (path, leaf), spec in zip(leaves, specs, strict=True):
        n = int(np.prod(leaf.shape))
        n_params += n
        n_matmul += n if str(getattr(path[-1], "key", "")) in _MATMULS else 0
        split = [sizes[a] for a in fit_spec(spec, tuple(leaf.shape), sizes) if a is not None]
        per_device += n * _BYTES[dtype] / int(np.prod(split, dtype=np.int64))
    return Shape(cfg, n_params, n_matmul, per_device, sizes)


def forward_flops(s: Shape, context: int) -> float:
    """FLOPs of one token through every block at `context` keys (no logits)."""
    return 2.0 * s.n_matmul + 4.0 * s.cfg.n_layers * s.cfg.d_model * context


def logit_flops(s: Shape) -> float:
    """FLOPs of one token's logits (the unembedding)."""
    return 2.0 * s.cfg.d_model * s.cfg.d_vocab


def activation_bytes(s: Shape, batch: int, tokens: int) -> float:
    """One batch's activations per device: every layer's residual stream recorded, one layer's
    attention probabilities and MLP hidden, fp32; batch split over 'data', heads and MLP
    width over 'model'."""
    c, data, model = s.cfg, s.sizes["data"], s.sizes["model"]
    per_token = c.d_model * (c.n_layers + 1) + (c.n_heads * tokens + c.d_mlp) / model
    return 4.0 * math.ceil(batch / data) * tokens * per_token


def kv_cache_bytes(s: Shape, rows: int, tokens: int, dtype: str) -> float:
    """Keys and values of `rows` rows of `tokens` tokens, every layer, per device (rows over
    'data', heads over 'model')."""
    c, data, model = s.cfg, s.sizes["data"], s.sizes["model"]
    heads = math.ceil(c.n_heads / model) if c.n_heads % model == 0 else c.n_heads
    return 2.0 * c.n_layers * math.ceil(rows / data) * tokens * heads * c.d_head * _BYTES[dtype]


def batch_bytes(cfg, s: Shape, p: Prompts, setting: str, batch: int) -> float:
    """Bytes per device of one batch of `batch` under the batch setting `setting` (one of
    jaxcirc.infra.batches.SETTINGS, e.g. "steering.batch_rows"): what each phase's work below
    counts, and what "auto" sizes are fitted against (KV caches in the models section's dtype)."""
    dtype = str(cfg.models.get("dtype", "float32"))
    if setting == "extract.batch_size" or setting == "steering.prefill_rows":
        return activation_bytes(s, batch, p.tokens)
    if setting == "heads.batch_size":  # `chunk` head rows ride on every prompt of the batch
        return activation_bytes(s, batch * int(cfg.heads.chunk), p.tokens)
    if setting == "steering.batch_rows":
        return kv_cache_bytes(s, batch, p.tokens + int(cfg.steering.max_new_tokens), dtype)
    if setting == "heads_generation.batch_rows":
        new = int(cfg.heads_generation.n_new)
        return kv_cache_bytes(s, batch, p.tokens + new, dtype)
    raise ValueError(f"{setting!r} is no batch setting; see jaxcirc.infra.batches.SETTINGS")


# ---------------------------------------------------------------------------------------------
# Each phase's work for one model


def extract_work(cfg, s: Shape, p: Prompts, copies: int) -> PhaseWork:
    """Every prompt once forward, for the model and its `copies` random-init controls."""
    n = (p.emotional + p.neutral) * (1 + copies)
    fwd = n * p.tokens
    batch = batch_bytes(cfg, s, p, "extract.batch_size", int(cfg.extract.batch_size))
    return PhaseWork("extract", fwd, 0, 0, fwd * forward_flops(s, p.tokens), batch)


def steering_work(cfg, s: Shape, p: Prompts, dtype: str) -> PhaseWork:
    """Generation under every (direction, layer, alpha != 0) cell on the neutral and real-world
    prompts (plus their unsteered runs); forward-only readouts under the random directions past
    the `n_random_seeds` generated ones (`n_random_internal` in all); patching runs per source
    emotion, site and layer on the neutral prompts."""
    sc, L = cfg.steering, s.cfg.n_layers
    prompts = min(int(sc.max_prompts), p.neutral) + p.realworld
    layers = len(sc.layers) or L
    alphas = sum(float(a) != 0 for a in sc.alphas)
    rows = steering_rows(cfg, L, p)
    new = int(sc.max_new_tokens)
    extra = max(int(sc.n_random_internal), int(sc.n_random_seeds)) - int(sc.n_random_seeds)
    internal = extra * layers * alphas * prompts
    patch = len(sc.patch_emotions) * len(sc.patch_sites) * (len(sc.patch_layers) or L)
    # Steered rows and readouts re-run from their layer: (L + 1) / 2 of the L blocks on average.
    rerun = (L + 1) / (2 * L)
    fwd = (rows + internal + patch * min(int(sc.max_prompts), p.neutral)) * p.tokens
    gen = rows * new
    flops = (fwd - (rows + internal) * p.tokens * (1 - rerun)) * forward_flops(s, p.tokens)
    flops += gen * (forward_flops(s, p.tokens + new) + logit_flops(s))
    kv = batch_bytes(cfg, s, p, "steering.batch_rows", min(int(sc.batch_rows), rows))
    act = batch_bytes(cfg, s, p, "steering.prefill_rows", min(int(sc.prefill_rows), rows))
    return PhaseWork("steering", fwd, gen, 0, flops, max(kv, act))


def steering_rows(cfg, n_layers: int, p: Prompts) -> int:
    """Rows the steering phase generates for a model of `n_layers`: every (direction, layer,
    alpha != 0) cell on the neutral and real-world prompts, plus their unsteered runs."""
    sc = cfg.steering
    prompts = min(int(sc.max_prompts), p.neutral) + p.realworld
    layers = len(sc.layers) or n_layers
    alphas = sum(float(a) != 0 for a in sc.alphas)
    dirs = len(EMOTIONAL) + int(sc.n_random_seeds)
    return dirs * layers * alphas * prompts + prompts


def heads_work(cfg, s: Shape, p: Prompts) -> PhaseWork:
    """The head screen on the emotional prompts: the exact sweep removes each head under each
    ablation kind and re-runs the layers above it ((n_layers + 1) / 2 blocks on average), direct
    attribution is one forward, attribution patching a forward and a backward (~3 forwards)."""
    hc, c = cfg.heads, s.cfg
    n, tokens, kinds = p.emotional + p.neutral, p.tokens, len(hc.kinds)
    methods = set(hc.methods)
    passes = n * c.n_layers * c.n_heads * kinds if "exact" in methods else 0
    per_pass = forward_flops(s, tokens) * (c.n_layers + 1) / (2 * c.n_layers)
    forwards = 1 + ("direct" in methods) + 3 * ("attribution" in methods)
    fwd = n * tokens * forwards + passes * tokens
    flops = n * tokens * forwards * forward_flops(s, tokens) + passes * tokens * per_pass
    batch = batch_bytes(cfg, s, p, "heads.batch_size", int(hc.batch_size))
    gen = cfg.get("heads_generation")
    if gen is not None and gen.get("enabled", True):
        rows = int(gen.batch_rows)
        batch = max(batch, batch_bytes(cfg, s, p, "heads_generation.batch_rows", rows))
    return PhaseWork("heads", fwd, 0, passes, flops, batch)


def cross_model_work(cfg, s: Shape, p: Prompts, n_models: int, dtype: str) -> PhaseWork:
    """As the target: its own vector and each other model's mapped vector, each with
    `n_random_seeds` random directions, at every alpha, on `max_prompts` neutral prompts."""
    xc, new = cfg.cross_model, int(cfg.steering.max_new_tokens)
    prompts = min(int(xc.max_prompts), p.neutral)
    rows = n_models * len(xc.alphas) * (1 + int(xc.n_random_seeds)) * prompts + prompts
    gen = rows * new
    flops = rows * p.tokens * forward_flops(s, p.tokens) + gen * (
        forward_flops(s, p.tokens + new) + logit_flops(s)
    )
    kv = batch_bytes(cfg, s, p, "steering.batch_rows", min(int(cfg.steering.batch_rows), rows))
    return PhaseWork("cross_model", rows * p.tokens, gen, 0, flops, kv)


def phase_works(cfg, s: Shape, p: Prompts, dtype: str, n_models: int) -> list[PhaseWork]:
    """The work of every configured phase that runs the model (the others are host statistics
    on saved activations: vectors, alignment, report)."""
    phases = set(cfg.phases)
    out = []
    if phases & {"extract", "vectors", "alignment", "steering", "heads", "cross_model"}:
        two = n_models > 1 and "alignment" in phases
        copies = int(cfg.alignment.random_init_draws) if two else 0
        out.append(extract_work(cfg, s, p, copies))
    if "steering" in phases:
        out.append(steering_work(cfg, s, p, dtype))
    if "heads" in phases:
        out.append(heads_work(cfg, s, p))
    if "cross_model" in phases and n_models > 1 and "alignment" in phases:
        out.append(cross_model_work(cfg, s, p, n_models, dtype))
    return out


# ---------------------------------------------------------------------------------------------
# The plan, its fit, and the machine


def host_memory() -> float:
    """Bytes of host memory available now (Linux MemAvailable; else all physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def device_memory(devices) -> float:
    """Bytes each device holds: its allocator's limit on an accelerator; on CPU the host's
    available memory (which every CPU device shares)."""
    if devices[0].platform == "cpu":
        return host_memory()
    stats = devices[0].memory_stats() or {}
    return float(stats.get("bytes_limit", 0)) or host_memory()


def load_host_bytes(n_params: int, per_device: float, n_devices: int, cpu: bool, streamed: bool):
    """Host bytes while loading: streamed, runs of rows (models.stream) beside the params
    themselves on CPU; otherwise the checkpoint's tensors and their fp32 conversion at once."""
    from models.stream import CHUNK_BYTES

    if streamed:
        return 3 * CHUNK_BYTES + (per_device * n_devices if cpu else 0)
    return 8.0 * n_params


def make_plan(cfg, devices=None, strict: bool = True, memory=None) -> Plan:
    """The plan of `cfg` on `devices` (default jax.devices(), the first data x model of them);
    strict: see `model_configs`; memory: (bytes per device, host bytes) instead of what the
    machine reports (to plan for another machine). Batch settings must be whole numbers:
    jaxcirc.infra.batches resolves "auto" (and plans through this function)."""
    import jax

    mesh = cfg.get("mesh")
    data, model = (int(mesh.data), int(mesh.model)) if mesh is not None else (1, 1)
    devices = (jax.devices() if devices is None else devices)[: data * model]
    cpu = devices[0].platform == "cpu"
    dtype = str(cfg.models.get("dtype", "float32"))
    streamed = bool(cfg.models.get("stream", False))
    sizes = {"data": data, "model": model}
    prompts = prompt_counts(cfg)
    configs = model_configs(cfg, strict)
    plans = []
    for label, mcfg in configs:
        s = shape_of(mcfg, dtype, sizes)
        host = load_host_bytes(s.n_params, s.bytes_per_device, len(devices), cpu, streamed)
        works = phase_works(cfg, s, prompts, dtype, len(configs))
        plans.append(
            ModelPlan(label, mcfg, dtype, s.n_params, s.bytes_per_device, host, streamed, works)
        )
    per_device, host = memory or (device_memory(devices), host_memory())
    return Plan(data, model, devices[0].platform, len(devices), per_device, host, plans)


def shortfall(plan: Plan, m: ModelPlan) -> str | None:
    """What does not fit for model `m` (None when it fits), with the fixes that would help."""
    cpu = plan.platform == "cpu"
    peak = m.peak_bytes_per_device * (plan.n_devices if cpu else 1)
    where = "of host memory (every CPU device shares it)" if cpu else "per device"
    have = (plan.host_memory if cpu else plan.memory_per_device) * MEMORY_SHARE
    host_have = plan.host_memory * MEMORY_SHARE
    if peak <= have and m.load_host_bytes <= host_have:
        return None
    if peak > have:
        need = f"needs {peak / _GIB:.1f} GiB {where}, {have / _GIB:.1f} GiB usable"
    else:
        need = f"loading needs {m.load_host_bytes / _GIB:.1f} GiB of host memory, "
        need += f"{host_have / _GIB:.1f} GiB usable"
    fixes = []
    if not cpu:
        fixes.append("more devices on the model axis (--config.mesh.model)")
    if m.dtype == "float32":
        fixes.append("bf16 (--config.models.dtype=bfloat16)")
    if not m.streamed:
        fixes.append("streamed loading (--config.models.stream=True)")
    if max(p.batch_bytes for p in m.phases) > 0.25 * m.params_bytes_per_device:
        fixes.append(
            "a smaller batch (extract.batch_size, steering.batch_rows, heads.batch_size; "
            "'auto' fits each to the memory at hand)"
        )
    fixes.append("a machine with more memory" if cpu else "devices with more memory")
    return f"model {m.label!r} does not fit: {need}; use " + ", or ".join(fixes)


def together(plan: Plan) -> str | None:
    """The study holds every model at once (loaded before the first phase): their params per
    device together plus the largest batch must fit too. What does not, or None."""
    if len(plan.models) < 2:
        return None
    params = sum(m.params_bytes_per_device for m in plan.models)
    batch = max(p.batch_bytes for m in plan.models for p in m.phases) if plan.models else 0
    cpu = plan.platform == "cpu"
    need = (params + batch) * (plan.n_devices if cpu else 1)
    have = (plan.host_memory if cpu else plan.memory_per_device) * MEMORY_SHARE
    if need <= have:
        return None
    return (
        f"the {len(plan.models)} models together need {need / _GIB:.1f} GiB "
        f"{'of host memory' if cpu else 'per device'} (the study holds them all at once), "
        f"{have / _GIB:.1f} GiB usable; run fewer models per config (config.models.sources), "
        + ("or a machine with more memory" if cpu else "or more devices on --config.mesh.model")
    )


def problems(plan: Plan) -> list[str]:
    """Every model that does not fit alone, then whether they fit together (one line each)."""
    out = [s for m in plan.models if (s := shortfall(plan, m))]
    return out + [s for s in [together(plan)] if s]


def check_fits(plan: Plan) -> None:
    """ValueError (one line naming the fix) for the first thing that does not fit."""
    found = problems(plan)
    if found:
        raise ValueError(found[0])


def calibrate(dtype: str = "float32", n: int = 1024, reps: int = 4) -> float:
    """FLOP/s of an n x n matmul in `dtype` on the default device (compiled first, then timed
    over `reps` calls): what the plan's times divide by."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2.0 * n**3 * reps / max(time.perf_counter() - t0, 1e-9)


def _gib(x: float) -> str:
    return f"{x / _GIB:.2f} GiB"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def format_plan(plan: Plan, flops_per_s: float) -> str:
    """The plan as text: the machine, then per model its params, loading, each phase's work
    and estimated time, and whether it fits (the one-line reason when not)."""
    speed = flops_per_s * (1 if plan.platform == "cpu" else plan.n_devices)
    lines = [
        f"plan (estimates; module jaxcirc.infra.planner says how): mesh {plan.data}x{plan.model} "
        f"(data x model) on {plan.n_devices} {plan.platform} device(s), "
        f"{_gib(plan.memory_per_device)} per device, {_gib(plan.host_memory)} host memory "
        f"available; matmul {flops_per_s / 1e9:.1f} GFLOP/s measured per device",
    ]
    for m in plan.models:
        c = m.config
        lines.append(
            f"model {m.label}: {c.family}, {c.n_layers} layers, d_model {c.d_model}, "
            f"{c.n_heads} heads, {m.n_params / 1e6:.0f}M params in {m.dtype}: "
            f"{_gib(m.params_bytes_per_device)} per device; loading "
            f"{'streamed' if m.streamed else 'whole'}, {_gib(m.load_host_bytes)} host peak"
        )
        lines.append(
            f"  {'phase':<12}{'fwd tokens':>12}{'gen tokens':>12}{'sweep passes':>14}"
            f"{'TFLOP':>10}{'batch/device':>14}{'est. time':>11}"
        )
        for p in m.phases:
            lines.append(
                f"  {p.phase:<12}{p.forward_tokens:>12,}{p.generated_tokens:>12,}"
                f"{p.sweep_passes:>14,}{p.flops / 1e12:>10.2f}{_gib(p.batch_bytes):>14}"
                f"{_duration(p.flops / speed):>11}"
            )
        total = sum(p.flops for p in m.phases) / speed
        short = shortfall(plan, m)
        verdict = f"DOES NOT FIT HERE: {short}" if short else "fits"
        lines.append(
            f"  peak {_gib(m.peak_bytes_per_device)} per device; phases >= "
            f"{_duration(total)}; {verdict}"
        )
    both = together(plan)
    if both:
        lines.append(f"all models at once: DOES NOT FIT HERE: {both}")
    return "\n".join(lines)
