"""End to end: the demo config (smoke size) runs every phase and writes every artifact and the
report; a rerun recomputes nothing; a crash mid-phase resumes cleanly; bad inputs exit 2 with
one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import smoke_run

ROOT = Path(__file__).resolve().parents[2]
SLUGS = ("gpt2-standin", "pythia-standin", "gpt-neo-standin")


def _run(args, env_extra=None, timeout=1500):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_study.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, worker_id):
    return smoke_run(tmp_path_factory, worker_id, tmp_path_factory.mktemp("study"))


def test_every_phase_writes_its_artifacts(smoke):
    work, _, _ = smoke
    for f in ("dataset/prompts.jsonl", "dataset/realworld.jsonl", "dataset/stats.json"):
        assert (work / f).is_file(), f
    for slug in SLUGS:
        assert (work / "extract" / slug / "activations.npz").is_file()
        v = work / "vectors" / slug
        for f in ("cosines.csv", "probe.csv", "emotion_vectors.npz", "probe.png", "summary.json"):
            assert (v / f).is_file(), (slug, f)
        s = work / "steering" / slug
        for part in ("neutral", "realworld"):
            assert (s / part / "summary.json").is_file(), (slug, part)
            assert list((s / part).rglob("*.png")), (slug, part)
        assert list((s / "patching").rglob("*.csv"))
        # The label-shuffled control vectors reach the verdicts, and their hash the stage key.
        neutral = json.loads((s / "neutral" / "summary.json").read_text())
        assert neutral["controls"]["label_shuffled"]["n_next_token"] == 4
        assert neutral["controls"]["label_shuffled"]["n_text"] == 1
        v = neutral["verdicts"]["gratitude"]["kw_gratitude"]["controls"]
        assert set(v) == {"random", "label_shuffled"}
        key = json.loads((s / ".stamp.json").read_text())["key"]
        assert len(key["controls"]) == 64  # sha256 of the vectors
        h = work / "heads" / slug
        assert (h / "top_k.json").is_file() and (h / "rank_correlation.csv").is_file()
        assert list(h.glob("*.png"))
        # Projection scores name the vectors they project on (the config's method and centre).
        scores = (h / "scores_exact.csv").read_text()
        assert "sentence_end emotion vectors, centre=neutral" in scores
        assert "unspecified" not in scores
    assert (work / "alignment" / "alignment.csv").is_file()
    assert list((work / "alignment").glob("overlap__*.png"))
    cm = json.loads((work / "cross_model" / "summary.json").read_text())
    assert len(cm["pairs"]) == 6  # every ordered pair of three models
    # B's own-vector run does not depend on A: once per model, not once per pair.
    assert len(list((work / "cross_model").glob("own__*/summary.json"))) == 3
    assert len(list((work / "cross_model").glob("*__to__*/mapped/summary.json"))) == 6
    # Nothing names the run directory's own location: it can be moved or sent on.
    for f in work.rglob("*.json"):
        if f.name != ".stamp.json":
            assert str(work) not in f.read_text(), f


def test_report_has_every_section_and_its_images(smoke):
    work, _, _ = smoke
    text = (work / "report.md").read_text()
    for heading in (
        "Phase 1: dataset",
        "Phases 3 and 3.5",
        "Phase 6",
        "Phases 4-5",
        "Phase 7",
        "Cross-model patching",
    ):
        assert heading in text, heading
    assert "STAND-INS" in text  # never mistaken for the study's checkpoints
    # Every steering table says which verdicts clear their control, and that the demo held
    # EOS back (its stand-ins would otherwise end most continuations at once).
    assert text.count("Beyond the control at p <=") == 6  # 3 models x 2 prompt sets
    assert text.count("EOS was held back for the first 8 new tokens") == 6
    assert "null" in text and "CI" in text
    images = [
        line.split("](")[1].rstrip(")") for line in text.splitlines() if line.startswith("![")
    ]
    assert len(images) > 10
    for rel in images:
        assert (work / rel).is_file(), rel


def test_demo_models_learned_and_emotions_separate(smoke):
    work, _, _ = smoke
    for label, info in json.loads((work / "models.json").read_text()).items():
        note = info["notes"]
        held = float(note.split("held-out ")[1].split(" ")[0])
        uniform = float(note.split("uniform ")[1].split(",")[0])
        assert held < uniform - 1.0, (label, note)
    for slug in SLUGS:
        probe = json.loads((work / "vectors" / slug / "summary.json").read_text())["probe"]
        for feat, p in probe.items():
            assert p["accuracy"] > p["null_p95"], (slug, feat, p)


def test_rerun_recomputes_nothing(smoke):
    work, _, args = smoke
    stamps = {p: p.stat().st_mtime_ns for p in work.rglob(".stamp.json")}
    assert len(stamps) >= 15
    t = time.time()
    out = _run(args, {"JAXCIRC_QUIET": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "extract:" not in out.stderr and "steering:" not in out.stderr
    assert {p: p.stat().st_mtime_ns for p in work.rglob(".stamp.json")} == stamps
    assert time.time() - t < 120


def test_crash_mid_phase_resumes_without_recomputing(smoke, tmp_path, monkeypatch):
    import shutil

    from configs import demo
    from jaxcirc import study
    from jaxcirc.phases import alignment as phase_alignment
    from jaxcirc.phases import extract

    work, cache, _ = smoke
    run = tmp_path / "run"
    shutil.copytree(work, run)
    shutil.rmtree(run / "alignment")
    cfg = demo.get_config("smoke")
    cfg.models.cache_dir = str(cache)

    def crash(acts, cfg_, out_dir, **_):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Path(out_dir, "alignment.csv").write_text("half a fi")
        raise RuntimeError("killed mid-phase")

    monkeypatch.setattr(phase_alignment, "run_alignment", crash)
    with pytest.raises(RuntimeError, match="killed"):
        study.run_study(cfg, str(run), phases=["alignment"])
    assert not (run / "alignment" / ".stamp.json").exists()
    monkeypatch.undo()

    def no_extract(*a, **k):
        raise AssertionError("a finished phase was recomputed")

    monkeypatch.setattr(extract, "extract_residuals", no_extract)
    study.run_study(cfg, str(run), phases=["alignment"])
    rows = (run / "alignment" / "alignment.csv").read_text().splitlines()
    assert rows[0].startswith("pair") or "," in rows[0]
    assert len(rows) > 3 and "half a fi" not in rows[0]
    assert (run / "alignment" / ".stamp.json").is_file()


def test_tasks_in_threads_match_one_after_another(smoke, tmp_path):
    """The smoke run steers in worker threads (the demo config); redoing one model's steering
    alone, in the main thread, gives the same generations and measures."""
    import shutil

    import numpy as np

    from configs import demo
    from jaxcirc import study
    from jaxcirc.infra import artifacts

    work, cache, _ = smoke
    cfg = demo.get_config("smoke")
    assert cfg.workers == 2
    cfg.models.cache_dir = str(cache)
    cfg.workers = 1
    run = tmp_path / "run"
    shutil.copytree(work, run)
    slug = SLUGS[0]
    shutil.rmtree(run / "steering" / slug)
    study.run_study(cfg, str(run), phases=["steering"])
    for part in ("neutral", "realworld"):
        threaded = artifacts.read_npz(work / "steering" / slug / part / "sweep.npz")
        alone = artifacts.read_npz(run / "steering" / slug / part / "sweep.npz")
        assert threaded.keys() == alone.keys()
        for k in threaded:
            np.testing.assert_array_equal(alone[k], threaded[k], err_msg=f"{part}/{k}")


def test_run_tasks_keeps_keys_and_raises_the_first_error():
    from jaxcirc import study

    class _St:
        models = {}

    out = study._run_tasks({("a", ""): lambda: 1, ("b", "x"): lambda: 2}, 2, _St())
    assert out == {("a", ""): 1, ("b", "x"): 2}
    started = []

    def boom():
        raise ValueError("task failed")

    def later():
        started.append(1)
        return 3

    tasks = {"boom": boom, **{f"t{i}": later for i in range(50)}}
    with pytest.raises(ValueError, match="task failed"):
        study._run_tasks(tasks, 1, _St())
    assert not started  # one worker: nothing after the failed task runs
    with pytest.raises(ValueError, match="task failed"):
        study._run_tasks(tasks, 2, _St())


# ---------------------------------------------------------------------------------------------
# Bad inputs: one line on stderr, exit status 2, nothing half-written.


def _one_line_exit_2(out, *needles):
    assert out.returncode == 2, (out.returncode, out.stderr[-2000:])
    lines = [x for x in out.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1, out.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]


def _paper_variant(tmp_path, body: str) -> Path:
    f = tmp_path / "cfg.py"
    f.write_text(
        "from configs import paper\n\n\ndef get_config():\n    c = paper.get_config()\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
        + "    return c\n"
    )
    return f


def test_missing_weights(tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path)}
    out = _run(["--config=configs/paper.py", f"--workdir={tmp_path / 'w'}"], env)
    _one_line_exit_2(out, "gpt2", "local folder")


def test_unknown_model(tmp_path):
    cfg = _paper_variant(
        tmp_path,
        'c.models.sources = c.models.sources[:1]\nc.models.sources[0].source = "no-such-org/no-such-model"',
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HOME": str(tmp_path)}
    out = _run([f"--config={cfg}", f"--workdir={tmp_path / 'w'}"], env)
    _one_line_exit_2(out, "no-such-org/no-such-model")


def test_broken_dataset_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "set": "baseline", "emotion": "anger", "text": "x", "spans": []}\n{oops\n'
    )
    out = _run(
        [
            "--config=configs/demo.py:smoke",
            f"--workdir={tmp_path / 'w'}",
            f"--config.dataset.path={bad}",
        ]
    )
    _one_line_exit_2(out, "bad.jsonl:")


def test_unwritable_run_directory(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    out = _run(["--config=configs/demo.py:smoke", f"--workdir={blocker / 'run'}"])
    _one_line_exit_2(out, "not writable")


def test_layer_beyond_the_model(smoke, tmp_path):
    _, cache, _ = smoke
    out = _run(
        [
            "--config=configs/demo.py:smoke",
            f"--workdir={tmp_path / 'w'}",
            f"--config.models.cache_dir={cache}",
            "--config.steering.layers=(1,9)",
        ]
    )
    _one_line_exit_2(out, "layer(s) [9]", "0..1")


def test_unknown_phase(tmp_path):
    out = _run(
        ["--config=configs/demo.py:smoke", f"--workdir={tmp_path / 'w'}", "--phases=vectorz"]
    )
    _one_line_exit_2(out, "vectorz")


# ---------------------------------------------------------------------------------------------
# Reliability: a changed setting reruns exactly what reads it; Ctrl-C; the run lock; bad configs.


def _stamp_times(work: Path) -> dict[str, int]:
    return {
        str(p.parent.relative_to(work)): p.stat().st_mtime_ns for p in work.rglob(".stamp.json")
    }


@pytest.mark.parametrize(
    "override, reran",
    [
        ("--config.name=renamed", {"report"}),
        (
            "--config.steering.vector_method=sentence_end",
            {"steering/" + s for s in SLUGS} | {"cross_model", "report"},
        ),
        ("--config.heads.n_boot=150", {"heads/" + s for s in SLUGS} | {"report"}),
        ("--config.alignment.n_perm=4", {"alignment", "cross_model", "report"}),
    ],
)
def test_a_changed_setting_reruns_exactly_the_phases_that_read_it(smoke, tmp_path, override, reran):
    import shutil

    work, _, args = smoke
    run = tmp_path / "run"
    shutil.copytree(work, run)
    before = _stamp_times(run)
    out = _run([*[a for a in args if not a.startswith("--workdir")], f"--workdir={run}", override])
    assert out.returncode == 0, out.stderr[-3000:]
    after = _stamp_times(run)
    assert {k for k in after if after[k] != before.get(k)} == reran


def _changed(v):
    """Another value of the same type."""
    if isinstance(v, bool):
        return not v
    if isinstance(v, int | float):
        return v + 1
    if isinstance(v, str):
        return v + "_x"
    if isinstance(v, tuple | list):
        return type(v)(list(v)[:-1]) if len(v) > 1 else type(v)(list(v) * 2 or [1])
    if isinstance(v, dict):
        return {**v, "_x": 1}
    return v


def test_every_setting_is_in_some_phase_key():
    """Each leaf of the config is part of the section of a phase (and so of its stage key), or
    identifies the models (in every model-reading stage's key) or only schedules work."""
    from configs import demo
    from jaxcirc import study

    cfg = demo.get_config("smoke")
    keys = {
        p: json.dumps(study.phase_sections(cfg, p, 2).to_dict(), sort_keys=True) for p in cfg.phases
    }

    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    scheduling = {"workers", "phases"}
    for leaf in leaves(cfg.to_dict()):
        # mesh: where the arrays live changes no figure beyond float reduction order, so a
        # run resumes under another mesh (tests/infra/test_mesh_config.py)
        if leaf.startswith(("models.", "mesh.")) or leaf in scheduling:
            continue
        changed = demo.get_config("smoke")
        node = changed
        *path, last = leaf.split(".")
        for part in path:
            node = node[part]
        value = node[last]
        node[last] = _changed(value)
        moved = {
            p
            for p in cfg.phases
            if json.dumps(study.phase_sections(changed, p, 2).to_dict(), sort_keys=True) != keys[p]
        }
        assert moved, f"config.{leaf} is in no phase's key: a change to it would reuse results"


def test_ctrl_c_stops_within_seconds_and_a_rerun_resumes(smoke, tmp_path):
    """Two worker threads mid-phase (one model's steering and heads, removed from the copied
    run); two Ctrl-Cs: exit 130 within seconds, one message line, no traceback, every stamped
    stage intact; the same command then finishes (those two stages and the report)."""
    import shutil
    import signal

    from jaxcirc.infra import artifacts

    work, _, args = smoke
    run = tmp_path / "run"
    shutil.copytree(work, run)
    shutil.rmtree(run / "steering" / SLUGS[0])
    shutil.rmtree(run / "heads" / SLUGS[0])
    cmd = [*[a for a in args if not a.startswith("--workdir")], f"--workdir={run}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAXCIRC_QUIET": "0"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "run_study.py"), *cmd],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            cwd=ROOT,
            # As from a terminal: pytest's workers ignore SIGINT, and a child would inherit that.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.time() + 300
        while "steering: " not in log.read_text() and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # inside the phase's compiled work
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)  # a second Ctrl-C must not abort the interpreter
        rc = proc.wait(timeout=120)
    took = time.time() - t0
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert took < 15, took
    assert "Traceback" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert "interrupted" in last and "resumes" in last, last
    for stamp in run.rglob(".stamp.json"):
        stage = artifacts.read_json(stamp)
        for rec in stage["outputs"].values():
            f = stamp.parent / rec["file"]
            assert artifacts.file_sha256(f) == rec["sha256"], f
    for f in run.rglob("*.json"):
        json.loads(f.read_text())
    out = _run(cmd, {"JAXCIRC_QUIET": "0"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed: skipped" in out.stderr
    assert (run / "steering" / SLUGS[0] / ".stamp.json").is_file()


def test_a_second_run_on_the_same_directory_is_refused(tmp_path):
    from configs import demo
    from jaxcirc import study
    from jaxcirc.infra import runlock

    run = tmp_path / "run"
    run.mkdir()
    with runlock.hold(run):
        with pytest.raises(ValueError, match="in use by process"):
            study.run_study(demo.get_config("smoke"), str(run), phases=["dataset"])
    study.run_study(demo.get_config("smoke"), str(run), phases=["dataset"])  # released
    assert (run / "dataset" / "prompts.jsonl").is_file()


@pytest.mark.parametrize(
    "setting, value, needle",
    [
        ("steering.alphas", (), "steering.alphas"),
        ("steering.alphas", (0.0,), "nonzero"),
        ("cross_model.relative_depth", 2.0, "cross_model.relative_depth"),
        ("vectors.probe_folds", 1, "vectors.probe_folds"),
        ("steering.patch_sites", ("resid_pre", "attn"), "steering.patch_sites"),
        ("heads.level", 1.5, "heads.level"),
        ("steering.min_new_tokens", -1, "steering.min_new_tokens"),
        ("alignment.test_fraction", 0.0, "alignment.test_fraction"),
        ("heads_neurons.layers", (3, 1), "heads_neurons.layers"),
        ("workers", 0, "workers"),
    ],
)
def test_config_errors_name_the_setting(setting, value, needle):
    from configs import demo
    from jaxcirc import config_check

    cfg = demo.get_config()
    *path, last = setting.split(".")
    node = cfg
    for part in path:
        node = node[part]
    node[last] = value
    with pytest.raises(ValueError, match=needle.replace(".", r"\.")) as e:
        config_check.check(cfg)
    assert "\n" not in str(e.value)


def test_small_dataset_and_layers_fail_before_any_work(tmp_path):
    from jaxcirc.data import dataset

    recs = [r for r in dataset.build("baseline")]
    few = []
    for emo in ("gratitude", "anger", "apology", "neutral"):
        few += [r for r in recs if r.emotion == emo][:3]
    path = tmp_path / "few.jsonl"
    dataset.write_jsonl(few, path)
    work = tmp_path / "w"
    out = _run(
        ["--config=configs/demo.py:smoke", f"--workdir={work}", f"--config.dataset.path={path}"]
    )
    _one_line_exit_2(out, "probe_folds")
    out = _run(
        [
            "--config=configs/demo.py:smoke",
            f"--workdir={tmp_path / 'w2'}",
            "--config.steering.patch_layers=(5,)",
        ]
    )
    _one_line_exit_2(out, "steering.patch_layers", "0..1")
    assert not (tmp_path / "w2" / "dataset").exists()  # refused before any phase ran


@pytest.mark.parametrize(
    "arg, needle",
    [
        ("--config.steering.alphs=(1.0,)", "did you mean 'alphas'"),
        ("--config=configs/demo.py:nope", "takes one of '', 'smoke', 'training', 'japanese'"),
        ("--no_such_flag=1", "no_such_flag"),
    ],
)
def test_flag_and_override_errors_are_one_line(tmp_path, arg, needle):
    args = ["--config=configs/demo.py:smoke", f"--workdir={tmp_path / 'w'}", arg]
    if arg.startswith("--config="):
        args = [arg, f"--workdir={tmp_path / 'w'}"]
    _one_line_exit_2(_run(args), needle)


def test_a_config_file_setting_no_section_has_is_named(tmp_path):
    """A retired or misspelt key set inside a config file (not an override) is refused where
    it is written, instead of being silently ignored."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from configs import demo\n\n"
        "def get_config(arg=''):\n"
        "    c = demo.get_config('smoke')\n"
        "    c.heads_circuits.n_random_sets = 3\n"
        "    return c\n"
    )
    out = _run([f"--config={bad}", f"--workdir={tmp_path / 'w'}"])
    _one_line_exit_2(out, "'n_random_sets'", "no such setting")
    assert not (tmp_path / "w").exists()
