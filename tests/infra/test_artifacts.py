"""Tests for jaxcirc.infra.artifacts (atomic writes, config hashing, resumable stages).

Also holds the tests of jaxcirc.infra.progress (the brief assigned no test file of its own).
"""

import dataclasses
import io
import os
import stat

import ml_collections
import numpy as np
import pytest

from jaxcirc.infra import artifacts, progress

# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_old_content_when_replace_fails(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    artifacts.write_json(target, {"v": 1})
    before = target.read_bytes()

    def boom(src, dst):
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="simulated crash"):
        artifacts.write_json(target, {"v": 2})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_atomic_write_removes_temp_when_writer_raises_midway(tmp_path):
    target = tmp_path / "a.bin"
    artifacts.atomic_write_bytes(target, b"old")

    with pytest.raises(RuntimeError):
        with artifacts._atomic_file(target) as f:
            f.write(b"half of the new")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_writers_round_trip_and_create_parents(tmp_path):
    d = tmp_path / "x" / "y"
    obj = {"a": np.float32(0.5), "b": np.arange(3), "c": (1, 2), "nan": float("nan")}
    artifacts.write_json(d / "o.json", obj)
    back = artifacts.read_json(d / "o.json")
    assert back["a"] == 0.5 and back["b"] == [0, 1, 2] and back["c"] == [1, 2]
    assert np.isnan(back["nan"])

    arrays = {"acts": np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)}
    artifacts.write_npz(d / "a.npz", **arrays, labels=np.array(["x", "y"]))
    got = artifacts.read_npz(d / "a.npz")
    np.testing.assert_array_equal(got["acts"], arrays["acts"])
    assert got["acts"].dtype == np.float32 and list(got["labels"]) == ["x", "y"]

    artifacts.write_text(d / "r.md", "héllo\n")
    assert (d / "r.md").read_text(encoding="utf-8") == "héllo\n"
    assert stat.S_IMODE((d / "r.md").stat().st_mode) == 0o644


def test_write_csv_column_order_and_missing_cells(tmp_path):
    rows = [{"layer": 0, "cos": 0.25}, {"layer": 1, "cos": np.float64(0.1), "note": "x"}]
    p = artifacts.write_csv(tmp_path / "t.csv", rows)
    assert p.read_text() == "layer,cos,note\n0,0.25,\n1,0.1,x\n"
    with pytest.raises(ValueError, match="not in columns"):
        artifacts.write_csv(tmp_path / "u.csv", rows, columns=["layer", "cos"])


def test_write_npz_refuses_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="dtype object"):
        artifacts.write_npz(tmp_path / "o.npz", bad=np.array([{"a": 1}], dtype=object))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- config_hash


@dataclasses.dataclass
class _Cfg:
    layer: int
    alphas: tuple


def test_config_hash_stable_and_sensitive():
    a = {"model": "gpt2", "layers": [6, 7], "alpha": 2.0}
    b = {"alpha": 2.0, "layers": (6, 7), "model": "gpt2"}  # other key order, tuple vs list
    assert artifacts.config_hash(a) == artifacts.config_hash(b)
    assert len(artifacts.config_hash(a)) == 64
    assert artifacts.config_hash(a) != artifacts.config_hash({**a, "alpha": 2.5})
    assert artifacts.config_hash(a) != artifacts.config_hash({**a, "layers": [7, 6]})
    assert artifacts.config_hash({"x": 1}) != artifacts.config_hash({"x": "1"})
    # ConfigDict hashes as its dict; numpy scalars as Python numbers.
    cd = ml_collections.ConfigDict(a)
    assert artifacts.config_hash(cd) == artifacts.config_hash(a)
    assert artifacts.config_hash({"alpha": np.float64(2.0)}) == artifacts.config_hash(
        {"alpha": 2.0}
    )
    # Dataclasses by field values.
    assert artifacts.config_hash(_Cfg(6, (1, 2))) == artifacts.config_hash(_Cfg(6, (1, 2)))
    assert artifacts.config_hash(_Cfg(6, (1, 2))) != artifacts.config_hash(_Cfg(7, (1, 2)))


