"""Natural-language inference for KFR / KRR: does a generation contradict or entail the reference?

Upstream uses ``sileod/deberta-v3-base-tasksource-nli`` (:class:`HubNLI`, online); the offline
default :class:`HeuristicNLI` compares the numbers, names and negation of on-topic pairs.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod

from lethe.evaluation.metrics.entities import _CAP_STOP, _CAPS, _NUM

NLI_LABELS = ("entailment", "neutral", "contradiction")
_NEG = re.compile(r"\b(not|no|never|none|neither|nor|cannot|can't|isn't|wasn't|doesn't|didn't|won't|don't|without)\b", re.I)


class NLIJudge(ABC):
    name = "base"

    @abstractmethod
    def predict(self, premise: str, hypothesis: str) -> str: ...


class HeuristicNLI(NLIJudge):
    """Offline substitute for ``deberta-v3-base-tasksource-nli``: on-topic pairs (MiniLM cosine
    >= ``topic``) are a contradiction when the hypothesis' numbers or capitalised names are
    replaced by different ones in the premise, or the negation polarity differs; entailment when
    very similar without conflict; otherwise neutral. A refusal is neutral, never a contradiction."""

    name = "heuristic"

    def __init__(self, embedder, topic: float = 0.45, entail: float = 0.85) -> None:
        self.embedder, self.topic, self.entail = embedder, topic, entail

    @staticmethod
    def _slots(text: str) -> tuple[set[str], set[str]]:
        nums = set(_NUM.findall(text))
        names = {w for m in _CAPS.findall(text) for w in m.split() if w not in _CAP_STOP and len(w) > 2}
        return nums, names

    def predict(self, premise: str, hypothesis: str) -> str:
        if not premise.strip() or not hypothesis.strip():
            return "neutral"
        e = self.embedder.encode([premise, hypothesis])
        cos = float(e[0] @ e[1])
        if cos < self.topic:
            return "neutral"
        pn, pc = self._slots(premise)
        hn, hc = self._slots(hypothesis)
        conflict = bool(hn and pn and not (hn & pn)) or bool(hc and pc and not (hc & pc) and len(pc - hc) > 0)
        polarity = bool(_NEG.search(premise)) != bool(_NEG.search(hypothesis))
        if conflict or (polarity and cos >= 0.6):
            return "contradiction"
        return "entailment" if cos >= self.entail else "neutral"


class HubNLI(NLIJudge):
    """The upstream NLI cross-encoder by hub id (online), e.g. ``sileod/deberta-v3-base-tasksource-nli``."""

    name = "hub"

    def __init__(self, model_id: str = "sileod/deberta-v3-base-tasksource-nli") -> None:
        from transformers import pipeline

        self.name = f"hub:{model_id}"
        self.pipe = pipeline("text-classification", model=model_id)

    def predict(self, premise: str, hypothesis: str) -> str:
        out = self.pipe({"text": premise, "text_pair": hypothesis})
        label = (out[0] if isinstance(out, list) else out)["label"].lower()
        return next((lab for lab in NLI_LABELS if lab in label), "neutral")

