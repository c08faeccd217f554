"""Entity extraction and entity coverage (ECS) for KFR / KRR (ReLearn, arXiv 2502.11190; zjunlp/unlearn).

Upstream asks an LLM for the key entities of a text; :class:`RuleEntityExtractor` is the offline
substitute, :class:`LLMEntityExtractor` the upstream approach through a configured chat backend.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

_STOP = set(
    """a an the and or but of in on at to from by for with without about into over under as is are was were be been
    being has have had do does did this that these those it its he she his her him they them their there here who whom
    whose which what when where why how not no yes also very more most much many some any each other such than then
    so can could would should will shall may might must i you we me my our your us one two author authors book books
    writer write writes wrote written work works known name named born question answer information however although
    because while after before during through between within notably particularly primarily often well""".split()
)
_CAP_STOP = {"The", "A", "An", "He", "She", "His", "Her", "It", "In", "On", "At", "This", "That", "They", "Their",
             "I", "We", "As", "Yes", "No", "However", "Although", "While", "There", "Some", "Many", "What",
             "Who", "When", "Where", "Why", "How", "Which", "Sorry", "Unfortunately", "Also", "Both", "Its", "One"}
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_DATE = re.compile(rf"\b(?:(?:{_MONTHS})\s+\d{{1,2}}(?:,\s*\d{{4}})?|\d{{1,2}}\s+(?:{_MONTHS})(?:\s+\d{{4}})?)\b")
_NUM = re.compile(r"\b\d[\d/.,:\-]*\d\b|\b\d\b")
_QUOTED = re.compile(r"[\"“']([^\"”']{3,80})[\"”']")
_CAPS = re.compile(r"\b[A-Z][\w'\-]*(?:\s+(?:of|the|and|de|van|von|al|el|la|du|da|del)?\s*[A-Z][\w'\-]*)*")
_WORD = re.compile(r"[A-Za-z][A-Za-z\-]+")


class EntityExtractor(ABC):
    name = "base"

    @abstractmethod
    def extract(self, text: str, question: str = "") -> list[str]: ...


class RuleEntityExtractor(EntityExtractor):
    """Offline substitute for ReLearn's LLM extractor: quoted titles, dates, numbers,
    capitalised spans (names, places, organisations) and long content words (core nouns),
    dropping any entity that already occurs in the question."""

    name = "rule"

    def __init__(self, min_noun_len: int = 6) -> None:
        self.min_noun_len = min_noun_len

    def extract(self, text: str, question: str = "") -> list[str]:
        q = question.lower()
        found: list[str] = []
        found += [m.strip() for m in _QUOTED.findall(text)]
        found += _DATE.findall(text)
        found += _NUM.findall(text)
        for m in _CAPS.findall(text):
            words = [w for w in m.split() if w not in _CAP_STOP]
            span = " ".join(words).strip()
            if span and span.lower() not in _STOP:
                found.append(span)
        caps_words = {w.lower() for f in found for w in f.split()}
        for w in _WORD.findall(text):
            lw = w.lower()
            if len(lw) >= self.min_noun_len and lw not in _STOP and lw not in caps_words and not lw.endswith("ly"):
                found.append(lw)
        out: list[str] = []
        seen: set[str] = set()
        for e in found:
            key = e.lower().strip(" .,;:")
            if not key or key in seen or (q and key in q):
                continue
            seen.add(key)
            out.append(e.strip(" .,;:"))
        return out


class LLMEntityExtractor(EntityExtractor):
    """ReLearn's approach: ask a chat model (the configured backend) for the key entities."""

    name = "llm"

    def __init__(self, backend) -> None:
        self.backend = backend

    def extract(self, text: str, question: str = "") -> list[str]:
        prompt = (
            "List the key entities (names, dates, places, organisations, titles, core nouns) in the text, "
            "excluding any that appear in the question. One per line, nothing else.\n\n"
            f"Question: {question}\nText: {text}"
        )
        out = self.backend.chat([{"role": "user", "content": prompt}], max_tokens=80).text
        items = [re.sub(r"^[\-\*\d.\s]+", "", line).strip() for line in out.splitlines()]
        return [i for i in dict.fromkeys(items) if i and i.lower() not in question.lower()]


def entity_coverage(ref_entities: Sequence[str], gen_entities: Sequence[str], embedder, threshold: float = 0.8) -> float:
    """ECS: share of reference entities matched by some generation entity at cosine >= 0.8.

    (Counting each reference entity once keeps ECS in [0, 1]; 0 when either list is empty.)"""
    if not ref_entities or not gen_entities:
        return 0.0
    r = embedder.encode(list(ref_entities))
    g = embedder.encode(list(gen_entities))
    sims = r @ g.T
    return float(np.mean(sims.max(axis=1) >= threshold))

