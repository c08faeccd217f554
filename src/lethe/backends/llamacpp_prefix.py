"""Prompts decoded in aligned chunks, with whole chunks of cached KV reused (llama.cpp prefix cache).

llama.cpp's logits depend slightly on how a sequence is split into batches, so a prompt prefix can
be reused only if it was split the same way it would be from an empty cache. Here a prompt is
always decoded in chunks aligned to multiples of ``chunk`` tokens (``[0, c)``, ``[c, 2c)``, ...,
then the partial tail), so the KV of every whole chunk is a function of the tokens up to its end
and nothing else: reusing whole chunks of an earlier prompt gives bit-for-bit the KV that an empty
cache would, and an answer does not depend on what was asked before.

Two places hold reusable chunks:

- the live context (the previous prompt's KV);
- saved copies of sequence state (``llama_state_seq_get_data``, the KV of one sequence, no logits)
  of the whole-chunk part of prompts, kept in a small LRU with a byte budget. A prompt that was
  started from a saved copy adds none of its own (its extension is query-specific), and a copy
  that has been reused is evicted after those that never were, so a guarded prompt's constant
  part (the policy and reasoning every in-scope query of a kind shares) survives the unrelated
  prompts in between.

A restored copy is loaded into an emptied cache, so its cells sit at positions ``0..n-1`` as they
would after decoding from empty. llama-cpp-python's own ``LlamaRAMCache`` is not used: its entries
restore the whole context (generated tokens and the unaligned tail included, which would make the
answer depend on the previous call) and copy the ``n_batch x n_vocab`` logits buffer with every save.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any


@dataclass
class _Saved:
    state: Any  # ctypes uint8 array with the sequence's KV
    size: int
    hits: int = 0


def common_prefix(a: Any, b: list[int], limit: int) -> int:
    """Length of the common prefix of two token sequences, at most ``limit``."""
    k, n = 0, min(limit, len(a), len(b))
    while k < n and a[k] == b[k]:
        k += 1
    return k


class ChunkedPrefix:
    """Aligned-chunk prompt decoding on one ``llama_cpp.Llama`` (module doc); not thread-safe: the
    backend calls it under its lock."""

    def __init__(self, llm: Any, chunk: int, cache_bytes: int = 0) -> None:
        self.llm = llm
        self.chunk = chunk
        self.cache_bytes = cache_bytes
        self.valid = 0  # tokens at the start of the live context decoded in this instance's chunks
        self._saved: OrderedDict[tuple[int, ...], _Saved] = OrderedDict()
        self.last_reused = 0  # tokens of the last prompt that were not decoded (for tests and probes)

    @property
    def _reusable(self) -> bool:
        return not (getattr(self.llm, "_is_recurrent", False) or getattr(self.llm, "_is_hybrid", False))

    def eval(self, tokens: list[int]) -> None:
        """Leave exactly ``tokens`` in the context, decoded in aligned chunks from whole chunks reused;
        at least one token is decoded, so the last logits belong to ``tokens[-1]``."""
        llm, c = self.llm, self.chunk
        limit = len(tokens) - 1
        reuse, restored = 0, False
        if self._reusable:
            live = common_prefix(llm.input_ids[: min(llm.n_tokens, self.valid)], tokens, limit)
            reuse = live - live % c
            key, got = self._best_saved(tokens, limit)
            restored = got > reuse and self._restore(key)
            if restored:
                reuse = got
        if reuse == 0:
            llm.reset()
        else:
            llm.n_tokens = reuse  # llm.eval drops the KV cache from n_tokens on
        self.last_reused = reuse
        aligned_end = len(tokens) - len(tokens) % c
        pos = reuse
        while pos < len(tokens):
            nxt = min(len(tokens), (pos // c + 1) * c)
            llm.eval(tokens[pos:nxt])
            pos = nxt
            if pos == aligned_end and pos > reuse and not restored:  # after a restore: a saved copy covers it
                self._save(tuple(tokens[:pos]))
        self.valid = aligned_end

    # -- saved sequence states -------------------------------------------------------------------
    def _best_saved(self, tokens: list[int], limit: int) -> tuple[tuple[int, ...] | None, int]:
        best, got = None, 0
        for key in self._saved:
            k = common_prefix(key, tokens, limit)
            k -= k % self.chunk
            if k > got:
                best, got = key, k
        return best, got

    def _restore(self, key: tuple[int, ...] | None) -> bool:
        if key is None:
            return False
        import llama_cpp

        llm, entry = self.llm, self._saved[key]
        mem = llama_cpp.llama_get_memory(llm._ctx.ctx)
        if mem is None:
            return False
        llama_cpp.llama_memory_clear(mem, False)
        if llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, entry.state, entry.size, 0) != entry.size:
            llama_cpp.llama_memory_clear(mem, False)
            del self._saved[key]
            return False
        llm.input_ids[: len(key)] = key
        llm.n_tokens = len(key)
        entry.hits += 1
        self._saved.move_to_end(key)
        return True

    def _save(self, key: tuple[int, ...]) -> None:
        """Keep a copy of the context's sequence state (exactly the tokens of ``key``)."""
        if self.cache_bytes <= 0 or not self._reusable or key in self._saved:
            if key in self._saved:
                self._saved.move_to_end(key)
            return
        import llama_cpp

        ctx = self.llm._ctx.ctx
        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        if size <= 0 or size > self.cache_bytes:
            return
        buf = (ctypes.c_uint8 * size)()
        if int(llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0)) != size:
            return
        self._saved[key] = _Saved(buf, size)
        while sum(e.size for e in self._saved.values()) > self.cache_bytes:
            # the least recently used prefix that was never reused goes first (not the one just saved)
            older = [k for k in self._saved if k != key] or [key]
            victim = next((k for k in older if self._saved[k].hits == 0), older[0])
            del self._saved[victim]

    def saved_prefixes(self) -> list[int]:
        """Lengths of the saved prefixes, least recently used first."""
        return [len(k) for k in self._saved]
