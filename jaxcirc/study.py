"""The whole study, phase by phase, into one run directory.

    run_study(cfg, workdir)            # every phase in cfg.phases, then the report
    run_phase("vectors", cfg, workdir) # one phase (and whatever it needs that is not done yet)

Every phase module in `jaxcirc.phases` has one interface, `run(inputs, section, out_dir) ->
summary`. The study loads each phase's inputs from the stages before it and gives it its config
`section` (built by `phase_sections`): the phase reads nothing else. Each phase is a `Stage` of
the run directory (jaxcirc.infra.artifacts) whose key is exactly that section, the phase's code
VERSION and the output hashes of the stages it reads, so no phase can read a setting its key
does not cover: an interrupted run resumes where it stopped, and a changed setting recomputes
exactly the phases that read it. Models are loaded lazily: a rerun whose phases are all done
loads nothing.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import os
import shutil
import threading
import time
from pathlib import Path

import ml_collections

from jaxcirc import config_check
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations
from jaxcirc.data.emotions import EMOTIONAL, NEUTRAL
from jaxcirc.infra import artifacts, batches, compile_cache, distributed, progress, runlock
from jaxcirc.phases import alignment as alignment_phase
from jaxcirc.phases import checkpoints as checkpoints_phase
from jaxcirc.phases import cross_language as cross_language_phase
from jaxcirc.phases import cross_model as cross_model_phase
from jaxcirc.phases import dataset as dataset_phase
from jaxcirc.phases import extract as extract_phase
from jaxcirc.phases import heads as heads_phase
from jaxcirc.phases import steering as steering_phase
from jaxcirc.phases import vectors as vectors_phase

PHASES = config_check.PHASES

# Bump when every phase's outputs change meaning; each phase module has its own VERSION too.
STUDY_VERSION = 1


def log(msg: str):
    """Phase-level progress on stderr (silent with JAXCIRC_QUIET=1)."""
    if os.environ.get("JAXCIRC_QUIET", "") != "1":
        progress.write_line(f"[jaxcirc] {msg}")


# ---------------------------------------------------------------------------------------------
# Models


@functools.lru_cache(maxsize=4)
def _load_models_cached(cfg_json: str, workers: int = 1):
    # cfg_json: {"models": ..., "mesh": ...}; workers: the stand-ins train all at once when
    # above 1 (`_load_models`).
    cfg = dict(json.loads(cfg_json), workers=workers)
    return _load_models(ml_collections.ConfigDict(cfg))


def _load_models(cfg):
    import models

    mc = cfg.models
    if mc.kind == "standin":
        from jaxcirc.demo import standins

        train_cfg = standins.TrainConfig(**mc.train.to_dict()) if "train" in mc else None
        loaded, metrics = standins.load_or_train(
            Path(mc.cache_dir).expanduser(),
            families=tuple(mc.families),
            train_cfg=train_cfg,
            data=standin_corpus(mc),
            shape=_standin_shape(mc),
            # With threads at all, every stand-in trains at once: three models in three
            # threads took 8-13% less wall time than two and then one (benchmarks/RESULTS.md).
            workers=len(mc.families) if int(cfg.get("workers", 1)) > 1 else 1,
        )
        notes = {label: "trained stand-in; " + m.summary() for label, m in metrics.items()}
        return loaded, notes
    out, notes = {}, {}
    for src in mc.sources:
        src = ml_collections.ConfigDict(src) if isinstance(src, dict) else src
        log(f"loading {src.label} from {src.source}")
        out[src.label] = models.load(
            src.source,
            revision=src.get("revision") or None,
            cache_dir=mc.get("hf_cache") or None,
            **_load_options(cfg),
        )
        notes[src.label] = f"checkpoint {src.source}" + (
            f" @ {src.revision}" if src.get("revision") else ""
        )
    return out, notes


def load_models(cfg) -> tuple[dict, dict]:
    """({label: LoadedModel}, {label: a note on where it came from}), validated against the
    config's layer choices, with their params on the config's mesh (`on_mesh`)."""
    what = {"models": cfg.models.to_dict()}
    if "mesh" in cfg:  # streamed checkpoints are placed on it as they load
        what["mesh"] = cfg.mesh.to_dict()
    blob = json.dumps(what, sort_keys=True, default=lambda o: o.to_dict())
    loaded, notes = _load_models_cached(blob, int(cfg.get("workers", 1)))
    loaded = {label: on_mesh(cfg, m) for label, m in loaded.items()}
    for label, m in loaded.items():
        config_check.check_layers(cfg, label, m.config.n_layers)
    return loaded, notes


def _load_options(cfg) -> dict:
    """models.load's dtype, streaming and mesh from the config (`models.dtype`, `models.stream`,
    `mesh`); {} when the config names none of them (the defaults: fp32, whole, one device)."""
    mc, out = cfg.models, {}
    if mc.get("dtype", "float32") != "float32":
        out["dtype"] = mc.dtype
    if mc.get("stream", False):
        out["stream"] = True
        out["mesh"] = study_mesh(cfg)
    return out


def study_mesh(cfg):
    """The config's (data, model) device mesh (models.sharding.make_mesh); None for 1x1 or a
    config without a mesh section: one device, exactly the program without a mesh."""
    from models import sharding

    mesh = cfg.get("mesh")
    return None if mesh is None else sharding.make_mesh(int(mesh.data), int(mesh.model))


def on_mesh(cfg, m):
    """`m` with its params placed on the config's mesh by models.sharding's partition rules
    (`m` itself without a mesh). The weights' identity (source, cache key) is unchanged."""
    mesh = study_mesh(cfg)
    if mesh is None:
        return m
    from models import sharding

    return dataclasses.replace(m, params=sharding.shard_params(m.params, mesh))


