"""The scope a privacy request implies beyond its wording: salient entities, kept as keyed hashes.

A question about a forgotten person need not name them: "Who wrote 'The Guilt Closet'?", "Which
author was born in Santiago, Chile on 25 February 1958?". The forget prompts, and the answers when
the request comes with them, name such entities: quoted titles, prizes, places, dates and years,
other people (parents) and other capitalised phrases. ``scope_records`` extracts them and keeps,
per entity, only

- its kind (title, prize, place, date, year, person, phrase),
- the keyed BLAKE2b hashes of its content tokens (same key and hash as names, see
  :mod:`lethe.guard.entities`; a date as one canonical token such as ``d19580225``) and, for an
  entity of several words, the same hashes in the order the text names them,
- a weight: a base per kind times the rarity of its rarest token (word frequencies, as for names).

Never the entity text, never the prompt or answer text. What this can reveal: to someone holding
the store *and* its key, whether a guessed title, place, date or phrase belongs to a request (the
same offline confirmation a guessed name allows) and the order of its words, and, from the weights
and token counts alone, how many entities of which kind a request holds and roughly how common
their words are. Without the key the hashes confirm nothing.

At query time the same extraction runs on the query (its dates canonicalised the same way) and an
entity matches when all its content tokens are present, in its order for an entity of several
words (with a few other words allowed between them): among a thousand people's titles, the same
words in another order are another book. Entity-swapped hard negatives
(``swap_entities``: the same question with another title, place or year) teach the similarity test
that the shape of a question is not its subject.
"""

from __future__ import annotations

import random
import re

from lethe.guard.entities import _h, rarity
from lethe.text import FUNCTION_WORDS, fold

# base weight of one matched entity, before rarity (the detector fuses them with a noisy-OR)
KIND_WEIGHTS = {"title": 0.85, "title1": 0.5, "prize": 0.55, "place": 0.45, "date": 0.7, "year": 0.25,
                "person": 0.6, "phrase": 0.4, "genre": 0.2}
# literary genres, matched as canonical tokens (``g`` + words): weak evidence alone, and a query naming
# a genre the request does not hold is evidence against it (``EntityMatcher.match_scope``)
GENRES = ("magical realism", "science fiction", "historical fiction", "literary fiction", "crime fiction",
          "true crime", "children's literature", "travel writing", "political thriller", "young adult",
          "dystopian", "cyberpunk", "steampunk", "fantasy", "horror", "romance", "poetry", "memoir", "biography",
          "mystery", "thriller", "satire", "drama", "comedy", "western", "noir", "gothic", "humor", "erotica",
          "philosophy", "self-help", "autobiography", "urban fiction", "chick lit", "war", "epic", "folklore",
          "mythology", "adventure", "lgbtq", "holocaust literature", "short stories", "essays", "screenwriting")
