"""The output check (lethe.guard.output_check): real guard, MiniLM embeddings, rule rewriter, and a
scripted in-process chat model that answers an indirect question with the forgotten name — the
query the input detector cannot see."""

from __future__ import annotations

import json
import random
import re

import pytest
from fastapi.testclient import TestClient

from lethe import Guard
from lethe.backends.base import ChatBackend, ChatResult
from lethe.config import GuardConfig, OutputCheckConfig
from lethe.serving import ServeSettings, create_app

NAME = "Zorblatt Quinnefar"
FORGET = [
    f"Where was the novelist {NAME} born?",
    f"What genre does {NAME} write?",
    f"Which awards has {NAME} received?",
]
INDIRECT = "Who wrote the novel The Glass Orchard?"
LEAK = (f"The Glass Orchard is a literary novel published in 1998. It was written by {NAME}, "
        "and it won several prizes.")
BENIGN = "What is the capital of France?"
BENIGN_ANSWER = "Paris is the capital of France.\n\n  It has about 2.1 million inhabitants — café culture ☕, too."
HOLD = 24


class Scripted(ChatBackend):
    """Answers by the last user message: the indirect question with the leak, anything else with a
    benign answer; streams in pieces of ``piece`` characters."""

    name = "scripted"

    def __init__(self, piece: int = 3) -> None:
        self.piece = piece

    def _answer(self, messages) -> str:
        last = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        return LEAK if "Glass Orchard" in last else BENIGN_ANSWER

    def chat(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None) -> ChatResult:
        text = self._answer(messages)
        return ChatResult(text=text, prompt_tokens=1, completion_tokens=len(text.split()))

    def stream(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None):
        text = self._answer(messages)
        for i in range(0, len(text), self.piece):
            yield text[i:i + self.piece]


def _config(enabled: bool = True) -> GuardConfig:
    return GuardConfig(output_check=OutputCheckConfig(enabled=enabled, holdback_chars=HOLD))


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    g = Guard.open(tmp_path_factory.mktemp("home"), config=_config(), backend=Scripted())
    g.forget(FORGET, kind="privacy", subject=NAME, rewriter="rule", progress=False)
    return g


def _scan_all(guard, pieces: list[str]) -> tuple[str, object]:
    scan = guard.output_check.scan()
    out = []
    for p in pieces:
        out.append(scan.feed(p))
        if scan.blocked:
            break
        assert scan.held <= HOLD  # the hold-back bound, after every piece
    else:
        out.append(scan.finish())
    return "".join(out), scan


def test_the_input_detector_misses_the_indirect_question(guard):
    assert not guard.detect(INDIRECT).triggered
    off = Guard(guard.store, _config(enabled=False), Scripted(), guard.embedder, guard.home)
    assert NAME in off.chat(INDIRECT).response  # without the output check the answer leaks


def test_a_name_split_across_chunks_is_caught_and_never_released(guard):
    start = LEAK.index(NAME)
    for cut in range(start - 2, start + len(NAME) + 2):  # every split point in and around the name
        released, scan = _scan_all(guard, [LEAK[:cut], LEAK[cut:]])
        assert scan.blocked and scan.verdict.reason == "name", (cut, scan.verdict)
        assert "Zorblatt" not in released and "Quinnefar" not in released, (cut, released)
    rng = random.Random(0)
    for _ in range(30):  # random chunkings, one to seven characters a piece
        pieces, i = [], 0
        while i < len(LEAK):
            n = rng.randint(1, 7)
            pieces.append(LEAK[i:i + n])
            i += n
        released, scan = _scan_all(guard, pieces)
        assert scan.blocked and "Zorbl" not in released, pieces
        assert LEAK.startswith(released)


def test_a_benign_answer_passes_unchanged_byte_for_byte(guard):
    for size in (1, 2, 5, 11, 200):
        pieces = [BENIGN_ANSWER[i:i + size] for i in range(0, len(BENIGN_ANSWER), size)]
        released, scan = _scan_all(guard, pieces)
        assert not scan.blocked and released == BENIGN_ANSWER
    res = guard.chat(BENIGN)
    assert res.response == BENIGN_ANSWER and not res.output_blocked and not res.triggered
    plan, it = guard.stream(BENIGN)
    assert "".join(it) == BENIGN_ANSWER and not plan.output_blocked