def mesh_context(cfg):
    """A context in which compiled calls see the config's mesh (`jax.set_mesh`), so batches
    split over its 'data' axis (models.sharding.constrain_batch); a no-op without one. The
    context is per thread: `Study.compute` enters it in the thread running each phase."""
    import contextlib

    mesh = study_mesh(cfg)
    if mesh is None:
        return contextlib.nullcontext()
    import jax

    return jax.set_mesh(mesh)


def _without_mesh(d: dict) -> dict:
    """The config as the report's stage key holds it: without the mesh, which changes no
    figure beyond float reduction order (configs/common.py), so a run resumes under another;
    and without models.dtype / models.stream at their defaults (fp32, whole), so run
    directories made before those settings existed keep their report."""
    out = {k: v for k, v in d.items() if k != "mesh"}
    mc = dict(out.get("models") or {})
    if mc.get("dtype") == "float32":
        del mc["dtype"]
    if mc.get("stream") is False:
        del mc["stream"]
    if "models" in out:
        out["models"] = mc
    return out


def model_identity(m) -> dict:
    """What identifies a model's weights for stage keys."""
    ident = {"config": m.config.to_dict(), "cache_key": m.cache_key, "source": m.source}
    if m.dtype != "float32":  # only then: fp32 models keep the keys they always had
        ident["dtype"] = m.dtype
    if not m.cache_key:
        ident["params"] = artifacts.config_hash(m.params)
    return ident


def model_labels(cfg) -> list[str]:
    if cfg.models.kind == "checkpoint":
        return [s.label for s in cfg.models.sources]
    from jaxcirc.demo import standins

    shape = _standin_shape(cfg.models)
    lang = cfg.models.get("language", "en")
    return [standins.standin_label(f, shape, lang) for f in cfg.models.families]


def standin_corpus(mc):
    """The stand-ins' `DemoCorpus` from a models section: English unless it names a `language`
    (and then its `vocab_size`; configs/demo.py:japanese)."""
    from jaxcirc.demo import standins

    lang = mc.get("language", "en")
    vocab = mc.get("vocab_size", standins.DEMO_VOCAB_SIZE)
    return standins.DemoCorpus(mc.corpus_lines, mc.seed, vocab, language=lang)


def _standin_shape(mc):
    from jaxcirc.demo import standins

    return standins.StandinShape(**mc.shape.to_dict()) if "shape" in mc else standins.StandinShape()


# ---------------------------------------------------------------------------------------------
# What each phase reads of the config


def _section(d: dict) -> ml_collections.ConfigDict:
    # Locked: a phase that reads a setting its section lacks fails at once instead of reading a
    # value its stage key does not cover.
    return ml_collections.ConfigDict(d).lock()


