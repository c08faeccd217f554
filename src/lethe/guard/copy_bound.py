"""The copy bound: a stored rewrite must *differ* from its original, not merely not equal it.

DRAGON (Wang et al. 2025, arXiv 2511.05784, Sec. 3.1) keeps an LLM paraphrase of each forget
prompt; Lethe states the rule the paper leaves implicit. On the folded texts with the *protected*
tokens masked (the request's names, capitalised words other than a sentence-opening question word,
and tokens with digits: the facts any paraphrase must keep, such as titles, places and dates):

* no run of more than ``MAX_COMMON_RUN`` characters of the original appears in the rewrite;
* the character-level similarity (``difflib.SequenceMatcher.ratio``, protected tokens removed)
  is at most ``MAX_RATIO``.

How the two limits were chosen (against human-written paraphrases) is in docs/guard-inputs.md.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

from lethe.text import FUNCTION_WORDS, fold

MAX_COMMON_RUN = 16  # characters of the original (names and facts masked) a rewrite may repeat in one run
MAX_RATIO = 0.65  # difflib ratio of the masked texts a rewrite may reach

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_OPENERS = FUNCTION_WORDS | frozenset(
    "can could would will should shall may might must tell please name list describe explain give provide "
    "share discuss summarize summarise outline identify has have had did does do is are was were in on at "
    "for from as if according regarding considering given".split()
)


def protected_tokens(original: str, names: tuple[str, ...] | list[str] = ()) -> set[str]:
    """Folded tokens a paraphrase is expected to keep: the names, capitalised words (a
    sentence-opening question word excepted), tokens containing a digit and words too long
    to fit in the run bound ("autobiographical")."""
    out = {t for n in names for t in _TOKEN.findall(fold(n)) if len(t) > 1}
    for i, m in enumerate(_TOKEN.finditer(original)):
        tok = re.sub(r"['’]s$", "", m.group(0))
        low = fold(tok)
        if len(low) < 2 and not low.isdigit():
            continue
        if any(c.isdigit() for c in tok) or (tok[:1].isupper() and not (i == 0 and low in _OPENERS)) \
                or len(low) > MAX_COMMON_RUN - 3:  # a word this long is a term no paraphrase can split
            out.add(low)
    return out


def _masked(text: str, protected: set[str], mark: str) -> str:
    """Folded ``text`` with every protected token replaced by ``mark``."""
    if not protected:
        return fold(text)
    pat = re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(t) for t in sorted(protected, key=len, reverse=True))
                     + r")(?![a-z0-9])")
    return pat.sub(mark, fold(text))


def copy_measures(candidate: str, original: str, names: tuple[str, ...] | list[str] = ()) -> tuple[int, float]:
    """(longest common run, similarity ratio) of ``candidate`` to ``original`` with the protected
    tokens masked; a run never spans a masked token (the two sides get different marks)."""
    prot = protected_tokens(original, names)
    a, b = _masked(candidate, prot, "\x01"), _masked(original, prot, "\x00")
    run = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size
    a2, b2 = (re.sub(r"\s+", " ", s.replace(m, " ")).strip() for s, m in ((a, "\x01"), (b, "\x00")))
    ratio = SequenceMatcher(None, a2, b2, autojunk=False).ratio() if a2 or b2 else 1.0
    return run, ratio


def within_bound(candidate: str, original: str, names: tuple[str, ...] | list[str] = ()) -> bool:
    """Whether ``candidate`` may be stored as a rewrite of ``original`` (the module's copy bound)."""
    if fold(candidate) == fold(original):
        return False
    run, ratio = copy_measures(candidate, original, names)
    return run <= MAX_COMMON_RUN and ratio <= MAX_RATIO


def is_copy(candidate: str, original: str, names: tuple[str, ...] | list[str] = ()) -> bool:
    """``candidate`` is too close to ``original`` to be stored (outside the copy bound)."""
    return not within_bound(candidate, original, names)