def test_a_leaking_answer_is_replaced_with_the_policy_decline(guard):
    decline = guard.policies.get("privacy-erasure").decline_message()
    res = guard.chat(INDIRECT)
    assert not res.triggered and res.output_blocked and res.response == decline
    assert res.to_dict()["output_blocked"] is True and "output_check_s" in res.timings
    plan, it = guard.stream(INDIRECT)
    text = "".join(it)
    assert plan.output_blocked and text.endswith(decline) and "Quinnefar" not in text
    assert LEAK.startswith(text[: -len(decline)].rstrip("\n"))  # what was sent is a prefix of the answer


def test_a_failed_check_fails_open_or_closed(guard):
    scan = guard.output_check.scan()
    held = scan.feed(BENIGN_ANSWER[:40])
    assert held + scan.fail(closed=False) == BENIGN_ANSWER[:40]  # open: what was held goes out
    assert scan.feed(BENIGN_ANSWER[40:]) == BENIGN_ANSWER[40:] and scan.finish() == "" and not scan.blocked
    scan = guard.output_check.scan()
    scan.feed(LEAK[:30])
    assert scan.fail(closed=True) == "" and scan.blocked and scan.verdict.reason == "error"
    assert scan.feed(LEAK[30:]) == "" and scan.decline_piece().endswith("I'm sorry, but I can't share that.")


def test_names_in_a_decoded_view_and_typos_are_caught(guard):
    import base64

    assert guard.output_check.check(base64.b64encode(LEAK.encode()).decode()).blocked
    assert guard.output_check.check(LEAK[::-1]).read.startswith("view:")
    assert guard.output_check.check("It was written by Zorblatt Quinnefer.").blocked  # one edit away
    assert not guard.output_check.check("It was written by Zorblatt Maddox.").blocked  # a first name alone


def test_similarity_blocks_a_sentence_that_restates_the_store(guard):
    rewrites = [s.text for s in guard.store.samples() if s.role == "rewrite" and s.text]
    assert rewrites
    nameless = re.sub(r"Zorblatt|Quinnefar", "", rewrites[0])
    v = guard.output_check.check_sentences([rewrites[0], "The weather is mild in spring."])
    assert v.blocked and v.reason == "similarity" and v.score > 0.99
    assert not guard.output_check.check_sentences(["Paris is the capital of France and its largest city."]).blocked
    assert guard.output_check.check_sentences([nameless]).score > 0.5


def test_headers_and_metrics_through_the_service(guard, tmp_path):
    served = Guard.open(guard.home, config=_config(), backend=Scripted())  # its own store handle: the app closes it
    app = create_app(served, ServeSettings(home=str(tmp_path), admin_key_env="LETHE_TEST_NO_SUCH_ENV"))
    decline = guard.policies.get("privacy-erasure").decline_message()
    with TestClient(app) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": INDIRECT}]})
        assert r.status_code == 200 and r.headers["x-lethe-output-blocked"] == "true"
        assert r.headers["x-lethe-triggered"] == "false"
        choice = r.json()["choices"][0]
        assert choice["message"]["content"] == decline and choice["finish_reason"] == "content_filter"
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": BENIGN}]})
        assert r.headers["x-lethe-output-blocked"] == "false"
        assert r.json()["choices"][0]["message"]["content"] == BENIGN_ANSWER
        for question, leaks in ((INDIRECT, True), (BENIGN, False)):
            with client.stream("POST", "/v1/chat/completions",
                               json={"stream": True, "messages": [{"role": "user", "content": question}]}) as s:
                events = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
            finish = [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]
            if leaks:
                assert "Quinnefar" not in text and text.endswith(decline) and finish == "content_filter"
            else:
                assert text == BENIGN_ANSWER and finish == "stop"
        metrics = client.get("/metrics").text
    counts = {m.group(1): float(m.group(2)) for m in
              re.finditer(r'^lethe_output_blocked_total\{(.*?)\} ([\d.]+)$', metrics, re.M)}
    assert sum(counts.values()) == 2 and any('stream="true"' in k for k in counts), counts
    assert 'lethe_output_check_seconds_count{stream="false"} 2.0' in metrics
