"""The guard as an OpenAI-compatible service (FastAPI).

``create_app(guard_or_factory, settings)`` builds the app: ``/v1/chat/completions``
(stream and not) and ``/v1/models`` pass every request through the guard and then to the
guard's backend (the upstream); the decision travels in ``x-lethe-*`` response headers,
never in the OpenAI body. Admin routes (``/admin/...``) need the admin key. Guard and
upstream calls are blocking, so they run on a bounded thread pool; detection and the
upstream call are separate steps so each has its own failure mode and metrics:

- detector/guider error: ``fail_mode=closed`` (default) answers with a decline,
  ``open`` forwards the request unguarded; both logged, counted, and flagged in
  ``x-lethe-decision``;
- upstream error: 502, upstream timeout: 504 (OpenAI-style error body);
- limits: body size 413, message count / length / ``max_tokens`` 400, schema 422 and
  malformed JSON 400, each naming the field in ``error.param``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from lethe.errors import BackendError, EmptyStoreError, LetheError
from lethe.serving import schemas as S
from lethe.serving.auth import KeySet, bearer, fingerprint
from lethe.serving.observability import AuditLog, Metrics
from lethe.serving.ratelimit import Buckets, retry_after
from lethe.serving.settings import ServeSettings

log = logging.getLogger("lethe.serving")
_END = object()  # end of an upstream stream


# -- errors ------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(exc: ApiError, extra_headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                        headers={**exc.headers, **(extra_headers or {})})


def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # drop pydantic's union-branch labels such as 'str' or 'list[TextPart]'
    parts = [p for p in parts if not (p.startswith(("list[", "function-")) or p in ("str", "int", "float", "bool"))]
    return ".".join(parts) or "body"


_RESPONSES: dict[int | str, dict[str, Any]] = {
    c: {"model": S.ErrorResponse} for c in (400, 401, 403, 404, 413, 422, 429, 502, 503, 504)
}


def _upstream_summary(exc: BaseException) -> str:
    """What a client may learn of an upstream failure: its HTTP status or the error's class, never
    its text (which can carry internal hosts, paths or the upstream's own messages)."""
    for e in (exc, exc.__cause__, exc.__context__):
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return f"HTTP {status}"
    inner = exc.__cause__ or exc.__context__
    return type(inner if isinstance(exc, BackendError) and inner is not None else exc).__name__


def _bad_unicode(texts: list[tuple[str, str]]) -> str | None:
    """The field of the first text that cannot be encoded as UTF-8 (a lone surrogate), or None."""
    for param, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return param
    return None


# -- guard access ------------------------------------------------------------------------
@dataclass
class _Plan:
    """What goes upstream, with the guard's decision (a GuardPlan or a fail-open passthrough)."""

    messages: list[dict]
    prefill: str | None
    triggered: bool
    score: float | None
    policy: str | None
    forget_id: str | None
    decision: str  # passed | guarded | fail_open | fail_closed


def _is_guard(obj: Any) -> bool:
    return hasattr(obj, "plan") and hasattr(obj, "detect")


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return None  # embeddings are not returned
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, str | int | bool) or x is None:
        return x
    return str(x)


def _finish(text: str) -> str:
    try:
        from lethe.guard.intervention import finish
    except ImportError:  # pragma: no cover
        return text.strip()
    return finish(text)


def _header_safe(value: object) -> str:
    return str(value).encode("ascii", "replace").decode()[:200]


