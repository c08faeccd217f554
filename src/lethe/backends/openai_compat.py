"""Any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, Ollama, OpenAI) via ``openai``.

Besides the blocking ``chat``/``stream``, ``achat``/``astream`` use ``openai.AsyncOpenAI``:
cancelling them closes the HTTP connection, which vLLM and llama.cpp's server treat as an
abort. The proxy relies on that to start the upstream call while detection still runs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Message, Timer
from lethe.errors import BackendError


@BACKENDS.register("openai")
class OpenAIBackend(ChatBackend):
    name = "openai"
    supports_prefill = False  # the chat API has no portable assistant prefill
    supports_logprobs = False
    supports_async = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        seed: int = 0,
        **_: object,
    ) -> None:
        import openai

        self._openai = openai
        self.model = model
        self.base_url = base_url
        self.seed = seed
        key = api_key or os.environ.get(api_key_env) or "not-needed"
        self._client_kw = {"base_url": base_url, "api_key": key, "timeout": timeout_s, "max_retries": 1}
        self.client = openai.OpenAI(**self._client_kw)
        self._aclients: dict[int, object] = {}  # one AsyncOpenAI per event loop (httpx pools are loop-bound)

    def _error(self, exc: Exception) -> BackendError | None:
        o = self._openai
        if isinstance(exc, o.APITimeoutError):  # a subclass of APIConnectionError: test it first
            return BackendError(f"endpoint timed out: {self.base_url}")
        if isinstance(exc, o.APIConnectionError):
            return BackendError(f"endpoint unreachable: {self.base_url or 'api.openai.com'} ({exc})")
        if isinstance(exc, o.APIStatusError):
            return BackendError(f"endpoint returned {exc.status_code}: {exc.message}")
        return None

    def _call(self, messages: Sequence[Message], **kw: object):
        try:
            return self.client.chat.completions.create(model=self.model, messages=list(messages), **kw)
        except self._openai.OpenAIError as exc:
            err = self._error(exc)
            if err is None:
                raise
            raise err from None

    def _aclient(self):
        loop = id(asyncio.get_running_loop())
        if loop not in self._aclients:
            self._aclients = {loop: self._openai.AsyncOpenAI(**self._client_kw)}
        return self._aclients[loop]

    async def _acall(self, messages: Sequence[Message], **kw: object):
        try:
            return await self._aclient().chat.completions.create(model=self.model, messages=list(messages), **kw)
        except self._openai.OpenAIError as exc:
            err = self._error(exc)
            if err is None:
                raise
            raise err from None

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 200,
        temperature: float = 0.0,
        prefill: str | None = None,
        stop: list[str] | None = None,
    ) -> ChatResult:
        if prefill:
            raise NotImplementedError("the openai backend cannot prefill the assistant turn")
        with Timer() as t:
            resp = self._call(messages, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=self.seed)
        return _result(resp, t.elapsed)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 200,
        temperature: float = 0.0,
        prefill: str | None = None,
        stop: list[str] | None = None,
    ) -> Iterator[str]:
        if prefill:
            raise NotImplementedError("the openai backend cannot prefill the assistant turn")
        for chunk in self._call(
            messages, max_tokens=max_tokens, temperature=temperature, stop=stop, seed=self.seed, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    async def achat(self, messages: Sequence[Message], *, max_tokens: int = 200, temperature: float = 0.0,
                    stop: list[str] | None = None) -> ChatResult:
        with Timer() as t:
            resp = await self._acall(messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                     seed=self.seed)
        return _result(resp, t.elapsed)

    async def astream(self, messages: Sequence[Message], *, max_tokens: int = 200, temperature: float = 0.0,
                      stop: list[str] | None = None) -> AsyncIterator[str]:
        stream = await self._acall(messages, max_tokens=max_tokens, temperature=temperature, stop=stop,
                                   seed=self.seed, stream=True)
        try:
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except self._openai.OpenAIError as exc:
            err = self._error(exc)
            if err is None:
                raise
            raise err from None
        finally:
            await stream.close()

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}


def _result(resp, latency_s: float) -> ChatResult:
    """A non-streamed chat completion (sync or async client) as a ChatResult."""
    usage = resp.usage
    return ChatResult(
        text=resp.choices[0].message.content or "",
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        completion_tokens=getattr(usage, "completion_tokens", None),
        latency_s=latency_s,
    )
