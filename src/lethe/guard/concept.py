"""The trained concept scorer: an encoder fine-tuned end to end as P(in scope | query) for concept kinds.

DRAGON (arXiv 2511.05784, Sec. 3.2) fine-tunes RoBERTa-base on the 300 synthetic hazardous questions
against random benign questions (class-weighted, 5 epochs) and uses its probability as the primary
concept-mode signal. Lethe fine-tunes a sentence encoder (the shipped all-MiniLM-L6-v2 by default;
any sentence-transformers folder of the form Transformer -> Pooling works) with a linear head on its
normalised mean-pooled embedding, trained only on what the requests give plus data Lethe ships:

- positives: the stored rewrites of the live ``harmful`` / ``copyright`` / ``knowledge`` requests
  (expanded questions are stored as rewrites too) and their seeded augmentations
  (:func:`lethe.guard.augment.augment`); the original prompts are never stored, so never used;
- negatives: the detector's benign training queries (the shipped set, a home's ``benign.jsonl``,
  ``add_benign``), 80 % of the shipped near-domain benign set (``resources/near_domain_benign.jsonl``:
  school and university biology, chemistry, medicine, security and programming questions; the other
  20 %, :func:`near_domain_split`, is kept for calibrating tau in domain) and the
  same augmentations and the rule rewriter's frame applied to samples of them, so a typo, a
  lower-cased text, a jailbreak wrapper or "I would like to know ...?" is not what separates the classes.

The model follows the store: when the set of live concept requests or the benign texts change, a
new model is trained on a background thread (seeded, torch limited to ``threads``) while detection
keeps using the previous one (or none: the detector then falls back to its embedding scorer). A
trained model is exported to ONNX and kept under ``<LETHE_CACHE>/concept/<key>/``, where the key is
the SHA-256 of the encoder, the hyper-parameters and every training text, so a second process (or
a restart) with the same store loads it instead of training. Inference runs on onnxruntime with the
model's own ``tokenizer.json`` (no torch), truncated at ``max_length`` tokens.

The detector uses it where concept mode reads the scorer probability (``Detector.concept_scorer``,
set when ``detector.scorer`` is ``concept``); the registered ``concept`` embedding scorer below is a
logistic head on the detector's embeddings, used for privacy requests and until a model is ready.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lethe.guard.concept_train import FORMAT_VERSION, TrainConfig, encoder_folder, train, training_set
from lethe.guard.scorer import SCORERS, LogRegScorer
from lethe.store.base import CONCEPT_KINDS, UnlearnStore

if TYPE_CHECKING:
    from lethe.guard.detector import Detector

log = logging.getLogger(__name__)
__all__ = ["FORMAT_VERSION", "ConceptModel", "ConceptScorer", "TrainConfig", "attach", "cache_key", "encoder_folder",
           "fit_or_load", "near_domain_split", "train", "training_set"]


@SCORERS.register("concept")
class ConceptHeadScorer(LogRegScorer):
    """The embedding-level scorer of ``detector.scorer = concept`` (a logistic head, as ``logreg``);
    choosing it also attaches the fine-tuned text model (:func:`attach`) for concept-mode queries."""


def load_near_domain_benign() -> list[str]:
    """The shipped near-domain benign questions (prompts only)."""
    text = (resources.files("lethe") / "resources" / "near_domain_benign.jsonl").read_text(encoding="utf-8")
    return [json.loads(line)["prompt"] for line in text.splitlines() if line.strip()]


def near_domain_split(holdout: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, hold-out) of the near-domain benign set, deterministic: the scorer trains on the first;
    the second is an in-domain benign set to calibrate tau on (``Guard.calibrate``)."""
    prompts = load_near_domain_benign()
    idx = list(range(len(prompts)))
    random.Random(f"{seed}:near-domain").shuffle(idx)
    cut = int(len(idx) * (1 - holdout))
    return [prompts[i] for i in sorted(idx[:cut])], [prompts[i] for i in sorted(idx[cut:])]


def cache_key(positives: Sequence[str], negatives: Sequence[str], cfg: TrainConfig) -> str:
    """SHA-256 over the encoder's identity, the hyper-parameters and every training text."""
    from lethe.backends.embeddings import _weights_fingerprint

    folder = encoder_folder(cfg.encoder)
    h = hashlib.sha256(f"v{FORMAT_VERSION}|{folder.resolve()}|{_weights_fingerprint(folder)}|".encode())
    h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    for label, texts in ((b"+", positives), (b"-", negatives)):
        for t in texts:
            b = t.encode("utf-8", "surrogatepass")
            h.update(label + len(b).to_bytes(8, "little") + b)
    return h.hexdigest()[:20]


