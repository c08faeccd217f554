"""What can change a number: the machine, the libraries, the llama.cpp build and the model bytes.

Every results JSON carries ``provenance()`` so a table re-run on another machine can be compared
with what it ran on. A near-chance model's top answer letter can flip on small numeric
differences (another instruction set, another thread count, another llama.cpp build); the
results pages state each table's measured spread across those, and this block says which of
them differ between two runs.

File hashes are cached under ``LETHE_CACHE`` keyed by path, size and modification time, so a
400 MB model is hashed once; the built-in models' pinned SHA-256 is used when the file is theirs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

from lethe.config import cache_dir

PACKAGES = ("lethe-unlearn", "numpy", "torch", "transformers", "peft", "accelerate", "sentence-transformers",
            "onnxruntime", "llama_cpp_python", "scikit-learn", "rouge-score")
# Instruction-set flags that change which kernels llama.cpp, onnxruntime and torch run.
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def machine() -> dict:
    """CPU model, the relevant instruction-set flags, core counts and the OS."""
    model, flags = platform.processor() or None, set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and model in (None, "", platform.machine()):
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": model, "cpu_flags": [f for f in CPU_FLAGS if f in flags], "logical_cores": os.cpu_count(),
            "usable_cores": usable, "arch": platform.machine(), "os": platform.platform(),
            "python": platform.python_version()}


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def llama_cpp_build() -> str | None:
    """llama.cpp's own system line (compiled features: AVX2, F16C, ... and the thread pool)."""
    try:
        import llama_cpp  # noqa: PLC0415 - optional, and costly to import
    except ImportError:
        return None
    info = llama_cpp.llama_print_system_info()
    return (info.decode() if isinstance(info, bytes) else str(info)).strip()


def _pinned(path: Path) -> str | None:
    from lethe.backends.default_model import BUILTIN_MODELS  # noqa: PLC0415 - keeps this module light

    for model in BUILTIN_MODELS.values():
        if path.name == model.filename and path.stat().st_size == model.size:
            return model.sha256  # assembled from the wheels and checked against this hash
    return None


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file (of every file, sorted, for a folder such as a PEFT adapter)."""
    path = Path(path).resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    stamp = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache = cache_dir() / "sha256.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    key = str(path)
    if known.get(key, {}).get("stamp") == stamp:
        return known[key]["sha256"]
    digest = _pinned(path) if path.is_file() else None
    if digest is None:
        h = hashlib.sha256()
        for p in files:
            if len(files) > 1:
                h.update(str(p.relative_to(path)).encode() + b"\0")
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        digest = h.hexdigest()
    known[key] = {"stamp": stamp, "sha256": digest}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
    return digest


def provenance(models: Iterable[str | Path | None] = (), threads: int | None = None,
               llama_cpp: bool = True, **pinned: object) -> dict:
    """The block results files carry: machine, libraries, llama.cpp build, model hashes, pinned settings."""
    hashes = {}
    for m in models:
        if m is not None and Path(m).exists():
            hashes[str(m)] = file_sha256(m)
    env_threads = os.environ.get("LETHE_THREADS")
    return {"machine": machine(), "libraries": library_versions(),
            "llama_cpp_build": llama_cpp_build() if llama_cpp else None,
            "models_sha256": hashes,
            "settings": {"threads": threads if threads is not None else (int(env_threads) if env_threads else None),
                         **pinned}}
