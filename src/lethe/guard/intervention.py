"""In-context intervention: where the policy and the reasoning go in the model's context.

Placements (measured per model by ``benchmarks/bench_placement.py``):

- ``system``: policy and reasoning in a system message;
- ``user_prefix``: the DRAGON layout — context, the question, then
  "Let's think step by step." and the reasoning, all in the user turn;
- ``assistant_prefill``: policy in the system message, the reasoning written as the
  start of the assistant's own turn, ending in "Therefore," so the model completes the
  decline.

``user_prefix`` is the default: small chat models follow a policy placed next to the question far
more often than one in a system message, and it works on backends that cannot prefill
(``benchmarks/bench_placement.py`` compares the placements on a given model).

With ``query_last`` the ``user_prefix`` turn carries the same content in prefix-cache order:
context, "Let's think step by step." and the reasoning, then the question, then one constant
sentence that ties the question to that reasoning and ends in "Therefore," (the decline cue stays
the last thing the model reads, as in DRAGON's order). The template guider's reasoning depends on
the policy and kind only, so every in-scope query of a kind then shares all of its prompt but the
question with the others, and a backend that caches prompt prefixes (llama.cpp's ``prefix_reuse_chunk``, vLLM's automatic prefix
caching) decodes that part once. ``system`` is already in that order (the policy and reasoning
precede the conversation); ``assistant_prefill`` writes the reasoning after the question by design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lethe.backends.base import Message
from lethe.guard.policies import Policy


@dataclass
class Intervention:
    messages: list[Message]
    prefill: str | None
    placement: str


def _context(policy: Policy, profile: str | None) -> str:
    text = f"{policy.title}. {policy.guideline}"
    if policy.refusal_style:
        text += f"\nResponse style: {policy.refusal_style}"
    if profile:
        text += f"\nThe only information you have is this profile: {profile}"
    return text


def build(
    messages: Sequence[Message],
    policy: Policy,
    reasoning: str,
    placement: str,
    supports_prefill: bool,
    profile: str | None = None,
    query_last: bool = False,
) -> Intervention:
    msgs = [dict(m) for m in messages]
    if placement == "assistant_prefill" and not supports_prefill:
        placement = "user_prefix"
    context = _context(policy, profile)
    sys_idx = next((i for i, m in enumerate(msgs) if m["role"] == "system"), None)
    last_user = max((i for i, m in enumerate(msgs) if m["role"] == "user"), default=None)
    if last_user is None and placement == "user_prefix":
        placement = "system"  # no user turn to wrap

    def put_system(text: str) -> None:
        if sys_idx is None:
            msgs.insert(0, {"role": "system", "content": text})
        else:
            msgs[sys_idx] = {"role": "system", "content": text + "\n\n" + msgs[sys_idx]["content"]}

    if placement == "system":
        put_system(f"{context}\n\nReasoning for the next answer: {reasoning}" if reasoning else context)
        return Intervention(msgs, None, placement)  # type: ignore[arg-type]
    if placement == "user_prefix":
        assert last_user is not None
        q = msgs[last_user]["content"]
        if query_last:
            msgs[last_user] = {"role": "user", "content": _query_last(context, q, reasoning)}
            return Intervention(msgs, None, placement)  # type: ignore[arg-type]
        steps = f"\n\nLet's think step by step. {reasoning}" if reasoning else ""
        msgs[last_user] = {"role": "user", "content": f"{context}\n\nQuestion: {q}{steps}"}
        return Intervention(msgs, None, placement)  # type: ignore[arg-type]
    put_system(context)
    if not reasoning:
        return Intervention(msgs, None, placement)  # type: ignore[arg-type]
    return Intervention(msgs, f"Let me think step by step. {reasoning}", placement)  # type: ignore[arg-type]


_THEREFORE = "Therefore,"
# after the question in the query_last layout: the same text for every query
QUERY_LAST_CLOSE = ("This question is about the restricted topic above, so I must politely say that I can't help "
                    "with it. " + _THEREFORE)


def _query_last(context: str, question: str, reasoning: str) -> str:
    """The ``user_prefix`` turn with everything constant before the question (module doc)."""
    if not reasoning:
        return f"{context}\n\nQuestion: {question}"
    body = reasoning.rstrip().removesuffix(_THEREFORE).rstrip()
    return f"{context}\n\nLet's think step by step. {body}\n\nQuestion: {question}\n\n{QUERY_LAST_CLOSE}"


def finish(text: str) -> str:
    """Tidy a continuation of a prefilled reasoning into a standalone answer."""
    text = text.strip()
    return text[:1].upper() + text[1:] if text else text
