"""English vs Japanese: do an English model's and a Japanese model's emotion representations
correspond, prompt for prompt, and does an English emotion vector steer the Japanese model?

    summary = run(Inputs(english={"gpt2": m_en}, japanese={"gpt2-ja": m_ja},
                         ja_records=records, en_records=dataset.english_records()), section, out)

Rows are paired ACROSS LANGUAGES by `Record.en_id`: each Japanese prompt that names its English
counterpart (jaxcirc.data.prompts_ja) goes with that English prompt, and only such pairs are
used (the paired subset; the summary gives its counts per class). The English model reads the
English text, the Japanese model the Japanese text: the tokens differ, so rows are paired per
PROMPT (last real token, mean over the real tokens), never per token.

Two parts, each the study's own math on these pairs:

- Alignment (`jaxcirc.phases.alignment.run_alignment`, both directions): the neutral map fit on
  the paired NEUTRAL prompts (split by prompt into fit / held-out), each model's emotion subspace
  from its own class means, their overlap through the map, with every null of phase 6: maps refit
  on shuffled whole-prompt pairings (an English prompt paired with another Japanese prompt), the
  prompt bootstrap, and the random-init control (each model replaced by randomly initialised
  copies of it, `alignment.random_init_draws`, fed the same prompts). To run_alignment both
  models read "the same prompts": each run's texts are replaced by the pair key
  "<Japanese id>|<English id>" (`pair_keys`), so its checks that rows correspond hold.
- Patching across languages (`cross_language.patch`): the English model's emotion vectors at
  `cross_model.relative_depth`, mapped through the map fit on the paired neutral prompts
  (`jaxcirc.phases.cross_model.pair_vectors`: its held-out R^2 and shuffled-pairing null, the
  cosine with the Japanese model's own vector against random English directions mapped, the
  random-init control), steer the Japanese model on its own neutral prompts, beside its own
  vectors (the ceiling) and random directions of equal norm (the control), scored by the
  Japanese text measures; with `cross_language.patch_back`, also the other way (the Japanese
  model's vectors mapped into the English model, on the English pairs of those prompts, scored
  by the English measures).

Files: `extract/<model>/` (the paired prompts' activations, and `__random-init-<seed>` copies),
`alignment/<English>__<Japanese>/` (phase 6's files), `patching/<English>__to__<Japanese>/`
(`vectors.json`, `mapped/`, and `own/` steering outputs); the summary `run` returns.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

from jaxcirc.core.vectors import emotion_vectors
from jaxcirc.data import dataset
from jaxcirc.data.activations import Activations
from jaxcirc.data.emotions import EMOTIONAL, NEUTRAL
from jaxcirc.infra import artifacts
from jaxcirc.phases import alignment as alignment_phase
from jaxcirc.phases import cross_model, steering
from jaxcirc.phases.extract import extract_residuals

NAME = "cross_language"
# Bump when the phase's outputs change meaning: every run then recomputes it.
VERSION = 3  # 2: patching also Japanese -> English (patch_back); 3: Procrustes on the fitted span, near-ties


def paired_records(
    ja_records: Sequence[dataset.Record], en_by_id: Mapping[str, dataset.Record]
) -> tuple[list[dataset.Record], list[dataset.Record]]:
    """(Japanese records that name an English counterpart, those English records), in the
    Japanese order; row i of one is row i of the other."""
    ja = [r for r in ja_records if r.en_id is not None]
    missing = sorted({r.en_id for r in ja} - set(en_by_id))
    if missing:
        raise ValueError(
            f"ja_records: en_id {missing[:3]} name no English record given; pass every shipped "
            "English set (jaxcirc.data.dataset.build)"
        )
    en = [en_by_id[r.en_id] for r in ja]
    bad = [(j.id, e.id) for j, e in zip(ja, en, strict=True) if j.emotion != e.emotion]
    if bad:
        raise ValueError(f"ja_records: {bad[:3]} pair prompts of different emotions; fix en_id")
    if not any(r.emotion == NEUTRAL for r in ja):
        raise ValueError("ja_records: no neutral prompt names an English one; the map needs them")
    return ja, en


def pair_keys(ja: Sequence[dataset.Record]) -> tuple[str, ...]:
    """The text each paired row stands under in the alignment: "<Japanese id>|<English id>"."""
    return tuple(f"{r.id}|{r.en_id}" for r in ja)


def as_paired(acts: Activations, keys: Sequence[str]) -> Activations:
    """`acts` with its texts replaced by the pair keys (rows in the pairs' order)."""
    if len(keys) != len(acts.texts):
        raise ValueError(f"keys: {len(keys)} pair keys for {len(acts.texts)} rows")
    return dataclasses.replace(acts, texts=tuple(keys))


def align(
    acts_en: dict[str, Activations],
    acts_ja: dict[str, Activations],
    controls: dict[str, list[Activations]],
    cfg,
    out_dir: Path,
) -> dict:
    """Phase 6 on every (English, Japanese) pair of models over the paired rows (activations
    already `as_paired`); cfg: the alignment section. Returns {"<en> <-> <ja>": {"en->ja":
    headline entries by pairing, "ja->en": ..., "dir": folder}}."""
    out = {}
    for en, a in acts_en.items():
        for ja, b in acts_ja.items():
            folder = f"{artifacts.slug(en)}__{artifacts.slug(ja)}"
            ctrl = {k: v for k, v in controls.items() if k in (en, ja) and v}
            summ = alignment_phase.run_alignment({en: a, ja: b}, cfg, out_dir / folder, ctrl)
            pairs = summ["headline"]["subspaces_agree_up_to_change_of_basis"]["pairs"]
            out[f"{en} <-> {ja}"] = {
                "en->ja": pairs.get(f"{en}->{ja}", {}),
                "ja->en": pairs.get(f"{ja}->{en}", {}),
                "dir": folder,
                "skipped": summ["skipped"],
            }
    return out


@dataclasses.dataclass(frozen=True)
class Side:
    """One model in the patching: the LoadedModel, its paired activations, its random-init
    copies' paired activations."""

    model: object
    acts: Activations
    controls: list[Activations]


def patch(
    src: tuple[str, Side], dst: tuple[str, Side], prompts: list[str], language: str, cfg,
    out_dir: Path,
):  # fmt: skip
    """The source model's mapped emotion vectors steer the destination model on `prompts` (its
    neutral prompts, scored by the text measures of `language`, the destination's), beside its
    own vectors and random directions of equal norm. cfg: sections cross_model and steering.
    Returns `pair_vectors`' info plus steer_mapped / steer_own."""
    (la, a), (lb, b) = src, dst
    layers = cross_model.layers_at(a.model, b.model, cfg.cross_model.relative_depth)
    info, mapped = cross_model.pair_vectors(a.acts, b.acts, layers, cfg, b.controls)
    info["model_a"], info["model_b"] = la, lb
    own = emotion_vectors(b.acts, cfg.steering.vector_method, cfg.steering.vector_centre)
    sc, n_b = cross_model.steer_config(cfg, layers[1]), b.model.config.n_layers
    sc.language = language
    pair_dir = out_dir / f"{artifacts.slug(la)}__to__{artifacts.slug(lb)}"
    artifacts.write_json(pair_dir / "vectors.json", info)
    runs = {
        "mapped": ({e: cross_model.broadcast(mapped[e], n_b) for e in EMOTIONAL}, f"from {la}"),
        "own": ({e: cross_model.broadcast(own[e][layers[1]], n_b) for e in EMOTIONAL}, "own"),
    }
    for name, (vecs, what) in runs.items():
        (pair_dir / name).mkdir(parents=True, exist_ok=True)
        info[f"steer_{name}"] = steering.run_steering(
            b.model, prompts, vecs, sc, pair_dir / name, label=f"{language} neutral, vectors {what}"
        )
    info["dir"] = pair_dir.name
    return info


@dataclasses.dataclass(frozen=True)
class Inputs:
    """english / japanese: {label: LoadedModel}; ja_records: the study's Japanese prompts (the
    paired subset is taken here); en_records: {id: English record}, every id an en_id names."""

    english: dict
    japanese: dict
    ja_records: list[dataset.Record]
    en_records: dict[str, dataset.Record]


def _extract(model, records, label: str, keys, section, out_dir: Path) -> Side:
    """The paired rows of `model` and of its random-init copies (alignment.random_init_draws,
    seeds from alignment.random_init_seed), saved under out_dir/extract."""
    import models

    ex, al = section.extract, section.alignment
    seeds = [int(al.random_init_seed) + j for j in range(int(al.random_init_draws))]
    runs = [(label, model)] + [
        (f"{label}__random-init-{s}", models.random_model(model.config, s, model.tokenizer))
        for s in seeds
    ]
    acts = []
    for name, m in runs:
        a = extract_residuals(m, records, bool(ex.prepend_bos), int(ex.batch_size), label=name)
        a.save(out_dir / "extract" / artifacts.slug(name) / "activations.npz")
        acts.append(as_paired(a, keys))
    return Side(model, acts[0], acts[1:])


def _counts(records) -> dict[str, int]:
    return dict(sorted(Counter(r.emotion for r in records).items()))


def run(inputs: Inputs, section, out_dir: str | Path) -> dict:
    """Both parts (module docstring) for every (English, Japanese) pair of models; section:
    {cross_language, alignment, cross_model, steering, extract}. Returns the summary (the study
    writes it to summary.json)."""
    out_dir = Path(out_dir)
    ja, en = paired_records(inputs.ja_records, inputs.en_records)
    keys = pair_keys(ja)
    en_sides = {k: _extract(m, en, k, keys, section, out_dir) for k, m in inputs.english.items()}
    ja_sides = {k: _extract(m, ja, k, keys, section, out_dir) for k, m in inputs.japanese.items()}
    controls = {k: s.controls for k, s in {**en_sides, **ja_sides}.items()}
    summary = {
        "what": "English vs Japanese models on prompts paired by en_id: the neutral map, the "
        "emotion subspaces through it (phase 6's nulls), and English vectors mapped into the "
        "Japanese model (cross-model patching across languages)",
        "pairing": "per prompt (the languages tokenise differently): Japanese record i with the "
        "English record its en_id names",
        "paired_prompts": _counts(ja),
        "unpaired_japanese_prompts": len(inputs.ja_records) - len(ja),
        "english_models": list(inputs.english),
        "japanese_models": list(inputs.japanese),
        "alignment": align(
            {k: s.acts for k, s in en_sides.items()},
            {k: s.acts for k, s in ja_sides.items()},
            controls,
            section.alignment,
            out_dir / "alignment",
        ),
        "patching": {},
    }
    if section.cross_language.patch:
        n = int(section.cross_language.max_prompts)
        ja_neutral = [r.text for r in ja if r.emotion == NEUTRAL][:n]
        en_neutral = [r.text for r in en if r.emotion == NEUTRAL][:n]  # their English pairs
        for la, a in en_sides.items():
            for lb, b in ja_sides.items():
                ways = [((la, a), (lb, b), ja_neutral, "ja")]
                if section.cross_language.patch_back:
                    ways.append(((lb, b), (la, a), en_neutral, "en"))
                for src, dst, prompts, language in ways:
                    info = patch(src, dst, prompts, language, section, out_dir / "patching")
                    summary["patching"][f"{src[0]} -> {dst[0]}"] = info
    return summary


def en_records() -> dict[str, dataset.Record]:
    """Every shipped English record (baseline, extended, real-world) by id: what en_id names."""
    return {r.id: r for s in ("baseline", "extended", "realworld") for r in dataset.build(s)}
