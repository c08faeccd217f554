"""Small typed registries: the extension points of Lethe.

Every pluggable part (backend, store, scorer, guider, metric, attack, loss) is a small
class registered under a short name, in the spirit of open-unlearning's trainer and
metric registries. Third-party code registers with the decorator::

    @BACKENDS.register("my-backend")
    class MyBackend(ChatBackend): ...
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from lethe.errors import ConfigError

T = TypeVar("T")

REGISTRIES: dict[str, Registry] = {}
"""Every registry by the kind of part it holds ("backend", "store", ...), for configuration checks."""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}
        REGISTRIES[kind] = self

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            if name in self._items and self._items[name] is not cls:
                raise ConfigError(f"{self.kind} '{name}' is already registered")
            self._items[name] = cls
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise ConfigError(f"unknown {self.kind} '{name}' (known: {known})") from None

    def create(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def import_submodules(package: str) -> list[str]:
    """Import every module of ``package`` (so their ``@REGISTRY.register`` decorators run).

    A package of parts (attacks, metrics, backends) calls this from its ``__init__``: adding a part is
    adding a file beside its neighbours, with no list to edit."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
            names.append(info.name)
    return names


def check_kind(registry: str, kind: str) -> str:
    """``kind`` if it is registered in the named registry (configuration validators call this).

    Lower layers (the configuration) check kinds without importing the packages that define them:
    once those packages are imported (``import lethe`` imports them all) the registry is here; a
    registry not created yet defers the check to the moment the part is built."""
    reg = REGISTRIES.get(registry)
    if reg is not None and kind not in reg:
        raise ValueError(f"unknown {registry} kind '{kind}' (registered: {', '.join(reg.names()) or 'none'})")
    return kind
