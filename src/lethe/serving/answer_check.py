"""The output check (``lethe.guard.output_check``) on the proxy's answers on their way out.

A failing check follows ``serve.fail_mode``: closed declines, open lets the answer through.
"""

from __future__ import annotations

import logging
from typing import Any

from lethe.guard.pipeline import GuardPlan
from lethe.serving.service import Service

log = logging.getLogger("lethe.serving")


def output_check(svc: Service) -> Any:
    """The guard's output check when it is on, else None."""
    check = getattr(svc.guard, "output_check", None)
    return check if check is not None and getattr(check, "enabled", False) else None


def count_blocked(svc: Service, verdict: Any, plan: GuardPlan, stream: str) -> None:
    svc.metrics.output_blocked.labels(stream, str(verdict.reason), "triggered" if plan.triggered else "passed").inc()
    log.info("output check blocked an answer (%s, request %s)", verdict.reason, verdict.request_id)


def _failed(svc: Service, exc: Exception) -> str:
    mode = svc.settings.fail_mode
    svc.metrics.failures.labels("output_check", mode).inc()
    log.error("output check failed (%s): %s; failing %s", type(exc).__name__, exc, mode)
    return mode


async def check_answer(svc: Service, text: str, plan: GuardPlan, headers: dict) -> tuple[str, bool]:
    """A whole answer through the output check: the policy decline replaces it when it leaks."""
    check = output_check(svc)
    if check is None:
        return text, False
    try:
        verdict = await svc.run(check.check, text)
        decline = await svc.run(check.decline, verdict) if verdict.blocked else None
    except Exception as exc:
        mode = _failed(svc, exc)
        headers["x-lethe-output-blocked"] = "true" if mode == "closed" else "false"
        return (svc.settings.decline_message, True) if mode == "closed" else (text, False)
    svc.metrics.output_check_seconds.labels("false").observe(verdict.seconds)
    headers["x-lethe-output-blocked"] = "true" if verdict.blocked else "false"
    if decline is None:
        return text, False
    count_blocked(svc, verdict, plan, "false")
    return decline, True


async def feed(svc: Service, scan: Any, piece: str | None) -> str:
    """A streamed piece through the output check (``None``: the end of the stream); a piece that
    completes a sentence to embed runs on a worker thread, any other costs microseconds."""
    try:
        if piece is None:
            return await svc.run(scan.finish)
        return await svc.run(scan.feed, piece) if scan.needs_embedding(piece) else scan.feed(piece)
    except Exception as exc:
        return scan.fail(closed=_failed(svc, exc) == "closed")
