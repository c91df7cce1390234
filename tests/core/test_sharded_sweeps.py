"""The head sweep and a steering sweep (generation with its KV cache) on a 2x4 (data x model)
mesh of 8 forced host devices equal the one-device calls, for each family: head-removed final
residuals within 1e-5, generated tokens identical, steered readouts within 1e-4 (a sharded
matmul sums its partial products in another order). Runs in a subprocess: the device count is
fixed when jax starts."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_sharded_sweeps_equal_unsharded():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = ROOT / "tests" / "core" / "sharded_sweeps.py"
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    for family in ("gpt2", "gpt_neox", "gpt_neo"):
        assert f"{family} sharded == unsharded" in out.stdout
