"""How one text is read: whole, in overlapping windows when long (every sentence at a bounded
cost) and through its decoded views (``lethe.guard.views``); and whether a window asks something."""

from __future__ import annotations

import re
from collections.abc import Callable

from lethe.guard.views import PROBE_CHARS, decoded_views

_SEGMENT = re.compile(r"(?<=[.?!;])\s+|\n+")
WINDOW_WORDS = 40  # a sentence longer than this is cut into windows of this many words, half overlapping
SHORT_UNIT_WORDS = 8  # a unit this short is also read with its neighbours ("What is her name?")
MAX_WINDOW_CHARS = 48_000  # characters of one text's windows embedded at most (see ``segments``)
REQUEST_WINDOW_CHARS = 96_000  # characters of windows embedded for one request at most, newest message first
NAMES_ONLY = ":names"  # reading label: a long text read whole counts its name matches only (``as_read``)
LONG_JOIN_WORDS = 60  # joined turns longer than this are read for names only (their parts are read in full)


def segments(text: str, min_words: int = 3, long_words: int = 25, max_chars: int = MAX_WINDOW_CHARS) -> list[str]:
    """Overlapping windows that cover every sentence and line of a long text (none for a short one,
    which is scored whole).

    The text is cut into units (sentences / lines; a unit over ``WINDOW_WORDS`` words into windows of
    that many words with half overlap); every unit of at least ``min_words`` words is a window, and so
    is every pair of neighbouring units one of which is short (``SHORT_UNIT_WORDS``), so a question
    split over two sentences ("... the writer born in Karachi. What is her name?") is read in one
    piece. The cost is bounded by ``max_chars`` characters embedded: when the windows would hold more,
    the pairs are dropped; a text whose units alone hold more (longer than any message the server
    accepts by default) keeps its first and last units up to the bound, and its middle is read by
    the name matcher only (which reads every text whole, at no embedding cost)."""
    if len(text.split()) <= long_words:
        return []
    units: list[str] = []
    for piece in _SEGMENT.split(text):
        ws = piece.split()
        if len(ws) > WINDOW_WORDS:
            step = WINDOW_WORDS // 2
            units += [" ".join(ws[i:i + WINDOW_WORDS]) for i in range(0, len(ws) - step, step)]
        elif ws:
            units.append(" ".join(ws))
    if len(units) < 2:
        return []
    singles = [u for u in units if len(u.split()) >= min_words]
    pairs = [f"{a} {b}" for a, b in zip(units, units[1:], strict=False)
             if min(len(a.split()), len(b.split())) <= SHORT_UNIT_WORDS]
    windows = list(dict.fromkeys(singles + pairs))
    if sum(map(len, windows)) > max_chars:
        windows = list(dict.fromkeys(singles))
    if sum(map(len, windows)) > max_chars:
        head: list[str] = []
        tail: list[str] = []
        used = 0
        for i in range(len(windows)):  # alternate first and last windows until the bound
            w = windows[i // 2] if i % 2 == 0 else windows[-1 - i // 2]
            if used + len(w) > max_chars:
                break
            (head if i % 2 == 0 else tail).append(w)
            used += len(w)
        windows = head + tail[::-1]
    return [w for w in windows if w != text]



def expand_text(text: str, probe: Callable[[str], bool] | None = None,
                max_chars: int = MAX_WINDOW_CHARS) -> list[tuple[str, str]]:
    """(how it was read, text) for ``text`` whole, its windows and its decoded views (each view
    windowed too when long), the windows within ``max_chars`` characters; duplicates dropped.

    A long text's windows are searched for views too (one level deep), so one encoded sentence in
    a long document is decoded, and the name probes stay linear in the text's length. A window
    that asks nothing (``asks``) counts its name matches only: a long document's statements each
    scored as a query would add up to false positives, one per few hundred sentences."""
    budget = max_chars
    windows = segments(text, max_chars=budget)
    out: dict[str, str] = {text: "whole" + (NAMES_ONLY if windows else "")}
    for w in windows:
        out.setdefault(w, "window" + ("" if asks(w) else NAMES_ONLY))
        budget -= len(w)
    for w in windows:
        for name, v in decoded_views(w, probe, depth=1):
            out.setdefault(v, f"window/view:{name}")
    for name, v in decoded_views(text, probe if len(text) <= PROBE_CHARS else None):
        view_windows = segments(v, max_chars=max(0, budget))
        out.setdefault(v, f"view:{name}" + (NAMES_ONLY if view_windows else ""))
        for w in view_windows:
            out.setdefault(w, f"view:{name}/window" + ("" if asks(w) else NAMES_ONLY))
            budget -= len(w)
    return [(how, t) for t, how in out.items()]


_ASKS = re.compile(
    r"\?|^\W*(?:(?:and|so|also|now|then|please|ok|okay|hey|but|finally|lastly|next|first|second)\W+)*"
    r"(?:what|who|whom|whose|which|where|when|why|how|is|are|was|were|do|does|did|can|could|would|will|should|"
    r"shall|may|might|has|have|had|tell|list|name|give|describe|explain|provide|share|summari[sz]e|write|find|"
    r"identify|show|recall|state|reveal|guess|compare|confirm|imagine|let|answer|say|spell|translate|decode|"
    r"complete|continue|finish|fill|elaborate|discuss|outline|detail|expand|clarify|specify|mention|recommend|"
    r"suggest)\b|"
    r"\b(?:tell me|tell us|i (?:want|need|would like|'d like|wish) to (?:know|learn|find out|hear)|i wonder|"
    r"let me know|can you|could you|would you|will you|please|answer|explain|describe|i(?:'m| am) curious|"
    r"complete the|fill in|the blank)\b",
    re.IGNORECASE)


def asks(text: str) -> bool:
    """Whether ``text`` asks for something: a question mark, a question or request opening
    ("Where ...", "Tell me ...", "Name ..."), or a request phrase ("I want to know", "can you",
    "please"). Statements ("She was born in Lisbon in 1971.") do not."""
    return _ASKS.search(text) is not None
