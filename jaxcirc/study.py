"""The whole study, phase by phase, into one run directory.

    run_study(cfg, workdir)            # every phase in cfg.phases, then the report
    run_phase("vectors", cfg, workdir) # one phase (and whatever it needs that is not done yet)

Each phase is a `Stage` of the run directory (jaxcirc.infra.artifacts): its key is the phase's config
section plus the output hashes of the stages it reads, so an interrupted run resumes where it
stopped and a changed config recomputes exactly the phases it affects. Models are loaded lazily:
a rerun whose phases are all done loads nothing.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import time
from pathlib import Path

import ml_collections

from jaxcirc.data import dataset
from jaxcirc.data.emotions import EMOTIONAL
from jaxcirc.infra import artifacts, progress

PHASES = (
    "dataset",
    "extract",
    "vectors",
    "alignment",
    "steering",
    "heads",
    "cross_model",
    "report",
)

# Bump when a phase's outputs change meaning: every stage then recomputes.
STUDY_VERSION = 1


def log(msg: str):
    """Phase-level progress on stderr (silent with JAXCIRC_QUIET=1)."""
    if os.environ.get("JAXCIRC_QUIET", "") != "1":
        progress.write_line(f"[jaxcirc] {msg}")


# ---------------------------------------------------------------------------------------------
# Validation before any work: bad input fails at once with one line.


def validate_config(cfg: ml_collections.ConfigDict):
    _check_phases(cfg.phases, "config.phases")
    if cfg.models.kind not in ("standin", "checkpoint"):
        raise ValueError(f"config.models.kind={cfg.models.kind!r}; use 'standin' or 'checkpoint'")
    if cfg.models.kind == "checkpoint" and not cfg.models.sources:
        raise ValueError("config.models.sources is empty; name at least one checkpoint")
    if cfg.dataset.set not in ("baseline", "extended"):
        raise ValueError(f"config.dataset.set={cfg.dataset.set!r}; use 'baseline' or 'extended'")
    workers = cfg.get("workers", 1)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"config.workers={workers!r}; use a positive number of threads (1 = none)")


def _check_phases(names, what: str):
    unknown = [p for p in names if p not in PHASES]
    if unknown:
        raise ValueError(f"{what} name unknown phase(s) {unknown}; choose from {list(PHASES)}")


def validate_layers(cfg, model_label: str, n_layers: int):
    """Every layer the config names must exist in the model (steering adds at resid_pre[l])."""
    for section, field in (("steering", "layers"), ("heads", "layers")):
        if section not in cfg or field not in cfg[section]:
            continue
        layers = cfg[section][field]
        if layers is None:
            continue
        bad = [int(layer) for layer in layers if not 0 <= int(layer) < n_layers]
        if bad:
            raise ValueError(
                f"config.{section}.{field} names layer(s) {bad} but {model_label} has layers "
                f"0..{n_layers - 1}; fix the config"
            )


# ---------------------------------------------------------------------------------------------
# Inputs


def load_dataset(cfg, run: artifacts.RunDir | None = None) -> dict[str, list[dataset.Record]]:
    """{"prompts": the baseline or extended set, "realworld": the 35 texts}: from the shipped
    prompts, or from `cfg.dataset.path` (a JSONL file in the dataset schema) when set."""
    if cfg.dataset.get("path"):
        prompts = dataset.read_jsonl(cfg.dataset.path)
    else:
        prompts = dataset.build(cfg.dataset.set)
    realworld = dataset.build("realworld") if cfg.dataset.realworld else []
    return {"prompts": prompts, "realworld": realworld}


@functools.lru_cache(maxsize=4)
def _load_models_cached(cfg_json: str):
    return _load_models(ml_collections.ConfigDict({"models": json.loads(cfg_json)}))


def _load_models(cfg):
    import models

    mc = cfg.models
    if mc.kind == "standin":
        from jaxcirc.demo import standins as demo_models

        train_cfg = demo_models.TrainConfig(**mc.train.to_dict()) if "train" in mc else None
        loaded, metrics = demo_models.load_or_train(
            Path(mc.cache_dir).expanduser(),
            families=tuple(mc.families),
            train_cfg=train_cfg,
            n_lines=mc.corpus_lines,
            seed=mc.seed,
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
            src.source, revision=src.get("revision") or None, cache_dir=mc.get("hf_cache") or None
        )
        notes[src.label] = f"checkpoint {src.source}" + (
            f" @ {src.revision}" if src.get("revision") else ""
        )
    return out, notes


def load_models(cfg) -> tuple[dict, dict]:
    """({label: LoadedModel}, {label: a note on where it came from}), validated against the
    config's layer choices."""
    blob = json.dumps(cfg.models.to_dict(), sort_keys=True, default=lambda o: o.to_dict())
    loaded, notes = _load_models_cached(blob)
    for label, m in loaded.items():
        validate_layers(cfg, label, m.config.n_layers)
    return loaded, notes


