"""ROUGE-L with the ``rouge-score`` package (stemming on), as TOFU and DRAGON compute it."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(reference: str, generation: str) -> dict[str, float]:
    """``{"recall", "precision", "f1"}`` of ROUGE-L between a reference and a generation."""
    s = _scorer().score(reference, generation)["rougeL"]
    return {"recall": float(s.recall), "precision": float(s.precision), "f1": float(s.fmeasure)}


def rouge_l_recall(reference: str, generation: str) -> float:
    """ROUGE-L recall of ``generation`` against ``reference`` (TOFU's ``rougeL_recall``)."""
    return rouge_l(reference, generation)["recall"]
