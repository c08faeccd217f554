"""What the ``lethe`` commands share: the configuration and store they act on, users' input files,
and how text output shows times and long queries. Imports only typer at module level."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", envvar="LETHE_CONFIG", metavar="FILE",
                                                help="The guard configuration to use.",
                                                show_default="<home>/guard.yaml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object a line instead of text.")]



def _config(home: str | None, config: Path | None = None):
    """The home folder and its configuration, through the one loader every entry point uses."""
    from lethe.config import lethe_home, load_config

    path = lethe_home(home)
    return path, load_config(path, config)


def _guard(home: str | None, model: str | None = None, config: Path | None = None):
    """The guard on the store the configuration names (SQLite, PostgreSQL, ...)."""
    from lethe import Guard

    path, cfg = _config(home, config)
    if model:
        cfg.backend.model = model
    return Guard.open(path, config=cfg)


def _store(home: str | None, config: Path | None = None):
    """The configured store alone (no embedder loaded: its size is read from the store)."""
    from lethe.store import open_store

    path, cfg = _config(home, config)
    return open_store(cfg, path, dim=None)


def _require_requests(home: str | None, config: Path | None = None) -> None:
    """The empty-store error from the store alone, before the embedder or any model loads."""
    from lethe.errors import EmptyStoreError

    store = _store(home, config)
    try:
        empty = not store.list_requests()
    finally:
        store.close()
    if empty:
        raise EmptyStoreError("the unlearn store is empty: add a request with 'lethe forget add' first")


def _read_jsonl(path: Path, field: str = "prompt") -> list[dict]:
    """JSON Lines with a string ``field`` on every non-blank line; errors name file and line."""
    from lethe.jsonl import read_jsonl

    return [obj for _, obj in read_jsonl(path, "input", (field,))]


def iso_time(value: Any) -> str | None:
    """A stored time (seconds since the epoch) as ISO 8601 in UTC, e.g. ``2026-12-01T09:30:00Z``."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float):
        when = datetime.fromtimestamp(float(value), tz=UTC)
    else:
        return str(value)
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


QUERY_SHOWN = 120


def abbreviate(text: str, limit: int = QUERY_SHOWN) -> str:
    """A query as one line for text output: whitespace collapsed, and past ``limit`` characters
    cut with a note of its full length (``--json`` always carries the whole query)."""
    one = " ".join(text.split())
    if len(one) <= limit:
        return one
    return f"{one[:limit - 1]}… ({len(text):,} characters)"
