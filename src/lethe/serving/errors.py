"""OpenAI-style errors of the service: ``{"error": {"message", "type", "param", "code"}}`` everywhere.

:class:`ApiError` is what routes raise; :func:`install` maps it, FastAPI's validation errors,
Starlette's HTTP errors, bad Unicode, :class:`lethe.errors.LetheError` and anything unexpected to
such bodies, each naming the field at fault in ``param`` where there is one.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lethe.errors import BackendError, EmptyStoreError, LetheError
from lethe.serving import schemas as S

log = logging.getLogger("lethe.serving")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(exc: ApiError, extra_headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                        headers={**exc.headers, **(extra_headers or {})})


#: the error responses every route documents in the OpenAPI schema
RESPONSES: dict[int | str, dict[str, Any]] = {
    c: {"model": S.ErrorResponse} for c in (400, 401, 403, 404, 413, 422, 429, 502, 503, 504)
}


def field_path(loc: tuple | list) -> str:
    """A validation error's location as a dotted field path (``messages.0.role``)."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # drop pydantic's union-branch labels such as 'str' or 'list[TextPart]'
    parts = [p for p in parts if not (p.startswith(("list[", "function-")) or p in ("str", "int", "float", "bool"))]
    return ".".join(parts) or "body"


def upstream_summary(exc: BaseException) -> str:
    """What a client may learn of an upstream failure: its HTTP status or the error's class, never
    its text (which can carry internal hosts, paths or the upstream's own messages)."""
    for e in (exc, exc.__cause__, exc.__context__):
        status = getattr(e, "status_code", None) or getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int):
            return f"HTTP {status}"
    inner = exc.__cause__ or exc.__context__
    return type(inner if isinstance(exc, BackendError) and inner is not None else exc).__name__


def bad_unicode(texts: list[tuple[str, str]]) -> str | None:
    """The field of the first text that cannot be encoded as UTF-8 (a lone surrogate), or None."""
    for param, text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return param
    return None


def install(app: FastAPI) -> None:
    """Register the handlers that give every error an OpenAI-style body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            detail = ctx.get("error", first.get("msg"))
            return error_response(ApiError(400, f"malformed JSON body: {detail}", param="body",
                                           code="invalid_json"))
        param = field_path(first.get("loc", ()))
        if first.get("type") == "string_unicode":  # a lone surrogate: the client's encoding, not a schema error
            return error_response(ApiError(400, f"'{param}' holds text that is not valid Unicode (a lone "
                                           "surrogate)", param=param, code="invalid_encoding"))
        msg = str(first.get("msg", "invalid value"))
        return error_response(ApiError(422, f"invalid '{param}': {msg}", param=param, code="invalid_value"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "api_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(UnicodeError)
    async def _encoding(request: Request, exc: UnicodeError) -> JSONResponse:
        return error_response(ApiError(400, "the request holds text that is not valid Unicode (e.g. a lone "
                                       "surrogate)", code="invalid_encoding"))

    @app.exception_handler(LetheError)
    async def _lethe(request: Request, exc: LetheError) -> JSONResponse:
        status = 409 if isinstance(exc, EmptyStoreError) else 400
        return error_response(ApiError(status, str(exc).splitlines()[0] if str(exc) else type(exc).__name__))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(ApiError(500, "internal error (see the server log)", "api_error"))
