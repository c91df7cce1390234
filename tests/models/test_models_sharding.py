"""The forward pass under a 2x2 ('data', 'model') mesh of 4 forced host devices equals the
unsharded one (atol 1e-5). Runs in a subprocess: the device count is fixed at jax import."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

import models
from models.sharding import partition_specs


def test_sharded_forward_equals_unsharded():
    script = Path(__file__).with_name("sharded_forward.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK")
    assert out.stdout.count("sharded == unsharded") == 3


def test_every_param_has_a_rule():
    for family in ("gpt2", "gpt_neox", "gpt_neo"):
        m = models.random_model(models.tiny_hf_config(family))
        specs = partition_specs(m.params)
        assert jax.tree_util.tree_structure(specs, is_leaf=lambda x: x is None) is not None
        assert len(jax.tree_util.tree_leaves(m.params)) == len(
            jax.tree_util.tree_leaves(
                specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)
            )
        )


def test_unknown_param_is_refused():
    with pytest.raises(ValueError, match="no partition rule"):
        partition_specs({"blocks": {"attn": {"W_mystery": jax.numpy.zeros((2, 3))}}})
