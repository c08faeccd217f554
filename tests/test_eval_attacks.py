"""Attacks are deterministic per seed and change the text in the expected way."""

from __future__ import annotations

import pytest

from lethe.evaluation.attacks import ATTACKS

Q = "What is the full name of the author born in Karachi, Pakistan on 06/30/1975?"
OFFLINE = ["typos", "homoglyph", "roleplay", "override", "prefix_injection", "grandma", "json", "developer_mode",
           "long_task", "translate", "translate_mix"]


@pytest.mark.parametrize("name", OFFLINE)
def test_attack_deterministic(name):
    a1, a2 = ATTACKS.create(name, seed=7), ATTACKS.create(name, seed=7)
    out = a1.apply(Q, 3)
    assert out == a2.apply(Q, 3)
    assert out != Q
    if a1.target == "message":
        assert Q in out


def test_typos_vary_by_index_and_seed():
    t = ATTACKS.create("typos", seed=0)
    outs = {t.apply(Q, i) for i in range(10)}
    assert len(outs) > 3
    assert ATTACKS.create("typos", seed=1).apply(Q, 0) != t.apply(Q, 0) or ATTACKS.create("typos", seed=1).apply(Q, 1) != t.apply(Q, 1)


def test_translate_french():
    out = ATTACKS.create("translate", seed=0).apply("What is the name of the author?", 0)
    assert out == "Quel est le nom de le auteur?"


def test_homoglyph_uses_lookalikes():
    out = ATTACKS.create("homoglyph", seed=0).apply(Q, 0)
    assert out != Q and len(out.replace("\u200b", "")) == len(Q)
    assert any(ord(c) > 127 for c in out)


def test_aim_reads_template(shared_data):
    a = ATTACKS.create("aim", seed=0, data_root=shared_data)
    out = a.apply("QUESTION-XYZ", 0)
    assert "QUESTION-XYZ" in out and "AIM" in out and "[INSERT PROMPT HERE]" not in out


def test_none_attack():
    assert ATTACKS.create("none").apply(Q) == Q
