"""Validate a study config in full before any work: every error is one line that names the setting
and the fix (the scripts turn it into exit status 2).

    check(cfg)                        # everything the config alone decides
    check_layers(cfg, label, n_layers)  # what needs a model's depth (after loading it)
    check_dataset(cfg, class_counts)    # what needs the prompts (after reading them)

Each section has one function, next to the others, so a new setting gets its check here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from jaxcirc.data.emotions import EMOTIONAL, LANGUAGES

PHASES = (
    "dataset",
    "checkpoints",
    "extract",
    "vectors",
    "alignment",
    "steering",
    "heads",
    "cross_model",
    "cross_language",
    "report",
)
# Valid in cfg.phases but not run by default: the study across training checkpoints needs its
# own config section (configs/demo.py:training, configs/paper.py:training).
# English vs Japanese needs English models beside Japanese ones (configs/demo.py:japanese).
OPTIONAL_PHASES = ("checkpoints", "cross_language")
# The English study: every phase but the optional ones (configs.common.base_config).
DEFAULT_PHASES = tuple(p for p in PHASES if p not in OPTIONAL_PHASES)
_VECTOR_METHODS = ("sentence_end", "token", "token_delta")
_CENTRES = ("raw", "neutral", "grand")


def _fail(setting: str, value, fix: str) -> None:
    raise ValueError(f"config.{setting}={value!r}: {fix}")


def _int_at_least(cfg, section: str, name: str, low: int) -> None:
    v = cfg[section][name]
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        _fail(f"{section}.{name}", v, f"use a whole number >= {low}")


def _batch(cfg, section: str, name: str) -> None:
    """A batch setting (jaxcirc.infra.batches.SETTINGS): a whole number >= 1, or "auto"."""
    v = cfg[section][name]
    if v == "auto":
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        _fail(
            f"{section}.{name}",
            v,
            "use a whole number >= 1, or 'auto' (the largest that fits the memory at hand)",
        )


def _level(cfg, section: str, name: str = "level") -> None:
    v = cfg[section][name]
    if not isinstance(v, int | float) or not 0 < v < 1:
        _fail(f"{section}.{name}", v, "use a confidence level strictly between 0 and 1, e.g. 0.95")


def _subset(cfg, section: str, name: str, allowed: Sequence[str], empty_ok: bool = False) -> None:
    v = cfg[section][name]
    values = [v] if isinstance(v, str) else list(v)
    if not values and not empty_ok:
        _fail(f"{section}.{name}", v, f"empty; choose from {list(allowed)}")
    bad = [x for x in values if x not in allowed]
    if bad:
        _fail(f"{section}.{name}", v, f"unknown {bad}; choose from {list(allowed)}")


def _one_of(cfg, section: str, name: str, allowed: Sequence[str]) -> None:
    v = cfg[section][name]
    if v not in allowed:
        _fail(f"{section}.{name}", v, f"choose one of {list(allowed)}")


def _strengths(cfg, section: str, name: str = "alphas") -> None:
    v = cfg[section][name]
    try:
        values = [float(a) for a in v]
    except (TypeError, ValueError):
        _fail(f"{section}.{name}", v, "use a list of numbers, e.g. (-4.0, 4.0)")
    if not any(a != 0 for a in values):
        _fail(f"{section}.{name}", v, "give at least one nonzero strength, e.g. (-4.0, 4.0)")


def check_phases(names: Iterable[str], what: str) -> None:
    unknown = [p for p in names if p not in PHASES]
    if unknown:
        raise ValueError(f"{what} name unknown phase(s) {unknown}; choose from {list(PHASES)}")


def _top(cfg) -> None:
    check_phases(cfg.phases, "config.phases")
    if "checkpoints" in cfg.phases and "checkpoints" not in cfg:
        _fail(
            "phases",
            list(cfg.phases),
            "'checkpoints' needs a checkpoints section; use "
            "configs/demo.py:training or configs/paper.py:training",
        )
    if "cross_language" in cfg.phases and (
        "cross_language" not in cfg or cfg.dataset.language != "ja"
    ):
        _fail(
            "phases",
            list(cfg.phases),
            "'cross_language' needs a cross_language section and dataset.language 'ja'; use "
            "configs/demo.py:japanese",
        )
    if cfg.models.kind not in ("standin", "checkpoint"):
        _fail("models.kind", cfg.models.kind, "use 'standin' or 'checkpoint'")
    if cfg.models.kind == "checkpoint" and not cfg.models.sources:
        _fail("models.sources", list(cfg.models.sources), "empty; name at least one checkpoint")
    workers = cfg.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        _fail("workers", workers, "use a positive number of threads (1 = none)")
    if cfg.dataset.set not in ("baseline", "extended"):
        _fail("dataset.set", cfg.dataset.set, "use 'baseline' or 'extended'")
    _one_of(cfg, "dataset", "language", LANGUAGES)
    _batch(cfg, "extract", "batch_size")


def _vectors(cfg) -> None:
    _subset(cfg, "vectors", "methods", _VECTOR_METHODS)
    _subset(cfg, "vectors", "centres", _CENTRES)
    _subset(cfg, "vectors", "probe_features", ("sentence_end", "span_mean"))
    for name, low in (("n_perm", 1), ("probe_folds", 2), ("probe_n_perm", 1), ("n_boot", 10)):
        _int_at_least(cfg, "vectors", name, low)
    if not 1 <= cfg.vectors.subspace_k <= len(EMOTIONAL):
        _fail("vectors.subspace_k", cfg.vectors.subspace_k, "use 1, 2 or 3")
    _level(cfg, "vectors")


def _alignment(cfg) -> None:
    a = cfg.alignment
    if not 1 <= a.k <= len(EMOTIONAL):
        _fail("alignment.k", a.k, "use 1, 2 or 3")
    _one_of(cfg, "alignment", "subspace_from", ("sentence_end", "token"))
    _one_of(cfg, "alignment", "fit_on", ("all_tokens", "sentence_end", "prompt_mean"))
    if not a.ridges_rel or any(float(r) < 0 for r in a.ridges_rel):
        _fail("alignment.ridges_rel", a.ridges_rel, "give one or more ridge strengths >= 0")
    if not 0 < a.test_fraction < 1:
        _fail("alignment.test_fraction", a.test_fraction, "use a share between 0 and 1")
    _int_at_least(cfg, "alignment", "n_perm", 1)
    _int_at_least(cfg, "alignment", "n_boot", 10)
    _int_at_least(cfg, "alignment", "layer_stride", 1)
    _int_at_least(cfg, "alignment", "random_init_draws", 0)
    _int_at_least(cfg, "alignment", "random_init_seed", 0)
    _level(cfg, "alignment")


def _steering(cfg) -> None:
    s = cfg.steering
    _one_of(cfg, "steering", "vector_method", _VECTOR_METHODS)
    _one_of(cfg, "steering", "vector_centre", _CENTRES)
    _strengths(cfg, "steering")
    if not s.alpha_unit > 0:
        _fail("steering.alpha_unit", s.alpha_unit, "use a positive share of the residual norm")
    for name, low in (
        ("max_prompts", 1),
        # Every text verdict is read against the random directions: at least one.
        ("n_random_seeds", 1),
        ("max_new_tokens", 1),
        ("min_new_tokens", 0),
        ("n_boot", 1),
        ("samples_per_cell", 0),
        ("window_step", 1),
        ("top_k", 0),
        ("n_random_internal", 0),
        ("n_control_text", 0),
        ("n_label_shuffled", 0),
        ("label_shuffle_seed", 0),
        ("repetition_n", 1),
        ("loss_rows", 1),
        ("coherence_prompts", 0),
        ("patch_n_flip", 1),
    ):
        _int_at_least(cfg, "steering", name, low)
    for name in ("coherence_repetition_rise", "coherence_loss_rise"):
        v = s[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            _fail(f"steering.{name}", v, "use a rise >= 0 over the unsteered continuations")
    v = s.verdict_level
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < 1:
        _fail("steering.verdict_level", v, "use a significance level between 0 and 1, e.g. 0.05")
    if s.temperature < 0:
        _fail("steering.temperature", s.temperature, "use 0 (greedy) or a positive temperature")
    _level(cfg, "steering", "ci_level")
    _subset(cfg, "steering", "patch_sites", ("resid_pre", "attn_out", "mlp_out"))
    _one_of(cfg, "steering", "patch_positions", ("last", "all"))
    _subset(cfg, "steering", "patch_emotions", EMOTIONAL, empty_ok=True)
    _batch(cfg, "steering", "batch_rows")
    _batch(cfg, "steering", "prefill_rows")


def _heads(cfg) -> None:
    _subset(cfg, "heads", "methods", ("exact", "direct", "attribution"))
    _subset(cfg, "heads", "measures", ("projection", "logit_diff"))
    _subset(cfg, "heads", "kinds", ("zero", "mean"))
    _one_of(cfg, "heads", "vector_method", _VECTOR_METHODS)
    _one_of(cfg, "heads", "vector_centre", _CENTRES)
    _one_of(cfg, "heads", "strategy", ("fold", "vmap", "map"))
    for name, low in (("max_len", 1), ("chunk", 1), ("n_random", 1)):
        _int_at_least(cfg, "heads", name, low)
    _batch(cfg, "heads", "batch_size")
    _int_at_least(cfg, "heads", "grad_chunk", 1)
    for name, low in (("top_k", 1), ("n_boot", 1), ("n_perm", 1)):
        _int_at_least(cfg, "heads", name, low)
    _level(cfg, "heads")


def _heads_extras(cfg) -> None:
    if "heads_circuits" in cfg and cfg.heads_circuits.get("enabled", True):
        _subset(cfg, "heads_circuits", "modes", ("ablation", "patching"))
        _one_of(cfg, "heads_circuits", "measure", ("projection", "logit_diff"))
        _one_of(cfg, "heads_circuits", "kind", ("zero", "mean"))
        for name in ("k_max", "beam", "n_boot", "chunk", "set_chunk"):
            _int_at_least(cfg, "heads_circuits", name, 1)
        _int_at_least(cfg, "heads_circuits", "n_candidates", 0)
        _int_at_least(cfg, "heads_circuits", "n_null", 0)
        n_c, k = cfg.heads_circuits.n_candidates, cfg.heads_circuits.k_max
        if 0 < n_c < k:
            _fail("heads_circuits.n_candidates", n_c, f"use 0 (all heads) or >= k_max={k}")
        _level(cfg, "heads_circuits")
    if "heads_neurons" in cfg and cfg.heads_neurons.get("enabled", True):
        lo_hi = tuple(cfg.heads_neurons.layers)
        if len(lo_hi) != 2 or not 0 <= int(lo_hi[0]) < int(lo_hi[1]):
            _fail("heads_neurons.layers", lo_hi, "use [first, last) with 0 <= first < last")
        _subset(cfg, "heads_neurons", "kinds", ("zero", "mean"))
        for name in ("n_exact", "top_k", "chunk", "n_boot", "grad_chunk"):
            _int_at_least(cfg, "heads_neurons", name, 1)
        _int_at_least(cfg, "heads_neurons", "n_random", 0)
        _level(cfg, "heads_neurons")
    if "heads_generation" in cfg and cfg.heads_generation.get("enabled", True):
        _subset(cfg, "heads_generation", "modes", ("ablation", "patching"))
        _subset(cfg, "heads_generation", "kinds", ("zero", "mean"))
        for name, low in (("n_new", 1), ("n_control", 1), ("n_boot", 1), ("top_k", 0)):
            _int_at_least(cfg, "heads_generation", name, low)
        _batch(cfg, "heads_generation", "batch_rows")
        _int_at_least(cfg, "heads_generation", "max_neutral", 0)
        _level(cfg, "heads_generation")


def _cross_model(cfg) -> None:
    c = cfg.cross_model
    if not 0 <= c.relative_depth <= 1:
        _fail("cross_model.relative_depth", c.relative_depth, "use a share of depth in [0, 1]")
    _strengths(cfg, "cross_model")
    if c.ridge < 0:
        _fail("cross_model.ridge", c.ridge, "use a ridge strength >= 0")
    _int_at_least(cfg, "cross_model", "max_prompts", 1)
    _int_at_least(cfg, "cross_model", "n_random_seeds", 1)
    _int_at_least(cfg, "cross_model", "n_perm", 1)
    if not 0 < c.test_fraction < 1:
        _fail("cross_model.test_fraction", c.test_fraction, "use a share between 0 and 1")
    _level(cfg, "cross_model")


def _checkpoints(cfg) -> None:
    """The study across training checkpoints (configs.sections.checkpoints), where configured."""
    c = cfg.checkpoints
    steps = list(c.steps)
    if (
        len(steps) < 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in steps)
        or steps != sorted(set(steps))
    ):
        _fail("checkpoints.steps", c.steps, "give two or more ascending whole steps >= 0")
    if (
        cfg.models.kind == "standin"
        and "train" in cfg.models
        and steps[-1] != cfg.models.train.steps
    ):
        _fail("checkpoints.steps", c.steps, f"end at models.train.steps={cfg.models.train.steps}")
    if cfg.models.kind == "checkpoint" and "{step}" not in c.revision:
        _fail(
            "checkpoints.revision", c.revision, "write the revision with {step}, e.g. 'step{step}'"
        )
    _subset(cfg, "checkpoints", "analyses", ("probe", "cosines", "overlap", "maps", "onset"))
    _subset(cfg, "checkpoints", "probe_features", ("sentence_end", "span_mean"))
    _one_of(cfg, "checkpoints", "vector_feature", ("sentence_end", "span_mean"))
    for name, low in (
        ("probe_folds", 2),
        ("probe_n_perm", 1),
        ("n_perm", 1),
        ("n_boot", 10),
        ("batch_size", 1),
    ):
        _int_at_least(cfg, "checkpoints", name, low)
    if not 1 <= c.subspace_k <= len(EMOTIONAL):
        _fail("checkpoints.subspace_k", c.subspace_k, "use 1, 2 or 3")
    if c.map_ridge_rel < 0:
        _fail("checkpoints.map_ridge_rel", c.map_ridge_rel, "use a ridge strength >= 0")
    if not 0 < c.map_test_fraction < 1:
        _fail("checkpoints.map_test_fraction", c.map_test_fraction, "use a share between 0 and 1")
    _level(cfg, "checkpoints")


def check(cfg) -> None:
    """Every check the config alone decides; raises ValueError (one line) at the first error."""
    _top(cfg)
    _vectors(cfg)
    _alignment(cfg)
    _steering(cfg)
    _heads(cfg)
    _heads_extras(cfg)
    _cross_model(cfg)
    if "checkpoints" in cfg:
        _checkpoints(cfg)
    if "mesh" in cfg:
        check_mesh(cfg)
    _model_loading(cfg)


def _model_loading(cfg) -> None:
    """models.dtype (checkpoints' params and compute dtype) and models.stream, where set."""
    mc = cfg.models
    if "dtype" in mc and mc.dtype not in ("float32", "bfloat16", "float16", "auto"):
        _fail("models.dtype", mc.dtype, "choose one of ['float32', 'bfloat16', 'float16', 'auto']")
    if "stream" in mc and not isinstance(mc.stream, bool):
        _fail("models.stream", mc.stream, "use True or False")


def check_mesh(cfg) -> None:
    """mesh.data and mesh.model: whole numbers >= 1 whose product is 1 (one device, no mesh)
    or the number of devices jax sees (asked only then, so a 1x1 config never starts jax)."""
    for name in ("data", "model"):
        _int_at_least(cfg, "mesh", name, 1)
    n = cfg.mesh.data * cfg.mesh.model
    if n == 1:
        return
    import jax

    have = jax.device_count()
    if n != have:
        _fail(
            "mesh",
            f"{cfg.mesh.data}x{cfg.mesh.model}",
            f"data x model = {n} devices, but {have} are available; set "
            f"--config.mesh.data and --config.mesh.model to sizes whose product is {have} "
            "(1x1 = one device)",
        )


def check_layers(cfg, model_label: str, n_layers: int) -> None:
    """Every layer the config names must exist in the model (steering adds at resid_pre[l])."""
    for section, field in (
        ("steering", "layers"),
        ("steering", "patch_layers"),
        ("heads", "layers"),
    ):
        layers = cfg[section].get(field) if section in cfg else None
        if not layers:
            continue
        bad = [int(layer) for layer in layers if not 0 <= int(layer) < n_layers]
        if bad:
            raise ValueError(
                f"config.{section}.{field} names layer(s) {bad} but {model_label} has layers "
                f"0..{n_layers - 1}; fix the config"
            )


def check_dataset(cfg, counts: dict[str, int], where: str) -> None:
    """The prompt set must hold every class, with at least `vectors.probe_folds` prompts each
    (the probe's stratified folds need one prompt per class in every fold)."""
    folds = int(cfg.vectors.probe_folds)
    small = {e: n for e, n in counts.items() if n < folds}
    if small:
        raise ValueError(
            f"{where}: classes {small} have fewer prompts than config.vectors.probe_folds={folds}; "
            f"add prompts or lower --config.vectors.probe_folds"
        )
