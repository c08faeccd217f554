"""ASGI middleware of the service: request id, body-size limit, rate limit, request metrics."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from lethe.serving.errors import ApiError, error_response
from lethe.serving.service import Service


class RequestMiddleware:
    """Every HTTP request: an id (``x-lethe-request-id``), the body limit (declared or chunked: 413),
    the rate limit (429), and the request metrics."""

    def __init__(self, app: Any, svc: Service) -> None:
        self.app = app
        self.svc = svc

    @staticmethod
    def _route(path: str) -> str:
        if path.startswith("/admin/forget/"):
            return "/admin/forget/{id}"
        if path in ("/v1/chat/completions", "/v1/models", "/admin/forget", "/admin/check", "/admin/calibrate",
                    "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            return path
        return "other"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = rid
        route = self._route(scope.get("path", ""))
        status = {"code": 500}
        t0 = time.perf_counter()
        m = self.svc.metrics
        limit = self.svc.settings.max_body_bytes

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                hdrs = list(message.get("headers", []))
                if not any(k == b"x-lethe-request-id" for k, _ in hdrs):
                    hdrs.append((b"x-lethe-request-id", rid.encode()))
                message["headers"] = hdrs
                m.request_seconds.labels(route).observe(time.perf_counter() - t0)
            await send(message)

        clen = dict(scope.get("headers", [])).get(b"content-length")
        too_big = False
        if clen is not None:
            try:
                too_big = int(clen) > limit
            except ValueError:
                too_big = False
        downstream_receive = receive
        if not too_big and clen is None and scope.get("method") in ("POST", "PUT", "PATCH", "DELETE"):
            # chunked body: read it here (bounded), then replay it
            chunks, size, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body = msg.get("body", b"")
                size += len(body)
                if size > limit:
                    too_big = True
                    break
                chunks.append(body)
                more = msg.get("more_body", False)
            if not too_big:
                data, replayed = b"".join(chunks), False

                async def downstream_receive() -> dict:
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": data, "more_body": False}
                    return await receive()

        try:
            limited = self.svc.rate_limit(scope, route)
            if limited is not None:
                await limited(scope, downstream_receive, send_wrapper)
            elif too_big:
                resp = error_response(ApiError(413, f"request body larger than {limit} bytes",
                                                param="body", code="body_too_large"))
                await resp(scope, downstream_receive, send_wrapper)
            else:
                await self.app(scope, downstream_receive, send_wrapper)
        finally:
            m.requests.labels(route, scope.get("method", ""), str(status["code"])).inc()