class ConceptModel:
    """An exported classifier run with onnxruntime: ``predict(texts)`` -> probabilities."""

    def __init__(self, folder: Path, max_length: int) -> None:
        import onnxruntime as ort

        from lethe.backends.embeddings import FastTokenizer, embed_threads

        self.folder = folder
        self.tokenizer = FastTokenizer(folder, max_length)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = embed_threads()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(folder / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self._lock = threading.Lock()

    def logits(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = []
        for i in range(0, len(texts), batch_size):
            x = self.tokenizer(list(texts[i:i + batch_size]))
            with self._lock:
                out.append(self.session.run(None, {k: x[k] for k in x if k in self.inputs})[0])
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        return 0.5 * (1.0 + np.tanh(0.5 * self.logits(texts)))  # the logistic function, stable


def concept_cache_dir() -> Path:
    from lethe.config import cache_dir

    return cache_dir() / "concept"


def fit_or_load(positives: Sequence[str], negatives: Sequence[str], cfg: TrainConfig) -> ConceptModel:
    """The model for these texts: loaded from the cache, else trained (and cached)."""
    key = cache_key(positives, negatives, cfg)
    folder = concept_cache_dir() / key
    if not (folder / "model.onnx").exists():
        train(positives, negatives, cfg, folder)
    return ConceptModel(folder, cfg.max_length)


class ConceptScorer:
    """The detector's concept model: follows the store, retrains in the background, never blocks.

    ``predict_texts`` returns None while no model for any concept request exists yet (the detector
    then uses its embedding scorer); otherwise the probabilities of the newest ready model."""

    def __init__(self, store: UnlearnStore, negatives: Any, cfg: TrainConfig | None = None,
                 background: bool = True) -> None:
        self.store = store
        self._negatives = negatives  # callable -> the current benign list (a new list object when it changes)
        self.cfg = cfg or TrainConfig.from_env()
        self.background = background
        self.model: ConceptModel | None = None
        self.key: str | None = None
        self.last_train_s = 0.0
        self.error: str | None = None
        self._state: tuple = ()
        self._pending: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def training_texts(self) -> tuple[list[str], list[str]]:
        """(positives, negatives) of the live concept requests as the store holds them now."""
        live = {r.id for r in self.store.list_requests() if r.kind in CONCEPT_KINDS}
        pos = [s.text for s in self.store.samples(live_only=True)
               if s.request_id in live and s.role == "rewrite" and s.text] if live else []
        negs = list(dict.fromkeys([*self._negatives(), *near_domain_split()[0]]))
        return sorted(dict.fromkeys(pos)), negs

    def sync(self) -> None:
        """Start training (or loading) a model for the store's current concept requests if needed."""
        benign = self._negatives()
        state = (self.store.version(), id(benign), len(benign))
        if state == self._state:
            return
        with self._lock:
            if state == self._state:
                return
            self._state = state
            pos, neg = self.training_texts()
            if not pos:
                self.model, self.key, self._pending = None, None, None
                return
            key = cache_key(pos, neg, self.cfg)
            if key in (self.key, self._pending):
                return
            self._pending = key

        def run() -> None:
            t = time.perf_counter()
            try:
                model = fit_or_load(pos, neg, self.cfg)
            except Exception as exc:  # a failed fit leaves the previous model in place
                self.error = f"{type(exc).__name__}: {exc}"
                log.exception("concept scorer training failed")
                with self._lock:
                    if self._pending == key:
                        self._pending = None
                return
            with self._lock:
                if self._pending == key:  # not superseded by a newer store state
                    self.model, self.key, self._pending, self.error = model, key, None, None
            self.last_train_s = time.perf_counter() - t

        if self.background:
            self._thread = threading.Thread(target=run, name="lethe-concept-train", daemon=True)
            self._thread.start()
        else:
            run()

    def invalidate(self) -> None:
        """Re-read the store and the benign texts at the next ``sync``."""
        self._state = ()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current training (if any) is done; True when a model is ready."""
        self.sync()
        th = self._thread
        if th is not None:
            th.join(timeout)
        return self.model is not None

    @property
    def ready(self) -> bool:
        return self.model is not None

    def predict_texts(self, texts: Sequence[str]) -> np.ndarray | None:
        self.sync()
        model = self.model
        return model.predict(texts) if model is not None else None


def attach(detector: Detector) -> ConceptScorer | None:
    """The concept model for ``detector`` when its scorer is ``concept`` (else None). Negatives are
    the detector's benign training queries, read at each retrain."""
    if detector.config.scorer != "concept":
        return None
    return ConceptScorer(detector.store, lambda: getattr(detector, "_benign_train", []),
                         background=detector.config.background_refit)
