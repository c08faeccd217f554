"""Forgotten-name and request-scope matching on keyed hashes, exact and fuzzy.

Names are never stored in clear: each name token is kept as a keyed BLAKE2b hash, and
so is its *deletion neighbourhood* (the token with one character removed, as in
SymSpell). Two tokens within one edit (insertion, deletion, substitution, adjacent
transposition) share at least one deletion variant, so typos still match while the
store never holds the name itself.

Unlike the DRAGON reference code, a single first name does not fire: the score is
graded by how much of the name is present (whole name 1.0, surname 0.6, first name
0.25), with word boundaries, and the detector fuses it with the other signals. With
hundreds of people forgotten, token collisions become the common case, so a partial
match is also weighed by how informative the matched token is:

- *rarity*: a token's English word frequency (``resources/word_zipf.jsonl``, from
  wordfreq) — "Smith" or "Rose" says less than "Akabueze". The rarity of each name token is
  computed at add time, while the name is in memory, and kept beside its hash;
- *uniqueness in the store*: a token hash that several live requests share (two forgotten
  people named Kim) counts as ``1/sqrt(df)``;
- *someone else*: a partial match next to another name-like token ("Elena" in "Elena
  Vasquez" when "Jaime Vasquez" is forgotten) is evidence that the query names a different
  person; it is damped and flagged (``other_person``).

Fuzzy matching is restricted where it produced false alarms at scale: a query token that
is a common English word is never matched fuzzily ("desert" is not a typo of a name), and
neither is a short one, unless the neighbouring name token matched exactly (a full name
with one typo, "Jamie Vasquez" for "Jaime Vasquez").

Scope records (``kind`` other than ``name``; built by :mod:`lethe.guard.scope`) hold the
hashed content tokens of salient entities a request implies (titles, prizes, places, dates)
and are matched exactly, all tokens required, in order. A title quoted whole or a prize named in
full names one work, so every forgotten request holding it is in scope and sharing does not
dilute it; facts of different kinds (a place and a year) are weighed by how many requests hold
them *together*; a query that names a genre, or quotes a title, that the request does not hold
is evidence against it.

Lookup is an inverted index from token hash to (request, record, token), so a query costs
the same with ten or ten thousand requests.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from lethe.guard import phonetic
from lethe.text import despace_letters, fold, normalize

MIN_FUZZY_LEN = 5  # record tokens shorter than this are matched exactly only
MIN_FREE_FUZZY_LEN = 6  # a fuzzy match without an exactly matched neighbour needs a token this long
COMMON_ZIPF = 3.0  # query tokens at least this frequent in English are never matched fuzzily
FULL, SURNAME, GIVEN = 1.0, 0.6, 0.25
OTHER_PERSON_DAMPING = 0.2  # factor on a partial match when the query names someone else
GENRE_CONTRADICTION = 0.4  # factor on scope evidence when the query names a genre the request lacks
TITLE_CONTRADICTION = 0.4  # likewise when the query quotes a title and the request holds other titles
_KIND_GROUP = {"year": "date", "title1": "title"}
_FUZZY_DISCOUNT = 0.9
NAMED_WORK_WEIGHT = 0.6  # least base weight of a title quoted whole, or a prize named in full (2+ content words)
_NAME_STOP = {"the", "of", "and", "de", "la", "van", "von", "der", "da", "di", "le", "al", "el", "bin", "ibn"}
_HONORIFICS = {"mr", "mrs", "ms", "miss", "dr", "prof", "professor", "sir", "dame", "lady", "lord", "author",
               "writer", "novelist", "poet", "saint", "st", "madam", "madame", "mx", "señor", "senor"}
_TOKEN = re.compile(r"[A-Za-z0-9]+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")
_PERSON = r"[A-Z][\w\-]+(?:\s+[A-Z][\w\-.]*){1,3}"
_CREDIT = re.compile(_PERSON + r"['’]s\s+(?:\w+\s+){0,3}[\"“'‘][A-Z0-9]|[\"”'’]\s*,?\s+by\s+" + _PERSON)
_SENT_END = re.compile(r"[.?!:;\"“”(]\s*$")


def _h(key: bytes, token: str) -> str:
    return hashlib.blake2b(token.encode(), key=key[:64], digest_size=8).hexdigest()


def _deletions(token: str) -> set[str]:
    return {token[:i] + token[i + 1:] for i in range(len(token))}


@lru_cache(maxsize=1)
def _zipf_table() -> dict[str, float]:
    text = (resources.files("lethe") / "resources" / "word_zipf.jsonl").read_text(encoding="utf-8")
    table: dict[str, float] = {}
    for line in text.splitlines():
        row = json.loads(line) if line.strip() else {}
        if "zipf" in row:
            for w in row["words"].split():
                table[w] = float(row["zipf"])
    return table


def zipf(token: str) -> float:
    """English word frequency of a lower-case token on the Zipf scale (0 when rarer than 10^-6.5)."""
    return _zipf_table().get(token, 0.0)


def rarity(token: str) -> float:
    """How much a matched token says about identity: 1 for rare tokens, down to 0.15 for very common ones."""
    return float(min(1.0, max(0.15, (5.5 - zipf(token)) / 3.0)))


def _sk_hash(key: bytes) -> Callable[[str], str]:
    """Keyed hash of a skeleton key, domain-separated from the name-token hashes."""
    return lambda k: _h(key, "sk:" + k)


def entity_record(name: str, key: bytes) -> dict:
    """Hashed representation of one name: per token its hash, deletion-variant hashes and rarity;
    for a full name also its hashed consonant skeleton (``sk``, :mod:`lethe.guard.phonetic`), which
    matches the name written in another script."""
    toks = [t for t in _TOKEN.findall(fold(name)) if len(t) >= 2 and t not in _NAME_STOP]
    rec: dict = {
        "kind": "name",
        "tokens": [
            {"h": _h(key, t), "d": sorted(_h(key, d) for d in _deletions(t)) if len(t) >= MIN_FUZZY_LEN else [],
             "w": round(rarity(t), 2), "n": len(t)}
            for t in toks
        ],
    }
    sk = phonetic.key_record(name, _sk_hash(key))
    if sk is not None:
        rec["sk"] = sk
    return rec


@dataclass
class EntityHit:
    request_id: str
    score: float
    matched_tokens: int
    total_tokens: int
    fuzzy: bool
    other_person: bool = False


@dataclass
class ScopeHit:
    request_id: str
    score: float
    matched: list[str] = field(default_factory=list)  # kinds of the matched scope records
    quoted_title: bool = False  # a matched title is one the query quotes


@dataclass
class QueryTokens:
    """The query as the matcher reads it: folded tokens, their hashes, and which look like names."""

    toks: list[str]
    exact: list[str]
    name_like: list[bool]
    credits_person: bool = False  # a quoted work credited to a named person ("X Y's 'Title'", "'Title' by X Y")


def in_order(seq: list[str] | None, positions: dict[str, list[int]], slack: int = 3) -> bool:
    """Whether the query holds the token hashes ``seq`` in that order, with at most ``slack`` other
    tokens between two of them (True without a ``seq``: an entity of one word, or a record that
    predates word order)."""
    if not seq or len(seq) < 2:
        return True

    def from_(k: int, after: int) -> bool:
        if k == len(seq):
            return True
        return any(after < p <= after + 1 + slack and from_(k + 1, p) for p in positions.get(seq[k], ()))

    return any(from_(1, p) for p in positions.get(seq[0], ()))


def _whole_title(tokens: frozenset[str], quoted: list[frozenset[str]]) -> bool:
    """A stored title's tokens are not part of a longer title the query quotes."""
    return not any(tokens & span and span != tokens for span in quoted)


