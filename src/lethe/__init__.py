"""Lethe: make large language models forget.

Public API::

    from lethe import Guard, GuardConfig
    guard = Guard.open()                       # store and config under LETHE_HOME
    guard.forget(["Where was Jane Doe born?"], kind="privacy", subject="Jane Doe")
    guard.chat("Tell me about Jane Doe")       # declines; other queries pass through unchanged

The names below are imported on first use (PEP 562), so ``import lethe`` and the ``lethe``
command's start-up stay cheap: a command loads only the parts it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

DISTRIBUTION = "lethe-unlearn"
"""The name on the package index (``pip install lethe-unlearn``); ``lethe`` there is another project."""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version(DISTRIBUTION)
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"

_EXPORTS = {
    "BACKENDS": "lethe.backends", "ChatBackend": "lethe.backends", "get_embedder": "lethe.backends",
    "load_backend": "lethe.backends",
    "BackendConfig": "lethe.config", "GuardConfig": "lethe.config",
    "LetheError": "lethe.errors",
    "Detection": "lethe.guard", "Guard": "lethe.guard", "GuardPlan": "lethe.guard", "GuardResponse": "lethe.guard",
    "STORES": "lethe.store", "ForgetRequest": "lethe.store", "UnlearnStore": "lethe.store", "open_store": "lethe.store",
}

__all__ = [
    "BACKENDS", "STORES", "BackendConfig", "ChatBackend", "Detection", "ForgetRequest", "Guard", "GuardConfig",
    "GuardPlan", "GuardResponse", "LetheError", "UnlearnStore", "get_embedder", "load_backend", "open_store",
    "DISTRIBUTION", "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from lethe.backends import BACKENDS, ChatBackend, get_embedder, load_backend
    from lethe.config import BackendConfig, GuardConfig
    from lethe.errors import LetheError
    from lethe.guard import Detection, Guard, GuardPlan, GuardResponse
    from lethe.store import STORES, ForgetRequest, UnlearnStore, open_store


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lethe' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
