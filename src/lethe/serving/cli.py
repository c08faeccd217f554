"""``lethe serve``: the guard as an OpenAI-compatible service (registered by ``lethe.cli.main``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from lethe.cli.options import HomeOpt
from lethe.config import GuardConfig, lethe_home, load_config
from lethe.serving.settings import with_overrides


def open_guard(home: Path, config: GuardConfig, backend: Any = None) -> Any:
    """The guard of ``home`` on the store ``config.store`` names (``Guard.open``)."""
    from lethe.guard import Guard

    return Guard.open(home=home, config=config, backend=backend)


def serve_command(
    config: Annotated[Path | None, typer.Option("--config", "-c", envvar="LETHE_CONFIG", metavar="FILE",
                                                help="The guard configuration to use.",
                                                show_default="<home>/guard.yaml")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind.", show_default="serve.host, 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", show_default="serve.port, 8000")] = None,
    home: HomeOpt = None,
    log_level: Annotated[str, typer.Option(help="Log level of uvicorn.")] = "info",
) -> None:
    """Serve the guard as an OpenAI-compatible proxy with an admin API (/v1, /admin, /metrics)."""
    import uvicorn

    from lethe.serving.app import create_app

    if config is not None:
        guard_cfg = load_config(path=config)
        home_dir = lethe_home(home or guard_cfg.serve.home)
    else:
        home_dir = lethe_home(home)
        guard_cfg = load_config(home_dir)
    settings = with_overrides(guard_cfg.serve, host=host, port=port, home=str(home_dir))
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def factory() -> Any:
        return open_guard(home_dir, guard_cfg)

    app = create_app(factory, settings)
    typer.echo(f"lethe serve: http://{settings.host}:{settings.port}/v1 (store: {guard_cfg.store.kind}, "
               f"fail mode: {settings.fail_mode}, home: {home_dir})", err=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=log_level.lower(),
                timeout_graceful_shutdown=settings.drain_timeout_s or None, access_log=False)
