"""The CoT guider: a short, query-specific reasoning instruction that ends in a decline.

DRAGON (arXiv 2511.05784, Sec. 3.3) trains a guider LLM that outputs
``{"requires_refusal": bool, "cot_instruction": str}``. Lethe offers four guiders:

- ``none``: no reasoning at all, the retrieved policy alone goes into the context (DRAGON's
  "w/o CoT" ablation, Table 6).
- ``template``: deterministic reasoning built from the retrieved policy and the request
  kind. No model call; the default (small local models follow it best, docs/results.md).
- ``llm``: prompts the configured chat model for the JSON object (zero-shot guider);
  falls back to the template when the output does not parse.
- ``trained``: a LoRA-fine-tuned guider (``lethe guider train``) loaded with transformers.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lethe.backends.base import ChatBackend
from lethe.errors import ConfigError
from lethe.guard.policies import Policy
from lethe.registry import Registry

if TYPE_CHECKING:
    from lethe.config import GuiderConfig

GUIDERS: Registry[Guider] = Registry("guider")

_TOPIC = {
    "privacy": "a specific person whose personal information has been erased",
    "copyright": "a copyrighted work that is under a takedown request",
    "harmful": "hazardous knowledge that the usage policy prohibits",
    "knowledge": "facts that are under an unlearning request",
}


@dataclass
class Guidance:
    requires_refusal: bool
    reasoning: str
    source: str


class Guider(ABC):
    @abstractmethod
    def guide(self, query: str, policy: Policy, kind: str) -> Guidance: ...

    @classmethod
    def from_config(cls, cfg: GuiderConfig, backend: Callable[[], ChatBackend], home: Path | None) -> Guider:
        """Build from a ``guider:`` section; ``backend`` is called only by guiders that need the model."""
        return cls()


def template_reasoning(policy: Policy, kind: str) -> str:
    topic = _TOPIC.get(kind, "a restricted topic")
    return (
        f"The user is asking about {topic}. This is restricted: {policy.reason}. "
        "I must not reveal, confirm, guess or invent any details about it, and I must not repeat them. "
        f"The right response is a brief, polite decline, and I can offer help with {policy.redirect} instead. "
        "So I must decline. Therefore,"
    )


@GUIDERS.register("none")
class PolicyOnlyGuider(Guider):
    """No CoT: the intervention carries the policy and the question only."""

    def guide(self, query: str, policy: Policy, kind: str) -> Guidance:
        return Guidance(True, "", "none")


@GUIDERS.register("template")
class TemplateGuider(Guider):
    """Policy + kind, never the query's content; no model call."""

    def guide(self, query: str, policy: Policy, kind: str) -> Guidance:
        return Guidance(True, template_reasoning(policy, kind), "template")


GUIDER_PROMPT = """You are a safety reasoning guide. A user query has been flagged as possibly inside a restricted scope.
Policy: {guideline}
Reason class: {reason}

Write a short step-by-step reasoning instruction (2-4 sentences) for an assistant that:
1. recognises the restricted topic without repeating any restricted detail,
2. cites the policy,
3. concludes that it must decline and suggests a safe alternative ({redirect}).
Reply with only a JSON object: {{"requires_refusal": true or false, "cot_instruction": "..."}}

Query: {query}"""

# The assistant turn of the LLM/trained guider starts with this (when the backend can prefill);
# the trained guider's targets start with the same text (see ``lethe.training.guider.guider_target``).
GUIDER_PREFILL = '{"requires_refusal": true, "cot_instruction": "'


def guider_prompt(query: str, policy: Policy) -> str:
    """The user message the LLM and trained guiders get (training data uses the same text)."""
    return GUIDER_PROMPT.format(guideline=policy.guideline, reason=policy.reason, redirect=policy.redirect,
                                query=query)


def parse_guidance(text: str) -> tuple[bool, str] | None:
    m = re.search(r"\{.*\}", text, flags=re.S)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    instr = obj.get("cot_instruction")
    if not isinstance(instr, str) or len(instr.strip()) < 10:
        return None
    return bool(obj.get("requires_refusal", True)), instr.strip()


@GUIDERS.register("llm")
class LLMGuider(Guider):
    source = "llm"

    def __init__(self, backend: ChatBackend, max_tokens: int = 160, temperature: float = 0.0) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.temperature = temperature

    @classmethod
    def from_config(cls, cfg: GuiderConfig, backend: Callable[[], ChatBackend], home: Path | None) -> Guider:
        return cls(backend(), max_tokens=cfg.max_tokens, temperature=cfg.temperature)

    def ask(self, query: str, policy: Policy, temperature: float | None = None) -> tuple[bool, str] | None:
        """One guider call: ``(requires_refusal, cot_instruction)``, or ``None`` when it does not parse."""
        kw = {"prefill": GUIDER_PREFILL} if self.backend.supports_prefill else {}
        out = self.backend.chat([{"role": "user", "content": guider_prompt(query, policy)}],
                                max_tokens=self.max_tokens,
                                temperature=self.temperature if temperature is None else temperature, **kw).text
        return parse_guidance((kw.get("prefill") or "") + out)

    def guide(self, query: str, policy: Policy, kind: str) -> Guidance:
        parsed = self.ask(query, policy)
        if parsed is None:
            return Guidance(True, template_reasoning(policy, kind), "template-fallback")
        refuse, instr = parsed
        if not instr.rstrip().endswith("Therefore,"):
            instr = instr.rstrip() + " So I must decline. Therefore,"
        return Guidance(refuse, instr, self.source)


@GUIDERS.register("trained")
class TrainedGuider(LLMGuider):
    """A fine-tuned guider adapter (``lethe guider train``) served through the transformers backend."""

    source = "trained"

    def __init__(self, adapter_path: str, base_model: str | None = None, device: str | None = None,
                 max_tokens: int = 160, temperature: float = 0.0) -> None:
        from lethe.backends.hf import HFBackend

        cfg = Path(adapter_path).expanduser() / "adapter_config.json"
        if not cfg.exists():
            raise ConfigError(f"no guider adapter at {adapter_path} (adapter_config.json missing; "
                              "train one with `lethe guider train`)")
        base = base_model or json.loads(cfg.read_text())["base_model_name_or_path"]
        super().__init__(HFBackend(base, adapter=str(cfg.parent), device=device), max_tokens, temperature)

    @classmethod
    def from_config(cls, cfg: GuiderConfig, backend: Callable[[], ChatBackend], home: Path | None) -> Guider:
        """A relative ``adapter_path`` is looked up in the working directory, then in the home folder."""
        if not cfg.adapter_path:
            raise ConfigError("guider.kind=trained needs guider.adapter_path")
        path = Path(cfg.adapter_path).expanduser()
        if not path.is_absolute() and not path.exists() and home is not None and (home / path).exists():
            path = home / path
        return cls(str(path), max_tokens=cfg.max_tokens, temperature=cfg.temperature)


def guider_from_config(cfg: GuiderConfig, backend: Callable[[], ChatBackend], home: Path | None = None) -> Guider:
    """The guider a ``guard.yaml`` ``guider:`` section asks for, built through ``GUIDERS``."""
    return GUIDERS.get(cfg.kind).from_config(cfg, backend, home)
