"""Dual-layer detection: one confidence score in [0, 1] with its parts.

DRAGON (arXiv 2511.05784, Eq. 2-3) sums an entity-match indicator, the maximum cosine
similarity to the unlearn store and the thresholded scorer probability (privacy), or the
scorer, BERTScore and ROUGE-L against stored prompts (hazardous concepts). Lethe keeps
the same signals but grades them (fuzzy, whole-name-weighted entity score; similarity
mapped linearly between a floor and a ceiling) and fuses them with a noisy-OR, so no
single weak signal (one shared first name) decides and any strong one does.

    confidence = 1 - (1 - entity)(1 - sim)(1 - scorer')(1 - concept),
    scorer' = clip((p_F - tau_1) / (1 - tau_1), 0, 1)   (tau_1 = 0.9 by default)

``concept`` = max(BERTScore-mapped, ROUGE-L F1) against the nearest stored rewrites of
harmful/copyright requests (text must be stored for it).

Concept mode (the nearest sample belongs to a harmful/copyright request) follows the paper's
"scorer primary, BERTScore/ROUGE-L secondary": raw similarity is not a component there (academic
questions sit close to hazardous ones in embedding space), the scorer uses the concept threshold
``concept_scorer_threshold`` and the concept signal only counts as far as the scorer agrees
(``concept * p_F``), so a question that is merely near the domain does not fire on similarity
alone; benchmarks/bench_detection_wmdp.py measures it against plain noisy-OR on WMDP vs MMLU.

In-domain benign queries (``<home>/benign.jsonl``, one ``{"prompt": ...}`` a line, added with
``Guard.add_benign`` / ``lethe benign add``) join the shipped benign set as scorer negatives: the
cheapest fix for a false-positive-prone domain, and never forget-side data.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from lethe.backends.embeddings import Embedder, cached_encode
from lethe.config import DetectorConfig
from lethe.guard.benign import benign_split, load_benign
from lethe.guard.bertscore import bertscore_f1_tokens
from lethe.guard.concept import ConceptScorer, near_domain_split
from lethe.guard.concept import attach as attach_concept_scorer
from lethe.guard.detection import Detection, merge_hits, names_other_person
from lethe.guard.entities import EntityMatcher
from lethe.guard.messages import ROLE_WEIGHTS, TEXT_PART_TYPES, MessagePart, message_parts, role_weight
from lethe.guard.privacy import RequestVectors, decide
from lethe.guard.scope import person_query, query_tokens, quoted_title_keys, quoted_titles
from lethe.guard.scorer import SCORERS, Scorer
from lethe.guard.translate import mostly_foreign
from lethe.guard.windows import (
    LONG_JOIN_WORDS,
    MAX_WINDOW_CHARS,
    NAMES_ONLY,
    REQUEST_WINDOW_CHARS,
    asks,
    expand_text,
    segments,
)
from lethe.store.base import CONCEPT_KINDS, NegativeSample, UnlearnStore
from lethe.text import normalize

__all__ = ["LONG_JOIN_WORDS", "MAX_WINDOW_CHARS", "NAMES_ONLY", "REQUEST_WINDOW_CHARS", "ROLE_WEIGHTS",
           "TEXT_PART_TYPES", "Detection", "Detector", "MessagePart", "asks", "benign_split", "expand_text",
           "load_benign", "merge_hits", "message_parts", "names_other_person", "role_weight", "segments"]
PROBE_MIN_ENTITY = 0.5  # a probed view is scored only if it names a forgotten surname or more


class _RougeL:
    """ROUGE-L (``rouge_score``, stemmed) built on first use: rouge_score imports nltk and scipy,
    which only concept-mode scoring needs."""

    def __init__(self) -> None:
        self._scorer = None

    def score(self, target: str, prediction: str) -> dict:
        if self._scorer is None:
            from rouge_score import rouge_scorer

            self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        return self._scorer.score(target, prediction)


class Detector:
    def __init__(self, store: UnlearnStore, embedder: Embedder, config: DetectorConfig | None = None,
                 extra_benign: list[str] | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or DetectorConfig()
        self.matcher = EntityMatcher(store.secret(), fuzzy=self.config.fuzzy)
        self.scorer: Scorer = SCORERS.create(self.config.scorer)
        # concept hook: the fine-tuned concept-mode scorer (lethe.guard.concept; None unless scorer=concept)
        self.concept_scorer: ConceptScorer | None = attach_concept_scorer(self)
        self._rouge = _RougeL()
        self._benign_train, self.benign_holdout = benign_split(load_benign())
        self._benign_train = self._benign_train + list(extra_benign or [])
        self._benign_emb: np.ndarray | None = None
        self._kinds: dict[str, str] = {}
        self._vectors: dict[str, RequestVectors] = {}  # live request id -> its sample embeddings
        self._staged: dict[str, list[NegativeSample]] = {}  # samples handed over before the store add
        self._concept_ids: frozenset[str] | None = None  # the concept requests the scorer was fit on
        self._lock = threading.RLock()
        self._refit_thread: threading.Thread | None = None
        self._refit_gen = 0
        self.last_refit_s = 0.0
        self._version = -1
        # English translations of mostly non-English texts (``detector.translate``; set by the guard)
        self.translator: Callable[[str], str | None] | None = None
        self.refresh()
        store.subscribe(self.refresh)

    # -- state -----------------------------------------------------------------------
    def benign_views(self, n: int = 1500, seed: int = 0) -> list[str]:
        """Benign texts in the forms the stored positives take: the augmentations
        (:func:`lethe.guard.augment.augment`: lower case, typos, keywords, wrappers) of a seeded sample of
        the benign and near-domain training queries, and the rule rewriter's frame of another sample.

        Concept positives are stored rewrites and their augmentations; with negatives only in plain
        form, a head learns the augmentation and rewrite style as the class (on WMDP against MMLU it
        halved the TPR at 1 % FPR, ``docs/results.md``). Seeded, so the texts, and their cached
        embeddings, are the same in every process."""
        from lethe.guard.augment import augment
        from lethe.guard.rewrite import RuleRewriter

        texts = list(dict.fromkeys(list(self._benign_train) + near_domain_split()[0]))
        rng = random.Random(f"{seed}:benign-views")
        views = [a for t in rng.sample(texts, min(n, len(texts))) for a in augment(t, seed=seed)]
        rule = RuleRewriter()
        views += [rule.rewrite(t) for t in rng.sample(texts, min(n, len(texts)))]
        return list(dict.fromkeys(views))

    def benign_embeddings(self) -> np.ndarray:
        """Vectors of the benign scorer negatives, kept on disk between processes (keyed by the
        embedder and the texts, ``lethe.backends.embeddings.cached_encode``)."""
        if self._benign_emb is None:
            from lethe.backends.embeddings import cached_encode

            self._benign_emb = cached_encode(self.embedder, self._benign_train)
        return self._benign_emb

    def stage(self, request_id: str, samples: list[NegativeSample]) -> None:
        """Samples of a request about to be added through this process (its refresh need not re-read them)."""
        self._staged[request_id] = samples

    def refresh(self, full: bool = False) -> None:
        """Follow the store: load the vectors of new requests, drop revoked ones, rebuild the hashed-name
        index. Incremental: an add or revoke touches only that request (plus a re-read of the request
        list); the concept scorer is refit only when the concept requests change, in the background
        (``background_refit``) except at open, where no earlier scorer exists to answer meanwhile.
        ``full`` re-reads every sample and refits."""
        with self._lock:
            version = self.store.version()
            if not full and version == self._version:
                return
            requests = self.store.list_requests()
            live = {r.id: r for r in requests}
            if full:
                self._vectors.clear()
            new = [rid for rid in live if rid not in self._vectors]
            unstaged = {rid for rid in new if rid not in self._staged}
            loaded: dict[str, list[NegativeSample]] = {}
            if unstaged:  # written by another process (or at open): read them from the store
                for s in self.store.samples(live_only=True):
                    if s.request_id in unstaged:
                        loaded.setdefault(s.request_id, []).append(s)
            dim = self.embedder.dim
            for rid in new:
                self._vectors[rid] = RequestVectors.of(live[rid].kind, self._staged.pop(rid, None)
                                                       or loaded.get(rid, []), dim)
            for rid in [r for r in self._vectors if r not in live]:
                del self._vectors[rid]
            self._kinds = {r.id: r.kind for r in requests}
            self.matcher.set_entries([(r.id, rec) for r in requests for rec in r.entities])
            self._version = version
            concept = frozenset(rid for rid, k in self._kinds.items() if k in CONCEPT_KINDS)
            if full or concept != self._concept_ids:
                first = self._concept_ids is None  # at open there is no previous scorer to keep using
                self._concept_ids = concept
                self._refit(background=self.config.background_refit and not full and not first)

    def _refit(self, background: bool) -> None:
        """Fit a fresh scorer on the concept requests' positives against benign queries and their hard
        negatives, then swap it in; detection keeps using the previous one meanwhile."""
        with self._lock:
            ids = self._concept_ids or frozenset()
            pos = [self._vectors[r].positives() for r in ids if r in self._vectors]
            hard = [self._vectors[r].hard_negatives() for r in ids if r in self._vectors]
            self._refit_gen += 1
            gen = self._refit_gen
        neg = self.benign_embeddings()
        if pos:  # concept requests: the shipped near-domain benign questions are negatives too
            neg = np.vstack([neg, cached_encode(self.embedder, near_domain_split()[0]),
                             cached_encode(self.embedder, self.benign_views())])
        dim = self.embedder.dim
        P = np.vstack(pos) if pos else np.zeros((0, dim), np.float32)
        N = np.vstack([neg, *hard]) if hard else neg

        def fit() -> None:
            t = time.perf_counter()
            scorer = SCORERS.create(self.config.scorer)
            scorer.fit(P, N)
            with self._lock:
                if gen == self._refit_gen:  # a newer refit supersedes this one
                    self.scorer = scorer
            self.last_refit_s = time.perf_counter() - t

        if background and len(P):
            th = threading.Thread(target=fit, name="lethe-scorer-refit", daemon=True)
            self._refit_thread = th
            th.start()
        else:
            fit()

    def wait_refit(self, timeout: float | None = None) -> None:
        """Block until a background scorer refit has finished (adds of concept requests, calibration)."""
        th = self._refit_thread
        if th is not None:
            th.join(timeout)

    def add_benign(self, prompts: list[str]) -> None:
        """Extra scorer negatives (in-domain benign queries); refits the scorer."""
        self._benign_train = self._benign_train + list(prompts)
        self._benign_emb = None
        self._refit(background=False)

    @property
    def empty(self) -> bool:
        return not self._kinds

    # -- scoring ---------------------------------------------------------------------
    def _sim_component(self, s: float) -> float:
        lo, hi = self.config.sim_floor, self.config.sim_ceiling
        return float(np.clip((s - lo) / max(1e-6, hi - lo), 0.0, 1.0))

    def score_texts(self, texts: list[str]) -> list[Detection]:
        """Confidence per text. Privacy requests: retrieval first, then a decision conditioned on each
        candidate request (``lethe.guard.privacy``); concept requests: the scorer-primary fusion."""
        if self._version != self.store.version():
            self.refresh()
        norm = [normalize(t) for t in texts]
        if self.empty or not texts:
            return [Detection(0.0, False, {"entity": 0.0, "similarity": 0.0, "scorer": 0.0}) for _ in texts]
        scorer, vectors = self.scorer, self._vectors
        emb = self.embedder.encode(norm)
        probs = scorer.predict(emb)
        # concept hook: fine-tuned probabilities (None until a model is ready, or without concept requests)
        cprobs = self.concept_scorer.predict_texts(norm) if self.concept_scorer is not None and self._concept_ids else None
        matches = self.store.search(emb, k=16)
        benign = self.benign_embeddings()
        benign_sim = (emb @ benign.T).max(axis=1) if len(benign) else np.full(len(norm), -1.0)
        out = []
        for i, text in enumerate(norm):
            comps: dict[str, float] = {}
            matched: list[dict] = []
            q = self.matcher.tokens(text)
            hits = merge_hits(self.matcher.match(text, q), self.matcher.match_script(texts[i]))
            extra = query_tokens(text)
            scope_hits = self.matcher.match_scope(text, extra, q, person_query(text),
                                                  query_genres=any(t.startswith("g") for t in extra),
                                                  quoted=quoted_titles(text), quoted_keys=quoted_title_keys(text))
            retrieved = list(dict.fromkeys(m.sample.request_id for m in matches[i]))
            dec = decide(emb[i], float(benign_sim[i]), retrieved, hits, scope_hits, vectors, q, self.config)
            best = matches[i][0] if matches[i] else None
            ent = dec.entity if dec else 0.0
            comps["entity"] = ent
            comps["similarity_raw"] = best.score if best else 0.0
            comps["scorer"] = float(probs[i])
            concept = 0.0
            concept_matches = [m for m in matches[i][:3]
                               if self._kinds.get(m.sample.request_id) in CONCEPT_KINDS and m.sample.text]
            if concept_matches:
                toks = self.embedder.token_embeddings([text] + [m.sample.text or "" for m in concept_matches])
                bs = max(bertscore_f1_tokens(toks[0], t) for t in toks[1:])
                rl = max(self._rouge.score(m.sample.text or "", text)["rougeL"].fmeasure for m in concept_matches)
                comps["bertscore"], comps["rougeL"] = bs, rl
                concept = max(float(np.clip((bs - 0.6) / 0.3, 0, 1)), float(np.clip((rl - 0.3) / 0.5, 0, 1)))
                comps["concept"] = concept
            concept_mode = best is not None and self._kinds.get(best.sample.request_id) in CONCEPT_KINDS
            if concept_mode and cprobs is not None:  # concept hook: the fine-tuned scorer's probability
                comps["scorer"] = float(cprobs[i])
            t1 = self.config.concept_scorer_threshold if concept_mode else self.config.scorer_threshold
            scorer_part = float(np.clip((comps["scorer"] - t1) / max(1e-6, 1 - t1), 0.0, 1.0))
            if concept_mode:  # scorer primary; lexical/BERTScore evidence only where the scorer agrees
                ent = max([h.score for h in hits[:1]] + [ent])
                comps["entity"] = ent
                concept = concept * comps["scorer"]
                comps["concept"] = concept
                sim_part, scope = 0.0, 0.0
                comps["similarity"] = self._sim_component(best.score) if best else 0.0
                if 0.0 < ent < 0.5 and names_other_person(text):
                    scorer_part *= self.config.other_name_damping
                    comps["other_name"] = 1.0
            else:
                sim_part = dec.similarity if dec else 0.0
                scope = dec.scope if dec else 0.0
                comps["similarity"] = sim_part
                comps["scope"] = scope
                if dec is not None:
                    comps["similarity_request"] = dec.sim_raw
                    comps["margin"] = dec.margin
                    if dec.other_person:
                        comps["other_name"] = 1.0
            parts = {"entity": ent, "scope": scope, "similarity": sim_part, "scorer": scorer_part, "concept": concept}
            score = 1.0 - float(np.prod([1.0 - v for v in parts.values()]))
            triggered = score > self.config.tau
            fired = [k for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.5]
            rid = None
            if dec is not None and not concept_mode and max(ent, scope, sim_part) >= max(scorer_part, concept):
                rid = dec.request_id
                if dec.name_hit is not None:
                    matched.append({"component": "entity", "request_id": rid, "score": round(ent, 4),
                                    "tokens_matched": f"{dec.name_hit.matched_tokens}/{dec.name_hit.total_tokens}",
                                    "fuzzy": dec.name_hit.fuzzy, "other_person": dec.name_hit.other_person})
                if dec.scope_hit is not None:
                    matched.append({"component": "scope", "request_id": rid, "score": round(scope, 4),
                                    "entities": dec.scope_hit.matched})
                matched.append({"component": "similarity", "request_id": rid, "cosine": round(dec.sim_raw, 4),
                                "margin": round(dec.margin, 4)})
            elif concept_mode and hits and ent >= max(scorer_part, concept):
                rid = hits[0].request_id
                matched.append({"component": "entity", "request_id": rid, "score": round(ent, 4),
                                "tokens_matched": f"{hits[0].matched_tokens}/{hits[0].total_tokens}",
                                "fuzzy": hits[0].fuzzy})
            if best is not None:
                rid = rid or best.sample.request_id
                matched.append({"component": "nearest", "request_id": best.sample.request_id,
                                "sample_id": best.sample.id, "role": best.sample.role,
                                "cosine": round(best.score, 4), "sample_text": best.sample.text})
            out.append(Detection(score, triggered, comps, rid, self._kinds.get(rid or ""), matched, fired))
        return out

    def expand(self, text: str, max_chars: int | None = None) -> list[tuple[str, str]]:
        """``text`` as the detector reads it: (how it was read, the text read) for the text whole, its
        windows when it is long (``segments``, at most ``max_chars`` characters) and its decoded views
        (``lethe.guard.views``)."""
        out = expand_text(text, self._probe, MAX_WINDOW_CHARS if max_chars is None else max_chars)
        if self.translator is not None and mostly_foreign(text):  # lethe.guard.translate: off by default
            english = self.translator(text)
            if english and all(english != t for _, t in out):
                out.append(("view:translated", english))
        return out

    def _probe(self, text: str) -> bool:
        """Whether a cheaply decoded view names a forgotten person (keyed-hash matcher only)."""
        hits = self.matcher.match(normalize(text))
        return bool(hits) and hits[0].score >= PROBE_MIN_ENTITY

    def detect_messages(self, messages: list[dict]) -> Detection:
        """Score everything the upstream model will read; the highest role-weighted score wins.

        Every message of every role (``message_parts``: string content, text content parts, ``name``
        fields, tool-call function names and arguments), each read whole, in windows when long and
        through its decoded views (``expand``); the last ``history_turns`` user turns joined and the
        last ``history_turns`` parts of any role joined, so a question split across turns or roles is
        also read in one piece. Windows defeat dilution (a forget question wrapped in a role-play
        preamble or buried in a long document is scored on its own too); views defeat encodings.
        The winning detection's ``source`` says where its text came from."""
        parts = message_parts(messages)
        if not parts:
            return Detection(0.0, False)
        items: dict[str, dict] = {}  # text -> source (the highest role weight wins a duplicate)

        def add(text: str, source: dict) -> None:
            if not text.strip():
                return
            old = items.get(text)
            if old is None or role_weight(source["role"]) > role_weight(old["role"]):
                items[text] = source

        budget = REQUEST_WINDOW_CHARS
        for p in reversed(parts):  # newest first: a request's window budget goes to its latest turns
            for how, t in self.expand(p.text, max_chars=min(MAX_WINDOW_CHARS, max(0, budget))):
                add(t, {"role": p.role, "message": p.index, "field": p.field, "read": how, "text": t})
                if how != "whole":
                    budget -= len(t)
        n = self.config.history_turns
        if n > 1:
            users = [p.text for p in parts if p.role == "user" and p.field == "content"]
            if len(users) > 1:
                joined = " ".join(users[-n:])
                add(joined, {"role": "user", "message": None, "field": "content", "read": "user_turns", "text": joined})
            recent = [p for p in parts if p.field == "content"][-n:]
            if len(recent) > 1:
                joined = " ".join(p.text for p in recent)
                role = min((p.role for p in recent), key=role_weight)
                add(joined, {"role": role, "message": None, "field": "content", "read": "conversation", "text": joined})
        for src in items.values():
            if src["read"] in ("user_turns", "conversation") and len(src["text"].split()) > LONG_JOIN_WORDS:
                src["read"] += NAMES_ONLY
        texts = list(items)
        dets = self.score_texts(texts)
        best: Detection | None = None
        for text, d in zip(texts, dets, strict=True):
            src = items[text]
            d = self.as_read(d, src["read"])
            score = d.score * role_weight(src["role"])
            if best is None or score > best.score:
                best = replace(d, score=score, triggered=score > self.config.tau, source=src)
        assert best is not None
        return best

    def as_read(self, d: Detection, read: str) -> Detection:
        """``d`` as the reading ``read`` counts it: a long text read whole (``NAMES_ONLY``) counts its
        name matches only. Its windows carry its meaning; whole, the embedder would see only its first
        256 tokens while lexical evidence (places, titles, dates) piles up over a long text."""
        if not read.endswith(NAMES_ONLY):
            return d
        ent = float(d.components.get("entity", 0.0))
        hit = next((m for m in d.matched if m.get("component") == "entity"), None)
        rid = hit.get("request_id") if hit and ent > 0 else None
        kind = getattr(self, "_kinds", {}).get(rid or "", d.kind if rid == d.request_id else None)
        return replace(d, score=ent, triggered=ent > self.config.tau, request_id=rid, kind=kind if rid else None,
                       matched=[hit] if hit and ent > 0 else [], fired=["entity"] if ent >= 0.5 else [])
