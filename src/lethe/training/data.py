"""Forget/retain data: JSONL with ``prompt`` and ``answer``, chat-template tokenisation.

Each pair is rendered with the tokenizer's chat template (user turn = prompt, assistant
turn = answer); labels are ``-100`` on every prompt token so losses see answer tokens only.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lethe.backends.chat_format import render, user_turn
from lethe.errors import ConfigError, InputError, LetheError
from lethe.evaluation.metrics.refusal import REFUSALS
from lethe.jsonl import read_jsonl
from lethe.text import FUNCTION_WORDS, words

IGNORE = -100


@dataclass
class Pair:
    prompt: str
    answer: str
    meta: dict | None = None


def read_pairs(path: str | Path, *, what: str = "data") -> list[Pair]:
    """Read a JSONL file of ``{"prompt", "answer"}`` objects (``question`` accepted for ``prompt``)."""
    p = Path(path).expanduser()
    pairs = []
    for n, obj in read_jsonl(p, what, ("prompt", "question")):
        prompt = obj.get("prompt", obj.get("question"))
        answer = obj.get("answer")
        if not isinstance(prompt, str) or not isinstance(answer, str):
            raise InputError(f"{p}:{n}: each line needs string fields 'prompt' and 'answer'")
        pairs.append(Pair(prompt, answer, {k: v for k, v in obj.items() if k not in ("prompt", "answer")}))
    return pairs


def write_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _chat_prefix(tok, prompt: str, system: str | None) -> str:
    """The prompt half of a training example, formatted as inference formats it (backends.chat_format)."""
    return render(tok, user_turn(prompt, system))


def novel_token_mask(tok, prompt: str, answer: str) -> list[bool] | None:
    """Per token of ``answer + eos``: does it lie in a word the prompt does not already contain
    (function words and punctuation excluded)? ``None`` without a fast tokenizer (no offsets).

    Such words are the knowledge an answer adds ("Leo Tolstoy" in "The novel 'War and Peace' was
    written by Leo Tolstoy."); the words echoing the question name the topic, and pushing them
    down by gradient ascent damages what the model knows about the topic itself.
    """
    if not getattr(tok, "is_fast", False):
        return None
    known = set(words(prompt)) | FUNCTION_WORDS
    novel = [m.span() for m in re.finditer(r"\w+", answer) if any(w not in known for w in words(m.group()))]
    offsets = tok(answer + (tok.eos_token or ""), add_special_tokens=False,
                  return_offsets_mapping=True)["offset_mapping"]
    return [any(a < e and s < b for s, e in novel) for a, b in offsets]


def encode_pair(tok, prompt: str, answer: str, *, max_length: int = 256, system: str | None = None,
                novel_only: bool = False) -> dict:
    """Token ids and labels for one (prompt, answer); labels only on answer (+ end-of-turn) tokens,
    and with ``novel_only`` only on the tokens :func:`novel_token_mask` marks (all if it marks none)."""
    prefix = _chat_prefix(tok, prompt, system)
    p_ids = tok(prefix, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token or ""
    a_ids = tok(answer + eos, add_special_tokens=False)["input_ids"]
    if not a_ids:
        a_ids = [tok.eos_token_id]
    keep = novel_token_mask(tok, prompt, answer) if novel_only else None
    if keep is None or len(keep) != len(a_ids) or not any(keep):
        keep = [True] * len(a_ids)
    # keep the whole answer if possible; trim the prompt from the left when too long
    budget = max(max_length - len(a_ids), 8)
    if len(p_ids) > budget:
        p_ids = p_ids[-budget:]
    a_ids = a_ids[: max(max_length - len(p_ids), 1)]
    labels = [t if k else IGNORE for t, k in zip(a_ids, keep, strict=False)]
    return {"input_ids": p_ids + a_ids, "labels": [IGNORE] * len(p_ids) + labels}


def collate(encs: Sequence[dict], pad_id: int) -> dict:
    """Right-pad a list of encodings into ``input_ids``, ``attention_mask`` and ``labels`` tensors."""
    import torch

    n = max(len(e["input_ids"]) for e in encs)
    ids = torch.full((len(encs), n), pad_id, dtype=torch.long)
    labels = torch.full((len(encs), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encs), n), dtype=torch.long)
    for i, e in enumerate(encs):
        k = len(e["input_ids"])
        ids[i, :k] = torch.tensor(e["input_ids"])
        labels[i, :k] = torch.tensor(e["labels"])
        mask[i, :k] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def length_groups(lengths: Sequence[int], max_groups: int = 4) -> list[list[int]]:
    """Split rows into at most ``max_groups`` groups of similar length, fewest padded tokens first.

    A retain batch mixes one-line facts (~30 tokens) with long chat answers (~190): padded to
    the longest row, more than half of the tokens a step computes can be padding. Rows are sorted
    by length and cut where the total ``rows x longest row`` summed over groups is smallest
    (exact dynamic programme; a batch is a few dozen rows). Returns the row indices of each group.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    srt = [lengths[i] for i in order]
    n, g_max = len(srt), max(1, min(max_groups, len(srt)))
    inf = float("inf")
    # cost[g][j]: fewest tokens for the first j sorted rows in g groups; cut[g][j]: where the last group starts
    cost = [[0.0] + [inf] * n] + [[inf] * (n + 1) for _ in range(g_max)]
    cut = [[0] * (n + 1) for _ in range(g_max + 1)]
    for g in range(1, g_max + 1):
        for j in range(1, n + 1):
            for i in range(j):
                c = cost[g - 1][i] + (j - i) * srt[j - 1]
                if c < cost[g][j]:
                    cost[g][j], cut[g][j] = c, i
    best = min(range(1, g_max + 1), key=lambda g: (cost[g][n], g))  # ties: fewer groups
    groups, j = [], n
    for g in range(best, 0, -1):
        i = cut[g][j]
        if j > i:
            groups.append(order[i:j])
        j = i
    return groups[::-1]


class UnlearnBatches:
    """Yields dict batches ``{"forget", "target"?, "retain"?}`` of collated tensors.

    ``forget`` holds the original answers, ``target`` the answers to learn instead
    (reasoning targets for TRU, refusals for IDK/DPO), aligned row by row with
    ``forget``; ``retain`` holds ``retain_batch_size`` rows (default: ``batch_size``) drawn by a
    cursor that walks the whole retain set cyclically across batches and epochs, in an order
    reshuffled on each pass, so a retain set larger than one epoch's draws is still covered.
    ``groups`` (optional) lists, per forget item, the rows that are its phrasings: an epoch has
    one row per item, item ``i`` taking phrasing ``(i + epoch) mod len(groups[i])``.
    ``forget_tokens="novel"`` puts the forget labels on the answer's new words only
    (:func:`novel_token_mask`), so unlearning terms leave the words echoing the question alone.
    ``retain_weights`` (optional, one per retain row) replaces the cursor by weighted draws without
    replacement, seeded per batch (see :func:`boundary_weights`).
    """

    def __init__(
        self,
        tok,
        forget: Sequence[Pair],
        *,
        targets: Sequence[str] | None = None,
        retain: Sequence[Pair] | None = None,
        batch_size: int = 4,
        max_length: int = 256,
        seed: int = 0,
        system: str | None = None,
        retain_batch_size: int | None = None,
        groups: Sequence[Sequence[int]] | None = None,
        forget_tokens: str = "all",
        retain_weights: Sequence[float] | None = None,
    ) -> None:
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.batch_size = batch_size
        self.retain_batch_size = retain_batch_size or batch_size
        self.seed = seed
        self.groups = [list(g) for g in groups] if groups is not None else [[i] for i in range(len(forget))]
        if not self.groups or any(not g for g in self.groups):
            raise LetheError("every forget item needs at least one phrasing")
        if forget_tokens not in ("all", "novel"):
            raise ConfigError(f"unknown forget tokens {forget_tokens!r}: use all or novel")
        self.forget = [encode_pair(tok, p.prompt, p.answer, max_length=max_length, system=system,
                                   novel_only=forget_tokens == "novel") for p in forget]
        self.targets = (
            [encode_pair(tok, p.prompt, t, max_length=max_length, system=system) for p, t in zip(forget, targets, strict=True)]
            if targets is not None
            else None
        )
        self.retain = (
            [encode_pair(tok, p.prompt, p.answer, max_length=max_length, system=system) for p in retain]
            if retain
            else None
        )
        if retain_weights is not None and (len(retain_weights) != len(self.retain or ())
                                           or min(retain_weights) <= 0):
            raise LetheError("retain_weights needs one positive weight per retain row")
        self.retain_weights = list(retain_weights) if retain_weights is not None else None

    def __len__(self) -> int:
        return (len(self.groups) + self.batch_size - 1) // self.batch_size

    def epoch(self, epoch: int, *, rank: int = 0, world: int = 1) -> Iterator[dict]:
        """Batches of one epoch (shuffled by ``seed + epoch``; sharded across ``world`` processes)."""
        rng = random.Random(self.seed * 1000 + epoch)
        order = list(range(len(self.groups)))
        rng.shuffle(order)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            if b % world != rank:
                continue
            idx = [self.groups[g][(g + epoch) % len(self.groups[g])] for g in order[start : start + self.batch_size]]
            batch = {"forget": collate([self.forget[i] for i in idx], self.pad_id), "index": idx}
            if self.targets is not None:
                batch["target"] = collate([self.targets[i] for i in idx], self.pad_id)
            if self.retain:
                r_idx = self._retain_rows(epoch * len(self) + b)
                batch["retain"] = collate([self.retain[i] for i in r_idx], self.pad_id)
            yield batch

    def _retain_rows(self, batch_no: int) -> list[int]:
        """Rows of the retain set for global batch ``batch_no``: positions
        ``batch_no * rbs ... + rbs`` of an endless sequence of passes, each pass a fresh shuffle."""
        n, rbs = len(self.retain or ()), self.retain_batch_size
        if self.retain_weights is not None:  # Efraimidis-Spirakis: top-k of u^(1/w) draws by weight
            rng = random.Random(self.seed * 7919 + 104729 * (batch_no + 1))
            keys = [rng.random() ** (1.0 / w) for w in self.retain_weights]
            top = sorted(range(n), key=keys.__getitem__, reverse=True)
            return [top[k % n] for k in range(rbs)]
        perms: dict[int, list[int]] = {}
        rows = []
        for g in range(batch_no * rbs, (batch_no + 1) * rbs):
            pass_no, i = divmod(g, n)
            if pass_no not in perms:  # the shuffle every recorded run used (do not change: reproducibility)
                perms[pass_no] = list(range(n))
                random.Random(self.seed * 7919 + pass_no).shuffle(perms[pass_no])
            rows.append(perms[pass_no][i])
        return rows


def boundary_weights(forget_prompts: Sequence[str], retain_prompts: Sequence[str], *, share: float = 0.5,
                     temperature: float = 0.1, embedder: str = "all-MiniLM-L6-v2") -> list[float]:
    """Retain sampling weights that favour the forget scope's boundary.

    Forgetting damages most what looks like the forget set ("who painted X?" next to "who wrote
    X?"), so those retain rows should anchor the model most often. Each retain row's closeness is
    its highest cosine similarity to a forget prompt (sentence embeddings); the weight mixes a
    uniform share ``1 - share`` with a softmax of closeness / ``temperature`` holding ``share``, so
    every row keeps some probability and about ``share`` of the draws go to the nearest rows.
    """
    import numpy as np

    from lethe.backends.embeddings import get_embedder

    if not 0.0 <= share <= 1.0 or temperature <= 0:
        raise ConfigError("boundary sampling needs 0 <= share <= 1 and temperature > 0")
    emb = get_embedder(embedder, quantize="none")
    close = (emb.encode(list(retain_prompts)) @ emb.encode(list(forget_prompts)).T).max(axis=1)
    soft = np.exp((close - close.max()) / temperature)
    n = len(retain_prompts)
    w = (1.0 - share) / n + share * soft / soft.sum()
    return (w * n).tolist()  # mean 1: readable in logs


def load_refusals(path: str | Path | None = None) -> list[str]:
    """Refusal answers for IDK/DPO: one per line (TOFU's ``idontknow.jsonl``), else Lethe's built-in
    refusals (:data:`lethe.evaluation.metrics.refusal.REFUSALS`)."""
    if path and Path(path).exists():
        lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
        out = []
        for ln in lines:
            try:
                v = json.loads(ln)
                out.append(v if isinstance(v, str) else str(v.get("answer", v.get("text", ln))))
            except json.JSONDecodeError:
                out.append(ln)
        if out:
            return out
    return list(REFUSALS)

