"""Shared helpers for the serving tests: a real loopback upstream and uvicorn in a thread.

The upstream is a small deterministic OpenAI-compatible server (``lethe.serving.upstream``
around :class:`EchoBackend`), reached by the guard through lethe's ``openai`` backend: a
real HTTP path. No test functions here.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator, Sequence

import uvicorn

from lethe.backends.base import ChatBackend, ChatResult, Message


class EchoBackend(ChatBackend):
    """Answers ``echo: <last user message>``; streams it word by word.

    Control words in the last user message: ``[[slow=S]]`` sleeps S seconds first,
    ``[[fail]]`` raises (the upstream answers 500), ``[[drip=S]]`` sleeps S between pieces.
    """

    name = "echo"

    def _answer(self, messages: Sequence[Message]) -> tuple[str, float, float]:
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if "[[fail]]" in last:
            raise RuntimeError("echo upstream asked to fail")
        slow = re.search(r"\[\[slow=([\d.]+)\]\]", last)
        drip = re.search(r"\[\[drip=([\d.]+)\]\]", last)
        return f"echo: {last}", float(slow.group(1)) if slow else 0.0, float(drip.group(1)) if drip else 0.0

    def chat(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None) -> ChatResult:
        text, slow, _ = self._answer(messages)
        time.sleep(slow)
        words = text.split(" ")[:max_tokens]
        return ChatResult(text=" ".join(words), prompt_tokens=sum(len(m["content"].split()) for m in messages),
                          completion_tokens=len(words))

    def stream(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None) -> Iterator[str]:
        text, slow, drip = self._answer(messages)
        time.sleep(slow)
        for i, w in enumerate(text.split(" ")[:max_tokens]):
            if drip:
                time.sleep(drip)
            yield w if i == 0 else " " + w


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1 (free port) in a background thread."""

    def __init__(self, app, timeout_graceful_shutdown: float | None = None) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                     timeout_graceful_shutdown=timeout_graceful_shutdown)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __exit__(self, *exc: object) -> None:
        self.stop()


def echo_upstream() -> ServerThread:
    from lethe.serving.upstream import create_upstream_app

    return ServerThread(create_upstream_app(EchoBackend(), model_name="echo"))
