"""The CoT guider: a short, query-specific reasoning instruction that ends in a decline.

DRAGON (arXiv 2511.05784, Sec. 3.3) trains a guider LLM that outputs
``{"requires_refusal": bool, "cot_instruction": str}``. Lethe offers three guiders:

- ``template``: deterministic reasoning built from the retrieved policy and the request
  kind. No model call; the default on small local models, where it measured best.
- ``llm``: prompts the configured chat model for the JSON object (zero-shot guider);
  falls back to the template when the output does not parse.
- ``trained``: a LoRA-fine-tuned guider (``lethe guider train``) loaded with transformers.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

from lethe.backends.base import ChatBackend
from lethe.guard.policies import Policy
from lethe.registry import Registry

GUIDERS: Registry[Guider] = Registry("guider")

_TOPIC = {
    "privacy": "a specific person whose personal information has been erased",
    "copyright": "a copyrighted work that is under a takedown request",
    "harmful": "hazardous knowledge that the usage policy prohibits",
}


@dataclass
class Guidance:
    requires_refusal: bool
    reasoning: str
    source: str


class Guider(ABC):
    @abstractmethod
    def guide(self, query: str, policy: Policy, kind: str) -> Guidance: ...


def template_reasoning(policy: Policy, kind: str) -> str:
    topic = _TOPIC.get(kind, "a restricted topic")
    return (
        f"The user is asking about {topic}. This is restricted: {policy.reason}. "
        "I must not reveal, confirm, guess or invent any details about it, and I must not repeat them. "
        f"The right response is a brief, polite decline, and I can offer help with {policy.redirect} instead. "
        "So I must decline. Therefore,"
    )


@GUIDERS.register("template")
class TemplateGuider(Guider):
    def __init__(self, **_: object) -> None:
        pass

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
    def __init__(self, backend: ChatBackend, max_tokens: int = 160, temperature: float = 0.0, **_: object) -> None:
        self.backend = backend
        self.max_tokens = max_tokens
        self.temperature = temperature

    def guide(self, query: str, policy: Policy, kind: str) -> Guidance:
        prompt = GUIDER_PROMPT.format(guideline=policy.guideline, reason=policy.reason,
                                      redirect=policy.redirect, query=query)
        kw = {"prefill": '{"requires_refusal": true, "cot_instruction": "'} if self.backend.supports_prefill else {}
        out = self.backend.chat([{"role": "user", "content": prompt}], max_tokens=self.max_tokens,
                                temperature=self.temperature, **kw).text
        parsed = parse_guidance((kw.get("prefill") or "") + out)
        if parsed is None:
            return Guidance(True, template_reasoning(policy, kind), "template-fallback")
        refuse, instr = parsed
        if not instr.rstrip().endswith("Therefore,"):
            instr = instr.rstrip() + " So I must decline. Therefore,"
        return Guidance(refuse, instr, "llm")


@GUIDERS.register("trained")
class TrainedGuider(LLMGuider):
    """A fine-tuned guider adapter served through the transformers backend."""

    def __init__(self, adapter_path: str, base_model: str | None = None, **kw: object) -> None:
        from lethe.backends.hf import HFBackend

        with open(f"{adapter_path}/adapter_config.json") as f:
            base = base_model or json.load(f)["base_model_name_or_path"]
        super().__init__(HFBackend(base, adapter=adapter_path), **kw)  # type: ignore[arg-type]