def _heads_section(cfg, n_layers: int | None) -> ml_collections.ConfigDict:
    """The heads phase's settings: the screen, and the future-work parts the config turns on
    (`circuits`, `neurons`, `generation`), with the study's BOS choice and a neuron range past
    the model's last layer clipped to its last two layers (the demo's stand-ins have 4)."""
    out = {"heads": cfg.heads.to_dict()}
    for name in ("circuits", "neurons", "generation"):
        sub = cfg.get(f"heads_{name}")
        if sub is None or not sub.get("enabled", True):
            continue
        d = sub.to_dict()
        d.pop("enabled", None)
        if "prepend_bos" in d:
            d["prepend_bos"] = cfg.prepend_bos
        if name == "neurons" and n_layers is not None:
            lo, hi = (int(x) for x in d["layers"])
            if hi > n_layers:
                lo, hi = max(0, n_layers - 2), n_layers
            d["layers"] = (lo, hi)
        out[name] = d
    return _section(out)


def phase_sections(cfg, phase: str, n_layers: int | None = None) -> ml_collections.ConfigDict:
    """The config section `phase` runs with, and the one its stage key covers.

    n_layers: the model's depth, for the heads phase (its neuron range is fitted to it)."""
    if phase == "extract":
        return _section({"batch_size": cfg.extract.batch_size, "prepend_bos": cfg.prepend_bos})
    if phase == "heads":
        return _heads_section(cfg, n_layers)
    if phase == "cross_model":
        return _section({"cross_model": cfg.cross_model.to_dict(), "steering": cfg.steering})
    if phase == "report":
        return _section(_without_mesh(cfg.to_dict()))
    if phase == "cross_language":
        return _cross_language_section(cfg)
    return _section(cfg[phase].to_dict())


def _cross_language_section(cfg) -> ml_collections.ConfigDict:
    """English vs Japanese reads its own section, the alignment's (map, nulls, controls), the
    cross-model and steering sections (patching) and the extraction's settings."""
    names = ("cross_language", "alignment", "cross_model", "steering")
    d = {name: cfg[name].to_dict() for name in names}
    d["extract"] = {"batch_size": cfg.extract.batch_size, "prepend_bos": cfg.prepend_bos}
    return _section(d)


def english_models_section(cfg) -> ml_collections.ConfigDict:
    """The models section of the English models English vs Japanese pairs with the study's:
    stand-ins of `cross_language.english_families` at the study's stand-in shape and training
    (English corpus), or the checkpoints `cross_language.english_sources`."""
    cl, d = cfg.cross_language, cfg.models.to_dict()
    if cfg.models.kind == "checkpoint":
        d["sources"] = [dict(s) for s in cl.english_sources]
    else:
        for key in ("language", "vocab_size"):  # the English corpus and BPE defaults
            d.pop(key, None)
        d["families"] = list(cl.english_families)
        d["cache_dir"] = cl.english_cache_dir
    return ml_collections.ConfigDict(d)


# ---------------------------------------------------------------------------------------------
# The run


@dataclasses.dataclass
class Study:
    """One run: the config, the run directory, the models (loaded on first use) and the stages
    finished so far (reported when a run is interrupted). Across processes (infra.distributed)
    a process other than 0 has a `scratch` directory: its stages are `FollowerStage`s, which
    write there and read process 0's run directory."""

    cfg: ml_collections.ConfigDict
    run: artifacts.RunDir
    scratch: Path | None = None
    finished: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    _models: dict | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    @property
    def models(self) -> dict:
        with self._lock:
            if self._models is None:
                self._models, notes = load_models(self.cfg)
                if self.scratch is None:
                    artifacts.write_json(
                        self.run.path("models.json"), _model_info(self._models, notes)
                    )
        return self._models

    def identity(self, label: str) -> dict:
        """Model identity without loading the model when the config alone identifies it."""
        if self.cfg.models.kind == "standin":
            return {"standin": self.cfg.models.to_dict(), "label": label}
        return model_identity(self.models[label])

    def stage(self, name: str, phase: str, section, **upstream) -> artifacts.Stage:
        module = _MODULES[phase]
        key = {
            "version": STUDY_VERSION,
            "phase": phase,
            "code": getattr(module, "VERSION", 1),
            "cfg": section.to_dict(),
            **upstream,
        }
        if self.scratch is not None:
            return distributed.FollowerStage(self.run.root, name, key, self.scratch)
        return self.run.stage(name, key)

    def is_done(self, stage: artifacts.Stage) -> bool:
        """Whether `stage` is done, as process 0 sees it (every process skips or computes it
        together: a compute enters collectives that all processes must enter)."""
        return distributed.agree(stage.done)

    def compute(self, stage: artifacts.Stage, what: str, fn) -> str:
        """Run `fn()` (which writes the stage's files) unless the stage is done; finish the stage
        with every file it wrote; log its time, compile time and compile count."""
        if self.is_done(stage):
            self.skipped.append(stage.name)
            return stage.output_hash()
        log(what)
        t0 = time.perf_counter()
        with compile_cache.CompileCounter() as cc, mesh_context(self.cfg):
            summary = fn()
        if summary is not None:
            artifacts.write_json(stage.path("summary.json"), summary)
        seconds = time.perf_counter() - t0
        timing = {
            "seconds": round(seconds, 2),
            "compile_seconds": round(cc.compile_seconds, 2),
            "compiles": cc.compiles,
            "compile_cache_hits": cc.cache_hits,
        }
        stage.finish(_listing(stage), meta={"timing": timing})
        distributed.barrier(f"stage {stage.name}")  # process 0's stamp is written
        self.finished.append(stage.name)
        log(f"{stage.name}: {seconds:.1f} s ({cc})")
        return stage.output_hash()

    def records(self, name: str) -> list[dataset.Record]:
        path = self.run.root / "dataset" / f"{name}.jsonl"
        return (
            dataset.read_jsonl(path, expect_balanced=name != "realworld") if path.exists() else []
        )

    def acts(self, label: str) -> Activations:
        return Activations.load(
            self.run.root / "extract" / artifacts.slug(label) / "activations.npz"
        )


