"""Run in its own process (the device count must be set before jax is imported): a sharded
safetensors checkpoint streamed onto a 2x2 ('data', 'model') mesh of 4 forced host devices."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import sys  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, NamedSharding  # noqa: E402

import models  # noqa: E402
from models import hf_reference as ref  # noqa: E402
from models.sharding import partition_specs  # noqa: E402

assert jax.device_count() == 4, jax.devices()
mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
for family in ("gpt2", "gpt_neox", "gpt_neo"):
    # 4 heads (2 per device on 'model'), an even vocabulary and MLP width: every rule splits.
    hf_cfg = models.tiny_hf_config(family)
    with tempfile.TemporaryDirectory() as tmp:
        ref.hf_model(hf_cfg, seed=31).save_pretrained(tmp, max_shard_size="40KB")
        plain = models.load(tmp, with_tokenizer=False, use_param_cache=False)
        sharded = models.load(tmp, with_tokenizer=False, stream=True, mesh=mesh, dtype="bf16")
        whole = models.load(tmp, with_tokenizer=False, use_param_cache=False, dtype="bf16")
    specs = partition_specs(plain.params)
    leaves = jax.tree_util.tree_leaves_with_path(sharded.params)
    for (path, a), spec, w in zip(
        leaves,
        jax.tree_util.tree_leaves(
            specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
        ),
        jax.tree_util.tree_leaves(whole.params),
        strict=True,
    ):
        assert a.sharding.is_equivalent_to(NamedSharding(mesh, spec), a.ndim), (path, a.sharding)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(w), err_msg=str(path))
    assert len(sharded.params["blocks"]["attn"]["W_Q"].sharding.device_set) == 4
    ids = np.random.default_rng(0).integers(0, 512, (4, 8)).astype(np.int32)
    want, _ = whole.forward(ids)
    with jax.sharding.use_mesh(mesh) if hasattr(jax.sharding, "use_mesh") else mesh:
        got, _ = sharded.forward(ids)
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want, np.float32), atol=2e-2)
    print(family, "streamed onto the mesh == unsharded")
sys.stdout.flush()