def test_config_hash_arrays_by_bytes_shape_dtype():
    x = np.arange(6, dtype=np.float32)
    h = artifacts.config_hash({"w": x})
    assert h == artifacts.config_hash({"w": x.copy()})
    assert h != artifacts.config_hash({"w": x.reshape(2, 3)})
    assert h != artifacts.config_hash({"w": x.astype(np.float64)})
    y = x.copy()
    y[3] += 1e-6
    assert h != artifacts.config_hash({"w": y})
    # Non-contiguous view hashes like its contiguous copy.
    m = np.arange(12.0).reshape(3, 4)
    assert artifacts.config_hash(m.T) == artifacts.config_hash(np.ascontiguousarray(m.T))


def test_config_hash_rejects_unknown_types():
    with pytest.raises(ValueError, match="cannot hash object"):
        artifacts.config_hash({"f": object()})
    with pytest.raises(ValueError, match="not a str"):
        artifacts.config_hash({1: "a"})


# --------------------------------------------------------------------------- RunDir / Stage


def _run_stage(run, key, payload=b"abc"):
    st = run.stage("phase3/gpt2", key)
    artifacts.atomic_write_bytes(st.path("out.bin"), payload)
    artifacts.write_json(st.path("summary.json"), {"n": 3})
    st.finish({"out": "out.bin", "summary": st.path("summary.json")})
    return st


def test_stage_done_only_for_same_key(tmp_path):
    run = artifacts.RunDir(tmp_path / "run")
    key = {"config": {"layer": 6}, "acts": "h1"}
    st = run.stage("phase3/gpt2", key)
    assert not st.done
    _run_stage(run, key)
    assert run.stage("phase3/gpt2", dict(reversed(list(key.items())))).done
    stamp = artifacts.read_json(tmp_path / "run" / "phase3" / "gpt2" / artifacts.STAMP)
    assert set(stamp["outputs"]) == {"out", "summary"}
    assert stamp["outputs"]["out"]["file"] == "out.bin"
    assert stamp["key"] == key

    changed = run.stage("phase3/gpt2", {**key, "acts": "h2"})  # upstream input changed
    assert not changed.done
    # The stale stamp was removed, so even the old key is no longer trusted.
    assert not (tmp_path / "run" / "phase3" / "gpt2" / artifacts.STAMP).exists()
    assert not run.stage("phase3/gpt2", key).done


@pytest.mark.parametrize("damage", ["delete", "corrupt", "truncate_stamp"])
def test_stage_not_done_when_output_damaged(tmp_path, damage):
    run = artifacts.RunDir(tmp_path)
    key = {"k": 1}
    st = _run_stage(run, key)
    assert st.done
    out = st.path("out.bin")
    if damage == "delete":
        out.unlink()
    elif damage == "corrupt":
        out.write_bytes(b"abd")  # same size, different content
    else:
        st.stamp_path.write_text('{"key_hash": ')
    assert not st.done
    with pytest.raises(ValueError, match="not done"):
        st.output_hash()


def test_output_hash_changes_with_content_and_feeds_downstream(tmp_path):
    run = artifacts.RunDir(tmp_path)
    h1 = _run_stage(run, {"k": 1}, b"abc").output_hash()
    assert h1 == run.stage("phase3/gpt2", {"k": 1}).output_hash()
    down = run.stage("phase6", {"vectors": h1})
    artifacts.write_text(down.path("a.txt"), "x")
    down.finish({"a": "a.txt"})
    assert run.stage("phase6", {"vectors": h1}).done
    # Upstream recomputed with different content -> different hash -> downstream must rerun.
    h2 = _run_stage(run, {"k": 1}, b"xyz").output_hash()
    assert h2 != h1
    assert not run.stage("phase6", {"vectors": h2}).done


def test_finish_rejects_missing_or_outside_outputs(tmp_path):
    run = artifacts.RunDir(tmp_path)
    st = run.stage("s", {})
    with pytest.raises(ValueError, match="does not exist"):
        st.finish({"x": "missing.npz"})
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    with pytest.raises(ValueError, match="outside stage"):
        st.finish({"x": outside})
    assert not st.stamp_path.exists()
    with pytest.raises(ValueError, match="invalid"):
        run.stage("../escape", {})


def test_rundir_unwritable_gives_one_line_value_error(tmp_path):
    # A path under a regular file can never be a directory, root or not.
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(ValueError) as e:
        artifacts.RunDir(blocker / "run")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"run directory {blocker / 'run'} is not writable: ")
    assert msg.endswith("; choose another --workdir")

    if os.geteuid() == 0:
        return  # root ignores permission bits; the file case above covered the error path
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ValueError, match=r"not writable: .*choose another --workdir"):
            artifacts.RunDir(locked)
    finally:
        locked.chmod(0o700)