def _model_info(loaded: dict, notes: dict) -> dict:
    return {
        label: {
            "family": m.config.family,
            "n_layers": m.config.n_layers,
            "d_model": m.config.d_model,
            "n_heads": m.config.n_heads,
            "d_vocab": m.config.d_vocab,
            "notes": notes.get(label, ""),
        }
        for label, m in loaded.items()
    }


def _listing(stage) -> dict[str, str]:
    """Every file under the stage directory (subfolders too) but the stamp, as its outputs."""
    return {
        str(p.relative_to(stage.dir)): str(p.relative_to(stage.dir))
        for p in sorted(stage.dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _texts(records, emotion: str | None = None) -> list[str]:
    return [r.text for r in records if emotion is None or r.emotion == emotion]


# ---------------------------------------------------------------------------------------------
# One function per stage: load the inputs from earlier stages, call the phase's run().


def _dataset(st: Study) -> str:
    section = phase_sections(st.cfg, "dataset")
    stage = st.stage("dataset", "dataset", section)
    if st.is_done(stage):
        st.skipped.append("dataset")
        return stage.output_hash()
    inputs = dataset_phase.load_inputs(section)
    where = section.path or f"the shipped {section.set} set"
    config_check.check_dataset(st.cfg, dataset.class_counts(inputs.prompts), where)
    counts = f"prompts {len(inputs.prompts)}, realworld {len(inputs.realworld)}"
    return st.compute(
        stage, f"dataset: {counts} records", lambda: dataset_phase.run(inputs, section, stage.dir)
    )


def _checkpoints(st: Study, ds_hash: str) -> dict[str, str]:
    """{label: output hash}: the study across training checkpoints of each model. The key holds
    what identifies the checkpoints' weights from the config alone, so nothing is loaded (or
    trained) when the stage is done."""
    section = phase_sections(st.cfg, "checkpoints")
    hashes = {}
    for label in model_labels(st.cfg):
        ident = checkpoints_phase.identity(st.cfg, label)
        stage = st.stage(
            f"checkpoints/{artifacts.slug(label)}", "checkpoints", section, ds=ds_hash, model=ident
        )

        def fn(label=label, out_dir=stage.dir):
            inputs = checkpoints_phase.load_inputs(st.cfg, label, st.records("prompts"))
            return checkpoints_phase.run(inputs, section, out_dir)

        n = len(section.steps)
        hashes[label] = st.compute(stage, f"checkpoints: {label}, {n} checkpoints", fn)
    return hashes


def _extract(st: Study, ds_hash: str) -> dict[str, str]:
    section = phase_sections(st.cfg, "extract")
    hashes = {}
    for label in model_labels(st.cfg):
        stage = st.stage(
            f"extract/{artifacts.slug(label)}",
            "extract",
            section,
            ds=ds_hash,
            label=label,
            model=st.identity(label),
        )

        def fn(label=label, out_dir=stage.dir):
            inputs = extract_phase.Inputs(st.models[label], st.records("prompts"), label)
            return extract_phase.run(inputs, section, out_dir)

        hashes[label] = st.compute(stage, f"extract: {label}", fn)
    return hashes


def _extract_controls(st: Study, ds_hash: str) -> dict[str, dict[str, str]]:
    """{label: {stage name: output hash}}: residuals of `alignment.random_init_draws` randomly
    initialised copies of each model (same architecture and tokenizer, params drawn with seed
    `alignment.random_init_seed + j`), on the same prompts. The alignment and cross-model
    phases compare each figure with what such a network, fed the same tokens, gives."""
    draws = int(st.cfg.alignment.random_init_draws)
    seed0 = int(st.cfg.alignment.random_init_seed)
    section = phase_sections(st.cfg, "extract")
    out = {}
    for label in model_labels(st.cfg):
        out[label] = {}
        for j in range(draws):
            name = f"extract/{artifacts.slug(label)}__random-init-{seed0 + j}"
            stage = st.stage(
                name,
                "extract",
                section,
                ds=ds_hash,
                label=label,
                model=st.identity(label),
                random_init_seed=seed0 + j,
            )

            def fn(label=label, seed=seed0 + j, out_dir=stage.dir):
                import models

                m = st.models[label]
                copy = on_mesh(
                    st.cfg, models.random_model(m.config, seed=seed, tokenizer=m.tokenizer)
                )
                copy_label = f"{label} random-init {seed}"
                inputs = extract_phase.Inputs(copy, st.records("prompts"), copy_label)
                return extract_phase.run(inputs, section, out_dir)

            out[label][name] = st.compute(stage, f"extract: {label}, random-init copy {j}", fn)
    return out


def _control_acts(st: Study, controls: dict[str, dict[str, str]]) -> dict[str, list]:
    return {
        label: [Activations.load(st.run.root / name / "activations.npz") for name in stages]
        for label, stages in controls.items()
    }


def _vectors(st: Study, label: str, h: str) -> str:
    section = phase_sections(st.cfg, "vectors")
    stage = st.stage(f"vectors/{artifacts.slug(label)}", "vectors", section, acts=h)

    def fn():
        return vectors_phase.run(vectors_phase.Inputs(st.acts(label)), section, stage.dir)

    return st.compute(stage, f"vectors: {label}", fn)


def _alignment(st: Study, acts_hashes: dict[str, str], controls: dict) -> str | None:
    if len(acts_hashes) < 2:
        log("alignment: skipped (needs two models)")
        return None
    section = phase_sections(st.cfg, "alignment")
    stage = st.stage("alignment", "alignment", section, acts=acts_hashes, controls=controls)

    def fn():
        acts = {label: st.acts(label) for label in acts_hashes}
        inputs = alignment_phase.Inputs(acts, controls=_control_acts(st, controls))
        return alignment_phase.run(inputs, section, stage.dir)

    return st.compute(stage, f"alignment: {len(acts_hashes)} models", fn)


def _emotion_vectors(st: Study, label: str, method: str, centre: str) -> dict:
    """The emotion vectors a later phase uses: {emotion: [layer+1, d_model]} (numpy)."""
    from jaxcirc.core import vectors

    return vectors.emotion_vectors(st.acts(label), method, centre)


def _label_shuffled(st: Study, label: str, section) -> steering_phase.ControlVectors | None:
    """The steering verdicts' second control: `section.n_label_shuffled` vectors
    [n, layer+1, d_model] made like the emotion vectors with the emotion labels permuted among
    the emotional prompts (`vectors.emotion_label_shuffled`); None when n_label_shuffled = 0."""
    from jaxcirc.core import vectors

    n, seed = int(section.n_label_shuffled), int(section.label_shuffle_seed)
    if n == 0:
        return None
    method, centre = section.vector_method, section.vector_centre
    v = vectors.emotion_label_shuffled(st.acts(label), method, centre, n, seed)
    what = (
        f"{method}/{centre} class-mean differences with the emotion labels permuted among the "
        f"emotional prompts (neutral kept; seed {seed}, one permutation each), unit per layer"
    )
    return steering_phase.ControlVectors("label_shuffled", v, what)


def _steering(st: Study, label: str, h: str) -> str:
    section = phase_sections(st.cfg, "steering")
    shuffled = _label_shuffled(st, label, section)
    stage = st.stage(
        f"steering/{artifacts.slug(label)}",
        "steering",
        section,
        vectors=h,
        model=st.identity(label),
        controls=None if shuffled is None else artifacts.config_hash(shuffled.vectors),
    )

    def fn():
        prompts = st.records("prompts")
        inputs = steering_phase.Inputs(
            model=st.models[label],
            neutral=_texts(prompts, NEUTRAL),
            realworld=_texts(st.records("realworld")),
            sources={e: _texts(prompts, e) for e in section.patch_emotions},
            vectors=_emotion_vectors(st, label, section.vector_method, section.vector_centre),
            control_vectors=shuffled,
        )
        return steering_phase.run(inputs, section, stage.dir)

    return st.compute(stage, f"steering: {label}", fn)


def _heads(st: Study, label: str, h: str) -> str:
    n_layers = _depth(st, label)
    section = phase_sections(st.cfg, "heads", n_layers)
    stage = st.stage(
        f"heads/{artifacts.slug(label)}", "heads", section, vectors=h, model=st.identity(label)
    )

    def fn():
        prompts = st.records("prompts")
        hs = section.heads
        inputs = heads_phase.Inputs(
            model=st.models[label],
            model_label=label,
            emotional={e: _texts(prompts, e) for e in EMOTIONAL},
            neutral=_texts(prompts, NEUTRAL),
            vectors=_emotion_vectors(st, label, hs.vector_method, hs.vector_centre),
        )
        return heads_phase.run(inputs, section, stage.dir)

    return st.compute(stage, f"heads: {label}", fn)


def _depth(st: Study, label: str) -> int:
    """A model's number of layers, without loading a stand-in (its config says it)."""
    if st.cfg.models.kind == "standin":
        return int(_standin_shape(st.cfg.models).n_layers)
    return st.models[label].config.n_layers


def _cross_model(
    st: Study, align_hash: str | None, vec_hashes: dict[str, str], controls: dict
) -> str | None:
    if align_hash is None:
        log("cross_model: skipped (needs the alignment phase)")
        return None
    section = phase_sections(st.cfg, "cross_model")
    idents = {lb: st.identity(lb) for lb in vec_hashes}
    stage = st.stage(
        "cross_model",
        "cross_model",
        section,
        align=align_hash,
        vectors=vec_hashes,
        models=idents,
        controls=controls,
    )

    def fn():
        neutral = _texts(st.records("prompts"), NEUTRAL)
        inputs = cross_model_phase.Inputs(
            models=st.models,
            acts={label: st.acts(label) for label in vec_hashes},
            prompts=neutral[: section.cross_model.max_prompts],
            controls=_control_acts(st, controls),
        )
        return cross_model_phase.run(inputs, section, stage.dir)

    what = "cross_model: steering each model with the others' mapped vectors"
    return st.compute(stage, what, fn)


def _cross_language(st: Study, ds_hash: str) -> str:
    """English vs Japanese: the English models (loaded or trained here) beside the study's
    Japanese ones, on the prompts paired by en_id; keyed by both models' identities."""
    section = phase_sections(st.cfg, "cross_language")
    english = english_models_section(st.cfg)
    idents = {lb: st.identity(lb) for lb in model_labels(st.cfg)}
    stage = st.stage(
        "cross_language", "cross_language", section, ds=ds_hash, english=english.to_dict(),
        models=idents,
    )  # fmt: skip

    def fn():
        # The English models on the study's mesh too (load_models places them; streamed
        # checkpoints load straight onto it), or their compiled calls would meet batches split
        # over the mesh with params on one device.
        en_cfg = {"models": english.to_dict(), "workers": int(st.cfg.get("workers", 1))}
        if "mesh" in st.cfg:
            en_cfg["mesh"] = st.cfg.mesh.to_dict()
        en_models, notes = load_models(ml_collections.ConfigDict(en_cfg))
        artifacts.write_json(stage.path("english_models.json"), _model_info(en_models, notes))
        inputs = cross_language_phase.Inputs(
            english=en_models,
            japanese=st.models,
            ja_records=st.records("prompts"),
            en_records=cross_language_phase.en_records(),
        )
        return cross_language_phase.run(inputs, section, stage.dir)

    return st.compute(stage, "cross_language: English vs Japanese models", fn)


def _report(st: Study, upstream: dict) -> Path:
    from jaxcirc import report
    from jaxcirc.report import html

    section = phase_sections(st.cfg, "report")
    stage = st.stage("report", "report", section, upstream=upstream)
    if st.is_done(stage):
        st.skipped.append("report")
    elif st.scratch is not None:  # the report only reads files: process 0 writes it alone
        distributed.barrier("stage report")
    else:
        path = report.write_report(st.run.root, st.cfg, model_labels(st.cfg))
        html.write_html(st.run.root, st.cfg, model_labels(st.cfg))
        stage.finish({"report": "report.md"} if path.parent == stage.dir else _listing(stage))
        distributed.barrier("stage report")
        st.finished.append("report")
    return st.run.root / "report.md"


_MODULES = {
    "dataset": dataset_phase,
    "checkpoints": checkpoints_phase,
    "extract": extract_phase,
    "vectors": vectors_phase,
    "alignment": alignment_phase,
    "steering": steering_phase,
    "heads": heads_phase,
    "cross_model": cross_model_phase,
    "cross_language": cross_language_phase,
    "report": None,
}


# ---------------------------------------------------------------------------------------------
# Orchestration


def _run_tasks(tasks: dict, workers: int, st: Study) -> dict:
    """{key: fn()} for every task, in submission order with one worker, else in a pool of
    `workers` threads. Threads pay on 2 cores because a phase of a small model leaves a core
    idle much of the time (compiling, Python scoring and plotting; XLA releases the GIL), and
    each task writes only its own stage directory. Every task's numbers are what it computes
    alone: its inputs and seeds do not depend on what runs beside it. The first error stops
    the tasks not yet started and is raised; an interrupt (Ctrl-C) sets progress.STOP, so the
    running tasks stop at their next progress step, and is raised at once."""
    # Progress lines name the model whose task prints them: with threads, two models' bars
    # would otherwise interleave under the same description.
    tasks = {k: functools.partial(_labelled, k, fn) for k, fn in tasks.items()}
    if workers <= 1 or len(tasks) <= 1:
        return {k: fn() for k, fn in tasks.items()}
    st.models  # noqa: B018 - load (or train) once, before any thread needs them
    ex = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="jaxcirc")
    futures = {k: ex.submit(fn) for k, fn in tasks.items()}
    try:
        out = {k: f.result() for k, f in futures.items()}
    except BaseException:
        progress.STOP.set()
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)
    return out


