"""Any OpenAI-compatible HTTP endpoint (vLLM, llama.cpp server, Ollama, OpenAI) via ``openai``."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Message, Timer
from lethe.errors import BackendError


@BACKENDS.register("openai")
class OpenAIBackend(ChatBackend):
    name = "openai"
    supports_prefill = False  # the chat API has no portable assistant prefill
    supports_logprobs = False

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
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout_s, max_retries=1)

    def _call(self, messages: Sequence[Message], **kw: object):
        try:
            return self.client.chat.completions.create(model=self.model, messages=list(messages), **kw)
        except self._openai.APIConnectionError as exc:
            raise BackendError(f"endpoint unreachable: {self.base_url or 'api.openai.com'} ({exc})") from None
        except self._openai.APITimeoutError:
            raise BackendError(f"endpoint timed out: {self.base_url}") from None
        except self._openai.APIStatusError as exc:
            raise BackendError(f"endpoint returned {exc.status_code}: {exc.message}") from None

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
        usage = resp.usage
        return ChatResult(
            text=resp.choices[0].message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            latency_s=t.elapsed,
        )

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

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}
