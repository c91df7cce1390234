"""Bad inputs to models.forward / models.load fail early with one line naming the input and the
fix; valid inputs (broadcast edits, jit over the forward) run as before."""

from __future__ import annotations

import importlib.metadata
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file

import models
from models import Edits
from models.contract import LAYER_EDIT_FIELDS

FAMILIES = ["gpt2", "gpt_neox", "gpt_neo"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny():
    """One random model per family (n_ctx 128, vocab 512, 2 layers, d_model 64, 4 heads)."""
    return {f: models.random_model(models.tiny_hf_config(f)) for f in FAMILIES}


def _raises(exc, fn, *parts) -> str:
    """Run `fn`, expecting `exc` with a one-line message holding every string in `parts`."""
    with pytest.raises(exc) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# ---------------------------------------------------------------------------------------------
# Token ids


def test_int64_id_past_int32_is_refused_not_wrapped(tiny):
    m = tiny["gpt2"]
    ids = np.array([[2**32 + 5, 1]], np.int64)  # an int32 cast would run it as id 5
    _raises(ValueError, lambda: m.forward(ids), "tokens:", "4294967301", "d_vocab is 512", "0..511")


@pytest.mark.parametrize(
    "ids", [np.array([[1.9, 5.7]]), np.array([[1.0, 5.0]], np.float32), np.array([[True, False]])]
)
def test_non_integer_ids_refused(tiny, ids):
    m = tiny["gpt2"]
    _raises(ValueError, lambda: m.forward(ids), "tokens:", f"dtype {ids.dtype}", "integers")
    # The jitted forward says the same at trace time.
    cfg, params = m.config, m.params
    _raises(ValueError, lambda: models.forward(cfg, params, jnp.asarray(ids)), "integers")


def test_negative_and_ragged_ids_refused(tiny):
    m = tiny["gpt_neox"]
    _raises(ValueError, lambda: m.forward(np.array([[-1, 3]])), "ids span [-1, 3]", "0..511")
    _raises(ValueError, lambda: m.forward([[1, 2, 3], [4]]), "tokens:", "pad every row")


def test_rotary_model_refuses_tokens_past_its_trained_context(tiny):
    m = tiny["gpt_neox"]  # max_position_embeddings 128
    ok, _ = m.forward(np.zeros((1, 128), np.int32))
    assert ok.shape == (1, 128, 512)
    too_long = np.zeros((1, 129), np.int32)
    parts = ("129 tokens", "n_ctx=128", "max_position_embeddings", "truncate")
    _raises(ValueError, lambda: m.forward(too_long), *parts)
    _raises(ValueError, lambda: models.forward(m.config, m.params, too_long), *parts)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neo"])
def test_learned_positions_past_context_refused_under_jit_too(tiny, family):
    m = tiny[family]
    too_long = jnp.zeros((1, 129), jnp.int32)
    parts = ("129 tokens", "n_ctx=128", "learned positions", "truncate")
    _raises(ValueError, lambda: m.forward(too_long), *parts)
    _raises(ValueError, lambda: jax.jit(lambda t: m.forward(t)[0])(too_long), *parts)


# ---------------------------------------------------------------------------------------------
# jit over the forward


@pytest.mark.parametrize("family", FAMILIES)
def test_jit_over_model_forward(tiny, family):
    m = tiny[family]
    ids = np.random.default_rng(0).integers(0, 512, (2, 7)).astype(np.int32)
    mask = np.ones((2, 7), bool)
    mask[1, 5:] = False
    eager, _ = m.forward(ids, mask)
    jitted, _ = jax.jit(lambda t, k: m.forward(t, k))(ids, mask)
    np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), atol=1e-6)
    low = jax.jit(lambda t: models.forward(m.config, m.params, t, mask)[0])(ids)
    np.testing.assert_allclose(np.asarray(low), np.asarray(eager), atol=1e-6)
    # Segments under jit: checked by shape (their runs need values).
    seg = np.array([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 0, 0]], np.int32)
    rec = models.Record(resid_post=True, logits="none")
    packed = jax.jit(lambda t, s: m.forward(t, record=rec, segments=s)[1].resid_post)(ids, seg)
    ref = m.forward(ids, record=rec, segments=seg)[1].resid_post
    np.testing.assert_allclose(np.asarray(packed), np.asarray(ref), atol=1e-6)


