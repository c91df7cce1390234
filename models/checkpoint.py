"""Finding and reading Hugging Face checkpoints, with no torch at run time.

A source is a local folder (config.json + model.safetensors, sharded or not, or an old
pytorch_model.bin) or a hub name. Hub names resolve through huggingface_hub as users expect:
downloaded when the hub is reachable, read from the HF cache when it is not (or when
HF_HUB_OFFLINE=1). `.bin` files are read only with `torch.load(weights_only=True)`: never
unpickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

WEIGHT_PATTERNS = ["config.json", "*.safetensors", "*.safetensors.index.json"]
TOKENIZER_PATTERNS = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",  # sentencepiece (rinna's Japanese checkpoints)
]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]

# Canonical hub ids the study's short names redirect to; the cache may hold either spelling.
ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
}


class CheckpointError(ValueError):
    """A checkpoint file is there but cannot be read: truncated, not the format its name says,
    or config.json not a JSON object. The message names the file and the fix."""


class CheckpointNotFound(CheckpointError):
    """No weights where the user pointed, nor in the cache, nor on a reachable hub."""


def _candidates(name: str) -> list[str]:
    out = [name]
    if name in ALIASES:
        out.append(ALIASES[name])
    for short, full in ALIASES.items():
        if name == full:
            out.append(short)
    return out


def resolve(source: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local folder holding config.json for `source` (a folder or a hub name)."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointNotFound(
                f"folder {path} has no config.json; point at a folder saved with "
                "save_pretrained (config.json + model.safetensors)"
            )
        return path
    if path.suffix in (".json", ".safetensors", ".bin") or str(source).startswith((".", "/", "~")):
        raise CheckpointNotFound(
            f"{source} is not a folder; pass the folder that holds config.json + model.safetensors"
        )
    from huggingface_hub import constants, snapshot_download

    cache = cache_dir or constants.HF_HUB_CACHE
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "")
    tried = []
    for name in _candidates(str(source)):
        for local_only in [True] if offline else [False, True]:
            try:
                folder = snapshot_download(
                    name,
                    revision=revision,
                    cache_dir=cache_dir,
                    allow_patterns=WEIGHT_PATTERNS + TOKENIZER_PATTERNS + BIN_PATTERNS,
                    local_files_only=local_only,
                )
            except Exception as e:  # noqa: BLE001 - every hub failure means "look elsewhere"
                tried.append(f"{name} ({'cache' if local_only else 'hub'}: {type(e).__name__})")
                continue
            folder = Path(folder)
            if (folder / "config.json").is_file():
                return folder
            tried.append(f"{name} (cache: no config.json)")
    rev = f" at revision {revision}" if revision else ""
    raise CheckpointNotFound(
        f"no checkpoint for {source!r}{rev}: not a local folder, not in the HF cache {cache}, "
        f"hub {'offline' if offline else 'unreachable'} (tried {'; '.join(tried)}); download it "
        f"where the hub is reachable ({download_command(str(source), revision, cache_dir)}) or "
        "pass a local folder with config.json + model.safetensors"
    )


def download_command(name: str, revision: str | None = None, cache_dir: str | None = None) -> str:
    """The shell command that fetches `name` into the HF cache (huggingface_hub's `hf` CLI; the
    older `huggingface-cli` is no longer shipped)."""
    cmd = f"hf download {name}"
    if revision:
        cmd += f" --revision {revision}"
    if cache_dir:
        cmd += f" --cache-dir {cache_dir}"
    return cmd


def read_json(path: Path, what: str):
    """A JSON file's content; one-line `CheckpointError` naming `path` when it is not JSON."""
    try:
        return json.loads(path.read_text())
    except OSError as e:
        raise CheckpointNotFound(
            f"{path}: cannot be read ({e}); check the file's permissions"
        ) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path}: not valid JSON ({e}); {what} is damaged or truncated: download it again"
        ) from None


def read_config(folder: Path) -> dict:
    """config.json of `folder` as a dict (`CheckpointError` when it is not a JSON object)."""
    path = folder / "config.json"
    hf = read_json(path, "config.json")
    if not isinstance(hf, dict):
        raise CheckpointError(
            f"{path}: holds a JSON {type(hf).__name__}, not the object of settings a config.json "
            "is; download it again (or save the model with save_pretrained)"
        )
    return hf


