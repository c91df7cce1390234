"""Run as one of two processes (tests/e2e/test_multiprocess_study.py): a 12-row batch fed on a
2x2 mesh over both processes; prints which rows this process's devices received and whether a
forward-sized output comes back whole.

    python tests/e2e/feed_rows.py PORT PROCESS_ID
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jaxcirc.infra import distributed  # noqa: E402

distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from models import sharding  # noqa: E402

x = np.arange(24, dtype=np.int32).reshape(12, 2)  # row r holds 2r, 2r+1
with jax.set_mesh(sharding.make_mesh(2, 2)):
    y = models.feed_batch(x)
    doubled = jax.jit(lambda a: sharding.replicate_outputs(sharding.constrain_batch(a) * 2))(y)
rows = sorted({int(r) for s in y.addressable_shards for r in np.asarray(s.data)[:, 0] // 2})
print("rows", rows)
print("whole", bool(np.array_equal(np.asarray(doubled), 2 * x)))