def test_jit_still_checks_dtype_and_shape(tiny):
    m = tiny["gpt_neox"]
    f = jax.jit(lambda t: m.forward(t)[0])
    _raises(ValueError, lambda: f(jnp.zeros((1, 3), jnp.float32)), "tokens:", "integers")
    _raises(ValueError, lambda: f(jnp.zeros((1, 129), jnp.int32)), "max_position_embeddings")


# ---------------------------------------------------------------------------------------------
# mask and edits shapes


def test_mask_shape_named(tiny):
    m = tiny["gpt2"]
    ids = np.zeros((2, 4), np.int32)
    for bad in (np.ones((2, 5)), np.ones((3, 4)), np.ones((4,))):
        _raises(ValueError, lambda b=bad: m.forward(ids, mask=b), "mask:", str(bad.shape), "(2, 4)")
    _raises(ValueError, lambda: models.forward(m.config, m.params, ids, np.ones((2, 5))), "mask:")


def _full_shapes(cfg, b, p) -> dict[str, tuple[int, ...]]:
    L, d, h, e, n = cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_mlp
    return {
        "resid_add": (L, d),
        "resid_patch": (L, b, p, d),
        "resid_patch_mask": (L, b, p),
        "attn_out_patch": (L, b, p, d),
        "attn_out_patch_mask": (L, b, p),
        "mlp_out_patch": (L, b, p, d),
        "mlp_out_patch_mask": (L, b, p),
        "z_patch": (L, b, p, h, e),
        "z_patch_mask": (L, b, p, h),
        "head_scale": (L, h),
        "head_mean": (L, h, e),
        "neuron_scale": (L, n),
        "neuron_mean": (L, n),
    }


@pytest.mark.parametrize("field", LAYER_EDIT_FIELDS)
def test_every_edit_field_shape_named(tiny, field):
    m = tiny["gpt_neo"]
    cfg = m.config
    ids = np.zeros((2, 4), np.int32)
    good = _full_shapes(cfg, 2, 4)[field]
    wrong_last = good[:-1] + (good[-1] + 1,)
    wrong_layer = (cfg.n_layers + 1,) + good[1:]
    for shape in (wrong_last, wrong_layer):
        extra = (
            {"head_scale": jnp.ones((cfg.n_layers, cfg.n_heads))} if field == "head_mean" else {}
        )
        edits = Edits(**{field: jnp.zeros(shape), **extra})
        parts = (f"edits.{field}:", f"shape {shape}", f"layer={cfg.n_layers}")
        _raises(ValueError, lambda e=edits: m.forward(ids, edits=e), *parts)
        _raises(ValueError, lambda e=edits: models.forward(cfg, m.params, ids, None, e), *parts)


def test_scale_edit_with_too_many_axes_named(tiny):
    m = tiny["gpt2"]
    edits = Edits(neuron_scale=jnp.ones((2, 2, 4, 1, 256)))
    _raises(ValueError, lambda: m.forward(np.zeros((2, 4), np.int32), edits=edits), "d_mlp=256")


def test_broadcast_edits_still_accepted_and_unchanged(tiny):
    """The forms the study uses (heads.attribution_scores' z_patch [layer, 1, 1, head, d_head],
    per-row head_scale [layer, batch, head]) give the numbers of their full-shape spelling."""
    m = tiny["gpt_neox"]
    cfg = m.config
    L, h, e = cfg.n_layers, cfg.n_heads, cfg.d_head
    ids = np.random.default_rng(1).integers(0, 512, (2, 5)).astype(np.int32)
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.standard_normal((L, 1, 1, h, e)), jnp.float32)
    zm = jnp.asarray(rng.uniform(size=(L, 2, 5, h)), jnp.float32)
    s = jnp.asarray(rng.uniform(size=(L, 2, h)), jnp.float32)
    small = Edits(z_patch=z, z_patch_mask=zm, head_scale=s, resid_add=jnp.ones((L, cfg.d_model)))
    full = Edits(
        z_patch=jnp.broadcast_to(z, (L, 2, 5, h, e)),
        z_patch_mask=zm,
        head_scale=jnp.broadcast_to(s[:, :, None], (L, 2, 5, h)),
        resid_add=jnp.ones((L, 2, 5, cfg.d_model)),
    )
    a, _ = m.forward(ids, edits=small)
    b, _ = m.forward(ids, edits=full)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Broken checkpoints


def _folder(tmp_path, family="gpt2", hf=None, weights=None):
    d = tmp_path / f"ckpt_{family}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(hf or models.tiny_hf_config(family)))
    if weights is not None:
        save_file(weights, str(d / "model.safetensors"))
    return d


