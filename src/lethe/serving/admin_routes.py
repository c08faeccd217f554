"""Admin routes (``/admin/...``, admin key required): add, list, revoke and verify forget requests,
dry-run detection, calibrate tau. Every call is audited (``observability.AuditLog``) and counted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from lethe.serving import schemas as S
from lethe.serving.deps import Auth, client_address
from lethe.serving.errors import RESPONSES, ApiError
from lethe.serving.service import Service


def jsonable(x: Any) -> Any:
    """``x`` as plain JSON values (numpy scalars unwrapped, non-finite floats and embeddings dropped)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return None  # embeddings are not returned
    if isinstance(x, float):
        return x if np.isfinite(x) else None
    if isinstance(x, str | int | bool) or x is None:
        return x
    return str(x)


def router(svc: Service, auth: Auth) -> APIRouter:
    r = APIRouter(tags=["admin"])
    settings = svc.settings

    def _out(r: Any) -> S.ForgetOut:
        return S.ForgetOut(id=r.id, kind=r.kind, subject=r.subject, policy=r.policy, n_prompts=r.n_prompts,
                           created_at=r.created_at, revoked_at=r.revoked_at, live=r.revoked_at is None)

    async def _audited(action: str, actor: str, request: Request, fn: Callable, **fields: Any) -> Any:
        try:
            result = await svc.run(fn)
        except Exception as exc:
            svc.metrics.admin.labels(action, "error").inc()
            svc.audit.write(action, actor, client_address(request), "error", error=type(exc).__name__, **fields)
            raise
        return result

    @r.post("/admin/forget", status_code=201, response_model=S.ForgetOut, responses=RESPONSES)
    async def admin_forget(request: Request, body: S.ForgetIn, actor: str = Depends(auth.admin)) -> S.ForgetOut:
        guard = svc.require_guard()
        rewriter = body.rewriter or settings.default_rewriter
        fields = {"kind": body.kind, "n_prompts": len(body.prompts), "pack": body.pack}
        req = await _audited(
            "forget.add", actor, request,
            lambda: guard.forget(list(body.prompts), kind=body.kind, subject=body.subject,
                                 entities=list(body.entities) if body.entities else None, policy=body.policy,
                                 progress=False, rewriter=rewriter, describe=body.describe, expand=body.expand,
                                 pack=body.pack),
            **fields,
        )
        svc.metrics.admin.labels("forget.add", "ok").inc()
        svc.audit.write("forget.add", actor, client_address(request), "ok", request_id=req.id, **fields)
        return _out(req)

    @r.get("/admin/forget", response_model=S.ForgetList, responses=RESPONSES)
    async def admin_list(request: Request, include_revoked: bool = False,
                         actor: str = Depends(auth.admin)) -> S.ForgetList:
        guard = svc.require_guard()
        reqs = await _audited("forget.list", actor, request, lambda: guard.requests(include_revoked=include_revoked))
        svc.metrics.admin.labels("forget.list", "ok").inc()
        svc.audit.write("forget.list", actor, client_address(request), "ok", include_revoked=include_revoked,
                        count=len(reqs))
        return S.ForgetList(data=[_out(r) for r in reqs])

    @r.get("/admin/packs", response_model=S.PackList, responses=RESPONSES)
    async def admin_packs(actor: str = Depends(auth.admin)) -> S.PackList:
        """The shipped scope packs a forget request can add (``pack``)."""
        from lethe.packs import PACKS, pack_areas

        return S.PackList(data=[S.PackOut(name=p.name, kind=p.kind, describe=p.describe, areas=pack_areas(p.name))
                                for p in PACKS.values()])

    @r.delete("/admin/forget/{request_id}", response_model=S.RevokeOut, responses=RESPONSES)
    async def admin_revoke(request: Request, request_id: str, actor: str = Depends(auth.admin)) -> S.RevokeOut:
        guard = svc.require_guard()
        ok = await _audited("forget.revoke", actor, request, lambda: guard.revoke(request_id),
                            request_id=request_id[:64])
        svc.metrics.admin.labels("forget.revoke", "ok" if ok else "not_found").inc()
        svc.audit.write("forget.revoke", actor, client_address(request), "ok" if ok else "not_found",
                        request_id=request_id[:64])
        if not ok:
            raise ApiError(404, "no live forget request with this id", param="request_id", code="not_found")
        return S.RevokeOut(id=request_id, revoked=True)

    @r.get("/admin/forget/{request_id}/verify", responses=RESPONSES)
    async def admin_verify(request: Request, request_id: str, n: int = 12, generate: bool = False, seed: int = 0,
                           actor: str = Depends(auth.admin)) -> JSONResponse:
        """The receipt of one request (``lethe.guard.verify``): the live guard probed with variants of
        its stored rewrites; detection (and with ``generate`` leak) rate per family, configuration."""
        from lethe.guard.verify import verify

        guard = svc.require_guard()
        if not 1 <= n <= 200:
            raise ApiError(400, "n must be between 1 and 200", param="n", code="invalid_value")
        if await svc.run(guard.store.get_request, request_id) is None:
            svc.metrics.admin.labels("forget.verify", "not_found").inc()
            svc.audit.write("forget.verify", actor, client_address(request), "not_found", request_id=request_id[:64])
            raise ApiError(404, "no forget request with this id", param="request_id", code="not_found")
        receipt = await _audited("forget.verify", actor, request,
                                 lambda: verify(guard, request_id, n=n, generate=generate, seed=seed),
                                 request_id=request_id[:64])
        svc.metrics.admin.labels("forget.verify", "ok").inc()
        svc.audit.write("forget.verify", actor, client_address(request), "ok", request_id=request_id[:64])
        return JSONResponse(jsonable(receipt))

    @r.post("/admin/check", response_model=S.CheckOut, responses=RESPONSES)
    async def admin_check(request: Request, body: S.CheckIn, actor: str = Depends(auth.admin)) -> S.CheckOut:
        guard = svc.require_guard()
        arg: Any = body.query if body.query is not None else (
            S.detection_view(body.messages or [], always=True))
        det = await _audited("check", actor, request, lambda: guard.detect(arg))
        svc.metrics.admin.labels("check", "ok").inc()
        svc.audit.write("check", actor, client_address(request), "ok", triggered=bool(det.triggered))
        explain = getattr(det, "explain", None)
        comps = {str(k): float(v) for k, v in (getattr(det, "components", None) or {}).items()
                 if isinstance(v, int | float | np.generic) and np.isfinite(float(v))}
        return S.CheckOut(
            triggered=bool(det.triggered), score=float(det.score), request_id=getattr(det, "request_id", None),
            kind=getattr(det, "kind", None), components=comps,
            matched=[jsonable(x) for x in (getattr(det, "matched", None) or []) if isinstance(x, dict)],
            explanation=explain() if callable(explain) else None,
        )

    @r.post("/admin/calibrate", response_model=S.CalibrateOut, responses=RESPONSES)
    async def admin_calibrate(request: Request, body: S.CalibrateIn,
                              actor: str = Depends(auth.admin)) -> S.CalibrateOut:
        guard = svc.require_guard()
        fields = {"target_fpr": body.target_fpr, "n_benign": len(body.benign) if body.benign else None}
        tau = await _audited("calibrate", actor, request,
                             lambda: guard.calibrate(list(body.benign) if body.benign else None,
                                                     target_fpr=body.target_fpr), **fields)
        svc.metrics.admin.labels("calibrate", "ok").inc()
        svc.audit.write("calibrate", actor, client_address(request), "ok", tau=float(tau), **fields)
        return S.CalibrateOut(tau=float(tau), target_fpr=body.target_fpr)

    return r