def _labelled(key, fn):
    label = key[1] if isinstance(key, tuple) and len(key) > 1 and key[1] else ""
    label = label.split(" (", 1)[0]  # the model's name, without its description
    with progress.labelled(label):
        return fn()


class Interrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C). `message` says which stages finished and that a rerun
    resumes; every file already written is complete (all writes are atomic)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _interrupted(st: Study) -> Interrupted:
    done = ", ".join(st.finished) or "none"
    return Interrupted(
        f"interrupted; stages finished in this run: {done}; every file written is complete, "
        f"and the same command resumes from here"
    )


def _per_model(st: Study, phases: tuple[str, ...], wanted: set, hashes: dict, fns: dict) -> dict:
    return {
        (phase, label): functools.partial(fns[phase], st, label, h)
        for phase in phases
        if phase in wanted and phase in st.cfg.phases
        for label, h in hashes.items()
    }


# The phases that read the extraction's activations: without one of them in cfg.phases (the
# study across training checkpoints), the final models are not extracted.
_READ_ACTS = {"extract", "vectors", "alignment", "steering", "heads", "cross_model"}
# (cross_language extracts the paired prompts itself, but it loads the study's models.)


def _extracts(cfg, wanted: set) -> bool:
    # cross_language extracts its paired prompts itself: `--phases=cross_language` needs none.
    alone = {"dataset", "checkpoints", "cross_language"}
    return bool(_READ_ACTS & set(cfg.phases)) and bool(wanted - alone)


