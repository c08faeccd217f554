"""Local BERTScore (Zhang et al. 2020, arXiv 1904.09675) on a sentence-transformers encoder.

Greedy cosine matching of contextual token embeddings; F1 of the two directions. The
encoder defaults to the MiniLM shipped offline (last layer, no IDF weighting, no
baseline rescaling); any sentence-transformers model id or folder can be configured.
The reference ``bert-score`` package needs a hub download, so this is the offline form.
"""

from __future__ import annotations

import numpy as np

from lethe.backends.embeddings import Embedder


def bertscore_f1_tokens(cand: np.ndarray, ref: np.ndarray) -> float:
    if cand.size == 0 or ref.size == 0:
        return 0.0
    sim = cand @ ref.T
    p = float(sim.max(axis=1).mean())
    r = float(sim.max(axis=0).mean())
    return 0.0 if p + r <= 0 else 2 * p * r / (p + r)


def bertscore_f1(embedder: Embedder, candidates: list[str], references: list[str]) -> list[float]:
    """Pairwise BERTScore F1 of candidates[i] against references[i]."""
    toks = embedder.token_embeddings(list(candidates) + list(references))
    n = len(candidates)
    return [bertscore_f1_tokens(toks[i], toks[n + i]) for i in range(n)]
