"""Guard configuration (pydantic) and the Lethe home folder.

The home folder (``--home`` or ``LETHE_HOME``, default ``~/.lethe``) holds the store
database, the trained scorer and ``guard.yaml``. Nothing else is written there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from lethe.errors import ConfigError

Placement = Literal["system", "user_prefix", "assistant_prefill"]

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct-q4"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class BackendConfig(BaseModel):
    """Which chat model sits behind the guard.

    ``kind``: ``llamacpp`` (GGUF path or the built-in default name), ``openai``
    (any OpenAI-compatible endpoint), ``hf`` (transformers hub id or folder).
    """

    kind: Literal["llamacpp", "openai", "hf"] = "llamacpp"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    gguf_file: str | None = None
    adapter: str | None = Field(
        None,
        description="a LoRA trained by `lethe train`: its PEFT folder (hf; llamacpp exports it to GGUF once) "
        "or a GGUF LoRA file (llamacpp)",
    )
    n_ctx: int = 4096
    n_threads: int | None = Field(
        None, ge=1, description="llamacpp: threads per call; unset: chosen per call from the cores other "
        "processes leave free (1 to the CPUs this process may use)")
    wait_policy: Literal["passive", "spin", "active"] | None = Field(
        None, description="llamacpp: how idle threads wait (libgomp's OMP_WAIT_POLICY); unset: "
        "OMP_WAIT_POLICY if set, else passive, which keeps processes on shared cores from starving each other")
    seed: int = 0
    timeout_s: float = 60.0


class DetectorConfig(BaseModel):
    tau: float = Field(0.7, ge=0.0, le=1.0, description="trigger when confidence > tau")
    scorer: str = "logreg"
    scorer_threshold: float = Field(0.9, ge=0.0, le=1.0, description="tau_1 of the paper")
    concept_scorer_threshold: float = Field(0.5, ge=0.0, le=1.0, description="tau_1 in concept mode (harmful/copyright)")
    sim_floor: float = 0.55
    sim_ceiling: float = 0.85
    history_turns: int = 3
    fuzzy: bool = True
    other_name_damping: float = Field(
        0.5, ge=0.0, le=1.0,
        description="privacy mode: factor on similarity and scorer when the query names a person whose "
                    "name shares only a first name with a forgotten one")


class GuiderConfig(BaseModel):
    kind: Literal["llm", "template", "trained"] = "template"
    adapter_path: str | None = None
    max_tokens: int = 160
    temperature: float = 0.0


class InterventionConfig(BaseModel):
    placement: Placement = "user_prefix"
    fake_profile: bool = False


class GuardConfig(BaseModel):
    backend: BackendConfig = BackendConfig()
    embedder: str = DEFAULT_EMBEDDER
    detector: DetectorConfig = DetectorConfig()
    guider: GuiderConfig = GuiderConfig()
    intervention: InterventionConfig = InterventionConfig()
    rewrites_per_prompt: int = 4
    embedding_only: bool = False
    max_new_tokens: int = 200

    @classmethod
    def load(cls, path: Path) -> GuardConfig:
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
            return cls.model_validate(data)
        except (yaml.YAMLError, ValidationError) as exc:
            first = str(exc).splitlines()
            raise ConfigError(f"bad config {path}: {' '.join(first[:3])}") from None

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.model_dump(), sort_keys=False))


def lethe_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Resolve and create the home folder: argument, then ``LETHE_HOME``, then ``~/.lethe``."""
    raw = home or os.environ.get("LETHE_HOME") or Path.home() / ".lethe"
    path = Path(raw).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """Where assembled model files live (outside the home: they are not user data)."""
    raw = os.environ.get("LETHE_CACHE") or os.environ.get("XDG_CACHE_HOME")
    base = Path(raw).expanduser() if raw else Path.home() / ".cache"
    path = base / "lethe" if not os.environ.get("LETHE_CACHE") else base
    path.mkdir(parents=True, exist_ok=True)
    return path
