"""The privacy decision: retrieval first, then a decision conditioned on the retrieved request.

One global head over every forget question learns what those questions have in common — with
hundreds of writers forgotten, "a question about a writer" — and its false positives grow with
the store. So privacy requests are decided per request: candidates are the requests whose hashed
names or scope entities the query names and the requests owning its nearest stored samples; each
candidate ``r`` gets

- ``entity``: name evidence for ``r`` (:class:`lethe.guard.entities.EntityMatcher`: rarity- and
  uniqueness-weighted, damped when the query names someone else);
- ``scope``: salient entities of ``r`` the query names (titles, prizes, places, dates;
  :mod:`lethe.guard.scope`), damped when the query quotes ``r``'s title as the work of a person it
  names ("the plot of Lucas Bryant's 'Whispers of the Sakura'");
- ``similarity``: similarity to ``r``'s own samples, counted only (a) in proportion to the name or
  scope evidence for the *same* request, or (b) without such evidence, when the query is a near
  paraphrase of one of ``r``'s samples *and* clearly closer to it than to ``r``'s hard negatives (the
  same questions about other people, other titles, other places) and to the nearest benign query.

and the request's confidence is their noisy-OR; the best candidate decides. Nothing is fitted, so
adding or revoking a request changes only that request's vectors and hashes: precision depends on
how close a query is to *one* request against that request's own negatives, not on how many
requests there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lethe.config import DetectorConfig
from lethe.guard.entities import EntityHit, QueryTokens, ScopeHit
from lethe.store.base import NegativeSample


@dataclass
class RequestVectors:
    """A live request's sample embeddings, kept in memory (float32: BLAS products; about 40 kB per
    request with the rule rewriter) for per-request similarity."""

    kind: str
    pos: np.ndarray
    hard: np.ndarray

    @classmethod
    def of(cls, kind: str, samples: list[NegativeSample], dim: int) -> RequestVectors:
        pos = [s.embedding for s in samples if s.label == 1]
        hard = [s.embedding for s in samples if s.label == 0]
        return cls(kind, np.ascontiguousarray(np.stack(pos) if pos else np.zeros((0, dim)), np.float32),
                   np.ascontiguousarray(np.stack(hard) if hard else np.zeros((0, dim)), np.float32))

    def positives(self) -> np.ndarray:
        return self.pos

    def hard_negatives(self) -> np.ndarray:
        return self.hard

    def sims(self, e: np.ndarray) -> tuple[float, float]:
        """(max cosine to the positives, max cosine to the hard negatives; -1 where there are none)."""
        e = np.asarray(e, np.float32)
        s = float((self.pos @ e).max()) if len(self.pos) else -1.0
        h = float((self.hard @ e).max()) if len(self.hard) else -1.0
        return s, h


@dataclass
class PrivacyDecision:
    request_id: str
    score: float
    entity: float
    scope: float
    similarity: float
    sim_raw: float
    margin: float
    other_person: bool
    name_hit: EntityHit | None = None
    scope_hit: ScopeHit | None = None
    parts: dict[str, float] = field(default_factory=dict)


def _ramp(x: float, lo: float, hi: float) -> float:
    return float(np.clip((x - lo) / max(1e-6, hi - lo), 0.0, 1.0))


def _full_name_of_someone(q: QueryTokens) -> bool:
    return any(a and b for a, b in zip(q.name_like, q.name_like[1:], strict=False))


def decide(e: np.ndarray, benign_sim: float, retrieved: list[str], name_hits: list[EntityHit],
           scope_hits: list[ScopeHit], vectors: dict[str, RequestVectors], q: QueryTokens,
           cfg: DetectorConfig, max_candidates: int = 12) -> PrivacyDecision | None:
    """The best privacy request for one query (embedding ``e``), or None when there is no candidate."""
    names = {h.request_id: h for h in name_hits if h.request_id in vectors and vectors[h.request_id].kind == "privacy"}
    scopes = {h.request_id: h for h in scope_hits if h.request_id in vectors and vectors[h.request_id].kind == "privacy"}
    cands = list(dict.fromkeys([*list(names)[:5], *list(scopes)[:5],
                                *[r for r in retrieved if r in vectors and vectors[r].kind == "privacy"][:5]]))
    someone_else = _full_name_of_someone(q)
    best: PrivacyDecision | None = None
    for rid in cands[:max_candidates]:
        nh, sh = names.get(rid), scopes.get(rid)
        ent = nh.score if nh else 0.0
        scope = sh.score if sh else 0.0
        if sh and sh.quoted_title and ent == 0.0 and q.credits_person:
            scope *= cfg.other_name_damping  # "What is the plot of <someone else>'s '<a title of r>'?"
        other = bool(nh and nh.other_person)
        s, h = vectors[rid].sims(e)
        margin = s - max(h, benign_sim)
        evidence = 1.0 - (1.0 - ent) * (1.0 - scope)
        conditioned = _ramp(s, cfg.sim_floor, cfg.sim_ceiling) * min(1.0, evidence / cfg.evidence_gate)
        paraphrase = _ramp(s, cfg.paraphrase_floor, cfg.paraphrase_ceiling) * _ramp(margin, 0.0, cfg.paraphrase_margin)
        if ent == 0.0 and someone_else:  # the query names a person, and not this one
            paraphrase *= cfg.other_name_damping
        sim = max(conditioned, paraphrase)
        if other:
            sim *= cfg.other_name_damping
        score = 1.0 - (1.0 - ent) * (1.0 - scope) * (1.0 - sim)
        if best is None or score > best.score:
            best = PrivacyDecision(rid, score, ent, scope, sim, s, margin, other, nh, sh,
                                   {"entity": ent, "scope": scope, "similarity": sim})
    return best
