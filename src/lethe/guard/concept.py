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
import os
import random
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lethe.guard.augment import augment
from lethe.guard.scorer import SCORERS, LogRegScorer
from lethe.store.base import CONCEPT_KINDS, UnlearnStore

if TYPE_CHECKING:
    from lethe.guard.detector import Detector

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


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


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tune (all of them enter the cache key)."""

    encoder: str = "all-MiniLM-L6-v2"
    max_length: int = 64
    epochs: int = 1
    batch_size: int = 32
    lr: float = 4e-5
    head_lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: float = 0.1
    seed: int = 0
    threads: int = 1  # torch threads of the fine-tune (it runs beside serving: one core by default)
    augment_per_text: int = 1  # augmentations kept per text (a seeded choice among augment()'s)
    negative_augment: int = 200  # negatives that also get augmented (label-invariant augmentations)
    negative_rewrite: int = 800  # negatives also passed through the rule rewriter (its template is no class signal)
    frozen_layers: int = 3  # bottom encoder layers (and the embeddings, when > 0) kept frozen
    max_steps: int | None = None  # cap on optimiser steps (tests)

    @classmethod
    def from_env(cls, **overrides: Any) -> TrainConfig:
        """Defaults, overridden by ``LETHE_CONCEPT_ENCODER`` / ``_EPOCHS`` / ``_THREADS`` / ``_MAX_LENGTH`` /
        ``_FROZEN_LAYERS`` / ``_MAX_STEPS`` and then by ``overrides``."""
        env: dict[str, Any] = {}
        for key, cast in (("encoder", str), ("epochs", int), ("threads", int), ("max_length", int),
                          ("frozen_layers", int), ("max_steps", int)):
            raw = os.environ.get(f"LETHE_CONCEPT_{key.upper()}", "").strip()
            if raw:
                env[key] = cast(raw)
        return cls(**{**env, **overrides})


def encoder_folder(spec: str) -> Path:
    """A local sentence-transformers folder for ``spec`` (the shipped MiniLM or a path)."""
    from lethe.backends.embeddings import resolve_embedder
    from lethe.errors import BackendError

    folder = Path(resolve_embedder(spec))
    if not (folder / "config.json").exists():
        raise BackendError(f"concept encoder '{spec}' is not a local model folder ({folder})")
    return folder


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


def training_set(positives: Sequence[str], negatives: Sequence[str], seed: int = 0,
                 negative_augment: int = 300, per_text: int = 3,
                 negative_rewrite: int = 0) -> tuple[list[str], list[int]]:
    """(texts, labels): positives with ``per_text`` of their augmentations each, negatives, ``per_text``
    augmentations of each of a seeded sample of ``negative_augment`` negatives, and a seeded sample of
    ``negative_rewrite`` negatives passed through the rule rewriter; duplicates dropped (a text that is
    both keeps label 0).

    Stored positives are rewrites (the original prompts are never kept), and the rule rewriter writes
    every one in the same frame ("I would like to know ...?"); a fine-tuned encoder learns that frame
    as the class unless negatives carry it too."""
    from lethe.guard.rewrite import RuleRewriter

    rng = random.Random(seed)

    def aug(t: str) -> list[str]:
        a = augment(t, seed=seed)
        return rng.sample(a, min(per_text, len(a)))

    pos = list(dict.fromkeys(p for t in positives for p in [t, *aug(t)]))
    negs = list(dict.fromkeys(negatives))
    sample = rng.sample(negs, min(negative_augment, len(negs)))
    rule = RuleRewriter()
    rewritten = [rule.rewrite(t) for t in rng.sample(negs, min(negative_rewrite, len(negs)))]
    neg = list(dict.fromkeys(negs + [a for t in sample for a in aug(t)] + rewritten))
    neg_set = set(neg)
    texts = [t for t in pos if t not in neg_set] + neg
    labels = [1] * (len(texts) - len(neg)) + [0] * len(neg)
    return texts, labels


def _batches(order: list[int], lengths: list[int], size: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches: shuffled, then sorted by length within windows of 50 batches so a
    batch pads little, and the batches shuffled again."""
    rng.shuffle(order)
    window = size * 50
    out: list[list[int]] = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w:w + window], key=lambda j: lengths[j])
        out += [chunk[i:i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def _layers(encoder: Any) -> list[Any]:
    """The transformer blocks of a BERT/MPNet/RoBERTa-style encoder, bottom first."""
    return list(encoder.encoder.layer)


def _mean_pool(hidden: Any, mask: Any) -> Any:
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    v = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(v, dim=-1)


def _classifier(folder: Path) -> Any:
    """encoder -> mean pooling -> L2 norm -> linear: a torch module returning one logit per text."""
    import inspect

    import torch
    from transformers import AutoModel

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(str(folder))
            self.uses_types = "token_type_ids" in inspect.signature(self.encoder.forward).parameters
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)
            self.scale = 20.0  # unit vectors -> logits of a useful range from the start

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any | None = None) -> Any:
            kw = {"token_type_ids": token_type_ids} if self.uses_types and token_type_ids is not None else {}
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            return self.head(_mean_pool(hidden, attention_mask) * self.scale).squeeze(-1)

    return Classifier()


