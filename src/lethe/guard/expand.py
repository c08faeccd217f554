"""Scope expansion: the configured chat model writes more in-scope questions for a concept request.

DRAGON (Wang et al., arXiv 2511.05784) builds its concept-mode store from a fixed set of synthetic
questions and names a self-extending unlearn store as future work. A request that covers a field of
knowledge (``harmful``, ``copyright``, ``knowledge``) is given by a short description and a few
examples; ``lethe forget add --describe TEXT --expand N`` (``Guard.forget(describe=, expand=)``,
``POST /admin/forget`` with ``describe`` / ``expand``) asks the chat model of ``guard.yaml``'s
``backend`` section for N more questions in that scope, in calls of ``expand.per_call`` questions,
each call showing a seeded choice of ``expand.examples_per_call`` examples as a numbered list to be
continued (a list continued is copied less than one restarted). A written question is kept
when it is

- a question: one line ending in ``?`` (text after the first ``?`` is dropped), 4 to 60 words;
- new: its cosine to every example and every question kept before it is below ``expand.duplicate``;
- in scope: its cosine to the centroid of the description and examples is at least
  ``expand.scope_floor``, and its mean cosine to its ``expand.neighbours`` nearest examples (and the
  description) exceeds its mean cosine to its nearest benign negatives (the detector's benign training
  queries and the shipped near-domain benign set, :func:`lethe.guard.concept.near_domain_split`) by
  ``expand.drift_margin``.

Kept questions are stored as the request's rewrites (text and embedding, with their augmentations),
never as originals: they are generated, not the operator's prompts. The rewrite copy bound
(:func:`lethe.guard.rewrite.within_bound`) limits how much of its own prompt a rewrite may repeat; a
generated question has no prompt of its own and is not held to it (questions on one topic share
openings such as "What is the mechanism by which"): the duplicate test is what keeps an example
reworded out. The description itself is never stored.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from lethe.backends.base import ChatBackend
from lethe.backends.embeddings import Embedder, cached_encode
from lethe.errors import BackendError, InputError
from lethe.expand_config import ExpandConfig
from lethe.guard.augment import augment
from lethe.store import NegativeSample
from lethe.store.base import CONCEPT_KINDS
from lethe.text import normalize

if TYPE_CHECKING:
    from lethe.guard.guard import Guard

MAX_EXPAND = 5000
SYSTEM = ("You write questions for a dataset that teaches a safety filter what a topic covers. "
          "You write questions only; you never answer them.")
PROMPT = ("Topic: {describe}\n\nQuestions in this topic:\n{examples}\n\nContinue the list with {k} new questions "
          "in this topic, each about a different specific point, none repeating the ones above. Questions only, "
          "no answers.")
_CHOICES = re.compile(r"\s+A[.)]\s")  # where the A-D choices of a multiple-choice prompt begin
_NUMBER = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022]|Q\d*[.:])\s*")


def check_request(kind: str, describe: str | None, expand: int) -> None:
    """One-line errors for an expansion the request cannot have (before any model loads)."""
    if expand < 0 or expand > MAX_EXPAND:
        raise InputError(f"--expand takes 0 to {MAX_EXPAND} questions (got {expand})")
    if expand and kind not in CONCEPT_KINDS:
        raise InputError(f"--expand is for concept requests ({', '.join(sorted(CONCEPT_KINDS))}), not '{kind}'")
    if expand and not (describe or "").strip():
        raise InputError("--expand needs --describe TEXT: what the request covers, in a sentence or two")
    if (describe or "").strip() and not expand:
        raise InputError("--describe is used only with --expand N (the number of questions to write)")


def parse_questions(text: str) -> list[str]:
    """The questions of a numbered list: numbering and quotes stripped, cut after the first '?'."""
    out = []
    for line in text.splitlines():
        q = normalize(_NUMBER.sub("", line)).strip().strip('"\'*').strip()
        if "?" not in q:
            continue
        q = q[:q.index("?") + 1].strip().lstrip('"\'')
        if 4 <= len(q.split()) <= 60 and not q.lower().startswith(("answer", "example", "topic")):
            out.append(q)
    return list(dict.fromkeys(out))


def example_lines(prompts: list[str]) -> list[str]:
    """The examples shown to the writer: each prompt's question (up to its first '?'; a multiple-choice
    prompt without its choices, whose lines ``normalize`` has joined)."""
    out = []
    for p in prompts:
        q = normalize(p)
        q = q[:q.index("?") + 1] if "?" in q else _CHOICES.split(q)[0]
        if q.strip():
            out.append(q.strip())
    return list(dict.fromkeys(out))


@dataclass
class Expansion:
    """What one expansion wrote and kept: ``questions`` (kept, in order), their ``samples`` for the
    store, and counts (``calls``, ``written``, ``duplicate``, ``out_of_scope``, ``surplus`` (kept by the
    filters beyond N), ``kept``, ``seconds``)."""

    questions: list[str] = field(default_factory=list)
    samples: list[NegativeSample] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)


class ScopeFilter:
    """The duplicate and drift tests of the module docstring, on normalised embeddings."""

    def __init__(self, embedder: Embedder, describe: str, examples: list[str], benign: np.ndarray,
                 cfg: ExpandConfig) -> None:
        self.embedder, self.cfg, self.examples = embedder, cfg, examples
        self.ex = np.asarray(embedder.encode(examples), np.float32)
        d = np.asarray(embedder.encode([describe]), np.float32) if describe.strip() else np.zeros((0, self.ex.shape[1]))
        self.scope = np.vstack([self.ex, d]).astype(np.float32)
        c = self.scope.mean(0)
        self.centroid = c / max(1e-9, float(np.linalg.norm(c)))
        self.benign = np.asarray(benign, np.float32)
        self.kept: list[np.ndarray] = []

    @staticmethod
    def _topk_mean(sims: np.ndarray, k: int) -> np.ndarray:
        k = max(1, min(k, sims.shape[1]))
        return np.sort(sims, axis=1)[:, -k:].mean(1) if sims.shape[1] else np.full(len(sims), -1.0)

    def verdicts(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """Per text 'keep', 'duplicate' or 'out_of_scope' (kept ones are remembered), and the vectors."""
        if not texts:
            return [], np.zeros((0, self.ex.shape[1]), np.float32)
        v = np.asarray(self.embedder.encode(texts), np.float32)
        to_ex = v @ self.ex.T
        k = self.cfg.neighbours
        in_scope = ((v @ self.centroid >= self.cfg.scope_floor)
                    & (self._topk_mean(v @ self.scope.T, k) - self._topk_mean(v @ self.benign.T, k)
                       >= self.cfg.drift_margin))
        out = []
        for i in range(len(texts)):
            prev = max((float(v[i] @ u) for u in self.kept), default=-1.0)
            if max(float(to_ex[i].max()), prev) >= self.cfg.duplicate:
                out.append("duplicate")
            elif not in_scope[i]:
                out.append("out_of_scope")
            else:
                out.append("keep")
                self.kept.append(v[i])
        return out, v


def _backend(guard: Guard) -> ChatBackend:
    try:
        return guard.backend
    except Exception as exc:  # any failure to load the writer is the operator's configuration
        b = guard.config.backend
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BackendError(f"--expand needs the chat model of guard.yaml's backend section "
                           f"({b.kind}: {b.model}), which could not load: {reason}") from exc


def benign_vectors(guard: Guard) -> np.ndarray:
    """The drift test's benign side: the detector's benign training queries and the near-domain set."""
    from lethe.guard.concept import near_domain_split

    near = cached_encode(guard.embedder, near_domain_split()[0])
    return np.vstack([guard.detector.benign_embeddings(), near]).astype(np.float32)


def expand_scope(guard: Guard, prompts: list[str], describe: str, n: int, *, progress: bool = True,
                 seed: int = 0) -> Expansion:
    """Write up to ``n`` new in-scope questions for a concept request (module docstring); a stop after
    ``expand.max_calls_factor * n / per_call`` calls may keep fewer."""
    cfg = guard.config.expand
    backend = _backend(guard)
    t0 = time.perf_counter()
    describe = normalize(describe)
    examples = example_lines(prompts)
    filt = ScopeFilter(guard.embedder, describe, examples, benign_vectors(guard), cfg)
    rng = random.Random(f"{cfg.seed}:{seed}:expand")
    res = Expansion(stats={"calls": 0, "written": 0, "duplicate": 0, "out_of_scope": 0, "surplus": 0, "kept": 0})
    vecs: list[np.ndarray] = []
    max_calls = math.ceil(cfg.max_calls_factor * n / cfg.per_call)
    with tqdm(total=n, desc="expanding the scope", unit="question", disable=not progress) as bar:
        while res.stats["calls"] < max_calls and len(res.questions) < n:
            k = min(cfg.per_call, n - len(res.questions) + 2)  # a few spare for the filters
            shown = rng.sample(examples, min(cfg.examples_per_call, len(examples)))
            listed = "\n".join(f"{i}. {e}" for i, e in enumerate(shown, 1))
            messages = [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": PROMPT.format(describe=describe, k=k, examples=listed)}]
            head = f"{len(shown) + 1}."
            kw = {"prefill": head} if backend.supports_prefill else {}
            text = backend.chat(messages, max_tokens=48 * k, temperature=cfg.temperature, **kw).text
            cands = parse_questions((head if kw else "") + text)
            res.stats["calls"] += 1
            res.stats["written"] += len(cands)
            verdicts, v = filt.verdicts(cands)
            for q, verdict, vec in zip(cands, verdicts, v, strict=True):
                if verdict != "keep":
                    res.stats[verdict] += 1
                elif len(res.questions) < n:
                    res.questions.append(q)
                    vecs.append(vec)
                    bar.update(1)
                else:
                    res.stats["surplus"] += 1
            bar.set_postfix(written=res.stats["written"], dup=res.stats["duplicate"],
                            drift=res.stats["out_of_scope"])
    res.stats["kept"] = len(res.questions)
    keep_text = not guard.config.embedding_only
    res.samples = [NegativeSample("", vec, "rewrite", q if keep_text else None)
                   for q, vec in zip(res.questions, vecs, strict=True)]
    aug = [a for q in res.questions for a in augment(q, seed=seed)]
    if aug:
        res.samples += [NegativeSample("", vec, "augment") for vec in guard.embedder.encode(aug)]
    res.stats["seconds"] = round(time.perf_counter() - t0, 1)
    return res
