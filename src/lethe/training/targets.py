"""Reasoning targets for TRU (and the guider): why and how to decline each forget item.

For each forget item (prompt, original answer) a target has a reasoning part ``r`` that
names the out-of-bounds scope and the reason class, and a response ``s`` that declines
without leaking and redirects to what the model can still help with (Liao et al. 2026,
arXiv 2603.09980, "Explainable LLM Unlearning Through Reasoning").

A teacher (any :class:`~lethe.backends.base.ChatBackend`) is asked with
:data:`TEACHER_SYSTEM` for two labelled parts; its output is validated (no span of the
original answer copied: substring, new-word overlap and ROUGE-L checks) and cached in a
JSONL file keyed by a content hash. Invalid or missing teacher output falls back to a
deterministic template.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from lethe.config import cache_dir
from lethe.evaluation.metrics.refusal import GENERIC_REFUSALS
from lethe.text import FUNCTION_WORDS, fold, words
from lethe.training.data import Pair

TEMPLATE_VERSION = "tru-targets-v3"

REASONS = {
    "privacy": "privacy: it concerns personal information about a specific person that was removed on request",
    "copyright": "copyright: it would reproduce or reveal protected content that the rights holder asked to be removed",
    "harmful": "hazardous knowledge: it could give meaningful help toward causing serious harm",
    "knowledge": "an unlearning request: this knowledge was removed from what I may share",
}

# What the template target names as the scope when the caller gives none (``--scope``).
DEFAULT_SCOPES = {
    "privacy": "personal information about a person whose data was removed on request",
    "copyright": "content of a work whose rights holder asked for it to be removed",
    "harmful": "hazardous technical knowledge",
    "knowledge": "knowledge that was removed from what I may share",
}

REDIRECTS = {
    "privacy": "general questions about the field, public and non-personal information, or how to find official sources",
    "copyright": "a summary of the themes in general terms, related public-domain works, or questions about writing itself",
    "harmful": "safety information, the history and policy of the field, or general science at an introductory level",
    "knowledge": "related general topics, how to look this up in a reliable source, or a different question",
}

TEACHER_SYSTEM = """You write unlearning targets for a language model. The model must no longer provide knowledge within this scope: {scope}. Reason class: {reason}.
For the user's question, write what the model should say instead.
1. Deny the request logically: explain briefly that the question falls inside the restricted scope and why it is off limits.
2. Give a positive and relevant alternative the model can still help with.
3. Never state, hint at, or paraphrase the answer, and avoid any content mentioned in the question beyond naming the topic.
Criteria: produce logical explanations that keep the response coherent; explicitly avoid generating content within the scope.
Reply in exactly this format, each part at most three sentences:
Reasoning: <why this request is in the restricted scope and must be declined>
Answer: <the decline and the constructive alternative>"""


@dataclass
class Target:
    prompt: str
    answer: str
    reasoning: str
    response: str
    source: str  # "teacher" or "template"
    key: str
    kind: str = "knowledge"

    @property
    def text(self) -> str:
        """The training target r ++ s (the model has no thinking delimiters: plain paragraphs)."""
        return f"{self.reasoning}\n\n{self.response}"

    def to_row(self) -> dict:
        row = asdict(self)
        row["target"] = self.text
        return row


def content_key(prompt: str, answer: str, kind: str, scope: str | None, teacher: str) -> str:
    raw = json.dumps([TEMPLATE_VERSION, prompt, answer, kind, scope or "", teacher], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()[:24]




def _rouge_l(reference: str, candidate: str) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return scorer.score(reference, candidate)["rougeL"].recall


def leaks(text: str, answer: str, prompt: str = "", *, rouge_threshold: float = 0.5) -> str | None:
    """Why ``text`` reveals ``answer`` (a one-line reason), or ``None`` when it does not.

    Checks (on normalised text): the whole answer as a substring; at least half of the answer's
    content words that the prompt does not already contain; ROUGE-L recall of the answer
    (words already in the prompt removed) >= ``rouge_threshold`` when 4+ such words remain.
    """
    a, t = fold(answer).strip(" ."), fold(text)
    if a and re.search(rf"(?<![a-z0-9]){re.escape(a)}(?![a-z0-9])", t):
        return "answer copied verbatim"
    known = set(words(prompt))
    new = [w for w in dict.fromkeys(words(answer)) if w not in FUNCTION_WORDS and w not in known]
    if new:
        tw = set(words(text))
        hit = [w for w in new if w in tw]
        if len(hit) / len(new) >= 0.5:
            return f"answer words copied: {' '.join(hit[:5])}"
    rest = [w for w in words(answer) if w not in known]
    if len(rest) >= 4 and _rouge_l(" ".join(rest), " ".join(words(text))) >= rouge_threshold:
        return "ROUGE-L recall of the answer too high"
    return None


def _pick(options: Sequence[str], key: str, salt: str) -> str:
    h = int(hashlib.sha256((key + salt).encode()).hexdigest(), 16)
    return options[h % len(options)]


def template_target(pair: Pair, *, kind: str = "knowledge", scope: str | None = None, key: str = "") -> Target:
    """Deterministic fallback target: scope, reason class, decline and redirect."""
    kind = kind if kind in REASONS else "knowledge"
    key = key or content_key(pair.prompt, pair.answer, kind, scope, "template")
    scope_txt = scope or DEFAULT_SCOPES[kind]
    # The opener names the scope, never the question itself: a question can carry forgotten
    # content (e.g. the author's name), and the TRU spec asks targets to avoid anything in it.
    # (Dropping the quote did not improve retain accuracy in our CPU runs; docs/training.md.)
    opener = _pick(
        [
            f"This question asks for {scope_txt}.",
            f"This request falls within a restricted scope: {scope_txt}.",
            f"What is being asked here is within {scope_txt}.",
        ],
        key,
        "open",
    )
    reasoning = (
        f"{opener} This scope is off limits because of {REASONS[kind]}. "
        "Any answer, paraphrase, translation or hint would reveal it, so I should decline "
        "clearly and offer something related that I can still help with."
    )
    decline = _pick(GENERIC_REFUSALS, key, "decline")
    response = f"{decline} It falls within a topic I can no longer discuss. I'd be glad to help with {REDIRECTS[kind]}."
    return Target(pair.prompt, pair.answer, reasoning, response, "template", key, kind)


_PART = re.compile(r"(?is)\breasoning\s*[:\-]\s*(?P<r>.+?)\n\s*\**\s*(?:final\s+)?answer\s*\**\s*[:\-]\s*(?P<s>.+)")


def parse_teacher(text: str) -> tuple[str, str] | None:
    """Split a teacher reply into (reasoning, answer); ``None`` if the format is wrong."""
    m = _PART.search(text.replace("**", ""))
    if not m:
        return None
    r, s = (" ".join(x.split()) for x in (m.group("r"), m.group("s")))
    return (r, s) if len(r) > 15 and len(s) > 10 else None


class TargetCache:
    """Append-only JSONL cache ``{key: row}`` (default ``$LETHE_CACHE/targets/cache.jsonl``)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else cache_dir() / "targets" / "cache.jsonl"
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[row["key"]] = row
                except (json.JSONDecodeError, KeyError):
                    continue

    def get(self, key: str) -> Target | None:
        row = self.rows.get(key)
        if not row:
            return None
        fields = {k: row[k] for k in ("prompt", "answer", "reasoning", "response", "source", "key", "kind") if k in row}
        return Target(**fields)

    def put(self, t: Target) -> None:
        self.rows[t.key] = t.to_row()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(t.to_row(), ensure_ascii=False) + "\n")


