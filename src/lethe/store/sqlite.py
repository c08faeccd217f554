"""Embedded store: one SQLite database in WAL mode, plus an in-memory vector index.

Every add is one transaction (request row + sample rows), so a crash leaves either the
whole request or nothing. The index is rebuilt from the database on open and kept in
step on add and revoke.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lethe.errors import StoreError
from lethe.store.base import STORES, ForgetRequest, Match, NegativeSample, UnlearnStore
from lethe.store.index import VectorIndex

SCHEMA_VERSION = 1
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


@STORES.register("sqlite")
class SQLiteStore(UnlearnStore):
    def __init__(self, path: str | os.PathLike[str], dim: int = 384) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[], None]] = []
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._init_meta()
        self._index = VectorIndex(dim)
        self._version = 0
        self._rebuild_index()

    # -- meta ------------------------------------------------------------------------
    def _meta(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def _init_meta(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._meta("schema_version") is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    self._db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(self.dim),))
                    self._db.execute("INSERT INTO meta VALUES ('secret', ?)", (secrets.token_bytes(32),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        stored_dim = int(self._meta("dim") or self.dim)
        if stored_dim != self.dim:
            raise StoreError(f"store {self.path} holds {stored_dim}-d embeddings but the embedder gives {self.dim}-d")

    def secret(self) -> bytes:
        env = os.environ.get("LETHE_SECRET")
        if env:
            return env.encode()
        value = self._meta("secret")
        assert value is not None
        return bytes(value)

    # -- index -----------------------------------------------------------------------
    def _rebuild_index(self) -> None:
        with self._lock:
            rows = self._db.execute(
                "SELECT s.id, s.embedding FROM samples s JOIN requests r ON r.id = s.request_id "
                "WHERE r.revoked_at IS NULL AND s.role != 'hard_negative'"
            ).fetchall()
            self._index.clear()
            if rows:
                keys = [r[0] for r in rows]
                vecs = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
                self._index.add(keys, vecs)
            self._version += 1

    def refresh(self) -> None:
        """Re-read the database (another process may have written to it)."""
        self._rebuild_index()
        self._notify()

    # -- writes ----------------------------------------------------------------------
    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        for s in samples:
            if s.embedding.shape != (self.dim,):
                raise StoreError(f"sample embedding has shape {s.embedding.shape}, expected ({self.dim},)")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO requests (id, kind, subject, policy, entities, n_prompts, created_at, revoked_at)"
                    " VALUES (?,?,?,?,?,?,?,NULL)",
                    (request.id, request.kind, request.subject, request.policy,
                     json.dumps(request.entities), request.n_prompts, request.created_at),
                )
                for s in samples:
                    cur = self._db.execute(
                        "INSERT INTO samples (request_id, role, text, embedding) VALUES (?,?,?,?)",
                        (request.id, s.role, s.text, np.asarray(s.embedding, dtype=np.float32).tobytes()),
                    )
                    s.id = int(cur.lastrowid or 0)
                    s.request_id = request.id
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot add request {request.id}: {exc}") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            pos = [s for s in samples if s.role != "hard_negative"]
            if pos:
                self._index.add([int(s.id or 0) for s in pos], np.stack([s.embedding for s in pos]))
            self._version += 1
        self._notify()
        return request.id

    def revoke(self, request_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE requests SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (time.time(), request_id)
            )
            if cur.rowcount == 0:
                return False
            ids = [r[0] for r in self._db.execute("SELECT id FROM samples WHERE request_id=?", (request_id,))]
            self._index.remove(ids)
            self._version += 1
        self._notify()
        return True

    # -- reads -----------------------------------------------------------------------
    @staticmethod
    def _row_to_request(row: tuple) -> ForgetRequest:
        return ForgetRequest(
            id=row[0], kind=row[1], subject=row[2], policy=row[3], entities=json.loads(row[4]),
            n_prompts=row[5], created_at=row[6], revoked_at=row[7],
        )

    _REQ_COLS = "id, kind, subject, policy, entities, n_prompts, created_at, revoked_at"

    def get_request(self, request_id: str) -> ForgetRequest | None:
        with self._lock:
            row = self._db.execute(f"SELECT {self._REQ_COLS} FROM requests WHERE id=?", (request_id,)).fetchone()
        return self._row_to_request(row) if row else None

    def list_requests(self, include_revoked: bool = False) -> list[ForgetRequest]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(f"SELECT {self._REQ_COLS} FROM requests{where} ORDER BY created_at").fetchall()
        return [self._row_to_request(r) for r in rows]

    def samples(self, live_only: bool = True) -> list[NegativeSample]:
        q = "SELECT s.id, s.request_id, s.role, s.text, s.embedding FROM samples s JOIN requests r ON r.id=s.request_id"
        if live_only:
            q += " WHERE r.revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(q + " ORDER BY s.id").fetchall()
        return [
            NegativeSample(id=r[0], request_id=r[1], role=r[2], text=r[3],
                           embedding=np.frombuffer(r[4], dtype=np.float32).copy())
            for r in rows
        ]

    def _samples_by_id(self, ids: list[int]) -> dict[int, NegativeSample]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, request_id, role, text, embedding FROM samples WHERE id IN ({marks})", ids
            ).fetchall()
        return {
            r[0]: NegativeSample(id=r[0], request_id=r[1], role=r[2], text=r[3],
                                 embedding=np.frombuffer(r[4], dtype=np.float32).copy())
            for r in rows
        }

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        hits = self._index.search(np.atleast_2d(embeddings), k)
        by_id = self._samples_by_id(sorted({key for row in hits for key, _ in row}))
        return [[Match(by_id[key], score) for key, score in row if key in by_id] for row in hits]

    def close(self) -> None:
        with self._lock:
            self._db.close()
