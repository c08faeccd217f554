"""Text normalisation applied before every detection step.

Folds the tricks attackers use to slip past string matching: Unicode compatibility
forms (NFKC: full-width letters, ligatures), homoglyphs and accents (transliteration to
ASCII with ``anyascii``), zero-width characters and odd spacing.
"""

from __future__ import annotations

import re
import unicodedata

from anyascii import anyascii

# Look-alike letters (Unicode confusables, Cyrillic and Greek) folded to the Latin letter they
# imitate; anyascii alone would transliterate them by sound (Cyrillic "с" -> "s", "х" -> "kh").
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "B", "е": "e", "к": "k", "м": "M", "н": "H", "о": "o", "р": "p", "с": "c", "т": "T",
    "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "І": "I", "Ј": "J", "Ѕ": "S",
    "α": "a", "ο": "o", "ρ": "p", "ν": "v", "ι": "i", "κ": "k", "τ": "t", "υ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Χ": "X", "Υ": "Y", "Ζ": "Z",
})
_LATIN = re.compile(r"[A-Za-z]")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    """NFKC, drop zero-width characters, transliterate to ASCII, collapse whitespace."""
    text = unicodedata.normalize("NFKC", text)
    text = _ZERO_WIDTH.sub("", text)
    text = _SPACES.sub(" ", text)
    text = " ".join(_fold_homoglyphs(w) for w in text.split(" "))
    text = anyascii(text)
    return _SPACES.sub(" ", text).strip()


def _fold_homoglyphs(word: str) -> str:
    """Fold look-alikes only in words that mix them with Latin letters (real Cyrillic or
    Greek words keep their letters and are transliterated by anyascii)."""
    if _LATIN.search(word):
        return word.translate(_CONFUSABLES)
    return word


def fold(text: str) -> str:
    """Normalised and lower-cased: the form used for matching."""
    return normalize(text).lower()


# English function words: ignored when asking which words of an answer are new relative to a prompt.
FUNCTION_WORDS = frozenset(
    "a an the of in on at to for by with and or is are was were be been it its this that these those "
    "who what which when where why how whose do does did from as about into their his her they he she "
    "i you we me my your our not no yes".split()
)


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