def weight_files(folder: Path) -> tuple[str, list[Path]]:
    """("safetensors" | "bin", files), preferring safetensors, following shard indexes."""
    for kind, index, single in (
        ("safetensors", "model.safetensors.index.json", "model.safetensors"),
        ("bin", "pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / index).is_file():
            weight_map = read_json(folder / index, "the shard index").get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(
                    f'{folder / index}: no "weight_map" object naming each tensor\'s shard; '
                    "download the index again"
                )
            return kind, [folder / f for f in sorted(set(weight_map.values()))]
        if (folder / single).is_file():
            return kind, [folder / single]
    loose = sorted(folder.glob("*.safetensors"))
    if loose:
        return "safetensors", loose
    raise CheckpointNotFound(
        f"{folder} has config.json but no weights (model.safetensors, a sharded index, or "
        "pytorch_model.bin); save the model with save_pretrained"
    )


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError

    try:
        return _read_safetensors_arrays(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(
            f"{path}: truncated or not a safetensors file ({e}); download it again"
        ) from None


def _read_safetensors_arrays(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(str(path), framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    except (TypeError, ValueError):
        # bfloat16 has no plain numpy dtype: read through jax, then widen to fp32.
        with safe_open(str(path), framework="flax") as f:
            for k in f.keys():
                out[k] = np.asarray(f.get_tensor(k), dtype=np.float32)
    return out


class SafetensorsFiles:
    """The tensors of a safetensors checkpoint (one file, or the shards its index lists) as a
    tensor source for `models.stream`: `names()`, `shape(name)`, and `read(name, start, stop)`
    giving rows [start, stop) of the leading axis (all when None) in the stored dtype (bf16 as
    ml_dtypes' numpy bfloat16). Each read memory-maps the tensor's file only while it copies
    those rows, so no more of the file stays resident than one read. Headers are read once, at
    construction; a damaged file raises `CheckpointError` naming it."""

    def __init__(self, files: list[Path]):
        self.where: dict[str, tuple[Path, tuple[int, ...]]] = {}
        for f in files:
            with _safe_open(f) as h:
                for k in h.keys():
                    self.where[k] = (f, tuple(h.get_slice(k).get_shape()))

    def names(self) -> list[str]:
        return list(self.where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.where[name][1]

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> np.ndarray:
        path, shape = self.where[name]
        with _safe_open(path) as h:
            if start is None:
                return h.get_tensor(name)
            return h.get_slice(name)[start:stop]


@contextlib.contextmanager
def _safe_open(path: Path):
    """`safetensors.safe_open` (numpy; memory-mapped until the block ends) whose errors, at open
    or while reading, become one-line `CheckpointError`s naming the file. The block should only
    read: any ValueError raised in it is taken for a damaged file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as handle:
            yield handle
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: truncated or not a safetensors file ({e}); download it again"
        ) from None


def _read_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise CheckpointNotFound(
            f"{path} is a PyTorch .bin checkpoint; reading it needs torch (pip install "
            "torch==2.13.0), or convert it to safetensors"
        ) from e
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a damaged file
        # torch's own text suggests weights_only=False, which jaxcirc never does: name the type.
        raise CheckpointError(
            f"{path}: truncated or not a PyTorch checkpoint of tensors only "
            f"({type(e).__name__}); download it again, or convert it to safetensors"
        ) from None
    return {k: v.float().numpy() for k, v in state.items()}


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    kind, files = weight_files(folder)
    state: dict[str, np.ndarray] = {}
    for f in files:
        state.update(_read_safetensors(f) if kind == "safetensors" else _read_bin(f))
    return state


def fingerprint(folder: Path) -> dict:
    """What identifies a checkpoint's weights: file names, sizes, modification times in ns, and a
    digest of sampled content (plus the snapshot folder, which for the HF cache is the commit).

    Sizes and times alone are not enough: a checkpoint saved again within the clock's granularity
    (same second on some filesystems) with the same shapes has the same size and time, and would
    silently reuse the old weights' cache entry. The sampled digest reads ~1 MiB per file.
    """
    _, files = weight_files(folder)
    stats = [f.stat() for f in files]
    return {
        "folder": str(folder.resolve()),
        "config": (folder / "config.json").read_text(),
        "files": [
            (f.name, st.st_size, st.st_mtime_ns, _sampled_digest(f, st.st_size))
            for f, st in zip(files, stats, strict=True)
        ],
    }


def _sampled_digest(path: Path, size: int, n_chunks: int = 16, chunk: int = 1 << 16) -> str:
    """sha256 of the file's header, n_chunks evenly spaced chunks and its tail (`size` bytes in
    all): any retrained or re-initialised weights change it, at the cost of reading ~1 MiB
    however large the file."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= (n_chunks + 2) * chunk:
            digest.update(fh.read())
        else:
            offsets = [0] + [size * i // (n_chunks + 1) for i in range(1, n_chunks + 1)]
            for off in offsets + [size - chunk]:
                fh.seek(off)
                digest.update(fh.read(chunk))
    return digest.hexdigest()
