"""Greedy answers of many conversations in one batched generation (``ChatBackend.chat_many``), and
the evaluation methods that generate through it (``Method.respond_many``)."""

from __future__ import annotations

import pytest

from lethe.backends.base import ChatBackend, ChatResult, Generation
from lethe.evaluation.methods import create_method

QUESTIONS = ["What is the capital of France?", "Name three primary colours.",
             "Write the numbers from one to five, one per line.", "Who wrote the play Hamlet?",
             "What is 12 times 12?"]


@pytest.fixture(scope="module")
def backend():
    from lethe.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(n_ctx=2048)


def test_batched_greedy_answers_match_one_by_one(backend):
    """Each conversation's batched greedy answer is its own (multi-line answers kept whole, a prefill
    continued, the caps honoured) and the one-by-one chat answer, on the embedded default."""
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    prefills = [None, None, None, "The play Hamlet was written by", None]
    single = [backend.chat(c, max_tokens=40, prefill=p).text for c, p in zip(convs, prefills, strict=True)]
    batched = backend.chat_many(convs, max_tokens=40, prefills=prefills)
    assert [b.strip() for b in batched] == [s.strip() for s in single]
    assert "paris" in batched[0].lower() and "shakespeare" in batched[3].lower()
    assert "\n" in batched[2].strip()  # the numbers one per line: newlines are kept, not a first line


def test_groups_respect_the_batch_and_context_caps(backend, monkeypatch):
    monkeypatch.setattr(type(backend), "GREEDY_BATCH", 2)
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    out = backend.chat_many(convs, max_tokens=6)
    assert len(out) == len(QUESTIONS) and all(len(backend._tokens(t, add_bos=False)) <= 7 for t in out)
    from lethe.errors import BackendError

    with pytest.raises(BackendError, match="exceeds the batched context"):
        backend.chat_many(convs[:1], max_tokens=backend.GREEDY_CTX)


class _Echo(ChatBackend):
    """Answers with the last user message reversed; counts the calls."""

    name = "echo"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, messages, gen: Generation) -> ChatResult:
        self.calls += 1
        return ChatResult(text=" " + messages[-1]["content"][::-1] + (gen.prefill or "") + " ")


def test_respond_many_plans_each_item_and_keeps_fixed_responses():
    """The default ``chat_many`` answers one by one; ``respond_many`` returns what ``respond`` does, in order."""
    be = _Echo()
    method = create_method("none", be)
    items = [([{"role": "user", "content": q}], i, False) for i, q in enumerate(QUESTIONS[:3])]
    many = method.respond_many(items, max_tokens=10)
    assert [t for t, _ in many] == [method.respond(m, i, f)[0] for m, i, f in items]
    assert [t for t, _ in many][0] == QUESTIONS[0][::-1]
    assert be.calls == 6


def test_transformers_batches_left_padded_prompts_like_single_answers(tmp_path):
    """The transformers backend's batched greedy answers (prompts of different lengths, one prefill)
    are its one-by-one answers, on a tiny random-weight model."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lethe.backends.hf import HFBackend
    from lethe.training.tiny import make_tiny_model

    be = HFBackend(str(make_tiny_model(tmp_path / "m")), device="cpu")
    convs = [[{"role": "user", "content": q}] for q in QUESTIONS]
    prefills = [None, "Red,", None, None, None]
    single = [be.chat(c, max_tokens=12, prefill=p).text for c, p in zip(convs, prefills, strict=True)]
    monkey = HFBackend.GREEDY_BATCH
    try:
        HFBackend.GREEDY_BATCH = 3  # two batches, padded differently
        assert be.chat_many(convs, max_tokens=12, prefills=prefills) == single
    finally:
        HFBackend.GREEDY_BATCH = monkey
