"""A forget request's subject guessed from its prompts: the person most of them name."""

from __future__ import annotations

import re
from collections import Counter

_CAP_SEQ = re.compile(r"\b([A-Z][\w'\-]+(?:\s+(?:[A-Z][\w'\-]+|de|van|von|al|bin|da|di|la|le)){1,3})")
_NOT_NAME_START = {"What", "Who", "Which", "When", "Where", "How", "Why", "Is", "Are", "Did", "Does", "Do",
                   "Can", "Could", "In", "The", "Has", "Have", "Was", "Were", "Tell", "Please", "Name", "Give"}


def guess_subject(prompts: list[str]) -> str | None:
    """The most frequent capitalised multi-word sequence across the prompts (a person's name in TOFU-like data)."""
    counts: Counter[str] = Counter()
    for p in prompts:
        seen = set()
        for m in _CAP_SEQ.finditer(p):
            words_ = m.group(1).split()
            while words_ and words_[0] in _NOT_NAME_START:
                words_ = words_[1:]
            cand = " ".join(w.removesuffix("'s").removesuffix("’s") for w in words_)
            if len(cand.split()) >= 2 and cand not in seen:
                seen.add(cand)
                counts[cand] += 1
    if not counts:
        return None
    best, n = counts.most_common(1)[0]
    return best if n >= max(2, len(prompts) // 5) or len(prompts) < 4 else None
