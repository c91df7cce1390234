"""Streamed loading (models.stream): safetensors read tensor by tensor, memory-mapped, each
converted tensor placed straight onto its devices, equal bit for bit to converting the whole
state dict in memory (models.convert.convert_state), sharded checkpoints included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import models
from models import checkpoint, families, stream
from models import hf_reference as ref
from models.convert import ConversionError, DictTensors, StateReader

FAMILIES = ["gpt2", "gpt_neox", "gpt_neo"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXCIRC_CACHE", str(tmp_path / "jaxcirc_cache"))


def _hf_cfg(family: str) -> dict:
    # 3 heads of 8 and 3 layers: runs of rows must respect head boundaries and layer slots.
    depth = {"gpt2": "n_layer", "gpt_neox": "num_hidden_layers", "gpt_neo": "num_layers"}
    kw = {depth[family]: 4 if family == "gpt_neo" else 3}
    heads = {"gpt2": "n_head", "gpt_neox": "num_attention_heads", "gpt_neo": "num_heads"}
    width = {"gpt2": "n_embd"}.get(family, "hidden_size")
    return models.tiny_hf_config(family, **kw, **{heads[family]: 3, width: 24})


def _assert_same(a, b):
    """Two param trees equal bit for bit, dtypes included."""
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        assert x.dtype == y.dtype, path
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def _in_memory(hf, hf_cfg, dtype="float32"):
    return ref.convert(hf, hf_cfg, dtype).params


@pytest.mark.parametrize("family", FAMILIES)
def test_sharded_checkpoint_streams_equal_to_unsharded(tmp_path, family):
    """transformers' save_pretrained with a small max_shard_size: several model-0000k-of-0000n
    files and their index; streamed, they give the params the unsharded file gives in memory."""
    hf_cfg = _hf_cfg(family)
    hf = ref.hf_model(hf_cfg, seed=21)
    hf.save_pretrained(tmp_path / "one")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    shards = sorted((tmp_path / "sharded").glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    whole = models.load(str(tmp_path / "one"), with_tokenizer=False)
    streamed = models.load(str(tmp_path / "sharded"), with_tokenizer=False, stream=True)
    _assert_same(streamed.params, whole.params)
    _assert_same(streamed.params, _in_memory(hf, hf_cfg))
    assert streamed.cache_key is None  # streaming reads the files, never the params cache
    assert streamed.source == str(tmp_path / "sharded") and streamed.dtype == "float32"
    ids = np.random.default_rng(21).integers(0, hf_cfg["vocab_size"], (2, 7)).astype(np.int32)
    ref.assert_matches(streamed, hf, ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_runs_of_rows_equal_whole_tensors(family):
    """Every tensor cut into runs of a few rows (whole heads for the fused and per-head ones):
    the params equal the whole-tensor conversion bit for bit, in fp32 and bf16, filled both ways
    (numpy in place on one CPU device; donated in-place updates on devices, here a 1x1 mesh)."""
    hf_cfg = _hf_cfg(family)
    hf = ref.hf_model(hf_cfg, seed=22)
    fam = families.family_for(hf_cfg)
    cfg = fam.config_from_hf(hf_cfg)
    source = DictTensors(ref.state_numpy(hf))
    has = StateReader(source, fam.PREFIXES, fam.SKIP).has
    runs = {t.key: stream.row_runs(t, 2048) for t in fam.plan(cfg, has)}
    assert max(len(r) for r in runs.values()) > 4  # the tiny chunk really cuts tensors
    one_device = jax.make_mesh((1, 1), ("data", "model"))  # Explicit axes: streamed as Auto
    for dtype in ("float32", "bfloat16"):
        want = _in_memory(hf, hf_cfg, dtype)
        for mesh in (None, one_device):
            got = stream.stream_params(fam, cfg, source, dtype, mesh=mesh, chunk_bytes=2048)
            _assert_same(got, want)


def test_fp16_checkpoint_streams_as_stored(tmp_path):
    """A checkpoint stored in fp16 (as Pythia ships): streamed to fp32 it holds the fp16 values
    exactly, and to bf16 the same rounding as the in-memory path."""
    hf_cfg = _hf_cfg("gpt_neox")
    hf16 = ref.in_dtype(ref.hf_model(hf_cfg, seed=23), "float16")
    hf16.save_pretrained(tmp_path / "fp16", max_shard_size="20KB")
    for dtype in ("float32", "bfloat16"):
        streamed = models.load(
            str(tmp_path / "fp16"), with_tokenizer=False, stream=True, dtype=dtype
        )
        whole = models.load(str(tmp_path / "fp16"), with_tokenizer=False, dtype=dtype)
        _assert_same(streamed.params, whole.params)
    auto = models.load(str(tmp_path / "fp16"), with_tokenizer=False, stream=True, dtype="auto")
    assert auto.dtype == "float16"


def test_safetensors_files_read_rows_memory_mapped(tmp_path):
    hf = ref.hf_model(_hf_cfg("gpt2"), seed=24)
    hf.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    _, files = checkpoint.weight_files(tmp_path / "ckpt")
    source = checkpoint.SafetensorsFiles(files)
    state = ref.state_numpy(hf)
    assert set(source.names()) <= set(state)
    name = "transformer.wte.weight"
    assert source.shape(name) == state[name].shape
    np.testing.assert_array_equal(source.read(name, 5, 9), state[name][5:9])
    np.testing.assert_array_equal(source.read(name), state[name])


def test_damaged_shard_is_named(tmp_path):
    hf = ref.hf_model(_hf_cfg("gpt2"), seed=25)
    hf.save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    shard = sorted((tmp_path / "ckpt").glob("model-*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(checkpoint.CheckpointError, match=f"{shard.name}: truncated") as e:
        models.load(str(tmp_path / "ckpt"), with_tokenizer=False, stream=True)
    assert "\n" not in str(e.value)


def test_missing_and_leftover_tensors_refused():
    hf_cfg = _hf_cfg("gpt_neo")
    fam = families.family_for(hf_cfg)
    cfg = fam.config_from_hf(hf_cfg)
    state = ref.state_numpy(ref.hf_model(hf_cfg, seed=26))
    missing = {k: v for k, v in state.items() if "h.1.mlp.c_fc.weight" not in k}
    with pytest.raises(ConversionError, match="lacks tensor 'h.1.mlp.c_fc.weight'"):
        stream.stream_params(fam, cfg, DictTensors(missing))
    extra = {**state, "transformer.h.0.mystery.weight": np.zeros(3, np.float32)}
    with pytest.raises(ConversionError, match="1 checkpoint tensors were not used"):
        stream.stream_params(fam, cfg, DictTensors(extra))


def test_unfilled_param_refused():
    """A plan that forgets a param is an error, never a param of zeros."""
    hf_cfg = _hf_cfg("gpt2")
    fam = families.family_for(hf_cfg)
    cfg = fam.config_from_hf(hf_cfg)
    state = ref.state_numpy(ref.hf_model(hf_cfg, seed=27))

    class Forgetful:
        PREFIXES, SKIP = fam.PREFIXES, fam.SKIP + (r"ln_f\..*",)

        @staticmethod
        def plan(cfg, has):
            return [t for t in fam.plan(cfg, has) if not t.key.startswith("ln_f")]

    with pytest.raises(ConversionError, match="not filled exactly once.*ln_final/bias"):
        stream.stream_params(Forgetful, cfg, DictTensors(state))


def test_streamed_onto_a_mesh():
    """On 4 forced host devices (a subprocess: the count is fixed at jax import): streamed onto
    a 2x2 ('data', 'model') mesh, every param carries its partition rule's sharding and equals
    the unsharded load."""
    script = Path(__file__).with_name("streamed_sharded.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("streamed onto the mesh == unsharded") == 3
