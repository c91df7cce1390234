"""The embedded default: the whole study on three small TRAINED stand-ins (GPT-2, GPT-NeoX/Pythia
and GPT-Neo families, 4 layers, d_model 128), trained on the demo corpus the project ships, with
a byte-level BPE tokenizer trained on the same corpus. Works offline; every output says these
are stand-ins, not the study's checkpoints.

    python scripts/run_study.py --config=configs/demo.py --workdir=runs/demo
    python scripts/run_study.py --config=configs/demo.py:smoke --workdir=/tmp/smoke   # CI size
    python scripts/run_study.py --config=configs/demo.py:training --workdir=runs/training
    python scripts/run_study.py --config=configs/demo.py:japanese --workdir=runs/japanese

`training`: the study across training checkpoints on the Pythia (GPT-NeoX) stand-in alone: its
trainer keeps the params at 7 steps of its 240 (cached beside the final model), and the
representation analyses run on each (jaxcirc.phases.checkpoints).

`japanese`: the whole study in Japanese (`japanese`): a stand-in trained on the Japanese demo
corpus (jaxcirc.demo.corpus_ja) with a sentencepiece tokenizer trained on it, the Japanese
prompts, Japanese text measures and logit words. `japanese-smoke` is its CI size.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from configs import common, sections
from configs.common import base_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ARGS:
        raise ValueError(f"configs/demo.py takes one of {', '.join(map(repr, ARGS))}, not {arg!r}")
    c = base_config()
    c.name = "demo (trained stand-ins)" + (" - smoke size" if arg == "smoke" else "")

    c.models = ml_collections.ConfigDict()
    c.models.kind = "standin"  # small models of each family, trained here (jaxcirc.demo.standins)
    c.models.families = ["gpt2", "gpt_neox", "gpt_neo"]
    c.models.cache_dir = "~/.cache/jaxcirc/demo"  # trained params + tokenizer, reused on reruns
    c.models.corpus_lines = 4000  # lines of the generated training corpus
    c.models.seed = 0
    c.models.train = ml_collections.ConfigDict()
    from jaxcirc.demo import standins as demo_models

    for k, v in demo_models.TrainConfig().__dict__.items():
        c.models.train[k] = v
    c.models.shape = ml_collections.ConfigDict(dataclasses.asdict(demo_models.StandinShape()))

    # Sized toward a first run (training included) under 15 minutes on 2 cores (measured 13.5
    # minutes, a third of it compiling; see benchmarks/RESULTS.md): alphas
    # without +-1 (the weakest cells), 50 of the 70 neutral prompts steered (24 in cross-model
    # patching), 1000 bootstrap resamples, circuits searched over the 12 best of the stand-ins'
    # 16 heads up to sets of 3, 12-token continuations under head edits, 50 shuffled pairings
    # per alignment null. configs/paper.py keeps the study's full sizes.
    # Two phases at a time: a small model's phase leaves a core idle much of the time (the
    # stand-ins then train all three at once).
    c.workers = 2
    c.steering.alphas = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0)
    # The stand-ins' prompts are short: re-run every prompt over the full width (one compile per
    # prompt set instead of one per 4-slot window; the padded work costs less than compiling).
    c.steering.window_step = 64
    # Patching replaces the residual stream, as the study did; the attn_out / mlp_out sites (an
    # extension) run in configs/paper.py, where they are worth their compile time.
    c.steering.patch_sites = ("resid_pre",)
    # The stand-ins learnt that a finished text is followed by EOS, and ended 86-91% of the
    # real-world continuations (28-56% of the neutral ones) at once, leaving the text measures
    # nothing to score. EOS is held back for the first 8 new tokens (transformers'
    # min_new_tokens), in steering and in head-edit generation; the outputs record it.
    c.steering.min_new_tokens = 8
    c.heads_generation.min_new_tokens = 8
    c.steering.max_prompts = 50
    c.cross_model.max_prompts = 24
    c.heads_generation.n_new = 12
    c.steering.n_boot = 1000
    # Forward-only random directions for the next-token verdicts: 19 (p floor 0.05) keeps the
    # phase near its former time; 99 (the default, floor 0.01) cost +41% wall on the stand-ins.
    c.steering.n_random_internal = 19
    # Label-shuffled control vectors: 19 for the next-token verdicts (floor 0.05, as the random
    # directions'), 3 of them generated for the text ones (floor 0.25). On the gpt2 stand-in,
    # the whole steering phase in a fresh process: CPU 63.3 s without them, 72.3 s with them
    # (+14%; 69.6 s with 2 generated), 2-core CPU shared with other work (2026-12-01).
    c.steering.n_label_shuffled = 19
    c.steering.n_control_text = 3
    c.heads_circuits.n_candidates = 12
    c.heads_circuits.k_max = 3
    # 30 shuffled pairings and 30 prompt resamples: at 50 / 100 the alignment alone took 656 s
    # wall (598 s CPU, one thread) on a quiet 2-core machine (2026-12-01), most of a 15-minute
    # first run.
    c.alignment.n_perm = 30
    c.alignment.n_boot = 30
    # Cosine and probe CIs: 200 prompt resamples (with 1000 the vectors phase ran for over 9
    # minutes per model on a loaded 2-core machine, not yet profiled).
    c.vectors.n_boot = 200
    # Fixed batch sizes, not "auto" (jaxcirc.infra.batches): the stand-ins need little memory,
    # so "auto" would pick its caps (extract 256 prompts a call instead of 32, ...), changing
    # the demo's packing, its stage keys and its figures in float order.
    c.extract.batch_size = 32
    c.steering.batch_rows = 512
    c.steering.prefill_rows = 256
    c.heads.batch_size = 32
    c.heads_generation.batch_rows = 512
    common.lock_sections(c)

    if arg in ("smoke", "japanese-smoke"):
        c.models.corpus_lines = 800
        c.models.train.steps = 40
        # Two layers, d_model 64: the CI-size study checks that every phase runs and writes
        # what it should; compile time (most of its time) grows with depth.
        c.models.shape.n_layers = 2
        c.models.shape.d_model = 64
        c.models.cache_dir = "~/.cache/jaxcirc/demo-smoke"
        c.steering.max_prompts = 6
        c.cross_model.max_prompts = 4
        c.cross_model.n_random_seeds = 2
        c.vectors.n_perm = 20
        c.alignment.n_perm = 5
        smoke_overrides(c)
    if arg == "training":
        training(c)
    if arg.startswith("japanese"):
        japanese(c, smoke=arg == "japanese-smoke")
    return c


ARGS = ("", "smoke", "training", "japanese", "japanese-smoke")


def japanese(c, smoke: bool = False):
    """The study in Japanese on Japanese stand-ins (sized for a first run, training included,
    under 10 minutes on 2 cores; README "Japanese" has the measured time). smoke: CI size."""
    from jaxcirc.data import lexicon_ja
    from jaxcirc.demo import standins

    c.name = "demo in Japanese (trained Japanese stand-ins)" + (" - smoke size" if smoke else "")
    c.dataset.language = "ja"  # prompts, text measures and steering's logit words follow it
    with c.models.unlocked():
        # Corpus language of the stand-ins (jaxcirc.demo.standins.LANGUAGES): the Japanese
        # corpus and a sentencepiece tokenizer of vocab_size pieces (at least the corpus's ~770
        # distinct characters + 259).
        c.models.language = "ja"
        c.models.vocab_size = standins.DEMO_VOCAB_SIZE_JA
    c.models.cache_dir = "~/.cache/jaxcirc/demo-ja" + ("-smoke" if smoke else "")
    # The GPT-2 and Pythia families: two models, so the alignment and cross-model phases run,
    # inside the 10 minutes (each further stand-in adds ~4 minutes on 2 loaded cores).
    c.models.families = ["gpt2", "gpt_neox"]
    c.heads.logit_words = {e: tuple(w) for e, w in lexicon_ja.EMOTION_LOGIT_WORDS_JA.items()}
    # English vs Japanese: an English GPT-2 stand-in (the default demo's, reused from its cache
    # when that ran at the same shape) beside the Japanese ones, on the prompts paired by en_id.
    c.phases = [p for p in c.phases if p != "report"] + ["cross_language", "report"]
    c.cross_language = sections.cross_language()
    if smoke:
        c.cross_language.english_cache_dir = "~/.cache/jaxcirc/demo-smoke"
        c.cross_language.max_prompts = 4
    c.cross_language.lock()
    if not smoke:
        # The alignment's resamples dominated a first run at the English demo's sizes (32 min
        # wall on 2 cores at load average 4-8, 25 CPU-min; alignment 606 s and cross_language's
        # two alignments 658 s, measured 2026-12-01): fewer here. With these, a first run took
        # 5:53 wall on 2 quiet cores (README "Japanese").
        c.alignment.n_boot = 30
        c.alignment.n_perm = 30


def training(c):
    """The study across training checkpoints on one stand-in (sized for a first run, training
    included, under 10 minutes on 2 cores)."""
    c.name = "demo across training checkpoints (the Pythia stand-in)"
    c.phases = ["dataset", "checkpoints", "report"]
    # One family: the Pythia stand-in, as Pythia is the family that ships its checkpoints.
    c.models.families = ["gpt_neox"]
    c.checkpoints = sections.checkpoints()
    c.checkpoints.lock()
    # Log-spaced kept steps of the 240 (models.train.steps): the init, then doublings.
    c.checkpoints.steps = (0, 8, 16, 32, 64, 128, 240)
    c.checkpoints.prepend_bos = c.get_ref("prepend_bos")
    # The probe at the last token only: its label-shuffle null is most of each checkpoint's time,
    # and the span-token probe reads the emotion words themselves (0.90-0.93 at layer 0 at every
    # kept step, measured 2026-11-30). configs/paper.py:training probes both.
    c.checkpoints.probe_features = ("sentence_end",)


def smoke_overrides(c):
    """Shrink every sweep so the whole study runs in a minute or two (CI)."""
    c.steering.layers = (0, 1)
    c.steering.alphas = (-8.0, 0.0, 8.0)
    c.steering.n_random_seeds = 2
    c.steering.n_random_internal = 4
    c.steering.n_label_shuffled = 4
    c.steering.n_control_text = 1
    c.steering.max_new_tokens = 6
    c.steering.n_boot = 200
    c.steering.samples_per_cell = 1
    c.steering.patch_layers = (1,)
    c.steering.patch_emotions = ["gratitude"]
    c.cross_model.alphas = (8.0,)
    c.heads.n_random = 2
    c.heads.n_boot = 200
    c.heads.n_perm = 100
    c.heads.top_k = 3
    c.vectors.probe_n_perm = 5
    c.vectors.plots = True
    # The phase-7 extras have their own tests (tests/test_circuits.py, test_neurons.py,
    # test_head_generation.py); the CI-size study leaves them out to stay within its time.
    for name in ("heads_circuits", "heads_neurons", "heads_generation"):
        c[name].enabled = False
    c.heads_circuits.k_max = 2
    c.heads_circuits.n_candidates = 4
    c.heads_circuits.n_null = 4
    c.heads_circuits.n_boot = 200
    c.heads_neurons.n_exact = 8
    c.heads_neurons.n_boot = 200
    c.heads_generation.n_new = 6
    c.heads_generation.n_control = 1
    c.heads_generation.n_boot = 200
    c.heads_generation.top_k = 1
