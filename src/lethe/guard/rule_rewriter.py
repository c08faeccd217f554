"""The rule rewriter: a deterministic paraphrase of a question without a model (another question
frame, synonyms, and a keyword form where those still repeat the original too closely); the
fallback of every rewriter (``lethe.guard.rewrite``), its attempts checked against the copy bound
(``lethe.guard.copy_bound``)."""

from __future__ import annotations

import re
from collections.abc import Callable

from lethe.guard.copy_bound import _OPENERS, _TOKEN, protected_tokens, within_bound
from lethe.text import fold

# Question frames: (pattern on the whole question, replacements; \1.. are the pattern's groups).
_FRAMES: list[tuple[str, tuple[str, ...]]] = [
    (r"what is the (?:full |complete )?name of (.+)", (r"Tell me how \1 is called", r"Give the whole name of \1")),
    (r"(?:can|could|would|will) you (?:please )?(tell me about|tell me|share|provide|give me|give|describe|explain|"
     r"list|name|mention|elaborate on|shed (?:some )?light on|offer|discuss|summari[sz]e|outline|detail|"
     r"identify|clarify|talk about|confirm) (.+)", (r"Please \V1 \2", r"I'd like you to \V1 \2")),
    (r"(tell me about|tell me|describe|explain|list|name|give|provide|share|discuss|summari[sz]e|outline|detail|"
     r"identify|elaborate on|mention) (.+)", (r"Please \V1 \2", r"I'd like you to \V1 \2")),
    (r"how (does|did|do|is|was|are|were|has|have|had|can|could|would|will|might) (.+)",
     (r"In what way \1 \2", r"By what means \1 \2")),
    (r"how (many|much|long|old|often) (.+)", (r"Tell me \1 \2", r"What number: \1 \2")),
    (r"in (which|what) (\w+) (.+)", (r"Within \J1 \2 \3", r"Tell me the \2: \3")),
    (r"(what|which) (\w+) (does|did|do|is|was|are|were|has|have|had) (.+)",
     (r"\J1 \2 \L3 \4", r"Tell me: \J1 \2 \L3 \4")),
    (r"what (is|are|was|were) (.+)", (r"Tell me \2", r"I'd like to learn \2")),
    (r"what (does|did|do|has|have|had|can|could|would|will|might|inspired|influenced|prompted|motivated|led) (.+)",
     (r"Tell me what \1 \2", r"I wonder what \1 \2")),
    (r"which (.+)", (r"Tell me which \1", r"Say which \1")),
    (r"who (is|was|are|were) (.+)", (r"Identify \2", r"Tell me who \1 \2")),
    (r"who (.+)", (r"Which person \1", r"Tell me who \1")),
    (r"where (was|is|did|does|do|were|are|has|have|can|could) (.+)", (r"In what place \1 \2", r"At which location \1 \2")),
    (r"when (was|is|did|does|do|were|are|has|have) (.+)", (r"At what point \1 \2", r"In what period \1 \2")),
    (r"why (.+)", (r"For what reason \1", r"What is the reason \1")),
    (r"(is|are|was|were|does|did|do|has|have|had|can|could|will|would|should) (.+)",
     (r"Yes or no: \L1 \2", r"True or false, \L1 \2")),
]
_FRAME_VERBS = {
    "tell me about": "fill me in on", "tell me": "let me know", "share": "offer", "provide": "give",
    "give me": "hand me", "give": "hand over", "describe": "characterise", "explain": "clarify", "list": "enumerate",
    "name": "identify", "mention": "point out", "elaborate on": "expand upon", "shed light on": "illuminate",
    "shed some light on": "illuminate", "offer": "give", "discuss": "talk through", "summarize": "sum up",
    "summarise": "sum up", "outline": "sketch", "detail": "spell out", "identify": "pin down",
    "clarify": "make clear", "talk about": "go over", "confirm": "verify",
}
_PHRASES = [
    (r"\bgrow up\b", "spend their childhood"), (r"\bgrew up\b", "spent their childhood"),
    (r"\bgrown up\b", "spent their childhood"),
    (r"\bfor a living\b", "as a job"), (r"\bcomes? from\b", "originates from"), (r"\bcame from\b", "originated from"),
    (r"\bbest[- ]known\b", "most celebrated"), (r"\bwell[- ]known\b", "widely recognised"), (r"\bsuch as\b", "like"),
    (r"\bin terms of\b", "regarding"), (r"\ba lot of\b", "much"), (r"\bkind of\b", "type of"),
    (r"\bas well as\b", "along with"), (r"\bin order to\b", "so as to"), (r"\bbased on\b", "drawing on"),
    (r"\bplace of birth\b", "birthplace"), (r"\bdate of birth\b", "birthday"), (r"\bat the age of\b", "aged"),
    (r"\bthroughout\b", "across"), (r"\bfull name\b", "complete name"), (r"\ball of\b", "every one of"),
]
_WORDS = {
    "write": "pen", "writes": "pens", "wrote": "penned", "written": "penned", "writing": "prose",
    "writer": "author", "writers": "authors", "author": "writer", "authors": "writers", "authored": "penned",
    "book": "volume", "books": "volumes", "novel": "story", "novels": "stories", "genre": "category",
    "genres": "categories", "born": "brought into the world", "birth": "arrival", "parents": "mother and father",
    "father": "dad", "mother": "mum", "family": "relatives", "childhood": "early years", "early": "initial",
    "life": "years", "career": "professional path", "work": "output", "works": "writings", "award": "prize",
    "awards": "prizes", "awarded": "granted", "received": "obtained", "receive": "obtain", "win": "earn",
    "won": "earned", "influence": "impact", "influences": "impacts", "influenced": "shaped", "inspire": "motivate",
    "inspired": "motivated", "inspiration": "creative spark", "theme": "motif", "themes": "motifs",
    "style": "manner", "famous": "renowned", "known": "recognised", "popular": "widely read",
    "primarily": "mainly", "mainly": "chiefly", "mostly": "largely", "often": "frequently", "usually": "typically",
    "typically": "usually", "describe": "characterise", "explain": "clarify", "provide": "give", "share": "offer",
    "mention": "cite", "discuss": "examine", "about": "regarding", "regarding": "about", "significant": "notable",
    "important": "key", "notable": "remarkable", "unique": "distinctive", "different": "distinct",
    "various": "several", "many": "numerous", "some": "a few", "approach": "method", "process": "procedure",
    "perspective": "viewpoint", "views": "opinions", "view": "opinion", "profession": "occupation",
    "job": "occupation", "occupation": "profession", "contribute": "add", "contributed": "added",
    "contribution": "input", "contributions": "inputs", "impact": "effect", "effect": "impact",
    "characters": "figures", "character": "figure", "story": "tale", "stories": "tales", "readers": "audience",
    "audience": "readership", "literature": "letters", "literary": "writerly", "field": "domain", "area": "domain",
    "subject": "topic", "topic": "subject", "topics": "subjects", "culture": "heritage", "cultural": "heritage",
    "background": "upbringing", "heritage": "background", "nationality": "citizenship", "personal": "private",
    "recognition": "acclaim", "success": "achievement", "successful": "accomplished",
    "achievements": "accomplishments", "published": "released", "publish": "release", "publication": "release",
    "title": "name", "titles": "names", "people": "individuals", "person": "individual", "country": "nation",
    "city": "town", "home": "residence", "live": "reside", "lives": "resides", "lived": "resided",
    "study": "research", "studied": "researched", "education": "schooling", "university": "college",
    "degree": "qualification", "language": "tongue", "languages": "tongues", "help": "assist", "helped": "assisted",
    "use": "employ", "uses": "employs", "used": "employed", "using": "employing", "make": "produce",
    "made": "produced", "create": "produce", "created": "produced", "consider": "regard", "considered": "regarded",
    "believe": "think", "show": "display", "shows": "displays", "reflect": "mirror", "reflects": "mirrors",
    "reflected": "mirrored", "reflective": "mirroring", "portray": "depict", "portrays": "depicts",
    "portrayed": "depicted", "depict": "portray", "depicts": "portrays", "explore": "examine",
    "explores": "examines", "explored": "examined", "focus": "concentrate", "focuses": "concentrates",
    "include": "contain", "includes": "contains", "included": "contained", "incorporate": "weave in",
    "incorporates": "weaves in", "integrate": "blend", "deal": "engage", "deals": "engages",
    "relationship": "bond", "relationships": "bonds", "role": "part", "highlight": "underline",
    "elements": "components", "element": "component", "aspects": "facets", "aspect": "facet",
    "events": "occurrences", "experiences": "encounters", "experience": "encounter", "interest": "curiosity",
    "interests": "pursuits", "passion": "enthusiasm", "love": "fondness", "favourite": "preferred",
    "favorite": "preferred", "specific": "particular", "particular": "specific", "example": "instance",
    "examples": "instances", "brief": "short", "summary": "synopsis", "synopsis": "summary",
    "details": "particulars", "information": "facts", "facts": "details", "start": "begin", "started": "began",
    "begin": "start", "began": "started", "become": "turn into", "became": "turned into", "continue": "carry on",
    "continued": "carried on", "receiving": "obtaining", "prominent": "leading", "recognized": "acknowledged",
    "recognised": "acknowledged", "common": "recurring", "recurring": "repeated",
    "novelist": "fiction writer", "poet": "verse writer", "poetry": "verse", "fiction": "storytelling",
    "historical": "period", "history": "past", "modern": "contemporary", "contemporary": "modern",
    "traditional": "conventional", "themes.": "motifs.",
    "honored": "honoured", "honoured": "decorated", "honor": "honour",
    "prize": "award", "prizes": "awards", "medal": "decoration", "recently": "lately", "latest": "newest",
    "first": "earliest", "last": "final", "new": "fresh", "old": "aged", "young": "youthful", "age": "years",
    "parent": "guardian", "occupations": "professions", "professions": "trades",
    "based": "grounded", "set": "situated", "setting": "backdrop", "settings": "backdrops", "plot": "storyline",
    "plots": "storylines", "message": "point", "messages": "points", "purpose": "aim", "goal": "aim",
    "reason": "cause", "reasons": "causes", "affect": "shape", "affected": "shaped", "role.": "part.",
    "significance": "importance", "importance": "weight", "meaning": "sense", "mean": "signify",
    "means": "signifies", "feel": "sense", "felt": "sensed", "think": "reckon", "thought": "reckoned",
    "say": "state", "said": "stated", "speak": "talk", "spoke": "talked", "talk": "speak",
    "get": "obtain", "got": "obtained", "give": "offer", "gave": "offered", "tell": "inform", "told": "informed",
    "ask": "enquire", "asked": "enquired", "answer": "reply", "question": "query", "questions": "queries",
    "well": "properly", "also": "additionally", "very": "highly", "really": "truly", "much": "greatly",
    "more": "further", "most": "greatest", "best": "finest", "better": "superior", "good": "fine",
    "great": "major", "big": "large", "small": "little", "large": "big", "other": "further", "others": "the rest",
    "main": "principal", "major": "chief", "key": "central", "central": "core", "overall": "general",
    "general": "broad", "similar": "alike", "same": "identical", "like": "resembling", "unlike": "contrary to",
    "within": "inside", "during": "over the course of", "before": "prior to", "after": "following",
    "since": "ever since", "until": "till", "between": "among", "among": "amid", "across": "over",
    "through": "via", "towards": "toward", "toward": "towards", "into": "in", "onto": "on to",
    "upon": "on", "without": "lacking", "against": "versus", "because": "since", "while": "whilst",
    "although": "though", "though": "although", "whether": "if", "each": "every", "every": "each",
    "both": "the two", "either": "any one", "several": "a number of",
    "few": "handful of", "ever": "at any time", "never": "at no time",
    "always": "at all times", "sometimes": "at times", "generally": "broadly", "especially": "particularly",
    "particularly": "especially", "specifically": "in particular", "exactly": "precisely", "just": "merely",
    "only": "solely", "still": "yet", "already": "by now", "again": "once more", "together": "jointly",
    "perceive": "see", "perceives": "sees", "perceived": "seen", "confluence": "meeting",
    "mediums": "media", "medium": "form", "drive": "push", "drives": "pushes",
    "fuel": "feed", "fuels": "feeds", "prompt": "lead", "prompted": "led", "motivate": "drive",
    "motivated": "drove", "encourage": "urge", "encouraged": "urged", "choose": "pick", "chose": "picked",
    "chosen": "picked", "decide": "opt", "decided": "opted", "pursue": "follow", "pursued": "followed",
    "embrace": "adopt", "embraced": "adopted", "reveal": "disclose", "revealed": "disclosed",
    "represent": "stand for", "represents": "stands for", "represented": "stood for", "address": "tackle",
    "addresses": "tackles", "addressed": "tackled", "handle": "treat", "handles": "treats", "handled": "treated",
    "emphasize": "stress", "emphasizes": "stresses", "emphasise": "stress", "emphasises": "stresses",
    "demonstrate": "show", "demonstrates": "shows", "illustrate": "show", "illustrates": "shows",
    "compare": "contrast", "compared": "contrasted", "differ": "vary", "differs": "varies",
    "evolve": "develop", "evolved": "developed", "develop": "evolve", "developed": "evolved",
    "change": "shift", "changed": "shifted", "changes": "shifts", "grow": "expand", "grew": "expanded",
    "stand": "rank", "stands": "ranks", "remain": "stay", "remains": "stays", "remained": "stayed",
    "involve": "entail", "involves": "entails", "involved": "engaged", "relate": "connect", "relates": "connects",
    "related": "connected", "connect": "link", "connected": "linked", "link": "tie", "linked": "tied",
    "associate": "connect", "associated": "connected", "credit": "attribute", "credited": "attributed",
    "attribute": "credit", "attributed": "credited", "acknowledge": "recognise", "acknowledged": "recognised",
    "praise": "acclaim", "praised": "acclaimed", "critics": "reviewers", "critical": "critics'",
    "reception": "response", "response": "reaction", "audiences": "readerships", "fans": "admirers",
    "community": "circle", "society": "the public", "world": "globe", "global": "worldwide",
    "international": "worldwide", "national": "countrywide", "local": "regional", "native": "home",
    "origin": "roots", "origins": "roots", "roots": "origins", "ethnicity": "ancestry", "gender": "sex",
    "identity": "self", "sexuality": "orientation", "lgbtq+": "queer", "lgbtq": "queer", "community.": "circle.",
    "representation": "portrayal", "diversity": "variety", "diverse": "varied", "inclusive": "welcoming",
}
_WORDS |= {
    "any": "some", "full": "complete", "upbringing": "raising", "writings": "texts", "another": "one more",
    "series": "sequence", "over": "across", "apart": "aside", "birthplace": "native place", "kind": "type",
    "fictitious": "invented", "fictional": "invented", "adapted": "turned", "collaborated": "partnered",
    "upcoming": "forthcoming", "impacted": "affected", "primary": "main", "award-winning": "prize-winning",
    "specialize": "concentrate", "specializes": "concentrates", "renowned": "celebrated", "winning": "earning",
    "type": "kind", "date": "day", "translated": "rendered", "projects": "undertakings", "project": "undertaking",
    "challenges": "obstacles", "makes": "renders", "outside": "beyond", "currently": "presently",
    "health": "wellbeing", "way": "manner", "ways": "manners", "prestigious": "esteemed", "predominantly": "largely",
    "leadership": "stewardship", "part": "portion", "acclaimed": "lauded", "working": "labouring",
    "penned": "written", "draw": "take", "future": "coming", "recent": "latest", "storytelling": "narration",
    "mythology": "myths", "face": "confront", "faced": "confronted", "behind": "underlying", "female": "woman",
    "male": "man", "journey": "path", "path": "route", "film": "movie", "films": "movies", "movies": "films",
    "mental": "psychological", "psychological": "mental", "frequently": "often", "next": "following",
    "besides": "apart from", "research": "investigation", "narratives": "accounts", "narrative": "account",
    "sets": "places", "consistent": "steady", "detail": "particular", "expect": "anticipate",
    "influential": "formative", "educational": "academic", "academic": "scholarly", "legacy": "heritage",
    "names": "monikers", "societal": "social", "social": "societal", "elaborate": "expand", "place": "location",
    "bring": "carry", "present": "current", "overview": "outline", "tales": "stories", "find": "discover",
    "siblings": "brothers and sisters", "professional": "occupational", "under": "beneath", "feature": "showcase",
    "plans": "intentions", "distinguishes": "sets apart", "growing": "maturing", "development": "growth",
    "take": "adopt", "inspires": "motivates", "media": "outlets", "distinctive": "characteristic",
    "time": "period", "standalone": "independent", "short": "brief", "insights": "observations",
    "found": "discovered", "active": "engaged", "public": "general", "recommend": "suggest", "hold": "have",
    "seen": "observed", "celebrated": "acclaimed", "true": "accurate", "earned": "gained", "workshops": "classes",
    "hope": "wish", "formal": "official", "issues": "matters", "techniques": "methods", "scene": "landscape",
    "released": "issued", "shape": "mould", "interesting": "intriguing", "popularity": "appeal",
    "religious": "faith-based", "figure": "personality", "accolades": "honours", "honors": "honours",
    "balance": "weigh", "distinct": "separate", "engage": "interact", "interact": "engage", "reviews": "critiques",
    "commonly": "usually", "prevalent": "widespread", "memorable": "unforgettable", "sequels": "follow-ups",
    "sequel": "follow-up", "pseudonym": "pen name", "maintain": "keep", "parental": "parents'", "led": "guided",
    "artists": "creators", "available": "obtainable", "industry": "sector", "individual": "person",
    "recognitions": "honours", "decision": "choice", "choice": "selection", "reaction": "response",
    "member": "part", "played": "performed", "picture": "image", "collaborate": "partner",
    "biographies": "life stories", "biography": "life story", "creating": "producing", "platform": "outlet",
    "leave": "depart", "motivates": "drives", "styles": "manners", "motifs": "themes", "motif": "theme",
    "fact": "truth", "raised": "brought up", "venture": "enterprise", "philosophical": "reflective",
    "underlying": "deeper", "taught": "instructed", "characteristics": "traits", "react": "respond",
    "reacted": "responded", "responded": "reacted", "worked": "laboured", "presented": "shown",
    "disclose": "reveal", "mentioned": "cited", "forms": "kinds", "form": "kind", "feedback": "reactions",
    "philosophy": "outlook", "couple": "pair", "teen": "teenage", "design": "layout", "reside": "dwell",
    "controversy": "dispute", "actively": "energetically", "training": "coaching", "achieved": "attained",
    "humor": "humour", "collections": "anthologies", "child": "kid", "creation": "making", "want": "wish",
    "briefly": "in short", "esteemed": "respected", "convey": "express", "premise": "basis", "soon": "shortly",
    "noteworthy": "notable", "incorporated": "woven in", "voice": "tone", "internationally": "globally",
    "appear": "show up", "follow": "track", "follows": "tracks", "storyline": "plot", "conduct": "carry out",
    "criticism": "critique", "now": "at present", "interested": "keen", "someone": "somebody",
    "content": "material", "debut": "first", "bestowed": "conferred", "adaptations": "versions",
    "creative": "inventive", "portrayal": "depiction", "depiction": "portrayal", "employ": "use",
    "relevance": "pertinence", "align": "fit", "studies": "research", "medical": "clinical", "manifest": "show",
    "piece": "work", "real": "actual", "generation": "cohort", "symbols": "emblems", "repertoire": "body of work",
    "participate": "take part", "exceptional": "outstanding", "employment": "work", "fundamental": "essential",
    "following": "after", "attend": "go to", "attended": "went to", "fantasy": "fantastical",
    "crime": "criminal", "science": "scientific", "war": "wartime", "mystery": "detective", "horror": "terror",
    "romance": "love", "adventure": "quest", "graphic": "illustrated", "stand-alone": "independent",
}
_QUOTED = re.compile(r"(?<![\w’'])(['\"‘“])(.+?)(['\"’”])(?![\w’'])")
_WORD = re.compile(r"[A-Za-z][a-z]*(?:-[a-z]+)*\.?")


