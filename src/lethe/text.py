"""Text normalisation applied before every detection step.

Folds the tricks attackers use to slip past string matching: Unicode compatibility
forms (NFKC: full-width letters, ligatures), homoglyphs and accents (transliteration to
ASCII with ``anyascii``), zero-width characters and odd spacing.
"""

from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """NFKC, drop zero-width characters, transliterate to ASCII, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = _ZERO_WIDTH.sub("", text)
    text = anyascii(text)
    return _SPACES.sub(" ", text).strip()


def fold(text: str) -> str:
    """Normalised and lower-cased: the form used for matching."""
    return normalize(text).lower()


def words(text: str) -> list[str]:
    """Lower-case ASCII word tokens of the folded text."""
    return _WORD.findall(fold(text))


def despace_letters(text: str) -> str:
    """Join runs of single letters separated by spaces or dots ("H i n a" -> "Hina")."""
    return re.sub(
        r"\b(?:[A-Za-z][ .\-_]){2,}[A-Za-z]\b",
        lambda m: re.sub(r"[ .\-_]", "", m.group(0)),
        text,
    )
