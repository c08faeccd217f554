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
(``concept * p_F``). Measured on WMDP vs MMLU this raised TPR at 2 % FPR from 0.09 to 0.5
(bio) over plain noisy-OR; see benchmarks/bench_detection_wmdp.py.

In-domain benign queries (``<home>/benign.jsonl``, one ``{"prompt": ...}`` a line, added with
``Guard.add_benign`` / ``lethe benign add``) join the shipped benign set as scorer negatives: the
cheapest fix for a false-positive-prone domain, and never forget-side data.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer

from lethe.backends.embeddings import Embedder
from lethe.config import DetectorConfig
from lethe.guard.bertscore import bertscore_f1_tokens
from lethe.guard.entities import EntityMatcher
from lethe.guard.scorer import SCORERS, Scorer
from lethe.store.base import CONCEPT_KINDS, UnlearnStore
from lethe.text import normalize


@dataclass
class Detection:
    score: float
    triggered: bool
    components: dict[str, float] = field(default_factory=dict)
    request_id: str | None = None
    kind: str | None = None
    matched: list[dict] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)

    def explain(self) -> str:
        parts = ", ".join(f"{k}={v:.3f}" for k, v in self.components.items())
        verdict = "IN SCOPE" if self.triggered else "out of scope"
        why = f" (fired: {', '.join(self.fired)}; request {self.request_id})" if self.fired else ""
        return f"{verdict}: score {self.score:.3f} [{parts}]{why}"

    def to_dict(self) -> dict:
        return {
            "in_scope": self.triggered, "score": round(self.score, 6),
            "components": {k: round(v, 6) for k, v in self.components.items()},
            "request_id": self.request_id, "kind": self.kind, "fired": self.fired, "matched": self.matched,
        }


def load_benign(path: Path | None = None) -> list[dict]:
    import json

    if path is None:
        text = (resources.files("lethe") / "resources" / "benign_queries.jsonl").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def benign_split(rows: list[dict], seed: int = 0, holdout: float = 0.2) -> tuple[list[str], list[str]]:
    """Deterministic train / calibration split of the benign set."""
    prompts = [r["prompt"] for r in rows]
    rng = random.Random(seed)
    idx = list(range(len(prompts)))
    rng.shuffle(idx)
    cut = int(len(idx) * (1 - holdout))
    return [prompts[i] for i in idx[:cut]], [prompts[i] for i in idx[cut:]]


