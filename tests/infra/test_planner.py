"""The planner: exact param counts and splits of published shapes, a plan for configs/paper.py
printed by `run_study.py --dry_run` from configs alone (no weights here), and a model that
cannot fit refused with one line naming the fix, before anything is loaded; a model that fits
is not refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

import models
from configs import paper
from jaxcirc.infra import batches, planner

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def _script(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1"}
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, str(ROOT / "scripts" / "run_study.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def _shape(name: str, dtype: str, data: int = 1, model: int = 1) -> planner.Shape:
    cfg = models.config_from_hf(models.published_hf_config(name))
    return planner.shape_of(cfg, dtype, {"data": data, "model": model})


def test_param_counts_and_split_of_published_shapes():
    """GPT-2 small: 124,439,808 params (tied unembedding), 84,934,656 in block matmuls
    (12 x (4 x 768^2 + 2 x 768 x 3072)); on a model axis of 4 Pythia-160M's per-device bytes
    fall to the replicated embedding (W_E: vocab x d_model) plus a quarter of the rest."""
    s = _shape("gpt2", "float32")
    assert (s.n_params, s.n_matmul) == (124_439_808, 84_934_656)
    assert s.bytes_per_device == 4 * s.n_params
    one, four = _shape("pythia-160m", "float32"), _shape("pythia-160m", "float32", 2, 4)
    embed = 50304 * 768 * 4 + 2048 * 0  # rotary: no position table
    replicated = embed + 4 * 768 * (2 * 12 + 2 + 2 * 12)  # layer norms, output biases
    assert abs(four.bytes_per_device - (replicated + (one.bytes_per_device - replicated) / 4)) < (
        one.bytes_per_device * 0.01
    )
    assert _shape("pythia-160m", "bfloat16").bytes_per_device == one.bytes_per_device / 2


def test_dry_run_prints_a_plan_for_the_paper_config():
    out = _script("--config=configs/paper.py", "--dry_run")
    assert out.returncode == 0, out.stderr[-2000:]
    for label in ("gpt2", "pythia-160m", "gpt-neo-125m"):
        assert f"model {label}:" in out.stdout
    for phase in ("extract", "steering", "heads", "cross_model"):
        assert f"  {phase} " in out.stdout
    assert "GFLOP/s measured" in out.stdout and "fits" in out.stdout
    assert "DOES NOT FIT" not in out.stdout


def test_dry_run_refuses_what_cannot_fit_with_one_line():
    """A KV cache of 10^8 rows fits no machine: exit 2, one line naming the batch fix."""
    out = _script(
        "--config=configs/paper.py", "--dry_run", "--config.steering.batch_rows=100000000"
    )
    assert out.returncode == 2
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "does not fit" in err[0] and "smaller batch" in err[0], err
    assert "DOES NOT FIT HERE" in out.stdout


def test_a_run_is_refused_before_anything_is_loaded(tmp_path):
    """Without --dry_run the same check runs first: the error is the fit, not the missing
    weights, and no run directory is made."""
    work = tmp_path / "run"
    out = _script(
        "--config=configs/paper.py", f"--workdir={work}", "--config.steering.batch_rows=100000000"
    )
    assert out.returncode == 2 and "does not fit" in out.stderr, out.stderr[-2000:]
    assert not work.exists()


def _pythia(name: str, dtype: str, stream: bool):
    cfg = paper.get_config("")
    src = ml_collections.ConfigDict({"label": name, "source": f"EleutherAI/{name}"})
    cfg.models.sources = [src]
    cfg.models.dtype, cfg.models.stream = dtype, stream
    return cfg


def _plan(cfg, memory):
    """The plan at the batch sizes fitted to `memory` (paper's are "auto")."""
    fitted, _ = batches.fit_batches(cfg, memory=memory, strict=True)
    return planner.make_plan(fitted, memory=memory)


def test_too_large_model_named_with_its_fixes_and_a_fitting_one_passes():
    """On a pretend 6 GiB CPU machine: Pythia-1B loaded whole in fp32 needs 8 bytes a param
    while converting (about 7.5 GiB): refused, naming bf16 and streamed loading; in bf16,
    streamed, it fits (2 GiB of params, a batch under 1.5 GiB). Pythia-12B fits neither way."""
    memory = (6 * GIB, 6 * GIB)
    whole = _plan(_pythia("pythia-1b", "float32", False), memory)
    with pytest.raises(ValueError, match="does not fit") as e:
        planner.check_fits(whole)
    msg = str(e.value)
    assert "\n" not in msg and "pythia-1b" in msg
    assert "--config.models.dtype=bfloat16" in msg and "--config.models.stream=True" in msg
    streamed = _plan(_pythia("pythia-1b", "bfloat16", True), memory)
    planner.check_fits(streamed)
    big = _plan(_pythia("pythia-12b", "bfloat16", True), memory)
    with pytest.raises(ValueError, match="pythia-12b"):
        planner.check_fits(big)
