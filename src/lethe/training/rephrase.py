"""Train-time rephrasings of the forget prompts, rotated across epochs.

TRU (Liao et al. 2026, arXiv 2603.09980) defines a forget item's *scope* as every input that
expresses the same knowledge unit -- paraphrases, translations, reformulations. A target trained on
one phrasing teaches that phrasing; on the CPU experiment (docs/training.md) training each
prompt in three phrasings lifted retain and carried the declines to unseen phrasings.

Variants of an item come from its own ``paraphrases`` field (a list of strings in the forget JSONL,
as TOFU's ``paraphrased_question``) and, with ``--rephrase K``, from a rewriter of the guard's
registry: ``llm`` asks a chat backend for K paraphrases, ``rule`` rewrites deterministically; the
original itself and repeats are dropped. Epoch ``e`` trains item ``i`` on variant ``(i + e) mod n_i``, so the number of steps does not grow with K and every batch mixes phrasings.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from lethe.errors import ConfigError
from lethe.training.data import Pair

# Deterministic frames that fill up (after the rule rewriter) when a rewriter returns fewer than K.
_FRAMES = ("Could you tell me this: {q}", "Quick question. {q}", "I'd like to know the following. {q}")


def _usable(candidate: str, original: str, seen: set[str]) -> bool:
    """New (not the original or a repeat after normalisation) and of a plausible length. Unlike the
    guard's store, a rephrasing may contain the original: a framed question is still a new input."""
    from lethe.text import fold

    c = candidate.strip()
    return bool(c) and fold(c) not in seen and 0.3 <= len(c) / max(1, len(original)) <= 3.0


def make_rewriter(spec: str):
    """``rule`` or a backend spec as for ``--teacher`` (``default``, ``llamacpp:PATH``, ``hf:ID``,
    ``openai:MODEL[@URL]``) wrapped in the guard's ``llm`` rewriter."""
    from lethe.guard.rewrite import REWRITERS
    from lethe.training.targets import make_teacher

    if spec == "rule":
        return REWRITERS.create("rule")
    backend = make_teacher(spec)
    if backend is None:
        raise ConfigError(f"--rephraser '{spec}' names no model: use rule or a backend spec")
    return REWRITERS.create("llm", backend=backend)


def _take(chosen: list[str], seen: set[str], original: str, cands: Sequence[str], limit: int) -> None:
    """Append usable candidates to ``chosen`` until it holds ``limit``."""
    from lethe.text import fold

    for c in cands:
        if len(chosen) >= limit:
            return
        if _usable(c, original, seen):
            chosen.append(c.strip())
            seen.add(fold(c))


def rephrase(prompts: Sequence[str], k: int, rewriter, *, given: Sequence[Sequence[str]] = (),
             progress: bool = True) -> list[list[str]]:
    """Per prompt: its usable ``given`` paraphrases (same index) and K new rephrasings, never a copy
    of the prompt nor a repeat; the rewriter's shortfall is filled with fixed frames."""
    from tqdm import tqdm

    from lethe.guard.rewrite import RuleRewriter
    from lethe.text import fold

    out = []
    for i, p in enumerate(tqdm(prompts, desc="rephrasing forget prompts", disable=not progress or not k,
                               unit="prompt")):
        seen: set[str] = {fold(p)}
        chosen: list[str] = []
        mine = list(given[i]) if i < len(given) else []
        _take(chosen, seen, p, mine, len(mine))
        if k:
            limit = len(chosen) + k
            _take(chosen, seen, p, rewriter.candidates(p, k + 1), limit)
            fill = [RuleRewriter().rewrite(p)] + [f.format(q=p.strip()) for f in _FRAMES]
            _take(chosen, seen, p, fill, limit)
        out.append(chosen)
    return out


def forget_variants(forget: Sequence[Pair], k: int, rephraser: str, out: Path, *,
                    progress: bool = True) -> list[list[Pair]]:
    """Each forget pair followed by its rephrasings (same answer); cached in OUT/rephrasings.jsonl
    so a resumed run trains on the same prompts."""
    given = [[str(x) for x in (p.meta or {}).get("paraphrases", []) if isinstance(x, str)] for p in forget]
    cache = out / "rephrasings.jsonl"
    rows = None
    if cache.exists():
        rows = [json.loads(x) for x in cache.read_text(encoding="utf-8").splitlines() if x.strip()]
        if [r["prompt"] for r in rows] != [p.prompt for p in forget] or any(r.get("k") != k for r in rows):
            rows = None
    if rows is None:
        if k or any(given):
            rw = make_rewriter(rephraser) if k else None
            lists = rephrase([p.prompt for p in forget], k, rw, given=given, progress=progress)
        else:
            lists = [[] for _ in forget]
        rows = [{"prompt": p.prompt, "k": k, "variants": v} for p, v in zip(forget, lists, strict=True)]
        if k or any(given):
            out.mkdir(parents=True, exist_ok=True)
            cache.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return [[p] + [Pair(v, p.answer, {**(p.meta or {}), "source_prompt": p.prompt}) for v in r["variants"]]
            for p, r in zip(forget, rows, strict=True)]
