"""Rewriting forget prompts into the negative samples the store keeps.

DRAGON (Wang et al. 2025, arXiv 2511.05784, Sec. 3.1): an LLM writes k paraphrases of
each forget prompt and the one with the highest BERTScore F1 against the original is
kept (rejection sampling). Lethe adds one rule the paper leaves implicit: a rewrite
that is the original again (after normalisation) or a near-copy of it is rejected, so
the original never reaches the store. When every candidate is rejected the
deterministic rule rewriter is used instead.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from rapidfuzz import fuzz

from lethe.backends.base import ChatBackend
from lethe.backends.embeddings import Embedder
from lethe.guard.bertscore import bertscore_f1
from lethe.registry import Registry
from lethe.text import fold

REWRITERS: Registry[Rewriter] = Registry("rewriter")
MAX_SIMILARITY = 92.0  # rapidfuzz ratio (0-100) above which a rewrite counts as a copy

_SYNONYMS = [
    (r"\bprimarily\b", "mainly"), (r"\bmainly\b", "chiefly"), (r"\bwrite\b", "author works"),
    (r"\bwritten\b", "authored"), (r"\bwrote\b", "authored"), (r"\bbooks\b", "works"),
    (r"\bbook\b", "work"), (r"\bborn\b", "brought into the world"), (r"\bparents\b", "mother and father"),
    (r"\bfather\b", "dad"), (r"\bmother\b", "mom"), (r"\bprofession\b", "occupation"),
    (r"\bjob\b", "occupation"), (r"\bgenre\b", "literary category"), (r"\bawards?\b", "honours"),
    (r"\bfamous\b", "well known"), (r"\binfluenced\b", "shaped"), (r"\bsome\b", "a few"),
    (r"\bhow\b", "in what way"), (r"\bdescribe\b", "characterise"), (r"\bexplain\b", "clarify"),
    (r"\bmake\b", "produce"), (r"\bcreate\b", "produce"), (r"\buse\b", "employ"),
    (r"\bwhat is\b", "what's"), (r"\bdoes\b", "would"), (r"\bcan\b", "could"),
]


def is_copy(candidate: str, original: str) -> bool:
    a, b = fold(candidate), fold(original)
    return a == b or b in a or fuzz.ratio(a, b) >= MAX_SIMILARITY


class Rewriter(ABC):
    @abstractmethod
    def candidates(self, prompt: str, k: int) -> list[str]: ...


@REWRITERS.register("rule")
class RuleRewriter(Rewriter):
    """Deterministic paraphrase: synonym substitution and reframing. Fast, no model call."""

    def __init__(self, **_: object) -> None:
        pass

    def rewrite(self, prompt: str) -> str:
        text = prompt.strip()
        changed = 0
        for pat, rep in _SYNONYMS:
            text, n = re.subn(pat, rep, text, count=1, flags=re.IGNORECASE)
            changed += n
            if changed >= 3:
                break
        body = text.rstrip("?. ")
        body = body[:1].lower() + body[1:]
        out = f"I would like to know {body}?"
        if is_copy(out, prompt):
            parts = body.split(" ", 1)
            out = f"Question about this: {parts[-1]}?"
        return out

    def candidates(self, prompt: str, k: int) -> list[str]:
        return [self.rewrite(prompt)]


@REWRITERS.register("llm")
class LLMRewriter(Rewriter):
    """Asks the configured chat model for k paraphrases in one call."""

    PROMPT = (
        "Paraphrase the question below. Write {k} different paraphrases that ask for exactly the same "
        "information, one per line, numbered 1. to {k}. Do NOT answer the question.\n\n"
        'Question: "{q}"'
    )

    def __init__(self, backend: ChatBackend, temperature: float = 0.7, **_: object) -> None:
        self.backend = backend
        self.temperature = temperature

    def candidates(self, prompt: str, k: int) -> list[str]:
        messages = [
            {"role": "system", "content": "You rewrite questions. You never answer them."},
            {"role": "user", "content": self.PROMPT.format(k=k, q=prompt)},
        ]
        kw = {"prefill": "1."} if self.backend.supports_prefill else {}
        text = self.backend.chat(messages, max_tokens=40 * k, temperature=self.temperature, **kw).text
        if kw:
            text = "1." + text
        lines = [re.sub(r"^\s*(?:\d+[.):]|[-*])\s*", "", ln).strip().strip('"') for ln in text.splitlines()]
        return [ln for ln in lines if len(ln) >= 8][:k]


def choose_rewrite(
    original: str, candidates: list[str], embedder: Embedder, fallback: RuleRewriter | None = None
) -> tuple[str, float]:
    """The candidate with the highest BERTScore F1 that is not a copy of the original."""
    valid = [c for c in dict.fromkeys(candidates) if not is_copy(c, original)
             and 0.3 <= len(c) / max(1, len(original)) <= 3.0]
    if not valid:
        valid = [(fallback or RuleRewriter()).rewrite(original)]
    scores = bertscore_f1(embedder, valid, [original] * len(valid))
    best = max(range(len(valid)), key=lambda i: scores[i])
    return valid[best], scores[best]
