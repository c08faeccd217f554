"""The one way a conversation becomes a prompt string for a transformers tokenizer.

Training (:mod:`lethe.training.data` builds the prompt half of every example with it) and inference
(the ``hf`` backend's ``format_prompt``) both call :func:`render`, so a model is trained on exactly
the prompts it is later asked. A tokenizer with a chat template applies it with the generation
prompt; one without gets the plain ``role: content`` lines and ``assistant: ``.
"""

from __future__ import annotations

from collections.abc import Sequence

from lethe.backends.base import Message


def user_turn(prompt: str, system: str | None = None) -> list[Message]:
    """A single user turn, after an optional system turn."""
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]


def render(tokenizer, messages: Sequence[Message], prefill: str | None = None) -> str:
    """The raw prompt: ``messages`` in the tokenizer's chat template, the assistant turn opened and
    ``prefill`` (if any) written into it."""
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    else:
        prompt = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return prompt + (prefill or "")
