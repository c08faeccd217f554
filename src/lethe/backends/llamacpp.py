"""llama.cpp backend (``llama-cpp-python``) for GGUF files: the offline default.

Prompts are formatted with the chat template stored in the GGUF, so plain chat and
assistant-prefill continuation go through the same raw-completion path and an
unguarded query produces exactly the same tokens whether or not the guard is present.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator, Sequence

import numpy as np

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Message, Timer
from lethe.backends.default_model import resolve_gguf
from lethe.errors import BackendError


@BACKENDS.register("llamacpp")
class LlamaCppBackend(ChatBackend):
    name = "llamacpp"
    supports_prefill = True
    supports_logprobs = True

    def __init__(
        self,
        model: str = "qwen2.5-coder-0.5b-instruct-q4",
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        **_: object,
    ) -> None:
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - install problem
            raise BackendError("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
        self.model_spec = model
        self.path = resolve_gguf(model)
        self.seed = seed
        self._lock = threading.Lock()
        try:
            self.llm = Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=n_threads or max(1, os.cpu_count() or 1),
                seed=seed,
                verbose=False,
            )
        except Exception as exc:
            raise BackendError(f"llama.cpp could not load {self.path}: {exc}") from exc
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self.path} has no chat template in its metadata")
        eos = self.llm.detokenize([self.llm.token_eos()]).decode("utf-8", "ignore")
        bos_id = self.llm.token_bos()
        bos = self.llm.detokenize([bos_id]).decode("utf-8", "ignore") if bos_id >= 0 else ""
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
        self._stops = [s for s in {eos, "<|im_end|>", "<|endoftext|>"} if s]

    def format_prompt(self, messages: Sequence[Message], prefill: str | None = None) -> str:
        prompt = self._formatter(messages=[dict(m) for m in messages]).prompt
        return prompt + (prefill or "")

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 200,
        temperature: float = 0.0,
        prefill: str | None = None,
        stop: list[str] | None = None,
    ) -> ChatResult:
        prompt = self.format_prompt(messages, prefill)
        with self._lock, Timer() as t:
            out = self.llm.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=1.0 if temperature == 0 else 0.9,
                seed=self.seed,
                stop=self._stops + (stop or []),
            )
        usage = out.get("usage", {})
        return ChatResult(
            text=out["choices"][0]["text"],
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
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
        prompt = self.format_prompt(messages, prefill)
        with self._lock:
            for chunk in self.llm.create_completion(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                top_p=1.0 if temperature == 0 else 0.9,
                seed=self.seed,
                stop=self._stops + (stop or []),
                stream=True,
            ):
                yield chunk["choices"][0]["text"]

    # -- log-probabilities -------------------------------------------------------------
    def _tokens(self, text: str, add_bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def _last_logprobs(self) -> np.ndarray:
        logits = np.asarray(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float64)
        m = logits.max()
        return logits - (m + math.log(np.exp(logits - m).sum()))

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        ids = [self._tokens(c, add_bos=False)[0] for c in candidates]
        with self._lock:
            self.llm.reset()
            self.llm.eval(self._tokens(prompt, add_bos=False))
            lp = self._last_logprobs()
        return [float(lp[i]) for i in ids]

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        p_ids = self._tokens(prompt, add_bos=False)
        full = self._tokens(prompt + continuation, add_bos=False)
        # the continuation's tokens are those after the longest common prefix
        k = 0
        while k < min(len(p_ids), len(full)) and p_ids[k] == full[k]:
            k += 1
        cont = full[k:]
        if not cont:
            return 0.0, 0
        total = 0.0
        with self._lock:
            self.llm.reset()
            self.llm.eval(full[:k])
            for tok in cont:
                total += float(self._last_logprobs()[tok])
                self.llm.eval([tok])
        return total, len(cont)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_spec, "path": str(self.path), "seed": self.seed}