def teacher_name(teacher) -> str:
    if teacher is None:
        return "template"
    d = teacher.describe() if hasattr(teacher, "describe") else {}
    return f"{d.get('backend', getattr(teacher, 'name', 'teacher'))}:{d.get('model', '')}"


def build_targets(
    pairs: Sequence[Pair],
    *,
    teacher=None,
    kind: str = "knowledge",
    scope: str | None = None,
    cache: TargetCache | None = None,
    retries: int = 1,
    max_tokens: int = 220,
    progress: bool = True,
) -> tuple[list[Target], dict]:
    """One validated target per pair; returns (targets, stats)."""
    from tqdm import tqdm

    cache = cache or TargetCache()
    tname = teacher_name(teacher)
    scope_txt = scope or "the specific facts asked about in the forget questions"
    stats = {"teacher": tname, "cached": 0, "teacher_ok": 0, "rejected": 0, "fallback": 0, "reject_reasons": []}
    out: list[Target] = []
    for pair in tqdm(pairs, desc="reasoning targets", disable=not progress, leave=False):
        key = content_key(pair.prompt, pair.answer, kind, scope, tname)
        hit = cache.get(key)
        if hit is not None:
            stats["cached"] += 1
            out.append(hit)
            continue
        target = None
        if teacher is not None:
            system = TEACHER_SYSTEM.format(scope=scope_txt, reason=REASONS.get(kind, REASONS["knowledge"]))
            for attempt in range(retries + 1):
                msgs = [{"role": "system", "content": system}, {"role": "user", "content": pair.prompt}]
                try:
                    reply = teacher.chat(msgs, max_tokens=max_tokens, temperature=0.0 if attempt == 0 else 0.7).text
                except Exception as exc:  # noqa: BLE001 - any backend failure falls back
                    stats["reject_reasons"].append(f"teacher error: {str(exc).splitlines()[0][:80]}")
                    break
                parsed = parse_teacher(reply)
                why = "unparseable reply" if parsed is None else leaks(" ".join(parsed), pair.answer, pair.prompt)
                if why is None:
                    target = Target(pair.prompt, pair.answer, parsed[0], parsed[1], "teacher", key, kind)
                    stats["teacher_ok"] += 1
                    break
                stats["rejected"] += 1
                stats["reject_reasons"].append(why)
        if target is None:
            target = template_target(pair, kind=kind, scope=scope, key=key)
            stats["fallback"] += teacher is not None
        cache.put(target)
        out.append(target)
    return out, stats


def load_targets(path: str | Path) -> dict[str, str]:
    """``{prompt: target text}`` from a targets JSONL (``target`` or reasoning+response fields)."""
    rows = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        text = r.get("target") or f"{r.get('reasoning', '')}\n\n{r.get('response', '')}".strip()
        rows[r.get("prompt", r.get("question", ""))] = text
    return rows


def make_teacher(spec: str | None):
    """A teacher backend from ``--teacher``: ``template`` (none), ``default`` (embedded model via
    llama.cpp), ``llamacpp:PATH.gguf``, ``hf:ID_OR_DIR``, ``openai:MODEL[@BASE_URL]``."""
    if spec in (None, "", "template", "none"):
        return None
    from lethe.backends import load_backend
    from lethe.config import BackendConfig

    if spec == "default":
        return load_backend(BackendConfig(kind="llamacpp"))
    kind, _, model = spec.partition(":")
    if kind == "openai":
        model, _, base = model.partition("@")
        return load_backend(BackendConfig(kind="openai", model=model, base_url=base or None))
    if kind in ("llamacpp", "hf"):
        return load_backend(BackendConfig(kind=kind, model=model))
    from lethe.errors import ConfigError

    raise ConfigError(f"unknown teacher '{spec}' (template, default, llamacpp:PATH, hf:ID, openai:MODEL[@URL])")
