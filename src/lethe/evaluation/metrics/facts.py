"""Does a free-text reply state a known answer? The matchers of Lethe's real-knowledge experiments.

- :func:`has_answer`: the gold answer occurs in the reply (folded: case, accents, look-alikes), or a
  multi-word gold's last word does as a whole word ("Shakespeare" for "William Shakespeare"); suited to
  person names.
- :func:`fact_answer`: the strict matcher for facts: for some accepted answer, every content word the
  question does not already contain occurs in the reply as a whole word (or its plural), numbers not
  inside a longer number. The last-word rule of :func:`has_answer` would count "the Mississippi River"
  for "Colorado River" and question echoes ("The wall came down" for "The Berlin Wall").
- :func:`repetition`: share of repeated word 3-grams, a fluency proxy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lethe.text import fold, words

_ARTICLES = frozenset({"the", "a", "an", "and", "of", "in", "on"})


def has_answer(reply: str, gold: str) -> bool:
    """The gold answer (or, for a multi-word gold, its last word of 4+ letters) is in the reply."""
    g, r = fold(gold), fold(reply)
    if g in r:
        return True
    last = g.split()[-1] if g.split() else g
    return len(g.split()) > 1 and len(last) > 3 and re.search(rf"\b{re.escape(last)}\b", r) is not None


def fact_answer(reply: str, accept: Sequence[str], question: str) -> bool:
    """Some accepted answer's content words that the question lacks all occur in the reply."""
    q, r, folded = set(words(question)), set(words(reply)), fold(reply)

    def present(w: str) -> bool:
        if w.isdigit():  # not inside a longer number ("100°C" folds to "100degc")
            return bool(re.search(rf"(?<![0-9]){w}(?![0-9])", folded))
        return w in r or f"{w}s" in r or f"{w}es" in r  # a plural is the same answer ("British pounds")

    for a in accept:
        need = [w for w in words(a) if w not in _ARTICLES and w not in q] or [w for w in words(a) if w not in _ARTICLES]
        if need and all(present(w) for w in need):
            return True
    return False


def repetition(reply: str) -> float:
    """Share of repeated word 3-grams (0 = none); above 0.3 reads as degenerate."""
    w = reply.lower().split()
    grams = [tuple(w[i : i + 3]) for i in range(len(w) - 2)]
    return 0.0 if not grams else 1 - len(set(grams)) / len(grams)
