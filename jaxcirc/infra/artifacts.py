"""Run directory: atomic artifact writes, and stages that know whether they are up to date.

Every file goes through `_atomic_file`: written to a temp file in the destination's directory,
flushed and fsynced, then `os.replace`d over the destination. A crash or an exception mid-write
leaves either the old file or the new one, never a partial one, and no temp file.

A *stage* is one phase's output directory inside the run directory. It is done only if its stamp
`<stage>/.stamp.json` exists, was written under the same key (the phase's config plus the hashes of
its inputs, hashed with `config_hash`), and every output the stamp lists still has the sha256 the
stamp recorded. The stamp is written last, so an interrupted phase has no stamp and reruns; a
changed config or changed upstream output gives a different key and the phase reruns:

    run = RunDir(workdir)
    vec = run.stage("vectors/gpt2", {"config": cfg.vectors, "acts": acts_stage.output_hash()})
    if not vec.done:
        write_npz(vec.path("vectors.npz"), **compute_vectors(...))
        vec.finish({"vectors": "vectors.npz"})
    vectors = read_npz(vec.path("vectors.npz"))
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import io
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

STAMP = ".stamp.json"
_FILE_MODE = 0o644  # mkstemp creates 0o600; artifacts are meant to be read by others
_STAGE_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")


# --------------------------------------------------------------------------- hashing


def _canonical(obj: Any) -> Any:
    """A JSON-able tree that equals for equal configs (tuple == list; ConfigDict == dict)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, np.generic):
        if obj.dtype.kind in "OV":
            raise ValueError(f"config_hash: cannot hash numpy {obj.dtype} scalar; use numbers")
        return obj.item()
    if isinstance(obj, (bytes, bytearray)):
        return {"__bytes__": hashlib.sha256(bytes(obj)).hexdigest()}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ValueError(f"config_hash: dict key {k!r} is not a str; use string keys")
            out[k] = _canonical(v)
        return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: _canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        return {"__dataclass__": type(obj).__qualname__, "fields": fields}
    if callable(getattr(obj, "to_dict", None)):  # ml_collections ConfigDict / FrozenConfigDict
        return _canonical(obj.to_dict())
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [_canonical(v) for v in obj]
        return {"__set__": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):  # also jax arrays
        a = np.asarray(obj)
        if a.dtype.kind in "OV":
            raise ValueError(f"config_hash: cannot hash a {a.dtype} array; use a numeric array")
        digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
        return {"__ndarray__": digest, "shape": list(a.shape), "dtype": a.dtype.str}
    raise ValueError(
        f"config_hash: cannot hash {type(obj).__name__}; convert it to a dict, list, str or number"
    )


