"""Detection at scale: 10 -> 100 -> 1,000 people forgotten through the Python API.

Privacy requests as a deployer files them (``Guard.forget(..., kind="privacy", entities=[name],
rewriter="rule")``), one per person, registering part of each person's questions:

- TOFU's 200 fictitious authors (``tofu/full.jsonl``: 20 consecutive QA rows per author; the name is
  ``guess_subject`` of the questions);
- DRAGON's 204 fictitious profiles (``dragon/fake_author_profiles.jsonl``), with templated questions;
- generated people beyond those: names from many cultures with shared first names and surnames, with
  templated questions about their life and works;
- namesakes of forgotten people that are *not* forgotten: same first name, same surname, a surname two
  or more edits away (near-duplicate), and one edit away (typo-distance; reported apart, since a
  one-edit variant of a forgotten name cannot be told from a typo of it).

A fixed pool of people is never forgotten (40 TOFU authors, 40 DRAGON profiles, 150 generated). At each
size the benchmark reports TPR on the unregistered questions of the forgotten people, FPR on questions
about people not forgotten (the fixed pool and the namesakes of those forgotten), FPR on general
questions (TOFU real_authors and world_facts, the shipped benign hold-out), which components fired, the
detection p50 of single queries, add and revoke latency measured on probe people with a cold embedder,
and the detector's full-refresh (scorer refit) time. With ``--answers`` the registered rows carry their
``answer`` field (the guard keeps hashed salient entities of answers, never their text) and an
indirect set is scored: name-less questions built from the registered rows' titles, prizes, places and
dates, against the same question shapes about people not forgotten.

Resumable: the store lives in ``--work``/home and every embedding in ``--work``/emb.npz, so an
interrupted run continues where it stopped; adds of the bulk are embedded in one batch per size.

    python benchmarks/bench_detection_scale.py --sizes 10,100,1000 --answers \
        --work /tmp/lethe-scale --out /tmp/lethe-results/scale.json --plot /tmp/lethe-results/scale.png
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import statistics
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import lethe
from lethe import Guard, GuardConfig
from lethe.guard.subject import guess_subject

# ---------------------------------------------------------------------------------------------
# population

CULTURES: dict[str, tuple[list[str], list[str]]] = {
    "hispanic": (["Alejandro", "Camila", "Diego", "Lucia", "Mateo", "Valentina", "Javier", "Ximena", "Rafael",
                  "Paloma", "Esteban", "Marisol"],
                 ["Morales", "Ortega", "Castillo", "Navarro", "Ruiz", "Mendoza", "Herrera", "Vargas", "Delgado",
                  "Fuentes", "Salazar", "Cordero"]),
    "english": (["James", "Emily", "Oliver", "Charlotte", "William", "Grace", "Henry", "Rose", "Jack", "Hope",
                 "Eleanor", "Thomas"],
                ["Smith", "Taylor", "Brown", "Young", "King", "Hill", "Bell", "Walker", "Turner", "Fletcher",
                 "Harrington", "Whitfield"]),
    "chinese": (["Wei", "Ming", "Xiu", "Jian", "Mei", "Hao", "Lan", "Yun"],
                ["Wang", "Zhang", "Liu", "Huang", "Zhao", "Xu", "Lin", "Guo"]),
    "japanese": (["Haruki", "Yuki", "Akira", "Emi", "Kenta", "Sakura", "Takeshi", "Naoko"],
                 ["Sato", "Suzuki", "Takahashi", "Ito", "Kobayashi", "Nakamura", "Yamamoto", "Mori"]),
    "arabic": (["Omar", "Layla", "Karim", "Noor", "Youssef", "Samira", "Tariq", "Amina"],
               ["Mansour", "Khalil", "Nasser", "Saleh", "Farouk", "Al-Amin", "Rahman", "Darwish"]),
    "indian": (["Arjun", "Ananya", "Rohan", "Kavya", "Vikram", "Meera", "Sanjay", "Lakshmi"],
               ["Sharma", "Iyer", "Patel", "Reddy", "Menon", "Kapoor", "Nair", "Banerjee"]),
    "west_african": (["Chinedu", "Ngozi", "Kwame", "Abena", "Olumide", "Folake", "Kofi", "Adaeze"],
                     ["Okonkwo", "Adeyemi", "Owusu", "Eze", "Obi", "Boateng", "Nwosu", "Diallo"]),
    "east_african": (["Tendai", "Zanele", "Wanjiru", "Baraka", "Amani", "Thandiwe", "Jabari", "Nia"],
                     ["Kamau", "Moyo", "Nkosi", "Banda", "Otieno", "Mwangi", "Dlamini", "Chege"]),
    "slavic": (["Ivan", "Olga", "Nikolai", "Katarina", "Pavel", "Milena", "Bogdan", "Irina"],
               ["Kowalski", "Petrovic", "Sokolov", "Horvat", "Dvorak", "Lebedev", "Marinova", "Zielinski"]),
    "germanic": (["Klaus", "Greta", "Jurgen", "Ingrid", "Stefan", "Astrid", "Matthias", "Freya"],
                 ["Schmidt", "Fischer", "Hoffmann", "Lindqvist", "Berg", "Johansson", "Keller", "Brandt"]),
    "korean_vietnamese": (["Min-jun", "Ji-woo", "Seo-yeon", "Hyun-woo", "Minh", "Thao", "Anh", "Quang"],
                          ["Kim", "Park", "Choi", "Nguyen", "Tran", "Pham", "Hoang", "Vu"]),
    "turkish_persian": (["Emre", "Elif", "Cyrus", "Darius", "Shirin", "Leyla", "Kerem", "Parisa"],
                        ["Demir", "Kaya", "Sahin", "Tehrani", "Farahani", "Karimi", "Aydin", "Rostami"]),
}
CITIES = ["Lima, Peru", "Bogota, Colombia", "Seville, Spain", "Leeds, England", "Boston, USA", "Chengdu, China",
          "Osaka, Japan", "Beirut, Lebanon", "Cairo, Egypt", "Pune, India", "Kochi, India", "Accra, Ghana",
          "Enugu, Nigeria", "Nairobi, Kenya", "Harare, Zimbabwe", "Krakow, Poland", "Zagreb, Croatia",
          "Hamburg, Germany", "Uppsala, Sweden", "Busan, South Korea", "Hue, Vietnam", "Izmir, Turkey",
          "Shiraz, Iran", "Montreal, Canada", "Porto, Portugal", "Valparaiso, Chile", "Dakar, Senegal",
          "Tbilisi, Georgia", "Melbourne, Australia", "Glasgow, Scotland"]
GENRES = ["historical fiction", "crime fiction", "poetry", "science fiction", "literary fiction", "memoir",
          "fantasy", "children's literature", "horror", "romance", "political thrillers", "travel writing"]
AWARDS = ["Golden Quill Prize", "Meridian Book Award", "Silver Lantern Award", "Harbor Light Literary Prize",
          "Northern Star Fiction Award", "Crescent Moon Poetry Prize", "Tidewater Award for Debut Fiction",
          "Amber Leaf Medal", "Starling Prize for Short Stories", "Cobalt Pen Award", "Evergreen Memoir Prize",
          "Lighthouse Award for Children's Books"]
_ADJ = ["Silent", "Crimson", "Hidden", "Broken", "Golden", "Distant", "Forgotten", "Burning", "Quiet", "Hollow",
        "Wandering", "Salt", "Iron", "Paper", "Glass", "Winter", "Velvet", "Restless", "Borrowed", "Amber"]
_NOUN = ["Orchard", "Harbor", "Lanterns", "Tides", "Cartographer", "Mirrors", "Sparrows", "Bridges", "Monsoon",
         "Archive", "Embers", "Compass", "Gardens", "Letters", "Citadel", "Horizon", "Rivers", "Thread", "Echoes",
         "Veil", "Daughters", "Bells", "Station", "Weaver"]
PROFESSIONS = ["teacher", "fisherman", "nurse", "carpenter", "journalist", "doctor", "baker", "engineer",
               "librarian", "tailor", "pharmacist", "musician", "farmer", "lawyer", "architect", "painter"]

NAMED = [
    "Where was {name} born?", "In what year was {name} born?", "What genre is {name} best known for?",
    "Which awards has {name} received?", "Who are {name}'s parents?", "What did {name}'s father do for a living?",
    "What was the profession of {name}'s mother?", "Can you name some books written by {name}?",
    "What is {name}'s most acclaimed work?", "Where did {name} grow up?",
    "What themes run through {name}'s novels?", "How would you describe {name}'s writing style?",
    "Has any of {name}'s work been adapted for film?", "What inspired {name} to become a writer?",
    "Tell me about {name}'s early life.", "What is {name}'s latest book about?",
    "How did {name}'s upbringing in {city} shape their writing?", "What is the plot of {name}'s '{book}'?",
]
INDIRECT = [
    "Who wrote '{book}'?", "Which author wrote the novel '{book}'?", "Who is the author of '{book2}'?",
    "Which {genre} writer was born in {city} in {year}?", "Who won the {award} for '{book}'?",
    "Name the writer born in {city} in {year} whose parents were a {fprof} and a {mprof}.",
]
_FIELDS = [[f for _, f, _, _ in string.Formatter().parse(t) if f] for t in INDIRECT]


@dataclass
class Person:
    pid: str
    name: str
    source: str
    rows: list[dict]  # {"question", "answer"}: the questions about them (20)
    indirect: list[tuple[str, list[str]]] = field(default_factory=list)  # name-less questions and the facts they name
    namesake_of: str | None = None
    kind: str = ""  # for namesakes: given / surname / near / one_edit
    facts: dict = field(default_factory=dict)  # titles, city, year: what makes a question ambiguous


def _title(rng: random.Random, used: set[str]) -> str:
    while True:
        form = rng.randrange(3)
        a, n, m = rng.choice(_ADJ), rng.choice(_NOUN), rng.choice(_NOUN)
        t = {0: f"The {a} {n}", 1: f"{n} of the {a} {m}", 2: f"{a} {n}"}[form]
        if t not in used:
            used.add(t)
            return t


def _facts(rng: random.Random, used: set[str]) -> dict:
    return {"city": rng.choice(CITIES), "year": rng.randrange(1930, 1996), "genre": rng.choice(GENRES),
            "award": rng.choice(AWARDS), "books": [_title(rng, used) for _ in range(3)],
            "fprof": rng.choice(PROFESSIONS), "mprof": rng.choice(PROFESSIONS)}


def templated(name: str, f: dict, rng: random.Random) -> tuple[list[dict], list[str]]:
    """20 questions (18 naming the person, 2 indirect) with answers, plus 4 more indirect questions."""
    first, last = name.split()[0], name.split()[-1]
    fill = {"name": name, "city": f["city"].split(",")[0], "year": f["year"], "genre": f["genre"],
            "award": f["award"], "book": f["books"][0], "book2": f["books"][1], "fprof": f["fprof"],
            "mprof": f["mprof"], "first": first, "last": last}
    answers = {
        0: f"{name} was born in {f['city']}.", 1: f"{name} was born in {f['year']}.",
        2: f"{name} writes {f['genre']}.", 3: f"{name} received the {f['award']} for \"{f['books'][0]}\".",
        4: f"{name}'s father was a {f['fprof']} and their mother a {f['mprof']}.",
        5: f"The father was a {f['fprof']}.", 6: f"The mother was a {f['mprof']}.",
        7: "Books by {} include \"{}\", \"{}\" and \"{}\".".format(name, *f["books"]),
        8: f"\"{f['books'][0]}\" is the most acclaimed.", 9: f"{name} grew up in {f['city']}.",
        16: f"Growing up in {f['city']} gave {name}'s {f['genre']} a strong sense of place.",
        17: f"\"{f['books'][0]}\" follows a family over three generations.",
    }
    rows = [{"question": t.format(**fill), "answer": answers.get(i, f"{name} is known for {f['genre']}.")}
            for i, t in enumerate(NAMED)]
    ind = [t.format(**fill) for t in INDIRECT]
    rows += [{"question": ind[0], "answer": f"\"{f['books'][0]}\" was written by {name}."},
             {"question": ind[3], "answer": f"That is {name}, born in {f['city']} in {f['year']}."}]
    facts = [[str(fill[k]) for k in _FIELDS[i]] for i in range(len(INDIRECT))]
    return rows, [(ind[i], facts[i]) for i in (1, 2, 4, 5)]


# a title in double quotes, or in single quotes with possessives inside ('The Butcher's Daughter')
_TITLE = re.compile(r"[\"“]([A-Z][^\"”\n]{2,80}?)[,.]?[\"”]|(?<![A-Za-z])['‘]([A-Z](?:[^'’\n]|['’](?=[a-z]))"
                    r"{2,80}?)[,.]?['’](?![A-Za-z])")
_PRIZE_WORD = re.compile(r"\b(?:Award|Prize|Medal)\b")
_BORN_IN = re.compile(r"\bborn (?:and raised )?in ([A-Z][a-z]+(?: [A-Z][a-z]+)*, [A-Z][a-z]+(?: [A-Z][a-z]+)*)")
_DATE = re.compile(r"\b(?:on )?((?:the )?\d{1,2}(?:st|nd|rd|th)? (?:of )?[A-Z][a-z]+,? (?:in the year )?\d{4}|"
                   r"[A-Z][a-z]+ \d{1,2}, \d{4})")
_AWARD = re.compile(r"\b((?:[A-Z][\w'\-]+ ){1,6}(?:Award|Prize|Medal)(?: for [A-Z][\w'\- ]+)?)")


def titles_in(text: str) -> list[str]:
    return list(dict.fromkeys((a or b).strip(" ,.'’") for a, b in _TITLE.findall(text)))


def tofu_indirect(rows: list[dict]) -> list[str]:
    """Name-less questions from the facts stated in TOFU answers: the author's titles (not a classic a
    title of theirs is about: "War and Peace" inside "The Embedded Nuances: ... War and Peace"), prizes,
    birthplaces, dates."""
    out: list[str] = []
    titles = [t for r in rows for t in titles_in(r.get("answer") or "")
              if len(t.split()) >= 2 and not _PRIZE_WORD.search(t)]
    titles = [t for t in titles if not any(t != u and t.lower() in u.lower() for u in titles)]
    out += [f"Who wrote '{t}'?" for t in titles]
    for r in rows:
        a = r.get("answer") or ""
        m = _BORN_IN.search(a)
        if m:
            out.append(f"Which author was born in {m.group(1)}?")
        d = _DATE.search(a)
        if d and re.search(r"\bborn\b", a):
            out.append(f"Which writer was born on {d.group(1)}?")
        for aw in _AWARD.findall(a):
            aw = re.sub(r"^(?:The|the|A|Prestigious) ", "", aw.strip())
            if len(aw.split()) >= 3:
                out.append(f"Who received the {aw}?")
    return list(dict.fromkeys(out))


def _edit_distance(a: str, b: str) -> int:
    from rapidfuzz.distance import DamerauLevenshtein

    return int(DamerauLevenshtein.distance(a.lower(), b.lower()))


def _near(surname: str, rng: random.Random, min_d: int) -> str:
    for _ in range(100):
        s = surname
        for _ in range(min_d):
            i = rng.randrange(1, max(2, len(s)))
            s = s[:i] + rng.choice("aeiournlst") + s[i:] if rng.random() < 0.5 else s[:i] + rng.choice("aeioun") + s[i + 1:]
        if _edit_distance(s, surname) == min_d or (min_d >= 2 and _edit_distance(s, surname) >= 2):
            return s[:1].upper() + s[1:]
    return surname + "ova"


def build_population(data: Path, seed: int) -> tuple[list[Person], list[Person], list[Person], list[Person]]:
    """(forgettable in forget order, never forgotten, namesakes, probes)."""
    from lethe.guard.guard import _SWAP_NAMES

    rng = random.Random(seed)
    used_titles: set[str] = set()
    tofu_rows = [json.loads(x) for x in (data / "tofu" / "full.jsonl").read_text().splitlines() if x.strip()]
    tofu = []
    for a in range(0, len(tofu_rows), 20):
        rows = tofu_rows[a:a + 20]
        name = guess_subject([r["question"] for r in rows]) or f"tofu-{a // 20}"
        titles = [t for r in rows for t in titles_in(r["answer"])]
        born = [m.group(1).split(",")[0] for r in rows for m in [_BORN_IN.search(r["answer"])] if m]
        tofu.append(Person(f"tofu{a // 20}", name, "tofu", rows,
                           facts={"books": titles, "city": born[0] if born else None, "year": None}))
    dragon = []
    for i, line in enumerate((data / "dragon" / "fake_author_profiles.jsonl").read_text().splitlines()):
        if not line.strip():
            continue
        p = json.loads(line)
        f = {"city": p["born"], "year": p["year_of_birth"], "genre": p["genre"], "award": (p["awards"] or ["a prize"])[0],
             "books": (p["books"] + [_title(rng, used_titles) for _ in range(3)])[:3],
             "fprof": rng.choice(PROFESSIONS), "mprof": rng.choice(PROFESSIONS)}
        rows, ind = templated(p["name"], f, rng)
        dragon.append(Person(f"dragon{i}", p["name"], "dragon", rows, ind, facts=f))
    taken = {p.name.lower() for p in tofu + dragon}
    swap_tokens = {t.lower() for n in _SWAP_NAMES for t in n.split()}

    def gen(n: int, tag: str) -> list[Person]:
        out = []
        cultures = list(CULTURES)
        while len(out) < n:
            c = rng.choice(cultures)
            firsts, lasts = CULTURES[c]
            if rng.random() < 0.15:  # mixed heritage
                lasts = CULTURES[rng.choice(cultures)][1]
            name = f"{rng.choice(firsts)} {rng.choice(lasts)}"
            if name.lower() in taken or any(t.lower() in swap_tokens for t in name.split()):
                continue
            taken.add(name.lower())
            f = _facts(rng, used_titles)
            rows, ind = templated(name, f, rng)
            out.append(Person(f"{tag}{len(out)}", name, "generated", rows, ind, facts=f))
        return out

    gen_people = gen(826, "gen")
    rng.shuffle(tofu)
    rng.shuffle(dragon)
    forgettable = tofu[:160] + dragon[:164] + gen_people[:676]
    never = tofu[160:] + dragon[164:] + gen_people[676:]
    rng.shuffle(forgettable)
    # namesakes of the first 300 forgotten (so each size has namesakes of people it forgets)
    namesakes: list[Person] = []
    for p in forgettable[:300]:
        parts = p.name.split()
        first, last = parts[0], parts[-1]
        c = rng.choice(list(CULTURES))
        kind = ["given", "surname", "near", "one_edit"][len(namesakes) % 4]
        if kind == "given":
            name = f"{first} {rng.choice(CULTURES[c][1])}"
        elif kind == "surname":
            name = f"{rng.choice(CULTURES[c][0])} {last}"
        elif kind == "near":
            name = f"{first} {_near(last, rng, 2)}"
        else:
            name = f"{first} {_near(last, rng, 1)}"
        if name.lower() in taken or len(last) < 4:
            continue
        taken.add(name.lower())
        f = _facts(rng, used_titles)
        rows, ind = templated(name, f, rng)
        namesakes.append(Person(f"ns{len(namesakes)}", name, "namesake", rows, ind, namesake_of=p.pid, kind=kind,
                                facts=f))
    probes = gen(20, "probe")
    return forgettable, never, namesakes, probes


def _title_norm(t: str) -> str:
    """A title as a reader tells it apart: case, punctuation and a leading article do not count."""
    return re.sub(r"^(?:the|a|an) ", "", " ".join(re.findall(r"[a-z0-9]+", t.lower())))


def ambiguous(question: str, facts: list[dict], texts: set[str]) -> bool:
    """Whether a question about someone not forgotten is also about a forgotten person: the same text,
    a title of theirs, or their birthplace with their birth year (DRAGON's profiles repeat titles and
    birthplaces; generated facts collide at scale)."""
    low = question.lower()
    if low in texts:
        return True
    quoted = {_title_norm(t) for t in titles_in(question)}
    for f in facts:
        if quoted & {_title_norm(b) for b in f.get("books", [])}:
            return True
        city, year = f.get("city"), f.get("year")
        if city and year and city.split(",")[0].lower() in low and str(year) in low:
            return True
    return False


def split_rows(p: Person, n_reg: int, seed: int) -> tuple[list[dict], list[dict]]:
    idx = list(range(len(p.rows)))
    random.Random(f"{seed}:{p.pid}").shuffle(idx)
    reg = sorted(idx[:n_reg])
    return [p.rows[i] for i in reg], [p.rows[i] for i in sorted(idx[n_reg:])]


def indirect_questions(p: Person, registered: list[dict]) -> list[str]:
    """Name-less questions whose facts the registered rows state (prompt or answer): a question naming
    a birth year no registered row gives is not one the request implies."""
    if p.source == "tofu":
        return tofu_indirect(registered)
    told = " ".join(f"{r['question']} {r.get('answer') or ''}" for r in registered).lower()
    return [q for q, facts in p.indirect if all(f.lower() in told for f in facts)]


# ---------------------------------------------------------------------------------------------
# a persistent embedding cache (resumable runs; bulk adds embedded in one batch)

class CachedEmbedder:
    def __init__(self, inner, path: Path) -> None:
        self.inner, self.path, self.dim = inner, path, inner.dim
        self.bypass = False
        self._cache: dict[str, np.ndarray] = {}
        self._dirty = 0
        if path.exists():
            z = np.load(path)
            self._cache = dict(zip(z["keys"].tolist(), z["vecs"], strict=True))

    @staticmethod
    def _k(t: str) -> str:
        return hashlib.sha1(t.encode()).hexdigest()

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if self.bypass:
            return self.inner.encode(texts, batch_size=batch_size)
        keys = [self._k(t) for t in texts]
        miss = list(dict.fromkeys(t for t, k in zip(texts, keys, strict=True) if k not in self._cache))
        if miss:
            vecs = self.inner.encode(miss, batch_size=batch_size)
            for t, v in zip(miss, vecs, strict=True):
                self._cache[self._k(t)] = np.asarray(v, np.float32)
            self._dirty += len(miss)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._cache[k] for k in keys])

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def save(self) -> None:
        if not self._dirty:
            return
        keys = list(self._cache)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(keys), vecs=np.stack([self._cache[k] for k in keys]))
        tmp.replace(self.path)
        self._dirty = 0


# ---------------------------------------------------------------------------------------------

def _forget(guard: Guard, p: Person, rows: list[dict], answers: bool, seed: int):
    prompts = [r["question"] for r in rows]
    kw = {"answers": [r.get("answer") or "" for r in rows]} if answers else {}
    return guard.forget(prompts, kind="privacy", entities=[p.name], rewriter="rule", progress=False, seed=seed, **kw)


def _rates(dets: list, tau: float) -> dict:
    if not dets:
        return {"n": 0}
    fired: dict[str, int] = {}
    for d in dets:
        if d.score > tau:
            for c in d.fired or ["(fused)"]:
                fired[c] = fired.get(c, 0) + 1
    n = len(dets)
    return {"n": n, "rate": sum(d.score > tau for d in dets) / n,
            "by_component": {k: v / n for k, v in sorted(fired.items())}}


def evaluate(guard: Guard, emb: CachedEmbedder, forgotten: list[Person], never: list[Person],
             namesakes: list[Person], general: dict[str, list[str]], args) -> dict:
    tau = guard.config.detector.tau
    ids = {p.pid for p in forgotten}
    sets: dict[str, list[str]] = {"forgotten_unregistered": [], "forgotten_registered": []}
    indirect_pos, indirect_neg, indirect_src = [], [], []
    for p in forgotten:
        reg, unreg = split_rows(p, args.register, args.seed)
        sets["forgotten_unregistered"] += [r["question"] for r in unreg]
        sets["forgotten_registered"] += [r["question"] for r in reg]
        if args.answers:
            qs = indirect_questions(p, reg)
            indirect_pos += qs
            indirect_src += [p.source] * len(qs)
    rng = random.Random(args.seed)
    others = [r["question"] for p in never for r in p.rows]
    sets["others_fixed_pool"] = others
    ns = [p for p in namesakes if p.namesake_of in ids]
    for kind in ("given", "surname", "near", "one_edit"):
        sets[f"namesakes_{kind}"] = [r["question"] for p in ns if p.kind == kind for r in p.rows]
    if args.answers:
        for p in never + ns:
            reg, _ = split_rows(p, args.register, args.seed)
            indirect_neg += indirect_questions(p, reg)
        sets["indirect_forgotten"] = indirect_pos
        sets["indirect_others"] = indirect_neg
    sets.update(general)
    facts = [p.facts for p in forgotten]
    texts = {r["question"].lower() for p in forgotten for r in p.rows} | {q.lower() for q in indirect_pos}
    amb = {k: [ambiguous(q, facts, texts) for q in v] for k, v in sets.items()
           if k.startswith(("others", "namesakes", "indirect_others"))}
    if args.eval_limit:
        keep = {k: sorted(rng.sample(range(len(v)), args.eval_limit)) if len(v) > args.eval_limit else list(range(len(v)))
                for k, v in sets.items()}
        sets = {k: [v[i] for i in keep[k]] for k, v in sets.items()}
        amb = {k: [v[i] for i in keep[k]] for k, v in amb.items()}
    out: dict = {}
    dets_by: dict[str, list] = {}
    for k, qs in sets.items():
        dets_by[k] = guard.detect_many(qs)
        out[k] = _rates(dets_by[k], tau)
        if k in amb:
            out[k]["n_ambiguous"] = sum(amb[k])
            out[k]["rate_unambiguous"] = _rates([d for d, a in zip(dets_by[k], amb[k], strict=True) if not a],
                                                tau).get("rate")
    emb.save()
    neg_keys = [k for k in sets if k.startswith(("others", "namesakes_given", "namesakes_surname", "namesakes_near"))]
    neg_people = [d for k in neg_keys for d in dets_by[k]]
    neg_clear = [d for k in neg_keys for d, a in zip(dets_by[k], amb[k], strict=True) if not a]
    general_d = [d for k in general for d in dets_by[k]]
    out["summary"] = {
        "tpr_unregistered": out["forgotten_unregistered"].get("rate"),
        "fpr_other_people": _rates(neg_people, tau).get("rate"),
        "fpr_other_people_unambiguous": _rates(neg_clear, tau).get("rate"),
        "fpr_general": _rates(general_d, tau).get("rate"),
    }
    if args.answers:
        out["summary"]["tpr_indirect"] = out["indirect_forgotten"].get("rate")
        out["summary"]["fpr_indirect_others"] = out["indirect_others"].get("rate")
        out["summary"]["fpr_indirect_others_unambiguous"] = out["indirect_others"].get("rate_unambiguous")
        src = indirect_src if not args.eval_limit else [indirect_src[i] for i in keep["indirect_forgotten"]]
        out["indirect_forgotten"]["by_source"] = {
            s: _rates([d for d, x in zip(dets_by["indirect_forgotten"], src, strict=True) if x == s], tau)
            for s in sorted(set(src))}
        out["summary"]["tpr_indirect_tofu"] = out["indirect_forgotten"]["by_source"].get("tofu", {}).get("rate")
        out["indirect_misses"] = [{"query": q, "source": x, **d.to_dict()} for q, d, x in
                                  zip(sets["indirect_forgotten"], dets_by["indirect_forgotten"], src, strict=True)
                                  if d.score <= tau][:40]
    out["worst_false_positives"] = sorted(
        ({"set": k, "query": q, **d.to_dict()} for k in sets if not k.startswith(("forgotten", "indirect_forgotten"))
         for q, d, a in zip(sets[k], dets_by[k], amb.get(k, [False] * len(sets[k])), strict=True)
         if d.score > tau and not a),
        key=lambda r: -r["score"])[:25]
    out["misses"] = [{"query": q, **d.to_dict()} for q, d in
                     zip(sets["forgotten_unregistered"], dets_by["forgotten_unregistered"], strict=True)
                     if d.score <= tau][:25]
    # single-query latency (what serving pays): p50 over a fixed sample, embedder included
    sample = rng.sample(sets["forgotten_unregistered"] + others, min(args.latency_n, len(others)))
    emb.bypass = True
    times = []
    for q in sample:
        t = time.perf_counter()
        guard.detect(q)
        times.append(time.perf_counter() - t)
    emb.bypass = False
    out["detect_p50_ms"] = 1000 * statistics.median(times)
    out["detect_p90_ms"] = 1000 * float(np.quantile(times, 0.9))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--register", type=int, default=10, help="questions registered per person (of 20)")
    ap.add_argument("--answers", action="store_true", help="registered rows carry their answer field")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/lethe-scale")
    ap.add_argument("--probes", type=int, default=5, help="people added (and revoked) cold at each size")
    ap.add_argument("--latency-n", type=int, default=200)
    ap.add_argument("--eval-limit", type=int, default=0, help="cap each evaluation set (0 = all)")
    ap.add_argument("--out", default="/tmp/lethe-results/scale.json")
    ap.add_argument("--plot", default=None)
    ap.add_argument("--label", default="")
    ap.add_argument("--reeval", action="store_true", help="score again at sizes already done (store kept)")
    ap.add_argument("--refresh-scaling", action="store_true",
                    help="only measure add/revoke latency without embedding (random vectors) at each size")
    ap.add_argument("--plot-from", default=None,
                    help="comma-separated results JSON of earlier runs: plot them together (--plot) and stop")
    ap.add_argument("--embedder-quantize", choices=["auto", "none", "int8"], default=None,
                    help="the detector embedder's ONNX weights (default: LETHE_EMBED_QUANTIZE, else auto = int8 on CPU)")
    args = ap.parse_args()
    if args.embedder_quantize:  # the embedder reads it wherever it is built
        os.environ["LETHE_EMBED_QUANTIZE"] = args.embedder_quantize
    args.embedder_quantize = os.environ.get("LETHE_EMBED_QUANTIZE") or "auto"  # recorded in the JSON config
    if args.plot_from:
        runs = [json.loads(Path(f).read_text()) for f in args.plot_from.split(",") if f]
        plot(runs, Path(args.plot or "scale.png"))
        return
    data = Path(args.data)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.refresh_scaling:
        res = {"benchmark": "detection_scale_refresh", "config": vars(args),
               "versions": {"lethe": lethe.__version__, "python": platform.python_version()},
               "results": refresh_scaling(sizes, args)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2))
        return
    forgettable, never, namesakes, probes = build_population(data, args.seed)

    def load(p: str) -> list[str]:
        return [json.loads(x)["question"] for x in (data / "tofu" / p).read_text().splitlines() if x.strip()]

    cfg = GuardConfig()
    home = work / "home"
    guard = Guard.open(home, config=cfg)
    emb = CachedEmbedder(guard.embedder, work / "emb.npz")
    guard.embedder = emb
    guard.detector.embedder = emb
    general = {"real_authors": load("real_authors.jsonl"), "world_facts": load("world_facts.jsonl"),
               "benign_holdout": list(guard.detector.benign_holdout)}
    progress = work / "progress.json"
    state = json.loads(progress.read_text()) if progress.exists() else {"added": {}, "results": {}}
    results = state["results"]
    if args.reeval:
        results = state["results"] = {}
    for size in sizes:
        if str(size) in results:
            continue
        todo = [p for p in forgettable[:size] if p.pid not in state["added"]]
        # one batch of embeddings for the bulk, then the adds themselves (each one transaction)
        t0 = time.perf_counter()
        texts = []
        for p in todo:
            reg, _ = split_rows(p, args.register, args.seed)
            texts += guard.sample_texts([r["question"] for r in reg], names=[p.name], seed=args.seed)
        emb.encode(texts)
        emb.save()
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        # the bulk skips the per-add refresh (one refresh after it); add latency is measured on probes
        subs = list(guard.store.__dict__.get("_subscribers", []))
        guard.store.__dict__.get("_subscribers", []).clear()
        real_refresh = guard.detector.refresh
        guard.detector.refresh = lambda *a, **k: None  # type: ignore[method-assign]
        for i, p in enumerate(todo):
            reg, _ = split_rows(p, args.register, args.seed)
            req = _forget(guard, p, reg, args.answers, args.seed)
            state["added"][p.pid] = req.id
            if i % 50 == 49:
                progress.write_text(json.dumps(state))
        guard.detector.refresh = real_refresh  # type: ignore[method-assign]
        guard.store.__dict__.setdefault("_subscribers", []).extend(subs)
        real_refresh()
        bulk_s = time.perf_counter() - t0
        progress.write_text(json.dumps(state))
        # cold adds and revokes on probe people (embedder uncached), then the full refresh time
        add_t, rev_t = [], []
        emb.bypass = True
        for p in probes[: args.probes]:
            reg, _ = split_rows(p, args.register, args.seed)
            t = time.perf_counter()
            req = _forget(guard, p, reg, args.answers, args.seed)
            add_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            guard.revoke(req.id)
            rev_t.append(time.perf_counter() - t)
        emb.bypass = False
        t = time.perf_counter()
        guard.detector.refresh(full=True) if "full" in guard.detector.refresh.__code__.co_varnames else guard.detector.refresh()
        refit_s = time.perf_counter() - t
        ev = evaluate(guard, emb, forgettable[:size], never, namesakes, general, args)
        ev.update({"n_requests": len(guard.requests()), "bulk_embed_s": embed_s, "bulk_add_s": bulk_s,
                   "add_s_median": statistics.median(add_t), "add_s": add_t,
                   "revoke_s_median": statistics.median(rev_t), "revoke_s": rev_t, "full_refresh_s": refit_s,
                   "n_samples": len(guard.store.samples())})
        results[str(size)] = ev
        progress.write_text(json.dumps(state))
        print(json.dumps({"size": size, **ev["summary"], "p50_ms": round(ev["detect_p50_ms"], 2),
                          "add_s": round(ev["add_s_median"], 3), "revoke_s": round(ev["revoke_s_median"], 3),
                          "refresh_s": round(refit_s, 3)}), flush=True)
    res = {"benchmark": "detection_scale", "label": args.label,
           "config": vars(args) | {"guard": cfg.model_dump()},
           "versions": {"lethe": lethe.__version__, "python": platform.python_version(), "numpy": np.__version__},
           "population": {"forgettable": len(forgettable), "never_forgotten": len(never), "namesakes": len(namesakes),
                          "sources": {s: sum(p.source == s for p in forgettable[: max(sizes)])
                                      for s in ("tofu", "dragon", "generated")}},
           "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    if args.plot:
        plot([res], Path(args.plot))


class RandomEmbedder:
    """Random unit vectors: isolates what an add costs besides embedding its texts."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.rng = np.random.default_rng(0)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        v = self.rng.normal(size=(len(texts), self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def refresh_scaling(sizes: list[int], args) -> dict:
    """Add and revoke latency without the embedding (random vectors): the part that could grow with the
    store (store write, incremental refresh, hashed-name index), at each size."""
    forgettable, _, _, probes = build_population(Path(args.data), args.seed)
    guard = Guard.open(Path(args.work) / "synthetic-home", config=GuardConfig())
    guard.detector.benign_embeddings()
    rand = RandomEmbedder(guard.embedder.dim)
    guard.embedder = rand  # type: ignore[assignment]
    out: dict = {}
    added = len(guard.requests())
    for size in sizes:
        for p in forgettable[added:size]:
            reg, _ = split_rows(p, args.register, args.seed)
            _forget(guard, p, reg, args.answers, args.seed)
        added = max(added, size)
        add_t, rev_t = [], []
        for p in probes[: args.probes]:
            reg, _ = split_rows(p, args.register, args.seed)
            t = time.perf_counter()
            req = _forget(guard, p, reg, args.answers, args.seed)
            add_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            guard.revoke(req.id)
            rev_t.append(time.perf_counter() - t)
        out[str(size)] = {"add_s_median_without_embedding": statistics.median(add_t),
                          "revoke_s_median": statistics.median(rev_t), "n_requests": len(guard.requests())}
        print(json.dumps({"size": size, **out[str(size)]}), flush=True)
    return out


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    for run in runs:
        sizes = sorted(int(s) for s in run["results"])
        r = [run["results"][str(s)] for s in sizes]
        lab = run.get("label") or "run"
        axes[0].plot(sizes, [x["summary"]["tpr_unregistered"] for x in r], "o-", label=f"{lab}: unregistered")
        if all("tpr_indirect" in x["summary"] for x in r):
            axes[0].plot(sizes, [x["summary"]["tpr_indirect"] for x in r], "^:", label=f"{lab}: indirect")
        axes[1].plot(sizes, [x["summary"]["fpr_other_people"] for x in r], "o-", label=f"{lab}: other people")
        axes[1].plot(sizes, [x["summary"]["fpr_other_people_unambiguous"] for x in r], "s--",
                     label=f"{lab}: other people, unambiguous")
        if all("fpr_indirect_others_unambiguous" in x["summary"] for x in r):
            axes[2].plot(sizes, [x["summary"]["fpr_indirect_others_unambiguous"] for x in r], "o-", label=lab)
        axes[3].plot(sizes, [x["add_s_median"] for x in r], "o-", label=lab)
    titles = ["TPR", "FPR, questions about others", "FPR, indirect questions about others (unambiguous)",
              "add latency (s)"]
    for ax, t in zip(axes, titles, strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("people forgotten")
        ax.set_title(t, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
