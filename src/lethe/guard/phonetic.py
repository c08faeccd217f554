"""Names across scripts: consonant skeleton keys, matched on keyed hashes.

A name written back from Arabic or Chinese script has no single Latin spelling: Arabic does not
write short vowels ("هينا أمين" is "hyn 'myn" letter by letter for Hina Ameen) and Chinese spells a
foreign name in syllables of its own ("希娜·阿明", Xi Na A Ming). What survives every script is the
order of the consonants, up to the sounds a script lacks. So each forgotten full name also gets a
*skeleton key*: its consonants in order, in classes that merge what scripts confuse (b/p, f/v,
d/t, l/r, s/z/sh/x, g/k/q, kh/h), vowels, ``w`` and ``y`` dropped, repeats collapsed:

    Hina Ameen -> HNMN   هينا أمين -> HNMN   Хина Амин -> HNMN   希娜·阿明 -> SNMN (one edit)

This is the consonant-skeleton idea of phonetic name matching (Soundex, Russell and Odell 1918;
Daitch-Mokotoff for Slavic names; for Arabic, Aqeel et al., "On the development of name search
techniques for Arabic", JASIST 2006) applied across scripts; Chinese syllables are read in pinyin
with the Xinhua transliteration conventions (``er`` for a syllable-final r/l, ``x`` for s/sh, ``w``
for v in "Da Wei", "Lei Wen").

The key is stored only as keyed BLAKE2b hashes, like the name tokens (``lethe.guard.entities``):
the hash of the key and, for keys of ``MIN_FUZZY_KEY`` classes or more, of its one-deletion
variants with and without their position, so a query span within one edit (insertion, deletion,
substitution) of the key matches. A query written in another script is read as every run of up to
``MAX_SPAN`` consecutive words (Chinese: syllables); only a whole-name key fires, and only in text
that holds non-Latin letters, so ordinary English queries pay nothing.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache

from anyascii import anyascii

MIN_FUZZY_KEY = 7  # keys this long match within any one edit; shorter ones are too common a skeleton at scale
MIN_END_FUZZY_KEY = 6  # keys this long also match with one class more or less at the end (Marais, Марэ)
MIN_KEY = 4  # a name whose key is shorter than this gets none (too common a skeleton)
MAX_SPAN = 12  # words / syllables read together at most (a Chinese full name has up to a dozen syllables)

_DIGRAPHS = (("shch", "S"), ("tsh", "C"), ("sch", "S"), ("sh", "S"), ("zh", "J"), ("ch", "C"), ("kh", "H"),
             ("gh", "K"), ("ph", "F"), ("th", "T"), ("dh", "S"), ("ts", "S"), ("tz", "S"), ("ck", "K"),
             ("ng", "N"), ("qu", "K"))
_CLASS = str.maketrans({"b": "B", "p": "B", "f": "F", "v": "F", "c": "K", "g": "K", "k": "K", "q": "K",
                        "j": "J", "s": "S", "z": "S", "x": "S", "d": "T", "t": "T", "l": "L", "r": "L",
                        "m": "M", "n": "N", "h": "H"})
_DROP = re.compile(r"[aeiouyw]")
_PINYIN = (("zh", "J"), ("ch", "C"), ("sh", "S"), ("q", "C"), ("x", "S"), ("z", "S"), ("c", "S"), ("j", "K"))
_NON_LATIN = re.compile(r"[^\W\d_A-Za-z\u00c0-\u024f]")  # a letter outside the Latin script
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CJK_RUN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_NAME_SEPS = "·•・‧･‐-"  # what separates the parts of a transliterated name in CJK text
_SEP = re.compile(f"\\s*[{_NAME_SEPS}]\\s*")
_CJK_CHAIN = re.compile(f"{_CJK_RUN.pattern}(?:\\s*[{_NAME_SEPS}]\\s*{_CJK_RUN.pattern})+")
_LETTERS = re.compile(r"[^\W\d_]+")


def _collapse(key: str) -> str:
    return re.sub(r"(.)\1+", r"\1", key)


@lru_cache(maxsize=65536)
def skeleton(word: str) -> str:
    """The consonant classes of one Latin-letter word ("Hashim" -> "HSM", "Ameen" -> "MN")."""
    w = re.sub(r"[^a-z]", "", anyascii(word).lower())
    if len(w) > 2 and w.endswith("h") and w[-2] not in "cst":
        w = w[:-1]  # a final h is silent (Arabic ta marbuta, "Sarah")
    for a, b in _DIGRAPHS:
        w = w.replace(a, b)
    return _collapse(_DROP.sub("", w).translate(_CLASS))


@lru_cache(maxsize=65536)
def pinyin_skeleton(syllable: str, w_as_v: bool = False, x_as_h: bool = False, nasal: bool = True) -> str:
    """One pinyin syllable of a transliterated name ("Xi" -> "S", "Er" -> "L", "Wei" -> "" or "F").

    Xinhua transliteration writes "hi" as 希 (xi) and "sh" as 希 too, "v" as w (大卫 Da Wei for David),
    and adds nasal finals (威廉 Wei Lian for "Wil-"): ``x_as_h``, ``w_as_v`` and ``nasal`` (False:
    a final n / ng dropped) read those the other way."""
    s = syllable.lower()
    if s == "er":
        return "L"
    if w_as_v and s.startswith("w"):
        s = "v" + s[1:]
    if x_as_h and s.startswith("x"):
        s = "h" + s[1:]
    if not nasal and len(s) > 2:
        s = re.sub(r"n?g?$", "", s) if s.endswith(("n", "ng")) else s
    for a, b in _PINYIN:
        if s.startswith(a):
            s = b + s[len(a):]
            break
    return skeleton(s) if s.islower() else s[0] + skeleton(s[1:])


def name_key(name: str) -> str:
    """A full name's skeleton key (its words' skeletons in order, repeats collapsed)."""
    return _collapse("".join(skeleton(w) for w in _LETTERS.findall(anyascii(name))))


def non_latin(text: str) -> bool:
    """Whether ``text`` holds a letter of a script other than Latin (Cyrillic, Arabic, CJK, ...)."""
    return _NON_LATIN.search(text) is not None


def _spans(words: list[str], parts: list[int] | None, max_len: int, keys: dict[str, set[int]]) -> None:
    """Add the keys of every run of two to ``MAX_SPAN`` words (a full name has two words or more)
    starting and ending on a consonant, at most ``max_len`` + 1 classes long, with the number of
    words of the run; with ``parts``, only runs that cross a part boundary (the number of parts)."""
    for i in range(len(words)):
        if not words[i]:
            continue
        key = ""
        for j in range(i, min(len(words), i + MAX_SPAN)):
            w = words[j]
            key += w[1:] if key and w and key[-1] == w[0] else w  # = _collapse(key + w): both collapsed
            if len(key) > max_len + 1:
                break
            n = j - i + 1 if parts is None else parts[j] - parts[i] + 1
            if len(key) >= MIN_KEY and words[j] and n >= 2:
                keys.setdefault(key, set()).add(n)


def query_keys(text: str, max_len: int) -> dict[str, set[int]]:
    """Skeleton keys of the runs of consecutive words of ``text`` that could be a full name, each
    with the numbers of words (CJK: name parts) of the runs that give it.

    Words outside CJK script: every run of up to ``MAX_SPAN`` words. CJK: a transliterated foreign
    name is written with a separator between its parts ("希娜·阿明"), and Chinese text has no spaces,
    so only runs of syllables that cross such a separator are read (every syllable run of a plain
    Chinese sentence would be a candidate otherwise), each syllable read both ways where Xinhua
    transliteration is ambiguous (``pinyin_skeleton``; a part's last syllable keeps its nasal).
    Chinese names of Chinese people (no separator) are matched by ``lethe.text.romanizations``."""
    text = unicodedata.normalize("NFKC", text)
    keys: dict[str, set[int]] = {}
    for chunk in _CJK_RUN.split(text):
        _spans([skeleton(w) for w in _LETTERS.findall(chunk)], None, max_len, keys)
    for m in _CJK_CHAIN.finditer(text):
        parts = _SEP.split(m.group(0))
        for w_as_v, x_as_h, mid_nasal in itertools.product((False, True), repeat=3):
            syllables = [(pinyin_skeleton(anyascii(ch), w_as_v, x_as_h, mid_nasal or i == len(p) - 1), k)
                         for k, p in enumerate(parts) for i, ch in enumerate(p)]
            _spans([s for s, _ in syllables], [k for _, k in syllables], max_len, keys)
    return keys


def deletions(key: str) -> list[tuple[int, str]]:
    return [(i, key[:i] + key[i + 1:]) for i in range(len(key))]


def key_record(name: str, h: Callable[[str], str]) -> dict | None:
    """The hashed skeleton key of a full name: ``e`` its hash, ``d`` its one-deletion variants' hashes,
    ``p`` the same with their position (a substitution deletes the same position on both sides)."""
    key = name_key(name)
    if len(key) < MIN_KEY or len(_LETTERS.findall(anyascii(name))) < 2:
        return None
    rec: dict = {"e": h(key), "n": len(key)}
    if len(key) >= MIN_END_FUZZY_KEY:
        rec["d"] = sorted({h(v) for _, v in deletions(key)})
        rec["p"] = sorted({h(f"{i}#{v}") for i, v in deletions(key)})
    return rec


def match_keys(keys: dict[str, set[int]], h: Callable[[str], str], exact: dict[str, list[int]],
               dels: dict[str, list[int]], pos: dict[str, list[int]], lengths: dict[int, int],
               words: dict[int, int]) -> dict[int, bool]:
    """Entries whose key is within one edit of a query key: entry -> fuzzy (False when exact).

    ``exact``, ``dels``, ``pos``: hash -> entries, for the keys, their deletions and their
    positioned deletions; ``lengths``: entry -> its key's length (short keys match exactly only);
    ``words``: entry -> its name's words (a short key must come from a run of as many words, or
    one more: an article or a hyphen written apart; a short skeleton is common in ordinary words)."""
    found: dict[int, bool] = {}
    sizes = set(lengths.values())

    def ok(e: int, n: set[int]) -> bool:
        return lengths.get(e, 0) >= MIN_FUZZY_KEY or any(words.get(e, 0) <= m <= words.get(e, 0) + 1 for m in n)

    for k, n in keys.items():
        size = len(k)
        if size in sizes:
            for e in exact.get(h(k), ()):
                if ok(e, n):
                    found[e] = False
        if size + 1 in sizes:
            for e in dels.get(h(k), ()):  # the name's key has one class more
                if lengths.get(e, 0) >= MIN_FUZZY_KEY:
                    found.setdefault(e, True)
            for e in pos.get(h(f"{size}#{k}"), ()):  # ... its last one (a silent final consonant)
                found.setdefault(e, True)
        shorter = size - 1 in sizes and size - 1 >= MIN_END_FUZZY_KEY
        substituted = size in sizes and size >= MIN_FUZZY_KEY
        if not (shorter or substituted):
            continue
        for i, v in deletions(k):
            if shorter:
                for e in exact.get(h(v), ()):  # the query has one class more (short keys: at the end)
                    if lengths.get(e, 0) >= MIN_FUZZY_KEY or i == size - 1:
                        found.setdefault(e, True)
            if substituted:
                for e in pos.get(h(f"{i}#{v}"), ()):  # one class differs
                    if lengths.get(e, 0) >= MIN_FUZZY_KEY:
                        found.setdefault(e, True)
    return found
