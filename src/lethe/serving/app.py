"""The guard as an OpenAI-compatible service (FastAPI): this module only assembles the app.

``create_app(guard_or_factory, settings)`` builds it from its parts:

- :mod:`lethe.serving.openai_routes`: ``/v1/chat/completions`` (stream and not) and ``/v1/models``;
  each request goes through the guard's pipeline (``lethe.guard.pipeline``) and then to the guard's
  backend (the upstream); the decision travels in ``x-lethe-*`` response headers, never in the body;
- :mod:`lethe.serving.admin_routes`: ``/admin/...`` (admin key), audited;
- :mod:`lethe.serving.ops_routes`: ``/healthz``, ``/readyz``, ``/metrics``;
- :mod:`lethe.serving.errors`: OpenAI-style error bodies (502/504 upstream, 413 body, 400 limits and
  malformed JSON, 422 schema, each naming the field in ``error.param``);
- :mod:`lethe.serving.middleware`: request id, body limit, rate limit, request metrics;
- :mod:`lethe.serving.service`: the guard (loaded lazily), keys, thread pool, fail mode
  (``fail_mode=closed``, the default, declines when the detector or guider fails; ``open``
  forwards unguarded; both logged, counted and flagged in ``x-lethe-decision``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from lethe.serving import admin_routes, errors, openai_routes, ops_routes
from lethe.serving.deps import auth_dependencies
from lethe.serving.errors import ApiError
from lethe.serving.middleware import RequestMiddleware
from lethe.serving.service import Service
from lethe.serving.settings import ServeSettings


def create_app(guard_or_factory: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app. ``guard_or_factory``: a loaded ``Guard`` or a zero-argument callable
    returning one (loaded in the background; ``/readyz`` answers 503 until it is ready)."""
    svc = Service(guard_or_factory, settings or ServeSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.start()
        yield
        svc.close()

    app = FastAPI(title="Lethe guard", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible proxy with the DRAGON unlearning guard, plus its admin API.")
    app.state.service = svc
    app.add_middleware(RequestMiddleware, svc=svc)  # type: ignore[arg-type]
    errors.install(app)
    auth = auth_dependencies(svc)
    app.include_router(ops_routes.router(svc))
    app.include_router(openai_routes.router(svc, auth))
    app.include_router(admin_routes.router(svc, auth))
    return app


def wait_ready(app: FastAPI, timeout: float | None = None) -> bool:
    """Block until the app's guard has loaded (tests, benchmarks)."""
    return app.state.service.wait_loaded(timeout)


__all__ = ["create_app", "ApiError", "wait_ready"]
