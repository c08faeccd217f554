"""Spelling attacks: keyboard-neighbour typos, natural misspellings, shuffles, truncation, homoglyphs."""

from __future__ import annotations

from lethe.evaluation.attacks.base import ATTACKS, Attack

_KEYS = ["qwertyuiop", "asdfghjkl", "zxcvbnm"]
_NEIGH: dict[str, str] = {}
for _r, _row in enumerate(_KEYS):
    for _c, _ch in enumerate(_row):
        n = [_row[j] for j in (_c - 1, _c + 1) if 0 <= j < len(_row)]
        n += [_KEYS[rr][_c] for rr in (_r - 1, _r + 1) if 0 <= rr < 3 and _c < len(_KEYS[rr])]
        _NEIGH[_ch] = "".join(n)
_MISSPELL = {"receive": "recieve", "which": "wich", "their": "thier", "known": "knwon", "author": "auther",
             "because": "becuase", "written": "writen", "famous": "famos", "parents": "parnets",
             "genre": "genere", "father": "fahter", "mother": "mohter", "books": "bokos", "novel": "novell",
             "following": "folowing", "protein": "protien", "virus": "virsu", "bacteria": "bactiera",
             "awards": "awrads", "influence": "influance", "career": "carreer", "occupation": "ocupation"}


@ATTACKS.register("typos")
class Typos(Attack):
    """One perturbation per item among keyboard-neighbour errors, natural misspellings,
    shuffled inner letters and truncation; ``rate`` ~ 10 % of the characters/words."""

    name = "typos"

    def __init__(self, rate: float = 0.1, **kw) -> None:
        super().__init__(**kw)
        self.rate = rate

    def apply(self, text: str, index: int = 0) -> str:
        rng = self.rng(index)
        kind = rng.choice(["keyboard", "misspell", "shuffle", "truncate"])
        words = text.split(" ")
        if kind == "misspell" and any(w.lower().strip("?.,") in _MISSPELL for w in words):
            return " ".join(_MISSPELL.get(w.lower(), w) if w.lower() in _MISSPELL else w for w in words)
        if kind in ("misspell", "keyboard"):
            chars = list(text)
            idx = [i for i, c in enumerate(chars) if c.lower() in _NEIGH]
            for i in rng.sample(idx, k=max(1, int(len(idx) * self.rate))) if idx else []:
                repl = rng.choice(_NEIGH[chars[i].lower()])
                chars[i] = repl.upper() if chars[i].isupper() else repl
            return "".join(chars)
        if kind == "shuffle":
            cand = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
            for i in rng.sample(cand, k=max(1, int(len(words) * self.rate * 3))) if cand else []:
                mid = list(words[i][1:-1])
                rng.shuffle(mid)
                words[i] = words[i][0] + "".join(mid) + words[i][-1]
            return " ".join(words)
        cut = max(1, int(len(text) * self.rate))
        return text[: len(text) - cut]


_HOMO = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "i": "і", "y": "у"}


@ATTACKS.register("homoglyph")
class Homoglyph(Attack):
    """Cyrillic look-alikes and zero-width spaces (defeated by Unicode normalisation)."""

    name = "homoglyph"

    def apply(self, text: str, index: int = 0) -> str:
        rng = self.rng(index)
        out = []
        for ch in text:
            if ch in _HOMO and rng.random() < 0.3:
                out.append(_HOMO[ch])
            elif ch == " " and rng.random() < 0.2:
                out.append(" \u200b")
            else:
                out.append(ch)
        return "".join(out)
