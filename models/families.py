"""Which family converts which HF `model_type`, and the published shapes of each."""

from __future__ import annotations

from models import gpt2, gpt_neo, gpt_neox
from models.config import ModelConfig
from models.convert import ConversionError

FAMILIES = {m.FAMILY: m for m in (gpt2, gpt_neox, gpt_neo)}
_BY_MODEL_TYPE = {t: m for m in FAMILIES.values() for t in m.MODEL_TYPES}


# Architectures whose names suggest a supported family but whose layout is another: refused with
# what differs (read from transformers' modeling_gpt_neox_japanese.py).
REFUSED = {
    "gpt_neox_japanese": (
        "abeja's GPT-NeoX-Japanese (abeja/gpt-neox-japanese-2.7b) is not GPT-NeoX: its "
        "projections have no biases but one attention bias in the last layer, its MLP width is "
        "intermediate_multiple_size x d_model, and its tokenizer is its own; use a Japanese "
        "gpt2 / gpt_neox / gpt_neo checkpoint (rinna/japanese-gpt-neox-small, "
        "cyberagent/open-calm-small, rinna/japanese-gpt2-small)"
    ),
}


def family_for(hf: dict, where: str = "config.json"):
    model_type = hf.get("model_type")
    if model_type in REFUSED:
        raise ConversionError(
            f"unsupported architecture model_type={model_type!r} in {where}: {REFUSED[model_type]}"
        )
    if model_type not in _BY_MODEL_TYPE:
        raise ConversionError(
            f"unsupported architecture model_type={model_type!r} in {where}; "
            f"jaxcirc supports {', '.join(sorted(_BY_MODEL_TYPE))}"
        )
    return _BY_MODEL_TYPE[model_type]


class RequiredSettings(dict):
    """A config.json dict whose missing required key (`hf["n_embd"]`) raises a one-line
    ConversionError naming the file, the family and the key, instead of a bare KeyError.
    Lookups with a default (`hf.get`) and every present value are exactly a dict's."""

    def __init__(self, hf: dict, where: str, family: str):
        super().__init__(hf)
        self.where, self.family = where, family

    def __missing__(self, key):
        raise ConversionError(
            f"{self.where}: {self.family} config lacks the required setting {key!r}; download "
            "config.json again (or save the model with save_pretrained)"
        )


def config_from_hf(hf: dict, name: str = "", strict: bool = True, where: str = "") -> ModelConfig:
    """The ModelConfig of a config.json dict. `where` names it in errors (default `name`)."""
    where = where or name or "config.json"
    if not isinstance(hf, dict):
        raise ConversionError(
            f"{where}: a config is a JSON object of settings, got a {type(hf).__name__}; pass "
            "the dict read from config.json"
        )
    family = family_for(hf, where)
    try:
        return family.config_from_hf(
            RequiredSettings(hf, where, family.FAMILY), name=name, strict=strict
        )
    except TypeError as e:
        raise ConversionError(
            f"{where}: a {family.FAMILY} setting has the wrong type ({e}); sizes are JSON "
            "integers: download config.json again"
        ) from None


def published_names() -> list[str]:
    return [n for m in FAMILIES.values() for n in m.PUBLISHED]


def published_hf_config(name: str) -> dict:
    """config.json dict of a published checkpoint shape ('gpt2', 'pythia-160m', 'gpt-neo-125m',
    hub ids such as 'EleutherAI/pythia-6.9b-deduped' too), for building random-weight models of
    the exact published shapes."""
    key = name.split("/")[-1].lower().removesuffix("-deduped")
    for m in FAMILIES.values():
        if key in m.PUBLISHED:
            return m.published_config(key)
    raise ValueError(f"unknown published model {name!r}; known: {', '.join(published_names())}")


def with_layers(hf: dict, n_layers: int) -> dict:
    """config.json dict `hf` cut (or grown) to `n_layers` blocks, every width kept: a
    reduced-depth model of a published shape, e.g. `with_layers(published_hf_config(
    "pythia-12b"), 2)`."""
    return family_for(hf).with_layers(hf, n_layers)


def tiny_hf_config(family: str, **overrides) -> dict:
    """A small config.json dict of a family (2 layers, d_model 64, 4 heads, vocab 512)."""
    base = {
        "gpt2": dict(
            model_type="gpt2",
            vocab_size=512,
            n_positions=128,
            n_embd=64,
            n_layer=2,
            n_head=4,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
        ),
        "gpt_neox": dict(
            model_type="gpt_neox",
            vocab_size=512,
            max_position_embeddings=128,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=256,
            hidden_act="gelu",
            rotary_pct=0.25,
            rotary_emb_base=10000,
            layer_norm_eps=1e-5,
            use_parallel_residual=True,
            tie_word_embeddings=False,
        ),
        "gpt_neo": dict(
            model_type="gpt_neo",
            vocab_size=512,
            max_position_embeddings=128,
            hidden_size=64,
            num_layers=2,
            num_heads=4,
            activation_function="gelu_new",
            layer_norm_epsilon=1e-5,
            window_size=4,
            attention_types=[[["global", "local"], 1]],
        ),
    }
    if family not in base:
        raise ValueError(f"unknown family {family!r}; use one of {sorted(base)}")
    cfg = {**base[family], "bos_token_id": 0, "eos_token_id": 0, **overrides}
    if family == "gpt_neo" and "num_layers" in overrides and "attention_types" not in overrides:
        cfg["attention_types"] = [[["global", "local"], overrides["num_layers"] // 2]]
    return cfg
