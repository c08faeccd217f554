"""The one interface every chat model backend implements."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from lethe.registry import Registry


class Message(TypedDict):
    role: str
    content: str


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Generation:
    """The settings of one generated answer, shared by every backend's chat and stream."""

    max_tokens: int = 200
    temperature: float = 0.0
    prefill: str | None = None  # text the assistant turn starts with (see ``supports_prefill``)
    stop: tuple[str, ...] = ()


class ChatBackend:
    """Chat completion, optional assistant-prefill continuation, optional log-probabilities.

    ``prefill``: text the assistant turn starts with; the model continues it and the
    returned ``text`` is the continuation only. Backends that cannot prefill raise
    ``NotImplementedError`` from :meth:`chat` when one is given (see ``supports_prefill``).
    """

    name: str = "base"
    supports_prefill: bool = False
    supports_logprobs: bool = False
    #: ``achat``/``astream`` are native coroutines whose cancellation aborts the upstream call
    #: (the proxy then starts the upstream call speculatively while detection runs)
    supports_async: bool = False
    #: :meth:`sample_many` draws many samples of many prompts in one batched generation
    supports_sample_many: bool = False

    def chat(self, messages: Sequence[Message], *, max_tokens: int = 200, temperature: float = 0.0,
             prefill: str | None = None, stop: list[str] | None = None) -> ChatResult:
        """One answer; backends implement :meth:`generate` (or override this)."""
        return self.generate(messages, Generation(max_tokens, temperature, prefill, tuple(stop or ())))

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 200, temperature: float = 0.0,
               prefill: str | None = None, stop: list[str] | None = None) -> Iterator[str]:
        """Text pieces of one answer; backends that stream implement :meth:`generate_stream`."""
        return self.generate_stream(messages, Generation(max_tokens, temperature, prefill, tuple(stop or ())))

    def generate(self, messages: Sequence[Message], gen: Generation) -> ChatResult:
        raise NotImplementedError(f"backend '{self.name}' implements neither chat nor generate")

    def generate_stream(self, messages: Sequence[Message], gen: Generation) -> Iterator[str]:
        """The default yields the whole answer at once."""
        yield self.chat(messages, max_tokens=gen.max_tokens, temperature=gen.temperature, prefill=gen.prefill,
                        stop=list(gen.stop) or None).text

    async def achat(self, messages: Sequence[Message], *, max_tokens: int = 200, temperature: float = 0.0,
                    stop: list[str] | None = None) -> ChatResult:
        """Cancellable chat (only where ``supports_async``)."""
        raise NotImplementedError(f"the {self.name} backend has no async chat")

    def astream(self, messages: Sequence[Message], *, max_tokens: int = 200, temperature: float = 0.0,
                stop: list[str] | None = None) -> AsyncIterator[str]:
        """Cancellable stream (only where ``supports_async``); ``aclose()`` aborts the upstream call."""
        raise NotImplementedError(f"the {self.name} backend has no async stream")

    def format_prompt(self, messages: Sequence[Message], prefill: str | None = None) -> str:
        """The raw prompt string the model sees (chat template applied)."""
        raise NotImplementedError(f"backend '{self.name}' does not expose its prompt format")

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        """Log-probability of each candidate continuation's first token after a raw prompt."""
        raise NotImplementedError(f"backend '{self.name}' gives no prompt log-probabilities")

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        """Sum of token log-probabilities of ``continuation`` after ``prompt`` and its token count."""
        raise NotImplementedError(f"backend '{self.name}' gives no prompt log-probabilities")

    def sample_many(self, prompts: Sequence[Sequence[Message]], n: int, *, max_tokens: int | Sequence[int] = 48,
                    temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> list[list[str]]:
        """``n`` sampled one-line answers to each conversation in ``prompts``, generated together
        (only where ``supports_sample_many``); ``max_tokens`` is one cap or one per prompt."""
        raise NotImplementedError(f"backend '{self.name}' has no batched sampling")

    def chat_many(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int = 200,
                  prefills: Sequence[str | None] | None = None) -> list[str]:
        """Greedy answers to several conversations (one optional prefill each), in order. This
        default answers them one by one with :meth:`chat`; a backend that decodes many sequences
        at once (``supports_sample_many``) overrides it to generate them together."""
        pre = list(prefills) if prefills is not None else [None] * len(conversations)
        return [self.chat(m, max_tokens=max_tokens, temperature=0.0, prefill=p).text
                for m, p in zip(conversations, pre, strict=True)]

    def describe(self) -> dict:
        return {"backend": self.name}


BACKENDS: Registry[ChatBackend] = Registry("backend")


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.perf_counter() - self.start
