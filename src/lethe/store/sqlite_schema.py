"""The SQLite store's database: connection settings, tables, change counters, first-open metadata.

Schema 2 adds the change counters that tell a saved index file whether it still matches
the database (:class:`lethe.store.indexed.IndexedStore`): ``changes`` is bumped by
triggers on every insert, update or delete of a request row, ``rewrites`` on any update or
delete of a sample row.
"""

from __future__ import annotations

import os
import secrets
import sqlite3

from lethe.errors import StoreError

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT,
    policy TEXT,
    entities TEXT NOT NULL DEFAULT '[]',
    n_prompts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests(id),
    role TEXT NOT NULL,
    text TEXT,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_request ON samples(request_id);
"""
_COUNTERS = """
INSERT OR IGNORE INTO meta VALUES ('changes', 0);
INSERT OR IGNORE INTO meta VALUES ('rewrites', 0);
CREATE TRIGGER IF NOT EXISTS requests_insert_counts AFTER INSERT ON requests
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'changes'; END;
CREATE TRIGGER IF NOT EXISTS requests_update_counts AFTER UPDATE ON requests
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'changes'; END;
CREATE TRIGGER IF NOT EXISTS requests_delete_counts AFTER DELETE ON requests
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'changes'; END;
CREATE TRIGGER IF NOT EXISTS samples_update_counts AFTER UPDATE ON samples
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rewrites'; END;
CREATE TRIGGER IF NOT EXISTS samples_delete_counts AFTER DELETE ON samples
    BEGIN UPDATE meta SET value = value + 1 WHERE key = 'rewrites'; END;
"""
STATE = ("SELECT (SELECT value FROM meta WHERE key='store_id'), (SELECT value FROM meta WHERE key='changes'),"
         " (SELECT value FROM meta WHERE key='rewrites'), (SELECT max(id) FROM samples)")


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection in WAL mode with full syncs, foreign keys and zeroed deletes, tables created."""
    try:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA secure_delete=ON")  # deleted bytes are zeroed, not left in free pages
        db.executescript(_SCHEMA + _COUNTERS)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open store {path}: {exc}") from None
    return db


def meta_get(db: sqlite3.Connection, key: str) -> bytes | None:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    if row is None:
        return None
    return row[0].encode() if isinstance(row[0], str) else bytes(row[0])


def init_meta(db: sqlite3.Connection, dim: int | None, path: str | os.PathLike[str]) -> int | None:
    """Record the schema version, embedding size (when given) and store id; returns the stored size.

    Raises :class:`StoreError` when the database holds embeddings of another size than ``dim``.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if meta_get(db, "schema_version") is None:
            db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        stored = meta_get(db, "dim")
        if stored is None and dim is not None:
            db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
        db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (secrets.token_hex(8),))
        db.execute("UPDATE meta SET value=? WHERE key='schema_version' AND CAST(value AS INTEGER) < ?",
                   (str(SCHEMA_VERSION), SCHEMA_VERSION))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    if stored is None:
        return None
    if dim is not None and int(stored) != dim:
        raise StoreError(f"store {path} holds {int(stored)}-d embeddings but the embedder gives {dim}-d")
    return int(stored)
