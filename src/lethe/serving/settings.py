"""Settings of the guard service (``serve:`` section of ``guard.yaml``).

Everything here concerns the HTTP service; what the guard does lives in
:class:`lethe.config.GuardConfig` (the rest of the same file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from lethe.errors import ConfigError


class ServeSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    home: str | None = Field(None, description="Lethe home (default LETHE_HOME or ~/.lethe)")
    model_name: str | None = Field(None, description="model id advertised by /v1/models (default: the backend's)")

    # store shared by replicas
    store: Literal["sqlite", "postgres"] = "sqlite"
    store_dsn: str | None = Field(None, description="PostgreSQL DSN (or env LETHE_STORE_DSN)")
    store_schema: str = "lethe"

    # auth
    admin_key_env: str = "LETHE_ADMIN_KEY"
    admin_key_file: str | None = Field(None, description="file with 'sha256:<hex>' lines (lethe.serving.auth.hash_key)")
    client_keys_env: str = "LETHE_CLIENT_KEYS"
    client_keys_file: str | None = Field(None, description="hashed client keys, one per line; unset = open")

    # failure behaviour
    fail_mode: Literal["closed", "open"] = Field(
        "closed", description="detector/guider error: 'closed' declines, 'open' forwards the request unguarded"
    )
    decline_message: str = "I'm sorry, but I can't help with that request right now."
    upstream_timeout_s: float = Field(120.0, gt=0, description="504 when the upstream takes longer")
    speculative_upstream: bool = Field(
        False, description="start the upstream call while detection runs (async backends only); an in-scope "
        "request's speculative call is cancelled before any of its output is read")

    # request limits
    max_body_bytes: int = Field(1_000_000, gt=0)
    max_messages: int = Field(64, gt=0)
    max_message_chars: int = Field(32_000, gt=0)
    max_tokens_limit: int = Field(4096, gt=0)
    default_max_tokens: int = Field(256, gt=0)

    # operations
    drain_timeout_s: float = Field(30.0, ge=0, description="graceful shutdown: wait this long for in-flight streams")
    threads: int = Field(64, gt=0, description="worker threads for guard and upstream calls")
    default_rewriter: Literal["llm", "rule"] = "llm"
    audit_log: str | None = Field(None, description="JSONL audit log path (default <home>/audit.jsonl)")

    @classmethod
    def load(cls, path: Path | None, **overrides: object) -> ServeSettings:
        data: dict = {}
        if path is not None and Path(path).exists():
            try:
                raw = yaml.safe_load(Path(path).read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"bad config {path}: {str(exc).splitlines()[0]}") from None
            data = dict(raw.get("serve") or {}) if isinstance(raw, dict) else {}
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise ConfigError(f"bad serve setting '{field}' in {path or 'arguments'}: {err['msg']}") from None
