"""Lethe: make large language models forget.

Public API::

    from lethe import Guard, GuardConfig
    guard = Guard.open()                       # store and config under LETHE_HOME
    guard.forget(["Where was Jane Doe born?"], kind="privacy", subject="Jane Doe")
    guard.chat("Tell me about Jane Doe")       # declines; other queries pass through unchanged
"""

from lethe.backends import BACKENDS, ChatBackend, get_embedder, load_backend
from lethe.config import BackendConfig, GuardConfig
from lethe.errors import LetheError
from lethe.guard import Detection, Guard, GuardPlan, GuardResponse
from lethe.store import STORES, ForgetRequest, UnlearnStore, open_store

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "STORES", "BackendConfig", "ChatBackend", "Detection", "ForgetRequest", "Guard", "GuardConfig",
    "GuardPlan", "GuardResponse", "LetheError", "UnlearnStore", "get_embedder", "load_backend", "open_store",
    "__version__",
]
