"""What an upstream chat model reads of a request: every message of every role, its text content
parts, ``name`` fields and tool calls (OpenAI chat format), and the weight of each role."""

from __future__ import annotations

import json
from dataclasses import dataclass

# -- what an upstream model reads ---------------------------------------------------------
# Factor on a text's confidence by the role of the message it came from. A forgotten question
# is as answerable from a system, developer, assistant or tool message as from a user turn
# (the model reads them all), so every role counts in full; see docs/guard-inputs.md for the
# false-positive measurement behind this choice.
ROLE_WEIGHTS: dict[str, float] = {"user": 1.0, "system": 1.0, "assistant": 1.0, "tool": 1.0}
_ROLE_ALIAS = {"developer": "system", "function": "tool"}
# Content-part types whose text is read; every other part (image_url, input_audio, file, ...) is not.
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})


def role_weight(role: str) -> float:
    return ROLE_WEIGHTS.get(_ROLE_ALIAS.get(role, role), 1.0)


@dataclass
class MessagePart:
    """One piece of text of a chat request: its message's role and index, and the field it sits in
    ("content", "content[2]", "name", "tool_calls[0]", "function_call")."""

    role: str
    index: int
    field: str
    text: str


def _json_strings(value: object) -> list[str]:
    """Every string inside a JSON value (keys that are sentences too), depth-first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (_json_strings(k) if " " in str(k) else []) + _json_strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _json_strings(v)]
    return []


def _call_text(call: object) -> str:
    """A tool call's function name and argument strings, as one text."""
    if not isinstance(call, dict):
        return ""
    fn = call.get("function", call)
    if not isinstance(fn, dict):
        return ""
    args = fn.get("arguments")
    strings: list[str] = []
    if isinstance(args, str):
        try:
            strings = _json_strings(json.loads(args))
        except ValueError:
            strings = [args]
    else:
        strings = _json_strings(args)
    name = fn.get("name")
    return " ".join(([name.replace("_", " ")] if isinstance(name, str) else []) + strings).strip()


def message_parts(messages: list[dict]) -> list[MessagePart]:
    """Every text an upstream chat model would read in ``messages`` (OpenAI chat format).

    Read: string ``content``; content parts of the text types (``TEXT_PART_TYPES``), each alone and,
    when there are several, joined; ``refusal`` parts and fields; the ``name`` field; tool calls'
    function names and arguments (JSON arguments by their string values); the legacy
    ``function_call``. Not read: images, audio, files and any other non-text part, ids
    (``tool_call_id``) and unknown fields."""
    out: list[MessagePart] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            continue
        role = str(m.get("role") or "user")
        content = m.get("content")
        if isinstance(content, str):
            out.append(MessagePart(role, i, "content", content))
        elif isinstance(content, list):
            texts: list[str] = []
            for j, part in enumerate(content):
                if isinstance(part, str):
                    text = part
                elif isinstance(part, dict) and part.get("type") in TEXT_PART_TYPES and isinstance(part.get("text"), str):
                    text = part["text"]
                elif isinstance(part, dict) and part.get("type") == "refusal" and isinstance(part.get("refusal"), str):
                    text = part["refusal"]
                else:
                    continue
                texts.append(text)
                if len([q for q in content if isinstance(q, str | dict)]) > 1:
                    out.append(MessagePart(role, i, f"content[{j}]", text))
            if texts:  # the parts joined, as an OpenAI-compatible server hands them to the model
                out.append(MessagePart(role, i, "content", "\n".join(texts)))
        if isinstance(m.get("refusal"), str):
            out.append(MessagePart(role, i, "refusal", m["refusal"]))
        if isinstance(m.get("name"), str):
            out.append(MessagePart(role, i, "name", m["name"].replace("_", " ")))
        calls = m.get("tool_calls")
        for j, call in enumerate(calls if isinstance(calls, list) else []):
            text = _call_text(call)
            if text:
                out.append(MessagePart(role, i, f"tool_calls[{j}]", text))
        if m.get("function_call") is not None:
            text = _call_text(m["function_call"])
            if text:
                out.append(MessagePart(role, i, "function_call", text))
    return [p for p in out if p.text.strip()]
