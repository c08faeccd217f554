"""The speculative upstream call (opt-in, ``serve.speculative_upstream``).

The upstream call for the unchanged request starts while detection runs. Only for backends whose
async calls abort the upstream on cancellation (``supports_async``): an out-of-scope request then
pays no detection latency; an in-scope one cancels the call before anything it produced is read.
The pattern of running an input guardrail alongside the completion and cancelling on a hit follows
OpenAI's cookbook "How to implement LLM guardrails" (2023).
"""

from __future__ import annotations

import asyncio
from typing import Any

from lethe.guard.pipeline import GuardPlan
from lethe.serving.service import Service

END = object()  # the end of an upstream stream


def start(svc: Service, messages: list[dict], max_tokens: int, temperature: float, stop: list[str] | None,
          stream: bool) -> asyncio.Task | None:
    """The task of the speculative call (``achat``, or ``astream`` opened with its first piece), or
    None when speculation is off or the backend cannot be cancelled."""
    backend = getattr(svc.guard, "backend", None)
    if not svc.settings.speculative_upstream or not getattr(backend, "supports_async", False):
        return None
    kw = {"max_tokens": max_tokens, "temperature": temperature, "stop": stop}
    if not stream:
        return asyncio.ensure_future(backend.achat(messages, **kw))

    async def open_first() -> tuple[Any, Any]:
        agen = backend.astream(messages, **kw)
        try:
            return agen, await agen.__anext__()
        except StopAsyncIteration:
            return agen, END
        except BaseException:
            await agen.aclose()
            raise

    return asyncio.ensure_future(open_first())


def usable(plan: GuardPlan, messages: list[dict]) -> bool:
    """Whether the speculative call is the one the plan makes: the request passed unchanged."""
    return plan.decision in ("passed", "fail_open") and not plan.prefill and plan.messages == messages


def discard(svc: Service, task: asyncio.Task | None) -> None:
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