def model_identity(m) -> dict:
    """What identifies a model's weights for stage keys."""
    ident = {"config": m.config.to_dict(), "cache_key": m.cache_key, "source": m.source}
    if not m.cache_key:
        ident["params"] = artifacts.config_hash(m.params)
    return ident


def model_labels(cfg) -> list[str]:
    if cfg.models.kind == "checkpoint":
        return [s.label for s in cfg.models.sources]
    from jaxcirc.demo import standins as demo_models

    shape = _standin_shape(cfg.models)
    return [demo_models.standin_label(f, shape) for f in cfg.models.families]


def _standin_shape(mc):
    from jaxcirc.demo import standins as demo_models

    return (
        demo_models.StandinShape(**mc.shape.to_dict())
        if "shape" in mc
        else demo_models.StandinShape()
    )


# ---------------------------------------------------------------------------------------------
# The phases


@dataclasses.dataclass
class Study:
    cfg: ml_collections.ConfigDict
    run: artifacts.RunDir
    _models: dict | None = None

    @property
    def models(self) -> dict:
        if self._models is None:
            self._models, notes = load_models(self.cfg)
            info = {
                label: {
                    "family": m.config.family,
                    "n_layers": m.config.n_layers,
                    "d_model": m.config.d_model,
                    "n_heads": m.config.n_heads,
                    "d_vocab": m.config.d_vocab,
                    "notes": notes.get(label, ""),
                }
                for label, m in self._models.items()
            }
            artifacts.write_json(self.run.path("models.json"), info)
        return self._models

    def key(self, phase: str, **upstream) -> dict:
        section = self.cfg[phase].to_dict() if phase in self.cfg else {}
        return {"version": STUDY_VERSION, "phase": phase, "cfg": section, **upstream}


def _phase_dataset(st: Study) -> str:
    cfg = st.cfg
    stage = st.run.stage("dataset", st.key("dataset", ds=cfg.dataset.to_dict()))
    if not stage.done:
        sets = load_dataset(cfg)
        outputs = {}
        for name, records in sets.items():
            if records:
                dataset.write_jsonl(records, stage.path(f"{name}.jsonl"))
                outputs[name] = f"{name}.jsonl"
        stats = {name: dataset.stats(recs) for name, recs in sets.items() if recs}
        artifacts.write_json(stage.path("stats.json"), stats)
        outputs["stats"] = "stats.json"
        stage.finish(outputs)
        log(f"dataset: {', '.join(f'{k} {len(v)}' for k, v in sets.items())} records")
    return stage.output_hash()


def _records(st: Study, name: str) -> list[dataset.Record]:
    path = st.run.root / "dataset" / f"{name}.jsonl"
    return dataset.read_jsonl(path, expect_balanced=name != "realworld") if path.exists() else []


def _phase_extract(st: Study, ds_hash: str) -> dict[str, str]:
    from jaxcirc.phases import extract

    hashes = {}
    for label in model_labels(st.cfg):
        stage_name = f"extract/{artifacts.slug(label)}"
        key_args = dict(ds=ds_hash, bos=st.cfg.prepend_bos, label=label)
        stage = st.run.stage(stage_name, st.key("extract", **key_args, model=_ident(st, label)))
        if not stage.done:
            m = st.models[label]
            log(f"extract: {label}")
            acts = extract.extract_residuals(
                m,
                _records(st, "prompts"),
                prepend_bos=st.cfg.prepend_bos,
                batch_size=st.cfg.extract.batch_size,
                label=label,
            )
            acts.save(stage.path("activations.npz"))
            stage.finish(_listing(stage))
        hashes[label] = stage.output_hash()
    return hashes


def _ident(st: Study, label: str) -> dict:
    """Model identity without loading the model when the config alone identifies it."""
    cfg = st.cfg
    if cfg.models.kind == "standin":
        return {"standin": cfg.models.to_dict(), "label": label}
    return model_identity(st.models[label])


