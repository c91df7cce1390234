"""Run in its own process (the device count is fixed when jax starts): the head sweep, a
steering sweep and the MLP-neuron sweep (the heads phase's neuron extra) of tiny random models
of each family on a 2x4 (data x model) mesh of 8 forced
host devices, against the same calls on one device."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from jaxcirc.core import heads, neurons, steering  # noqa: E402
from models import EngineSettings, Readout  # noqa: E402
from models.sharding import make_mesh, shard_params  # noqa: E402

assert jax.device_count() == 8, jax.devices()
mesh = make_mesh(2, 4)
rng = np.random.default_rng(0)
for family in ("gpt2", "gpt_neox", "gpt_neo"):
    m = models.random_model(models.tiny_hf_config(family), seed=1)
    cfg = m.config
    ids = rng.integers(0, cfg.d_vocab, (4, 7)).astype(np.int32)
    mask = np.ones_like(ids, bool)
    mask[1, 5:] = mask[3, 3:] = False
    z_ref = rng.standard_normal((2, cfg.n_layers, cfg.n_heads, cfg.d_head)).astype(np.float32)
    z_ref[0] = 0.0  # zero-ablation and a "mean" reference
    dirs = rng.standard_normal((2, cfg.n_layers, cfg.d_model)).astype(np.float32)
    grid = steering.SteeringGrid(dirs, np.ones(cfg.n_layers, np.float32), (0, 1), (-3.0, 0.0, 3.0))
    settings = EngineSettings(5, seed=2)
    readout = Readout(np.arange(0, cfg.d_vocab, 7), dirs[:, -1])

    want_sweep = heads.head_sweep(cfg, m.params, ids, mask, z_ref)
    want_steer = steering.steering_sweep(cfg, m.params, ids, mask, grid, settings, readout)
    neuron_sweep = jax.jit(neurons.neuron_sweep, static_argnums=(0, 5, 6))
    picks = ((cfg.n_layers - 1, 2), (0, 1), (0, 3))  # unordered: results keep this order
    mu = 0.2 * rng.standard_normal((cfg.n_layers, cfg.d_mlp)).astype(np.float32)
    refs = np.stack([np.zeros_like(mu), mu])
    want_neurons = neuron_sweep(cfg, m.params, ids, mask, refs, picks, 2)
    sharded = shard_params(m.params, mesh)
    with jax.set_mesh(mesh):
        got_sweep = heads.head_sweep(cfg, sharded, ids, mask, z_ref)
        got_steer = steering.steering_sweep(cfg, sharded, ids, mask, grid, settings, readout)
        got_neurons = neuron_sweep(cfg, sharded, ids, mask, refs, picks, 2)
    for w, g in zip(want_neurons, got_neurons, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    assert len(got_sweep[0].sharding.device_set) == 8, got_sweep[0].sharding
    for w, g in zip(want_sweep, got_sweep, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got_steer.out.tokens, want_steer.out.tokens)
    np.testing.assert_array_equal(got_steer.out.eos_at, want_steer.out.eos_at)
    np.testing.assert_allclose(got_steer.out.cols, want_steer.out.cols, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_steer.out.proj, want_steer.out.proj, rtol=1e-4, atol=1e-4)
    print(family, "sharded == unsharded")
print("OK")
