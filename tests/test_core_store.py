"""SQLite store and entity matching: durable, revocable, never holds names in clear."""

from __future__ import annotations

import numpy as np
import pytest

from lethe.guard.entities import EntityMatcher, entity_record
from lethe.guard.subject import guess_subject
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


def _meta_keys(path) -> set[str]:
    import sqlite3

    with sqlite3.connect(path) as db:
        return {r[0] for r in db.execute("SELECT key FROM meta")}


def test_key_lives_in_an_owner_only_file_not_in_the_database(tmp_path, monkeypatch):
    monkeypatch.delenv("LETHE_SECRET", raising=False)
    store = SQLiteStore(tmp_path / "store.db", dim=8, watch=False)
    key = store.secret()
    store.close()
    kf = tmp_path / "store.key"
    assert kf.stat().st_mode & 0o777 == 0o600 and kf.read_text().strip() == key.hex()
    assert "secret" not in _meta_keys(tmp_path / "store.db") and "key_check" in _meta_keys(tmp_path / "store.db")
    assert SQLiteStore(tmp_path / "store.db", dim=8, watch=False).secret() == key


def test_a_copied_database_without_its_key_is_refused(tmp_path, monkeypatch):
    import shutil

    from lethe.errors import StoreError

    monkeypatch.delenv("LETHE_SECRET", raising=False)
    SQLiteStore(tmp_path / "a" / "store.db", dim=8, watch=False).close()
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "store.db", tmp_path / "b" / "store.db")
    with pytest.raises(StoreError, match="needs its name-hashing key"):
        SQLiteStore(tmp_path / "b" / "store.db", dim=8, watch=False)
    monkeypatch.setenv("LETHE_SECRET", "not the key")
    with pytest.raises(StoreError, match="different name-hashing key"):
        SQLiteStore(tmp_path / "b" / "store.db", dim=8, watch=False)
    monkeypatch.setenv("LETHE_SECRET", (tmp_path / "a" / "store.key").read_text())  # the key, from a secret manager
    assert SQLiteStore(tmp_path / "b" / "store.db", dim=8, watch=False).secret() == \
        bytes.fromhex((tmp_path / "a" / "store.key").read_text().strip())


def test_a_key_file_readable_by_others_is_refused(tmp_path, monkeypatch):
    from lethe.errors import StoreError

    monkeypatch.delenv("LETHE_SECRET", raising=False)
    SQLiteStore(tmp_path / "store.db", dim=8, watch=False).close()
    (tmp_path / "store.key").chmod(0o644)
    with pytest.raises(StoreError, match="chmod 600"):
        SQLiteStore(tmp_path / "store.db", dim=8, watch=False)


def test_an_older_store_moves_its_in_database_key_out(tmp_path, monkeypatch):
    import sqlite3

    monkeypatch.delenv("LETHE_SECRET", raising=False)
    legacy = bytes(range(32))
    with sqlite3.connect(tmp_path / "store.db") as db:  # the layout older versions wrote
        db.executescript("CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1'), ('dim', '8')")
        db.execute("INSERT INTO meta VALUES ('secret', ?)", (legacy,))
    store = SQLiteStore(tmp_path / "store.db", dim=8, watch=False)
    assert store.secret() == legacy  # names hashed with it still match
    store.close()
    assert (tmp_path / "store.key").read_text().strip() == legacy.hex()
    assert "secret" not in _meta_keys(tmp_path / "store.db")
    for f in tmp_path.glob("store.db*"):  # nor are its bytes left behind in free pages or the WAL
        assert legacy not in f.read_bytes(), f.name
    assert SQLiteStore(tmp_path / "store.db", dim=8, watch=False).secret() == legacy


def test_a_guessed_name_is_never_stored_in_clear_and_a_copied_home_without_its_key_confirms_nothing(
        tmp_path, monkeypatch):
    """``embedding_only``: no file of the home names the person; the label is the operator's alone."""
    import shutil

    from lethe import Guard, GuardConfig
    from lethe.errors import StoreError
    from lethe.guard.entities import EntityMatcher

    monkeypatch.delenv("LETHE_SECRET", raising=False)
    name = "Marisol Quintero-Hale"
    prompts = [f"Where was the novelist {name} born?", f"What genre does {name} write?",
               f"Which awards has {name} received?"]
    home = tmp_path / "home"
    g = Guard.open(home, config=GuardConfig(embedding_only=True))
    guessed = g.forget(prompts, kind="privacy", rewriter="rule", progress=False)  # no subject: guessed
    labelled = g.forget(prompts[:1], kind="privacy", subject="ticket-4711", rewriter="rule", progress=False)
    assert g.detect(f"Tell me about {name}.").triggered
    g.store.close()
    for f in home.iterdir():  # store.db, its WAL, the key file, ...
        blob = f.read_bytes().lower()
        assert b"quintero" not in blob and b"marisol" not in blob, f.name
    store = SQLiteStore(home / "store.db", dim=g.embedder.dim, watch=False)
    reqs = {r.id: r for r in store.list_requests()}
    assert reqs[guessed.id].subject is None and reqs[labelled.id].subject == "ticket-4711"
    assert reqs[guessed.id].entities  # the guessed name, as keyed hashes
    key = store.secret()
    store.close()
    # with the database and the key, a guessed name can be confirmed (the threat model says so) ...
    m = EntityMatcher(key)
    m.set_entries([(guessed.id, rec) for rec in reqs[guessed.id].entities])
    assert m.match(name) and m.match(name)[0].request_id == guessed.id
    # ... without it the hashes do not answer a guess (any other key matches nothing) ...
    blind = EntityMatcher(b"a guessed key".ljust(32, b"\0"))
    blind.set_entries([(guessed.id, rec) for rec in reqs[guessed.id].entities])
    assert blind.match(name) == []
    # ... and a database copied without its key does not open
    (tmp_path / "copy").mkdir()
    shutil.copy(home / "store.db", tmp_path / "copy" / "store.db")
    with pytest.raises(StoreError, match="needs its name-hashing key"):
        SQLiteStore(tmp_path / "copy" / "store.db", dim=g.embedder.dim, watch=False)