def _listing(stage) -> dict[str, str]:
    """Every file in the stage directory, as the stage's outputs."""
    return {
        p.name: p.name
        for p in sorted(stage.dir.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def _load_acts(st: Study, label: str):
    from jaxcirc.phases import extract

    return extract.Activations.load(
        st.run.root / "extract" / artifacts.slug(label) / "activations.npz"
    )


def _vectors_one(st: Study, label: str, h: str) -> str:
    from jaxcirc.phases import vectors as phase_vectors

    stage = st.run.stage(f"vectors/{artifacts.slug(label)}", st.key("vectors", acts=h))
    if not stage.done:
        log(f"vectors: {label}")
        summary = phase_vectors.run_vectors(_load_acts(st, label), st.cfg.vectors, stage.dir)
        artifacts.write_json(stage.path("summary.json"), summary)
        stage.finish(_listing(stage))
    return stage.output_hash()


def _phase_alignment(st: Study, acts_hashes: dict[str, str]) -> str | None:
    from jaxcirc.phases import alignment as phase_alignment

    if len(acts_hashes) < 2:
        log("alignment: skipped (needs two models)")
        return None
    stage = st.run.stage("alignment", st.key("alignment", acts=acts_hashes))
    if not stage.done:
        log(f"alignment: {len(acts_hashes)} models")
        acts = {label: _load_acts(st, label) for label in acts_hashes}
        summary = phase_alignment.run_alignment(acts, st.cfg.alignment, stage.dir)
        artifacts.write_json(stage.path("summary.json"), summary)
        stage.finish(_listing(stage))
    return stage.output_hash()


def _vectors(st: Study, label: str, kind: str, centre: str) -> dict:
    """The emotion vectors a later phase uses: {emotion: [layer+1, d_model]} (numpy)."""
    from jaxcirc.phases import vectors as phase_vectors

    return phase_vectors.emotion_vectors(_load_acts(st, label), kind, centre)


def _texts(records) -> list[str]:
    return [r.text for r in records]


def _steering_one(st: Study, label: str, h: str) -> str:
    from jaxcirc.phases import steering

    cfg = st.cfg
    stage = st.run.stage(
        f"steering/{artifacts.slug(label)}", st.key("steering", vectors=h, model=_ident(st, label))
    )
    if not stage.done:
        log(f"steering: {label}")
        prompts = _records(st, "prompts")
        neutral = _texts([r for r in prompts if r.emotion == "neutral"])
        inputs = {"neutral": neutral[: cfg.steering.max_prompts]}
        realworld = _texts(_records(st, "realworld"))
        if realworld:
            inputs["realworld"] = realworld
        vecs = _vectors(st, label, cfg.steering.vector_method, cfg.steering.vector_centre)
        summary = {}
        for name, texts in inputs.items():
            out_dir = stage.dir / name
            out_dir.mkdir(parents=True, exist_ok=True)
            summary[name] = steering.run_steering(
                st.models[label], texts, vecs, cfg.steering, out_dir
            )
        summary["patching"] = {}
        for emo in cfg.steering.patch_emotions:
            source = _texts([r for r in prompts if r.emotion == emo])
            pdir = stage.dir / "patching" / emo
            pdir.mkdir(parents=True, exist_ok=True)
            summary["patching"][emo] = steering.run_patching(
                st.models[label],
                inputs["neutral"],
                source[: len(inputs["neutral"])],
                cfg.steering,
                pdir,
                source_label=emo,
                vectors=vecs,
            )
        artifacts.write_json(stage.path("summary.json"), summary)
        stage.finish(_listing_tree(stage))
    return stage.output_hash()


def _listing_tree(stage) -> dict[str, str]:
    """Every file under the stage directory (subfolders too)."""
    return {
        str(p.relative_to(stage.dir)): str(p.relative_to(stage.dir))
        for p in sorted(stage.dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _heads_extras(cfg, n_layers: int) -> dict:
    """The future-work parts of phase 7 the config turns on, with layer ranges fitted to the
    model (a neuron range past the last layer is clipped to the last two layers)."""
    out = {}
    for name in ("circuits", "neurons", "generation"):
        sub = cfg.get(f"heads_{name}")
        if sub is None or not sub.get("enabled", True):
            continue
        d = sub.to_dict()
        d.pop("enabled", None)
        sub = ml_collections.ConfigDict(d)
        for k in ("prepend_bos",):
            if k in sub:
                sub[k] = cfg.prepend_bos
        if name == "neurons":
            lo, hi = (int(x) for x in sub.layers)
            if hi > n_layers:
                lo, hi = max(0, n_layers - 2), n_layers
            sub.layers = (lo, hi)
        out[name] = sub
    return out


def _jsonable(obj):
    """A phase helper's result as something json can hold (dataclasses, arrays, paths)."""
    from jaxcirc.core import stats

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        obj = {
            k: v
            for k, v in obj.items()
            if k in ("rows", "top", "summary", "files", "sets", "effects")
        }
    try:
        return stats.to_jsonable(obj)
    except Exception:  # noqa: BLE001 - the files on disk are the record; the summary is a pointer
        return str(type(obj).__name__)


def _heads_one(st: Study, label: str, h: str) -> str:
    from jaxcirc.phases import circuits, head_generation, heads, neurons

    cfg = st.cfg
    stage = st.run.stage(
        f"heads/{artifacts.slug(label)}",
        st.key(
            "heads",
            vectors=h,
            model=_ident(st, label),
            extras={k: cfg[k].to_dict() for k in cfg if k.startswith("heads_")},
        ),
    )
    if not stage.done:
        log(f"heads: {label}")
        prompts = _records(st, "prompts")
        emotional = {emo: _texts([r for r in prompts if r.emotion == emo]) for emo in EMOTIONAL}
        neutral = _texts([r for r in prompts if r.emotion == "neutral"])
        vecs = _vectors(st, label, cfg.heads.vector_method, cfg.heads.vector_centre)
        # Every score row says which vectors its projection measure used.
        named = {
            "vector_label": f"{cfg.heads.vector_method} emotion vectors, centre="
            f"{cfg.heads.vector_centre}",
            "model_label": label,
        }
        hcfg = ml_collections.ConfigDict({**cfg.heads.to_dict(), **named})
        m = st.models[label]
        res = heads.run_heads(m, emotional, neutral, vecs, hcfg, stage.dir)
        summary = {
            "top": res.top,
            "correlations": res.correlations,
            "files": {k: str(v) for k, v in res.files.items()},
        }
        extra = _heads_extras(cfg, m.config.n_layers)
        for sub in extra.values():
            for k, v in named.items():
                if k in sub:
                    sub[k] = v
        if "circuits" in extra:
            summary["circuits"] = _jsonable(
                circuits.run_circuits(
                    m,
                    emotional,
                    neutral,
                    vecs,
                    extra["circuits"],
                    stage.dir / "circuits",
                    screen_rows=res.rows,
                    word_ids=res.word_ids,
                    tokenize_cfg=cfg.heads,
                )
            )
        if "neurons" in extra:
            summary["neurons"] = _jsonable(
                neurons.run_neurons(
                    m,
                    emotional,
                    neutral,
                    vecs,
                    extra["neurons"],
                    stage.dir / "neurons",
                    word_ids=res.word_ids,
                )
            )
        if "generation" in extra:
            summary["generation"] = _jsonable(
                head_generation.run_head_generation(
                    m,
                    emotional,
                    neutral,
                    extra["generation"],
                    stage.dir / "generation",
                    screen_rows=res.rows,
                )
            )
        artifacts.write_json(stage.path("summary.json"), summary)
        stage.finish(_listing_tree(stage))
    return stage.output_hash()


def _phase_cross_model(st: Study, align_hash: str | None, vec_hashes: dict[str, str]) -> str | None:
    from jaxcirc.phases import cross_model

    if align_hash is None:
        log("cross_model: skipped (needs the alignment phase)")
        return None
    stage = st.run.stage(
        "cross_model",
        st.key(
            "cross_model",
            align=align_hash,
            vectors=vec_hashes,
            models={lb: _ident(st, lb) for lb in vec_hashes},
        ),
    )
    if not stage.done:
        log("cross_model: steering each model with the others' mapped vectors")
        prompts = _records(st, "prompts")
        neutral = _texts([r for r in prompts if r.emotion == "neutral"])
        acts = {label: _load_acts(st, label) for label in vec_hashes}
        summary = cross_model.run_cross_model(
            st.models, acts, neutral[: st.cfg.cross_model.max_prompts], st.cfg, stage.dir
        )
        artifacts.write_json(stage.path("summary.json"), summary)
        stage.finish(_listing_tree(stage))
    return stage.output_hash()


def _phase_report(st: Study, upstream: dict) -> Path:
    from jaxcirc import report

    stage = st.run.stage("report", st.key("report", upstream=upstream))
    if not stage.done:
        path = report.write_report(st.run.root, st.cfg)
        stage.finish({"report": "report.md"} if path.parent == stage.dir else _listing(stage))
    return st.run.root / "report.md"


def _run_tasks(tasks: dict, workers: int, st: Study) -> dict:
    """{key: fn()} for every task, in submission order with one worker, else in a pool of
    `workers` threads. Threads pay on 2 cores because a phase of a small model leaves a core
    idle much of the time (compiling, Python scoring and plotting; XLA releases the GIL), and
    each task writes only its own stage directory. Every task's numbers are what it computes
    alone: its inputs and seeds do not depend on what runs beside it. The first error stops
    the tasks not yet started and is raised."""
    # Progress lines name the model whose task prints them: with threads, two models' bars
    # would otherwise interleave under the same description.
    tasks = {k: functools.partial(_labelled, k, fn) for k, fn in tasks.items()}
    if workers <= 1 or len(tasks) <= 1:
        return {k: fn() for k, fn in tasks.items()}
    st.models  # noqa: B018 - load (or train) once, before any thread needs them
    ex = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="jaxcirc")
    futures = {k: ex.submit(fn) for k, fn in tasks.items()}
    try:
        return {k: f.result() for k, f in futures.items()}
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def _labelled(key, fn):
    label = key[1] if isinstance(key, tuple) and len(key) > 1 and key[1] else ""
    label = label.split(" (", 1)[0]  # the model's name, without its description
    with progress.labelled(label):
        return fn()


def run_study(cfg, workdir: str, phases: list[str] | None = None) -> Path:
    """Run the configured phases (and what they need) into `workdir`; returns the report path."""
    validate_config(cfg)
    _check_phases(phases or [], "the phases asked for")
    wanted = set(phases or cfg.phases)
    t0 = time.time()
    run = artifacts.RunDir(workdir)
    artifacts.write_json(run.path("config.json"), cfg.to_dict())
    st = Study(cfg, run)
    if st.cfg.models.kind == "checkpoint":
        st.models  # noqa: B018 - fail at once on missing weights, before any work
    ds = _phase_dataset(st)
    acts = _phase_extract(st, ds) if wanted - {"dataset"} else {}
    workers = int(cfg.get("workers", 1))
    # Each model's vectors and the alignment read only the activations: independent tasks.
    tasks = {}
    if wanted & {"vectors", "steering", "heads", "cross_model", "report"}:
        for label, h in acts.items():
            tasks[("vectors", label)] = functools.partial(_vectors_one, st, label, h)
    if wanted & {"alignment", "cross_model", "report"} and "alignment" in cfg.phases:
        tasks[("alignment", "")] = functools.partial(_phase_alignment, st, acts)
    done = _run_tasks(tasks, workers, st)
    vecs = {label: done[("vectors", label)] for label in acts if ("vectors", label) in done}
    upstream = {"dataset": ds, "extract": acts, "vectors": vecs}
    if ("alignment", "") in done:
        upstream["alignment"] = done[("alignment", "")]
    # Steering and heads of each model and the cross-model phase need only the vectors and the
    # alignment: independent tasks, run in `cfg.workers` threads (see `_run_tasks`).
    tasks = {}
    for phase, one in (("steering", _steering_one), ("heads", _heads_one)):
        if phase in wanted and phase in cfg.phases:
            for label, h in vecs.items():
                tasks[(phase, label)] = functools.partial(one, st, label, h)
    if "cross_model" in wanted and "cross_model" in cfg.phases:
        tasks[("cross_model", "")] = functools.partial(
            _phase_cross_model, st, upstream.get("alignment"), vecs
        )
    done = _run_tasks(tasks, workers, st)
    for phase in ("steering", "heads"):
        if any(p == phase for p, _ in done):
            upstream[phase] = {label: done[(phase, label)] for label in vecs}
    if ("cross_model", "") in done:
        upstream["cross_model"] = done[("cross_model", "")]
    report_path = None
    if "report" in wanted:
        report_path = _phase_report(st, upstream)
    log(f"done in {time.time() - t0:.0f} s; run directory {run.root}")
    return report_path or run.root


def run_phase(name: str, cfg, workdir: str) -> Path:
    """One phase alone (the phases it reads run first if they are not done)."""
    return run_study(cfg, workdir, phases=[name])