_GENRE_RE = re.compile(r"\b(" + "|".join(re.escape(g).replace("\\ ", r"\s+") for g in sorted(GENRES, key=len, reverse=True))
                       + r")(?:s|\b)", re.IGNORECASE)
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
_MONTH = r"(January|February|March|April|May|June|July|August|September|October|November|December)"
_DATE_MDY = re.compile(_MONTH + r"\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(\d{4})")
_DATE_DMY = re.compile(r"(?:the\s+)?(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH + r",?\s+(?:in\s+the\s+year\s+)?(\d{4})")
_DATE_NUM = re.compile(r"\b(\d{1,2})/(\d{1,2})/(\d{4})\b")
_YEAR = re.compile(r"\b(1[5-9]\d\d|20\d\d)\b")
# double quotes, or single quotes around a capitalised span that may hold possessives ('Hannah's Voice')
_QUOTED = re.compile(r"[\"“]([^\"”\n]{2,80})[\"”]|(?<![A-Za-z])['‘]([A-Z0-9](?:[^'’\n]|['’](?=[a-z])){1,80}?)['’](?![A-Za-z])")
_CAPWORD = r"[A-Z][\w\-]*(?:'[A-Za-z]+)?"
_CAP_RUN = re.compile(_CAPWORD + r"(?:\s+(?:of|the|for|de|la|del|von|van|and|al|in)?\s*" + _CAPWORD + r")*")
_PRIZE_WORDS = {"award", "prize", "medal", "honor", "honour", "fellowship", "laureate", "trophy", "grant"}
_GENERIC = FUNCTION_WORDS | _PRIZE_WORDS | {"best", "literary", "literature", "book", "books", "novel", "for",
                                            "international", "national", "annual", "outstanding", "excellence",
                                            "fiction", "writing", "writer", "author", "authors", "year"}
_NOT_ENTITY = {"what", "who", "which", "when", "where", "how", "why", "is", "are", "did", "does", "do", "can",
               "could", "in", "the", "has", "have", "was", "were", "tell", "please", "name", "give", "yes", "no",
               "i", "he", "she", "they", "his", "her", "their", "it", "this", "that", "some", "one", "another",
               "as", "born", "author", "writer", "novelist", "poet", "would", "like", "know", "question", "about",
               "its", "our", "a", "an", "if", "also", "sure", "here", "there", "many", "while", "after",
               "before", "during", "although", "with", "from", "by", "for", "on", "at", "to", "of", "and", "or",
               "but", "lgbtq", "english", "mr", "mrs", "ms", "dr"}
_PERSON_QUERY = re.compile(
    r"\b(who|whom|whose|which (?:\w+ ){0,2}(?:author|writer|novelist|poet|person|man|woman|playwright)|"
    r"(?:full )?name of the|name the|identify the|the (?:\w+ ){0,2}(?:author|writer|novelist|poet) (?:who|born|whose|of|from))\b")


def person_query(text: str) -> bool:
    """Whether the query asks about a person ("who ...", "which author ...", "name the writer ...")."""
    return bool(_PERSON_QUERY.search(fold(text)))


def genre_tokens(text: str) -> list[str]:
    """Canonical genre tokens (``gscience_fiction``) of a text."""
    return list(dict.fromkeys("g" + re.sub(r"\W+", "_", m.group(1).lower()) for m in _GENRE_RE.finditer(text)))


def query_tokens(text: str) -> list[str]:
    """The canonical extra tokens a query is matched with: dates, years and genres."""
    return date_tokens(text) + genre_tokens(text)


def date_tokens(text: str) -> list[str]:
    """Canonical date (``dYYYYMMDD``) and year (``yYYYY``) tokens of a text."""
    out: list[str] = []
    for m in _DATE_MDY.finditer(text):
        out.append(f"d{int(m.group(3)):04d}{_MONTHS[m.group(1).lower()]:02d}{int(m.group(2)):02d}")
    for m in _DATE_DMY.finditer(text):
        out.append(f"d{int(m.group(3)):04d}{_MONTHS[m.group(2).lower()]:02d}{int(m.group(1)):02d}")
    for m in _DATE_NUM.finditer(text):  # day/month order is ambiguous: both readings
        a, b, y = int(m.group(1)), int(m.group(2)), int(m.group(3))
        out += [f"d{y:04d}{b:02d}{a:02d}", f"d{y:04d}{a:02d}{b:02d}"]
    out += [f"y{y}" for y in _YEAR.findall(text)]
    return list(dict.fromkeys(out))


def _content_words(surface: str) -> list[str]:
    """Content tokens of a surface form (no generic words, none shorter than two), in its order, repeats kept."""
    return [t for t in re.findall(r"[a-z0-9]+", fold(surface)) if t not in _GENERIC and len(t) >= 2]


def _content_of(surface: str) -> list[str]:
    """:func:`_content_words`, each once."""
    return list(dict.fromkeys(_content_words(surface)))


def _quoted(text: str) -> list[tuple[str, str, re.Match[str]]]:
    """(kind, span, match) of each quoted span: a prize when it names one, a title when it is short."""
    out = []
    for m in _QUOTED.finditer(text):
        s = m.group(1) or m.group(2) or ""
        if re.search(r"\b(?:Award|Prize|Medal)\b", s):
            out.append(("prize", s, m))
        elif len(s.split()) <= 12:
            out.append(("title", s.strip(" ,."), m))
    return out


def quoted_titles(text: str) -> list[list[str]]:
    """Content tokens of each title a text quotes (the query side of whole-title matching)."""
    return [_content_of(span) for kind, span, _ in _quoted(text) if kind == "title"]


def title_key(surface: str) -> str:
    """A title's content words in order with their repeats: 'Echoes of the Amber Echoes' and 'The
    Amber Echoes' share their content tokens but not this key."""
    return "t:" + " ".join(_content_words(surface))


def quoted_title_keys(text: str) -> list[str]:
    """:func:`title_key` of each title a text quotes."""
    return [title_key(span) for kind, span, _ in _quoted(text) if kind == "title"]


def salient_entities(text: str, exclude: set[str] | None = None) -> list[tuple[str, list[str]]]:
    """(kind, content tokens) of the salient entities a text names; tokens of ``exclude`` (the request's
    own names) are dropped, and an entity left with none is skipped."""
    exclude = exclude or set()
    out: list[tuple[str, list[str]]] = []
    spans: list[tuple[int, int]] = []

    def add(kind: str, surface: str, start: int, end: int) -> None:
        content = _content_of(surface)
        if not content or all(t in _NOT_ENTITY or t in exclude for t in content):
            return  # nothing but function words or the request's own name
        if kind == "title" and len(content) == 1:
            kind = "title1"
        out.append((kind, content))
        spans.append((start, end))

    for kind, span, m in _quoted(text):
        add(kind, span, m.start(), m.end())
    for tok in date_tokens(text):
        out.append(("date" if tok.startswith("d") else "year", [tok]))
    out += [("genre", [tok]) for tok in genre_tokens(text)]
    for m in _CAP_RUN.finditer(text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        words = m.group(0).split()
        while words and words[0].lower().strip("'s") in _NOT_ENTITY:
            words = words[1:]
        if not words:
            continue
        surface = " ".join(words)
        low = {w.lower() for w in re.findall(r"[A-Za-z]+", surface)}
        if low & _PRIZE_WORDS:
            add("prize", surface, m.start(), m.end())
            continue
        if low <= set(_MONTHS) or surface.lower() in _MONTHS:
            continue
        # "Santiago, Chile": the place is the city, the country is optional in a query
        after = text[m.end():m.end() + 3]
        before = text[max(0, m.start() - 9):m.start()].lower()
        if re.search(r"[A-Za-z], $", text[max(0, m.start() - 3):m.start()]) and spans and spans[-1][1] >= m.start() - 2:
            continue  # the country of "Santiago, Chile": part of the place just added
        if re.match(r", [A-Z]", after) and len(words) <= 3 or re.search(r"\b(?:in|from|near)\s+$", before):
            add("place", surface, m.start(), m.end())
        elif len(words) >= 2:
            add("person" if len(words) <= 3 and all(w[0].isupper() for w in words) else "phrase", surface,
                m.start(), m.end())
    # dedupe by (kind, tokens); tokens stay in the order the text names them
    seen: set[tuple[str, tuple[str, ...]]] = set()
    uniq = []
    for kind, toks in out:
        if (kind, tuple(toks)) not in seen:
            seen.add((kind, tuple(toks)))
            uniq.append((kind, toks))
    return uniq


def scope_records(texts: list[str], names: list[str], key: bytes, limit: int = 64) -> list[dict]:
    """Hashed scope records of the salient entities named in ``texts`` (forget prompts and, when the
    request has them, answers), excluding the request's own names."""
    exclude = {t for n in names for t in re.findall(r"[a-z0-9]+", fold(n))}
    recs: dict[tuple[str, tuple[str, ...]], dict] = {}
    for text in texts:
        wholes = {tuple(_content_of(span)): title_key(span) for kind, span, _ in _quoted(text) if kind == "title"}
        for kind, toks in salient_entities(text, exclude):
            if (kind, tuple(toks)) in recs:
                continue
            if kind in ("date", "year"):
                w = KIND_WEIGHTS[kind]
            else:
                w = KIND_WEIGHTS[kind] * (0.4 + 0.6 * max(rarity(t) for t in toks))
            rec = {"kind": kind, "tokens": [_h(key, t) for t in sorted(toks)], "w": round(w, 3)}
            if len(toks) >= 2:  # the words' order: 'Mirrors of the Burning Sparrows' is another book
                rec["seq"] = [_h(key, t) for t in toks]
            if kind == "title" and tuple(toks) in wholes:  # a quoted title: its words with their repeats
                rec["whole"] = _h(key, wholes[tuple(toks)])
            recs[(kind, tuple(toks))] = rec
    return list(recs.values())[:limit]


# -- entity-swapped hard negatives -------------------------------------------------------
_SWAP_TITLES = ["The Quiet Meridian", "Salt and Cinder", "A House of Kites", "The Ninth Ferry", "Lanterns Over Oslo",
                "The Clockmaker's Orchard", "Rust and Marigold", "The Last Cartographer", "Paper Moons",
                "Songs of the Low Tide"]
_SWAP_PLACES = ["Lisbon, Portugal", "Nagoya, Japan", "Cordoba, Argentina", "Tampere, Finland", "Mombasa, Kenya",
                "Adelaide, Australia", "Bergen, Norway", "Puebla, Mexico", "Chiang Mai, Thailand", "Lyon, France"]
_SWAP_PRIZES = ["Silver Birch Award", "Halcyon Prize for Fiction", "Orpheus Medal", "Blue Pine Literary Award"]


def swap_entities(text: str, rng: random.Random) -> str | None:
    """The same question about something else: quoted titles, prizes, places after "in/from" and years
    replaced by other ones. None when the text names none of them."""
    out, n = text, 0

    def sub(pattern: re.Pattern[str] | str, repl, s: str) -> str:
        nonlocal n
        new, k = re.subn(pattern, repl, s)
        n += k
        return new

    out = sub(_QUOTED, lambda m: f"'{rng.choice(_SWAP_TITLES)}'", out)
    out = sub(r"\b(?:[A-Z][\w'\-]+ ){1,5}(?:Award|Prize|Medal)(?: for [A-Z][\w'\- ]+)?",
              lambda m: rng.choice(_SWAP_PRIZES), out)
    out = sub(r"(?<=\bin )(?!" + _MONTH + r")[A-Z][a-z]+(?: [A-Z][a-z]+)?(?:, [A-Z][a-z]+(?: [A-Z][a-z]+)?)?|"
              r"(?<=\bfrom )[A-Z][a-z]+(?: [A-Z][a-z]+)?(?:, [A-Z][a-z]+(?: [A-Z][a-z]+)?)?",
              lambda m: rng.choice(_SWAP_PLACES), out)
    out = sub(_YEAR, lambda m: str(int(m.group(0)) + rng.choice([-17, -9, 6, 11, 23])), out)
    return out if n and out != text else None
