"""What the detector returns (``Detection``: score, verdict, components, matched request, source)
and the name-evidence helpers its scoring shares."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lethe.guard.entities import EntityHit


@dataclass
class Detection:
    score: float
    triggered: bool
    components: dict[str, float] = field(default_factory=dict)
    request_id: str | None = None
    kind: str | None = None
    matched: list[dict] = field(default_factory=list)
    fired: list[str] = field(default_factory=list)
    # where the deciding text came from: role, message index, field, view (``detect_messages``)
    source: dict = field(default_factory=dict)

    def explain(self) -> str:
        """One line: the verdict, the score and its components and, for an in-scope query (or any
        that has a part at or above 0.5), what fired and which request it matched.

        When no single part reached 0.5 (the fused score passed tau on several weaker ones), the
        strongest component is named instead, so an in-scope line always says what and which."""
        parts = ", ".join(f"{k}={v:.3f}" for k, v in self.components.items())
        verdict = "IN SCOPE" if self.triggered else "out of scope"
        line = f"{verdict}: score {self.score:.3f} [{parts}]"
        if not (self.triggered or self.fired):
            return line
        if self.fired:
            what = f"fired: {', '.join(self.fired)}"
        else:
            evidence = {k: v for k, v in self.components.items() if not k.endswith("_raw") and 0.0 < v <= 1.0}
            top = max(evidence, key=lambda k: evidence[k]) if evidence else None
            what = (f"fired: no part alone >= 0.5; strongest {top}={evidence[top]:.3f}" if top else
                    "fired: no part alone >= 0.5")
        rid = self.request_id or next((m.get("request_id") for m in self.matched if m.get("request_id")), None)
        which = f"request {rid}" + (f" ({self.kind})" if self.kind else "") if rid else "request: none matched"
        return f"{line} ({what}; {which})"

    def to_dict(self) -> dict:
        return {
            "in_scope": self.triggered, "score": round(self.score, 6),
            "components": {k: round(v, 6) for k, v in self.components.items()},
            "request_id": self.request_id, "kind": self.kind, "fired": self.fired, "matched": self.matched,
            "source": {k: v for k, v in self.source.items() if k != "text"},
        }



def merge_hits(hits: list[EntityHit], more: list[EntityHit]) -> list[EntityHit]:
    """Name hits of two matchers, the better one per request, best first."""
    if not more:
        return hits
    best = {h.request_id: h for h in hits}
    for h in more:
        if h.request_id not in best or h.score > best[h.request_id].score:
            best[h.request_id] = h
    return sorted(best.values(), key=lambda h: -h.score)


_NAME_SPAN = re.compile(r"\b[A-Z][a-z]+(?:[ -](?:[A-Z]\.|[A-Z][a-z][A-Za-z'-]*))+")


def names_other_person(text: str) -> bool:
    """Whether ``text`` holds a capitalised multi-word span such as "Marisol Garcia" (or a place/title).

    Used only when the entity matcher found a forgotten first name but no full name or surname."""
    return bool(_NAME_SPAN.search(text))