# --------------------------------------------------------------------------- progress


class _FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_counts_rate_and_eta_with_fake_clock(monkeypatch):
    monkeypatch.delenv("JAXCIRC_QUIET", raising=False)
    clock, out = _FakeClock(), io.StringIO()
    seen = []
    for x in progress.progress(range(10), desc="extract gpt2", stream=out, clock=clock):
        seen.append(x)
        clock.t += 0.4  # 2.5 items/s: a line after items 3, 6 and 9 (every >= 1 s), then a summary
    assert seen == list(range(10))
    lines = out.getvalue().splitlines()
    assert lines == [
        "extract gpt2: 3/10 (2.5/s, eta 3s)",
        "extract gpt2: 6/10 (2.5/s, eta 2s)",
        "extract gpt2: 9/10 (2.5/s, eta 0s)",
        "extract gpt2: 10/10 (2.5/s, 4s total)",
    ]


def test_progress_fast_loop_silent_unknown_total_and_quiet(monkeypatch):
    monkeypatch.delenv("JAXCIRC_QUIET", raising=False)
    clock, out = _FakeClock(), io.StringIO()
    assert list(progress.progress(range(5), stream=out, clock=clock)) == list(range(5))
    assert out.getvalue() == ""  # took no time: nothing printed

    def gen():
        for i in range(4):
            clock.t += 2.0
            yield i

    list(progress.progress(gen(), desc="gen", stream=out, clock=clock))
    lines = out.getvalue().splitlines()  # no len(): count without total, no eta; slow: s/it
    assert lines[0] == "gen: 1 (2.0s/it, eta ?)"
    assert lines[-1] == "gen: 4 (2.0s/it, 8s total)" and len(lines) == 5

    monkeypatch.setenv("JAXCIRC_QUIET", "1")
    quiet = io.StringIO()
    clock.t = 0.0

    def slow():
        for i in range(3):
            clock.t += 5.0
            yield i

    assert list(progress.progress(slow(), total=3, stream=quiet, clock=clock)) == [0, 1, 2]
    assert quiet.getvalue() == ""


def test_progress_lines_carry_their_threads_label(monkeypatch):
    """Two models' loops in two threads: each line names its own model, none the other's."""
    import threading

    monkeypatch.delenv("JAXCIRC_QUIET", raising=False)
    out = io.StringIO()

    def run(label):
        clock = _FakeClock()
        with progress.labelled(label):
            for _ in progress.progress(range(3), desc="steering", stream=out, clock=clock):
                clock.t += 1.0

    threads = [threading.Thread(target=run, args=(m,)) for m in ("gpt2-standin", "pythia")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = out.getvalue().splitlines()
    assert sorted(lines) == sorted(
        [
            f"{m} steering: {i}/3 (1.0/s, eta {3 - i}s)"
            for m in ("gpt2-standin", "pythia")
            for i in (1, 2, 3)
        ]
        + [f"{m} steering: 3/3 (1.0/s, 3s total)" for m in ("gpt2-standin", "pythia")]
    )
    assert progress.current_label() == ""  # the label ends with its block
    with progress.labelled("a"), progress.labelled("b"):
        assert progress.current_label() == "a b"


def test_format_line_durations():
    assert progress.format_line("p", 30, 7230, 1.0) == "p: 30/7230 (30.0/s, eta 4m00s)"
    assert progress.format_line("p", 1, 7201, 1.0) == "p: 1/7201 (1.0/s, eta 2h00m)"
    assert progress.format_line("", 0, None, 0.0) == "0 (?/s, eta ?)"


def test_json_names_files_relative_to_itself(tmp_path):
    inside = tmp_path / "stage" / "effects.csv"
    outside = "/usr/share/dict/words"
    artifacts.write_json(
        tmp_path / "stage" / "summary.json",
        {"files": {"effects": str(inside), "deep": inside.parent / "a" / "b.png"}, "x": [outside]},
    )
    got = artifacts.read_json(tmp_path / "stage" / "summary.json")
    assert got["files"] == {"effects": "effects.csv", "deep": "a/b.png"}
    assert got["x"] == [outside]  # not inside the file's folder: kept as it is
