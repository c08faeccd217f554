"""FastAPI dependencies that check bearer keys: the client API's and the admin API's.

Keys are checked by :mod:`lethe.serving.auth`; every refused admin call is audited (who: the
key's fingerprint or ``anonymous``, from where, why) and counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lethe.serving.auth import bearer, fingerprint
from lethe.serving.errors import ApiError
from lethe.serving.service import Service


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass(frozen=True)
class Auth:
    client: Callable[..., None]  # /v1: a client key (or the admin key) when client keys are configured
    admin: Callable[..., str]  # /admin: the admin key; returns the actor (the key's fingerprint)


def auth_dependencies(svc: Service) -> Auth:
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
            svc.metrics.admin.labels("auth", code).inc()
            svc.audit.write("auth.admin", fingerprint(key) if key else "anonymous", client_address(request),
                            "denied", error=code, status=status)
            return ApiError(status, message, type_, code=code)

        if not svc.admin_keys.enabled:
            raise denied(403, f"the admin API is disabled: set {svc.settings.admin_key_env} or admin_key_file",
                         "permission_error", "admin_disabled")
        if key is None:
            raise denied(401, "missing admin key: send 'Authorization: Bearer <admin key>'",
                         "authentication_error", "missing_api_key")
        if not svc.admin_keys.check(key):
            if svc.client_keys.enabled and svc.client_keys.check(key):
                raise denied(403, "this key may not use the admin API", "permission_error", "forbidden")
            raise denied(401, "invalid admin key", "authentication_error", "invalid_api_key")
        return fingerprint(key)

    return Auth(client_auth, admin_auth)
