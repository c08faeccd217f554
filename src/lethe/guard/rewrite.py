"""Rewriting forget prompts into the negative samples the store keeps.

DRAGON (Wang et al. 2025, arXiv 2511.05784, Sec. 3.1): an LLM writes k paraphrases of
each forget prompt and the one with the highest BERTScore F1 against the original is
kept (rejection sampling). Lethe adds the rule the paper leaves implicit, as a stated
bound: a stored rewrite must *differ* from its original, not merely not equal it.

The copy bound (``within_bound``) lives in ``lethe.guard.copy_bound``, the model-free rule
rewriter in ``lethe.guard.rule_rewriter``; both are importable from here.

Every rewriter's candidates and every fallback pass through this check in ``choose_rewrite``;
a prompt with no candidate inside the bound keeps the embedding of its closest candidate and
no text (the caller stores it as embedding only). How the two limits were chosen (against
human-written paraphrases) is in docs/guard-inputs.md.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable

from lethe.backends.base import ChatBackend
from lethe.backends.embeddings import Embedder
from lethe.guard.bertscore import bertscore_f1
from lethe.guard.copy_bound import (  # noqa: F401  (the bound's API, importable from here)
    MAX_COMMON_RUN,
    MAX_RATIO,
    copy_measures,
    is_copy,
    protected_tokens,
    within_bound,
)
from lethe.guard.rule_rewriter import RuleParaphraser
from lethe.registry import Registry


class Rewriter(ABC):
    @abstractmethod
    def candidates(self, prompt: str, k: int) -> list[str]: ...

    def candidates_many(self, prompts: list[str], k: int) -> list[list[str]]:
        """``candidates`` of every prompt; rewriters that can generate them together override it."""
        return [self.candidates(p, k) for p in prompts]


REWRITERS: Registry[Rewriter] = Registry("rewriter")


@REWRITERS.register("rule")
class RuleRewriter(RuleParaphraser, Rewriter):
    """The rule paraphraser (``lethe.guard.rule_rewriter``) as a rewriter: one candidate, its
    first attempt inside the copy bound."""

    def candidates(self, prompt: str, k: int) -> list[str]:
        return [self.rewrite(prompt)]


@REWRITERS.register("llm")
class LLMRewriter(Rewriter):
    """Asks the configured chat model for k paraphrases of each prompt.

    Where the backend samples many sequences in one batched generation (``supports_sample_many``:
    the embedded llama.cpp default), each candidate is one sampled line after an instruction that
    ends with the question, and the candidates of many prompts are drawn together (the shared
    instruction decoded once). Elsewhere one call per prompt asks for a numbered list of k."""

    PROMPT = (
        "Paraphrase the question below. Write {k} different paraphrases that ask for exactly the same "
        "information, one per line, numbered 1. to {k}. Use different words and a different sentence "
        "structure from the question; keep names, titles, places and dates. Do NOT answer the question.\n\n"
        'Question: "{q}"'
    )
    ONE = (
        "Rewrite the question at the end with different words and a different sentence structure, asking for "
        "exactly the same information. Keep names, titles, places and dates. Do not answer it. Reply with the "
        "rewritten question only, on one line.\n\nQuestion: {q}"
    )
    SYSTEM = "You rewrite questions. You never answer them."

    def __init__(self, backend: ChatBackend, temperature: float = 0.7, seed: int = 0, batched: bool = True,
                 **_: object) -> None:
        self.backend = backend
        self.temperature = temperature
        self.seed = seed
        self.batched = batched and backend.supports_sample_many  # False: the numbered list, one call a prompt

    def candidates(self, prompt: str, k: int) -> list[str]:
        if self.batched:
            return self.candidates_many([prompt], k)[0]
        messages = [
            {"role": "system", "content": self.SYSTEM},
            {"role": "user", "content": self.PROMPT.format(k=k, q=prompt)},
        ]
        kw = {"prefill": "1."} if self.backend.supports_prefill else {}
        text = self.backend.chat(messages, max_tokens=40 * k, temperature=self.temperature, **kw).text
        if kw:
            text = "1." + text
        return _lines(text.splitlines())[:k]

    def candidates_many(self, prompts: list[str], k: int) -> list[list[str]]:
        if not self.batched:
            return super().candidates_many(prompts, k)
        convs = [[{"role": "system", "content": self.SYSTEM}, {"role": "user", "content": self.ONE.format(q=p)}]
                 for p in prompts]
        # a paraphrase rarely needs more than twice the question's length (~4 characters a token)
        caps = [max(16, min(64, len(p) // 2 + 8)) for p in prompts]
        drawn = self.backend.sample_many(convs, k, max_tokens=caps, temperature=self.temperature, seed=self.seed)
        return [list(dict.fromkeys(_lines(lines))) for lines in drawn]


def _lines(lines: list[str]) -> list[str]:
    """Candidate lines without list numbering, bullets or surrounding quotes; fragments dropped."""
    out = [re.sub(r"^\s*(?:\d+[.):]|[-*])\s*", "", ln).strip().strip('"') for ln in lines]
    return [ln for ln in out if len(ln) >= 8]


def choose_rewrite(
    original: str, candidates: list[str], embedder: Embedder, fallback: RuleRewriter | None = None,
    names: tuple[str, ...] | list[str] = (),
) -> tuple[str, float]:
    """The candidate with the highest BERTScore F1 among those inside the copy bound; if none is,
    the fallback's (rule rewriter) candidates inside the bound; if still none, the closest candidate
    of all, whose text the caller must not store (``within_bound`` is False for it): its embedding
    alone goes to the store."""
    def usable(c: str) -> bool:
        return 0.3 <= len(c) / max(1, len(original)) <= 3.0 and within_bound(c, original, names)

    pool = list(dict.fromkeys(c for c in candidates if c and c.strip()))
    valid = [c for c in pool if usable(c)]
    if not valid:
        extra = (fallback or RuleRewriter()).attempts(original)
        valid = [c for c in extra if usable(c)]
        pool += [c for c in extra if c not in pool]
    choice = valid or pool
    scores = bertscore_f1(embedder, choice, [original] * len(choice))
    best = max(range(len(choice)), key=lambda i: scores[i])
    return choice[best], scores[best]


def rewrite_prompts(prompts: list[str], rewriter: Rewriter, embedder: Embedder, k: int,
                    fallback: RuleRewriter | None = None, block: int = 16,
                    progress: Callable[[int], object] | None = None) -> list[str]:
    """The chosen rewrite of every prompt (``choose_rewrite``), candidates drawn ``block`` prompts
    at a time (``Rewriter.candidates_many``); a prompt with a single usable candidate keeps it
    without a BERTScore pass (the rule rewriter's one candidate). ``progress`` gets the number of
    prompts done after each block."""
    rule = fallback or RuleRewriter()
    out: list[str] = []
    for i in range(0, len(prompts), block):
        chunk = prompts[i:i + block]
        for p, cands in zip(chunk, rewriter.candidates_many(chunk, k), strict=True):
            valid = [c for c in dict.fromkeys(cands) if not is_copy(c, p) and 0.3 <= len(c) / max(1, len(p)) <= 3.0]
            out.append(valid[0] if len(valid) == 1 else choose_rewrite(p, cands, embedder, rule)[0])
        if progress is not None:
            progress(len(chunk))
    return out
