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


# Cyrillic as Western names are written back from it (Хина -> Hina, Аль-Хашим -> Al-Hashim): "h" for
# х, soft and hard signs dropped, й as "i"; anyascii's scientific-style "kh" / "'" is kept as well.
_CYRILLIC_WEST = str.maketrans({
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "yo", "ж": "zh", "з": "z", "и": "i",
    "й": "i", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o", "п": "p", "р": "r", "с": "s", "т": "t",
    "у": "u", "ф": "f", "х": "h", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "",
    "э": "e", "ю": "yu", "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "w",
})
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_CJK_CHAR = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _cyrillic_west(text: str, w: bool) -> str:
    def word(m: re.Match[str]) -> str:
        src = m.group(0)
        out = src.lower().translate(_CYRILLIC_WEST)
        if w:  # в stands for both v and w in Western names (Уильямс, Кувейти); уи- for wi-
            out = out.replace("v", "w")
            out = re.sub(r"^ui", "wi", out)
        return out[:1].upper() + out[1:] if src[:1].isupper() else out

    return re.sub(r"[\u0400-\u04ff]+", word, text)


def _cjk_syllables(text: str) -> str:
    """CJK ideographs romanised one syllable a word ("张伟" -> "Zhang Wei", not "ZhangWei")."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(anyascii(c) for c in m.group(0)) + " ", text)


def _cjk_names(text: str) -> str:
    """A run of two or three ideographs read as a Chinese name: surname, then the given name's
    syllables joined ("张小明" -> "Zhang Xiaoming"), the form pinyin names are written in."""
    def name(m: re.Match[str]) -> str:
        syl = [anyascii(c) for c in m.group(0)]
        if not 2 <= len(syl) <= 3:
            return " " + " ".join(syl) + " "
        given = "".join(syl[1:]).lower()
        return f" {syl[0]} {given[:1].upper()}{given[1:]} "

    return _CJK_RUN.sub(name, text)


def romanizations(text: str) -> list[str]:
    """Other Latin renderings of a text written (partly) in Cyrillic or CJK script, besides the one
    ``normalize`` gives: what a name looks like when it was written back from the other script.
    Empty for Latin-only text. Arabic and other abjads are not covered (their short vowels are not
    written, so no single Latin form can be recovered)."""
    text = unicodedata.normalize("NFKC", text)
    out: list[str] = []
    if _CYRILLIC.search(text):
        out += [_cyrillic_west(text, w=False), _cyrillic_west(text, w=True)]
    if _CJK_CHAR.search(text):
        out += [_cjk_syllables(text), _cjk_names(text)]
    base = normalize(text)
    return [v for v in dict.fromkeys(normalize(v) for v in out) if v != base]
