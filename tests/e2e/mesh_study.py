"""Run in its own process (the device count is fixed when jax starts): the smoke study of two
stand-ins (tests/e2e/smoke_config.py, every phase) on a (data x model) mesh of forced host
devices.

    python tests/e2e/mesh_study.py WORKDIR CACHE_DIR DATA MODEL
"""

import os
import sys

workdir, cache, data, model = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if data * model > 1:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={data * model}"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxcirc import study  # noqa: E402
from tests.e2e import smoke_config  # noqa: E402

cfg = smoke_config.get_config()
cfg.models.cache_dir = cache
cfg.mesh.data, cfg.mesh.model = data, model
study.run_study(cfg, workdir)

# What ran where: the params' devices and split, and a forward's output split over 'data'.
import jax  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402

m = next(iter(study.load_models(cfg)[0].values()))
w_q = m.params["blocks"]["attn"]["W_Q"].sharding
print("devices", jax.device_count(), len(w_q.device_set), getattr(w_q, "spec", None))
with study.mesh_context(cfg):
    logits, _ = models.forward(m.config, m.params, np.zeros((4, 8), np.int32))
print("logits", getattr(logits.sharding, "spec", None))
print("OK")
