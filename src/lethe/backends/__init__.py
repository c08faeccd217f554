"""Model backends behind one interface, and the embedder."""

from __future__ import annotations

from lethe.backends import hf, llamacpp, openai_compat  # noqa: F401  (registration)
from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Message
from lethe.backends.embeddings import Embedder, get_embedder
from lethe.config import BackendConfig


def load_backend(cfg: BackendConfig | None = None, **overrides: object) -> ChatBackend:
    """Instantiate the configured backend (``llamacpp`` default, ``openai``, ``hf``)."""
    cfg = (cfg or BackendConfig()).model_copy(update=overrides)
    kwargs = cfg.model_dump(exclude={"kind", "model"})
    return BACKENDS.create(cfg.kind, cfg.model, **kwargs)


__all__ = ["BACKENDS", "ChatBackend", "ChatResult", "Message", "Embedder", "get_embedder", "load_backend"]
