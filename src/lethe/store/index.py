"""In-memory vector index over the live positive samples.

usearch rather than FAISS: it removes vectors by key (a revoke is one call, no
``IndexIDMap`` wrapper, no rebuild), ships as a small self-contained wheel, and offers
exact search for the small stores typical of unlearning (a few thousand vectors) with
HNSW for large ones.
"""

from __future__ import annotations

import threading

import numpy as np

try:  # onnxruntime must be loaded before usearch's extension module: the other order crashes the
    import onnxruntime  # noqa: F401  process when onnxruntime is imported later (usearch 2.26, onnxruntime 1.32)
except ImportError:  # the embedder then runs on torch
    pass
from usearch.index import Index  # noqa: E402


class VectorIndex:
    def __init__(self, dim: int, exact_below: int = 50_000) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self._index = Index(ndim=dim, metric="cos", dtype="f32")
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: list[int], vectors: np.ndarray) -> None:
        if not keys:
            return
        with self._lock:
            self._index.add(np.asarray(keys, dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32))

    def remove(self, keys: list[int]) -> None:
        with self._lock:
            for k in keys:
                if k in self._index:
                    self._index.remove(int(k))

    def clear(self) -> None:
        with self._lock:
            self._index = Index(ndim=self.dim, metric="cos", dtype="f32")

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top-k (key, cosine similarity) per query."""
        with self._lock:
            n = len(self._index)
            if n == 0:
                return [[] for _ in range(len(queries))]
            k = min(k, n)
            res = self._index.search(
                np.ascontiguousarray(queries, dtype=np.float32), k, exact=n < self.exact_below
            )
        keys = np.atleast_2d(res.keys)
        dists = np.atleast_2d(res.distances)
        out = []
        for row_k, row_d in zip(keys, dists, strict=True):
            out.append([(int(a), float(1.0 - b)) for a, b in zip(row_k, row_d, strict=True) if a != 2**64 - 1])
        return out
