"""The guard's pipeline (``lethe.guard.pipeline``): one plan object, plan → call → finish, sync and
async, stream and not, and the proxy going through it.

Real guard throughout (MiniLM detector, rule rewriter, template guider, SQLite store); the backend
is a small deterministic in-process model that can prefill and records what it was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest
from fastapi.testclient import TestClient

from lethe import Guard
from lethe.backends.base import ChatBackend, ChatResult
from lethe.config import GuardConfig, InterventionConfig
from lethe.guard import intervention
from lethe.guard.pipeline import GuardPlan
from lethe.serving import ServeSettings, create_app

NAME = "Ondrej Vasquez-Lindqvist"
FORGET = [f"Where does {NAME} live?", f"What is the phone number of {NAME}?", f"Who is {NAME} married to?"]
IN_SCOPE = f"Where exactly does {NAME} live these days?"
OUT_OF_SCOPE = "What is the capital of Japan?"
# a continuation of the prefilled reasoning, as a model writes it: leading blanks, lower-case start
CONTINUATION = ["", "  ", " therefore", " I can't", " share that."]
FINISHED = "Therefore I can't share that."


class Continuing(ChatBackend):
    """Continues a prefill with ``CONTINUATION``; answers anything else ``plain: <last user turn>``.
    ``supports_async`` variants answer on the event loop and count those calls."""

    name = "continuing"
    supports_prefill = True

    def __init__(self, native: bool = False) -> None:
        self.supports_async = native
        self.calls: list[dict] = []

    def _pieces(self, messages, prefill) -> list[str]:
        if prefill:
            return CONTINUATION
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return ["plain:", " " + last]

    def chat(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None) -> ChatResult:
        self.calls.append({"how": "chat", "prefill": prefill, "messages": [dict(m) for m in messages]})
        text = "".join(self._pieces(messages, prefill))
        return ChatResult(text=text, prompt_tokens=3, completion_tokens=len(text.split()))

    def stream(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None):
        self.calls.append({"how": "stream", "prefill": prefill, "messages": [dict(m) for m in messages]})
        yield from self._pieces(messages, prefill)

    async def achat(self, messages, *, max_tokens=200, temperature=0.0, stop=None) -> ChatResult:
        self.calls.append({"how": "achat", "prefill": None, "messages": [dict(m) for m in messages]})
        text = "".join(self._pieces(messages, None))
        return ChatResult(text=text, prompt_tokens=3, completion_tokens=len(text.split()))

    async def astream(self, messages, *, max_tokens=200, temperature=0.0, stop=None):
        self.calls.append({"how": "astream", "prefill": None, "messages": [dict(m) for m in messages]})
        for piece in self._pieces(messages, None):
            yield piece


def _config() -> GuardConfig:
    return GuardConfig(intervention=InterventionConfig(placement="assistant_prefill"))


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    h = tmp_path_factory.mktemp("home")
    g = Guard.open(h, config=_config(), backend=Continuing())
    req = g.forget(FORGET, kind="privacy", subject=NAME, rewriter="rule", progress=False)
    g.store.close()
    return h, req.id


def _guard(home, native: bool = False) -> Guard:
    return Guard.open(home[0], config=_config(), backend=Continuing(native))


def _collect(agen) -> list[str]:
    async def run() -> list[str]:
        return [p async for p in agen]

    return asyncio.run(run())


def test_the_plan_is_one_frozen_object_with_the_whole_decision(home):
    g = _guard(home)
    out = g.plan(OUT_OF_SCOPE)
    assert isinstance(out, GuardPlan) and out.decision == "passed" and not out.triggered
    assert out.messages == [{"role": "user", "content": OUT_OF_SCOPE}] and not out.prefilled
    assert out.forget_request is None and out.score is not None and not out.failed
    inside = g.plan(IN_SCOPE)
    assert inside.decision == "guarded" and inside.triggered and inside.forget_request == home[1]
    assert inside.prefilled and inside.placement == "assistant_prefill" and inside.policy and inside.reasoning
    assert inside.prefill.startswith("Let me think step by step.") and inside.reasoning in inside.prefill
    assert inside.messages[0]["role"] == "system" and inside.messages[-1]["content"] == IN_SCOPE
    with pytest.raises(dataclasses.FrozenInstanceError):
        inside.prefill = None  # type: ignore[misc]
    g.store.close()


def test_sync_call_and_stream_finish_a_prefilled_reply(home):
    g = _guard(home)
    plan = g.plan(IN_SCOPE)
    reply = g.call(plan, max_tokens=20)
    assert reply.text == FINISHED and reply.prompt_tokens == 3 and "generate_s" in plan.timings
    assert g.backend.calls[-1] == {"how": "chat", "prefill": plan.prefill, "messages": plan.messages}
    pieces = list(g.call_stream(plan, max_tokens=20))
    assert pieces[0] == "Therefore" and "".join(pieces) == FINISHED  # blank pieces dropped, start tidied
    assert g.chat(IN_SCOPE).response == FINISHED  # Guard.chat is plan + call
    _, it = g.stream(IN_SCOPE)
    assert "".join(it) == FINISHED
    plain = g.plan(OUT_OF_SCOPE)
    assert g.call(plain, max_tokens=20).text == f"plain: {OUT_OF_SCOPE}"
    assert "".join(g.call_stream(plain, max_tokens=20)) == f"plain: {OUT_OF_SCOPE}"
    g.store.close()


@pytest.mark.parametrize("native", [False, True])
def test_async_call_and_stream_match_the_sync_ones(home, native):
    g = _guard(home, native)
    plan = asyncio.run(g.aplan([{"role": "user", "content": IN_SCOPE}]))
    assert plan.decision == "guarded" and plan.prefilled
    assert asyncio.run(g.acall(plan, max_tokens=20)).text == FINISHED
    assert "".join(_collect(g.acall_stream(plan, max_tokens=20))) == FINISHED
    # a prefilled plan always takes the blocking path: only in-process backends can continue a prefill
    assert [c["how"] for c in g.backend.calls] == ["chat", "stream"]
    plain = asyncio.run(g.aplan([{"role": "user", "content": OUT_OF_SCOPE}]))
    assert asyncio.run(g.acall(plain, max_tokens=20)).text == f"plain: {OUT_OF_SCOPE}"
    assert "".join(_collect(g.acall_stream(plain, max_tokens=20))) == f"plain: {OUT_OF_SCOPE}"
    expected = ["achat", "astream"] if native else ["chat", "stream"]
    assert [c["how"] for c in g.backend.calls[2:]] == expected
    g.store.close()


def test_a_failing_guard_becomes_a_fail_mode_plan(home, monkeypatch):
    g = _guard(home)

    def broken(*a, **k):
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(g, "detect", broken)
    msgs = [{"role": "user", "content": IN_SCOPE}]
    with pytest.raises(RuntimeError):
        asyncio.run(g.aplan(msgs))  # no fail mode: the error is the caller's
    closed = asyncio.run(g.aplan(msgs, fail_mode="closed", decline="No."))
    assert closed.decision == "fail_closed" and closed.failed and closed.score is None and not closed.triggered
    assert asyncio.run(g.acall(closed, max_tokens=20)).text == "No." and _collect(g.acall_stream(closed)) == ["No."]
    assert g.backend.calls == []  # a closed failure never reaches the upstream
    opened = asyncio.run(g.aplan(msgs, fail_mode="open", decline="No."))
    assert opened.decision == "fail_open" and opened.messages == msgs and opened.response is None
    assert asyncio.run(g.acall(opened, max_tokens=20)).text == f"plain: {IN_SCOPE}"
    g.store.close()


def test_the_proxy_answers_through_the_pipeline(home):
    """A prefilled in-scope answer through ``create_app`` is finished the same way, stream and not;
    the store's live count reaches ``/metrics`` and its ping ``/readyz``."""
    g = _guard(home)
    app = create_app(g, ServeSettings(home=str(home[0]), admin_key_env="LETHE_TEST_NO_SUCH_ENV"))
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": IN_SCOPE}]})
        assert r.status_code == 200 and r.headers["x-lethe-decision"] == "guarded"
        assert r.headers["x-lethe-forget-request"] == home[1]
        assert r.json()["choices"][0]["message"]["content"] == FINISHED
        assert g.backend.calls[-1]["prefill"] == g.plan(IN_SCOPE).prefill
        with client.stream("POST", "/v1/chat/completions",
                           json={"stream": True, "messages": [{"role": "user", "content": IN_SCOPE}]}) as s:
            events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        assert text == FINISHED
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": OUT_OF_SCOPE}]})
        assert r.headers["x-lethe-decision"] == "passed"
        assert r.json()["choices"][0]["message"]["content"] == f"plain: {OUT_OF_SCOPE}"
        assert client.get("/readyz").json() == {"status": "ready"}
        assert "lethe_forget_requests_live 1.0" in client.get("/metrics").text


def test_query_last_plans_share_all_but_the_question(home):
    """intervention.query_last: two in-scope queries of one request get prompts whose user turns differ
    only from the question on (the template guider's reasoning comes before it)."""
    cfg = GuardConfig(intervention=InterventionConfig(placement="user_prefix", query_last=True))
    g = Guard.open(home[0], config=cfg, backend=Continuing())
    other = f"What is the phone number of {NAME} these days?"
    plans = [g.plan(q) for q in (IN_SCOPE, other)]
    assert all(p.triggered and p.placement == "user_prefix" and not p.prefilled for p in plans)
    turns = [p.messages[-1]["content"] for p in plans]
    head = turns[0].split("Question: ")[0]
    assert plans[0].reasoning.removesuffix("Therefore,").strip() in head and turns[1].startswith(head)
    close = intervention.QUERY_LAST_CLOSE
    assert turns[0] == f"{head}Question: {IN_SCOPE}\n\n{close}" and turns[1] == f"{head}Question: {other}\n\n{close}"
    g.store.close()
