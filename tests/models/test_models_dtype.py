"""bf16 / fp16 runs equal transformers run in the same dtype (torch on CPU), at the tolerance
models.contract states (Numerics); fp32 stays the default and unchanged.

For each array compared (logits; every hidden state), with `scale` = max |fp32 transformers value|
and eps = the dtype's machine epsilon (2**-7 bf16, 2**-10 fp16):
  |ours - transformers_dtype| <= 4 * eps * scale                     (the same computation)
  |ours - transformers_fp32| <= 2 * |transformers_dtype - transformers_fp32| + eps * scale
                                                                     (no less accurate than it)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models import Record, families
from models import hf_reference as ref
from models.generate import generate

EPS = {"bfloat16": 2.0**-7, "float16": 2.0**-10}


def _depth(family: str, n: int) -> dict:
    key = {"gpt2": "n_layer", "gpt_neox": "num_hidden_layers", "gpt_neo": "num_layers"}[family]
    return {key: n}


def _ours(model: models.LoadedModel, ids):
    logits, trace = model.forward(ids, record=Record.residuals(logits="all"))
    return np.asarray(logits, np.float32), np.asarray(trace.hidden_states(), np.float32)


def _check_dtype_run(hf_cfg: dict, dtype: str, seed: int, pos: int = 12):
    """Ours in `dtype` against transformers in `dtype` and in fp32, on logits and every hidden
    state but transformers' last (after its final norm; ours is before it)."""
    hf = ref.hf_model(hf_cfg, seed=seed)
    ids = np.random.default_rng(seed).integers(0, hf_cfg["vocab_size"], (2, pos)).astype(np.int32)
    exact = ref.run_hf(hf, ids)
    theirs = ref.run_hf(ref.in_dtype(hf, dtype), ids)
    model = ref.convert(hf, hf_cfg, dtype)
    assert model.dtype == dtype
    ours = _ours(model, ids)
    eps = EPS[dtype]
    for what, o, t, x in zip(("logits", "hidden"), ours, theirs, exact, strict=True):
        if what == "hidden":
            o, t, x = o[:-1], t[:-1], x[:-1]
        scale = np.abs(x).max()
        err = np.abs(o - t).max()
        assert err <= 4 * eps * scale, f"{what}: |ours - hf {dtype}| {err:.4g} > {4 * eps * scale}"
        ours_err, hf_err = np.abs(o - x).max(), np.abs(t - x).max()
        assert ours_err <= 2 * hf_err + eps * scale, (
            f"{what}: ours is {ours_err:.4g} from fp32, transformers {dtype} {hf_err:.4g}"
        )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gpt_neo"])
def test_small_model_in_dtype_equals_transformers(family, dtype):
    _check_dtype_run(models.tiny_hf_config(family, **_depth(family, 4)), dtype, seed=1)


# Published widths at 2 layers, bf16 (as large checkpoints are run). Pythia-2.8B: 80-dim heads,
# 20 rotary dims; Pythia-12B (the widest) is slow, as in test_published_configs.
@pytest.mark.parametrize(
    "name",
    ["gpt2-xl", "pythia-2.8b", pytest.param("pythia-12b", marks=pytest.mark.slow), "gpt-neo-2.7b"],
)
def test_published_width_in_bf16_equals_transformers(name):
    _check_dtype_run(families.with_layers(models.published_hf_config(name), 2), "bfloat16", seed=2)


def test_dtype_reaches_params_compute_and_trace():
    cfg = models.tiny_hf_config("gpt_neox")
    m32 = models.random_model(cfg, seed=3)
    m16 = models.random_model(cfg, seed=3, dtype="bf16")
    assert m32.dtype == "float32" and m16.dtype == "bfloat16"
    assert {a.dtype for a in jax.tree_util.tree_leaves(m16.params)} == {jnp.dtype(jnp.bfloat16)}
    ids = np.random.default_rng(3).integers(0, 512, (2, 6)).astype(np.int32)
    rec = Record(resid_pre=True, z=True, pattern=True, mlp_post=True)
    logits, trace = m16.forward(ids, record=rec)
    assert logits.dtype == jnp.bfloat16 and trace.resid_pre.dtype == jnp.bfloat16
    assert trace.z.dtype == jnp.bfloat16 and trace.mlp_post.dtype == jnp.bfloat16
    assert trace.pattern.dtype == jnp.float32  # the softmax is never rounded before it is read
    np.testing.assert_allclose(np.asarray(trace.pattern).sum(-1), 1.0, atol=1e-6)
    # forward(dtype=) casts inside the compiled call: the same numbers as bf16 params.
    cast_logits, cast_trace = m32.forward(ids, record=rec, dtype="bfloat16")
    np.testing.assert_array_equal(np.asarray(cast_logits), np.asarray(logits))
    np.testing.assert_array_equal(np.asarray(cast_trace.z), np.asarray(trace.z))


def test_fp32_default_unchanged():
    """No dtype given: fp32 params and outputs, and forward(dtype='float32') is the same call."""
    m = models.random_model(models.tiny_hf_config("gpt2"), seed=4)
    assert m.dtype == "float32"
    ids = np.random.default_rng(4).integers(0, 512, (2, 5)).astype(np.int32)
    a, _ = m.forward(ids)
    b, _ = m.forward(ids, dtype="float32")
    assert a.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_unknown_dtype_refused():
    with pytest.raises(ValueError, match="dtype='int8'; use one of float32, bfloat16, float16"):
        models.random_model(models.tiny_hf_config("gpt2"), dtype="int8")


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "gpt_neo"])
def test_generation_in_bf16_matches_its_forward(family):
    """KV-cached decoding in bf16 (cache in bf16, scores in fp32): the logits each new token was
    chosen from equal the full bf16 forward over prompt + generated tokens, within 4 eps * max
    |logit| (the decode block and the prompt pass round in different places)."""
    m = models.random_model(models.tiny_hf_config(family, **_depth(family, 4)), 5, dtype="bf16")
    ids = np.random.default_rng(5).integers(0, 512, (2, 7)).astype(np.int32)
    new = 6
    gen = generate(m.config, m.params, ids, None, new, vocab_ids=jnp.arange(512))
    assert gen.cols.dtype == jnp.bfloat16
    full, _ = m.forward(np.concatenate([ids, np.asarray(gen.tokens)], axis=1))
    want = np.asarray(full, np.float32)[:, ids.shape[1] - 1 : ids.shape[1] - 1 + new]
    got = np.asarray(gen.cols, np.float32)
    assert np.abs(got - want).max() <= 4 * EPS["bfloat16"] * np.abs(want).max()
