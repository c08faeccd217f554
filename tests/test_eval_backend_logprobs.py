"""llama.cpp log-probabilities: continuation scoring agrees with next-token scoring and is reproducible."""

from __future__ import annotations

import pytest


@pytest.mark.model
def test_llamacpp_continuation_matches_next_token():
    from lethe.backends import load_backend

    try:
        be = load_backend()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"default model unavailable: {exc}")
    p = be.format_prompt([{"role": "user", "content": "What is the capital of France?"}])
    one, n = be.continuation_logprob(p, "Paris")
    assert n == 1
    assert one == pytest.approx(be.next_token_logprobs(p, ["Paris"])[0], abs=1e-6)
    two, n2 = be.continuation_logprob(p, "The capital of France is Paris.")
    assert n2 > 1 and two < 0
    be.chat([{"role": "user", "content": "hi"}], max_tokens=3)  # disturbs the KV cache
    assert be.continuation_logprob(p, "The capital of France is Paris.") == (two, n2)
    # the first token of a continuation is scored like next_token_logprobs
    first = be.continuation_logprob(p, "The")[0]
    assert first == pytest.approx(be.next_token_logprobs(p, ["The"])[0], abs=1e-6)