class Service:
    """Process-wide state of one app: the guard (loaded lazily), keys, metrics, audit log."""

    def __init__(self, guard_or_factory: Any, settings: ServeSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.admin_keys = KeySet.from_sources(settings.admin_key_env, settings.admin_key_file)
        self.client_keys = KeySet.from_sources(settings.client_keys_env, settings.client_keys_file, split=True)
        from lethe.config import lethe_home

        audit_path = Path(settings.audit_log) if settings.audit_log else lethe_home(settings.home) / "audit.jsonl"
        self.audit = AuditLog(audit_path)
        self.guard: Any = guard_or_factory if _is_guard(guard_or_factory) else None
        self._factory: Callable[[], Any] | None = None if self.guard is not None else guard_or_factory
        self.load_error: str | None = None
        self.limiter = anyio.CapacityLimiter(settings.threads)
        self.rate_key = Buckets(settings.rate_limit_per_key, settings.rate_limit_burst)
        self.rate_client = Buckets(settings.rate_limit_per_client, settings.rate_limit_burst)
        from prometheus_client import Counter

        self.rate_limited = Counter("lethe_rate_limited", "requests refused with 429", ["scope"],
                                    registry=self.metrics.registry)
        self.started = int(time.time())
        self._loader: threading.Thread | None = None

    # lifecycle
    def start(self) -> None:
        if self.guard is None and self._factory is not None and self._loader is None:
            self._loader = threading.Thread(target=self._load, name="lethe-guard-load", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        try:
            assert self._factory is not None
            self.guard = self._factory()
            log.info("guard loaded")
        except Exception as exc:  # reported by /readyz
            self.load_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.exception("guard failed to load")

    def wait_loaded(self, timeout: float | None = None) -> bool:
        if self._loader is not None:
            self._loader.join(timeout)
        return self.guard is not None

    def close(self) -> None:
        g = self.guard
        if g is None:
            return
        closer = getattr(g, "close", None) or getattr(getattr(g, "store", None), "close", None)
        if callable(closer):
            try:
                closer()
            except Exception:
                log.exception("closing the guard failed")

    @property
    def load_error_type(self) -> str | None:
        """The class of the load error: what unauthenticated clients may see (the message can hold paths)."""
        return self.load_error.split(":", 1)[0] if self.load_error else None

    def require_guard(self) -> Any:
        if self.guard is None:
            detail = (f"the guard failed to load ({self.load_error_type}; see the server log)" if self.load_error
                      else "guard is still loading")
            raise ApiError(503, detail, "api_error", code="not_ready", headers={"retry-after": "5"})
        return self.guard

    async def run(self, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        # abandon_on_cancel: a timed-out or disconnected call returns at once; its thread finishes alone
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter,
                                              abandon_on_cancel=True)

    @property
    def model_name(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        backend = getattr(self.guard, "backend", None)
        return str(getattr(backend, "model", None) or "lethe-guarded")

    # guard step
    async def plan(self, messages: list[dict], read: list[dict] | None = None) -> _Plan:
        """The guard's plan for ``messages`` (what goes upstream); ``read``, when given, is what
        detection reads instead: the request as the client sent it, names and tool calls included."""
        guard = self.require_guard()
        m = self.metrics
        t0 = time.perf_counter()
        try:
            plan = await (self.run(guard.plan, messages) if read is None else
                          self.run(guard.plan, messages, read=read))
        except Exception as exc:
            mode = self.settings.fail_mode
            m.failures.labels("guard", mode).inc()
            m.decisions.labels(f"fail_{mode}").inc()
            log.error("guard failed (%s): %s; failing %s", type(exc).__name__, exc, mode)
            return _Plan(messages, None, False, None, None, None, f"fail_{mode}")
        elapsed = time.perf_counter() - t0
        timings = getattr(plan, "timings", None) or {}
        det = getattr(plan, "detection", None)
        detect_s = timings.get("detect", timings.get("detect_s"))
        guide_s = timings.get("guide", timings.get("guide_s"))
        m.detection_seconds.observe(float(detect_s) if detect_s is not None else elapsed)
        triggered = bool(getattr(det, "triggered", False))
        if triggered and guide_s is not None:
            m.guider_seconds.observe(float(guide_s))
        decision = "guarded" if triggered else "passed"
        m.decisions.labels(decision).inc()
        score = getattr(det, "score", None)
        return _Plan(
            messages=list(getattr(plan, "messages", None) or messages),
            prefill=getattr(plan, "prefill", None),
            triggered=triggered,
            score=float(score) if score is not None else None,
            policy=getattr(plan, "policy", None),
            forget_id=getattr(det, "request_id", None) if triggered else None,
            decision=decision,
        )

    def headers(self, plan: _Plan, request_id: str) -> dict[str, str]:
        failed = plan.decision.startswith("fail_")
        h = {
            "x-lethe-request-id": request_id,
            # a failed guard decided nothing: "unknown", and the mode it failed in says what was done
            "x-lethe-triggered": "unknown" if failed else "true" if plan.triggered else "false",
            "x-lethe-decision": plan.decision,
        }
        if failed:
            h["x-lethe-fail-mode"] = plan.decision[5:]
        if plan.score is not None:
            h["x-lethe-score"] = f"{plan.score:.4f}"
        if plan.policy:
            h["x-lethe-policy"] = _header_safe(plan.policy)
        if plan.forget_id:
            h["x-lethe-forget-request"] = _header_safe(plan.forget_id)
        return h

    def upstream_error(self, exc: BaseException) -> ApiError:
        self.metrics.failures.labels("upstream", "error").inc()
        timeout = isinstance(exc, TimeoutError)
        ctx = exc.__context__
        if not timeout and ctx is not None:
            timeout = "Timeout" in type(ctx).__name__
        if not timeout and isinstance(exc, BackendError):
            timeout = "timed out" in str(exc)
        if timeout:
            log.error("upstream timed out")
            return ApiError(504, "the upstream model timed out", "timeout", code="upstream_timeout")
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        log.error("upstream failed: %s", msg)  # the text stays in the server log
        return ApiError(502, f"the upstream model failed ({_upstream_summary(exc)}; see the server log)",
                        "api_error", code="upstream_error")

    def rate_limit(self, scope: dict, route: str) -> JSONResponse | None:
        """429 when the request's API key or client address has used up its bucket (``ratelimit``)."""
        if route in ("/healthz", "/readyz", "/metrics") or not (self.rate_key.enabled or self.rate_client.enabled):
            return None
        key = bearer(dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1") or None)
        checks = []
        if key and self.rate_key.enabled and (self.admin_keys.check(key) or self.client_keys.check(key)):
            checks.append(("key", self.rate_key, fingerprint(key)))
        client = scope.get("client")
        if self.rate_client.enabled:
            checks.append(("client", self.rate_client, client[0] if client else "unknown"))
        for name, buckets, ident in checks:
            wait = buckets.take(ident)
            if wait > 0:
                self.rate_limited.labels(name).inc()
                what = "this API key" if name == "key" else "this client address"
                return _error_response(ApiError(429, f"rate limit exceeded for {what}; retry after "
                                                f"{retry_after(wait)} s", "rate_limit_error",
                                                code="rate_limit_exceeded",
                                                headers={"retry-after": retry_after(wait)}))
        return None


# -- ASGI middleware: request id, body limit, metrics --------------------------------------
class _Middleware:
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
                resp = _error_response(ApiError(413, f"request body larger than {limit} bytes",
                                                param="body", code="body_too_large"))
                await resp(scope, downstream_receive, send_wrapper)
            else:
                await self.app(scope, downstream_receive, send_wrapper)
        finally:
            m.requests.labels(route, scope.get("method", ""), str(status["code"])).inc()


# -- app factory -------------------------------------------------------------------------
def create_app(guard_or_factory: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app. ``guard_or_factory``: a loaded ``Guard`` or a zero-argument callable
    returning one (loaded in the background; ``/readyz`` answers 503 until it is ready)."""
    settings = settings or ServeSettings()
    svc = Service(guard_or_factory, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc.start()
        yield
        svc.close()

    app = FastAPI(title="Lethe guard", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible proxy with the DRAGON unlearning guard, plus its admin API.")
    app.state.service = svc
    app.add_middleware(_Middleware, svc=svc)  # type: ignore[arg-type]

    # error handlers: OpenAI-style bodies everywhere
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            detail = ctx.get("error", first.get("msg"))
            return _error_response(ApiError(400, f"malformed JSON body: {detail}", param="body",
                                            code="invalid_json"))
        param = _loc(first.get("loc", ()))
        if first.get("type") == "string_unicode":  # a lone surrogate: the client's encoding, not a schema error
            return _error_response(ApiError(400, f"'{param}' holds text that is not valid Unicode (a lone "
                                            "surrogate)", param=param, code="invalid_encoding"))
        msg = str(first.get("msg", "invalid value"))
        return _error_response(ApiError(422, f"invalid '{param}': {msg}", param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "api_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(UnicodeError)
    async def _encoding(request: Request, exc: UnicodeError) -> JSONResponse:
        return _error_response(ApiError(400, "the request holds text that is not valid Unicode (e.g. a lone "
                                        "surrogate)", code="invalid_encoding"))

    @app.exception_handler(LetheError)
    async def _lethe(request: Request, exc: LetheError) -> JSONResponse:
        status = 409 if isinstance(exc, EmptyStoreError) else 400
        return _error_response(ApiError(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(ApiError(500, "internal error (see the server log)", "api_error"))

    # auth dependencies
    bearer_scheme = HTTPBearer(auto_error=False, description="admin key or client key")

    def client_auth(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> None:
        if not svc.client_keys.enabled:
            return
        key = bearer(request.headers.get("authorization"))
        if key is None:
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", "authentication_error",
                           code="missing_api_key")
        if not (svc.client_keys.check(key) or svc.admin_keys.check(key)):
            raise ApiError(401, "invalid API key", "authentication_error", code="invalid_api_key")

    def admin_auth(request: Request, cred: HTTPAuthorizationCredentials | None = Depends(bearer_scheme)) -> str:
        key = bearer(request.headers.get("authorization"))

        def denied(status: int, message: str, type_: str, code: str) -> ApiError:
            # every refused admin call is audited: who (key fingerprint or anonymous), from where, why
            svc.metrics.admin.labels("auth", code).inc()
            svc.audit.write("auth.admin", fingerprint(key) if key else "anonymous", _client(request), "denied",
                            error=code, status=status)
            return ApiError(status, message, type_, code=code)

        if not svc.admin_keys.enabled:
            raise denied(403, f"the admin API is disabled: set {settings.admin_key_env} or admin_key_file",
                         "permission_error", "admin_disabled")
        if key is None:
            raise denied(401, "missing admin key: send 'Authorization: Bearer <admin key>'",
                         "authentication_error", "missing_api_key")
        if not svc.admin_keys.check(key):
            if svc.client_keys.enabled and svc.client_keys.check(key):
                raise denied(403, "this key may not use the admin API", "permission_error", "forbidden")
            raise denied(401, "invalid admin key", "authentication_error", "invalid_api_key")
        return fingerprint(key)

    # -- health ----------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"], responses=_RESPONSES)
    async def readyz() -> JSONResponse:
        if svc.guard is None:
            if svc.load_error:  # the message (paths, hosts) stays in the server log
                return JSONResponse({"status": "error", "error": svc.load_error_type,
                                     "detail": "the guard failed to load; see the server log"}, status_code=503)
            return JSONResponse({"status": "loading", "detail": None}, status_code=503)
        store = getattr(svc.guard, "store", None)
        ping = getattr(store, "ping", None)
        if callable(ping) and not await svc.run(ping):
            return JSONResponse({"status": "store_unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        store = getattr(svc.guard, "store", None)
        idx = getattr(store, "_by_request", None)
        if idx is not None:
            svc.metrics.live_requests.set(len(idx))
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- OpenAI API ------------------------------------------------------------------
    @app.get("/v1/models", response_model=S.ModelList, tags=["openai"], responses=_RESPONSES,
             dependencies=[Depends(client_auth)])
    async def list_models() -> S.ModelList:
        return S.ModelList(data=[S.ModelCard(id=svc.model_name, created=svc.started)])

    def _check_limits(req: S.ChatCompletionRequest) -> int:
        st = settings
        if len(req.messages) > st.max_messages:
            raise ApiError(400, f"too many messages ({len(req.messages)} > {st.max_messages})", param="messages",
                           code="too_many_messages")
        for i, msg in enumerate(req.messages):
            if len(msg.text()) > st.max_message_chars:
                raise ApiError(400, f"message {i} is longer than {st.max_message_chars} characters",
                               param=f"messages.{i}.content", code="message_too_long")
        field = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        max_tokens = req.max_completion_tokens or req.max_tokens or st.default_max_tokens
        if max_tokens > st.max_tokens_limit:
            raise ApiError(400, f"{field} must be at most {st.max_tokens_limit}", param=field,
                           code="max_tokens_too_large")
        return max_tokens

    def _speculate(messages: list[dict], max_tokens: int, temperature: float, stop: list[str] | None,
                   stream: bool) -> asyncio.Task | None:
        """Start the upstream call for the unchanged request while detection runs.

        Only for backends whose async calls abort the upstream on cancellation (``supports_async``):
        an out-of-scope request then pays no detection latency; an in-scope one cancels the call
        before anything it produced is read. The pattern of running an input guardrail alongside
        the completion and cancelling on a hit follows OpenAI's cookbook "How to implement LLM
        guardrails" (2023).
        """
        backend = getattr(svc.guard, "backend", None)
        if not settings.speculative_upstream or not getattr(backend, "supports_async", False):
            return None
        kw = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop}
        if not stream:
            return asyncio.ensure_future(backend.achat(messages, **kw))

        async def open_first() -> tuple[Any, Any]:
            agen = backend.astream(messages, **kw)
            try:
                return agen, await agen.__anext__()
            except StopAsyncIteration:
                return agen, _END
            except BaseException:
                await agen.aclose()
                raise

        return asyncio.ensure_future(open_first())

    def _discard(task: asyncio.Task | None) -> None:
        """Cancel a speculative call that must not be used; close its stream if it already opened."""
        if task is None:
            return

        def done(t: asyncio.Task) -> None:
            if t.cancelled() or t.exception() is not None:
                return
            res = t.result()
            if isinstance(res, tuple):
                asyncio.ensure_future(res[0].aclose())

        svc.metrics.speculative.labels("cancelled").inc()
        task.cancel()
        task.add_done_callback(done)

    def _native_async(backend: Any, plan: _Plan) -> bool:
        """Call the upstream on the event loop (``achat``/``astream``) instead of in a worker thread.

        For HTTP upstreams this saves two thread hand-offs per request (the proxy's added latency is
        what the load benchmark measures); a prefilled request still takes the blocking path, since
        only in-process backends can prefill.
        """
        return bool(getattr(backend, "supports_async", False)) and not plan.prefill

    # -- output check (lethe.guard.output_check): the answer on its way out --------------
    def _output_check() -> Any:
        check = getattr(svc.guard, "output_check", None)
        return check if check is not None and getattr(check, "enabled", False) else None

    def _count_blocked(verdict: Any, plan: _Plan, stream: str) -> None:
        svc.metrics.output_blocked.labels(stream, str(verdict.reason), "triggered" if plan.triggered else "passed").inc()
        log.info("output check blocked an answer (%s, request %s)", verdict.reason, verdict.request_id)

    async def _check_answer(text: str, plan: _Plan, headers: dict) -> tuple[str, bool]:
        """A whole answer through the output check: the policy decline replaces it when it leaks."""
        check = _output_check()
        if check is None:
            return text, False
        try:
            verdict = await svc.run(check.check, text)
            decline = await svc.run(check.decline, verdict) if verdict.blocked else None
        except Exception as exc:
            mode = settings.fail_mode
            svc.metrics.failures.labels("output_check", mode).inc()
            log.error("output check failed (%s): %s; failing %s", type(exc).__name__, exc, mode)
            headers["x-lethe-output-blocked"] = "true" if mode == "closed" else "false"
            return (settings.decline_message, True) if mode == "closed" else (text, False)
        svc.metrics.output_check_seconds.labels("false").observe(verdict.seconds)
        headers["x-lethe-output-blocked"] = "true" if verdict.blocked else "false"
        if decline is None:
            return text, False
        _count_blocked(verdict, plan, "false")
        return decline, True

    async def _feed(scan: Any, piece: str | None) -> str:
        """A streamed piece through the output check (``None``: the end of the stream); a piece that
        completes a sentence to embed runs on a worker thread, any other costs microseconds."""
        try:
            if piece is None:
                return await svc.run(scan.finish)
            return await svc.run(scan.feed, piece) if scan.needs_embedding(piece) else scan.feed(piece)
        except Exception as exc:
            mode = settings.fail_mode
            svc.metrics.failures.labels("output_check", mode).inc()
            log.error("output check failed (%s): %s; failing %s", type(exc).__name__, exc, mode)
            return scan.fail(closed=mode == "closed")

    def _usable(plan: _Plan, messages: list[dict]) -> bool:
        return plan.decision in ("passed", "fail_open") and not plan.prefill and plan.messages == messages

    @app.post("/v1/chat/completions", tags=["openai"], responses={200: {"model": S.ChatCompletion}, **_RESPONSES},
              dependencies=[Depends(client_auth)])
    async def chat_completions(request: Request, req: S.ChatCompletionRequest) -> Response:
        rid = request.scope["state"]["request_id"]
        max_tokens = _check_limits(req)
        bad = _bad_unicode([(f"messages.{i}.content", m.text()) for i, m in enumerate(req.messages)]
                           + [(f"messages.{i}", json.dumps(m.model_dump(), ensure_ascii=False))
                              for i, m in enumerate(req.messages)])
        if bad is not None:
            raise ApiError(400, f"'{bad}' holds text that is not valid Unicode (a lone surrogate)", param=bad,
                           code="invalid_encoding")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        temperature = req.temperature if req.temperature is not None else 0.0
        svc.metrics.inflight.inc()
        spec = None
        try:
            spec = _speculate(messages, max_tokens, temperature, stop, bool(req.stream))
            plan = await svc.plan(messages, S.detection_view(req.messages))
            if spec is not None and not _usable(plan, messages):
                _discard(spec)
                spec = None
            headers = svc.headers(plan, rid)
            created = int(time.time())
            cid = f"chatcmpl-{rid}"
            if req.stream:
                return await _stream(plan, headers, cid, created, max_tokens, temperature, stop,
                                     bool(req.stream_options and req.stream_options.include_usage), spec)
            blocked = False
            if plan.decision == "fail_closed":
                text, usage = settings.decline_message, S.Usage()
            else:
                text, usage = await _upstream_chat(plan, max_tokens, temperature, stop, headers, spec)
                text, blocked = await _check_answer(text, plan, headers)
            spec = None
            finish = "content_filter" if blocked else "length" if usage.completion_tokens >= max_tokens else "stop"
            body = S.ChatCompletion(id=cid, created=created, model=svc.model_name, usage=usage,
                                    choices=[S.Choice(message=S.ResponseMessage(content=text), finish_reason=finish)])
            return JSONResponse(body.model_dump(), headers=headers)
        except BaseException:
            if spec is not None and not spec.done():
                svc.metrics.speculative.labels("abandoned").inc()
                spec.cancel()
            raise
        finally:
            svc.metrics.inflight.dec()

    async def _upstream_chat(plan: _Plan, max_tokens: int, temperature: float, stop: list[str] | None,
                             headers: dict, spec: asyncio.Task | None = None) -> tuple[str, S.Usage]:
        guard = svc.require_guard()
        t0 = time.perf_counter()
        try:
            with anyio.fail_after(settings.upstream_timeout_s):
                if spec is not None:
                    res = await spec
                    svc.metrics.speculative.labels("used").inc()
                elif _native_async(guard.backend, plan):
                    res = await guard.backend.achat(plan.messages, max_tokens=max_tokens, temperature=temperature,
                                                    stop=stop)
                else:
                    res = await svc.run(guard.backend.chat, plan.messages, max_tokens=max_tokens,
                                        temperature=temperature, prefill=plan.prefill, stop=stop)
        except Exception as exc:
            err = svc.upstream_error(exc)
            err.headers.update(headers)
            raise err from None
        svc.metrics.upstream_seconds.labels("false").observe(time.perf_counter() - t0)
        text = _finish(res.text) if plan.prefill else res.text
        pt, ct = res.prompt_tokens or 0, res.completion_tokens or 0
        return text, S.Usage(prompt_tokens=pt, completion_tokens=ct, total_tokens=pt + ct)

    async def _stream(plan: _Plan, headers: dict, cid: str, created: int, max_tokens: int, temperature: float,
                      stop: list[str] | None, include_usage: bool, spec: asyncio.Task | None = None) -> Response:
        model = svc.model_name

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None, choices: bool = True) -> bytes:
            obj: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
                                   if choices else []}
            if usage is not None:
                obj["usage"] = usage
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        sse_headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
        if plan.decision == "fail_closed":
            async def declined() -> AsyncIterator[bytes]:
                yield chunk({"role": "assistant", "content": ""})
                yield chunk({"content": settings.decline_message})
                yield chunk({}, "stop")
                if include_usage:
                    yield chunk({}, usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                                choices=False)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(declined(), media_type="text/event-stream", headers=sse_headers)

        guard = svc.require_guard()
        t0 = time.perf_counter()
        it: Iterator[str] = iter(())
        agen: Any = None

        def open_and_first() -> Any:
            nonlocal it
            it = iter(guard.backend.stream(plan.messages, max_tokens=max_tokens, temperature=temperature,
                                           prefill=plan.prefill, stop=stop))
            return next(it, _END)

        async def next_piece() -> Any:
            if agen is None:
                return await svc.run(next, it, _END)
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return _END

        async def close_upstream() -> None:
            if agen is not None:
                await agen.aclose()
                return
            close = getattr(it, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # still running in a worker thread (client went away)
                    pass

        try:
            with anyio.fail_after(settings.upstream_timeout_s):
                if spec is not None:
                    agen, first = await spec
                    svc.metrics.speculative.labels("used").inc()
                elif _native_async(guard.backend, plan):
                    agen = guard.backend.astream(plan.messages, max_tokens=max_tokens, temperature=temperature,
                                                 stop=stop)
                    first = await next_piece()
                else:
                    first = await svc.run(open_and_first)
        except Exception as exc:
            err = svc.upstream_error(exc)
            err.headers.update(headers)
            raise err from None
        svc.metrics.upstream_first_token_seconds.observe(time.perf_counter() - t0)

        async def events() -> AsyncIterator[bytes]:
            n = 0
            piece: Any = first
            tidy = bool(plan.prefill)  # the continuation of a prefilled reasoning: strip + capitalise its start
            ok = False
            check = _output_check()
            scan = check.scan() if check is not None else None
            try:
                yield chunk({"role": "assistant", "content": ""})
                while piece is not _END:
                    text = str(piece)
                    if tidy:
                        text = text.lstrip()
                        if text:
                            text = text[:1].upper() + text[1:]
                            tidy = False
                    if text:
                        n += 1
                        if scan is not None:
                            text = await _feed(scan, text)
                            if scan.blocked:
                                break
                        if text:
                            yield chunk({"content": text})
                    with anyio.fail_after(settings.upstream_timeout_s):
                        piece = await next_piece()
                ok = True
            except Exception as exc:
                err = svc.upstream_error(exc)
                yield b"data: " + json.dumps(error_body(err.message, err.type, code=err.code)).encode() + b"\n\n"
                return
            finally:
                svc.metrics.upstream_seconds.labels("true").observe(time.perf_counter() - t0)
                with anyio.CancelScope(shield=True):
                    await close_upstream()
            if ok:
                finish = "length" if n >= max_tokens else "stop"
                if scan is not None:
                    rest = "" if scan.blocked else await _feed(scan, None)
                    if rest:
                        yield chunk({"content": rest})
                    svc.metrics.output_check_seconds.labels("true").observe(scan.seconds)
                    if scan.blocked:
                        _count_blocked(scan.verdict, plan, "true")
                        yield chunk({"content": await svc.run(scan.decline_piece)})
                        finish = "content_filter"
                yield chunk({}, finish)
                if include_usage:
                    yield chunk({}, usage={"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n},
                                choices=False)
                yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=sse_headers)

    # -- admin API -------------------------------------------------------------------
    def _client(request: Request) -> str | None:
        return request.client.host if request.client else None

    def _out(r: Any) -> S.ForgetOut:
        return S.ForgetOut(id=r.id, kind=r.kind, subject=r.subject, policy=r.policy, n_prompts=r.n_prompts,
                           created_at=r.created_at, revoked_at=r.revoked_at, live=r.revoked_at is None)

    async def _audited(action: str, actor: str, request: Request, fn: Callable, **fields: Any) -> Any:
        try:
            result = await svc.run(fn)
        except Exception as exc:
            svc.metrics.admin.labels(action, "error").inc()
            svc.audit.write(action, actor, _client(request), "error", error=type(exc).__name__, **fields)
            raise
        return result

    @app.post("/admin/forget", status_code=201, response_model=S.ForgetOut, tags=["admin"], responses=_RESPONSES)
    async def admin_forget(request: Request, body: S.ForgetIn, actor: str = Depends(admin_auth)) -> S.ForgetOut:
        guard = svc.require_guard()
        rewriter = body.rewriter or settings.default_rewriter
        fields = {"kind": body.kind, "n_prompts": len(body.prompts)}
        req = await _audited(
            "forget.add", actor, request,
            lambda: guard.forget(list(body.prompts), kind=body.kind, subject=body.subject,
                                 entities=list(body.entities) if body.entities else None, policy=body.policy,
                                 progress=False, rewriter=rewriter),
            **fields,
        )
        svc.metrics.admin.labels("forget.add", "ok").inc()
        svc.audit.write("forget.add", actor, _client(request), "ok", request_id=req.id, **fields)
        return _out(req)

    @app.get("/admin/forget", response_model=S.ForgetList, tags=["admin"], responses=_RESPONSES)
    async def admin_list(request: Request, include_revoked: bool = False,
                         actor: str = Depends(admin_auth)) -> S.ForgetList:
        guard = svc.require_guard()
        reqs = await _audited("forget.list", actor, request, lambda: guard.requests(include_revoked=include_revoked))
        svc.metrics.admin.labels("forget.list", "ok").inc()
        svc.audit.write("forget.list", actor, _client(request), "ok", include_revoked=include_revoked,
                        count=len(reqs))
        return S.ForgetList(data=[_out(r) for r in reqs])

    @app.delete("/admin/forget/{request_id}", response_model=S.RevokeOut, tags=["admin"], responses=_RESPONSES)
    async def admin_revoke(request: Request, request_id: str, actor: str = Depends(admin_auth)) -> S.RevokeOut:
        guard = svc.require_guard()
        ok = await _audited("forget.revoke", actor, request, lambda: guard.revoke(request_id),
                            request_id=request_id[:64])
        svc.metrics.admin.labels("forget.revoke", "ok" if ok else "not_found").inc()
        svc.audit.write("forget.revoke", actor, _client(request), "ok" if ok else "not_found",
                        request_id=request_id[:64])
        if not ok:
            raise ApiError(404, "no live forget request with this id", param="request_id", code="not_found")
        return S.RevokeOut(id=request_id, revoked=True)

    @app.get("/admin/forget/{request_id}/verify", tags=["admin"], responses=_RESPONSES)
    async def admin_verify(request: Request, request_id: str, n: int = 12, generate: bool = False, seed: int = 0,
                           actor: str = Depends(admin_auth)) -> JSONResponse:
        """The receipt of one request (``lethe.guard.verify``): the live guard probed with variants of
        its stored rewrites; detection (and with ``generate`` leak) rate per family, configuration."""
        from lethe.guard.verify import verify

        guard = svc.require_guard()
        if not 1 <= n <= 200:
            raise ApiError(400, "n must be between 1 and 200", param="n", code="invalid_value")
        if await svc.run(guard.store.get_request, request_id) is None:
            svc.metrics.admin.labels("forget.verify", "not_found").inc()
            svc.audit.write("forget.verify", actor, _client(request), "not_found", request_id=request_id[:64])
            raise ApiError(404, "no forget request with this id", param="request_id", code="not_found")
        receipt = await _audited("forget.verify", actor, request,
                                 lambda: verify(guard, request_id, n=n, generate=generate, seed=seed),
                                 request_id=request_id[:64])
        svc.metrics.admin.labels("forget.verify", "ok").inc()
        svc.audit.write("forget.verify", actor, _client(request), "ok", request_id=request_id[:64])
        return JSONResponse(_jsonable(receipt))

    @app.post("/admin/check", response_model=S.CheckOut, tags=["admin"], responses=_RESPONSES)
    async def admin_check(request: Request, body: S.CheckIn, actor: str = Depends(admin_auth)) -> S.CheckOut:
        guard = svc.require_guard()
        arg: Any = body.query if body.query is not None else (
            S.detection_view(body.messages or [], always=True))
        det = await _audited("check", actor, request, lambda: guard.detect(arg))
        svc.metrics.admin.labels("check", "ok").inc()
        svc.audit.write("check", actor, _client(request), "ok", triggered=bool(det.triggered))
        explain = getattr(det, "explain", None)
        comps = {str(k): float(v) for k, v in (getattr(det, "components", None) or {}).items()
                 if isinstance(v, int | float | np.generic) and np.isfinite(float(v))}
        return S.CheckOut(
            triggered=bool(det.triggered), score=float(det.score), request_id=getattr(det, "request_id", None),
            kind=getattr(det, "kind", None), components=comps,
            matched=[_jsonable(x) for x in (getattr(det, "matched", None) or []) if isinstance(x, dict)],
            explanation=explain() if callable(explain) else None,
        )

    @app.post("/admin/calibrate", response_model=S.CalibrateOut, tags=["admin"], responses=_RESPONSES)
    async def admin_calibrate(request: Request, body: S.CalibrateIn,
                              actor: str = Depends(admin_auth)) -> S.CalibrateOut:
        guard = svc.require_guard()
        fields = {"target_fpr": body.target_fpr, "n_benign": len(body.benign) if body.benign else None}
        tau = await _audited("calibrate", actor, request,
                             lambda: guard.calibrate(list(body.benign) if body.benign else None,
                                                     target_fpr=body.target_fpr), **fields)
        svc.metrics.admin.labels("calibrate", "ok").inc()
        svc.audit.write("calibrate", actor, _client(request), "ok", tau=float(tau), **fields)
        return S.CalibrateOut(tau=float(tau), target_fpr=body.target_fpr)

    return app


def wait_ready(app: FastAPI, timeout: float | None = None) -> bool:
    """Block until the app's guard has loaded (tests, benchmarks)."""
    return app.state.service.wait_loaded(timeout)


__all__ = ["create_app", "ApiError", "wait_ready"]
