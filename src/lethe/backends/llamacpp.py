"""llama.cpp backend (``llama-cpp-python``) for GGUF files: the offline default.

Prompts are formatted with the chat template stored in the GGUF, so plain chat and
assistant-prefill continuation go through the same raw-completion path and an
unguarded query produces exactly the same tokens whether or not the guard is present.
llama.cpp's logits depend slightly on how a prompt is split into batches, so a cached prefix is
reused only where the prompt is then decoded in the same batches as from an empty cache, and an
answer does not depend on what was asked before. By default (``prefix_reuse_chunk: 0``) generation
reuses the previous call's KV in whole ``n_batch`` blocks, which a short prompt never fills; with
``prefix_reuse_chunk: c`` every prompt is decoded in ``c``-aligned chunks and whole chunks are
reused from the live context or from saved copies of earlier prefixes
(``lethe.backends.llamacpp_prefix``), so a guarded prompt's constant policy-and-reasoning part is
decoded once. The two settings split prompts differently, so their greedy answers can differ.

Threads (libgomp's wait policy, a thread count that follows the load): ``lethe.backends.llamacpp_threads``;
both are set in the ``backend`` section of ``guard.yaml`` and ``docs/serving.md`` (Performance) has the
measurements.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lethe.backends.base import BACKENDS, ChatBackend, ChatResult, Generation, Message, Timer
from lethe.backends.default_model import resolve_gguf
from lethe.backends.llamacpp_prefix import ChunkedPrefix
from lethe.backends.llamacpp_threads import (  # noqa: F401  (the thread API is also importable from here)
    ThreadGovernor,
    WaitPolicy,
    default_threads,
    import_llama_cpp,
    resolve_wait_policy,
)
from lethe.errors import BackendError

log = logging.getLogger(__name__)


def _gguf_lora(adapter: str) -> Path:
    """A GGUF LoRA file for ``adapter``: the file itself, or (for a PEFT folder written by
    ``lethe train``) ``adapter.gguf`` beside it, exported once."""
    path = Path(adapter).expanduser()
    if path.is_file():
        return path
    if not (path / "adapter_config.json").exists():
        raise BackendError(f"adapter not found: {adapter} (a GGUF LoRA file or a PEFT adapter folder)")
    out = path.parent / f"{path.name}.gguf"
    if not out.exists() or out.stat().st_mtime < (path / "adapter_config.json").stat().st_mtime:
        from lethe.backends.gguf_lora import export_lora_gguf

        export_lora_gguf(path, out)
    return out


def _shared_prefix(group: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt of ``group`` starts with (at least one token of each left to decode)."""
    k = 0
    while k < min(len(t) for t in group) - 1 and all(t[k] == group[0][k] for t in group):
        k += 1
    return k


