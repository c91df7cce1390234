"""Batch sizes from memory (jaxcirc.infra.batches): "auto" becomes the largest size that fits the
memory given, smaller when it is scarce, never past the setting's cap or the work; a whole
number is kept; a model that cannot fit even at batch 1 is refused in one line before anything
is loaded; a rerun keeps its run directory's sizes while they fit; config_check takes "auto"
and refuses other words and sizes below 1; the dry run names the sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ml_collections
import pytest

from configs import demo, paper
from jaxcirc import config_check
from jaxcirc.infra import batches, planner

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30
STEERING = next(s for s in batches.SETTINGS if s.key == "steering.batch_rows")


def _gpt2_paper():
    """configs/paper.py (every batch setting "auto") with GPT-2 small alone: planned from its
    published shape, no weights."""
    cfg = paper.get_config("")
    cfg.models.sources = [ml_collections.ConfigDict({"label": "gpt2", "source": "gpt2"})]
    return cfg


def _sizes(cfg) -> dict:
    return {s.key: cfg[s.section][s.name] for s in batches.SETTINGS}


def _need(cfg, key: str, size: int) -> float:
    """Bytes per device of one batch of `size` under `key`, as the planner counts them."""
    plan = planner.make_plan(cfg, memory=(GIB, GIB))
    s = planner.shape_of(plan.models[0].config, plan.models[0].dtype, {"data": 1, "model": 1})
    return planner.batch_bytes(cfg, s, planner.prompt_counts(cfg), key, size)


def test_scarce_memory_picks_smaller_batches_and_plentiful_memory_the_caps():
    """At 2 GiB a batch may use (2 x 0.85 - 0.46 GiB of GPT-2's params) / 2 = 0.62 GiB: the
    KV-cache settings drop below their caps to the largest power of two that fits (the next
    one would not); at 256 GiB every setting is at its cap. Either way the plan then fits."""
    cfg = _gpt2_paper()
    scarce, notes = batches.fit_batches(cfg, memory=(2 * GIB, 2 * GIB))
    plenty, _ = batches.fit_batches(cfg, memory=(256 * GIB, 256 * GIB))
    assert _sizes(plenty) == {s.key: s.most for s in batches.SETTINGS}
    small = _sizes(scarce)["steering.batch_rows"]
    assert small < STEERING.most and small & (small - 1) == 0, small
    room = batches.room(planner.make_plan(scarce, memory=(2 * GIB, 2 * GIB)), 1)
    assert abs(room - (2 * 0.85 * GIB - 4 * 124_439_808) / 2) < 1e6
    assert _need(scarce, "steering.batch_rows", small) <= room
    assert _need(scarce, "steering.batch_rows", 2 * small) > room
    assert all(isinstance(v, int) for v in _sizes(scarce).values())
    assert f"steering rows {small} (memory)" in notes[0] and "\n" not in notes[0]
    planner.check_fits(planner.make_plan(scarce, memory=(2 * GIB, 2 * GIB)))
    planner.check_fits(planner.make_plan(plenty, memory=(256 * GIB, 256 * GIB)))


def test_auto_never_exceeds_the_work():
    """The CI-size demo steers 861 rows per model (5 directions x 2 layers x 2 alphas x 41
    prompts + 41: 6 neutral, 35 real-world) and extracts from 280 prompts: with memory to
    spare, steering rows stop at the 861 rows (not 1024), the extraction at its cap of 256
    (below the 280 prompts)."""
    cfg = demo.get_config("smoke")
    cfg.steering.batch_rows = "auto"
    cfg.extract.batch_size = "auto"
    out, notes = batches.fit_batches(cfg, memory=(256 * GIB, 256 * GIB))
    p = planner.prompt_counts(cfg)
    rows = planner.steering_rows(cfg, 2, p)
    assert rows == 861 < STEERING.most
    assert out.steering.batch_rows == rows and "(all the work)" in notes[0]
    assert out.extract.batch_size == 256 <= p.emotional + p.neutral
    cfg.steering.max_prompts = 1  # 21 x 36 rows: the work shrinks, and so does the batch
    out, _ = batches.fit_batches(cfg, memory=(256 * GIB, 256 * GIB))
    assert out.steering.batch_rows == planner.steering_rows(cfg, 2, p) == 756


def test_a_whole_number_is_kept_and_a_config_without_auto_is_untouched():
    cfg = _gpt2_paper()
    cfg.steering.batch_rows = 4096  # more than "auto" would ever pick, and more than fits
    out, notes = batches.fit_batches(cfg, memory=(2 * GIB, 2 * GIB))
    assert out.steering.batch_rows == 4096 and "as given: steering rows 4096" in notes[0]
    assert out.extract.batch_size != "auto" and cfg.extract.batch_size == "auto"  # a copy
    fixed = demo.get_config("smoke")
    same, notes = batches.fit_batches(fixed, memory=(GIB, GIB))
    assert same is fixed and notes == []
    assert batches.resolve(fixed, None, memory=(GIB, GIB)) is fixed


def test_batch_one_that_cannot_fit_is_refused_in_one_line_before_loading(tmp_path, monkeypatch):
    """GPT-2 small's params (0.46 GiB) in 0.55 GiB of host memory (0.47 usable): not even one
    row fits beside them. run_study refuses before the run directory or any model exists."""
    from jaxcirc import study

    monkeypatch.setattr(planner, "host_memory", lambda: 0.55 * GIB)

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(study, "load_models", no_loading)
    work = tmp_path / "run"
    with pytest.raises(ValueError, match="does not fit") as e:
        study.run_study(_gpt2_paper(), str(work))
    msg = str(e.value)
    assert "\n" not in msg and "'gpt2'" in msg and "bf16" in msg, msg
    assert not work.exists()


def test_a_rerun_keeps_the_sizes_its_run_directory_recorded_while_they_fit(tmp_path):
    cfg = _gpt2_paper()
    recorded = {"steering": {"batch_rows": 128}, "extract": {"batch_size": 64}}
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    lines = []
    out = batches.resolve(cfg, tmp_path, lines.append, memory=(256 * GIB, 256 * GIB))
    assert (out.steering.batch_rows, out.extract.batch_size) == (128, 64)
    assert out.heads.batch_size == 64 and len(lines) == 1
    assert "steering rows 128 (run directory)" in lines[0]
    recorded["steering"]["batch_rows"] = 1024  # recorded, but does not fit in 2 GiB: refitted
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    out = batches.resolve(cfg, tmp_path, lines.append, memory=(2 * GIB, 2 * GIB))
    assert out.steering.batch_rows < STEERING.most


def test_the_run_records_the_resolved_sizes_in_config_json(tmp_path):
    """config.json (what the stage keys' sections and a rerun read) holds numbers, not "auto"."""
    from jaxcirc import study

    cfg = demo.get_config("smoke")
    cfg.steering.batch_rows = "auto"
    cfg.heads.batch_size = "auto"
    study.run_study(cfg, str(tmp_path / "run"), phases=["dataset"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert isinstance(saved["steering"]["batch_rows"], int)
    assert isinstance(saved["heads"]["batch_size"], int) and saved["extract"]["batch_size"] == 32


@pytest.mark.parametrize("setting", [s.key for s in batches.SETTINGS])
@pytest.mark.parametrize("value", ["big", 0, -1, 2.5, True])
def test_config_check_refuses_other_words_and_sizes_below_one(setting, value):
    cfg = demo.get_config("")  # heads_generation on (the CI size turns it off)
    section, name = setting.split(".")
    cfg[section][name] = value
    with pytest.raises(ValueError, match=f"config.{setting}=") as e:
        config_check.check(cfg)
    assert "\n" not in str(e.value) and "'auto'" in str(e.value)
    for ok in ("auto", 64):
        cfg[section][name] = ok
        config_check.check(cfg)


def _script(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1"}
    env.pop("XLA_FLAGS", None)
    cmd = [sys.executable, str(ROOT / "scripts" / "run_study.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_the_dry_run_names_the_resolved_sizes():
    """configs/paper.py's sizes are "auto": the plan's first line names each resolved one; an
    override to a whole number on the command line (the setting takes either) is "as given"."""
    out = _script("--config=configs/paper.py", "--dry_run", "--config.extract.batch_size=48")
    assert out.returncode == 0, out.stderr[-2000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith("batch sizes from memory: steering rows "), first
    for s in batches.SETTINGS:
        if s.key != "extract.batch_size":
            assert f"{s.label} " in first.split("; ")[0], (s.label, first)
    assert first.endswith("as given: extract 48"), first
    assert "auto" not in out.stdout


_PROBE = """
import sys
from jaxcirc.infra import distributed
distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))
print("agreed", distributed.smallest([[64, 1024, 8], [128, 256, 8]][int(sys.argv[2])]))
"""


def test_across_processes_every_process_takes_the_smallest_size():
    """Two processes on localhost (gloo), each with its own sizes: both end with the smallest
    of each (their stage keys must agree)."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE, str(port), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    for out in outs:
        assert "agreed [64, 256, 8]" in out, out[-2000:]
