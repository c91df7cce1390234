"""The study itself: GPT-2 small, Pythia-160M and GPT-Neo-125M, extended set, every phase.

Needs the checkpoints: from the hub when it is reachable, else the Hugging Face cache
(HF_HUB_OFFLINE=1 to skip the network), else local folders (edit `sources`). Fails at once, with
where it looked, when the weights are not there.

    python scripts/run_study.py --config=configs/paper.py --workdir=runs/paper
    python scripts/run_study.py --config=configs/paper.py:training --workdir=runs/training
    python scripts/run_study.py --config=configs/paper.py:japanese --workdir=runs/japanese

`larger`: GPT-2 XL, Pythia-1.4B/2.8B/6.9B, GPT-Neo-1.3B/2.7B in bf16, streamed (see `larger`;
plan it first with `--dry_run`).
`training`: Pythia-160M across 12 of its training checkpoints (jaxcirc.phases.checkpoints).
`japanese`: the whole study on three Japanese checkpoints, one per family the study's models
cover that Japanese ones exist in (rinna's GPT-2 small, rinna's GPT-NeoX small, CyberAgent's
OpenCALM small), with the Japanese extended set, and English vs Japanese beside GPT-2 small.
"""

from __future__ import annotations

import ml_collections

from configs import common, sections
from configs.common import base_config


def _source(label: str, source: str, revision: str = "") -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.label = label  # how outputs name the model
    s.source = source  # hub name or a local folder with config.json + model.safetensors
    s.revision = revision  # hub revision (e.g. Pythia "step143000"); "" = main
    return s


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = base_config()
    c.name = "paper (GPT-2 small, Pythia-160M, GPT-Neo-125M)"
    c.dataset.set = "extended"
    c.steering.max_prompts = 100
    c.models = ml_collections.ConfigDict()
    c.models.kind = "checkpoint"
    c.models.hf_cache = ""  # "" = the default HF cache (HF_HOME / HF_HUB_CACHE)
    # Params and compute dtype: float32 (the study's), bfloat16, float16, or auto (the one
    # config.json names). What stays fp32 whatever it is: models.contract (Numerics).
    c.models.dtype = "float32"
    # Read safetensors tensor by tensor onto the devices (models.stream): host memory stays
    # near one tensor beyond the params, instead of the whole checkpoint converted in fp32.
    c.models.stream = False
    c.models.sources = [
        _source("gpt2", "gpt2"),
        _source("pythia-160m", "EleutherAI/pythia-160m"),
        _source("gpt-neo-125m", "EleutherAI/gpt-neo-125m"),
    ]
    # Batch sizes from the memory at hand (jaxcirc.infra.batches), logged at the start and kept
    # in the run's config.json; a whole number instead is used as given.
    c.extract.batch_size = "auto"
    c.steering.batch_rows = "auto"
    c.steering.prefill_rows = "auto"
    c.heads.batch_size = "auto"
    c.heads_generation.batch_rows = "auto"
    common.lock_sections(c)
    if arg == "larger":
        larger(c)
    elif arg == "training":
        training(c)
    elif arg == "japanese":
        japanese(c)
    elif arg:
        raise ValueError(
            f"configs/paper.py takes '', 'larger', 'training' or 'japanese', not {arg!r}"
        )
    return c


def japanese(c):
    """The study in Japanese on Japanese checkpoints (models.load reads rinna's sentencepiece
    spiece.model and OpenCALM's tokenizer.json / pytorch_model.bin; BOS/EOS as each defines)."""
    from jaxcirc.data import lexicon_ja

    c.name = "paper in Japanese (rinna GPT-2 small, rinna GPT-NeoX small, OpenCALM small)"
    c.dataset.language = "ja"  # prompts, text measures and steering's logit words follow it
    c.models.sources = [
        _source("rinna-gpt2-small", "rinna/japanese-gpt2-small"),
        _source("rinna-gpt-neox-small", "rinna/japanese-gpt-neox-small"),
        _source("open-calm-small", "cyberagent/open-calm-small"),
    ]
    c.heads.logit_words = {e: tuple(w) for e, w in lexicon_ja.EMOTION_LOGIT_WORDS_JA.items()}
    # English vs Japanese: GPT-2 small (English) beside each Japanese model on the prompts
    # paired by en_id.
    c.phases = [p for p in c.phases if p != "report"] + ["cross_language", "report"]
    c.cross_language = sections.cross_language()
    c.cross_language.english_sources = (dict(_source("gpt2", "gpt2")),)
    c.cross_language.max_prompts = 35
    c.cross_language.lock()


def larger(c):
    """The study's future work: larger models of each family, bf16 (half the memory of fp32;
    layer norms, softmax and the residual sums stay fp32, models.contract), streamed onto the
    devices. Check what fits first: `--dry_run` prints the plan (params and KV cache per
    device, each phase's work and time) and names what does not fit here and the fix (more
    devices on --config.mesh.model, fewer models per config); the batch sizes, "auto", follow
    the memory the params leave (jaxcirc.infra.batches). The report's study figures
    stand beside the study's own three models only (jaxcirc.report.representation)."""
    c.name = "paper, larger models (GPT-2 XL, Pythia-1.4B/2.8B/6.9B, GPT-Neo-1.3B/2.7B)"
    c.models.sources = [
        _source("gpt2-xl", "gpt2-xl"),
        _source("pythia-1.4b", "EleutherAI/pythia-1.4b"),
        _source("pythia-2.8b", "EleutherAI/pythia-2.8b"),
        _source("pythia-6.9b", "EleutherAI/pythia-6.9b"),
        _source("gpt-neo-1.3b", "EleutherAI/gpt-neo-1.3B"),
        _source("gpt-neo-2.7b", "EleutherAI/gpt-neo-2.7B"),
    ]
    c.models.dtype = "bfloat16"
    c.models.stream = True


def training(c):
    """The study across training checkpoints: Pythia-160M at 12 log-spaced revisions of its 154,
    loaded like the other models (hub, or the HF cache with HF_HUB_OFFLINE=1)."""
    c.name = "paper, across training (Pythia-160M, 12 revisions)"
    c.phases = ["dataset", "checkpoints", "report"]
    c.models.sources = [_source("pythia-160m", "EleutherAI/pythia-160m", "step143000")]
    c.checkpoints = sections.checkpoints()
    c.checkpoints.lock()
    # Pythia's revisions: step0, 1, 2, 4, ..., 512, then every 1000 steps to 143000.
    c.checkpoints.steps = (0, 8, 64, 512, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 143000)
    c.checkpoints.prepend_bos = c.get_ref("prepend_bos")