def train(positives: Sequence[str], negatives: Sequence[str], cfg: TrainConfig, out: Path) -> dict:
    """Fine-tune the encoder as a binary classifier and export it to ``out`` (``model.onnx`` + the
    tokenizer files + ``meta.json``). Returns the metadata (sizes, loss, seconds)."""
    import torch
    from transformers import AutoTokenizer

    from lethe.backends.embeddings import quiet_third_party

    t0 = time.perf_counter()
    folder = encoder_folder(cfg.encoder)
    texts, labels = training_set(positives, negatives, cfg.seed, cfg.negative_augment, cfg.augment_per_text,
                                 cfg.negative_rewrite)
    n_pos = sum(labels)
    if n_pos == 0 or n_pos == len(labels):
        raise ValueError("the concept scorer needs both positives and negatives")
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads))
    try:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        with quiet_third_party():
            tok = AutoTokenizer.from_pretrained(str(folder))
            model = _classifier(folder)
        model.train()
        if cfg.frozen_layers > 0:
            frozen = [model.encoder.embeddings, *_layers(model.encoder)[:cfg.frozen_layers]]
            for module in frozen:
                for p in module.parameters():
                    p.requires_grad_(False)
        params = [{"params": [p for p in model.encoder.parameters() if p.requires_grad], "lr": cfg.lr},
                  {"params": model.head.parameters(), "lr": cfg.head_lr}]
        opt = torch.optim.AdamW(params, weight_decay=cfg.weight_decay)
        order = list(range(len(texts)))
        steps_per_epoch = -(-len(texts) // cfg.batch_size)
        total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps,
                                                                               steps_per_epoch * cfg.epochs)
        warm = max(1, int(cfg.warmup * total))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm))))
        pos_weight = torch.tensor((len(labels) - n_pos) / n_pos)
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
        rng = random.Random(cfg.seed)
        lengths = [len(t) for t in texts]
        step, losses = 0, []
        while step < total:
            for idx in _batches(order, lengths, cfg.batch_size, rng):
                if step >= total:
                    break
                enc = tok([texts[j] for j in idx], padding=True, truncation=True, max_length=cfg.max_length,
                          return_tensors="pt")
                y = torch.tensor([float(labels[j]) for j in idx])
                logits = model(enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids"))
                loss = loss_fn(logits, y)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                step += 1
                if step % 25 == 0:
                    log.info("concept scorer: step %d/%d, loss %.4f, %.0f s", step, total,
                             float(np.mean(losses[-25:])), time.perf_counter() - t0)
        train_s = time.perf_counter() - t0
        model.eval()
        meta = {"format": FORMAT_VERSION, "config": asdict(cfg), "encoder_folder": str(folder),
                "n_texts": len(texts), "n_positive": n_pos, "steps": step,
                "final_loss": float(np.mean(losses[-20:])) if losses else None, "train_s": round(train_s, 1)}
        export(model, tok, out, meta)
        meta["total_s"] = round(time.perf_counter() - t0, 1)
        (out / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return meta
    finally:
        torch.set_num_threads(prev_threads)


def export(model: Any, tokenizer: Any, out: Path, meta: dict) -> None:
    """Write the classifier as ONNX (inputs as the embedder's export; output ``logit``) with its
    tokenizer files into ``out``, atomically (a temporary folder renamed into place)."""
    import torch

    from lethe.backends.embeddings import quiet_third_party

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}.{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer.save_pretrained(str(tmp))
    enc = tokenizer(["an example sentence"], return_tensors="pt", return_token_type_ids=True)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {k: {0: "batch", 1: "seq"} for k in names} | {"logit": {0: "batch"}}
    with torch.no_grad(), quiet_third_party():
        torch.onnx.export(model, tuple(enc[k] for k in names), str(tmp / "model.onnx"), input_names=names,
                          output_names=["logit"], dynamic_axes=axes, opset_version=17, dynamo=False)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if out.exists():  # another process finished the same model first
        shutil.rmtree(tmp, ignore_errors=True)
        return
    os.replace(tmp, out)


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
