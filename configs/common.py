"""Sections every study config shares; demo.py and paper.py change what differs."""

from __future__ import annotations

import ml_collections

from configs import sections
from jaxcirc import config_check


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = ""  # shown in the report title
    # Phases to run, in order: the English study (config_check.DEFAULT_PHASES); the optional
    # "checkpoints" phase has its own configs (configs/demo.py:training).
    c.phases = list(config_check.DEFAULT_PHASES)
    # Threads for the per-model phases (vectors, steering, heads), the alignment and the
    # cross-model phase, which are independent once their inputs exist; above 1, the demo's
    # stand-ins also train all at once. Results do not depend on it. 1 = one after another.
    c.workers = 1
    # The device mesh every phase runs on (models.sharding): params split over `model` (heads,
    # MLP width, vocabulary: Megatron style), batches over `data`; jax's GSPMD partitions each
    # compiled call. data x model must equal the devices jax sees (config_check.check_mesh).
    # 1x1 = one device, the program exactly as without a mesh. Not in any stage key: results
    # agree across meshes within float reduction order (tests/e2e/test_mesh_study.py), as they
    # do across `workers`, so a run directory resumes under another mesh.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = 1  # devices splitting each batch (data parallel)
    c.mesh.model = 1  # devices splitting each layer's heads and MLP (tensor parallel)
    # Prepend the tokenizer's BOS token to every text? Recorded with every tokenisation.
    c.prepend_bos = False

    c.dataset = ml_collections.ConfigDict()
    c.dataset.set = "baseline"  # "baseline" (70 per emotion) or "extended" (100 per emotion)
    c.dataset.path = ""  # a JSONL file in the dataset schema, instead of the shipped prompts
    c.dataset.realworld = True  # also use the 35 real-world texts (steering inputs)
    # Language of the prompts (jaxcirc.data.emotions.LANGUAGES): "en" (jaxcirc.data.prompts) or
    # "ja" (jaxcirc.data.prompts_ja: the same design in Japanese, each text paired with its
    # English counterpart by en_id where it has one). A dataset.path file must be in it.
    c.dataset.language = "en"

    c.extract = ml_collections.ConfigDict()
    # About this many prompts per forward pass (packed into rows), or "auto" (sections.batch).
    c.extract.batch_size = sections.batch(32)

    c.vectors = sections.vectors()
    c.alignment = sections.alignment()
    c.steering = sections.steering()
    c.steering.max_prompts = 70  # neutral prompts used as steering inputs (all 70 of baseline)
    c.steering.vector_method = (
        "token"  # which emotion vectors steer: sentence_end | token | token_delta
    )
    c.steering.vector_centre = "neutral"  # raw | neutral | grand
    c.steering.patch_emotions = ["gratitude", "anger"]  # source emotions patched into neutral
    c.heads = sections.heads()
    c.heads.vector_method = "sentence_end"  # the emotion direction heads are scored against
    c.heads.vector_centre = "neutral"
    # Phase 7 future work: multi-head circuits, MLP neurons, top heads + L0H0 with generation.
    c.heads_circuits = sections.heads_circuits()
    c.heads_neurons = sections.heads_neurons()
    c.heads_generation = sections.heads_generation()
    # One BOS choice for the whole study: the phases that tokenise again follow it.
    c.steering.prepend_bos = c.get_ref("prepend_bos")
    c.heads.prepend_bos = c.get_ref("prepend_bos")
    # The text measures and logit words follow the prompts' language.
    c.steering.language = c.dataset.get_ref("language")
    c.heads_generation.language = c.dataset.get_ref("language")

    # Cross-model patching (the study's future work): steer model B with model A's emotion
    # vector mapped through the alignment map fit on neutral activations.
    c.cross_model = ml_collections.ConfigDict()
    c.cross_model.max_prompts = 35  # neutral prompts steered
    c.cross_model.relative_depth = 0.5  # steer at this fraction of each model's depth
    c.cross_model.alphas = [-4.0, -2.0, 2.0, 4.0]  # in units of the target layer's residual norm
    c.cross_model.ridge = 1.0  # ridge strength of the map fit on neutral token activations
    # Share of the neutral prompts held out (by prompt) to score the map: its held-out R^2, with
    # the null of maps refit on n_perm whole-prompt shuffled pairings (central `level` band).
    c.cross_model.test_fraction = 0.25
    c.cross_model.n_perm = 100
    c.cross_model.level = 0.95
    c.cross_model.n_random_seeds = 10  # random directions of equal norm (control)
    c.cross_model.seed = 0
    return c


def lock_sections(c: ml_collections.ConfigDict) -> None:
    """Refuse new keys in every section from here on: a misspelt or retired setting in a config
    file (or an override) fails where it is written instead of being silently ignored."""
    for key in c.keys():
        if isinstance(c[key], ml_collections.ConfigDict):
            c[key].lock()
