"""Negative unlearn store backends, built from the ``store:`` section of ``guard.yaml``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lethe.store.base import KINDS, STORES, ForgetRequest, Match, NegativeSample, UnlearnStore
from lethe.store.keys import KeySource
from lethe.store.postgres import PostgresStore  # registers "postgres" (psycopg imported lazily)
from lethe.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from lethe.config import GuardConfig, StoreConfig


def open_store(
    config: GuardConfig | StoreConfig | str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    dim: int = 384,
) -> UnlearnStore:
    """The store the configuration names, built through :data:`STORES` from ``store.kind``.

    ``config``: a whole :class:`~lethe.config.GuardConfig`, its ``store`` section, or
    ``None`` for the home's ``guard.yaml``. ``open_store(home)`` (a path first) is the
    same as ``open_store(None, home)``. ``home`` anchors relative paths and the default
    key file.
    """
    from lethe.config import GuardConfig, lethe_home, load_config

    if isinstance(config, str | os.PathLike):
        if home is not None:
            raise TypeError("open_store(config, home, dim): config must be a GuardConfig or StoreConfig")
        config, home = None, config
    home_dir = lethe_home(home)
    if config is None:
        config = load_config(home_dir)
    section = config.store if isinstance(config, GuardConfig) else config
    return STORES.get(section.kind).from_config(section, home=Path(home_dir), dim=dim)


__all__ = ["KINDS", "STORES", "ForgetRequest", "KeySource", "Match", "NegativeSample", "UnlearnStore", "SQLiteStore",
           "PostgresStore", "open_store"]
