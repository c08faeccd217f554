"""SQLite store and entity matching: durable, revocable, never holds names in clear."""

from __future__ import annotations

import numpy as np

from lethe.guard.entities import EntityMatcher, entity_record, guess_subject
from lethe.store import ForgetRequest, NegativeSample, SQLiteStore


def _vec(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_add_search_revoke_reopen(tmp_path):
    store = SQLiteStore(tmp_path / "s.db", dim=8)
    req = ForgetRequest(kind="privacy", subject="x")
    store.add_request(req, [NegativeSample("", _vec(1), "rewrite", "hello"), NegativeSample("", _vec(2), "hard_negative")])
    hit = store.search(_vec(1)[None], k=3)[0]
    assert hit[0].sample.text == "hello" and hit[0].score > 0.99
    assert all(m.sample.role != "hard_negative" for m in hit)
    store.close()
    reopened = SQLiteStore(tmp_path / "s.db", dim=8)
    assert [r.id for r in reopened.list_requests()] == [req.id]
    assert reopened.search(_vec(1)[None], k=1)[0][0].score > 0.99
    assert reopened.revoke(req.id) and not reopened.revoke(req.id)
    assert reopened.search(_vec(1)[None], k=1)[0] == []
    assert reopened.list_requests() == [] and len(reopened.list_requests(include_revoked=True)) == 1


def test_entity_matching_is_fuzzy_and_graded():
    key = b"k" * 32
    m = EntityMatcher(key)
    m.set_entries([("r1", entity_record("Hina Ameen", key))])
    assert m.match("Where was Hina Ameen born?")[0].score == 1.0
    assert m.match("where was HINA AMEEN born")[0].score == 1.0
    typo = m.match("Where was Hina Ameeen born?")[0]
    assert typo.fuzzy and typo.score >= 0.85
    assert m.match("What did Ameen write?")[0].score == 0.6
    # a shared first name alone must not decide
    assert m.match("What genre does Hina Rabbani write?")[0].score < 0.5
    assert m.match("What is the capital of France?") == []
    # word boundaries: a name inside another word does not match
    assert m.match("The Ameenabad market") == []


def test_entity_record_holds_no_clear_text():
    rec = entity_record("Hina Ameen", b"k" * 32)
    assert "hina" not in str(rec).lower() and "ameen" not in str(rec).lower()


def test_guess_subject():
    qs = ["In which genre does Hina Ameen primarily write?", "What professions do Hina Ameen's parents hold?",
          "Where was Hina Ameen born?"]
    assert guess_subject(qs) == "Hina Ameen"


def test_normalize_folds_homoglyphs_and_spacing():
    from lethe.text import fold

    assert fold("Hinа Аmeen") == "hina ameen"  # Cyrillic а/А inside Latin words
    assert fold("Ｈｉｎａ\u200b Ameen") == "hina ameen"  # full-width + zero-width
    assert fold("Москва") == "moskva"  # a real Cyrillic word is transliterated, not folded