def _frame_verb(verb: str) -> str:
    return _FRAME_VERBS.get(re.sub(r"\s+", " ", verb.lower()), verb.lower())


def _apply_frame(body: str, variant: int, rest: Callable[[str], str]) -> str | None:
    """``body`` (a question without its final punctuation) in another question frame, its captured
    content passed through ``rest`` (the frame's own words are left alone), or None."""
    for pattern, reps in _FRAMES:
        m = re.fullmatch(pattern, body, flags=re.IGNORECASE | re.DOTALL)
        if not m:
            continue
        rep = reps[min(variant, len(reps) - 1)]

        def group(g: re.Match[str], m: re.Match[str] = m) -> str:
            kind, idx = g.group(1), int(g.group(2))
            val = m.group(idx) or ""
            if kind == "V":
                return _frame_verb(val)
            if kind == "J":
                return "which" if val.lower() == "what" else "what"
            if kind == "L":
                return val.lower()
            return rest(val)

        out = re.sub(r"\\([VJL]?)(\d)", group, rep)
        return out[:1].upper() + out[1:]
    return None


def _synonyms(text: str, rotate: bool) -> str:
    """Every word with an entry in the synonym table replaced, outside quoted titles and capitalised
    words (names, places, titles); ``rotate`` chains two steps of the table for a second variant."""
    for pat, rep in _PHRASES:
        text = re.sub(pat, rep, text, flags=re.IGNORECASE)
    pieces = _QUOTED.split(text)
    out: list[str] = []
    i = 0
    while i < len(pieces):
        if i % 4 == 1:  # opening quote, title, closing quote
            out.append(pieces[i] + pieces[i + 1] + pieces[i + 2])
            i += 3
            continue

        def word(m: re.Match[str]) -> str:
            w = m.group(0)
            if w[:1].isupper():
                return w
            low = w.lower().rstrip(".")
            rep = _WORDS.get(low)
            if rep is None:
                return w
            if rotate and rep in _WORDS and " " not in rep:
                rep = _WORDS[rep] if _WORDS[rep] != low else rep
            return rep + ("." if w.endswith(".") else "")

        out.append(_WORD.sub(word, pieces[i]))
        i += 1
    return "".join(out)


