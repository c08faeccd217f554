"""Many sampled continuations in one llama.cpp generation: every sequence advances one token per
``llama_decode`` call, so k candidates of a prompt (and the candidates of several prompts) cost
about as much CPU as one batched prompt evaluation per step instead of one full forward pass per
token of each candidate.

A single-sequence decode on a CPU reads every weight of the model for one token; a batch of B
tokens reads them once for B tokens, so each extra sequence costs little (llama.cpp's own
``batched`` example, ``examples/batched/batched.cpp``, does the same). The prompts' tokens are
decoded once: a shared prefix (the instruction that is the same for every prompt) belongs to every
sequence at once, each prompt's own tail to its k sequences (``llama_batch.seq_id`` lists them), so
no KV cache is copied.

The sampler runs on a separate llama.cpp context over the already loaded model (weights are
shared; the context holds only its own KV cache), so the chat path's prompt cache is left as it was.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Sequence
from typing import Any

from lethe.errors import BackendError


class ParallelSampler:
    """Sampled continuations of several prompts, decoded together on a context of ``llm``'s model.

    ``llm`` is a loaded ``llama_cpp.Llama``; ``n_seq_max`` bounds the sequences of one call
    (prompts x samples), ``n_ctx`` the tokens of one call's KV cache (all sequences together)."""

    def __init__(self, llm: Any, n_seq_max: int = 64, n_ctx: int = 8192) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self._lc = llama_cpp
        self.llm = llm
        self.n_seq_max = min(n_seq_max, int(llama_cpp.llama_max_parallel_sequences()))
        params = llama_cpp.llama_context_params()
        ctypes.memmove(ctypes.byref(params), ctypes.byref(llm.context_params), ctypes.sizeof(params))
        params.n_ctx = n_ctx
        params.n_seq_max = self.n_seq_max
        params.kv_unified = True  # one buffer: the shared prefix is stored once for every sequence
        # llama.cpp keeps a logits row per token of a batch: 128 rows of Qwen's 151,936-token vocabulary
        # are 78 MB, 512 would be 311 MB, for no gain on a CPU
        params.n_batch = params.n_ubatch = max(128, self.n_seq_max)
        try:
            self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        except ValueError as exc:
            raise BackendError(f"llama.cpp could not create a batched context: {exc}") from None
        adapter = getattr(llm, "_lora_adapter", None)
        if adapter is not None:
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(float(getattr(llm, "lora_scale", 1.0)))
            if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, adapters, 1, scales):
                raise BackendError("llama.cpp could not apply the LoRA adapter to the batched context")
        self.n_batch = int(params.n_batch)
        self.batch = _internals.LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=self.n_seq_max, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        self._nl: dict[int, bool] = {}

    def close(self) -> None:
        self.batch.close()
        self.ctx.close()

    def set_threads(self, n: int) -> None:
        self.ctx.set_n_threads(n, n)

    # -- one batch ---------------------------------------------------------------------
    def _decode(self, entries: list[tuple[int, int, Sequence[int], bool]]) -> None:
        """Decode ``(token, position, sequence ids, wants logits)`` entries in batches of ``n_batch``."""
        for start in range(0, len(entries), self.n_batch):
            part = entries[start:start + self.n_batch]
            b = self.batch.batch
            b.n_tokens = len(part)
            for i, (tok, pos, seqs, logits) in enumerate(part):
                b.token[i] = tok
                b.pos[i] = pos
                b.n_seq_id[i] = len(seqs)
                for j, s in enumerate(seqs):
                    b.seq_id[i][j] = s
                b.logits[i] = logits
            self.ctx.decode(self.batch)

    def _sampler(self, temperature: float, top_p: float, top_k: int, seed: int) -> Any:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:  # greedy: the argmax, as the single-sequence path at temperature 0
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(top_k))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def sample(self, prefix: Sequence[int], tails: Sequence[Sequence[int]], n: int, *,
               max_tokens: int | Sequence[int] = 48,
               temperature: float = 0.8, top_p: float = 0.95, top_k: int = 40, seed: int = 0,
               stop_at_newline: bool = True) -> list[list[str]]:
        """``n`` sampled continuations of each prompt ``prefix + tails[p]`` (token ids), as text;
        a continuation ends at an end-of-generation token, a newline (``stop_at_newline``) or
        ``max_tokens`` (one cap, or one per tail). Returns one list of ``n`` strings per tail."""
        lc = self._lc
        n_seq = len(tails) * n
        if n < 1 or not tails:
            return [[] for _ in tails]
        if n_seq > self.n_seq_max:
            raise BackendError(f"{n_seq} sequences exceed this sampler's {self.n_seq_max}")
        caps = [max_tokens] * len(tails) if isinstance(max_tokens, int) else [int(c) for c in max_tokens]
        need = len(prefix) + sum(len(t) for t in tails) + n * sum(caps)
        if need > self.ctx.n_ctx():
            raise BackendError(f"{need} tokens exceed the batched context ({self.ctx.n_ctx()})")
        if any(not t for t in tails) and not prefix:
            raise BackendError("an empty prompt cannot be continued")
        self.ctx.kv_cache_clear()
        all_seqs = list(range(n_seq))
        entries: list[tuple[int, int, Sequence[int], bool]] = [
            (tok, i, all_seqs, False) for i, tok in enumerate(prefix)]
        last_of: list[int] = []  # entry index whose logits start each prompt's sequences
        for p, tail in enumerate(tails):
            seqs = list(range(p * n, (p + 1) * n))
            for j, tok in enumerate(tail):
                entries.append((tok, len(prefix) + j, seqs, j == len(tail) - 1))
            last_of.append(len(entries) - 1 if tail else len(prefix) - 1)
        if any(not t for t in tails):
            entries[len(prefix) - 1] = (*entries[len(prefix) - 1][:3], True)
        # logits are kept for the last decoded batch only: each prompt's first tokens are sampled
        # right after the batch holding its last token
        first_tokens: list[int] = [0] * n_seq
        chain = self._sampler(temperature, top_p, top_k, seed)
        try:
            for start in range(0, len(entries), self.n_batch):
                part = entries[start:start + self.n_batch]
                self._decode(part)
                rows = {start + k: k for k, e in enumerate(part) if e[3]}  # logits are read by batch index
                for p, idx in enumerate(last_of):
                    if idx in rows:
                        for s in range(p * n, (p + 1) * n):
                            first_tokens[s] = lc.llama_sampler_sample(chain, self.ctx.ctx, rows[idx])
            out = self._continue(first_tokens, [len(prefix) + len(tails[s // n]) for s in all_seqs],
                                 [caps[s // n] for s in all_seqs], stop_at_newline, chain)
        finally:
            lc.llama_sampler_free(chain)
        texts = [self.llm.detokenize(o).decode("utf-8", "ignore") for o in out]
        if stop_at_newline:
            texts = [t.split("\n")[0].strip() for t in texts]
        return [texts[p * n:(p + 1) * n] for p in range(len(tails))]

    def greedy(self, prefix: Sequence[int], tails: Sequence[Sequence[int]], *,
               max_tokens: int | Sequence[int] = 200) -> list[str]:
        """The greedy continuation of each prompt ``prefix + tails[p]``, decoded together, up to an
        end-of-generation token or ``max_tokens``: one text per tail, newlines kept. Greedy picks
        the same argmax a single-sequence decode picks, up to the floating-point differences of a
        larger batch (a near-tie between two tokens can break the other way)."""
        return [r[0] for r in self.sample(prefix, tails, 1, max_tokens=max_tokens, temperature=0.0,
                                          stop_at_newline=False)]

    def _newline(self, tok: int) -> bool:
        hit = self._nl.get(tok)
        if hit is None:
            hit = self._nl[tok] = b"\n" in self.llm.detokenize([tok])
        return hit

    def _continue(self, tokens: list[int], pos: list[int], caps: list[int], stop_at_newline: bool,
                  chain: Any) -> list[list[int]]:
        """Advance every live sequence one token per decode until each has ended; the tokens of each."""
        lc = self._lc
        out: list[list[int]] = [[] for _ in tokens]
        live = list(range(len(tokens)))
        nxt = dict(enumerate(tokens))
        while live:
            still = []
            for s in live:
                tok = nxt[s]
                if lc.llama_vocab_is_eog(self.vocab, tok):
                    continue
                out[s].append(tok)
                if (stop_at_newline and self._newline(tok)) or len(out[s]) >= caps[s]:
                    continue
                still.append(s)
            live = still
            if not live:
                break
            self._decode([(nxt[s], pos[s] + len(out[s]) - 1, [s], True) for s in live])
            for row, s in enumerate(live):
                nxt[s] = lc.llama_sampler_sample(chain, self.ctx.ctx, row)
        return out


@contextlib.contextmanager
def parallel_sampler(llm: Any, **kw: Any):
    """A ``ParallelSampler`` closed on exit."""
    s = ParallelSampler(llm, **kw)
    try:
        yield s
    finally:
        s.close()
