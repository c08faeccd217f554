"""Encoding attacks: registered by being a file in the attacks package, reversible, seed-independent."""

from __future__ import annotations

import base64
import codecs

import pytest

from lethe.evaluation.attacks import ATTACKS

Q = "Where was Hina Ameen born?"


def test_encoding_attacks_are_registered_and_reversible() -> None:
    assert {"base64", "rot13", "leetspeak", "reversed"} <= set(ATTACKS.names())
    b64 = ATTACKS.create("base64").apply(Q).splitlines()[1]
    assert base64.b64decode(b64).decode() == Q
    assert codecs.decode(ATTACKS.create("rot13").apply(Q).splitlines()[1], "rot13") == Q
    assert ATTACKS.create("reversed").apply(Q).splitlines()[1][::-1] == Q
    leet = ATTACKS.create("leetspeak").apply(Q).splitlines()[1]
    assert leet == "wh3r3 w45 h1n4 4m33n b0rn?" and Q.lower() != leet


@pytest.mark.parametrize("name", ["base64", "rot13", "leetspeak", "reversed"])
def test_encoding_attacks_wrap_the_message(name: str) -> None:
    atk = ATTACKS.create(name, seed=3)
    assert atk.target == "message"
    out = atk.apply(Q, index=5)
    assert out == ATTACKS.create(name, seed=0).apply(Q, index=0)  # deterministic, no randomness
    assert Q not in out
