"""Any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, Ollama, OpenAI) via ``openai``.

Besides the blocking ``chat``/``stream``, ``achat``/``astream`` use ``openai.AsyncOpenAI``:
cancelling them closes the HTTP connection, which vLLM and llama.cpp's server treat as an
abort. The proxy relies on that to start the upstream call while detection still runs.

Prompt log-probabilities (multiple-choice scoring) come from the legacy completions endpoint,
which vLLM and llama.cpp's server keep: ``logprobs=K`` gives the top-K next tokens after a raw
prompt, ``echo=True`` gives the prompt's own token log-probabilities. Whether the server offers
them is probed on first use; a server that does not (OpenAI's chat-only models) makes
:meth:`next_token_logprobs` raise ``NotImplementedError`` and the evaluation falls back to
generate-and-parse. ``thread_safe``: one client serves concurrent evaluation workers.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator, Iterator, Sequence

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Generation, Message, Timer
from lethe.errors import BackendError


@BACKENDS.register("openai")
class OpenAIBackend(ChatBackend):
    name = "openai"
    supports_prefill = False  # the chat API has no portable assistant prefill
    supports_async = True
    thread_safe = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        seed: int = 0,
        logprobs: bool = True,
        top_logprobs: int = 20,
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
        self._logprobs: bool | None = None if logprobs else False  # None: not probed yet
        self.top_logprobs = top_logprobs

    @property
    def supports_logprobs(self) -> bool:  # type: ignore[override]
        """Prompt log-probabilities via the completions endpoint (``False`` once a probe failed)."""
        return self._logprobs is not False

    def _completion(self, prompt: str, **kw: object):
        """A legacy completion with log-probabilities; marks the server as lacking them on failure."""
        if self._logprobs is False:
            raise NotImplementedError(f"{self.base_url or 'the endpoint'} gives no prompt log-probabilities")
        try:
            resp = self.client.completions.create(model=self.model, prompt=prompt, temperature=0.0, **kw)
            lp = resp.choices[0].logprobs
            if lp is None or not lp.tokens:
                raise NotImplementedError("the endpoint returned no log-probabilities")
        except (self._openai.NotFoundError, self._openai.BadRequestError, NotImplementedError) as exc:
            self._logprobs = False
            raise NotImplementedError(
                f"{self.base_url or 'the endpoint'} gives no prompt log-probabilities ({type(exc).__name__})"
            ) from None
        except self._openai.OpenAIError as exc:
            err = self._error(exc)
            if err is None:
                raise
            raise err from None
        self._logprobs = True
        return lp

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Top-K next-token log-probabilities after ``prompt``; a candidate outside the top K gets the
        K-th value minus log(2) (an upper bound below every listed token), so argmax stays correct."""
        lp = self._completion(prompt, max_tokens=1, logprobs=self.top_logprobs)
        top = dict(lp.top_logprobs[0]) if lp.top_logprobs else {}
        if not top:
            raise NotImplementedError("the endpoint returned no top log-probabilities")
        floor = min(top.values()) - math.log(2)
        out = []
        for c in candidates:
            vals = [v for tok, v in top.items() if tok == c or tok.strip() == c.strip()]
            exact = top.get(c)
            out.append(float(exact if exact is not None else (max(vals) if vals else floor)))
        return out

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        """Sum of the log-probabilities of ``continuation``'s tokens, read from an echoed prompt.

        Servers differ in how they align echoed log-probabilities (llama-cpp-python's server reports
        each token's value under the distribution that follows it), so alignment is probed once against
        a next-token request; a misaligned server makes this raise ``NotImplementedError``."""
        if not self._echo_aligned():
            raise NotImplementedError(
                f"{self.base_url or 'the endpoint'} misaligns echoed prompt log-probabilities; "
                "continuation scoring needs a server such as vLLM")
        return self._echo_sum(prompt, continuation)

    def _echo_sum(self, prompt: str, continuation: str) -> tuple[float, int]:
        lp = self._completion(prompt + continuation, max_tokens=1, logprobs=1, echo=True)
        start = len(prompt)
        total, n = 0.0, 0
        for off, val in zip(lp.text_offset, lp.token_logprobs, strict=False):
            if start <= off < start + len(continuation) and val is not None:
                total += float(val)
                n += 1
        return total, n

    _PROBE = ("The capital of France is", " Paris")

    def _echo_aligned(self) -> bool:
        if getattr(self, "_aligned", None) is None:
            head, tail = self._PROBE
            echoed, n = self._echo_sum(head, tail)
            direct = self.next_token_logprobs(head, [tail])[0]
            self._aligned = n == 1 and abs(echoed - direct) < 0.05
        return bool(self._aligned)

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

    def generate(self, messages: Sequence[Message], gen: Generation) -> ChatResult:
        with Timer() as t:
            resp = self._call(messages, **self._settings(gen))
        return _result(resp, t.elapsed)

    def generate_stream(self, messages: Sequence[Message], gen: Generation) -> Iterator[str]:
        for chunk in self._call(messages, **self._settings(gen), stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    def _settings(self, gen: Generation) -> dict:
        if gen.prefill:
            raise NotImplementedError("the openai backend cannot prefill the assistant turn")
        return {"max_tokens": gen.max_tokens, "temperature": gen.temperature, "stop": list(gen.stop) or None,
                "seed": self.seed}

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
