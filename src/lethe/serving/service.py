"""Process-wide state of one app: the guard (loaded lazily), keys, limits, metrics, audit log.

The guard's decision about a request is the guard's own (:meth:`lethe.guard.Guard.aplan`, a
:class:`lethe.guard.pipeline.GuardPlan`); the service runs it on its bounded thread pool, counts
it, and turns it into ``x-lethe-*`` headers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from fastapi.responses import JSONResponse
from prometheus_client import Counter

from lethe.errors import BackendError
from lethe.guard.pipeline import GuardPlan
from lethe.serving.auth import KeySet, bearer, fingerprint
from lethe.serving.errors import ApiError, error_response, upstream_summary
from lethe.serving.observability import AuditLog, Metrics
from lethe.serving.ratelimit import Buckets, retry_after
from lethe.serving.settings import ServeSettings

log = logging.getLogger("lethe.serving")
UNLIMITED_ROUTES = ("/healthz", "/readyz", "/metrics")


def _is_guard(obj: Any) -> bool:
    return hasattr(obj, "plan") and hasattr(obj, "detect")


def header_safe(value: object) -> str:
    return str(value).encode("ascii", "replace").decode()[:200]


class Service:
    """The guard behind one app, loaded in the background when given as a factory."""

    def __init__(self, guard_or_factory: Any, settings: ServeSettings) -> None:
        from lethe.config import lethe_home

        self.settings = settings
        self.metrics = Metrics()
        self.admin_keys = KeySet.from_sources(settings.admin_key_env, settings.admin_key_file)
        self.client_keys = KeySet.from_sources(settings.client_keys_env, settings.client_keys_file, split=True)
        audit_path = Path(settings.audit_log) if settings.audit_log else lethe_home(settings.home) / "audit.jsonl"
        self.audit = AuditLog(audit_path)
        self.guard: Any = guard_or_factory if _is_guard(guard_or_factory) else None
        self._factory: Callable[[], Any] | None = None if self.guard is not None else guard_or_factory
        self.load_error: str | None = None
        self.limiter = anyio.CapacityLimiter(settings.threads)
        self.rate_key = Buckets(settings.rate_limit_per_key, settings.rate_limit_burst)
        self.rate_client = Buckets(settings.rate_limit_per_client, settings.rate_limit_burst)
        self.rate_limited = Counter("lethe_rate_limited", "requests refused with 429", ["scope"],
                                    registry=self.metrics.registry)
        self.started = int(time.time())
        self._loader: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------
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
        """``fn`` on the bounded thread pool. A timed-out or disconnected call returns at once
        (``abandon_on_cancel``); its thread finishes alone."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self.limiter,
                                              abandon_on_cancel=True)

    @property
    def model_name(self) -> str:
        if self.settings.model_name:
            return self.settings.model_name
        backend = getattr(self.guard, "backend", None)
        return str(getattr(backend, "model", None) or "lethe-guarded")

    # -- the guard's decision -----------------------------------------------------------
    async def plan(self, messages: list[dict], read: list[dict] | None = None) -> GuardPlan:
        """The guard's plan for ``messages`` (what goes upstream), counted; ``read``, when given, is
        what detection reads instead: the request as the client sent it, names and tool calls included.
        A failing guard gives the plan of ``fail_mode`` (``lethe.guard.pipeline.failed_plan``)."""
        guard = self.require_guard()
        m = self.metrics
        t0 = time.perf_counter()
        plan = await guard.aplan(messages, read=read, fail_mode=self.settings.fail_mode,
                                 decline=self.settings.decline_message, run=self.run)
        if plan.failed:
            m.failures.labels("guard", plan.fail_mode).inc()
            m.decisions.labels(plan.decision).inc()
            return plan
        detect_s = plan.timings.get("detect_s")
        m.detection_seconds.observe(float(detect_s) if detect_s is not None else time.perf_counter() - t0)
        guide_s = plan.timings.get("guide_s")
        if plan.triggered and guide_s is not None:
            m.guider_seconds.observe(float(guide_s))
        m.decisions.labels(plan.decision).inc()
        return plan

    def headers(self, plan: GuardPlan, request_id: str) -> dict[str, str]:
        h = {
            "x-lethe-request-id": request_id,
            # a failed guard decided nothing: "unknown", and the mode it failed in says what was done
            "x-lethe-triggered": "unknown" if plan.failed else "true" if plan.triggered else "false",
            "x-lethe-decision": plan.decision,
        }
        if plan.fail_mode is not None:
            h["x-lethe-fail-mode"] = plan.fail_mode
        if plan.score is not None:
            h["x-lethe-score"] = f"{plan.score:.4f}"
        if plan.policy:
            h["x-lethe-policy"] = header_safe(plan.policy)
        if plan.forget_request:
            h["x-lethe-forget-request"] = header_safe(plan.forget_request)
        return h

    # -- failures and limits ------------------------------------------------------------
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
        return ApiError(502, f"the upstream model failed ({upstream_summary(exc)}; see the server log)",
                        "api_error", code="upstream_error")

    def rate_limit(self, scope: dict, route: str) -> JSONResponse | None:
        """429 when the request's API key or client address has used up its bucket (``ratelimit``)."""
        if route in UNLIMITED_ROUTES or not (self.rate_key.enabled or self.rate_client.enabled):
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
                return error_response(ApiError(429, f"rate limit exceeded for {what}; retry after "
                                               f"{retry_after(wait)} s", "rate_limit_error",
                                               code="rate_limit_exceeded",
                                               headers={"retry-after": retry_after(wait)}))
        return None
