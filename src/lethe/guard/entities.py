"""Forgotten-name matching on keyed hashes, exact and fuzzy.

Names are never stored in clear: each name token is kept as a keyed BLAKE2b hash, and
so is its *deletion neighbourhood* (the token with one character removed, as in
SymSpell). Two tokens within one edit (insertion, deletion, substitution, adjacent
transposition) share at least one deletion variant, so typos still match while the
store never holds the name itself.

Unlike the DRAGON reference code, a single first name does not fire: the score is
graded by how much of the name is present (whole name 1.0, surname 0.6, first name
0.25), with word boundaries, and the detector fuses it with the other signals.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

from lethe.text import despace_letters, words

MIN_FUZZY_LEN = 5
FULL, SURNAME, GIVEN = 1.0, 0.6, 0.25
_FUZZY_DISCOUNT = 0.9
_NAME_STOP = {"the", "of", "and", "de", "la", "van", "von", "der", "da", "di", "le", "al", "el", "bin", "ibn"}


def _h(key: bytes, token: str) -> str:
    return hashlib.blake2b(token.encode(), key=key[:64], digest_size=8).hexdigest()


def _deletions(token: str) -> set[str]:
    return {token[:i] + token[i + 1:] for i in range(len(token))}


def entity_record(name: str, key: bytes) -> dict:
    """Hashed representation of one name: per token its hash and deletion-variant hashes."""
    toks = [t for t in words(name) if len(t) >= 2 and t not in _NAME_STOP]
    return {
        "tokens": [
            {"h": _h(key, t), "d": sorted(_h(key, d) for d in _deletions(t)) if len(t) >= MIN_FUZZY_LEN else []}
            for t in toks
        ]
    }


@dataclass
class EntityHit:
    request_id: str
    score: float
    matched_tokens: int
    total_tokens: int
    fuzzy: bool


class EntityMatcher:
    """Scores a query against every live request's hashed names."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self._entries: list[tuple[str, dict]] = []

    def set_entries(self, entries: list[tuple[str, dict]]) -> None:
        self._entries = [(rid, rec) for rid, rec in entries if rec.get("tokens")]

    def __len__(self) -> int:
        return len(self._entries)

    def _query_hashes(self, text: str) -> tuple[list[str], list[set[str]]]:
        toks = words(despace_letters(text))
        exact = [_h(self.key, t) for t in toks]
        fuzzy = [
            {_h(self.key, d) for d in _deletions(t)} | {_h(self.key, t)} if len(t) >= MIN_FUZZY_LEN - 1 else set()
            for t in toks
        ]
        return exact, fuzzy

    def match(self, text: str) -> list[EntityHit]:
        if not self._entries:
            return []
        exact, fuzzy = self._query_hashes(text)
        exact_set = set(exact)
        hits: list[EntityHit] = []
        for rid, rec in self._entries:
            toks = rec["tokens"]
            found: list[bool] = []
            any_fuzzy = False
            for t in toks:
                if t["h"] in exact_set:
                    found.append(True)
                    continue
                dels = set(t["d"])
                if dels and any((t["h"] in f) or (dels & f) for f in fuzzy):
                    found.append(True)
                    any_fuzzy = True
                    continue
                found.append(False)
            n = sum(found)
            if n == 0:
                continue
            if n == len(toks):
                score = FULL
            elif len(toks) > 1 and found[-1]:
                score = SURNAME if n == 1 else SURNAME + (FULL - SURNAME) * (n - 1) / (len(toks) - 1)
            else:
                score = GIVEN * n / max(1, len(toks) - 1) if len(toks) > 1 else FULL
            if any_fuzzy:
                score *= _FUZZY_DISCOUNT
            hits.append(EntityHit(rid, score, n, len(toks), any_fuzzy))
        hits.sort(key=lambda h: -h.score)
        return hits


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