class EntityMatcher:
    """Scores a query against every live request's hashed names and scope records."""

    def __init__(self, key: bytes, fuzzy: bool = True) -> None:
        self.key = key
        self.fuzzy = fuzzy
        self._entries: list[tuple[str, dict]] = []
        self._exact: dict[str, list[tuple[int, int]]] = defaultdict(list)  # hash -> (entry, token index)
        self._dels: dict[str, list[tuple[int, int]]] = defaultdict(list)  # deletion hash -> (entry, token)
        self._df: Counter[str] = Counter()  # name-token hash -> live requests holding it
        self._scope_df: Counter[str] = Counter()  # scope signature -> live requests holding it
        self._scope_by_tok: dict[str, list[int]] = defaultdict(list)  # first token hash -> scope entries
        self._genres: dict[str, int] = {}  # request -> number of genre records
        self._titles: dict[str, int] = {}  # request -> number of title records
        # skeleton keys of full names (hash -> entries): the key, its deletions, positioned deletions
        self._sk: tuple[dict[str, list[int]], ...] = ({}, {}, {})
        self._sk_len: dict[int, int] = {}
        self._sk_words: dict[int, int] = {}  # entry -> words of the name (short keys need a run as long)

    def set_entries(self, entries: list[tuple[str, dict]]) -> None:
        self._entries = [(rid, rec) for rid, rec in entries if rec.get("tokens")]
        self._exact.clear()
        self._dels.clear()
        self._df.clear()
        self._scope_df.clear()
        self._scope_by_tok.clear()
        self._genres.clear()
        self._titles.clear()
        name_seen: set[tuple[str, str]] = set()
        scope_seen: set[tuple[str, str]] = set()
        self._sk = ({}, {}, {})
        self._sk_len = {}
        self._sk_words = {}
        for i, (rid, rec) in enumerate(self._entries):
            if rec.get("kind", "name") == "name":
                sk = rec.get("sk")
                if isinstance(sk, dict) and "e" in sk:
                    self._sk_len[i] = int(sk.get("n", 0))
                    self._sk_words[i] = len(rec["tokens"])
                    for index, hashes in zip(self._sk, ([sk["e"]], sk.get("d", []), sk.get("p", [])), strict=True):
                        for hv in hashes:
                            index.setdefault(hv, []).append(i)
                for j, t in enumerate(rec["tokens"]):
                    self._exact[t["h"]].append((i, j))
                    for d in t.get("d", []):
                        self._dels[d].append((i, j))
                    if (rid, t["h"]) not in name_seen:
                        name_seen.add((rid, t["h"]))
                        self._df[t["h"]] += 1
            else:
                sig = "|".join(sorted(rec["tokens"]))
                if rec.get("kind") == "genre":
                    self._genres[rid] = self._genres.get(rid, 0) + 1
                if rec.get("kind") == "title":
                    self._titles[rid] = self._titles.get(rid, 0) + 1
                if (rid, sig) not in scope_seen:
                    scope_seen.add((rid, sig))
                    self._scope_df[sig] += 1
                self._scope_by_tok[rec["tokens"][0]].append(i)

    def __len__(self) -> int:
        return len(self._entries)

    # -- query side ------------------------------------------------------------------
    def tokens(self, text: str) -> QueryTokens:
        text = normalize(despace_letters(text))
        toks, name_like = [], []
        for w in _WORD.finditer(text):  # a hyphenated word ("Seo-yeon") is capitalised as a whole
            cap = w.group(0)[0].isupper()
            start = w.start() == 0 or bool(_SENT_END.search(text[: w.start()]))
            for m in _TOKEN.finditer(w.group(0)):
                low = m.group(0).lower()
                z = zipf(low)
                like = len(low) >= 2 and low not in _HONORIFICS and not low.isdigit() and (
                    (cap and ((not start and z < 5.0) or z < COMMON_ZIPF)) or (not cap and z == 0.0))
                toks.append(low)
                name_like.append(like)
        return QueryTokens(toks, [_h(self.key, t) for t in toks], name_like, bool(_CREDIT.search(text)))

    def match(self, text: str, q: QueryTokens | None = None) -> list[EntityHit]:
        """Name hits per request, best first."""
        if not self._entries:
            return []
        q = q or self.tokens(text)
        # entry -> token index -> (query position, fuzzy)
        found: dict[int, dict[int, tuple[int, bool]]] = defaultdict(dict)
        for p, h in enumerate(q.exact):
            for i, j in self._exact.get(h, ()):
                found[i][j] = (p, False)
        if self.fuzzy and self._dels:
            for p, tok in enumerate(q.toks):
                if len(tok) < MIN_FUZZY_LEN - 1 or tok.isdigit():
                    continue
                cands: set[tuple[int, int]] = set(self._dels.get(q.exact[p], ()))  # query lacks no char
                for d in _deletions(tok):
                    dh = _h(self.key, d)
                    cands.update(self._exact.get(dh, ()))
                    cands.update(self._dels.get(dh, ()))
                for i, j in cands:
                    if j not in found[i]:
                        found[i][j] = (p, True)
        best: dict[str, EntityHit] = {}
        for i, toks_found in found.items():
            rid, rec = self._entries[i]
            hit = self._score(rid, rec["tokens"], toks_found, q)
            if hit is not None and (rid not in best or hit.score > best[rid].score):
                best[rid] = hit
        return sorted(best.values(), key=lambda h: -h.score)

    def match_script(self, text: str) -> list[EntityHit]:
        """Full names written in another script (``lethe.guard.phonetic``): hits for the names whose
        skeleton key is within one edit of a run of the raw text's words; only for text that holds
        non-Latin letters (a Latin text's names are matched token by token)."""
        if not self._sk_len or not phonetic.non_latin(text):
            return []
        keys = phonetic.query_keys(text, max(self._sk_len.values()))
        found = phonetic.match_keys(keys, _sk_hash(self.key), *self._sk, lengths=self._sk_len, words=self._sk_words)
        best: dict[str, EntityHit] = {}
        for i, fuzzy in found.items():
            rid, rec = self._entries[i]
            n = len(rec["tokens"])
            hit = EntityHit(rid, FULL * (_FUZZY_DISCOUNT if fuzzy else 1.0), n, n, fuzzy)
            if rid not in best or hit.score > best[rid].score:
                best[rid] = hit
        return sorted(best.values(), key=lambda h: -h.score)

    def _fuzzy_ok(self, j: int, p: int, toks_found: dict[int, tuple[int, bool]], tok: dict, q: QueryTokens) -> bool:
        qt = q.toks[p]
        for nj, dp in ((j - 1, -1), (j + 1, 1)):
            if nj in toks_found and toks_found[nj] == (p + dp, False):
                return True  # a full name with one typo: the neighbouring token matched exactly in place
        return tok.get("n", MIN_FREE_FUZZY_LEN) >= MIN_FREE_FUZZY_LEN and len(qt) >= MIN_FREE_FUZZY_LEN \
            and zipf(qt) < COMMON_ZIPF

    def _score(self, rid: str, toks: list[dict], toks_found: dict[int, tuple[int, bool]],
               q: QueryTokens) -> EntityHit | None:
        ok = {j: v for j, v in toks_found.items() if not v[1] or self._fuzzy_ok(j, v[0], toks_found, toks[j], q)}
        if not ok:
            return None
        n, total = len(ok), len(toks)
        fuzzy = any(v[1] for v in ok.values())
        other = False
        pos = sorted({v[0] for v in ok.values()})
        # a name is its tokens side by side: "Stefan Berg best known" does not name "Stefan Best"
        # (name particles in between do not part it: "Aysha Al-Hashim" holds "al", which no record keeps)
        together = all(k in pos or q.toks[k] in _NAME_STOP for k in range(pos[0], pos[-1] + 1))
        if n == total and (together or total == 1):
            score = FULL
        else:
            positions = sorted(v[0] for v in ok.values())
            for p in (positions[0] - 1, positions[-1] + 1):  # a different name right beside the match
                if 0 <= p < len(q.toks) and q.name_like[p]:
                    other = True
            score = 0.0
            for j in ok:
                base = SURNAME if (total > 1 and j == total - 1) else GIVEN
                base = FULL if total == 1 else base
                w = float(toks[j].get("w", 1.0))
                score += base * w / math.sqrt(max(1, self._df.get(toks[j]["h"], 1)))
            if total > 1 and n > 1 and (total - 1) in ok and together:
                score = max(score, SURNAME + (FULL - SURNAME) * (n - 1) / (total - 1))
            score = min(score, 0.85)
            if other:
                score *= OTHER_PERSON_DAMPING
        if fuzzy:
            score *= _FUZZY_DISCOUNT
        return EntityHit(rid, score, n, total, fuzzy, other)

    def match_scope(self, text: str, extra_tokens: list[str] | None = None, q: QueryTokens | None = None,
                    person_query: bool = False, query_genres: bool = False,
                    quoted: list[list[str]] | None = None, quoted_keys: list[str] | None = None) -> list[ScopeHit]:
        """Scope hits per request: salient entities of the request that the query names (all their tokens).

        ``extra_tokens``: the query's canonical date tokens and genre tokens (``lethe.guard.scope``);
        ``query_genres``: whether the query names a genre at all; ``quoted``: the content tokens of each
        title the query quotes (``lethe.guard.scope.quoted_titles``): a stored title inside a quoted one
        matches only as the whole of it ('Burning Mirrors' is not 'Sparrows of the Burning Mirrors');
        ``quoted_keys``: their :func:`lethe.guard.scope.title_key`, which a stored quoted title must equal
        when the query quotes a title with the same words ('Echoes of the Amber Echoes' is not 'The Amber
        Echoes')."""
        if not self._scope_by_tok:
            return []
        q = q or self.tokens(text)
        present = set(q.exact) | {_h(self.key, t) for t in (extra_tokens or [])}
        quoted_sets = [frozenset(_h(self.key, t) for t in toks) for toks in (quoted or []) if toks]
        quoted_whole = {_h(self.key, k) for k in (quoted_keys or [])}
        positions: dict[str, list[int]] = defaultdict(list)
        for j, h in enumerate(q.exact):
            positions[h].append(j)
        by_rid: dict[str, dict[str, tuple[float, str]]] = defaultdict(dict)  # rid -> sig -> (weight, kind)
        holders: dict[str, set[str]] = defaultdict(set)  # sig -> requests whose record the query names
        whole: set[str] = set()  # titles of two or more content words the query quotes exactly
        quoted_match: set[str] = set()  # titles the query quotes
        for h in present:
            for i in self._scope_by_tok.get(h, ()):
                rid, rec = self._entries[i]
                kind = rec.get("kind", "other")
                toks = frozenset(rec["tokens"])
                if (all(t in present for t in rec["tokens"]) and in_order(rec.get("seq"), positions)
                        and (kind not in ("title", "title1") or _whole_title(toks, quoted_sets))):
                    sig = "|".join(sorted(rec["tokens"]))
                    w = float(rec.get("w", 0.5))
                    quoted_same = kind == "title" and toks in quoted_sets
                    if quoted_same and quoted_keys is not None and "whole" in rec and rec["whole"] not in quoted_whole:
                        continue  # the query quotes another title with the same words
                    if len(toks) >= 2 and (kind == "prize" or quoted_same):
                        w = max(w, NAMED_WORK_WEIGHT)  # a work or prize named in full, in order
                    if quoted_same and len(toks) >= 2:
                        whole.add(sig)
                    if quoted_same:
                        quoted_match.add(sig)
                    if sig not in by_rid[rid] or w > by_rid[rid][sig][0]:
                        by_rid[rid][sig] = (w, kind)
                    holders[sig].add(rid)
        hits = []
        for rid, recs in by_rid.items():
            groups = {_KIND_GROUP.get(k, k) for _, k in recs.values()}
            if len(groups - {"genre"}) >= 2:
                # facts of different kinds are weighed by how many requests hold them all (one person born
                # in Dakar in 1940 among a thousand forgotten), not by how many hold each
                df_all = len(set.intersection(*(holders[sig] for sig in recs)))
                ws = [w / math.sqrt(df_all) for w, _ in recs.values()]
            else:
                # a title quoted whole names one work: forgotten people sharing it are all in scope
                ws = [w / math.sqrt(1 if sig in whole else max(1, self._scope_df.get(sig, 1)))
                      for sig, (w, _) in recs.items()]
            # two facts of different kinds (a place and a year, a title and a prize) are far more
            # specific than either; two places ("Astana", "Kazakhstan") are one fact
            boost = (1.5 if person_query else 1.0) * (2.0 if len(groups - {"genre"}) >= 2 else 1.0)
            score = 1.0 - math.prod(1.0 - min(0.95, w * boost) for w in ws)
            if query_genres and "genre" not in groups and self._genres.get(rid):
                score *= GENRE_CONTRADICTION  # the query names a genre, and not this person's
            if quoted_sets and "title" not in groups and self._titles.get(rid):
                score *= TITLE_CONTRADICTION  # the query quotes a work, and not one of this person's
            hits.append(ScopeHit(rid, score, sorted(k for _, k in recs.values()),
                                 quoted_title=any(sig in quoted_match for sig in recs)))
        return sorted(hits, key=lambda h: -h.score)
