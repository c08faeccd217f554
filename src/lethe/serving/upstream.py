"""A plain OpenAI-compatible server around any :class:`ChatBackend`, with no guard.

Used as the upstream in tests and in ``benchmarks/bench_proxy.py`` (the embedded
default model served over HTTP, the way vLLM or ``llama.cpp`` server would be)::

    python -m lethe.serving.upstream --port 8081            # embedded default model

Like vLLM and llama.cpp's server it stops generating when the client disconnects (checked
between pieces, non-streaming requests included), so a caller that cancels a request (the
proxy's speculative upstream call for an in-scope query) frees the model at once.
``app.state.aborted`` counts such requests.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lethe.backends.base import ChatBackend
from lethe.serving import schemas as S


def create_upstream_app(backend: ChatBackend, model_name: str = "upstream", threads: int = 16) -> FastAPI:
    app = FastAPI(title="plain upstream")
    limiter = anyio.CapacityLimiter(threads)
    app.state.aborted = 0

    async def run(fn: Any, *a: Any, **kw: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*a, **kw), limiter=limiter)

    @app.exception_handler(Exception)
    async def _error(request: Any, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": {"message": f"upstream failure: {exc}", "type": "api_error",
                                       "param": None, "code": None}}, status_code=500)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "lethe"}]}

    @app.post("/v1/chat/completions")
    async def chat(req: S.ChatCompletionRequest, request: Request) -> Any:
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        max_tokens = req.max_completion_tokens or req.max_tokens or 256
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        temperature = req.temperature or 0.0
        cid, created = f"chatcmpl-{uuid.uuid4().hex[:16]}", int(time.time())
        it = iter(backend.stream(messages, max_tokens=max_tokens, temperature=temperature, stop=stop))
        end = object()

        async def pieces() -> AsyncIterator[str]:
            """The backend's pieces; stops (and closes the generator) once the client is gone."""
            try:
                while (piece := await run(next, it, end)) is not end:
                    if await request.is_disconnected():
                        app.state.aborted += 1
                        return
                    yield piece
            finally:
                close = getattr(it, "close", None)
                if callable(close):
                    await run(close)

        if not req.stream:
            parts = [p async for p in pieces()]
            text, ct = "".join(parts), len(parts)
            count = getattr(backend, "count_prompt_tokens", None)
            pt = count(messages) if callable(count) else sum(len(m["content"].split()) for m in messages)
            return JSONResponse({
                "id": cid, "object": "chat.completion", "created": created, "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if ct >= max_tokens else "stop"}],
                "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
            })

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            return ("data: " + json.dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                           "model": model_name, "choices": [{"index": 0, "delta": delta,
                                                                             "finish_reason": finish}]})
                    + "\n\n").encode()

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            async for piece in pieces():
                yield chunk({"content": piece})
            yield chunk({}, "stop")
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def main() -> None:  # pragma: no cover - exercised by the benchmark
    import uvicorn

    from lethe.backends import load_backend
    from lethe.config import BackendConfig

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--model", default=None, help="GGUF path or the default model name")
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--prefix-reuse-chunk", type=int, default=0, help="backend.prefix_reuse_chunk (0: n_batch blocks)")
    args = ap.parse_args()
    cfg = BackendConfig(kind="llamacpp", n_ctx=args.n_ctx, prefix_reuse_chunk=args.prefix_reuse_chunk,
                        **({"model": args.model} if args.model else {}))
    backend = load_backend(cfg)
    uvicorn.run(create_upstream_app(backend, model_name=cfg.model), host=args.host, port=args.port,
                log_level="warning")


if __name__ == "__main__":  # pragma: no cover
    main()
