"""Negative unlearn store backends."""

from __future__ import annotations

from pathlib import Path

from lethe.store.base import KINDS, STORES, ForgetRequest, Match, NegativeSample, UnlearnStore
from lethe.store.postgres import PostgresStore  # registers "postgres" (psycopg imported lazily)
from lethe.store.sqlite import SQLiteStore


def open_store(home: Path, dim: int = 384) -> UnlearnStore:
    """The embedded SQLite store under a Lethe home folder."""
    return SQLiteStore(Path(home) / "store.db", dim=dim)


__all__ = ["KINDS", "STORES", "ForgetRequest", "Match", "NegativeSample", "UnlearnStore", "SQLiteStore", "PostgresStore", "open_store"]