def slug(label: str) -> str:
    """A model label as a folder or file name: its first word, with every character that is not
    a letter, a digit or one of "-_." replaced by "_" ("gpt2-standin (4L ...)" -> "gpt2-standin")."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label.split(" ")[0])


def config_hash(obj: Any) -> str:
    """sha256 hex digest of the canonical JSON of `obj`: stable across dict order and processes.

    Handles None, bool, int, float, str, bytes, Path, dicts with str keys, lists/tuples (equal to
    each other), sets, numpy scalars (as Python numbers), numpy/jax arrays (bytes + shape + dtype),
    dataclasses (class name + fields) and ml_collections ConfigDicts (as their `to_dict()`).
    """
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- atomic writes


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, and not worth failing for.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """Yields a binary file; on clean exit it replaces `path`, on exception it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file + fsync + os.replace); returns the path."""
    with _atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, s: str) -> Path:
    """Write a UTF-8 string atomically."""
    return atomic_write_bytes(path, s.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        return np.asarray(obj).tolist()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if callable(getattr(obj, "to_dict", None)):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"write_json: cannot serialise {type(obj).__name__}")


def _relative_paths(obj: Any, base: Path) -> Any:
    """`obj` with every absolute path (str or Path) inside `base` made relative to `base`, so
    a run directory can be moved or sent on without its files naming where it once was."""
    if isinstance(obj, dict):
        return {k: _relative_paths(v, base) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_relative_paths(v, base) for v in obj]
    if isinstance(obj, str | Path) and os.path.isabs(obj):
        p = Path(obj)
        if p.is_relative_to(base):
            return p.relative_to(base).as_posix()
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON atomically. numpy/jax values, dataclasses, ConfigDicts and
    Paths are converted; NaN and infinities are written as Python's json writes them (NaN,
    Infinity), which `read_json` reads back. An absolute path inside the file's own folder is
    written relative to that folder (a moved run directory stays consistent)."""
    obj = _relative_paths(obj, Path(path).parent.resolve())
    try:
        text = json.dumps(obj, indent=2, default=_json_default, allow_nan=True)
    except TypeError as e:
        raise ValueError(f"{e}; convert it to dict/list/str/number before writing {path}") from e
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _csv_cell(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return repr(v)  # shortest round-trip form, not csv's str() of the day
    return "" if v is None else v


def write_csv(
    path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write rows of dicts as CSV atomically.

    Columns: `columns` if given, else every key in order of first appearance over the rows (stable
    for a given input). A key missing from a row is an empty cell. No rows and no columns writes
    an empty file.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    if columns:
        writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for i, row in enumerate(rows):
            extra = set(row) - set(columns)
            if extra:
                raise ValueError(f"write_csv: row {i} has keys {sorted(extra)} not in columns")
            writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return write_text(path, buf.getvalue())


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write arrays to an uncompressed .npz atomically (uncompressed: activations are large and
    compress poorly, and loading stays fast). No pickled objects."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, a in arrays.items():
        if a.dtype.kind == "O":
            raise ValueError(f"write_npz: array {k!r} has dtype object; store numbers or strings")
    with _atomic_file(path) as f:
        np.savez(f, **arrays)
    return Path(path)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every array of an .npz into memory (the file is closed on return)."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_figure(path: str | os.PathLike, fig: Any, dpi: int = 120) -> Path:
    """Save a matplotlib Figure atomically; the format follows the suffix (PNG if none)."""
    from jaxcirc.report.plots import LOCK  # drawing is matplotlib too: one figure at a time

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    # No bbox_inches="tight": it draws the figure a second time to measure it (about half of a
    # study's plotting time). jaxcirc.report.plots lays every figure out itself.
    with LOCK, _atomic_file(path) as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return Path(path)


# --------------------------------------------------------------------------- run directory


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


class Stage:
    """One phase's directory in a run, with its key hash and completion stamp.

    Attributes: `name`, `dir` (Path), `key_hash` (config_hash of the key).
    """

    def __init__(self, run_root: Path, name: str, key: Any):
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") or not _STAGE_PART.match(p) for p in parts):
            raise ValueError(
                f"stage name {name!r} is invalid; use '/'-separated parts of letters, digits, _.-"
            )
        self.name = name
        self.dir = run_root.joinpath(*parts)
        self.key = key
        self.key_hash = config_hash(key)

    @property
    def stamp_path(self) -> Path:
        return self.dir / STAMP

    def _read_stamp(self) -> dict | None:
        try:
            stamp = read_json(self.stamp_path)
        except (OSError, ValueError):
            return None
        return stamp if isinstance(stamp, dict) else None

    def _stamp_ok(self, stamp: dict | None) -> bool:
        if stamp is None or stamp.get("key_hash") != self.key_hash:
            return False
        outputs = stamp.get("outputs")
        if not isinstance(outputs, dict):
            return False
        for rec in outputs.values():
            try:
                p = self.dir / rec["file"]
                if p.stat().st_size != rec["bytes"] or file_sha256(p) != rec["sha256"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
        return True

    @property
    def done(self) -> bool:
        """True iff the stamp exists, has this key's hash, and every output it lists is intact."""
        return self._stamp_ok(self._read_stamp())

    def path(self, filename: str) -> Path:
        """Path of a file inside this stage's directory (the directory is created)."""
        p = self.dir / filename
        if not p.resolve().is_relative_to(self.dir.resolve()):
            raise ValueError(f"{filename!r} leaves stage {self.name}; use a relative path inside")
        self.dir.mkdir(parents=True, exist_ok=True)
        return p

    def invalidate(self) -> None:
        """Remove the stamp: the stage is not done until `finish` runs again."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.stamp_path)

    def finish(self, outputs: Mapping[str, str | os.PathLike], meta: Any = None) -> str:
        """Record the stage as done: writes the stamp last and atomically; returns output_hash().

        `outputs` maps a name to a file in this stage's directory (relative, or a `path()` result);
        each is recorded with its size and sha256. `meta` is optional JSON-able information kept in
        the stamp for readers (counts, timings); it does not enter any hash.
        """
        records = {}
        for out_name, f in outputs.items():
            p = Path(f) if Path(f).is_absolute() else self.dir / f
            try:
                rel = p.resolve().relative_to(self.dir.resolve())
            except ValueError:
                raise ValueError(
                    f"output {out_name!r} ({f}) is outside stage {self.name}; write it via path()"
                ) from None
            if not p.is_file():
                raise ValueError(
                    f"output {out_name!r} ({p}) does not exist; write it before finish"
                )
            records[out_name] = {
                "file": rel.as_posix(),
                "bytes": p.stat().st_size,
                "sha256": file_sha256(p),
            }
        key_json = json.loads(json.dumps(self.key, default=_json_default_lenient, allow_nan=True))
        stamp = {
            "stage": self.name,
            "key_hash": self.key_hash,
            "key": key_json,
            "finished_at": _now_iso(),
            "finished_unix": time.time(),
            "outputs": records,
            "meta": meta,
        }
        write_json(self.stamp_path, stamp)
        return self.output_hash()

    def output_hash(self) -> str:
        """Hash of this stage's key and its outputs' sha256s, for the keys of downstream stages.

        Raises ValueError if the stage is not done (nothing trustworthy to hash).
        """
        stamp = self._read_stamp()
        if not self._stamp_ok(stamp):
            raise ValueError(f"stage {self.name} is not done; run it (and finish()) before use")
        digests = {k: v["sha256"] for k, v in stamp["outputs"].items()}
        return config_hash({"stage": self.name, "key_hash": self.key_hash, "outputs": digests})

    def outputs(self) -> dict[str, Path]:
        """The stamp's outputs as name -> path (empty if there is no readable stamp)."""
        stamp = self._read_stamp() or {}
        return {k: self.dir / v["file"] for k, v in (stamp.get("outputs") or {}).items()}

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, key_hash={self.key_hash[:12]}, done={self.done})"


def _json_default_lenient(obj: Any) -> Any:
    # The key is stored in the stamp for people to read; anything odd becomes its repr.
    try:
        return _json_default(obj)
    except TypeError:
        return repr(obj)


class RunDir:
    """A run directory: `RunDir(path)` creates it (or raises a one-line ValueError)."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # os.access is not trusted (root, ACLs, read-only mounts): try an actual write.
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            reason = (e.strerror or str(e)).replace("\n", " ")
            raise ValueError(
                f"run directory {path} is not writable: {reason}; choose another --workdir"
            ) from None

    def path(self, filename: str) -> Path:
        """Path of a file directly under the run directory (config.json, report.md, ...)."""
        return self.root / filename

    def stage(self, name: str, key: Any) -> Stage:
        """The stage `name` under `key` (the phase's config plus its input hashes).

        If a stamp is there but the stage is not done for this key (key changed, outputs missing or
        altered), the stamp is removed now: the caller is about to redo the stage, and a stale stamp
        must not survive a half-finished redo.
        """
        st = Stage(self.root, name, key)
        if st.stamp_path.exists() and not st.done:
            st.invalidate()
        return st

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"