def _run(st: Study, wanted: set) -> Path | None:
    """The phases in order; returns the report's path (None when no report was asked for)."""
    cfg = st.cfg
    ds = _dataset(st)
    in_run = "checkpoints" in cfg.phases and wanted & {"checkpoints", "report"}
    ckpts = _checkpoints(st, ds) if in_run else {}
    acts = _extract(st, ds) if _extracts(cfg, wanted) else {}
    needs_controls = wanted & {"alignment", "cross_model", "report"} and len(acts) > 1
    controls = _extract_controls(st, ds) if needs_controls and "alignment" in cfg.phases else {}
    # One process: `cfg.workers` threads. Across processes, one task at a time: every process
    # must enter the same collectives in the same order, which threads would not keep.
    workers = int(cfg.get("workers", 1)) if distributed.process_count() == 1 else 1
    # Each model's vectors and the alignment read only the activations: independent tasks.
    tasks = {}
    if wanted & {"vectors", "steering", "heads", "cross_model", "report"}:
        tasks = _per_model(st, ("vectors",), {"vectors"}, acts, {"vectors": _vectors})
    if wanted & {"alignment", "cross_model", "report"} and "alignment" in cfg.phases:
        tasks[("alignment", "")] = functools.partial(_alignment, st, acts, controls)
    done = _run_tasks(tasks, workers, st)
    vecs = {label: done[("vectors", label)] for label in acts if ("vectors", label) in done}
    upstream = {"dataset": ds, "extract": acts, "vectors": vecs}
    if ckpts:
        upstream["checkpoints"] = ckpts
    if ("alignment", "") in done:
        upstream["alignment"] = done[("alignment", "")]
    # Steering and heads of each model and the cross-model phase need only the vectors and the
    # alignment: independent tasks, run in `cfg.workers` threads (see `_run_tasks`).
    fns = {"steering": _steering, "heads": _heads}
    tasks = _per_model(st, ("steering", "heads"), wanted, vecs, fns)
    if "cross_model" in wanted and "cross_model" in cfg.phases:
        tasks[("cross_model", "")] = functools.partial(
            _cross_model, st, upstream.get("alignment"), vecs, controls
        )
    if wanted & {"cross_language", "report"} and "cross_language" in cfg.phases:
        tasks[("cross_language", "")] = functools.partial(_cross_language, st, ds)
    done = _run_tasks(tasks, workers, st)
    for phase in ("steering", "heads"):
        if any(p == phase for p, _ in done):
            upstream[phase] = {label: done[(phase, label)] for label in vecs}
    for phase in ("cross_model", "cross_language"):
        if (phase, "") in done:
            upstream[phase] = done[(phase, "")]
    return _report(st, upstream) if "report" in wanted else None


