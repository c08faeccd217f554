"""Model backends behind one interface, and the embedder."""

from __future__ import annotations

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Message
from lethe.backends.embeddings import Embedder, get_embedder
from lethe.config import BackendConfig
from lethe.registry import import_submodules

import_submodules(__name__)  # every backend module registers itself in BACKENDS


def load_backend(cfg: BackendConfig | None = None, **overrides: object) -> ChatBackend:
    """Instantiate the configured backend (``llamacpp`` default, ``openai``, ``hf``) through the registry.

    Each backend receives only the settings its constructor takes; a setting changed from its default
    that the chosen backend cannot use (``adapter`` on ``openai``, ``base_url`` on ``llamacpp``) is a
    one-line :class:`~lethe.errors.ConfigError` rather than silently ignored."""
    import inspect

    from lethe.errors import ConfigError

    cfg = (cfg or BackendConfig()).model_copy(update=overrides)
    cls = BACKENDS.get(cfg.kind)
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    defaults = BackendConfig.model_fields
    kwargs: dict[str, object] = {}
    for name, value in cfg.model_dump(exclude={"kind", "model"}).items():
        if name in params or takes_any:
            kwargs[name] = value
        elif value != defaults[name].get_default(call_default_factory=True):
            raise ConfigError(f"backend.{name} does not apply to the '{cfg.kind}' backend")
    return BACKENDS.create(cfg.kind, cfg.model, **kwargs)


__all__ = ["BACKENDS", "ChatBackend", "ChatResult", "Message", "Embedder", "get_embedder", "load_backend"]
