"""Decoded views of a query: what an encoding hides from the detector.

An attacker who knows the guard matches names and meanings can send the forgotten question
base64-encoded, in ROT13, in leetspeak, reversed, or spelled out letter by letter, and ask the
model to decode it first; LLMs read these forms (Wei et al., "Jailbroken: How Does LLM Safety
Training Fail?", NeurIPS 2023, Sec. 3: base64, ROT13, leetspeak and letter-level obfuscation).
Each view here is a tiny class with a cheap applicability test and a decoder; the detector
scores every decoded view next to the text itself, so the encoding buys nothing.

Two ways a view is taken:

* ``applies`` (a regular expression or a count of common English words): the text looks
  encoded, so the decoded text is scored in full (one more embedding);
* ``probe``: a character-level transform (ROT13, reversal, leetspeak) whose decoding is cheap is
  also decoded when the test fails, and kept only if ``probe(decoded)`` says so (the detector
  passes its keyed-hash name matcher, microseconds per text). This catches a name encoded inside
  otherwise plain English, where the word-count test cannot see the encoding.

What no view reads: images and other non-text parts, initials ("M. Q.-H."), homophones and
descriptions of a name, encryption with a key, or encodings nested more than ``MAX_DEPTH`` deep.
New views register with ``@VIEWS.register("name")``.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from urllib.parse import unquote

from lethe.registry import Registry
from lethe.text import FUNCTION_WORDS, romanizations

VIEWS: Registry[View] = Registry("view")
MAX_DEPTH = 2  # a decoded view is itself searched for views once more (base64 of ROT13, ...)
MAX_VIEWS = 8  # decoded views scored per text at most
MAX_VIEW_CHARS = 48_000  # a decoded view longer than this is cut (the detector windows long views itself)
PROBE_CHARS = 4000  # longer texts are probed window by window (the detector's windows), not whole

_ALPHA_WORD = re.compile(r"[A-Za-z]+")


def english_words(text: str, limit: int = 2000) -> int:
    """How many of the first ``limit`` characters' words are common English function words (two
    letters or more: "a" and "I" read the same backwards)."""
    return sum(1 for w in _ALPHA_WORD.findall(text[:limit]) if len(w) > 1 and w.lower() in FUNCTION_WORDS)


def _printable(text: str) -> bool:
    """Decoded bytes that read as text: mostly letters and spaces, at least one short word."""
    if len(text) < 4:
        return False
    good = sum(ch.isprintable() or ch in "\n\t" for ch in text)
    letters = sum(ch.isalpha() for ch in text)
    return good >= 0.95 * len(text) and letters >= 0.5 * len(text.replace(" ", "")) and " " in text.strip()


class View(ABC):
    """One decoding. ``probe`` views are cheap enough to decode on every text."""

    name = "view"
    probe = False

    @abstractmethod
    def applies(self, text: str) -> bool:
        """Cheap test: does the text look encoded this way?"""

    @abstractmethod
    def decode(self, text: str) -> list[str]:
        """The decoded text(s); empty when nothing decodes."""


class _Substitute(View):
    """Views that decode spans found by a regular expression and splice them back into the text."""

    pattern: re.Pattern[str]

    def applies(self, text: str) -> bool:
        return self.pattern.search(text) is not None

    def span(self, s: str) -> str | None:
        raise NotImplementedError

    def decode(self, text: str) -> list[str]:
        found = False

        def repl(m: re.Match[str]) -> str:
            nonlocal found
            out = self.span(m.group(0))
            if out is None:
                return m.group(0)
            found = True
            return f" {out} "

        out = self.pattern.sub(repl, text)
        return [out.strip()] if found else []


@VIEWS.register("base64")
class Base64View(_Substitute):
    """Standard and URL-safe base64 (RFC 4648) runs of 12+ characters that decode to text."""

    name = "base64"
    pattern = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{12,}={0,2}")

    def applies(self, text: str) -> bool:
        return any(not m.group(0).isalpha() or not m.group(0).islower() for m in self.pattern.finditer(text))

    def span(self, s: str) -> str | None:
        body = s.rstrip("=")
        body += "=" * (-len(body) % 4)
        for alt in (None, b"-_"):
            try:
                raw = base64.b64decode(body, altchars=alt, validate=True)
                out = raw.decode("utf-8")
            except (binascii.Error, ValueError):
                continue
            if _printable(out):
                return out
        return None


@VIEWS.register("hex")
class HexView(_Substitute):
    """Bytes written as hexadecimal pairs ("57 68 65 72 65", "5768657265")."""

    name = "hex"
    pattern = re.compile(r"(?<![0-9A-Za-z])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Za-z])")

    def span(self, s: str) -> str | None:
        try:
            out = bytes.fromhex(re.sub(r"[ :]", "", s)).decode("utf-8")
        except ValueError:
            return None
        return out if _printable(out) else None


@VIEWS.register("percent")
class PercentView(_Substitute):
    """URL percent-encoding (RFC 3986): three or more ``%XX`` escapes in one run."""

    name = "percent"
    pattern = re.compile(r"\S*(?:%[0-9A-Fa-f]{2}\S*){3,}")

    def span(self, s: str) -> str | None:
        out = unquote(s)
        return out if out != s else None


class _WordGain(View):
    """Character transforms that apply when the transformed text reads more like English."""

    probe = True

    def transform(self, text: str) -> str:
        raise NotImplementedError

    def applies(self, text: str) -> bool:
        after = english_words(self.transform(text[:2000]))
        return after >= 2 and after > 2 * english_words(text)

    def decode(self, text: str) -> list[str]:
        out = self.transform(text)
        return [out] if out != text else []


@VIEWS.register("rot13")
class Rot13View(_WordGain):
    """ROT13 (and so any Caesar shift of 13) of the whole text."""

    name = "rot13"

    def transform(self, text: str) -> str:
        return codecs.encode(text, "rot13")


@VIEWS.register("reversed")
class ReversedView(_WordGain):
    """The text read backwards, character by character ("?nrob ... erehW")."""

    name = "reversed"

    def transform(self, text: str) -> str:
        return text[::-1]


@VIEWS.register("reversed_words")
class ReversedWordsView(_WordGain):
    """Every word spelled backwards in place ("erehW saw losiraM nrob?")."""

    name = "reversed_words"
    _token = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")

    def transform(self, text: str) -> str:
        return self._token.sub(lambda m: m.group(0)[::-1], text)


@VIEWS.register("word_order")
class WordOrderView(View):
    """Words in reverse order ("born Quintero-Hale Marisol was where"), recognised by a question
    word or a question mark at the wrong end."""

    name = "word_order"
    _tail = re.compile(r"\b(?:what|where|who|whom|whose|when|which|how|why)\W*$", re.IGNORECASE)

    def applies(self, text: str) -> bool:
        t = text.strip()
        return bool(t) and (t.startswith("?") or self._tail.search(t[-40:]) is not None)

    def decode(self, text: str) -> list[str]:
        toks = text.strip().lstrip("?").split()
        return [" ".join(reversed(toks)) + "?"] if len(toks) > 1 else []


_LEET_MAP = {"4": "a", "@": "a", "8": "b", "3": "e", "6": "g", "9": "g", "1": "i", "!": "i", "0": "o", "5": "s",
             "$": "s", "7": "t", "+": "t", "2": "z", "|": "l"}
_LEET = str.maketrans(_LEET_MAP)
_LEET_L = str.maketrans(_LEET_MAP | {"1": "l", "!": "l"})  # "1" stands for "l" as often as for "i"


@VIEWS.register("leet")
class LeetView(View):
    """Leetspeak: digits and symbols standing for letters inside words ("M4r1s0l", "Qu1nt3r0")."""

    name = "leet"
    probe = True
    _word = re.compile(r"(?<![\w@$|!+])[\w@$|!+]{1,24}(?![\w@$|!+])")
    _inner = re.compile(r"[A-Za-z][0-9@$|!+]+[A-Za-z]")  # a stand-in between letters: "M4r", not "mp3"
    _ordinal = re.compile(r"\d+(?:st|nd|rd|th|s)", re.IGNORECASE)

    def applies(self, text: str) -> bool:
        return any(self._inner.search(m.group(0)) for m in self._word.finditer(text))

    def _token(self, word: str, table: dict[int, str]) -> str:
        """A word with letters and stand-ins ("7h3", "0f"), or a one- or two-digit stand-in for a
        short function word ("15" for "is"), decoded; anything else (years, ordinals) kept."""
        if any(c.isalpha() for c in word) and any(c in _LEET_MAP for c in word) and not self._ordinal.fullmatch(word):
            return word.translate(table)
        if word.isdigit() and len(word) <= 2 and word.translate(table) in FUNCTION_WORDS:
            return word.translate(table)
        return word

    def decode(self, text: str) -> list[str]:
        out = [self._word.sub(lambda m, t=table: self._token(m.group(0), t), text) for table in (_LEET, _LEET_L)]
        return [t for t in dict.fromkeys(out) if t != text]


_NATO = {w: w[0] for w in ("alfa alpha bravo charlie delta echo foxtrot golf hotel india juliet juliett kilo lima "
                           "mike november oscar papa quebec romeo sierra tango uniform victor whiskey xray x-ray "
                           "yankee zulu").split()}


@VIEWS.register("spelled")
class SpelledView(View):
    """Words spelled out letter by letter ("M-a-r-i-s-o-l", "M a r i s o l", "M, A, R") or in the
    NATO alphabet ("Mike Alfa Romeo ...")."""

    name = "spelled"
    _letters = re.compile(r"(?<![A-Za-z])(?:[A-Za-z](?:\s*[-.,_*/|]\s*|\s+)){3,}[A-Za-z](?![A-Za-z])")
    _nato = re.compile(r"\b(?:(?:" + "|".join(sorted(_NATO, key=len, reverse=True)) + r")\b[\s,.-]*){3,}",
                       re.IGNORECASE)

    def applies(self, text: str) -> bool:
        return any(m.group(0).count(" ") < len(m.group(0)) for m in self._letters.finditer(text)) \
            or self._nato.search(text) is not None

    @staticmethod
    def _join(run: str) -> str:
        """Letters of one spelled run; with dashes or dots between letters a space is a word break,
        with spaces only a capital after a small letter starts a new word ("M a r y S u e")."""
        if re.search(r"[-.,_*/|]", run):
            joined = re.sub(r"\s+", " ", re.sub(r"\s*[-.,_*/|]\s*", "", run)).strip()
        else:
            joined = re.sub(r"[^A-Za-z]", "", run)
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", joined)

    @staticmethod
    def _nato_words(run: str) -> str:
        """NATO code words to letters; a comma, slash, semicolon or spaced dash ends a word."""
        words_ = re.split(r"\s*[,/;]\s*|\s+-\s+|\s{2,}", run.strip(" ,.-"))
        out = ["".join(_NATO.get(w.lower(), "") for w in re.findall(r"[A-Za-z-]+", g)) for g in words_]
        return " ".join(w.capitalize() for w in out if w)

    def decode(self, text: str) -> list[str]:
        out = self._letters.sub(lambda m: " " + self._join(m.group(0)) + " ", text)
        out = self._nato.sub(lambda m: " " + self._nato_words(m.group(0)) + " ", out)
        out = re.sub(r"\s+", " ", out).strip()
        return [out] if out != re.sub(r"\s+", " ", text).strip() else []


@VIEWS.register("script")
class ScriptView(View):
    """Names written in another script, romanised the way they are written back into Latin
    (``lethe.text.romanizations``: Cyrillic with "h" and "w", CJK one syllable a word). Probe
    only: kept when the name matcher finds a forgotten name in it, so it costs no embedding
    otherwise. (``normalize`` already gives every text its anyascii romanisation.)"""

    name = "script"
    probe = True

    def applies(self, text: str) -> bool:
        return False

    def decode(self, text: str) -> list[str]:
        return romanizations(text) if not text.isascii() else []


def _instances() -> list[View]:
    names = tuple(VIEWS)
    if _CACHE.get("names") != names:
        _CACHE["names"], _CACHE["views"] = names, [VIEWS.create(n) for n in names]
    return _CACHE["views"]  # type: ignore[return-value]


_CACHE: dict[str, object] = {}


def decoded_views(text: str, probe: Callable[[str], bool] | None = None, depth: int = MAX_DEPTH,
                  max_views: int = MAX_VIEWS) -> list[tuple[str, str]]:
    """(view name, decoded text) for every view that applies to ``text`` (or whose cheap decoding
    ``probe`` accepts), searched ``depth`` levels deep; at most ``max_views``, duplicates dropped."""
    out: list[tuple[str, str]] = []
    seen = {text}
    frontier = [("", text)]
    for _ in range(max(0, depth)):
        nxt: list[tuple[str, str]] = []
        for label, t in frontier:
            can_probe = probe is not None and len(t) <= PROBE_CHARS  # a long decoded view: windows only
            for view in _instances():
                if view.applies(t):
                    decoded = view.decode(t)
                elif view.probe and can_probe:
                    decoded = [d for d in view.decode(t) if probe(d)]  # type: ignore[misc]
                else:
                    continue
                for d in decoded:
                    d = d[:MAX_VIEW_CHARS]
                    if d.strip() and d not in seen:
                        seen.add(d)
                        tag = f"{label}+{view.name}" if label else view.name
                        out.append((tag, d))
                        nxt.append((tag, d))
                        if len(out) >= max_views:
                            return out
        frontier = nxt
    return out
