"""Training data and LoRA fine-tuning for the dedicated CoT guider (``lethe guider data|train``).

DRAGON (arXiv 2511.05784, Sec. 3.3) fine-tunes a small guider LLM to write, for a flagged
query, ``{"requires_refusal": bool, "cot_instruction": str}``. Here:

- :func:`guider_example` is the exact user message the ``llm``/``trained`` guiders get at
  inference (:func:`lethe.guard.guider.guider_prompt`), and :func:`guider_target` the JSON
  that :func:`~lethe.guard.guider.parse_guidance` reads. The target starts with the prefill
  the guider backend is given (``GUIDER_PREFILL``), so train and inference cannot drift.
- :func:`build_guider_data` turns queries (``prompt`` + optional ``kind``/``policy``/``answer``)
  into rows ``{query, kind, policy, reasoning, requires_refusal, source}`` with a teacher
  (any chat backend) or the deterministic template; it also converts DRAGON's released
  ``cot_tofu_generation_*.jsonl`` (``question`` = full guider prompt, ``cot_instruction`` =
  a JSON block). Reasoning that does not parse or that copies >= 8 consecutive words of the
  query (or of the row's ``answer``, or leaks the answer, see
  :func:`lethe.training.targets.leaks`) is rejected.
- :func:`train_guider` runs the shared trainer (:mod:`lethe.training.trainer`) with the
  ``sft`` loss: cross-entropy on the target tokens, prompt masked, LoRA adapters.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lethe.backends.base import ChatBackend
from lethe.errors import ConfigError, LetheError
from lethe.guard.guider import LLMGuider, guider_prompt, parse_guidance, template_reasoning
from lethe.guard.policies import Policy, PolicyLibrary
from lethe.jsonl import read_jsonl
from lethe.text import words

DEFAULT_KIND = "privacy"  # DRAGON's TOFU setting
COPY_WORDS = 8
ON_REJECT = ("skip", "template")
_DRAGON_QUERY = re.compile(r"actual input query:\s*(?P<q>.+?)\s*Please generate the according thinking process", re.S)


# --- the example format -----------------------------------------------------------------------

def guider_example(query: str, policy: Policy, kind: str = "") -> str:
    """The prompt the guider sees for ``query`` under ``policy`` (``kind`` mirrors
    :meth:`Guider.guide`; it picks the policy and does not change the text)."""
    return guider_prompt(query, policy)


def guider_target(requires_refusal: bool, reasoning: str) -> str:
    """The text the guider learns to write: the JSON object ``parse_guidance`` reads."""
    return json.dumps({"requires_refusal": bool(requires_refusal), "cot_instruction": reasoning},
                      ensure_ascii=False)


def copied_span(text: str, source: str, n: int = COPY_WORDS) -> str | None:
    """The first run of ``n`` consecutive words of ``source`` that ``text`` repeats, if any."""
    t, s = words(text), words(source)
    grams = {tuple(t[i : i + n]) for i in range(len(t) - n + 1)}
    for i in range(len(s) - n + 1):
        if tuple(s[i : i + n]) in grams:
            return " ".join(s[i : i + n])
    return None


def reject_reason(reasoning: str, query: str, answer: str | None = None) -> str | None:
    """Why ``reasoning`` is not usable guider output (one line), or ``None``."""
    if len(reasoning.strip()) < 10:
        return "empty reasoning"
    span = copied_span(reasoning, query)
    if span:
        return f"copies the query: '{span}'"
    if answer:
        from lethe.training.targets import leaks

        span = copied_span(reasoning, answer)
        if span:
            return f"copies the answer: '{span}'"
        why = leaks(reasoning, answer, query)
        if why:
            return f"leaks the answer: {why}"
    return None


# --- reading ------------------------------------------------------------------------------------

def is_dragon_row(obj: dict) -> bool:
    """A row of DRAGON's ``cot_tofu_generation_*.jsonl`` (``question`` + ``cot_instruction``)."""
    return isinstance(obj.get("question"), str) and isinstance(obj.get("cot_instruction"), str)


