"""The trained layer of the detector: P(forget-related | query), trained without retain data.

DRAGON fine-tunes RoBERTa on forget-side positives versus benign questions. Lethe's
default is a light head on sentence embeddings: positives are the store's rewrites and
their augmentations, negatives are the shipped benign query set plus name-swapped hard
negatives generated from the rewrites. It retrains in well under a second, so every
add or revoke refits it. Other scorers register in ``SCORERS``.

A logistic-regression fit is kept on disk (``<cache>/scorers/``, keyed by the SHA-256 of the
training matrix, labels, hyper-parameters and scikit-learn's version): a process that opens an
unchanged store reuses it and never imports scikit-learn, whose import costs more CPU than the
rest of a ``lethe check``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from abc import ABC, abstractmethod

import numpy as np

from lethe.registry import Registry

log = logging.getLogger(__name__)

SCORERS: Registry[Scorer] = Registry("scorer")


class Scorer(ABC):
    fitted: bool = False

    @abstractmethod
    def fit(self, positives: np.ndarray, negatives: np.ndarray) -> None: ...

    @abstractmethod
    def predict(self, embeddings: np.ndarray) -> np.ndarray: ...


def _stack(scorer: LogRegScorer, positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Training matrix and labels; resets the scorer and returns None when there are no positives."""
    if len(positives) == 0:
        scorer.model, scorer.fitted = None, False
        return None
    return np.vstack([positives, negatives]), np.r_[np.ones(len(positives)), np.zeros(len(negatives))]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function (``scipy.special.expit``) in numpy, stable for large |z|."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


class LinearFit:
    """A fitted binary logistic regression read back from the fit cache: ``coef_``,
    ``intercept_`` and ``predict_proba`` as scikit-learn's, in numpy."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray) -> None:
        self.coef_, self.intercept_ = coef, intercept
        self.classes_ = np.array([0.0, 1.0])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = _sigmoid(np.asarray(x, dtype=np.float64) @ self.coef_[0] + self.intercept_[0])
        return np.stack([1.0 - p, p], axis=1)


def _fit_key(X: np.ndarray, y: np.ndarray, params: str) -> str:
    try:
        sk = importlib.metadata.version("scikit-learn")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        sk = "none"
    h = hashlib.sha256(f"{params}|{sk}|{X.dtype}|{X.shape}".encode())
    h.update(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


@SCORERS.register("logreg")
class LogRegScorer(Scorer):
    def __init__(self, C: float = 4.0, **_: object) -> None:
        self.C = C
        self.model = None  # sklearn's LogisticRegression, or a LinearFit from the cache

    def fit(self, positives: np.ndarray, negatives: np.ndarray) -> None:
        data = _stack(self, positives, negatives)
        if data is None:
            return
        X, y = data
        from lethe.config import cache_dir

        params = f"logreg|C={self.C}|balanced|max_iter=2000"
        try:
            path = cache_dir() / "scorers" / f"{_fit_key(X, y, params)}.npz"
        except OSError:
            path = None
        if path is not None and path.exists():
            try:
                with np.load(path, allow_pickle=False) as z:
                    self.model = LinearFit(z["coef"], z["intercept"])
                self.fitted = True
                return
            except (OSError, ValueError, KeyError):
                pass
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000)
        self.model.fit(X, y)
        self.fitted = True
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
                np.savez(tmp, coef=self.model.coef_, intercept=self.model.intercept_)
                os.replace(tmp, path)
            except OSError as exc:
                log.info("scorer fit cache %s not written (%s)", path, exc)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        if self.model is None or len(embeddings) == 0:
            return np.zeros(len(embeddings))
        if hasattr(self.model, "coef_") and not isinstance(self, MLPScorer):
            # the fitted model's own decision function without sklearn's per-call input validation
            # (a sizeable part of a detection on the serving hot path); same numbers as predict_proba
            z = np.asarray(embeddings, dtype=np.float64) @ self.model.coef_[0] + self.model.intercept_[0]
            return _sigmoid(z)
        return self.model.predict_proba(embeddings)[:, 1]


@SCORERS.register("mlp")
class MLPScorer(LogRegScorer):
    def fit(self, positives: np.ndarray, negatives: np.ndarray) -> None:
        data = _stack(self, positives, negatives)
        if data is None:
            return
        X, y = data
        # balance classes by oversampling positives (MLPClassifier has no class_weight)
        reps = max(1, int(len(negatives) / max(1, len(positives))))
        X = np.vstack([X] + [positives] * (reps - 1))
        y = np.r_[y, np.ones(len(positives) * (reps - 1))]
        from sklearn.neural_network import MLPClassifier

        self.model = MLPClassifier(hidden_layer_sizes=(128,), max_iter=300, random_state=0)
        self.model.fit(X, y)
        self.fitted = True


from lethe.guard import concept as _concept  # noqa: E402,F401  - registers the "concept" scorer
