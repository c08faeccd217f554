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

DISTRIBUTION = "lethe-unlearn"
"""The name on the package index (``pip install lethe-unlearn``); ``lethe`` there is another project."""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"

__all__ = [
    "BACKENDS", "STORES", "BackendConfig", "ChatBackend", "Detection", "ForgetRequest", "Guard", "GuardConfig",
    "GuardPlan", "GuardResponse", "LetheError", "UnlearnStore", "get_embedder", "load_backend", "open_store",
    "DISTRIBUTION", "__version__",
]
