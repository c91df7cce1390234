"""Converted parameters cached on disk with orbax-checkpoint, keyed by what they came from.

The key hashes the checkpoint's fingerprint (folder, config.json text, weight file names, sizes,
nanosecond mtimes and a digest of sampled content) and the converter version, so a different
checkpoint, revision or converter never reuses a stale entry. Orbax writes to a temporary folder
and commits atomically; a cache entry that fails to restore is deleted and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

# Bump when a converter's output layout changes: old cache entries then miss.
CONVERTER_VERSION = 1


def cache_home() -> Path:
    """jaxcirc's cache folder: `$JAXCIRC_CACHE`, else ~/.cache/jaxcirc (params/, xla/ inside)."""
    return Path(os.environ.get("JAXCIRC_CACHE", Path.home() / ".cache" / "jaxcirc"))


def cache_root() -> Path:
    return cache_home() / "params"


def cache_key(fingerprint: dict) -> str:
    blob = json.dumps({"fp": fingerprint, "v": CONVERTER_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def restore(key: str):
    """The cached params for `key`, or None."""
    path = cache_root() / key
    if not path.is_dir():
        return None
    try:
        params = _checkpointer().restore(path.resolve())
    except Exception:  # noqa: BLE001 - a broken entry is rebuilt, never trusted
        shutil.rmtree(path, ignore_errors=True)
        return None
    return params


def save(key: str, params) -> Path | None:
    """Store params under `key`; a cache that cannot be written is skipped, not fatal."""
    path = cache_root() / key
    if path.is_dir():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt = _checkpointer()
        ckpt.save(path.resolve(), _to_numpy(params))
        ckpt.wait_until_finished()
    except Exception:  # noqa: BLE001 - caching is an optimisation
        shutil.rmtree(path, ignore_errors=True)
        return None
    return path


def _to_numpy(tree):
    import jax

    return jax.tree_util.tree_map(np.asarray, tree)
