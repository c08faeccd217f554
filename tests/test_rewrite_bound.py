"""Stored rewrites are rewrites: the copy bound of ``lethe.guard.rewrite`` holds for every rewriter,
every fallback, and every rewrite the store keeps (read back from the SQLite database)."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest

from lethe.guard.rewrite import (
    MAX_COMMON_RUN,
    MAX_RATIO,
    RuleRewriter,
    choose_rewrite,
    copy_measures,
    is_copy,
    protected_tokens,
    within_bound,
)
from lethe.guard.subject import guess_subject
from lethe.text import fold


def test_the_issue_examples_are_copies_and_the_rule_rewriter_is_not():
    q = "Which city did Hina Ameen grow up in?"
    assert is_copy("Question about this: city did Hina Ameen grow up in?", q)
    assert is_copy(q.lower(), q) and is_copy(q, q)
    out = RuleRewriter().rewrite(q)
    run, ratio = copy_measures(out, q)
    assert within_bound(out, q) and run <= MAX_COMMON_RUN and ratio <= MAX_RATIO, (out, run, ratio)


def test_protected_tokens_are_names_capitals_digits_and_long_words():
    prot = protected_tokens("Kalkidan Abera wrote 'The Hidden Truth' in 2011 about autobiographical lives?",
                            ["Kalkidan Abera"])
    assert {"kalkidan", "abera", "hidden", "truth", "2011", "autobiographical"} <= prot
    assert "wrote" not in prot and "lives" not in prot
    assert "what" not in protected_tokens("What genre does Hina Ameen write?")


def test_names_alone_do_not_make_a_copy():
    """A paraphrase may keep the name; the run is measured on everything else."""
    q = "Where was Marisol Quintero-Hale born?"
    assert within_bound("In what place did Marisol Quintero-Hale come into the world?", q, ["Marisol Quintero-Hale"])


class _CopyRewriter(RuleRewriter):
    """A fallback whose every attempt copies the prompt (to exercise the last branch)."""

    def attempts(self, prompt: str) -> list[str]:
        return [prompt, prompt + " Please answer."]


def test_choose_rewrite_enforces_the_bound_on_candidates_and_fallback():
    from lethe.backends.embeddings import get_embedder
    from lethe.config import GuardConfig

    emb = get_embedder(GuardConfig().embedder)
    q = "What genre does Hina Ameen primarily write in?"
    near = ["What genre does Hina Ameen mainly write in?", "In what genre does Hina Ameen primarily write?"]
    text, _ = choose_rewrite(q, near, emb, RuleRewriter(), names=["Hina Ameen"])
    assert within_bound(text, q, ["Hina Ameen"]) and text not in near  # the rule fallback replaced them
    good = "Which literary category are the books of Hina Ameen mostly part of?"
    assert choose_rewrite(q, near + [good], emb, RuleRewriter())[0] == good
    text, _ = choose_rewrite(q, near, emb, _CopyRewriter())  # nothing inside the bound
    assert not within_bound(text, q)  # the caller stores it as embedding only


def test_rule_rewriter_rewrites_every_tofu_question_within_the_bound(shared_data):
    rows = [json.loads(x) for x in (shared_data / "tofu" / "full.jsonl").read_text().splitlines() if x.strip()]
    rw = RuleRewriter()
    qs = [r["question"] for r in rows[::7]]
    outside = [(q, rw.rewrite(q)) for q in qs if not within_bound(rw.rewrite(q), q)]
    assert len(outside) <= 0.01 * len(qs), outside[:5]
    framed = [q for q in qs if not rw.rewrite(q).startswith("About ")]
    assert len(framed) >= 0.7 * len(qs)  # most are questions in another frame, not keyword lists


def _ngrams(text: str, n: int, protected: set[str]) -> set[tuple[str, ...]]:
    toks = [t for t in re.findall(r"[a-z0-9]+", fold(text))]
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1) if not set(toks[i:i + n]) & protected}


def test_every_stored_tofu_rewrite_meets_the_bound(shared_data, tmp_path):
    """All forget05 prompts added with the rule rewriter; the database is then read directly and
    every stored rewrite text is checked against its own original (the bound, and no five-word run
    of unprotected words in common) and against every prompt of its request (none verbatim)."""
    from lethe import Guard

    path = shared_data / "tofu" / "forget05.jsonl"
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    g = Guard.open(tmp_path / "home")
    chunks = [[r["question"] for r in rows[a:a + 20]] for a in range(0, len(rows), 20)]
    ids = [g.forget(qs, kind="privacy", rewriter="rule", progress=False).id for qs in chunks]
    dbs = list((tmp_path / "home").rglob("*.db"))
    assert dbs, "no SQLite database in the home"
    con = sqlite3.connect(dbs[0])
    stored = kept = 0
    for rid, prompts in zip(ids, chunks, strict=True):
        names = [guess_subject(prompts) or ""]
        texts = [t for (t,) in con.execute("SELECT text FROM samples WHERE request_id = ? AND role = 'rewrite' "
                                            "ORDER BY id", (rid,))]
        assert len(texts) == len(prompts)
        for original, text in zip(prompts, texts, strict=True):
            stored += 1
            if text is None:  # no rewrite inside the bound: embedding only
                continue
            kept += 1
            run, ratio = copy_measures(text, original, names)
            assert run <= MAX_COMMON_RUN and ratio <= MAX_RATIO, (original, text, run, ratio)
            prot = protected_tokens(original, names)  # an independent, word-level look at the same bound
            assert not _ngrams(text, 5, prot) & _ngrams(original, 5, prot), (original, text)
            assert all(fold(p) not in fold(text) for p in prompts), text  # no prompt of the request, verbatim
    con.close()
    assert stored == len(rows) and kept >= 0.95 * stored
