"""The OpenAI-compatible routes: ``POST /v1/chat/completions`` (stream and not) and ``GET /v1/models``.

Each request goes plan → call → finish through the guard (``Guard.aplan``, ``Guard.acall``,
``Guard.acall_stream``: ``lethe.guard.pipeline``); this module adds what belongs to the service:
request limits, the speculative call, upstream timeouts and errors (502/504, an SSE error event
mid-stream), the output check on the way out, ``x-lethe-*`` headers and the OpenAI body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lethe.guard.pipeline import GuardPlan, Reply, finish
from lethe.serving import answer_check, speculation
from lethe.serving import schemas as S
from lethe.serving.deps import Auth
from lethe.serving.errors import RESPONSES, ApiError, bad_unicode, error_body
from lethe.serving.service import Service

END = speculation.END


def check_limits(svc: Service, req: S.ChatCompletionRequest) -> int:
    """The request's ``max_tokens``, after the message count, length and token limits (400 naming the field)."""
    st = svc.settings
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


def router(svc: Service, auth: Auth) -> APIRouter:
    r = APIRouter(tags=["openai"], dependencies=[Depends(auth.client)])
    settings = svc.settings

    @r.get("/v1/models", response_model=S.ModelList, responses=RESPONSES)
    async def list_models() -> S.ModelList:
        return S.ModelList(data=[S.ModelCard(id=svc.model_name, created=svc.started)])

    @r.post("/v1/chat/completions", responses={200: {"model": S.ChatCompletion}, **RESPONSES})
    async def chat_completions(request: Request, req: S.ChatCompletionRequest) -> Response:
        rid = request.scope["state"]["request_id"]
        max_tokens = check_limits(svc, req)
        bad = bad_unicode([(f"messages.{i}.content", m.text()) for i, m in enumerate(req.messages)]
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
            spec = speculation.start(svc, messages, max_tokens, temperature, stop, bool(req.stream))
            plan = await svc.plan(messages, S.detection_view(req.messages))
            if spec is not None and not speculation.usable(plan, messages):
                speculation.discard(svc, spec)
                spec = None
            headers = svc.headers(plan, rid)
            created = int(time.time())
            cid = f"chatcmpl-{rid}"
            if req.stream:
                return await _stream(plan, headers, cid, created, max_tokens, temperature, stop,
                                     bool(req.stream_options and req.stream_options.include_usage), spec)
            blocked = False
            if plan.decision == "fail_closed":
                text, usage = plan.response or settings.decline_message, S.Usage()
            else:
                text, usage = await _upstream_chat(plan, max_tokens, temperature, stop, headers, spec)
                text, blocked = await answer_check.check_answer(svc, text, plan, headers)
            spec = None
            finish_reason = ("content_filter" if blocked else "length" if usage.completion_tokens >= max_tokens
                             else "stop")
            body = S.ChatCompletion(id=cid, created=created, model=svc.model_name, usage=usage,
                                    choices=[S.Choice(message=S.ResponseMessage(content=text),
                                                      finish_reason=finish_reason)])
            return JSONResponse(body.model_dump(), headers=headers)
        except BaseException:
            if spec is not None and not spec.done():
                svc.metrics.speculative.labels("abandoned").inc()
                spec.cancel()
            raise
        finally:
            svc.metrics.inflight.dec()

    async def _upstream_chat(plan: GuardPlan, max_tokens: int, temperature: float, stop: list[str] | None,
                             headers: dict, spec: asyncio.Task | None = None) -> tuple[str, S.Usage]:
        guard = svc.require_guard()
        t0 = time.perf_counter()
        try:
            with anyio.fail_after(settings.upstream_timeout_s):
                if spec is not None:
                    res = await spec
                    svc.metrics.speculative.labels("used").inc()
                    reply = Reply(finish(plan, res.text), res.prompt_tokens or 0, res.completion_tokens or 0)
                else:
                    reply = await guard.acall(plan, max_tokens, temperature, stop, run=svc.run)
        except Exception as exc:
            err = svc.upstream_error(exc)
            err.headers.update(headers)
            raise err from None
        svc.metrics.upstream_seconds.labels("false").observe(time.perf_counter() - t0)
        pt, ct = reply.prompt_tokens, reply.completion_tokens
        return reply.text, S.Usage(prompt_tokens=pt, completion_tokens=ct, total_tokens=pt + ct)

    async def _stream(plan: GuardPlan, headers: dict, cid: str, created: int, max_tokens: int, temperature: float,
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
                yield chunk({"content": plan.response or settings.decline_message})
                yield chunk({}, "stop")
                if include_usage:
                    yield chunk({}, usage={"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
                                choices=False)
                yield b"data: [DONE]\n\n"

            return StreamingResponse(declined(), media_type="text/event-stream", headers=sse_headers)

        guard = svc.require_guard()
        t0 = time.perf_counter()
        agen: Any = None

        async def next_piece() -> Any:
            try:
                return await agen.__anext__()
            except StopAsyncIteration:
                return END

        try:
            with anyio.fail_after(settings.upstream_timeout_s):
                if spec is not None:
                    agen, first = await spec
                    svc.metrics.speculative.labels("used").inc()
                else:  # the guard's stream: a prefilled continuation comes tidied (pipeline.finish_stream)
                    agen = guard.acall_stream(plan, max_tokens, temperature, stop, run=svc.run)
                    first = await next_piece()
        except Exception as exc:
            err = svc.upstream_error(exc)
            err.headers.update(headers)
            raise err from None
        svc.metrics.upstream_first_token_seconds.observe(time.perf_counter() - t0)

        async def events() -> AsyncIterator[bytes]:
            n = 0
            piece: Any = first
            ok = False
            check = answer_check.output_check(svc)
            scan = check.scan() if check is not None else None
            try:
                yield chunk({"role": "assistant", "content": ""})
                while piece is not END:
                    text = str(piece)
                    if text:
                        n += 1
                        if scan is not None:
                            text = await answer_check.feed(svc, scan, text)
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
                    await agen.aclose()
            if ok:
                finish_reason = "length" if n >= max_tokens else "stop"
                if scan is not None:
                    rest = "" if scan.blocked else await answer_check.feed(svc, scan, None)
                    if rest:
                        yield chunk({"content": rest})
                    svc.metrics.output_check_seconds.labels("true").observe(scan.seconds)
                    if scan.blocked:
                        answer_check.count_blocked(svc, scan.verdict, plan, "true")
                        yield chunk({"content": await svc.run(scan.decline_piece)})
                        finish_reason = "content_filter"
                yield chunk({}, finish_reason)
                if include_usage:
                    yield chunk({}, usage={"prompt_tokens": 0, "completion_tokens": n, "total_tokens": n},
                                choices=False)
                yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=sse_headers)

    return r