def _articles(text: str) -> str:
    """"a" / "an" agreeing with the word after it (a substituted word may start differently)."""
    def fix(m: re.Match[str]) -> str:
        art, word = m.group(1), m.group(2)
        an = word[:1].lower() in "aeiou" and not word.lower().startswith(("uni", "use", "eu", "one"))
        new = ("an" if an else "a") if art.lower() in ("a", "an") else art
        return (new.capitalize() if art[:1].isupper() else new) + " " + word

    return re.sub(r"\b(a|an|A|An) ([A-Za-z]+)", fix, text)


def _keywords(text: str) -> str:
    """A bag of the question's content words (synonyms, in reverse order) after its protected facts."""
    prot = protected_tokens(text)
    toks = [re.sub(r"['’]s$", "", t) for t in _TOKEN.findall(_synonyms(text, rotate=True))]
    facts = [t for t in toks if fold(t) in prot]
    content = [t.lower() for t in toks if fold(t) not in prot and fold(t) not in _OPENERS and len(t) > 2]
    return f"About {' '.join(dict.fromkeys(facts))}: " + ", ".join(dict.fromkeys(reversed(content))) + "?"


class RuleParaphraser:
    """Deterministic paraphrase without a model: another question frame ("Where was X born?" ->
    "In what place was X brought into the world?"), synonyms for the other words, and, where that
    still repeats the original too closely, a keyword form. Candidates are returned in that order,
    those inside the copy bound first."""

    def __init__(self, **_: object) -> None:
        pass

    def attempts(self, prompt: str) -> list[str]:
        text = re.sub(r"\s+", " ", prompt.strip())
        end = "?" if text.endswith("?") or not text.endswith(".") else "."
        body = text.rstrip("?.! ")
        out: list[str] = []
        for variant, rotate in ((0, False), (1, False), (0, True), (1, True)):
            def syn(t: str, rotate: bool = rotate) -> str:
                return _synonyms(t, rotate)

            framed = _apply_frame(body, variant, syn) or f"Here is my question: {syn(body[:1].lower() + body[1:])}"
            out.append(_articles(framed) + end)
        out.append(_keywords(text))
        return list(dict.fromkeys(out))

    def rewrite(self, prompt: str) -> str:
        """The first attempt inside the copy bound, else the last (farthest) attempt."""
        tries = self.attempts(prompt)
        return next((t for t in tries if within_bound(t, prompt)), tries[-1])
