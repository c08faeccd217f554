"""``lethe serve``: the guard as an OpenAI-compatible service (registered by ``lethe.cli.main``)."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from lethe.config import GuardConfig, lethe_home
from lethe.errors import ConfigError
from lethe.serving.settings import ServeSettings


def open_store(settings: ServeSettings, home: Path, dim: int) -> Any:
    """The store named in the settings: the embedded SQLite one, or PostgreSQL for replicas."""
    if settings.store == "postgres":
        from lethe.store.postgres import PostgresStore

        return PostgresStore(settings.store_dsn, dim=dim, schema=settings.store_schema)
    from lethe.store import open_store as open_sqlite

    return open_sqlite(home, dim=dim)


def open_guard(home: Path, config: GuardConfig, settings: ServeSettings, backend: Any = None) -> Any:
    """``Guard.open`` on the configured store (PostgreSQL needs ``Guard.open(store=...)``)."""
    from lethe import Guard

    if settings.store == "sqlite":
        return Guard.open(home=home, config=config, backend=backend)
    if "store" not in inspect.signature(Guard.open).parameters:
        raise ConfigError("this Lethe's Guard.open cannot take a store: the postgres store is unavailable")
    from lethe.backends import get_embedder

    store = open_store(settings, home, get_embedder(config.embedder).dim)
    return Guard.open(home=home, config=config, backend=backend, store=store)


def serve_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="guard.yaml (default <home>/guard.yaml)")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8000)")] = None,
    home: Annotated[Path | None, typer.Option(help="Lethe home (default LETHE_HOME or ~/.lethe)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the guard as an OpenAI-compatible proxy with an admin API (/v1, /admin, /metrics)."""
    import uvicorn

    from lethe.serving.app import create_app

    home_dir = lethe_home(home)
    cfg_path = config or home_dir / "guard.yaml"
    if config is not None and not config.exists():
        raise ConfigError(f"config file {config} not found")
    guard_cfg = GuardConfig.load(cfg_path)
    settings = ServeSettings.load(cfg_path, host=host, port=port, home=str(home_dir))
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def factory() -> Any:
        return open_guard(home_dir, guard_cfg, settings)

    app = create_app(factory, settings)
    typer.echo(f"lethe serve: http://{settings.host}:{settings.port}/v1 (store: {settings.store}, "
               f"fail mode: {settings.fail_mode}, home: {home_dir})", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower(),
                timeout_graceful_shutdown=settings.drain_timeout_s or None, access_log=False)