@BACKENDS.register("llamacpp")
class LlamaCppBackend(ChatBackend):
    name = "llamacpp"
    supports_prefill = True
    supports_logprobs = True
    supports_sample_many = True

    def __init__(
        self,
        model: str = "qwen2.5-coder-0.5b-instruct-q4",
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        wait_policy: WaitPolicy | None = None,
        seed: int = 0,
        adapter: str | None = None,
        prefix_reuse_chunk: int = 0,
        prefix_cache_mb: float = 64.0,
        **_: object,
    ) -> None:
        try:
            self.wait_policy = import_llama_cpp(wait_policy)
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:  # pragma: no cover - install problem
            raise BackendError("llama-cpp-python is not installed: pip install llama-cpp-python") from exc
        self.model_spec = model
        self.path = resolve_gguf(model)
        self.seed = seed
        self._lock = threading.Lock()
        self.adapter = _gguf_lora(adapter) if adapter else None
        self.governor = ThreadGovernor(n_threads)
        self._threads_now = self.governor.threads()
        try:
            self.llm = Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=self._threads_now,
                n_threads_batch=self._threads_now,
                seed=seed,
                verbose=False,
                **({"lora_path": str(self.adapter)} if self.adapter else {}),
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
        if prefix_reuse_chunk < 0:
            raise BackendError(f"prefix_reuse_chunk must be 0 (whole n_batch blocks) or a chunk size, "
                               f"not {prefix_reuse_chunk}")
        self.prefix_reuse_chunk = min(prefix_reuse_chunk, self.llm.n_batch)
        # log-probabilities are always scored in 32-token aligned chunks (reproducible scores)
        self._scoring = ChunkedPrefix(self.llm, self._CHUNK)
        self._prompts = (ChunkedPrefix(self.llm, self.prefix_reuse_chunk, int(prefix_cache_mb * 2**20))
                         if self.prefix_reuse_chunk else None)

    def _adapt_threads(self) -> None:
        """Apply the governor's thread count to the context (between decodes; caller holds the lock)."""
        n = self.governor.threads()
        if n != self._threads_now:
            self.llm._ctx.set_n_threads(n, n)
            self._threads_now = n

    def _completion_tokens(self, prompt: str) -> list[int]:
        """The prompt's tokens as ``create_completion`` would build them from the string."""
        bos = self.llm.token_bos()
        head = [bos] if bos >= 0 and self.llm._model.add_bos_token() else []
        return head + self._tokens(prompt, add_bos=False)

    def _reuse_whole_batches(self, tokens: list[int]) -> None:
        """Cut the cached prefix shared with ``tokens`` down to whole ``n_batch`` blocks (module doc);
        ``create_completion`` then decodes the rest in whole batches from a block boundary."""
        llm = self.llm
        if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
            llm.n_tokens = 0
            return
        limit = min(llm.n_tokens, len(tokens) - 1)
        k = 0
        while k < limit and llm.input_ids[k] == tokens[k]:
            k += 1
        llm.n_tokens = k - k % llm.n_batch

    def format_prompt(self, messages: Sequence[Message], prefill: str | None = None) -> str:
        prompt = self._formatter(messages=[dict(m) for m in messages]).prompt
        return prompt + (prefill or "")

    def _completion(self, messages: Sequence[Message], gen: Generation, stream: bool):
        """One llama.cpp completion of the formatted conversation (caller holds the lock)."""
        tokens = self._completion_tokens(self.format_prompt(messages, gen.prefill))
        self._scoring.valid = 0  # generation changes the KV cache its own way
        self._adapt_threads()
        if self._prompts is None:
            self._reuse_whole_batches(tokens)
        elif len(tokens) > 1:  # all but the last token in aligned chunks; create_completion decodes it alone
            self._prompts.eval(tokens[:-1])
        else:
            self.llm.reset()
        return self.llm.create_completion(tokens, max_tokens=gen.max_tokens, temperature=gen.temperature,
                                          top_p=1.0 if gen.temperature == 0 else 0.9, seed=self.seed,
                                          stop=self._stops + list(gen.stop), stream=stream)

    def generate(self, messages: Sequence[Message], gen: Generation) -> ChatResult:
        with self._lock, Timer() as t:
            out = self._completion(messages, gen, stream=False)
        usage = out.get("usage", {})
        return ChatResult(text=out["choices"][0]["text"], prompt_tokens=usage.get("prompt_tokens"),
                          completion_tokens=usage.get("completion_tokens"), latency_s=t.elapsed)

    def generate_stream(self, messages: Sequence[Message], gen: Generation) -> Iterator[str]:
        with self._lock:
            for chunk in self._completion(messages, gen, stream=True):
                yield chunk["choices"][0]["text"]
                self._adapt_threads()  # between tokens: a long answer follows the load as it changes

    def sample_many(self, prompts: Sequence[Sequence[Message]], n: int, *, max_tokens: int | Sequence[int] = 48,
                    temperature: float = 0.7, top_p: float = 0.9, seed: int = 0) -> list[list[str]]:
        """``n`` sampled one-line continuations of each conversation, all decoded together on a second
        context of the loaded model (``lethe.backends.llamacpp_parallel``); the prompts' common token
        prefix (an instruction shared by every prompt) is decoded once."""
        from lethe.backends.llamacpp_parallel import ParallelSampler

        toks = [self._completion_tokens(self.format_prompt(m)) for m in prompts]
        caps = [max_tokens] * len(toks) if isinstance(max_tokens, int) else list(max_tokens)
        out: list[list[str]] = []
        with self._lock:
            if getattr(self, "_sampler", None) is None:
                self._sampler = ParallelSampler(self.llm)
            per_call = max(1, self._sampler.n_seq_max // max(1, n))
            for i in range(0, len(toks), per_call):
                group, cap = toks[i:i + per_call], caps[i:i + per_call]
                k = _shared_prefix(group)
                n_threads = self.governor.threads()
                self._sampler.set_threads(n_threads)
                out += self._sampler.sample(group[0][:k], [t[k:] for t in group], n, max_tokens=cap,
                                            temperature=temperature, top_p=top_p, seed=seed + i)
        return out

    GREEDY_BATCH = 16  # sequences decoded together by chat_many (a 2-core CPU gains little beyond)
    GREEDY_CTX = 8192  # tokens of one chat_many call's KV cache, every sequence together

    def chat_many(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int = 200,
                  prefills: Sequence[str | None] | None = None) -> list[str]:
        """Greedy answers to several conversations decoded together on a second context of the
        loaded model (LoRA adapter included), ``GREEDY_BATCH`` sequences and ``GREEDY_CTX`` tokens at
        a time; the prompts' common token prefix is decoded once. Same prompts and stop rule as
        :meth:`chat` (an end-of-generation token or ``max_tokens``); a larger batch can break a
        near-tie between two tokens the other way (``ParallelSampler.greedy``)."""
        from lethe.backends.llamacpp_parallel import ParallelSampler

        pre = list(prefills) if prefills is not None else [None] * len(conversations)
        toks = [self._completion_tokens(self.format_prompt(m, p)) for m, p in zip(conversations, pre, strict=True)]
        groups: list[list[int]] = []
        budget = 0
        for i, t in enumerate(toks):
            need = len(t) + max_tokens
            if need > self.GREEDY_CTX:
                raise BackendError(f"a prompt of {len(t)} tokens plus {max_tokens} new ones exceeds "
                                   f"the batched context ({self.GREEDY_CTX})")
            if not groups or len(groups[-1]) >= self.GREEDY_BATCH or budget + need > self.GREEDY_CTX:
                groups.append([])
                budget = 0
            groups[-1].append(i)
            budget += need
        out: list[str] = [""] * len(toks)
        with self._lock:
            if getattr(self, "_greedy", None) is None:
                self._greedy = ParallelSampler(self.llm, n_seq_max=self.GREEDY_BATCH, n_ctx=self.GREEDY_CTX)
            for g in groups:
                group = [toks[i] for i in g]
                k = _shared_prefix(group)
                self._greedy.set_threads(self.governor.threads())
                for i, text in zip(g, self._greedy.greedy(group[0][:k], [t[k:] for t in group],
                                                          max_tokens=max_tokens), strict=True):
                    out[i] = text
        return out

    def count_prompt_tokens(self, messages: Sequence[Message], prefill: str | None = None) -> int:
        return len(self._tokens(self.format_prompt(messages, prefill), add_bos=False))

    # -- log-probabilities -------------------------------------------------------------
    def _tokens(self, text: str, add_bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    @staticmethod
    def _log_softmax(logits: np.ndarray) -> np.ndarray:
        logits = logits.astype(np.float64)
        m = logits.max(axis=-1, keepdims=True)
        return logits - (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))

    def _last_logprobs(self) -> np.ndarray:
        # with logits_all=False llama.cpp returns the logits of the batch's last (only) output row
        n_vocab = self.llm.n_vocab()
        return self._log_softmax(np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(n_vocab,)))

    _CHUNK = 32  # log-probability prompts are decoded in chunks aligned to multiples of this

    def _eval_reusing_prefix(self, tokens: list[int]) -> None:
        """Evaluate ``tokens`` (the last logits then belong to ``tokens[-1]``), reusing cached KV in
        whole ``_CHUNK``-aligned chunks only (a different batch split moves the logits slightly), so a
        score does not depend on earlier calls (``lethe.backends.llamacpp_prefix``)."""
        if self._prompts is not None:
            self._prompts.valid = 0
        self._scoring.eval(tokens)

    def _batch_logprobs(self, tokens: list[int]) -> np.ndarray:
        """Log-probability rows for every position of ``tokens`` decoded as one batch after the
        current state (a batch with all logits requested; no ``logits_all`` context needed)."""
        llm = self.llm
        n_vocab = llm.n_vocab()
        rows = []
        for i in range(0, len(tokens), llm.n_batch):
            batch = tokens[i : i + llm.n_batch]
            n_past = llm.n_tokens
            llm._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch) * n_vocab,))
                        .reshape(len(batch), n_vocab).copy())
        return self._log_softmax(np.concatenate(rows, axis=0))

    def next_token_logprobs(self, prompt: str, candidates: Sequence[str]) -> list[float]:
        ids = [self._tokens(c, add_bos=False)[0] for c in candidates]
        with self._lock:
            self._adapt_threads()
            self._eval_reusing_prefix(self._tokens(prompt, add_bos=False))
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
        if not cont or k == 0:
            return 0.0, 0
        with self._lock:
            self._adapt_threads()
            self._eval_reusing_prefix(full[:k])
            first = self._last_logprobs()[cont[0]]
            rest = 0.0
            if len(cont) > 1:
                lp = self._batch_logprobs(cont[:-1])  # row j predicts cont[j + 1]
                rest = float(sum(lp[j, cont[j + 1]] for j in range(len(cont) - 1)))
        return float(first) + rest, len(cont)

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model_spec, "path": str(self.path), "seed": self.seed,
                "adapter": str(self.adapter) if self.adapter else None, "n_threads": self.governor.fixed or "auto",
                "wait_policy": self.wait_policy,
                # only when set: the default's description (a key of cached scores) stays as it was
                **({"prefix_reuse_chunk": self.prefix_reuse_chunk} if self.prefix_reuse_chunk else {})}