class Detector:
    def __init__(self, store: UnlearnStore, embedder: Embedder, config: DetectorConfig | None = None,
                 extra_benign: list[str] | None = None) -> None:
        self.store = store
        self.embedder = embedder
        self.config = config or DetectorConfig()
        self.matcher = EntityMatcher(store.secret())
        self.scorer: Scorer = SCORERS.create(self.config.scorer)
        self._rouge = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        self._benign_train, self.benign_holdout = benign_split(load_benign())
        self._benign_train = self._benign_train + list(extra_benign or [])
        self._benign_emb: np.ndarray | None = None
        self._kinds: dict[str, str] = {}
        self._version = -1
        self.refresh()
        store.subscribe(self.refresh)

    # -- state -----------------------------------------------------------------------
    def benign_embeddings(self) -> np.ndarray:
        if self._benign_emb is None:
            self._benign_emb = self.embedder.encode(self._benign_train)
        return self._benign_emb

    def refresh(self) -> None:
        """Re-read requests, rebuild the name matcher and refit the scorer."""
        requests = self.store.list_requests()
        self._kinds = {r.id: r.kind for r in requests}
        self.matcher.set_entries([(r.id, rec) for r in requests for rec in r.entities])
        samples = self.store.samples(live_only=True)
        pos = [s.embedding for s in samples if s.label == 1]
        hard = [s.embedding for s in samples if s.label == 0]
        neg = self.benign_embeddings()
        if hard:
            neg = np.vstack([neg, np.stack(hard)])
        self.scorer.fit(np.stack(pos) if pos else np.zeros((0, self.embedder.dim), np.float32), neg)
        self._version = self.store.version()

    def add_benign(self, prompts: list[str]) -> None:
        """Extra scorer negatives (in-domain benign queries); refits the scorer."""
        self._benign_train = self._benign_train + list(prompts)
        self._benign_emb = None
        self.refresh()

    @property
    def empty(self) -> bool:
        return not self._kinds

    # -- scoring ---------------------------------------------------------------------
    def _sim_component(self, s: float) -> float:
        lo, hi = self.config.sim_floor, self.config.sim_ceiling
        return float(np.clip((s - lo) / max(1e-6, hi - lo), 0.0, 1.0))

    def score_texts(self, texts: list[str]) -> list[Detection]:
        if self._version != self.store.version():
            self.refresh()
        norm = [normalize(t) for t in texts]
        if self.empty or not texts:
            return [Detection(0.0, False, {"entity": 0.0, "similarity": 0.0, "scorer": 0.0}) for _ in texts]
        emb = self.embedder.encode(norm)
        probs = self.scorer.predict(emb)
        matches = self.store.search(emb, k=5)
        out = []
        for i, text in enumerate(norm):
            comps: dict[str, float] = {}
            matched: list[dict] = []
            hits = self.matcher.match(text)
            ent = hits[0].score if hits else 0.0
            comps["entity"] = ent
            best = matches[i][0] if matches[i] else None
            comps["similarity_raw"] = best.score if best else 0.0
            comps["similarity"] = self._sim_component(best.score) if best else 0.0
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
            t1 = self.config.concept_scorer_threshold if concept_mode else self.config.scorer_threshold
            scorer_part = float(np.clip((comps["scorer"] - t1) / max(1e-6, 1 - t1), 0.0, 1.0))
            if concept_mode:  # scorer primary; lexical/BERTScore evidence only where the scorer agrees
                concept = concept * comps["scorer"]
                comps["concept"] = concept
            sim_part = 0.0 if concept_mode else comps["similarity"]
            if not concept_mode and 0.0 < ent < 0.5 and names_other_person(text):
                # "What genre does Marisol Garcia write?" reads like a forgotten "Marisol Quintero-Hale"
                # question to an embedding; a full name that shares only a first name with the forgotten
                # one is evidence that the query is about someone else. (Damping every unknown full name
                # also cut TOFU retain FPR to 0.002 but missed name-less positives such as "the writer
                # born in Cape Town, South Africa": places look like names to a regex.)
                damp = self.config.other_name_damping
                sim_part, scorer_part = sim_part * damp, scorer_part * damp
                comps["other_name"] = 1.0
            parts = {"entity": ent, "similarity": sim_part, "scorer": scorer_part, "concept": concept}
            score = 1.0 - float(np.prod([1.0 - v for v in parts.values()]))
            triggered = score > self.config.tau
            fired = [k for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v >= 0.5]
            rid = None
            if hits and ent >= max(parts["similarity"], parts["scorer"], concept):
                rid = hits[0].request_id
                matched.append({"component": "entity", "request_id": rid, "score": round(ent, 4),
                                "tokens_matched": f"{hits[0].matched_tokens}/{hits[0].total_tokens}",
                                "fuzzy": hits[0].fuzzy})
            if best is not None:
                rid = rid or best.sample.request_id
                matched.append({"component": "similarity", "request_id": best.sample.request_id,
                                "sample_id": best.sample.id, "role": best.sample.role,
                                "cosine": round(best.score, 4), "sample_text": best.sample.text})
            out.append(Detection(score, triggered, comps, rid, self._kinds.get(rid or ""), matched, fired))
        return out

    def detect_messages(self, messages: list[dict]) -> Detection:
        """Score the last user turn, the last few user turns joined and, for a long last turn, each of
        its segments (lines / sentences); the highest wins. Segments defeat dilution: a forget question
        wrapped in a role-play preamble or buried in a list of tasks is scored on its own too."""
        users = [m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
        if not users:
            return Detection(0.0, False)
        texts = [users[-1]]
        n = self.config.history_turns
        if len(users) > 1 and n > 1:
            texts.append(" ".join(users[-n:]))
        texts += segments(users[-1])
        dets = self.score_texts(texts)
        return max(dets, key=lambda d: d.score)


_NAME_SPAN = re.compile(r"\b[A-Z][a-z]+(?:[ -](?:[A-Z]\.|[A-Z][a-z][A-Za-z'-]*))+")


def names_other_person(text: str) -> bool:
    """Whether ``text`` holds a capitalised multi-word span such as "Marisol Garcia" (or a place/title).

    Used only when the entity matcher found a forgotten first name but no full name or surname."""
    return bool(_NAME_SPAN.search(text))


_SEGMENT = re.compile(r"(?<=[.?!])\s+|\n+")


def segments(text: str, min_words: int = 4, max_segments: int = 12, long_words: int = 25) -> list[str]:
    """Sentence/line segments of a long message (none for a short one, which is scored whole)."""
    if len(text.split()) <= long_words:
        return []
    parts = [p.strip() for p in _SEGMENT.split(text) if len(p.split()) >= min_words]
    return parts[:max_segments] if len(parts) > 1 else []
