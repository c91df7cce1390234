"""The "How this run differs from the study" section is generated from the config the run used:
its Controls line names each control with the counts that config ran, and a control the run
left out is not claimed."""

from __future__ import annotations

from configs import demo
from jaxcirc.report import differences


def _controls(cfg) -> str:
    (line,) = [
        ln for ln in differences.section_differences(cfg, ["a"]) if ln.startswith("- **Controls**")
    ]
    return line


def test_controls_line_names_every_control_with_the_counts_run():
    cfg = demo.get_config()
    line = _controls(cfg)
    s = cfg.steering
    assert f"{s.n_label_shuffled} label-shuffled class-mean differences" in line
    assert f"seed {s.label_shuffle_seed}" in line
    assert f"{min(s.n_control_text, s.n_label_shuffled)} of them generated" in line
    assert f"{s.n_random_seeds} generated isotropic random directions" in line
    assert f"max over heads of {cfg.heads.n_random} random directions" in line
    assert "held-out other half" in line
    assert f"the same search for {cfg.heads_circuits.n_null} null targets" in line
    assert f"max over neurons of {cfg.heads_neurons.n_random} random directions" in line
    assert f"{cfg.heads_generation.n_control} random head sets of the same size" in line
    assert "folds stratified on the permuted labels" in line


def test_controls_line_follows_the_config():
    cfg = demo.get_config()
    cfg.steering.n_label_shuffled = 0
    cfg.heads_circuits.enabled = False
    cfg.heads_neurons.n_random = 7
    line = _controls(cfg)
    assert "no label-shuffled vectors (steering.n_label_shuffled = 0)" in line
    assert "label-shuffled class-mean" not in line
    assert "null searches" not in line
    assert "max over neurons of 7 random directions" in line
    cfg.phases = ["dataset", "extract", "vectors", "report"]
    line = _controls(cfg)
    assert "steering verdicts" not in line and "head screen" not in line
    assert "1000 label shuffles (cosines)" in line