def test_truncated_safetensors_named(tmp_path):
    d = _folder(tmp_path, weights={"wte.weight": np.zeros((512, 64), np.float32)})
    w = d / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    parts = (f"{w}: truncated or not a safetensors file", "download it again")
    _raises(models.CheckpointError, lambda: models.load(str(d)), *parts)
    w.write_bytes(b"<html>404</html>")  # what a failed download can leave behind
    _raises(models.CheckpointError, lambda: models.load(str(d), use_param_cache=False), *parts)


def test_config_json_list_or_not_json_named(tmp_path):
    d = _folder(tmp_path)
    cfg = d / "config.json"
    cfg.write_text("[1, 2]")
    _raises(models.CheckpointError, lambda: models.load(str(d)), f"{cfg}:", "JSON list")
    cfg.write_text('{"model_type": "gpt2",')
    _raises(
        models.CheckpointError,
        lambda: models.load(str(d)),
        f"{cfg}: not valid JSON",
        "download it again",
    )
    with pytest.raises(ValueError):  # still a ValueError, as every load error
        models.load(str(d))


@pytest.mark.parametrize(
    "family,key", [("gpt2", "n_embd"), ("gpt_neox", "hidden_size"), ("gpt_neo", "num_layers")]
)
def test_config_missing_required_key_named(tmp_path, family, key):
    hf = models.tiny_hf_config(family)
    del hf[key]
    d = _folder(tmp_path, family, hf=hf)
    parts = (f"{d / 'config.json'}:", f"lacks the required setting {key!r}", "download")
    _raises(models.ConversionError, lambda: models.load(str(d)), *parts)
    _raises(models.ConversionError, lambda: models.config_from_hf(hf), repr(key))


def test_config_from_hf_refuses_non_dict_and_wrong_types():
    _raises(models.ConversionError, lambda: models.config_from_hf([1, 2]), "got a list")
    hf = models.tiny_hf_config("gpt2", n_embd="64")
    _raises(models.ConversionError, lambda: models.config_from_hf(hf, where="x.json"), "x.json:")


def test_broken_shard_index_named(tmp_path):
    d = _folder(tmp_path)
    index = d / "model.safetensors.index.json"
    index.write_text('{"weight_map": ')
    _raises(models.CheckpointError, lambda: models.load(str(d)), f"{index}: not valid JSON")
    index.write_text("{}")
    _raises(models.CheckpointError, lambda: models.load(str(d)), f"{index}:", "weight_map")


def test_damaged_bin_named(tmp_path):
    pytest.importorskip("torch")
    d = _folder(tmp_path)
    (d / "pytorch_model.bin").write_bytes(b"not a zip archive")
    parts = (f"{d / 'pytorch_model.bin'}: truncated or not a PyTorch checkpoint", "download")
    _raises(models.CheckpointError, lambda: models.load(str(d)), *parts)


def test_weights_of_another_model_name_the_folder(tmp_path):
    d = _folder(tmp_path, weights={"wte.weight": np.zeros((512, 64), np.float32)})
    parts = (f"{d}: checkpoint lacks tensor", "download both again")
    _raises(models.ConversionError, lambda: models.load(str(d)), *parts)


def test_not_found_suggests_the_hf_cli_that_ships(tmp_path):
    msg = _raises(
        models.CheckpointNotFound,
        lambda: models.load("EleutherAI/pythia-160m", revision="step1", cache_dir=str(tmp_path)),
        "hf download EleutherAI/pythia-160m --revision step1 --cache-dir",
    )
    assert "huggingface-cli" not in msg
    assert isinstance(models.CheckpointNotFound("x"), models.CheckpointError)
    # The command named is the one huggingface_hub installs.
    scripts = importlib.metadata.entry_points(group="console_scripts", name="hf")
    assert any(ep.value.startswith("huggingface_hub.") for ep in scripts)


def test_padded_tokens_keep_every_real_token():
    ids = np.array([[5, 6, 7], [8, 9, 9]], np.int32)
    mask = np.array([[1, 1, 1], [1, 0, 0]], bool)
    toks = models.Tokens(ids, mask, (((0, 1),) * 3, ((0, 1),)), ("a", "b"), False, pad_id=9)
    wide = toks.padded(8)
    assert wide.ids.shape == wide.mask.shape == (2, 8)
    np.testing.assert_array_equal(wide.ids[:, :3], ids)
    assert (wide.ids[:, 3:] == 9).all() and not wide.mask[:, 3:].any()
    np.testing.assert_array_equal(wide.last, toks.last)
    with pytest.raises(ValueError, match="width 2 <"):
        toks.padded(2)