def _check_models(st: Study) -> None:
    """Fail at once on missing weights or a layer the config names that a model lacks, before
    any work; the study across training checkpoints alone loads its checkpoints itself."""
    if not _READ_ACTS & set(st.cfg.phases):
        return
    if st.cfg.models.kind == "checkpoint":
        st.models  # noqa: B018 - loads (and checks) every model
        return
    for label in model_labels(st.cfg):  # a stand-in's depth is in its config
        config_check.check_layers(st.cfg, label, _depth(st, label))


def run_study(cfg, workdir: str, phases: list[str] | None = None) -> Path:
    """Run the configured phases (and what they need) into `workdir`; returns the report path,
    or the run directory when no report was asked for.

    Raises ValueError (one line) on a bad config, before any work; `Interrupted` on Ctrl-C."""
    config_check.check(cfg)
    cfg = batches.resolve(cfg, workdir, log)  # "auto" batch sizes, before any stage key
    config_check.check_phases(phases or [], "the phases asked for")
    wanted = set(phases or cfg.phases)
    t0 = time.time()
    # Absolute, so that every path a phase records is made relative to its file (write_json).
    run = artifacts.RunDir(Path(workdir).absolute())
    with _writer_lock(run) as scratch:
        st = Study(cfg, run, scratch=scratch)
        if scratch is None:
            artifacts.write_json(run.path("config.json"), cfg.to_dict())
        progress.STOP.clear()
        try:
            _check_models(st)
            report_path = _run(st, wanted)
        except KeyboardInterrupt:
            raise _interrupted(st) from None
    if st.skipped:
        log(
            f"resumed: skipped {len(st.skipped)} stage(s) already done with the same settings "
            f"and inputs: {', '.join(st.skipped)}"
        )
    log(f"done in {time.time() - t0:.0f} s; run directory {run.root}")
    return report_path or run.root


@contextlib.contextmanager
def _writer_lock(run: artifacts.RunDir):
    """Process 0 (the only process, usually) holds the run lock and yields None; any other
    process of a distributed run yields a private scratch directory for its discarded stage
    files (removed at the end). All processes meet once the lock is held, so none reads the run
    directory before process 0 owns it."""
    if distributed.is_writer():
        with runlock.hold(run.root):
            distributed.barrier("run lock held")
            yield None
        return
    distributed.barrier("run lock held")
    scratch = distributed.scratch_dir(run.root)
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_phase(name: str, cfg, workdir: str) -> Path:
    """One phase alone (the phases it reads run first if they are not done)."""
    return run_study(cfg, workdir, phases=[name])
