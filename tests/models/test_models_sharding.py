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


def test_a_split_the_mesh_axis_does_not_divide_is_replicated():
    """GPT-2's 50257-token vocabulary over a model axis of 4: W_U replicated (jax places only
    even splits); Pythia's 50304 splits; a shape without a mesh in context is left alone."""
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from models.sharding import constrain_batch, fit_spec

    sizes = {"data": 2, "model": 4}
    assert fit_spec(P(None, "model"), (768, 50257), sizes) == P(None, None)
    assert fit_spec(P(None, "model"), (768, 50304), sizes) == P(None, "model")
    assert fit_spec(P("model"), (3, 5), sizes) == P(None, None)
    x = np.ones((4, 3), np.float32)
    assert constrain_batch(x) is x
