"""Run in its own process (the device count must be set before jax is imported)."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType  # noqa: E402

import models  # noqa: E402
from models import Record  # noqa: E402
from models.sharding import batch_sharding, partition_specs, shard_params  # noqa: E402

assert jax.device_count() == 4, jax.devices()
mesh = jax.make_mesh((2, 2), ("data", "model"), axis_types=(AxisType.Auto, AxisType.Auto))
for family in ("gpt2", "gpt_neox", "gpt_neo"):
    m = models.random_model(models.tiny_hf_config(family), seed=0)
    ids = np.random.default_rng(0).integers(0, 512, (4, 8)).astype(np.int32)
    rec = Record(resid_pre=True, result=True)
    want_logits, want = models.forward(m.config, m.params, ids, record=rec)
    sp = shard_params(m.params, mesh)
    assert len(sp["blocks"]["attn"]["W_Q"].sharding.device_set) == 4
    wq_spec = partition_specs(m.params)["blocks"]["attn"]["W_Q"]
    assert wq_spec == jax.sharding.PartitionSpec(None, None, "model", None), wq_spec
    ids_s = jax.device_put(ids, batch_sharding(mesh))
    with jax.sharding.use_mesh(mesh) if hasattr(jax.sharding, "use_mesh") else mesh:
        got_logits, got = models.forward(m.config, sp, ids_s, record=rec)
    np.testing.assert_allclose(np.asarray(got_logits), np.asarray(want_logits), atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.resid_pre), np.asarray(want.resid_pre), atol=1e-5)
    np.testing.assert_allclose(np.asarray(got.result), np.asarray(want.result), atol=1e-5)
    print(family, "sharded == unsharded")
print("OK")
