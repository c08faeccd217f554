"""Operations routes: ``/healthz`` (liveness), ``/readyz`` (guard loaded and store answering), ``/metrics``."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from lethe.serving.errors import RESPONSES
from lethe.serving.service import Service

log = logging.getLogger("lethe.serving")


def router(svc: Service) -> APIRouter:
    r = APIRouter(tags=["ops"])

    @r.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @r.get("/readyz", responses=RESPONSES)
    async def readyz() -> JSONResponse:
        if svc.guard is None:
            if svc.load_error:  # the message (paths, hosts) stays in the server log
                return JSONResponse({"status": "error", "error": svc.load_error_type,
                                     "detail": "the guard failed to load; see the server log"}, status_code=503)
            return JSONResponse({"status": "loading", "detail": None}, status_code=503)
        if not await svc.run(svc.guard.store.ping):
            return JSONResponse({"status": "store_unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @r.get("/metrics")
    async def metrics() -> Response:
        if svc.guard is not None:
            try:
                svc.metrics.live_requests.set(await svc.run(svc.guard.store.live_count))
            except Exception as exc:  # the store is down: the gauge keeps its last value, /readyz says why
                log.warning("live request count failed: %s", type(exc).__name__)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return r
