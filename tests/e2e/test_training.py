"""End to end: the study across training checkpoints (configs/demo.py:training, shrunk to a
2-layer d32 stand-in trained 6 steps, kept at steps 0, 3 and 6) through scripts/run_study.py:
the checkpoints artifacts and the report section with this run's numbers, nothing of the
English study (no extraction of the final model); a rerun recomputes nothing; a changed
checkpoints setting recomputes that stage and the report only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcirc.report.format import fmt
from tests.e2e.runs import COMPARED, compare, run_files, run_two

ROOT = Path(__file__).resolve().parents[2]
SLUG = "pythia-standin"
STEPS = [0, 3, 6]
# Small enough to train and study in seconds; the corpus must cover the prompts' vocabulary
# (500 lines do, 400 do not).
SHRINK = [
    "--config.models.corpus_lines=500",
    "--config.models.train.steps=6",
    "--config.models.train.batch=4",
    "--config.models.train.seq_len=64",
    "--config.models.shape.n_layers=2",
    "--config.models.shape.d_model=32",
    "--config.models.shape.n_heads=2",
    "--config.models.shape.n_ctx=64",
    "--config.models.shape.local_window=8",
    "--config.checkpoints.steps=(0, 3, 6)",
    "--config.checkpoints.probe_n_perm=20",
    "--config.checkpoints.n_perm=40",
    "--config.checkpoints.n_boot=50",
]


def _args(work: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "--config=configs/demo.py:training",
        f"--workdir={work}",
        f"--config.models.cache_dir={cache}",
        *SHRINK,
        *extra,
    ]


def _run(work: Path, cache: Path, *extra: str):
    args = _args(work, cache, *extra)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "0"}
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_study.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    base = tmp_path_factory.mktemp("training")
    work, cache = base / "run", base / "cache"
    out = _run(work, cache)
    return work, cache, out


def _stamps(work: Path) -> dict:
    return {p.relative_to(work): p.stat().st_mtime_ns for p in work.rglob(".stamp.json")}


def test_writes_the_checkpoints_artifacts_and_nothing_of_the_study(training):
    work, _, out = training
    folder = work / "checkpoints" / SLUG
    s = json.loads((folder / "summary.json").read_text())
    assert s["steps"] == STEPS and [c["name"] for c in s["checkpoints"]] == [
        "step0",
        "step3",
        "step6",
    ]
    for name in s["files"].values():
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    for name in ("probe.csv", "onset.csv", "overlap.csv", "maps.csv", "cosines.csv"):
        assert name in s["files"].values()
    assert {"probe_heatmap.png", "probe_curves.png", "onset.png"} <= set(s["files"].values())
    # One compiled extraction for every checkpoint of the shape.
    t = s["timing"]
    assert t["compiles_first"] >= 1 and t["compiles_after_first"] == 0, t
    assert "step 3 (2/3)" in out.stderr and "step 6 (3/3)" in out.stderr
    # The training config reads no final model: no extraction, no phase of the English study.
    for phase in ("extract", "vectors", "alignment", "steering", "heads", "cross_model"):
        assert not (work / phase).exists(), phase
    assert "extract:" not in out.stderr


def test_report_section_prints_this_runs_numbers(training):
    work, _, _ = training
    s = json.loads((work / "checkpoints" / SLUG / "summary.json").read_text())
    text = (work / "report.md").read_text()
    assert "## Across training checkpoints" in text
    # The English study's sections would only say that nothing ran.
    for absent in ("The study's conclusions", "How this run differs", "Phases 3 and 3.5"):
        assert absent not in text, absent
    p = s["probe"]["sentence_end"]
    for i, step in enumerate(STEPS):
        cell = (
            f"| {step} | step{step} | {fmt(p['accuracy_focus'][i])} [{fmt(p['null_p95_focus'][i])}]"
        )
        assert cell in text, cell
    for e, o in s["onset"].items():
        onset = "none" if o["onset_step"] is None else fmt(o["onset_step"])
        assert f"| {e} | {onset} [" in text, e
    images = [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("![")]
    assert "checkpoints/pythia-standin/probe_heatmap.png" in images
    assert all((work / rel).is_file() for rel in images)
    page = (work / "report.html").read_text()
    assert 'id="sec-checkpoints"' in page and 'id="sec-vectors"' not in page
    assert page.count('src="data:image/png;base64,') == 3  # probe heatmap, curves, onset


def test_rerun_recomputes_nothing(training):
    work, cache, _ = training
    stamps = _stamps(work)
    assert {str(p.parent) for p in stamps} == {"dataset", "checkpoints/pythia-standin", "report"}
    out = _run(work, cache)
    assert "checkpoints:" not in out.stderr and "training pythia-standin" not in out.stderr
    assert "skipped 3 stage(s)" in out.stderr, out.stderr[-2000:]
    assert _stamps(work) == stamps


def test_a_changed_setting_recomputes_its_stage_and_the_report_only(training, tmp_path):
    import shutil

    work, cache, _ = training
    run = tmp_path / "run"
    shutil.copytree(work, run)
    before = _stamps(run)
    out = _run(run, cache, "--config.checkpoints.n_boot=60")
    after = _stamps(run)
    changed = {str(p.parent) for p in after if after[p] != before[p]}
    assert changed == {"checkpoints/pythia-standin", "report"}, changed
    assert "training pythia-standin" not in out.stderr  # the kept steps come from the cache
    s = json.loads((run / "checkpoints" / SLUG / "summary.json").read_text())
    assert s["config"]["n_boot"] == 60


def test_two_processes_equal_one_process(training, tmp_path):
    """The same study run by two processes on localhost (jax.distributed, one device each, 'data'
    over both) gives the one-process artifacts within tests/e2e/runs.py's tolerance."""
    work, cache, _ = training
    two = tmp_path / "two"
    run_two(_args(two, cache), two)
    names = run_files(work, ("dataset", "checkpoints", "report"))
    assert names == run_files(two, ("dataset", "checkpoints", "report"))
    assert any(p.parts[0] == "checkpoints" and p.suffix == ".npz" for p in names), names
    for rel in names:
        if rel.suffix in COMPARED:
            compare(work, two, work / rel)