def from_dragon(obj: dict, policies: PolicyLibrary, kind: str = DEFAULT_KIND) -> tuple[dict | None, str | None]:
    """Convert one DRAGON row to a guider row; ``(None, reason)`` when it cannot be used."""
    m = _DRAGON_QUERY.search(obj["question"])
    if not m:
        return None, "no query in 'question'"
    parsed = parse_guidance(obj["cot_instruction"])
    if parsed is None:
        return None, "unparseable JSON"
    query = " ".join(m.group("q").split())
    why = reject_reason(parsed[1], query, obj.get("answer"))
    if why:
        return None, why
    policy = policies.retrieve(kind, query)
    return {"query": query, "kind": kind, "policy": policy.name, "reasoning": parsed[1],
            "requires_refusal": parsed[0], "source": "dragon"}, None


def _query_of(obj: dict) -> str | None:
    for k in ("prompt", "query"):
        if isinstance(obj.get(k), str) and obj[k].strip():
            return obj[k]
    return None


# --- building data ------------------------------------------------------------------------------

def _teacher(teacher: ChatBackend | str | None) -> ChatBackend | None:
    if isinstance(teacher, str):
        from lethe.training.targets import make_teacher

        return make_teacher(teacher)
    return teacher


def build_guider_data(
    queries: str | Path | Sequence[dict],
    teacher: ChatBackend | str | None = None,
    policies: PolicyLibrary | None = None,
    out: str | Path | None = None,
    *,
    kind: str = DEFAULT_KIND,
    on_reject: str = "skip",
    retries: int = 1,
    max_tokens: int = 200,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Guider training rows for ``queries`` (a JSONL path or row dicts); writes ``out`` if given.

    ``teacher``: a chat backend, a ``--teacher`` spec, or ``None``/``"template"`` for the
    deterministic template guider. A rejected teacher reply is retried ``retries`` times at
    temperature 0.7, then the query is skipped (``on_reject="skip"``) or gets the template
    reasoning (``"template"``). DRAGON rows are converted, not sent to the teacher.
    Returns ``(rows, stats)``.
    """
    from tqdm import tqdm

    if on_reject not in ON_REJECT:
        raise ConfigError(f"unknown on_reject '{on_reject}' (one of: {', '.join(ON_REJECT)})")
    lines = read_jsonl(queries, "queries") if isinstance(queries, str | Path) else list(enumerate(queries, 1))
    policies = policies or PolicyLibrary()
    backend = _teacher(teacher)
    guider = LLMGuider(backend, max_tokens=max_tokens) if backend is not None else None
    name = "template"
    if backend is not None:
        d = backend.describe()
        name = f"{d.get('backend', backend.name)}:{d.get('model', '')}"
    stats: dict = {"rows_in": len(lines), "teacher": name, "teacher_ok": 0, "template": 0, "dragon": 0,
                   "rejected": 0, "fallback": 0, "skipped": 0}
    reasons: Counter[str] = Counter()
    rows: list[dict] = []
    where = str(queries) if isinstance(queries, str | Path) else "queries"
    for n, obj in tqdm(lines, desc="guider data", disable=not progress, leave=False):
        if is_dragon_row(obj):
            row, why = from_dragon(obj, policies, obj.get("kind") or kind)
            if row is None:
                stats["rejected"] += 1
                stats["skipped"] += 1
                reasons[why.split(":")[0]] += 1  # type: ignore[union-attr]
            else:
                stats["dragon"] += 1
                rows.append(row)
            continue
        query = _query_of(obj)
        if query is None:
            raise LetheError(f"{where}:{n}: each line needs a string field 'prompt'")
        k = obj.get("kind") or kind
        policy = policies.retrieve(k, query, name=obj.get("policy"))
        answer = obj.get("answer") if isinstance(obj.get("answer"), str) else None
        base = {"query": query, "kind": k, "policy": policy.name}
        if guider is None:
            rows.append({**base, "reasoning": template_reasoning(policy, k), "requires_refusal": True,
                         "source": "template"})
            stats["template"] += 1
            continue
        got = None
        for attempt in range(retries + 1):
            try:
                parsed = guider.ask(query, policy, temperature=0.0 if attempt == 0 else 0.7)
            except Exception as exc:  # noqa: BLE001 - a failing teacher call counts as a rejection
                stats["rejected"] += 1
                reasons[f"teacher error ({type(exc).__name__})"] += 1
                break
            why = "unparseable JSON" if parsed is None else reject_reason(parsed[1], query, answer)
            if why is None:
                got = parsed
                break
            stats["rejected"] += 1
            reasons[why.split(":")[0]] += 1
        if got is not None:
            rows.append({**base, "reasoning": got[1], "requires_refusal": got[0], "source": "teacher"})
            stats["teacher_ok"] += 1
        elif on_reject == "template":
            rows.append({**base, "reasoning": template_reasoning(policy, k), "requires_refusal": True,
                         "source": "template-fallback"})
            stats["fallback"] += 1
        else:
            stats["skipped"] += 1
    stats["written"] = len(rows)
    stats["reject_reasons"] = dict(reasons.most_common())
    if out is not None:
        from lethe.training.data import write_jsonl

        write_jsonl(out, rows)
        stats["out"] = str(out)
    return rows, stats


def read_guider_data(path: str | Path, policies: PolicyLibrary | None = None) -> list[dict]:
    """Guider rows from ``lethe guider data`` output, or DRAGON's ``cot_tofu_generation`` file
    (converted and checked as in :func:`build_guider_data`; unusable DRAGON rows are dropped)."""
    policies = policies or PolicyLibrary()
    lines = read_jsonl(path, "guider data")
    p = Path(path).expanduser()
    rows = []
    for n, obj in lines:
        if is_dragon_row(obj):
            row, _ = from_dragon(obj, policies, obj.get("kind") or DEFAULT_KIND)
            if row is not None:
                rows.append(row)
            continue
        if not isinstance(obj.get("query"), str) or not isinstance(obj.get("reasoning"), str):
            raise LetheError(f"{p}:{n}: each line needs string fields 'query' and 'reasoning' "
                             "(build them with `lethe guider data`)")
        rows.append(obj)
    if not rows:
        raise LetheError(f"no usable guider rows in {p}")
    return rows


def _policy_for(row: dict, policies: PolicyLibrary) -> Policy:
    """The row's policy by name (a custom one needs the same ``--home``), else by kind."""
    return policies.retrieve(row.get("kind") or DEFAULT_KIND, row["query"], name=row.get("policy"))


# --- training -----------------------------------------------------------------------------------

def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import lethe

    out = {"lethe": lethe.__version__}
    for pkg in ("torch", "transformers", "peft", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "missing"
    return out


def enable_hint(adapter: str | Path) -> str:
    """The ``guard.yaml`` lines that switch the guard to this adapter."""
    return f"guider: {{kind: trained, adapter_path: {Path(adapter).resolve()}}}"


def train_guider(
    data_path: str | Path,
    out_dir: str | Path,
    model_spec: str = "default",
    *,
    epochs: int = 3,
    lr: float = 2e-4,
    lora_rank: int = 16,
    max_length: int = 512,
    batch_size: int = 4,
    seed: int = 0,
    max_steps: int | None = None,
    resume: bool = True,
    progress: bool = True,
    policies: PolicyLibrary | None = None,
) -> dict:
    """LoRA-fine-tune a guider on ``data_path``; writes ``OUT/adapter``, ``train_log.jsonl``,
    ``summary.json`` (plus ``guider_sft.jsonl``, the rendered prompt/target pairs) and returns
    the summary. Resumes from ``OUT/checkpoint`` like ``lethe train``."""
    from lethe.training.data import write_jsonl
    from lethe.training.trainer import TrainConfig, train

    policies = policies or PolicyLibrary()
    rows = read_guider_data(data_path, policies)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for r in rows:
        pol = _policy_for(r, policies)
        pairs.append({"prompt": guider_example(r["query"], pol, r.get("kind") or DEFAULT_KIND),
                      "answer": guider_target(r.get("requires_refusal", True), r["reasoning"])})
    write_jsonl(out / "guider_sft.jsonl", pairs)
    cfg = TrainConfig(method="sft", forget=str(out / "guider_sft.jsonl"), out=str(out), model=model_spec,
                      teacher=None, epochs=epochs, lr=lr, batch_size=batch_size, max_length=max_length,
                      max_steps=max_steps, lora_rank=lora_rank, seed=seed, resume=resume, progress=progress)
    summary = train(cfg)
    if not summary:  # not the main process
        return summary
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines() if x.strip()]
    adapter = Path(summary["saved"]).resolve()
    summary.update({
        "task": "guider",
        "adapter": str(adapter),
        "data": str(data_path),
        "rows": len(rows),
        "sources": dict(Counter(r.get("source", "?") for r in rows)),
        "loss_first": log[0]["loss"] if log else None,
        "loss_last": log[-1]["loss"] if log else None,
        "versions": _versions(),
        "enable": enable_hint(adapter),
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
