"""Fine-tuning the concept scorer: the training set, the encoder-plus-head classifier, its training
loop and its ONNX export (:mod:`lethe.guard.concept` runs the exported model and keeps it in step
with the store).

DRAGON (arXiv 2511.05784, Sec. 3.2) fine-tunes RoBERTa-base as P(in scope | query) on the synthetic
hazardous questions against benign ones (class-weighted); Lethe fine-tunes a sentence encoder with a
linear head on its normalised mean-pooled embedding, the bottom layers frozen, on what the requests
give (stored rewrites and their augmentations) against benign and near-domain benign questions.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lethe.guard.augment import augment

log = logging.getLogger("lethe.guard.concept")
FORMAT_VERSION = 1

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
